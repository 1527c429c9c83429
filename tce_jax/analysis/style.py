"""What every figure of a report shares: colours, hatches, the statistics' names and panels,
the Pareto markers, saving as PNG and PDF, grouped bars."""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np


# Okabe & Ito's colour-blind-safe palette, one colour per compared label; beyond 8 labels
# the colours repeat with a hatch pattern per round (HATCHES), so every label stays distinct.
PALETTE = ('#0072B2', '#E69F00', '#009E73', '#CC79A7', '#56B4E9', '#D55E00', '#F0E442',
           '#000000')


HATCHES = ('', '////', '....', 'xxxx')


# Readable names of the fairness statistics, and the figure panel each belongs to.
STAT_NAMES = {
    'miou': 'mIoU', 'sorted_bottom': "reference's worst k", 'sorted_top': "reference's best k",
    'percentile_bottom_miou': 'below bottom quantile', 'percentile_top_miou':
    'above top quantile', 'worst': 'worst class', 'percentile_bottom': 'bottom quantile',
    'percentile_top': 'top quantile', 'std': 'std over classes'}


STAT_PANELS = (
    ('Mean IoU of class groups (%)', ('miou', 'sorted_bottom', 'sorted_top',
                                      'percentile_bottom_miou', 'percentile_top_miou',
                                      'worst')),
    ('Quantile thresholds (IoU %)', ('percentile_bottom', 'percentile_top')),
    ('Spread (IoU points)', ('std',)),
)


DPI = 150  # of the PNGs: small text stays legible


def save(fig, out: str, name: str):
  """name.png (for viewing) and name.pdf (vector, for papers)."""
  for ext in ('png', 'pdf'):
    fig.savefig(os.path.join(out, f'{name}.{ext}'), dpi=DPI)


def grouped_bars(ax, groups: Sequence[str], series: dict[str, tuple], ylabel: str, *,
                  values: bool = False, legend: bool = True):
  """Bars per group, one colour per series (mean, std); zero-height bars get a marker so
  they stay visible; `values` writes each mean above its bar."""
  width = 0.8 / max(len(series), 1)
  x = np.arange(len(groups))
  values = values and len(series) <= len(PALETTE)  # more labels: too crowded to read
  for i, (name, (mean, std)) in enumerate(series.items()):
    colour = PALETTE[i % len(PALETTE)]
    hatch = HATCHES[(i // len(PALETTE)) % len(HATCHES)]
    position = x + (i - (len(series) - 1) / 2) * width
    height = np.nan_to_num(mean)
    ax.bar(position, height, width, yerr=std if np.any(np.nan_to_num(std)) else None, label=name,
           color=colour, hatch=hatch or None, edgecolor='white' if hatch else None,
           linewidth=0, capsize=2, error_kw={'elinewidth': 0.8})
    zero = np.isfinite(mean) & (np.abs(height) < 0.05)
    ax.plot(position[zero], np.zeros(zero.sum()), linestyle='none', marker='_',
            markersize=max(4.0, 60 * width), markeredgewidth=2.5, color=colour)
    if values:
      for px, v in zip(position, mean):
        if np.isfinite(v):
          ax.annotate(f'{v:.1f}', (px, v), xytext=(0, 2), textcoords='offset points',
                      ha='center', va='bottom', fontsize=7)
  ax.set_xticks(x)
  ax.set_xticklabels(groups, rotation=45 if len(groups) > 3 else 0,
                     ha='right' if len(groups) > 3 else 'center')
  ax.set_ylabel(ylabel)
  if legend and len(series) > len(PALETTE):  # many labels: a legend beside the axes
    ax.legend(fontsize=8, loc='upper left', bbox_to_anchor=(1.01, 1.0),
              ncol=-(-len(series) // 12))
  elif legend:
    ax.legend(fontsize=8)
  ax.grid(axis='y', alpha=0.3)
  ax.set_axisbelow(True)


def nan_to_none(x):
  return np.nan if x is None else x


# Marker of each kind of label in the Pareto figure (make_report's `kinds`): colour for the
# origin, hollow for a label with fewer seeds (a sweep).
KIND_STYLES = {
    'paper': {'marker': 'o', 'color': PALETTE[0], 'filled': True},
    'added': {'marker': 's', 'color': PALETTE[5], 'filled': True},
    'paper (t sweep)': {'marker': 'o', 'color': PALETTE[0], 'filled': False},
    'added (t sweep)': {'marker': 's', 'color': PALETTE[5], 'filled': False},
    'run': {'marker': 'o', 'color': PALETTE[0], 'filled': True},  # no kinds given
}
