"""Fake Cityscapes, ADE20k and CamVid archives in the official layouts, for rehearsals and tests.

The real datasets cannot be downloaded by a script (both need an account or a licence click),
so the whole real-data path (`tce_jax.prepare`, the real configs, evaluation under the paper's
protocol, the report) is rehearsed on archives that have the official file names, folders and
label encodings but tiny, synthetic content: `scripts/reproduce.py --dry_run`, the test suite
and `scripts/benchmark_eval.py` write them with these functions. Nothing here is data to learn
from: a few flat-coloured regions per image.
"""

from __future__ import annotations

import io
import os
from typing import Sequence
import zipfile

import numpy as np
from PIL import Image

from tce_jax.data import ade20k
from tce_jax.data import datasets

# Cities of the fake Cityscapes splits (two frames each): 4 train, 2 val, 2 test images.
CITIES = {'train': ('aachen', 'bochum'), 'val': ('frankfurt',), 'test': ('berlin',)}
# Default fake ADE20k sizes (height, width): 3 training and 2 validation images.
ADE20K_SIZES = ((96, 128), (120, 90))


def png(array: np.ndarray) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(array).save(buffer, format='PNG')
  return buffer.getvalue()


def jpg(array: np.ndarray) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(array).save(buffer, format='JPEG', quality=90)
  return buffer.getvalue()


def cityscapes_label(rng: np.random.Generator, size: tuple[int, int] = (1024, 2048),
                     bad_id: int | None = None) -> np.ndarray:
  """Raw label ids (gtFine_labelIds): sky, building, road, a car, a person, the ego vehicle
  (ignored) and an unlabeled corner; regions scale with `size` (drawn at 1024 x 2048)."""
  h, w = size
  y = lambda v: v * h // 1024  # noqa: E731
  x = lambda v: v * w // 2048  # noqa: E731
  label = np.full((h, w), 23, np.uint8)  # sky
  label[y(300):y(500)] = 11  # building
  label[y(500):] = 7  # road
  label[y(900):] = 1  # ego vehicle (ignored)
  left = x(int(rng.integers(0, 1800)))
  label[y(600):y(800), left:left + x(200)] = 26  # car
  label[y(550):y(750), x(100):x(140)] = 24  # person
  label[0:max(1, y(10)), 0:max(1, x(10))] = 0  # unlabeled
  if bad_id is not None:
    label[y(20):y(30) + 1, x(20):x(30) + 1] = bad_id
  return label


