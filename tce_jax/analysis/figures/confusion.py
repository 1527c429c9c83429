"""confusion.png: the row-normalised confusion matrices."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from tce_jax.analysis import registry
from tce_jax.analysis import style as style_lib


def plot_confusion(runs: list[dict], report: dict, out: str):
  """confusion.png / .pdf: the reference's confusion matrix (summed over its runs), each row
  normalised to the share of that class's labelled pixels predicted as each class (percent),
  so that the diagonal is the recall and a row shows where a class's pixels go."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  group = [r for r in runs if r['label'] == report['reference']]
  confusion = sum(np.asarray(r['eval']['confusion_matrix'], np.float64) for r in group)
  classes = runs[0]['classes']
  with np.errstate(invalid='ignore', divide='ignore'):
    rows = 100 * confusion / confusion.sum(1, keepdims=True)
  k = len(classes)
  size = min(max(6.0, 0.32 * k + 2), 40.0)
  fig, ax = plt.subplots(figsize=(size + 1.5, size))
  image = ax.imshow(rows, cmap='viridis', vmin=0, vmax=100, interpolation='nearest')
  fig.colorbar(image, ax=ax, fraction=0.046, pad=0.03,
               label='% of the class\'s labelled pixels')
  if k <= 60:
    ax.set_xticks(range(k), classes, rotation=90, fontsize=8)
    ax.set_yticks(range(k), classes, fontsize=8)
    if k <= 30:
      for i in range(k):
        for j in range(k):
          if np.isfinite(rows[i, j]) and rows[i, j] >= 1:
            ax.text(j, i, f'{rows[i, j]:.0f}', ha='center', va='center', fontsize=6,
                    color='black' if rows[i, j] > 60 else 'white')
  ax.set_xlabel('predicted class')
  ax.set_ylabel('true class')
  ax.set_title(f'Confusion of {report["reference"]} ({len(group)} run(s)): each row sums to '
               '100%; blank rows: classes absent from the labels', fontsize=10)
  fig.tight_layout()
  style_lib.save(fig, out, 'confusion')
  plt.close(fig)


@registry.register('confusion')
def draw(runs: list[dict], report: dict, out: str, options: Mapping[str, Any]) -> None:
  """confusion (no options)."""
  del options
  plot_confusion(runs, report, out)
