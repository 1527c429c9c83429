"""tfds builder of CamVid's 11-class benchmark (the SegNet split), from a folder or a zip.

The benchmark's common layout (docs/camvid.md says where to get it): a folder `CamVid/` with
`train/ trainannot/ val/ valannot/ test/ testannot/` and the file lists `train.txt`,
`val.txt`, `test.txt` (one "image annotation" pair of paths per line); RGB PNGs of 480 x 360
and 8-bit label PNGs of the same size holding 0..10 (the classes, `classes.CAMVID_CLASSES`)
and 11 (void, mapped to the ignore label by `tce_jax.data.datasets`). 367 train, 101 val and
233 test images. `manual_dir` holds that folder, is that folder, or holds `CamVid.zip` with
the folder inside.

Every pair is checked while preparing: an unreadable image, a label map of another size or
with an id above 11, and a missing annotation stop preparation naming the file, and tfds
keeps nothing half-written. A folder in another CamVid layout (the original 32-class
colour-coded `*_L.png` labels) gets one message naming the layout expected.
"""

from __future__ import annotations

import dataclasses
import os
import zipfile

import tensorflow_datasets as tfds

from tce_jax.data import pairs

FOLDER = 'CamVid'
ARCHIVE = 'CamVid.zip'
SPLITS = {'train': 'train', 'validation': 'val', 'test': 'test'}  # tfds split -> list name
NUM_STORED_IDS = 12  # 0..10 classes, 11 void
LAYOUT = ('the 11-class SegNet layout: a folder CamVid/ holding train.txt, val.txt, test.txt '
          'and train/ trainannot/ val/ valannot/ test/ testannot/ (8-bit label PNGs, 0-10 '
          'classes and 11 void), or CamVid.zip holding that folder')


PreparationError = pairs.PreparationError


@dataclasses.dataclass(frozen=True)
class _Files:
  """Reads the benchmark's files from a folder or from the folder inside a zip."""
  root: str  # the CamVid folder, or the zip's path
  member_prefix: str | None = None  # inside the zip: 'CamVid/' (or '' at its top); None: folder

  def where(self, name: str) -> str:
    if self.member_prefix is None:
      return os.path.join(self.root, name)
    return f'{self.root}:{self.member_prefix}{name}'

  def names(self) -> set[str]:
    if self.member_prefix is None:
      found = set()
      for top, _, files in os.walk(self.root):
        rel = os.path.relpath(top, self.root)
        found.update(f if rel == '.' else f'{rel}/{f}' for f in files)
      return found
    with zipfile.ZipFile(self.root) as z:
      n = len(self.member_prefix)
      return {m[n:] for m in z.namelist() if m.startswith(self.member_prefix)}

  def read(self, name: str) -> bytes:
    if self.member_prefix is None:
      with open(os.path.join(self.root, name), 'rb') as f:
        return f.read()
    with zipfile.ZipFile(self.root) as z:
      return z.read(self.member_prefix + name)


def _is_benchmark_folder(path: str) -> bool:
  return all(os.path.isfile(os.path.join(path, f'{s}.txt')) for s in SPLITS.values())


def locate(manual_dir: str) -> _Files:
  """The benchmark's files in `manual_dir` (the folder, a folder holding it, or CamVid.zip);
  raises FileNotFoundError / PreparationError with the layout expected."""
  if not manual_dir or not os.path.isdir(manual_dir):
    raise FileNotFoundError(f'CamVid: manual_dir {manual_dir!r} is not a folder; expected '
                            f'{LAYOUT}')
  for folder in (os.path.join(manual_dir, FOLDER), manual_dir):
    if os.path.isdir(folder) and _is_benchmark_folder(folder):
      return _Files(folder)
  archive = os.path.join(manual_dir, ARCHIVE)
  if os.path.exists(archive):
    if not zipfile.is_zipfile(archive):
      raise PreparationError(f'{archive} is not a zip archive (truncated download?)')
    with zipfile.ZipFile(archive) as z:
      members = set(z.namelist())
    for prefix in (f'{FOLDER}/', ''):
      if all(f'{prefix}{s}.txt' in members for s in SPLITS.values()):
        return _Files(archive, prefix)
    raise PreparationError(f'{archive} is not in the expected layout; expected {LAYOUT}')
  found = []
  for top, _, files in os.walk(manual_dir):
    found += [os.path.join(top, f) for f in files if f.endswith('_L.png')]
    if found:
      break
  if found:
    raise PreparationError(
        f'{manual_dir} holds the original 32-class colour-coded CamVid labels ({found[0]}); '
        f'this dataset reads {LAYOUT}')
  raise FileNotFoundError(f'CamVid is not in {manual_dir}: expected {LAYOUT}')


