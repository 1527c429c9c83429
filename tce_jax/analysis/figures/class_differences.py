"""per_class_difference.png: each label's per-class IoU minus the reference's, cells beyond
seed noise framed (Welch per class, Holm over the row)."""

from __future__ import annotations

import textwrap
from typing import Any, Mapping

import numpy as np

from tce_jax import stats
from tce_jax.analysis import registry
from tce_jax.analysis import style as style_lib


def plot_class_differences(report: dict, out: str, alpha: float = stats.ALPHA) -> bool:
  """per_class_difference.png / .pdf: every label's mean per-class IoU minus the reference's,
  one row per label and one column per class (the reference's order, worst first), on a
  diverging scale centred at 0. A framed cell differs from the reference beyond seed noise:
  Welch's test per class, Holm's correction over the row's classes, at `alpha`
  (stats.per_class); each row's label ends with its (better / worse) counts. Readable where
  the per-class bars of many labels are not. Returns False (nothing written) without a label
  besides the reference."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  from matplotlib.patches import Rectangle  # pylint: disable=g-import-not-at-top
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  classes = report['class_order']
  reference = report['labels'][report['reference']]
  rows = [l for l in report['labels'] if l != report['reference']]
  if not rows:
    return False
  diff = np.full((len(rows), len(classes)), np.nan)
  beyond = np.zeros(diff.shape, bool)
  names = []
  testable = []  # rows whose label and reference both have seeds to test
  for r, label in enumerate(rows):
    entry = report['labels'][label]
    tests = stats.per_class(entry, reference, len(entry['runs']), len(reference['runs']))
    for c, name in enumerate(classes):
      if name in tests:
        diff[r, c] = tests[name]['diff']
        beyond[r, c] = tests[name]['adjusted'] <= alpha
    testable.append(min(len(entry['runs']), len(reference['runs'])) > 1)
    names.append('{} ({} / {})'.format(label, *stats.beyond_noise(tests, alpha))
                 if testable[-1] else f'{label} (one run: untested)')
  limit = float(np.nanmax(np.abs(diff))) if np.any(np.isfinite(diff)) else 1.0
  text = len(classes) <= 40  # the numbers fit in the cells
  fig, ax = plt.subplots(figsize=(max(8.0, 0.55 * len(classes) + 3.5),
                                  max(3.0, 0.32 * len(rows) + 2.2)))
  image = ax.imshow(np.ma.masked_invalid(diff), cmap='RdBu', vmin=-limit or -1.0,
                    vmax=limit or 1.0, aspect='auto')
  for r, c in zip(*np.nonzero(beyond)):
    ax.add_patch(Rectangle((c - 0.5, r - 0.5), 1, 1, fill=False, edgecolor='black',
                           linewidth=1.4))
  if text:
    for r, c in zip(*np.nonzero(np.isfinite(diff))):
      strong = abs(diff[r, c]) > 0.6 * limit
      value = f'{diff[r, c]:+.0f}' if abs(diff[r, c]) >= 9.95 else f'{diff[r, c]:+.1f}'
      ax.text(c, r, value, ha='center', va='center', fontsize=6.5,
              color='white' if strong else 'black',
              fontweight='bold' if beyond[r, c] else 'normal')
  ax.set_xticks(range(len(classes)), classes, rotation=45, ha='right',
                fontsize=8 if text else 5)
  ax.set_yticks(range(len(rows)), names, fontsize=8)
  fig.colorbar(image, ax=ax, fraction=0.03, pad=0.01,
               label=f"IoU minus {report['reference']}'s (points)")
  if any(testable):
    title = (f"Per-class IoU difference to {report['reference']} (means over runs), "
             f"classes worst first; framed: beyond noise (Welch per class, Holm over the "
             f"row's classes, {alpha:g}); (better / worse) after each label")
  else:
    title = (f"Per-class IoU difference to {report['reference']}, classes worst first; "
             'one run per label: no test is possible, nothing is framed')
  _fitted_title(fig, ax, title)
  style_lib.save(fig, out, 'per_class_difference')
  plt.close(fig)
  return True


def _fitted_title(fig, ax, title: str, fontsize: float = 9) -> None:
  """Sets the axes' title on one line where it fits inside the figure, else wrapped into as
  many lines as it needs (a few classes make a narrow figure); lays the figure out."""
  text = ax.set_title(title, fontsize=fontsize)
  fig.tight_layout()
  renderer = fig.canvas.get_renderer()
  box = ax.get_window_extent(renderer)
  centre = (box.x0 + box.x1) / 2  # the title is centred on the axes, not on the figure
  width, room = text.get_window_extent(renderer).width, 1.9 * min(centre,
                                                                  fig.bbox.width - centre)
  if width > room:
    text.set_text(textwrap.fill(title, max(20, int(len(title) * room / width))))
    fig.tight_layout()


@registry.register('class_differences')
def draw(runs: list[dict], report: dict, out: str, options: Mapping[str, Any]) -> None:
  """per_class_difference; options: alpha (default stats.ALPHA)."""
  del runs
  plot_class_differences(report, out, options.get('alpha', stats.ALPHA))
