"""Input pipeline: which records each step uses, their augmentation, and prefetching.

Every batch is a pure function of (seed, step, drawn class), so a run is deterministic and a
resumed run loads exactly what an uninterrupted one would. Each process loads only its own
share of the global batch (multi-host). Images stay uint8 until they reach the device.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import functools
import math
import threading
from typing import Any, Callable, Iterator, Sequence

from absl import logging
import numpy as np
from PIL import Image

from tce_jax.data.class_index import ClassIndex
from tce_jax.data.geometry import keep_ratio_scale, resized_shape
from tce_jax.data.imagenet import IMAGENET_MEAN
from tce_jax.data.datasets import IGNORE_INDEX, DataError, SegmentationSource

# ImageNet statistics (0-255 scale); images are normalised with them on the device.
_PAD_COLOR = tuple(int(round(v)) for v in IMAGENET_MEAN)  # padding that normalises to ~0
_UNIFORM_STREAM, _CLASS_STREAM, _AUGMENT_STREAM = 0, 1, 2  # independent random streams


def resize(image: np.ndarray, label: np.ndarray | None, scale: float):
  """Bilinear for the image, nearest for the label; `scale` 1 returns them unchanged."""
  if scale == 1.0:
    return image, label
  h, w = resized_shape(*image.shape[:2], scale)
  size = (w, h)
  image = np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR))
  if label is not None:
    label = np.asarray(Image.fromarray(label).resize(size, Image.NEAREST))
  return image, label


def window_counts(mask: np.ndarray, window: Sequence[int]) -> np.ndarray:
  """[H - h + 1, W - w + 1]: how many True pixels of `mask` [H, W] each h x w window holds,
  indexed by its top-left corner (an integral image: O(H W) whatever the window)."""
  h, w = window
  integral = np.zeros((mask.shape[0] + 1, mask.shape[1] + 1), np.int64)
  integral[1:, 1:] = np.cumsum(np.cumsum(mask, axis=0, dtype=np.int64), axis=1)
  return (integral[h:, w:] - integral[:-h, w:] - integral[h:, :-w] + integral[:-h, :-w])


def focused_crop_corner(mask: np.ndarray, crop_size: Sequence[int], min_pixels: int,
                        rng: np.random.Generator) -> tuple[int, int]:
  """A crop corner drawn uniformly among the windows holding at least `min_pixels` pixels of
  `mask`; when none does, among those holding the most."""
  counts = window_counts(mask, crop_size)
  good = counts >= min(min_pixels, counts.max())
  flat = np.flatnonzero(good)
  y, x = np.unravel_index(flat[rng.integers(0, len(flat))], counts.shape)
  return int(y), int(x)


def random_scale_crop_flip(image: np.ndarray, label: np.ndarray, rng: np.random.Generator, *,
                           crop_size: Sequence[int], scales: Sequence[float] = (1.0,),
                           flip: bool = True, base_size: Sequence[int] | None = None,
                           ratio_range: Sequence[float] | None = None,
                           photometric: bool = False, focus_class: int | None = None,
                           focus_pixels: int = 1) -> tuple[np.ndarray, np.ndarray]:
  """Training augmentation: rescale, pad (mean / ignore), random crop, flip (+ jitter).

  Rescaling as DeepLab (a factor drawn from `scales`) or, with `base_size`, as
  mmsegmentation's ADE20k recipe (fit into base_size x a ratio drawn from `ratio_range`).
  With `focus_class`, the crop is drawn among the windows that hold at least `focus_pixels`
  pixels of that class (or the most of it), not among all windows.
  """
  if base_size is not None:
    ratio = rng.uniform(*ratio_range)
    scale = keep_ratio_scale(*label.shape, [v * ratio for v in base_size])
  else:
    scale = float(rng.choice(np.asarray(scales, np.float64)))
  image, label = resize(image, label, scale)
  ch, cw = crop_size
  h, w = label.shape
  if h < ch or w < cw:
    pad = ((0, max(ch - h, 0)), (0, max(cw - w, 0)))
    image = np.stack([np.pad(image[..., i], pad, constant_values=_PAD_COLOR[i])
                      for i in range(3)], axis=-1)
    label = np.pad(label, pad, constant_values=IGNORE_INDEX)
    h, w = label.shape
  if focus_class is None:
    y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
  else:
    y, x = focused_crop_corner(label == focus_class, (ch, cw), focus_pixels, rng)
  image, label = image[y:y + ch, x:x + cw], label[y:y + ch, x:x + cw]
  if flip and rng.uniform() < 0.5:
    image, label = image[:, ::-1], label[:, ::-1]
  if photometric:  # brightness and contrast jitter
    jittered = image.astype(np.float32) * rng.uniform(0.8, 1.2) + rng.uniform(-32, 32)
    image = np.clip(jittered, 0, 255).astype(np.uint8)
  return image, label


class TrainBatches:
  """The training batch of each step: record indices, loading and augmentation."""

  def __init__(self, source: SegmentationSource, *, global_batch_size: int, seed: int,
               crop_size: Sequence[int], scales: Sequence[float], flip: bool,
               class_index: ClassIndex | None = None, process_index: int = 0,
               process_count: int = 1, base_size: Sequence[int] | None = None,
               ratio_range: Sequence[float] | None = None, photometric: bool = False,
               skip_bad_records: bool = False, class_crop_retries: int = 0,
               class_crop_min_pixels: int = 1):
    if global_batch_size % process_count:
      raise ValueError(f'Global batch {global_batch_size} is not divisible by the '
                       f'{process_count} processes')
    self.source, self.seed = source, seed
    self.global_batch_size = global_batch_size
    self.local_batch_size = global_batch_size // process_count
    self.process_index = process_index
    self.class_index = class_index
    self.skip_bad_records = skip_bad_records
    self.skipped = 0  # bad records replaced so far (skip_bad_records)
    self.class_crop_retries = class_crop_retries  # class-aware crops (0: off)
    self.class_crop_min_pixels = class_crop_min_pixels
    self._lock = threading.Lock()
    self.augment = functools.partial(
        random_scale_crop_flip, crop_size=tuple(crop_size), scales=tuple(scales), flip=flip,
        base_size=tuple(base_size) if base_size else None,
        ratio_range=tuple(ratio_range) if ratio_range else None, photometric=photometric)

  @functools.lru_cache(maxsize=2)
  def _epoch_order(self, epoch: int) -> np.ndarray:
    return np.random.default_rng([self.seed, _UNIFORM_STREAM, epoch]).permutation(
        len(self.source))

  def indices(self, step: int, cls: int | None = None) -> np.ndarray:
    """Global record indices of a step: shuffled epochs, or a draw from D_cls."""
    if cls is None:
      positions = step * self.global_batch_size + np.arange(self.global_batch_size)
      n = len(self.source)
      return np.array([self._epoch_order(int(p // n))[p % n] for p in positions])
    members = self.class_index.members(cls)
    if len(members) == 0:
      raise ValueError(f'Class {cls} was drawn but no image of {self.source.name}/'
                       f'{self.source.split} contains it')
    rng = np.random.default_rng([self.seed, _CLASS_STREAM, step])
    return rng.choice(members, self.global_batch_size,
                      replace=len(members) < self.global_batch_size)

  def __call__(self, step: int, cls: int | None = None) -> dict[str, np.ndarray]:
    """This process's share of the batch of `step`: image [b, h, w, 3], label [b, h, w]."""
    indices = self.indices(step, cls)
    start = self.process_index * self.local_batch_size
    images, labels = [], []
    for slot in range(start, start + self.local_batch_size):
      example = self._example(int(indices[slot]), step, cls)
      image, label = self._augment(example, step, slot, cls)
      images.append(image)
      labels.append(label)
    return {'image': np.stack(images), 'label': np.stack(labels)}

  def _augment(self, example: dict[str, np.ndarray], step: int, slot: int,
               cls: int | None) -> tuple[np.ndarray, np.ndarray]:
    """The augmentation of one image of the batch. With class-aware crops (a drawn class and
    `class_crop_retries` > 0), while the crop holds fewer than `class_crop_min_pixels` pixels
    of the class, the augmentation is redrawn (DAFormer's rule), each redraw from its own
    random stream; the last redraw places the crop on the class (where DAFormer keeps an
    unchecked one), so the crop holds the class whenever the rescaled image has enough of it."""
    rng = np.random.default_rng([self.seed, _AUGMENT_STREAM, step, slot])
    image, label = self.augment(example['image'], example['label'], rng)
    if cls is None or not self.class_crop_retries:
      return image, label
    for retry in range(1, self.class_crop_retries + 1):
      if np.count_nonzero(label == cls) >= self.class_crop_min_pixels:
        break
      rng = np.random.default_rng([self.seed, _AUGMENT_STREAM, step, slot, retry])
      last = retry == self.class_crop_retries
      image, label = self.augment(example['image'], example['label'], rng,
                                  focus_class=cls if last else None,
                                  focus_pixels=self.class_crop_min_pixels)
    return image, label


  def _example(self, index: int, step: int, cls: int | None) -> dict[str, np.ndarray]:
    """Record `index`; a bad one raises, or (skip_bad_records) is replaced by the next
    usable record of the same pool (all records, or D_cls) and counted."""
    try:
      return self.source[index]
    except DataError as e:
      if not self.skip_bad_records:
        raise DataError(f'{e} (training step {step}; config.input.skip_bad_records=True '
                        'skips such records)') from e
      logging.warning('Skipping a bad record at step %d: %s', step, e)
      with self._lock:
        self.skipped += 1
    pool = (np.arange(len(self.source)) if cls is None else self.class_index.members(cls))
    position = int(np.searchsorted(pool, index))
    for k in range(1, len(pool)):
      candidate = int(pool[(position + k) % len(pool)])
      try:
        return self.source[candidate]
      except DataError:
        with self._lock:
          self.skipped += 1
    raise DataError(f'No readable record left in {self.source.name}/{self.source.split}')


