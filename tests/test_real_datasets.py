"""Cityscapes and ADE20k through the real preparation path, on tiny fake archives laid out
like the official ones (same folders and file names). Nothing is downloaded."""

import importlib
import io
import os
import zipfile

import numpy as np
from PIL import Image
import pytest

from tce_jax import prepare
from tce_jax import train
from tce_jax.data import class_index as class_index_lib
from tce_jax.data import datasets
from tce_jax.data.ade20k import PreparationError

CITIES = {'train': ['aachen', 'bochum'], 'val': ['frankfurt'], 'test': ['berlin']}


def png(array) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(array).save(buffer, format='PNG')
  return buffer.getvalue()


def jpg(array) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(array).save(buffer, format='JPEG', quality=90)
  return buffer.getvalue()


def cityscapes_label(rng, bad_id=None):
  """Raw label ids (gtFine_labelIds) at 1024 x 2048: sky, building, road, a car, a person."""
  label = np.full((1024, 2048), 23, np.uint8)  # sky
  label[300:500] = 11  # building
  label[500:] = 7  # road
  label[900:] = 1  # ego vehicle (ignored)
  x = rng.integers(0, 1800)
  label[600:800, x:x + 200] = 26  # car
  label[550:750, 100:140] = 24  # person
  label[0:10, 0:10] = 0  # unlabeled
  if bad_id is not None:
    label[20:30, 20:30] = bad_id
  return label


def make_cityscapes_archives(folder, bad_id=None):
  rng = np.random.default_rng(0)
  image = np.zeros((1024, 2048, 3), np.uint8)
  image[:500] = (70, 130, 180)
  image[500:] = (128, 64, 128)
  left = zipfile.ZipFile(os.path.join(folder, 'leftImg8bit_trainvaltest.zip'), 'w')
  gt = zipfile.ZipFile(os.path.join(folder, 'gtFine_trainvaltest.zip'), 'w')
  for split, cities in CITIES.items():
    for city in cities:
      for frame in (19, 29):
        stem = f'{city}_000000_0000{frame}'
        left.writestr(f'leftImg8bit/{split}/{city}/{stem}_leftImg8bit.png', png(image))
        label = cityscapes_label(rng, bad_id if split == 'train' else None)
        gt.writestr(f'gtFine/{split}/{city}/{stem}_gtFine_labelIds.png', png(label))
        gt.writestr(f'gtFine/{split}/{city}/{stem}_gtFine_instanceIds.png', png(label))
        gt.writestr(f'gtFine/{split}/{city}/{stem}_gtFine_polygons.json', '{}')
  left.close()
  gt.close()


