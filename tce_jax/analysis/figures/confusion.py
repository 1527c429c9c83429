"""confusion.png: the reference's row-normalised confusion matrix, and where each other label
sends the pixels differently."""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

from tce_jax.analysis import registry
from tce_jax.analysis import style as style_lib

MAX_ANNOTATED_CLASSES = 30  # cells get their numbers up to this many classes
MAX_TICKED_CLASSES = 60  # class names on the axes up to this many


def row_shares(runs: list[dict], label: str) -> np.ndarray:
  """[K, K] the confusion matrix of `label` (summed over its runs), each row normalised to
  the share (percent) of that class's labelled pixels predicted as each class: the diagonal
  is the recall, a row shows where a class's pixels go; NaN rows for classes absent from the
  labels."""
  confusion = sum(np.asarray(r['eval']['confusion_matrix'], np.float64)
                  for r in runs if r['label'] == label)
  with np.errstate(invalid='ignore', divide='ignore'):
    return 100 * confusion / confusion.sum(1, keepdims=True)


def _draw_matrix(fig, ax, values: np.ndarray, classes: Sequence[str], title: str, *,
                 difference: bool, limit: float):
  k = len(classes)
  if difference:
    image = ax.imshow(values, cmap='RdBu', vmin=-limit, vmax=limit, interpolation='nearest')
    label = 'percentage points (label - reference)'
  else:
    image = ax.imshow(values, cmap='viridis', vmin=0, vmax=100, interpolation='nearest')
    label = "% of the class's labelled pixels"
  fig.colorbar(image, ax=ax, fraction=0.046, pad=0.03, label=label)
  if k <= MAX_TICKED_CLASSES:
    ax.set_xticks(range(k), classes, rotation=90, fontsize=8)
    ax.set_yticks(range(k), classes, fontsize=8)
  else:
    ax.set_xticks([])
    ax.set_yticks([])
  if k <= MAX_ANNOTATED_CLASSES:
    for i in range(k):
      for j in range(k):
        v = values[i, j]
        if not np.isfinite(v) or abs(v) < (0.5 if difference else 1):
          continue
        dark = abs(v) > 0.6 * limit if difference else v < 60
        ax.text(j, i, f'{v:+.0f}' if difference else f'{v:.0f}', ha='center', va='center',
                fontsize=7, color='white' if dark else 'black')
  ax.set_xlabel('predicted class')
  ax.set_ylabel('true class')
  ax.set_title(title, fontsize=10)


def plot_confusion(runs: list[dict], report: dict, out: str,
                   labels: Sequence[str] | None = None):
  """confusion.png / .pdf: the reference's confusion matrix, rows normalised (`row_shares`),
  then for each other label of `labels` (default: every label, in the report's order) the
  difference of its row-normalised matrix to the reference's, in percentage points: blue
  where the label puts more of a class's pixels in the cell than the reference, red where
  fewer (on the diagonal blue is recall gained; off it, blue is confusion added). One colour
  scale for all difference panels; matrices summed over each label's runs (no test: a
  picture of where pixels go, not a comparison of seeds)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  reference = report['reference']
  order = [l for l in report['labels'] if l != reference]
  others = [l for l in order if labels is None or l in labels]
  classes = runs[0]['classes']
  k = len(classes)
  base = row_shares(runs, reference)
  differences = {l: row_shares(runs, l) - base for l in others}
  finite = [np.abs(d[np.isfinite(d)]) for d in differences.values()]
  limit = max(5.0, math.ceil(max((f.max() for f in finite if f.size), default=5.0) / 5) * 5)
  panels = 1 + len(others)
  columns = min(3, panels)
  rows = math.ceil(panels / columns)
  size = min(max(5.0, 0.25 * k + 2), 40.0 / columns)
  fig, axes = plt.subplots(rows, columns, figsize=(columns * (size + 1.5), rows * size),
                           squeeze=False)

  def runs_of(label):
    n = sum(r['label'] == label for r in runs)
    return f'{n} run{"s" if n != 1 else ""}'

  _draw_matrix(fig, axes[0, 0], base, classes,
               f'{reference} ({runs_of(reference)}): each row sums to 100%; blank rows: '
               'classes absent from the labels', difference=False, limit=100)
  for i, label in enumerate(others, start=1):
    _draw_matrix(fig, axes[i // columns, i % columns], differences[label], classes,
                 f'{label} ({runs_of(label)}) - {reference}', difference=True, limit=limit)
  for i in range(panels, rows * columns):
    axes[i // columns, i % columns].axis('off')
  fig.tight_layout()
  style_lib.save(fig, out, 'confusion')
  plt.close(fig)


@registry.register('confusion')
def draw(runs: list[dict], report: dict, out: str, options: Mapping[str, Any]) -> None:
  """confusion; option: labels (the labels whose differences to the reference are drawn;
  default all)."""
  plot_confusion(runs, report, out, options.get('labels'))