class Prefetcher:
  """Loads batches on host threads ahead of their step; `get` returns them in order.

  `submit(step, cls)` may pass the drawn class as a device scalar: the worker thread waits
  for it, so the main thread never blocks on a device-to-host transfer.
  """

  def __init__(self, load: Callable[[int, Any], Any], num_threads: int):
    self._load = load
    self._pool = concurrent.futures.ThreadPoolExecutor(max(num_threads, 1),
                                                       thread_name_prefix='loader')
    self._pending: dict[int, concurrent.futures.Future] = {}

  def submit(self, step: int, cls: Any = None):
    def task():
      return self._load(step, None if cls is None else int(cls))
    self._pending[step] = self._pool.submit(task)

  def get(self, step: int):
    if step not in self._pending:
      raise KeyError(f'Batch of step {step} was never submitted')
    return self._pending.pop(step).result()

  def close(self):
    for future in self._pending.values():
      future.cancel()
    self._pool.shutdown(wait=True, cancel_futures=True)


# Canvas sides of the evaluation buckets: 2^k and 1.5 * 2^k (each side padded by < 50%).
CANVAS_SIDES = tuple(sorted({2 ** k for k in range(3, 16)} | {3 * 2 ** k for k in range(2, 15)}))


def canvas_side(side: int, sides: Sequence[int] = CANVAS_SIDES, *, what: str = 'image') -> int:
  """The smallest of `sides` that holds `side` (a bucket's canvas side)."""
  i = int(np.searchsorted(np.asarray(sides), side))
  if i == len(sides):
    raise ValueError(f'An {what} side of {side} pixels exceeds the largest evaluation canvas '
                     f'({max(sides)}): add a larger side to config.eval.canvas_sides')
  return int(sides[i])


