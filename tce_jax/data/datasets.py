"""Datasets by name: random-access tfds sources of (image, label-in-train-ids) records."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import fcntl
import io
import os
import shutil
import threading
import time
from typing import Any, Callable, Iterator

from absl import logging
import ml_collections
import numpy as np
import tensorflow_datasets as tfds

from tce_jax.data import ade20k
from tce_jax.data import classes
from tce_jax.labels import IGNORE_INDEX


class DataError(ValueError):
  """A record that cannot be used: names the dataset, split and record index."""


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  """What the rest of the code needs to know about a dataset."""
  class_names: tuple[str, ...]
  palette: np.ndarray
  make_builder: Callable[[ml_collections.ConfigDict], Any]  # config -> tfds builder
  label_map: np.ndarray | None = None  # uint8 LUT [256] from stored label ids to train ids
  can_generate: bool = False  # prepared on first use (no manual download needed)
  image_key: str = 'image'  # feature name of the image in the tfds records
  archives: tuple[str, ...] = ()  # files the manual download must put in manual_dir
  valid_ids: tuple[int, ...] | None = None  # stored label ids that may occur (None: 0..K-1)
  # Checks a manual_dir that holds a folder rather than `archives` (raises naming the layout).
  check_manual_dir: Callable[[str], Any] | None = None

  @property
  def num_classes(self) -> int:
    return len(self.class_names)


def _synthetic_builder(config: ml_collections.ConfigDict):
  # Imported here: only the synthetic dataset needs its builder module.
  from tce_jax.data.synthetic import SyntheticStreets, SyntheticStreetsConfig  # pylint: disable=all
  builder_config = SyntheticStreetsConfig(**config.dataset.synthetic)
  if builder_config.name in SyntheticStreets.builder_configs:  # tfds wants the name then
    builder_config = builder_config.name
  return SyntheticStreets(config=builder_config, data_dir=config.dataset.data_dir,
                          file_format='array_record')


def _cityscapes_builder(config: ml_collections.ConfigDict):
  """tfds' own builder; it stores raw label ids (gtFine_labelIds), mapped to train ids here."""
  return tfds.builder('cityscapes/semantic_segmentation', data_dir=config.dataset.data_dir,
                      file_format='array_record')


def _ade20k_builder(config: ml_collections.ConfigDict):
  from tce_jax.data.ade20k import Ade20kSceneParsing  # pylint: disable=g-import-not-at-top
  return Ade20kSceneParsing(data_dir=config.dataset.data_dir, file_format='array_record')


def _camvid_builder(config: ml_collections.ConfigDict):
  from tce_jax.data.camvid import CamVid  # pylint: disable=g-import-not-at-top
  return CamVid(data_dir=config.dataset.data_dir, file_format='array_record')


def _camvid_locate(manual_dir: str):
  from tce_jax.data.camvid import locate  # pylint: disable=g-import-not-at-top
  return locate(manual_dir)


# config.dataset.name -> spec.
# The official Cityscapes archives tfds's builder reads from its manual_dir.
CITYSCAPES_ARCHIVES = ('leftImg8bit_trainvaltest.zip', 'gtFine_trainvaltest.zip')

DATASETS: dict[str, DatasetSpec] = {
    'synthetic': DatasetSpec(classes.CITYSCAPES_CLASSES, classes.CITYSCAPES_PALETTE,
                             _synthetic_builder, can_generate=True),
    'cityscapes': DatasetSpec(classes.CITYSCAPES_CLASSES, classes.CITYSCAPES_PALETTE,
                              _cityscapes_builder, label_map=classes.CITYSCAPES_LABEL_MAP,
                              image_key='image_left',
                              archives=CITYSCAPES_ARCHIVES,
                              valid_ids=tuple(range(34)) + (IGNORE_INDEX,)),
    'ade20k': DatasetSpec(classes.ADE20K_CLASSES, classes.ADE20K_PALETTE, _ade20k_builder,
                          label_map=classes.ADE20K_LABEL_MAP,
                          archives=(ade20k.ARCHIVE,),
                          valid_ids=tuple(range(151))),
    'camvid': DatasetSpec(classes.CAMVID_CLASSES, classes.CAMVID_PALETTE, _camvid_builder,
                          label_map=classes.CAMVID_LABEL_MAP, valid_ids=tuple(range(12)),
                          check_manual_dir=_camvid_locate),
}


