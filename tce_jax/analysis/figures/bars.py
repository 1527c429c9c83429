"""per_class_iou.png and fairness.png: each label's per-class IoU and fairness statistics as
grouped bars (mean over runs, 1-std bars)."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from tce_jax import fairness
from tce_jax.analysis import registry
from tce_jax.analysis import style as style_lib
from tce_jax.analysis.style import PALETTE, STAT_NAMES, STAT_PANELS


def plot_bars(report: dict, out: str):
  """per_class_iou.png / .pdf and fairness.png / .pdf."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  classes = report['class_order']
  nan = style_lib.nan_to_none
  series = {label: (np.array([nan(e['per_class_iou'][c]['mean']) for c in classes]),
                    np.array([nan(e['per_class_iou'][c]['std']) for c in classes]))
            for label, e in report['labels'].items()}
  per_group = 0.6 * max(1.0, len(series) / 6)  # room for every label's bar
  fig, ax = plt.subplots(figsize=(max(8, per_group * len(classes) + 2), 5))
  style_lib.grouped_bars(ax, classes, series, 'IoU (%)')
  spread = ('one run per label: no error bars' if all(
      len(e['runs']) < 2 for e in report['labels'].values()) else 'mean ± std over runs')
  zero = any(np.any(np.asarray(mean) == 0) for mean, _ in series.values())
  ax.set_title(f"Per-class IoU ({spread}), classes sorted by the reference "
               f"({report['reference']}), worst first" + ('; a dash marks 0' if zero else ''))
  fig.tight_layout()
  style_lib.save(fig, out, 'per_class_iou')
  plt.close(fig)
  widths = [len(keys) + 1 for _, keys in STAT_PANELS]
  fig, axes = plt.subplots(1, len(STAT_PANELS),
                           figsize=(13 * max(1.0, len(report['labels']) / 8) ** 0.5, 4.8),
                           gridspec_kw={'width_ratios': widths})
  for i, (ax, (title, keys)) in enumerate(zip(axes, STAT_PANELS)):
    series = {label: (np.array([style_lib.nan_to_none(e['fairness'][k]['mean']) for k in keys]),
                      np.array([style_lib.nan_to_none(e['fairness'][k]['std']) for k in keys]))
              for label, e in report['labels'].items()}
    many = len(series) > len(PALETTE)
    style_lib.grouped_bars(ax, [STAT_NAMES[k] for k in keys], series, '', values=True,
                  legend=i == 0 and not many)
    ax.set_title(title, fontsize=10)
    ax.margins(y=0.12)
  k = fairness.num_sorted(len(report['class_order']), report['fraction'])
  fig.suptitle(f"Fairness statistics against the reference ({report['reference']}); k = {k} "
               f"of {len(report['class_order'])} classes and the quantiles at the fraction "
               f"{report['fraction']}", fontsize=11)
  fig.tight_layout()
  if many:  # one legend for the three panels, at the right of the figure
    columns = -(-len(report['labels']) // 12)
    fig.subplots_adjust(right=1 - 0.11 * columns)
    legend = fig.legend(*axes[0].get_legend_handles_labels(), fontsize=8, loc='center right',
                        ncol=columns)
    # Long labels need more room than the default margin: make it as wide as the legend.
    needed = legend.get_window_extent(fig.canvas.get_renderer()).width / fig.bbox.width + 0.01
    if needed > 0.11 * columns:
      fig.subplots_adjust(right=1 - needed)
  style_lib.save(fig, out, 'fairness')
  plt.close(fig)


@registry.register('bars')
def draw(runs: list[dict], report: dict, out: str, options: Mapping[str, Any]) -> None:
  """per_class_iou and fairness (no options)."""
  del runs, options
  plot_bars(report, out)