@dataclasses.dataclass(frozen=True)
class EvalBatch:
  """One global evaluation batch: record indices (-1 = a blank that pads the batch), the
  canvas its images are padded to, and the tiles of that canvas's size that the largest
  original label needs (1 when labels are scored at the input size)."""
  indices: tuple[int, ...]
  canvas: tuple[int, int]
  num_tiles: int = 1

  @property
  def num_images(self) -> int:
    return sum(i >= 0 for i in self.indices)


def label_tiles(height: int, width: int, canvas: Sequence[int]) -> int:
  """How many tiles of the canvas's size cover a label of height x width."""
  return math.ceil(height / canvas[0]) * math.ceil(width / canvas[1])


def eval_plan(sizes: np.ndarray, global_batch_size: int, *, size: Sequence[int] | None = None,
              resolution: str = 'resized',
              canvas_sides: Sequence[int] | None = None) -> list[EvalBatch]:
  """The batches that evaluate a split whose images have `sizes` [N, 2] (height, width).

  Each image is padded to a canvas that depends on its own (input) size only: the smallest
  of `canvas_sides` holding each side. Images of one canvas are batched together, in record
  order, so evaluation compiles one program per canvas in use, however many image sizes the
  split has, and a prediction never depends on the other images of its batch. Labels are
  scored at the input size (`resolution` 'resized') or at their original size ('original'),
  in tiles of the canvas's size, so that the scoring program too depends on the canvas only.
  """
  sides = tuple(canvas_sides) if canvas_sides else CANVAS_SIDES
  groups: dict[tuple[int, int], list[int]] = {}
  tiles = []
  for i, (h, w) in enumerate(np.asarray(sizes).tolist()):
    ih, iw = resized_shape(h, w, keep_ratio_scale(h, w, size)) if size is not None else (h, w)
    canvas = (canvas_side(ih, sides), canvas_side(iw, sides))
    groups.setdefault(canvas, []).append(i)
    tiles.append(1 if resolution == 'resized' else label_tiles(h, w, canvas))
  plan = []
  for canvas in sorted(groups, key=lambda c: (c[0] * c[1], c)):
    members = groups[canvas]
    for start in range(0, len(members), global_batch_size):
      chunk = members[start:start + global_batch_size]
      plan.append(EvalBatch(tuple(chunk) + (-1,) * (global_batch_size - len(chunk)), canvas,
                            max(tiles[i] for i in chunk)))
  return plan