def read_pairs(files: _Files, list_name: str) -> list[tuple[str, str]]:
  """(image, annotation) names of `list_name`.txt relative to the CamVid folder. The lists
  give absolute paths of the machine they were made on (/SegNet/CamVid/train/x.png); only
  the last two components are kept."""
  pairs = []
  text = files.read(f'{list_name}.txt').decode('utf-8', errors='replace')
  for number, line in enumerate(text.splitlines(), 1):
    parts = line.split()
    if not parts:
      continue
    if len(parts) != 2:
      raise PreparationError(f'{files.where(list_name + ".txt")}, line {number}: expected '
                             f'"image annotation", got {line!r}')
    pairs.append(tuple('/'.join(p.replace('\\', '/').split('/')[-2:]) for p in parts))
  if not pairs:
    raise PreparationError(f'{files.where(list_name + ".txt")} lists no image')
  return pairs


def check_pair(files: _Files, image_name: str, image_bytes: bytes, label_name: str,
               label_bytes: bytes) -> None:
  """Raises PreparationError naming the file when the pair cannot be used."""
  image = pairs.check_pair(files.where(image_name), image_bytes, files.where(label_name),
                           label_bytes, num_ids=NUM_STORED_IDS, dataset='CamVid',
                           note=' (11 = void)')
  if image.mode != 'RGB':
    raise PreparationError(f'{files.where(image_name)} has mode {image.mode}, expected RGB')


class CamVid(tfds.core.GeneratorBasedBuilder):
  """CamVid, 11 classes (the SegNet tutorial's split): 367 train, 101 val, 233 test."""

  name = 'camvid'  # the folder under data_dir (tfds would say cam_vid)
  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': "The SegNet tutorial's CamVid folder (11 classes + void)."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Put the CamVid/ folder of the SegNet tutorial repository (about 180 MB; docs/camvid.md) "
      f'into manual_dir, or a zip of it named {ARCHIVE}.')

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description='CamVid: 11 classes at 360 x 480; label 11 = void (ignored).',
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=(None, None, 3), encoding_format='png'),
            'segmentation_label': tfds.features.Image(shape=(None, None, 1),
                                                      encoding_format='png'),
            'image_id': tfds.features.Text(),
        }),
    )

  def _split_generators(self, dl_manager):
    files = locate(os.fspath(dl_manager.manual_dir))
    names = files.names()
    plans = {}
    for split, list_name in SPLITS.items():  # every file checked present before writing
      pairs = read_pairs(files, list_name)
      for image_name, label_name in pairs:
        for name in (image_name, label_name):
          if name not in names:
            raise PreparationError(f'{files.where(name)} is listed in {list_name}.txt but '
                                   'missing')
      plans[split] = pairs
    return {split: self._generate_examples(files, pairs) for split, pairs in plans.items()}

  def _generate_examples(self, files: _Files, pairs: list[tuple[str, str]]):
    for image_name, label_name in pairs:
      image_bytes, label_bytes = files.read(image_name), files.read(label_name)
      check_pair(files, image_name, image_bytes, label_name, label_bytes)
      stem = os.path.splitext(os.path.basename(image_name))[0]
      yield stem, {'image': image_bytes, 'segmentation_label': label_bytes, 'image_id': stem}
