"""Fairness statistics of per-class IoUs, with the paper's conventions (docs/method.md).

Inputs are per-class IoUs on any scale (results come back on the same scale); NaN marks a
class absent from both labels and predictions, excluded from every statistic.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np


def _as_vector(values, name: str) -> np.ndarray:
  array = np.asarray(values, np.float64)
  if array.ndim != 1 or array.size == 0:
    raise ValueError(f'{name} must be a non-empty 1-D sequence of per-class IoUs, got shape '
                     f'{array.shape}')
  return array


def _mask(iou: np.ndarray, reference: np.ndarray | None) -> np.ndarray:
  mask = np.isfinite(iou) if reference is None else np.isfinite(iou) & np.isfinite(reference)
  if not mask.any():
    raise ValueError('No class has a finite IoU (all NaN): nothing to compute statistics on')
  return mask


def num_sorted(num_classes: int, fraction: float) -> int:
  """k of the sorted statistics: round(fraction * K) classes, at least 1."""
  return max(1, round(fraction * num_classes))


def fairness_stats(iou: Sequence[float], reference_iou: Sequence[float] | None = None,
                   fraction: float = 0.25) -> dict[str, float]:
  """The paper's fairness criteria of one model, relative to a reference model's IoUs.

  k = round(fraction * K) classes (Python round: 19 -> 5 at 0.25, 150 -> 22 at 0.15; at
  least 1). sorted_bottom / sorted_top: this model's mean IoU over the reference's k worst /
  best classes. percentile_bottom: the fraction-quantile p of this model's own IoUs (numpy's
  linear interpolation) and percentile_bottom_miou the mean of its IoUs <= p; likewise top
  with the (1 - fraction)-quantile and IoUs >= q. worst: the minimum; std: sample standard
  deviation (ddof = 1). Without a reference the model is its own reference.
  """
  iou = _as_vector(iou, 'iou')
  reference = iou if reference_iou is None else _as_vector(reference_iou, 'reference_iou')
  if reference.shape != iou.shape:
    raise ValueError(f'iou has {iou.size} classes but reference_iou has {reference.size}')
  if not 0 < fraction <= 0.5:
    raise ValueError(f'fraction must be in (0, 0.5], got {fraction}')
  mask = _mask(iou, reference)
  values, ref = iou[mask], reference[mask]
  num_classes = values.size
  k = num_sorted(num_classes, fraction)
  order = np.argsort(ref, kind='stable')
  p = float(np.quantile(values, fraction))
  q = float(np.quantile(values, 1 - fraction))
  return {
      'miou': float(values.mean()),
      'sorted_bottom': float(values[order[:k]].mean()),
      'sorted_top': float(values[order[-k:]].mean()),
      'percentile_bottom': p,
      'percentile_bottom_miou': float(values[values <= p].mean()),
      'percentile_top': q,
      'percentile_top_miou': float(values[values >= q].mean()),
      'worst': float(values.min()),
      'std': float(values.std(ddof=1)) if num_classes > 1 else 0.0,
      'num_classes': num_classes,
  }


def gini(values: Sequence[float]) -> float:
  """Gini coefficient of non-negative values: 0 = all equal, -> 1 = one class has it all."""
  x = np.asarray(values, np.float64)
  if x.mean() == 0:
    return 0.0
  return float(np.abs(x[:, None] - x[None, :]).sum() / (2 * x.size ** 2 * x.mean()))


def extra_fairness_stats(iou: Sequence[float], confusion: np.ndarray | None = None,
                         worst_fraction: float = 0.1,
                         class_names: Sequence[str] | None = None) -> dict:
  """Measures the paper lacks: Gini of class IoUs, CVaR (mean of the worst 10%), and per-class
  precision / recall (percent) from the confusion matrix [K, K] (rows = ground truth): lists
  in class order, or {class name: value} with `class_names`."""
  iou = _as_vector(iou, 'iou')
  if not 0 < worst_fraction <= 1:
    raise ValueError(f'worst_fraction must be in (0, 1], got {worst_fraction}')
  values = iou[_mask(iou, None)]
  k = max(1, math.ceil(worst_fraction * values.size - 1e-9))
  stats = {'gini': gini(values), 'cvar': float(np.sort(values)[:k].mean()), 'cvar_classes': k}
  if confusion is not None:
    confusion = np.asarray(confusion, np.float64)
    if confusion.shape != (iou.size, iou.size):
      raise ValueError(f'confusion must be [{iou.size}, {iou.size}], got {confusion.shape}')
    tp = np.diag(confusion)
    with np.errstate(invalid='ignore', divide='ignore'):
      precision = np.where(confusion.sum(0) > 0, 100 * tp / confusion.sum(0), np.nan)
      recall = np.where(confusion.sum(1) > 0, 100 * tp / confusion.sum(1), np.nan)
    for name, values in (('precision', precision), ('recall', recall)):
      listed = [None if np.isnan(v) else float(v) for v in values]
      stats[name] = dict(zip(class_names, listed)) if class_names is not None else listed
  return stats
