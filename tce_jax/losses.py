"""Segmentation losses: MCCE, weighted CE, Focal, the tilted (TERM) losses of TCE, and the
baselines users compare them with (OHEM, Recall loss).

All losses take `logits` [B, H, W, K] (any float dtype; computed in float32) and integer
`labels` [B, H, W]; pixels equal to `ignore_index` contribute nothing. Each returns a scalar.

`axis_name` (optional, keyword-only) makes a loss a loss of the *global* batch when it runs
per device inside `shard_map`: every reduction over pixels, images or classes is completed
with collectives over that axis, so N devices compute exactly what one device would on the
concatenated batch. With `axis_name=None` (the default) the loss is that of the given batch.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Mapping

import jax
import jax.numpy as jnp
from jax import lax
import numpy as np

from tce_jax.labels import IGNORE_INDEX

Array = jax.Array


def _psum(x: Array, axis_name: str | None) -> Array:
  return x if axis_name is None else lax.psum(x, axis_name)


def _safe_divide(num: Array, den: Array) -> Array:
  """num / den, and 0 (with zero gradient) where den == 0."""
  return jnp.where(den > 0, num / jnp.where(den > 0, den, 1), 0.0)


def pixel_cross_entropy(logits: Array, labels: Array, ignore_index: int = IGNORE_INDEX):
  """Per-pixel CE [B, H, W] (0 at ignored pixels) and the validity mask [B, H, W]."""
  logits = logits.astype(jnp.float32)
  valid = labels != ignore_index
  safe_labels = jnp.where(valid, labels, 0).astype(jnp.int32)
  # logsumexp - logit of the label, picked with a one-hot mask rather than a gather: the
  # mask fuses with the softmax, where the gather's gradient is a scatter (slower on CPU).
  one_hot = safe_labels[..., None] == jnp.arange(logits.shape[-1], dtype=jnp.int32)
  nll = (jax.nn.logsumexp(logits, axis=-1) -
         jnp.sum(jnp.where(one_hot, logits, 0.0), axis=-1))
  return jnp.where(valid, nll, 0.0), valid


def cross_entropy(logits: Array, labels: Array, *, ignore_index: int = IGNORE_INDEX,
                  class_weights: Array | None = None, axis_name: str | None = None) -> Array:
  """Eq. 1: mean CE over valid pixels; with `class_weights` [K], sum(w_y CE) / sum(w_y)."""
  ce, valid = pixel_cross_entropy(logits, labels, ignore_index)
  weight = valid.astype(jnp.float32)
  if class_weights is not None:
    safe_labels = jnp.where(valid, labels, 0).astype(jnp.int32)
    weight = weight * jnp.asarray(class_weights, jnp.float32)[safe_labels]
  return _safe_divide(_psum(jnp.sum(weight * ce), axis_name),
                      lax.stop_gradient(_psum(jnp.sum(weight), axis_name)))


def focal_loss(logits: Array, labels: Array, *, gamma: float = 2.0, alpha: Array | None = None,
               ignore_index: int = IGNORE_INDEX, axis_name: str | None = None) -> Array:
  """Mean over valid pixels of alpha_y (1 - p_y)^gamma (-log p_y) (Lin et al. 2017)."""
  ce, valid = pixel_cross_entropy(logits, labels, ignore_index)
  one_minus_p = jnp.clip(-jnp.expm1(-ce), 1e-12, 1.0)  # 1 - p_y, precise when p_y ~ 1
  loss = one_minus_p ** gamma * ce
  if alpha is not None:
    safe_labels = jnp.where(valid, labels, 0).astype(jnp.int32)
    loss = loss * jnp.asarray(alpha, jnp.float32)[safe_labels]
  loss = jnp.where(valid, loss, 0.0)
  count = _psum(jnp.sum(valid, dtype=jnp.float32), axis_name)
  return _safe_divide(_psum(jnp.sum(loss), axis_name), count)


def ohem_cross_entropy(logits: Array, labels: Array, *, thresh: float = 0.7,
                       min_kept: int = 3125, ignore_index: int = IGNORE_INDEX,
                       axis_name: str | None = None) -> Array:
  """CE over the hard pixels only: mmsegmentation's `OHEMPixelSampler` (online hard example
  mining, Shrivastava et al. 2016, as PSPNet / mmsegmentation apply it to segmentation).

  A valid pixel is kept when p_y, the predicted probability of its label (no gradient), is
  below max(thresh, p_(k)), p_(k) the (k+1)-th smallest p_y of the global batch with
  k = min_kept x images: at least ~min_kept pixels per image are kept even when the model is
  confident everywhere. The loss is the sum of the kept pixels' CE divided by the number of
  valid pixels (mmsegmentation's `avg_non_ignore=True`), so it is MCCE with the easy pixels
  zeroed. With `axis_name`, the threshold is that of the global batch (gathered over it).
  """
  ce, valid = pixel_cross_entropy(logits, labels, ignore_index)
  prob = lax.stop_gradient(jnp.exp(-ce))  # p_y
  images = _psum(jnp.float32(labels.shape[0]), axis_name)
  gathered_prob, gathered_valid = prob, valid
  if axis_name is not None:
    gathered_prob = lax.all_gather(prob, axis_name)
    gathered_valid = lax.all_gather(valid, axis_name)
  ordered = jnp.sort(jnp.where(gathered_valid, gathered_prob, jnp.inf).ravel())
  num_valid = jnp.sum(gathered_valid, dtype=jnp.int32)
  position = jnp.clip(jnp.minimum((min_kept * images).astype(jnp.int32), num_valid - 1), 0)
  threshold = jnp.maximum(ordered[position], thresh)
  kept = valid & (prob < threshold)
  return _safe_divide(_psum(jnp.sum(jnp.where(kept, ce, 0.0)), axis_name),
                      _psum(jnp.sum(valid, dtype=jnp.float32), axis_name))


def recall_weights(logits: Array, labels: Array, *, ignore_index: int = IGNORE_INDEX,
                   axis_name: str | None = None) -> Array:
  """[K]: 1 - recall of each class on the (global) batch, FN_c / GT_c from the argmax
  prediction (no gradient); 0 for classes without a labelled pixel in the batch."""
  num_classes = logits.shape[-1]
  valid = labels != ignore_index
  safe_labels = jnp.where(valid, labels, num_classes).astype(jnp.int32)
  wrong = valid & (jnp.argmax(logits, axis=-1) != labels)
  classes = jnp.arange(num_classes, dtype=jnp.int32)
  labelled = safe_labels[..., None] == classes  # [B, H, W, K]
  gt = _psum(jnp.sum(labelled, axis=(0, 1, 2), dtype=jnp.float32), axis_name)
  fn = _psum(jnp.sum(labelled & wrong[..., None], axis=(0, 1, 2), dtype=jnp.float32), axis_name)
  return lax.stop_gradient(_safe_divide(fn, gt))


def recall_loss(logits: Array, labels: Array, *, ignore_index: int = IGNORE_INDEX,
                axis_name: str | None = None) -> Array:
  """Recall loss (Tian et al., ICRA 2022): CE of each pixel weighted by 1 - recall of its
  label's class on the batch, summed and divided by the number of valid pixels (the authors'
  code divides by all pixels, ignored ones included; we leave those out, as every loss here)."""
  ce, valid = pixel_cross_entropy(logits, labels, ignore_index)
  weights = recall_weights(logits, labels, ignore_index=ignore_index, axis_name=axis_name)
  pixel_weight = weights[jnp.where(valid, labels, 0).astype(jnp.int32)]
  return _safe_divide(_psum(jnp.sum(jnp.where(valid, pixel_weight * ce, 0.0)), axis_name),
                      _psum(jnp.sum(valid, dtype=jnp.float32), axis_name))


def tilt(losses: Array, t: float | Array, *, where: Array | None = None,
         axis_name: str | None = None) -> Array:
  """TERM aggregate (1/t) log mean exp(t * losses) over the last axis.

  Entries with `where=False` are excluded; a row with no entry gives 0. t = 0 is the exact
  limit (the mean), approached continuously in value and gradient; t -> +inf tends to the
  max, t -> -inf to the min. Computed around the mean with a max shift, so it is stable for
  any |t| * spread (no overflow) and precise for tiny t (no cancellation).
  With `axis_name`, the last axis is taken as sharded over that mesh axis.
  """
  losses = jnp.asarray(losses, jnp.float32)
  t = jnp.asarray(t, jnp.float32)
  if where is None:
    where = jnp.ones(losses.shape, bool)
  where = jnp.broadcast_to(where, losses.shape)
  count = _psum(jnp.sum(where, axis=-1, dtype=jnp.float32), axis_name)
  losses = jnp.where(where, losses, 0.0)
  mean = _safe_divide(_psum(jnp.sum(losses, axis=-1), axis_name), count)
  safe_t = jnp.where(t == 0, 1.0, t)
  scaled = jnp.where(where, safe_t * (losses - mean[..., None]), -jnp.inf)
  shift = lax.stop_gradient(jnp.max(scaled, axis=-1))  # any shift is exact; the max is safe
  if axis_name is not None:
    shift = lax.pmax(shift, axis_name)
  shift = jnp.where(jnp.isfinite(shift), shift, 0.0)
  # log mean exp(scaled) = shift + log1p(mean(expm1(scaled - shift))): expm1/log1p keep the
  # O(t^2) deviation from the mean exact when t * spread is tiny, where exp/log round it away.
  sum_expm1 = _psum(jnp.sum(jnp.where(where, jnp.expm1(scaled - shift[..., None]), 0.0),
                            axis=-1), axis_name)
  log_mean_exp = shift + jnp.log1p(sum_expm1 / jnp.maximum(count, 1))
  tilted = mean + log_mean_exp / safe_t
  return jnp.where((t == 0) | (count == 0), mean, tilted)


def image_losses(logits: Array, labels: Array, ignore_index: int = IGNORE_INDEX):
  """L_m [B]: mean CE over the valid pixels of each image, and whether it has any [B]."""
  ce, valid = pixel_cross_entropy(logits, labels, ignore_index)
  count = jnp.sum(valid, axis=(1, 2), dtype=jnp.float32)
  return _safe_divide(jnp.sum(ce, axis=(1, 2)), count), count > 0


def class_losses(logits: Array, labels: Array, ignore_index: int = IGNORE_INDEX):
  """L_{m,c} [B, K]: mean CE over the pixels of image m labelled c, and presence [B, K]."""
  num_classes = logits.shape[-1]
  ce, valid = pixel_cross_entropy(logits, labels, ignore_index)
  onehot = jax.nn.one_hot(jnp.where(valid, labels, num_classes), num_classes, dtype=jnp.float32)
  sums = jnp.einsum('bhw,bhwk->bk', ce, onehot)
  counts = jnp.sum(onehot, axis=(1, 2))
  return _safe_divide(sums, counts), counts > 0


def tilted_image_loss(logits: Array, labels: Array, t: float | Array, *,
                      ignore_index: int = IGNORE_INDEX, axis_name: str | None = None) -> Array:
  """Eq. 2: (1/t) log mean_m exp(t L_m) over the images of the batch with a valid pixel."""
  losses, present = image_losses(logits, labels, ignore_index)
  return tilt(losses, t, where=present, axis_name=axis_name)


def tilted_class_loss(logits: Array, labels: Array, t: float | Array, *,
                      ignore_index: int = IGNORE_INDEX, axis_name: str | None = None) -> Array:
  """Eq. 3: per image, tilt over the classes present in it; then the mean over images."""
  losses, present = class_losses(logits, labels, ignore_index)
  per_image = tilt(losses, t, where=present)
  has_pixels = jnp.any(present, axis=-1)
  num = _psum(jnp.sum(jnp.where(has_pixels, per_image, 0.0)), axis_name)
  return _safe_divide(num, _psum(jnp.sum(has_pixels, dtype=jnp.float32), axis_name))


def inverse_frequency_weights(pixel_counts: np.ndarray, power: float = 1.0) -> np.ndarray:
  """Per-class weights (1 / pixel frequency)^power, normalised to mean 1 over the classes seen.

  Classes without pixels get weight 0 (they never occur in the labels). Used as focal
  alpha and as weighted-CE weights (power 1), and as the milder sqrt weights (power 0.5).
  """
  counts = np.asarray(pixel_counts, np.float64)
  seen = counts > 0
  weights = np.zeros_like(counts)
  weights[seen] = (counts[seen].sum() / counts[seen]) ** power
  return (weights / weights[seen].mean()).astype(np.float32)


def sqrt_inverse_frequency_weights(pixel_counts: np.ndarray) -> np.ndarray:
  """Per-class weights 1 / sqrt(pixel frequency), normalised to mean 1 over the classes seen
  (0 for classes without pixels): the milder re-weighting of the CE baselines users compare
  with (e.g. the "median/sqrt frequency" weights of segmentation papers)."""
  return inverse_frequency_weights(pixel_counts, power=0.5)


LossFn = Callable[..., Array]


@dataclasses.dataclass(frozen=True)
class Loss:
  """A registered loss and what it needs from the run, so that training binds it generically.

  `fn(logits, labels, [t,] *, axis_name, **options)` is the pure loss. `tilted`: it takes the
  tilt t (config.tce.t, ramped linearly from 0 over config.tce.t_warmup_steps) as its third
  argument. `class_weights`: maps the training split's per-class pixel counts to the [K] array
  passed as the keyword `weights_arg` (the run then builds the class index). `options`: keyword
  of `fn` -> config field it is read from. Calling a `Loss` calls `fn`.
  """
  fn: LossFn
  tilted: bool = False
  class_weights: Callable[[np.ndarray], np.ndarray] | None = None
  weights_arg: str = 'class_weights'
  options: Mapping[str, str] = dataclasses.field(default_factory=dict)

  @property
  def needs_class_index(self) -> bool:
    return self.class_weights is not None

  def __call__(self, *args, **kwargs) -> Array:
    return self.fn(*args, **kwargs)


# config.loss.name -> the loss it trains with. A new loss is one entry here.
LOSSES: dict[str, Loss] = {
    'mcce': Loss(cross_entropy),
    'weighted_ce': Loss(cross_entropy, class_weights=inverse_frequency_weights),
    # The paper's Focal: alpha = inverse pixel frequency (normalised to mean 1).
    'focal': Loss(focal_loss, class_weights=inverse_frequency_weights, weights_arg='alpha',
                  options={'gamma': 'loss.focal_gamma'}),
    # Focal as Lin et al. use it for dense prediction without class priors: alpha = 1.
    'focal_no_alpha': Loss(focal_loss, options={'gamma': 'loss.focal_gamma'}),
    'ce_sqrt_inv_freq': Loss(cross_entropy, class_weights=sqrt_inverse_frequency_weights),
    'ohem': Loss(ohem_cross_entropy, options={'thresh': 'loss.ohem_thresh',
                                              'min_kept': 'loss.ohem_min_kept'}),
    'recall': Loss(recall_loss),
    'tce_image': Loss(tilted_image_loss, tilted=True),
    'tce_class': Loss(tilted_class_loss, tilted=True),
}
