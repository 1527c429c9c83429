"""Segmentation metrics: confusion matrix (accumulated on device), per-class IoU, mIoU."""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from tce_jax import fairness
from tce_jax.labels import IGNORE_INDEX

# The evaluation protocol's choices (config.eval.mode, config.eval.resolution; tce_jax.evaluator).
MODES = ('whole', 'slide')
RESOLUTIONS = ('resized', 'original')


def confusion_matrix(predictions: jax.Array, labels: jax.Array, num_classes: int, *,
                     ignore_index: int = IGNORE_INDEX) -> jax.Array:
  """[K, K] int32 counts, rows = ground truth, columns = prediction; ignored pixels skipped."""
  labels = labels.astype(jnp.int32)
  valid = (labels != ignore_index) & (labels < num_classes)
  index = jnp.where(valid, labels * num_classes + predictions.astype(jnp.int32), 0)
  counts = jnp.bincount(index.ravel(), weights=valid.ravel().astype(jnp.int32),
                        length=num_classes * num_classes)
  return counts.astype(jnp.int32).reshape(num_classes, num_classes)


def cross_entropy_sum(scores: jax.Array, labels: jax.Array, num_classes: int, *,
                      probabilities: bool = False,
                      ignore_index: int = IGNORE_INDEX) -> jax.Array:
  """The float32 sum over the labelled pixels of -log p(label), from logits [..., K] or, with
  `probabilities`, from class probabilities (the average of several test-time passes).

  The validation loss is this sum over a split divided by its labelled pixels (the confusion
  matrix's total): the plain cross-entropy whatever loss the run trained with, so that runs of
  every method compare on one measure.
  """
  labels = labels.astype(jnp.int32)
  valid = (labels != ignore_index) & (labels < num_classes)
  safe = jnp.where(valid, labels, 0)[..., None]
  scores = scores.astype(jnp.float32)
  if probabilities:
    log_p = jnp.log(jnp.maximum(jnp.take_along_axis(scores, safe, -1)[..., 0],
                                jnp.finfo(jnp.float32).tiny))
  else:
    log_p = jnp.take_along_axis(jax.nn.log_softmax(scores, -1), safe, -1)[..., 0]
  return -jnp.sum(jnp.where(valid, log_p, 0.0))


def iou_from_confusion(confusion: np.ndarray) -> np.ndarray:
  """Per-class IoU in percent [K]; NaN for a class absent from both labels and predictions."""
  confusion = np.asarray(confusion, np.float64)
  tp = np.diag(confusion)
  union = confusion.sum(0) + confusion.sum(1) - tp
  with np.errstate(invalid='ignore', divide='ignore'):
    return np.where(union > 0, 100.0 * tp / union, np.nan)


def per_class_rows(record: dict) -> list[dict]:
  """One row per class of an evaluation record: IoU, precision and recall (percent, None when
  undefined), the class's labelled and predicted pixels (what eval/<step>.csv holds)."""
  confusion = np.asarray(record['confusion_matrix'], np.int64)
  extra = record.get('fairness_extra', {})
  rows = []
  for i, name in enumerate(record['per_class_iou']):
    rows.append({'class': name, 'iou': record['per_class_iou'][name],
                 'precision': extra.get('precision', {}).get(name),
                 'recall': extra.get('recall', {}).get(name),
                 'labelled_pixels': int(confusion[i].sum()),
                 'predicted_pixels': int(confusion[:, i].sum())})
  return rows


def headline(record: dict) -> str:
  """One line of an evaluation record: mIoU, pixel accuracy, the three worst classes (and
  every class at 0 IoU, however many)."""
  ious = {name: v for name, v in record['per_class_iou'].items() if v is not None}
  worst = sorted(ious, key=ious.get)
  shown = worst[:max(3, sum(ious[name] == 0 for name in worst))]
  return (f"{record.get('split', 'validation')} mIoU {record['miou']:.2f}, pixel accuracy "
          f"{record['pixel_accuracy']:.2f}; worst classes: "
          + ', '.join(f'{name} {ious[name]:.1f}' for name in shown))


OWN_FAIRNESS = ('miou', 'percentile_bottom', 'percentile_bottom_miou', 'percentile_top',
                'percentile_top_miou', 'worst', 'std', 'num_classes')


def own_fairness(iou: np.ndarray, fraction: float) -> dict[str, float]:
  """The fairness statistics of one model without a reference (`OWN_FAIRNESS`)."""
  stats = fairness.fairness_stats(iou, fraction=fraction)
  return {k: stats[k] for k in OWN_FAIRNESS}


def summarize(confusion: np.ndarray, class_names: Sequence[str], step: int, *,
              fairness_fraction: float = 0.25, cross_entropy: float | None = None) -> dict:
  """The evaluation record written to WORKDIR/eval/<step>.json (IoU in percent), with the
  validation loss `cross_entropy` (mean over the labelled pixels) when given.

  Classes absent from both labels and predictions have IoU null and are left out of mIoU
  and of the fairness statistics. These are the statistics of the model alone
  (`OWN_FAIRNESS`): the sorted bottom / top need a reference model's class order, and only
  reports, which have a reference run, give them (a model as its own reference would give a
  second meaning to one name).
  """
  confusion = np.asarray(confusion, np.int64)
  iou = iou_from_confusion(confusion)
  total = confusion.sum()
  has_iou = np.isfinite(iou).any()
  return {
      'fairness': own_fairness(iou, fairness_fraction) if has_iou else {},
      'fairness_extra': (fairness.extra_fairness_stats(iou, confusion,
                                                       class_names=list(class_names))
                         if has_iou else {}),
      'step': int(step),
      'miou': float(np.nanmean(iou)) if np.isfinite(iou).any() else float('nan'),
      'pixel_accuracy': float(100.0 * np.trace(confusion) / total) if total else float('nan'),
      **({} if cross_entropy is None else {'cross_entropy': float(cross_entropy)}),
      'per_class_iou': {name: (None if np.isnan(v) else float(v))
                        for name, v in zip(class_names, iou)},
      'absent_classes': [name for name, v in zip(class_names, iou) if np.isnan(v)],
      'confusion_matrix': confusion.tolist(),
  }
