"""What each image of a split holds: the class index (D_c, the images containing class c, and
per-class pixel counts) and the image sizes (evaluation groups images by size).

Each is built in one pass over the split and cached next to the dataset, keyed by the
source's fingerprint (dataset, version, split, size): a stale cache is rebuilt, never used.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import os
import tempfile
import time

from typing import TYPE_CHECKING, Iterable

import numpy as np
import tqdm

from tce_jax.labels import IGNORE_INDEX

if TYPE_CHECKING:  # the class index itself needs no dataset code (see ClassIndex)
  from tce_jax.data.datasets import SegmentationSource


@dataclasses.dataclass(frozen=True)
class ClassIndex:
  """presence [N, K] bool: image n is in D_k; pixel_counts [K] int64: pixels of each class
  in the split; image_pixel_counts [N, K] int32: pixels of class k in image n (None when not
  computed).

  The training loop builds it from a prepared dataset (`load_class_index`); code outside
  tce-jax builds it from its own label maps (`from_label_maps`) or pixel counts
  (`from_image_pixel_counts`): the samplers need nothing else from a dataset."""
  presence: np.ndarray
  pixel_counts: np.ndarray
  image_pixel_counts: np.ndarray | None = None

  @classmethod
  def from_image_pixel_counts(cls, image_pixel_counts: np.ndarray) -> ClassIndex:
    """The index of images whose [N, K] per-class pixel counts are given."""
    counts = np.asarray(image_pixel_counts)
    if counts.ndim != 2 or np.any(counts < 0):
      raise ValueError('image_pixel_counts must be [N, K] non-negative counts, got shape '
                       f'{counts.shape}')
    counts = counts.astype(np.int32)
    return cls(counts > 0, counts.sum(axis=0, dtype=np.int64), counts)

  @classmethod
  def from_label_maps(cls, label_maps: Iterable[np.ndarray], num_classes: int, *,
                      ignore_index: int = IGNORE_INDEX) -> ClassIndex:
    """The index of a split given as integer label maps (each [H, W], any size), in the
    order the user's loader numbers its images: pixels equal to `ignore_index` count for no
    class; any other value outside 0 .. num_classes - 1 is an error naming the image."""
    rows = []
    for n, label in enumerate(label_maps):
      values = np.asarray(label).ravel()
      if values.size and not np.issubdtype(values.dtype, np.integer):
        raise ValueError(f'label map {n} has dtype {values.dtype}; integer labels expected')
      values = values[values != ignore_index]
      bad = values[(values < 0) | (values >= num_classes)]
      if bad.size:
        raise ValueError(f'label map {n} holds {int(bad[0])}: neither a class (0 .. '
                         f'{num_classes - 1}) nor the ignore label {ignore_index}')
      rows.append(np.bincount(values.astype(np.int64), minlength=num_classes))
    if not rows:
      raise ValueError('from_label_maps needs at least one label map')
    return cls.from_image_pixel_counts(np.stack(rows))

  @property
  def num_classes(self) -> int:
    return self.presence.shape[1]

  def members(self, cls: int) -> np.ndarray:
    """D_c: the indices of the images that contain class `cls`, ascending."""
    return np.flatnonzero(self.presence[:, cls])

  def with_min_pixels(self, min_pixels: int) -> ClassIndex:
    """The index whose D_c holds only the images with more than `min_pixels` pixels of c
    (DAFormer's rare class sampling); `pixel_counts` (the class frequencies) are unchanged.

    A class that no image holds that much of keeps its whole D_c (`sparse_classes` lists
    them): DAFormer stops there, but a class too small for the threshold is the rare class
    the sampler exists for, and the class-aware crop still centres it.
    """
    if min_pixels <= 0:
      return self
    enough = self._enough(min_pixels)
    sparse = self.presence.any(axis=0) & ~enough.any(axis=0)
    return dataclasses.replace(self, presence=np.where(sparse, self.presence, enough))

  def sparse_classes(self, min_pixels: int) -> np.ndarray:
    """The classes present in the split but in no image with more than `min_pixels` pixels."""
    if min_pixels <= 0:
      return np.zeros((0,), np.int64)
    return np.flatnonzero(self.presence.any(axis=0) & ~self._enough(min_pixels).any(axis=0))

  def _enough(self, min_pixels: int) -> np.ndarray:
    """[N, K] bool: image n holds more than `min_pixels` pixels of class k."""
    if self.image_pixel_counts is None:
      raise ValueError('This class index has no per-image pixel counts: rebuild it')
    return self.image_pixel_counts > min_pixels

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
  image_pixel_counts = np.zeros((len(source), k), np.int32)
  start = time.perf_counter()
  for i in tqdm.trange(len(source), desc=f'class index of {source.name}/{source.split}',
                       disable=None if progress else True, mininterval=2.0):
    image_pixel_counts[i] = np.bincount(source[i]['label'].ravel(), minlength=256)[:k]
  elapsed = time.perf_counter() - start
  logging.info('Class index of %s/%s: %d images in %.1fs (%.0f images/s).', source.name,
               source.split, len(source), elapsed, len(source) / max(elapsed, 1e-9))
  return ClassIndex.from_image_pixel_counts(image_pixel_counts)


def cache_path(source: SegmentationSource, kind: str = 'class_index') -> str:
  return os.path.join(source.cache_dir, f'{kind}_{source.split}.npz')


def _read_cache(path: str, source: SegmentationSource,
                shapes: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray] | None:
  """The cached arrays when the file is readable, matches `source` and holds arrays of
  `shapes`; None (with a warning saying why) when it is stale or damaged."""
  try:
    with np.load(path, allow_pickle=False) as cached:
      fingerprint = str(cached['fingerprint'])
      if not set(shapes) <= set(cached.files):  # written by an older version
        logging.info('Cache %s lacks %s: rebuilding it.', path,
                     ', '.join(sorted(set(shapes) - set(cached.files))))
        return None
      arrays = {name: cached[name] for name in shapes}
  except Exception as e:  # pylint: disable=broad-except  (BadZipFile, EOFError, KeyError, ...)
    # numpy answers a file that is no .npz archive with advice to unpickle it: never that.
    reason = 'not an .npz archive' if 'pickle' in str(e) else f'{type(e).__name__}: {e}'
    logging.warning('Cache %s is unreadable (%s): rebuilding it.', path, reason)
    return None
  if fingerprint != source.fingerprint or any(arrays[name].shape != shape
                                              for name, shape in shapes.items()):
    logging.info('Cache %s is stale: rebuilding it.', path)
    return None
  return arrays


def _write_cache(path: str, source: SegmentationSource, arrays: dict[str, np.ndarray]):
  """Written to a temporary file, then renamed: a crash never leaves a half-written cache."""
  fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix='.npz.tmp')
  with os.fdopen(fd, 'wb') as f:
    np.savez(f, fingerprint=np.array(source.fingerprint), **arrays)
  os.chmod(tmp, _file_mode(os.path.dirname(path)))
  os.replace(tmp, path)


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
  truncated or garbage cache is rebuilt. Without a cache folder (a source not read from a
  prepared dataset, or a part of one) it is computed."""
  if not source.cache_dir:
    return compute_class_index(source, progress=progress)
  path = cache_path(source)
  k = source.num_classes
  if os.path.exists(path):
    cached = _read_cache(path, source, {'image_pixel_counts': (len(source), k)})
    if cached is not None:
      return ClassIndex.from_image_pixel_counts(cached['image_pixel_counts'])
  index = compute_class_index(source, progress=progress)
  _write_cache(path, source, {'image_pixel_counts': index.image_pixel_counts})
  return index


def compute_image_sizes(source: SegmentationSource, *, progress: bool = True,
                        num_threads: int = 8) -> np.ndarray:
  """[N, 2] int32 (height, width) of every image of `source` (one decoding pass)."""
  def size(i):
    return source[i]['label'].shape
  start = time.perf_counter()
  with concurrent.futures.ThreadPoolExecutor(num_threads) as pool:
    sizes = np.array(list(tqdm.tqdm(pool.map(size, range(len(source))), total=len(source),
                                    desc=f'image sizes of {source.name}/{source.split}',
                                    disable=None if progress else True, mininterval=2.0)),
                     np.int32).reshape(len(source), 2)
  elapsed = time.perf_counter() - start
  logging.log(logging.INFO if elapsed > 10 else logging.DEBUG,
              'Image sizes of %s/%s: %d images in %.1fs.', source.name, source.split,
              len(source), elapsed)
  return sizes


def load_image_sizes(source: SegmentationSource, *, progress: bool = True) -> np.ndarray:
  """[N, 2] int32 (height, width) of every image of `source`, cached like the class index.
  Without a cache folder (a source not read from a prepared dataset) they are computed."""
  if not source.cache_dir:
    return compute_image_sizes(source, progress=progress)
  path = cache_path(source, 'image_sizes')
  if os.path.exists(path):
    cached = _read_cache(path, source, {'sizes': (len(source), 2)})
    if cached is not None:
      return cached['sizes'].astype(np.int32)
  sizes = compute_image_sizes(source, progress=progress)
  _write_cache(path, source, {'sizes': sizes})
  return sizes