def make_cityscapes_archives(folder: str, *, size: tuple[int, int] = (1024, 2048),
                             bad_id: int | None = None) -> list[str]:
  """leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip in `folder` (the official
  names and members), images of `size` (Cityscapes': 1024 x 2048); `bad_id` puts an unknown
  label id into every training label. Returns the archives' paths."""
  rng = np.random.default_rng(0)
  h, w = size
  image = np.zeros((h, w, 3), np.uint8)
  image[:h // 2] = (70, 130, 180)
  image[h // 2:] = (128, 64, 128)
  paths = [os.path.join(folder, name) for name in datasets.CITYSCAPES_ARCHIVES]
  with zipfile.ZipFile(paths[0], 'w') as left, zipfile.ZipFile(paths[1], 'w') as gt:
    for split, cities in CITIES.items():
      for city in cities:
        for frame in (19, 29):
          stem = f'{city}_000000_0000{frame}'
          left.writestr(f'leftImg8bit/{split}/{city}/{stem}_leftImg8bit.png', png(image))
          label = cityscapes_label(rng, size, bad_id if split == 'train' else None)
          gt.writestr(f'gtFine/{split}/{city}/{stem}_gtFine_labelIds.png', png(label))
          gt.writestr(f'gtFine/{split}/{city}/{stem}_gtFine_instanceIds.png', png(label))
          gt.writestr(f'gtFine/{split}/{city}/{stem}_gtFine_polygons.json', '{}')
  return paths


def make_cityscapes_scene_archives(folder: str, num_images: int,
                                   size: tuple[int, int] = (1024, 2048)) -> list[str]:
  """Cityscapes archives of `num_images` training images (1 val, 1 test) holding street
  scenes of the synthetic dataset's renderer at `size`, pixel noise included, so that the
  PNGs are about as large and as slow to decode as real ones (input-pipeline benchmarks).
  Label maps are raw label ids, as gtFine's. Returns the archives' paths."""
  from tce_jax.data import classes  # pylint: disable=g-import-not-at-top
  from tce_jax.data.synthetic_scenes import render_scene  # pylint: disable=g-import-not-at-top
  raw_id = np.array(classes.CITYSCAPES_LABEL_IDS + (0,), np.uint8)
  paths = [os.path.join(folder, name) for name in datasets.CITYSCAPES_ARCHIVES]
  with zipfile.ZipFile(paths[0], 'w') as left, zipfile.ZipFile(paths[1], 'w') as gt:
    for split, count in (('train', num_images), ('val', 1), ('test', 1)):
      for i in range(count):
        image, label = render_scene(np.random.default_rng(i), *size)
        stem = f'city_000000_{i:06d}'
        label = raw_id[np.where(label == 255, 19, label)]  # train ids -> raw label ids
        left.writestr(f'leftImg8bit/{split}/city/{stem}_leftImg8bit.png', png(image))
        gt.writestr(f'gtFine/{split}/city/{stem}_gtFine_labelIds.png', png(label))
  return paths


def ade20k_label(rng: np.random.Generator, size: tuple[int, int], pattern: str) -> np.ndarray:
  """Raw ADE20k annotation ids (0 = other, 1..150 = the classes).

  'regions': other, floor (id 4), flag (150) and wall (1) in four blocks; 'blocks': a random
  class (0..150) in every 8 x 8 block, all classes present in a large enough split.
  """
  h, w = size
  if pattern == 'blocks':
    label = rng.integers(0, 151, (h // 8 + 1, w // 8 + 1), dtype=np.uint8)
    return np.kron(label, np.ones((8, 8), np.uint8))[:h, :w]
  label = np.zeros((h, w), np.uint8)
  label[h // 2:] = 4  # floor -> train id 3
  label[:h // 4, :w // 2] = 150  # flag -> 149
  label[h // 4:h // 2, w // 2:] = 1  # wall -> 0
  return label


def make_ade20k_archive(folder: str, *, training_sizes: Sequence[tuple[int, int]] | None = None,
                        validation_sizes: Sequence[tuple[int, int]] | None = None,
                        pattern: str = 'regions', bad_label: bool = False,
                        mismatch: bool = False, seed: int = 1) -> str:
  """The ADE20k archive (ade20k.ARCHIVE) in `folder`, images of the given (height, width) sizes
  (default: 3 training and 2 validation images alternating 96 x 128 and 120 x 90); `pattern` as in
  `ade20k_label`. `bad_label` puts id 200 into the second training label, `mismatch` makes the
  first validation label 2 rows shorter than its image. Returns the archive's path."""
  rng = np.random.default_rng(seed)
  subsets = (('training', 'ADE_train',
              training_sizes or ADE20K_SIZES + ADE20K_SIZES[:1]),
             ('validation', 'ADE_val', validation_sizes or ADE20K_SIZES))
  path = os.path.join(folder, ade20k.ARCHIVE)
  with zipfile.ZipFile(path, 'w') as z:
    for subset, prefix, sizes in subsets:
      for i, (h, w) in enumerate(sizes, 1):
        stem = f'{prefix}_{i:08d}'
        image = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        label = ade20k_label(rng, (h, w), pattern)
        if bad_label and subset == 'training' and i == 2:
          label[0, 0] = 200
        if mismatch and subset == 'validation' and i == 1:
          label = label[:-2]
        z.writestr(f'{ade20k.ROOT}/images/{subset}/{stem}.jpg', jpg(image))
        z.writestr(f'{ade20k.ROOT}/annotations/{subset}/{stem}.png', png(label))
    z.writestr(f'{ade20k.ROOT}/objectInfo150.txt', 'Idx\tRatio\tTrain\tVal\tName\n')
    z.writestr(f'{ade20k.ROOT}/sceneCategories.txt', '')
  return path


# Fake CamVid (the SegNet layout): (split folder, list name, image count) of each split.
CAMVID_SPLITS = (('train', 4), ('val', 2), ('test', 2))


def camvid_label(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
  """CamVid ids: sky, building, road, pavement, a car, a pole, a pedestrian, void at the
  bottom; every 11th class appears in a large enough split through the car's position."""
  h, w = size
  label = np.zeros((h, w), np.uint8)  # sky
  label[h // 4:h // 2] = 1  # building
  label[h // 2:] = 3  # road
  label[h // 2:h // 2 + h // 8, : w // 3] = 4  # pavement
  left = int(rng.integers(0, w - w // 4))
  label[h // 2 + h // 8:h // 2 + h // 4, left:left + w // 4] = 8  # car
  label[h // 4:h // 2 + h // 8, w // 2:w // 2 + max(1, w // 60)] = 2  # pole
  label[h // 2 - h // 8:h // 2 + h // 8, w // 8:w // 8 + w // 40] = 9  # pedestrian
  label[-max(1, h // 20):] = 11  # void
  return label


def make_camvid_folder(folder: str, *, size: tuple[int, int] = (360, 480),
                       splits: Sequence[tuple[str, int]] = CAMVID_SPLITS,
                       zipped: bool = False, problem: str | None = None) -> str:
  """CamVid/ in `folder` in the SegNet tutorial's layout (file lists with the absolute paths
  of that repository's machine, `<split>/` and `<split>annot/`), images of `size`. `zipped`
  writes CamVid.zip holding the folder instead. `problem` damages it: 'bad_label' puts id 12
  into the second training label, 'mismatch' makes the first val label 2 rows short,
  'unreadable' truncates the first test image, 'missing' removes the first training
  annotation. Returns the folder's (or the zip's) path."""
  rng = np.random.default_rng(0)
  h, w = size
  os.makedirs(folder, exist_ok=True)
  files: dict[str, bytes] = {}
  for split, count in splits:
    lines = []
    for i in range(count):
      stem = f'0001TP_{i:06d}' if split != 'test' else f'Seq05VD_f{i:05d}'
      image = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
      label = camvid_label(rng, size)
      if problem == 'bad_label' and split == 'train' and i == 1:
        label[0, 0] = 12
      if problem == 'mismatch' and split == 'val' and i == 0:
        label = label[:-2]
      image_bytes = png(image)
      if problem == 'unreadable' and split == 'test' and i == 0:
        image_bytes = image_bytes[:len(image_bytes) // 3]
      files[f'{split}/{stem}.png'] = image_bytes
      if not (problem == 'missing' and split == 'train' and i == 0):
        files[f'{split}annot/{stem}.png'] = png(label)
      lines.append(f'/SegNet/CamVid/{split}/{stem}.png /SegNet/CamVid/{split}annot/{stem}.png')
    files[f'{split}.txt'] = ('\n'.join(lines) + '\n').encode()
  if zipped:
    path = os.path.join(folder, 'CamVid.zip')
    with zipfile.ZipFile(path, 'w') as z:
      for name, data in files.items():
        z.writestr(f'CamVid/{name}', data)
    return path
  root = os.path.join(folder, 'CamVid')
  for name, data in files.items():
    os.makedirs(os.path.dirname(os.path.join(root, name)), exist_ok=True)
    with open(os.path.join(root, name), 'wb') as f:
      f.write(data)
  return root