def get_spec(config: ml_collections.ConfigDict) -> DatasetSpec:
  name = config.dataset.name
  if name not in DATASETS:
    raise ValueError(f'config.dataset.name={name!r} is not one of {sorted(DATASETS)}')
  return DATASETS[name]


@contextlib.contextmanager
def preparing(builder) -> Iterator[None]:
  """Holds the dataset folder's preparation lock (an OS lock on `<dataset>/.prepare.lock`,
  released when its holder ends in any way): two processes preparing or generating one
  dataset into one data_dir take turns, and the second finds the first one's result."""
  folder = os.path.dirname(os.fspath(builder.data_dir))
  os.makedirs(folder, exist_ok=True)
  with open(os.path.join(folder, '.prepare.lock'), 'a') as f:
    try:
      fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      logging.info('Another process is preparing the dataset in %s: waiting for it.', folder)
      fcntl.flock(f, fcntl.LOCK_EX)
    yield


def get_builder(config: ml_collections.ConfigDict):
  """The dataset's tfds builder; generates a synthetic dataset on first use (one process at
  a time per data_dir: a second one waits and reuses it)."""
  spec = get_spec(config)
  builder = spec.make_builder(config)
  if builder.is_prepared():
    return builder
  with preparing(builder):
    builder = spec.make_builder(config)  # another process may have prepared it meanwhile
    return _prepared(config, spec, builder)


def _prepared(config: ml_collections.ConfigDict, spec: DatasetSpec, builder):
  """`builder` once prepared (generated here if it can be, else FileNotFoundError)."""
  data_dir = os.fspath(builder.data_dir)
  if not builder.is_prepared() and os.path.exists(data_dir):
    # A folder without a valid dataset_info.json (an interrupted preparation): tfds would
    # silently "reuse" it and list no split.
    info_file = os.path.join(data_dir, 'dataset_info.json')
    if not spec.can_generate:
      raise FileNotFoundError(
          f'Dataset {config.dataset.name!r} in {data_dir} is incompletely prepared '
          f'({info_file} is missing or invalid). Remove that folder and prepare it again: '
          f'python -m tce_jax.prepare --dataset={config.dataset.name} '
          '--manual_dir=DIR_WITH_THE_ARCHIVES')
    logging.warning('The generated dataset in %s is incomplete (%s is missing or invalid): '
                    'generating it again.', data_dir, info_file)
    shutil.rmtree(data_dir)
    builder = spec.make_builder(config)
  if not builder.is_prepared():
    if not spec.can_generate:
      raise FileNotFoundError(
          f'Dataset {config.dataset.name!r} is not prepared in {builder.data_dir}. Prepare it '
          f'with: python -m tce_jax.prepare --dataset={config.dataset.name} '
          '--manual_dir=DIR_WITH_THE_ARCHIVES')
    logging.info('Generating the %s dataset into %s (once; later runs reuse it).',
                 config.dataset.name, builder.data_dir)
    start = time.perf_counter()
    tfds.disable_progress_bar()  # its bars would sit among the run's log lines
    with contextlib.redirect_stdout(io.StringIO()):  # tfds' "Downloading and preparing ..."
      builder.download_and_prepare(file_format='array_record')
    logging.info('Generated the %s dataset in %.0f s.', config.dataset.name,
                 time.perf_counter() - start)
  return builder


class _Head:
  """The first n records of a random-access sequence."""

  def __init__(self, records, n: int):
    self._records, self._n = records, n

  def __len__(self) -> int:
    return self._n

  def __getitem__(self, index: int):
    if not 0 <= index < self._n:
      raise IndexError(f'record {index} of {self._n}')
    return self._records[index]


class _MemoryCache:
  """Decoded, checked records kept in host memory up to a byte budget (the first records
  read are kept; beyond the budget records are decoded at each read). Kept arrays are
  read-only, so that no consumer can change what the next read returns."""

  def __init__(self, max_bytes: int):
    self.max_bytes, self.used = max_bytes, 0
    self.examples: dict[int, dict[str, np.ndarray]] = {}
    self._lock = threading.Lock()

  def put(self, index: int, example: dict[str, np.ndarray]) -> None:
    size = sum(v.nbytes for v in example.values())
    with self._lock:
      if index in self.examples or self.used + size > self.max_bytes:
        return
      for v in example.values():
        v.flags.writeable = False
      self.examples[index] = example
      self.used += size


