"""The class index of a split: D_c (images containing class c) and per-class pixel counts.

Built in one vectorised pass over the labels (bincount per image) and cached next to the
dataset, keyed by the source's fingerprint (dataset, version, split, size): a stale cache
is rebuilt, never used.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import tempfile
import time

import numpy as np
import tqdm

from tce_jax.data.datasets import SegmentationSource
from tce_jax.losses import inverse_frequency_weights  # noqa: F401  (its old home; re-exported)


@dataclasses.dataclass(frozen=True)
class ClassIndex:
  """presence [N, K] bool: image n contains class k; pixel_counts [K] int64."""
  presence: np.ndarray
  pixel_counts: np.ndarray

  @property
  def num_classes(self) -> int:
    return self.presence.shape[1]

  def members(self, cls: int) -> np.ndarray:
    """D_c: the indices of the images that contain class `cls`, ascending."""
    return np.flatnonzero(self.presence[:, cls])

  @property
  def available(self) -> np.ndarray:
    """[K] bool: classes with a non-empty D_c (the only ones the sampler may draw)."""
    return self.presence.any(axis=0)

  @property
  def image_counts(self) -> np.ndarray:
    return self.presence.sum(axis=0)


def compute_class_index(source: SegmentationSource, *, progress: bool = True) -> ClassIndex:
  """One pass over the labels of `source`."""
  k = source.num_classes
  presence = np.zeros((len(source), k), bool)
  pixel_counts = np.zeros((k,), np.int64)
  start = time.perf_counter()
  for i in tqdm.trange(len(source), desc=f'class index of {source.name}/{source.split}',
                       disable=not progress, mininterval=2.0):
    counts = np.bincount(source[i]['label'].ravel(), minlength=256)[:k]
    presence[i] = counts > 0
    pixel_counts += counts
  elapsed = time.perf_counter() - start
  logging.info('Class index of %s/%s: %d images in %.1fs (%.0f images/s).', source.name,
               source.split, len(source), elapsed, len(source) / max(elapsed, 1e-9))
  return ClassIndex(presence, pixel_counts)


def cache_path(source: SegmentationSource) -> str:
  return os.path.join(source.cache_dir, f'class_index_{source.split}.npz')


def _read_cache(path: str, source: SegmentationSource) -> ClassIndex | None:
  """The cached index when it is readable and matches `source`; None (with a warning saying
  why) when it is stale or damaged."""
  try:
    with np.load(path, allow_pickle=False) as cached:
      fingerprint, presence = str(cached['fingerprint']), cached['presence']
      pixel_counts = cached['pixel_counts']
  except Exception as e:  # pylint: disable=broad-except  (BadZipFile, EOFError, KeyError, ...)
    # numpy answers a file that is no .npz archive with advice to unpickle it: never that.
    reason = 'not an .npz archive' if 'pickle' in str(e) else f'{type(e).__name__}: {e}'
    logging.warning('Class index cache %s is unreadable (%s): rebuilding it.', path, reason)
    return None
  if fingerprint != source.fingerprint or presence.shape != (len(source), source.num_classes) \
      or pixel_counts.shape != (source.num_classes,):
    logging.info('Class index cache %s is stale: rebuilding it.', path)
    return None
  return ClassIndex(presence, pixel_counts)


def _file_mode(directory: str) -> int:
  """The permissions of the dataset's other files (so that every user of a shared data_dir
  can read the cache), or the umask's default."""
  for name in ('dataset_info.json', 'features.json'):
    path = os.path.join(directory, name)
    if os.path.exists(path):
      return os.stat(path).st_mode & 0o777
  umask = os.umask(0)
  os.umask(umask)
  return 0o666 & ~umask


def load_class_index(source: SegmentationSource, *, progress: bool = True) -> ClassIndex:
  """The class index of `source`, from its cache when the cache matches the source; a stale,
  truncated or garbage cache is rebuilt."""
  path = cache_path(source)
  if os.path.exists(path):
    index = _read_cache(path, source)
    if index is not None:
      return index
  index = compute_class_index(source, progress=progress)
  # Written to a temporary file, then renamed: a crash never leaves a half-written cache.
  fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix='.npz.tmp')
  with os.fdopen(fd, 'wb') as f:
    np.savez(f, presence=index.presence, pixel_counts=index.pixel_counts,
             fingerprint=np.array(source.fingerprint))
  os.chmod(tmp, _file_mode(os.path.dirname(path)))
  os.replace(tmp, path)
  return index