def eval_batches(source: SegmentationSource, global_batch_size: int, *, process_index: int = 0,
                 process_count: int = 1, size: Sequence[int] | None = None,
                 resolution: str = 'resized', canvas_sides: Sequence[int] | None = None,
                 plan: Sequence[EvalBatch] | None = None,
                 num_threads: int = 4) -> Iterator[dict[str, np.ndarray]]:
  """The whole split in the batches of `plan` (default: `eval_plan` of the split's sizes).

  Yields this process's share of each global batch: 'image' [b, H, W, 3] uint8 on the
  batch's canvas, 'size' [b, 2] int32 the image's own (height, width) on it, and 'label'
  [b, H, W] uint8 padded with the ignore label. With `size` = (long, short), images are
  first resized keeping their aspect ratio (ADE20k: (2048, 512), the short side at 512) and
  labels with them (`resolution` 'resized'); with `resolution` 'original', labels keep their
  size and come as 'label' [b, T, H, W], T tiles of the canvas's size in row-major order
  (ignore-padded), with 'tile_offset' [b, T, 2] (row, column of each tile) and 'label_size'
  [b, 2]. Without `size`, evaluation is at full resolution. Blanks that pad a batch have size
  1 x 1 and ignore labels only.
  """
  if plan is None:
    from tce_jax.data import class_index  # pylint: disable=g-import-not-at-top
    plan = eval_plan(class_index.load_image_sizes(source), global_batch_size, size=size,
                     resolution=resolution, canvas_sides=canvas_sides)
  local = global_batch_size // process_count
  original = resolution == 'original'

  def load(i):
    if i < 0:
      return None
    example = source[i]
    image, label = example['image'], example['label']
    if size is not None:
      scale = keep_ratio_scale(*label.shape, size)
      image, resized_label = resize(image, label, scale)
      label = label if original else resized_label
    return image, label

  def assemble(batch: EvalBatch, pool):
    indices = batch.indices[process_index * local:(process_index + 1) * local]
    ch, cw = batch.canvas
    image = np.zeros((local, ch, cw, 3), np.uint8)
    sizes = np.ones((local, 2), np.int32)
    label = np.full((local, batch.num_tiles, ch, cw) if original else (local, ch, cw),
                    IGNORE_INDEX, np.uint8)
    offsets = np.zeros((local, batch.num_tiles, 2), np.int32)
    label_sizes = np.ones((local, 2), np.int32)
    for j, example in enumerate(pool.map(load, indices)):
      if example is None:
        continue
      e_image, e_label = example
      (ih, iw), (lh, lw) = e_image.shape[:2], e_label.shape
      if ih > ch or iw > cw or (original and label_tiles(lh, lw, batch.canvas) >
                                batch.num_tiles):
        raise DataError(f'{source.where(indices[j])} is {lh}x{lw}, not the size its recorded '
                        f'size planned: the image sizes cache (image_sizes_<split>.npz in '
                        f'{source.cache_dir}) is stale; remove it')
      image[j, :ih, :iw] = e_image
      sizes[j], label_sizes[j] = (ih, iw), (lh, lw)
      if not original:
        label[j, :lh, :lw] = e_label
        continue
      corners = [(y, x) for y in range(0, lh, ch) for x in range(0, lw, cw)]
      for t, (y, x) in enumerate(corners):
        tile = e_label[y:y + ch, x:x + cw]
        label[j, t, :tile.shape[0], :tile.shape[1]] = tile
        offsets[j, t] = (y, x)
    batch_arrays = {'image': image, 'size': sizes, 'label': label}
    if original:
      batch_arrays.update(tile_offset=offsets, label_size=label_sizes)
    return batch_arrays

  with concurrent.futures.ThreadPoolExecutor(max(num_threads, 1)) as pool:
    for batch in plan:
      yield assemble(batch, pool)


def prefetch_iterator(iterator: Iterator[Any], size: int = 2) -> Iterator[Any]:
  """Runs `iterator` on a background thread, `size` items ahead."""
  with concurrent.futures.ThreadPoolExecutor(1) as pool:
    queue = collections.deque()
    sentinel = object()
    it = iter(iterator)
    for _ in range(size):
      queue.append(pool.submit(next, it, sentinel))
    while queue:
      item = queue.popleft().result()
      if item is sentinel:
        return
      queue.append(pool.submit(next, it, sentinel))
      yield item