class SegmentationSource:
  """Random access to (image [H, W, 3] uint8, label [H, W] uint8 in train ids) records.

  Labels are mapped to train ids and checked: a record whose label map differs in size from
  its image or holds an id outside the classes raises DataError naming the record.
  """

  def __init__(self, records, *, name: str, split: str, num_classes: int,
               label_map: np.ndarray | None = None, cache_dir: str | None = None,
               fingerprint: str = '', image_key: str = 'image',
               valid_ids: tuple[int, ...] | None = None):
    self._records = records
    self._image_key = image_key
    self._invalid_id = None
    if valid_ids is not None:
      self._invalid_id = np.ones(256, bool)
      self._invalid_id[list(valid_ids)] = False
    self.name, self.split, self.num_classes = name, split, num_classes
    self._label_map = label_map
    self.cache_dir = cache_dir
    self.fingerprint = fingerprint  # changes whenever the records may have changed
    self._memory: _MemoryCache | None = None

  def keep_in_memory(self, max_bytes: int) -> 'SegmentationSource':
    """The same source keeping up to `max_bytes` of decoded records in memory after their
    first read (`config.input.memory_cache_gb`): a small dataset (the synthetic one) is
    decoded and checked once per process instead of at every read."""
    kept = copy.copy(self)
    # pylint: disable-next=protected-access
    kept._memory = _MemoryCache(max_bytes) if max_bytes > 0 else None
    return kept

  def __len__(self) -> int:
    return len(self._records)

  def head(self, n: int) -> 'SegmentationSource':
    """The same source limited to its first n records (benchmarks, quick checks)."""
    subset = copy.copy(self)
    subset._records = _Head(self._records, min(n, len(self)))  # pylint: disable=protected-access
    subset.cache_dir = None  # its indices are its own: computed, never cached over the split's
    subset.fingerprint = f'{self.fingerprint}/head{len(subset)}'
    return subset

  def where(self, index: int, record=None) -> str:
    image_id = record.get('image_id') if isinstance(record, dict) else None
    if isinstance(image_id, bytes):
      image_id = image_id.decode()
    named = f' (image {image_id})' if image_id is not None and image_id != '' else ''
    return f'dataset {self.name!r}, split {self.split!r}, record {index}{named}'

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    index = int(index)
    if self._memory is not None:
      kept = self._memory.examples.get(index)
      if kept is not None:
        return kept
    example = self._read(index)
    if self._memory is not None:
      self._memory.put(index, example)
    return example

  def _read(self, index: int) -> dict[str, np.ndarray]:
    """Record `index` decoded and checked (raises DataError naming it)."""
    try:
      record = self._records[index]
    except Exception as e:  # a corrupt file or an undecodable image
      raise DataError(f'Cannot read {self.where(index)}: {e}') from e
    image = np.asarray(record[self._image_key])
    label = np.asarray(record['segmentation_label'])
    if label.ndim == 3:
      label = label[..., 0]
    if image.ndim != 3 or image.shape[-1] != 3 or image.shape[:2] != label.shape:
      raise DataError(f'Image {image.shape} and label {label.shape} do not match in '
                      f'{self.where(index, record)}')
    if self._invalid_id is not None:
      invalid = self._invalid_id[label]
      if invalid.any():
        raise DataError(f'Unknown label ids {sorted(set(label[invalid].tolist()))[:10]} in '
                        f'{self.where(index, record)}')
    if self._label_map is not None:
      label = self._label_map[label]
    invalid = (label >= self.num_classes) & (label != IGNORE_INDEX)
    if invalid.any():
      raise DataError(f'Label ids {sorted(set(label[invalid].tolist()))[:10]} are outside '
                      f'0..{self.num_classes - 1} (and {IGNORE_INDEX} = ignore) in '
                      f'{self.where(index, record)}')
    return {'image': image.astype(np.uint8), 'label': label.astype(np.uint8)}


def load_source(config: ml_collections.ConfigDict, split: str) -> SegmentationSource:
  """The random-access source of one split of `config.dataset`."""
  spec = get_spec(config)
  builder = get_builder(config)
  if split not in builder.info.splits:
    raise ValueError(f'Split {split!r} is not in dataset {config.dataset.name!r}; it has '
                     f'{sorted(builder.info.splits)}')
  records = builder.as_data_source(split)
  fingerprint = f'{builder.info.full_name}/{split}/{builder.info.splits[split].num_examples}'
  return SegmentationSource(records, name=config.dataset.name, split=split,
                            num_classes=spec.num_classes, label_map=spec.label_map,
                            cache_dir=os.fspath(builder.data_dir), fingerprint=fingerprint,
                            image_key=spec.image_key, valid_ids=spec.valid_ids)
