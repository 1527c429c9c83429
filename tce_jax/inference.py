"""Inference on canvases: whole-image or sliding-window prediction, multi-scale and flip
averaging of class probabilities, and the bilinear resize that scores a prediction at its
image's original size. Pure functions of model variables and arrays, used by the evaluator,
by `tce_jax.evaluate`'s label prediction and by the benchmarks.

An image occupies the top-left `size` (h, w) of its canvas; the padding is zero after
normalisation, never scored, and never changes the image's prediction.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
from jax import lax
import jax.numpy as jnp

from tce_jax.data import geometry
from tce_jax.data import imagenet

Variables = dict[str, Any]  # {'params': ..., 'batch_stats': ...}


def valid_mask(shape: Sequence[int], size: jax.Array) -> jax.Array:
  """[H, W] bool: the pixels of a canvas of `shape` inside an image of `size` (h, w)."""
  rows = jnp.arange(shape[0]) < size[0]
  cols = jnp.arange(shape[1]) < size[1]
  return rows[:, None] & cols[None, :]


def resize_bilinear(x: jax.Array, shape: Sequence[int], size: jax.Array,
                    new_size: jax.Array, offset: jax.Array | None = None) -> jax.Array:
  """Bilinear resize of the top-left `size` (h, w) of x [H, W, C] to `new_size`, returned in
  a canvas [*shape, C] (zero outside the image); the sizes may be traced, the shapes are
  static. With `offset` (row, column) the canvas is the tile of the resized image that starts
  there (a large image is resized one tile at a time).

  The interpolation is torch's `F.interpolate(mode='bilinear', align_corners=False)` without
  antialiasing, which mmsegmentation uses to resize logits: source coordinate
  (i + 0.5) * in / out - 0.5, clamped at the image's own borders (never reading padding).
  """
  out = x.astype(jnp.float32)
  for axis in (0, 1):
    n_in = size[axis].astype(jnp.float32)
    n_out = new_size[axis].astype(jnp.float32)
    dst = jnp.arange(shape[axis], dtype=jnp.float32)
    if offset is not None:
      dst = dst + offset[axis].astype(jnp.float32)
    src = jnp.maximum((dst + 0.5) * (n_in / n_out) - 0.5, 0.0)
    i0 = jnp.minimum(jnp.floor(src).astype(jnp.int32), size[axis] - 1)
    i1 = jnp.minimum(i0 + 1, size[axis] - 1)
    frac = jnp.clip(src - i0, 0.0, 1.0)
    keep = (dst < n_out).astype(jnp.float32)
    lo = jnp.take(out, i0, axis=axis)
    hi = jnp.take(out, i1, axis=axis)
    broadcast = [1] * out.ndim
    broadcast[axis] = shape[axis]
    weight_lo = ((1.0 - frac) * keep).reshape(broadcast)
    weight_hi = (frac * keep).reshape(broadcast)
    out = lo * weight_lo + hi * weight_hi
  return out


def flip_valid(x: jax.Array, sizes: jax.Array) -> jax.Array:
  """Mirrors each image of x [B, H, W, C] within its own width (the padding stays right)."""
  cols = jnp.arange(x.shape[2])
  source = jnp.where(cols[None] < sizes[:, 1:2], sizes[:, 1:2] - 1 - cols[None], cols[None])
  return jnp.take_along_axis(x, source[:, None, :, None], axis=2)


def window_offsets(size: jax.Array, canvas: int, window: int, stride: int):
  """The sliding windows along one axis, as mmsegmentation's slide inference places them:
  window i starts at max(min(i * stride + window, size) - window, 0). Returns (starts [n],
  used [n]) for the n windows a canvas side needs; an image smaller than the canvas uses
  only its own first windows."""
  n = max(canvas - window + stride - 1, 0) // stride + 1
  needed = jnp.maximum(size - window + stride - 1, 0) // stride + 1
  index = jnp.arange(n)
  starts = jnp.maximum(jnp.minimum(index * stride + window, size) - window, 0)
  return starts, index < needed


def slide_logits(apply, x: jax.Array, sizes: jax.Array, num_classes: int,
                 window: Sequence[int], stride: Sequence[int]) -> jax.Array:
  """Sliding-window logits [B, H, W, K] of x [B, H, W, 3]: windows of `window` (h, w) placed
  every `stride`, each batch of windows (one per image) run on the device together, and the
  logits of overlapping windows averaged (mmsegmentation's `mode='slide'`). A window larger
  than the canvas is clipped to it; an image smaller than a window sees zero padding."""
  b, h, w, _ = x.shape
  wh, ww = min(window[0], h), min(window[1], w)
  ys, y_used = jax.vmap(lambda s: window_offsets(s, h, wh, stride[0]))(sizes[:, 0])
  xs, x_used = jax.vmap(lambda s: window_offsets(s, w, ww, stride[1]))(sizes[:, 1])
  ny, nx = ys.shape[1], xs.shape[1]
  starts_y = jnp.repeat(ys, nx, axis=1).T  # [windows, B]
  starts_x = jnp.tile(xs, (1, ny)).T
  used = (jnp.repeat(y_used, nx, axis=1) & jnp.tile(x_used, (1, ny))).T

  def add(total, piece, y, x0):
    return lax.dynamic_update_slice(
        total, lax.dynamic_slice(total, (y, x0, 0), piece.shape) + piece, (y, x0, 0))

  def body(carry, window_args):
    total, count = carry
    y, x0, on = window_args
    crops = jax.vmap(lambda im, yy, xx: lax.dynamic_slice(im, (yy, xx, 0), (wh, ww, 3)))(
        x, y, x0)
    logits = apply(crops).astype(jnp.float32) * on[:, None, None, None]
    total = jax.vmap(add)(total, logits, y, x0)
    ones = jnp.broadcast_to(on[:, None, None, None].astype(jnp.float32), (b, wh, ww, 1))
    count = jax.vmap(add)(count, ones, y, x0)
    return (total, count), None

  init = (jnp.zeros((b, h, w, num_classes), jnp.float32), jnp.zeros((b, h, w, 1), jnp.float32))
  (total, count), _ = lax.scan(body, init, (starts_y, starts_x, used))
  return total / jnp.maximum(count, 1.0)


def predict(model, variables: Variables, images: jax.Array, sizes: jax.Array | None = None, *,
            scales: Sequence[float] = (1.0,), flip: bool = False, mode: str = 'whole',
            window: Sequence[int] | None = None,
            stride: Sequence[int] | None = None) -> jax.Array:
  """Scores [B, H, W, K] of uint8 canvases [B, H, W, 3] whose images have `sizes` [B, 2]
  (None: the whole canvas); their argmax is the prediction.

  One pass (scale 1, no flip) returns logits. With several scales or flip, the class
  probabilities of the passes are averaged: each image is rescaled within its own size,
  (mirrored,) predicted, and its logits resized back before the softmax. Pixels outside an
  image are zero in the input (after normalisation) and meaningless in the output.
  """
  b, h, w, _ = images.shape
  if sizes is None:
    sizes = jnp.broadcast_to(jnp.array([h, w], jnp.int32), (b, 2))
  sizes = sizes.astype(jnp.int32)
  mask = jax.vmap(lambda s: valid_mask((h, w), s))(sizes)[..., None]
  x = jnp.where(mask, imagenet.normalize(images, jnp.float32), 0.0)

  def apply(inputs):
    return model.apply(variables, inputs.astype(model.dtype), train=False)

  passes = [(scale, flipped) for scale in scales for flipped in ((False, True) if flip
                                                                 else (False,))]
  total = 0.0
  for scale, flipped in passes:
    if scale == 1.0:
      shape, scaled_sizes, scaled = (h, w), sizes, x
    else:
      shape = geometry.resized_shape(h, w, scale)
      scaled_sizes = jnp.maximum(jnp.round(sizes * scale), 1).astype(jnp.int32)
      scaled = jax.vmap(lambda im, s, t: resize_bilinear(im, shape, s, t))(x, sizes,
                                                                            scaled_sizes)
    if flipped:
      scaled = flip_valid(scaled, scaled_sizes)
    if mode == 'slide':
      logits = slide_logits(apply, scaled, scaled_sizes, model.num_classes, window, stride)
    else:
      logits = apply(scaled).astype(jnp.float32)
    if flipped:
      logits = flip_valid(logits, scaled_sizes)
    if scale != 1.0:
      logits = jax.vmap(lambda lg, s, t: resize_bilinear(lg, (h, w), s, t))(logits,
                                                                            scaled_sizes, sizes)
    if len(passes) == 1:
      return logits
    total = total + jax.nn.softmax(logits, axis=-1)
  return total / len(passes)


def returns_logits(scales: Sequence[float], flip: bool) -> bool:
  """Whether `predict` with these scales and flip returns logits (one pass) rather than the
  average of several passes' class probabilities."""
  return len(scales) == 1 and not flip