def make_ade20k_archive(folder, *, bad_label=False, mismatch=False, training_sizes=None,
                        validation_sizes=None, seed=1):
  """ADEChallengeData2016.zip with images of the given (height, width) sizes (default: 3
  training and 2 validation images alternating 96 x 128 and 120 x 90)."""
  rng = np.random.default_rng(seed)
  default = [(96, 128), (120, 90)]
  subsets = (('training', 'ADE_train', training_sizes or default + default[:1]),
             ('validation', 'ADE_val', validation_sizes or default))
  with zipfile.ZipFile(os.path.join(folder, 'ADEChallengeData2016.zip'), 'w') as z:
    for subset, prefix, sizes in subsets:
      for i, (h, w) in enumerate(sizes, 1):
        stem = f'{prefix}_{i:08d}'
        image = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        label = np.zeros((h, w), np.uint8)  # 0 = other
        label[h // 2:] = 4  # floor -> train id 3
        label[:h // 4, :w // 2] = 150  # flag -> 149
        label[h // 4:h // 2, w // 2:] = 1  # wall -> 0
        if bad_label and subset == 'training' and i == 2:
          label[0, 0] = 200
        if mismatch and subset == 'validation' and i == 1:
          label = label[:-2]
        z.writestr(f'ADEChallengeData2016/images/{subset}/{stem}.jpg', jpg(image))
        z.writestr(f'ADEChallengeData2016/annotations/{subset}/{stem}.png', png(label))
    z.writestr('ADEChallengeData2016/objectInfo150.txt', 'Idx\tRatio\tTrain\tVal\tName\n')
    z.writestr('ADEChallengeData2016/sceneCategories.txt', '')


@pytest.fixture(scope='module')
def cityscapes_dirs(tmp_path_factory):
  manual = tmp_path_factory.mktemp('cityscapes_manual')
  make_cityscapes_archives(manual)
  data_dir = str(tmp_path_factory.mktemp('cityscapes_tfds'))
  sizes = prepare.prepare('cityscapes', manual_dir=str(manual), data_dir=data_dir)
  return data_dir, sizes


@pytest.fixture(scope='module')
def ade20k_dirs(tmp_path_factory):
  manual = tmp_path_factory.mktemp('ade_manual')
  make_ade20k_archive(manual)
  data_dir = str(tmp_path_factory.mktemp('ade_tfds'))
  sizes = prepare.prepare('ade20k', manual_dir=str(manual), data_dir=data_dir)
  return data_dir, sizes


def config_for(name, data_dir):
  from conftest import tiny_config  # pylint: disable=g-import-not-at-top
  base = importlib.import_module(f'configs.{name}').get_config()
  base.dataset.data_dir = data_dir
  config = tiny_config(base, {'train.num_steps': 2, 'train.log_every': 1,
                              'train.eval_every': 2, 'train.checkpoint_every': 2,
                              'input.eval_batch_size': 2, 'train.batch_size': 2})
  config.input.crop_size = (64, 64)
  config.model.upernet_channels = 16
  config.model.aux_channels = 8
  if name.startswith('ade20k'):
    config.input.base_size = (256, 64)  # the recipe's shape, scaled to the tiny images
    config.input.eval_size = (256, 64)
  return config


def test_cityscapes_splits_and_label_mapping(cityscapes_dirs):
  data_dir, sizes = cityscapes_dirs
  assert sizes == {'train': 4, 'validation': 2, 'test': 2}
  config = config_for('cityscapes_mcce', data_dir)
  source = datasets.load_source(config, 'train')
  record = source[0]
  assert record['image'].shape == (1024, 2048, 3)
  label = record['label']
  assert set(np.unique(label)) == {0, 2, 10, 11, 13, 255}  # road building sky person car ign
  assert label[950, 5] == 255 and label[5, 5] == 255  # ego vehicle, unlabeled
  index = class_index_lib.load_class_index(source, progress=False)
  assert list(index.image_counts[[0, 13]]) == [4, 4] and index.image_counts[16] == 0


def test_ade20k_splits_and_label_mapping(ade20k_dirs):
  data_dir, sizes = ade20k_dirs
  assert sizes == {'train': 3, 'validation': 2}
  config = config_for('ade20k_mcce', data_dir)
  source = datasets.load_source(config, 'validation')
  shapes = sorted(source[i]['label'].shape for i in range(2))
  assert shapes == [(96, 128), (120, 90)]
  labels = np.concatenate([source[i]['label'].ravel() for i in range(2)])
  assert set(np.unique(labels)) == {0, 3, 149, 255}


@pytest.mark.parametrize('name', ['cityscapes_mcce', 'cityscapes_focal', 'cityscapes_tce',
                                  'ade20k_mcce', 'ade20k_focal', 'ade20k_tce'])
def test_configs_train_on_prepared_fake_archives(name, cityscapes_dirs, ade20k_dirs,
                                                 tmp_path):
  data_dir = (cityscapes_dirs if name.startswith('cityscapes') else ade20k_dirs)[0]
  record = train.train_and_evaluate(config_for(name, data_dir), str(tmp_path))
  assert record['step'] == 2
  assert len(record['per_class_iou']) == (19 if name.startswith('cityscapes') else 150)


def test_missing_and_broken_archives_are_named(tmp_path):
  with pytest.raises(FileNotFoundError, match='gtFine_trainvaltest.zip'):
    (tmp_path / 'leftImg8bit_trainvaltest.zip').write_bytes(b'')
    prepare.check_archives('cityscapes', str(tmp_path))
  (tmp_path / 'gtFine_trainvaltest.zip').write_bytes(b'not a zip')
  with pytest.raises(ValueError, match='is not a zip archive'):
    prepare.check_archives('cityscapes', str(tmp_path))
  with pytest.raises(ValueError, match='--manual_dir is required'):
    prepare.check_archives('ade20k', None)


def test_unknown_cityscapes_label_id_stops_preparation(tmp_path):
  make_cityscapes_archives(tmp_path, bad_id=40)
  data_dir = tmp_path / 'tfds'
  with pytest.raises(datasets.DataError, match=r'Unknown label ids \[40\].*image aachen_'):
    prepare.prepare('cityscapes', manual_dir=str(tmp_path), data_dir=str(data_dir))
  config = config_for('cityscapes_mcce', str(data_dir))
  assert not datasets.get_spec(config).make_builder(config).is_prepared()


@pytest.mark.parametrize('problem,message', [
    ('bad_label', r'ADE_train_00000002.png holds label id 200'),
    ('mismatch', r'ADE_val_00000001.png is 128x94 but its image .* is 128x96'),
])
def test_bad_ade20k_files_stop_preparation(tmp_path, problem, message):
  make_ade20k_archive(tmp_path, **{problem: True})
  data_dir = tmp_path / 'tfds'
  with pytest.raises(PreparationError, match=message):
    prepare.prepare('ade20k', manual_dir=str(tmp_path), data_dir=str(data_dir))
  config = config_for('ade20k_mcce', str(data_dir))
  assert not datasets.get_spec(config).make_builder(config).is_prepared()
