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
  """name.png (for viewing) and name.pdf (vector, for papers). The PDF carries no creation
  date, so that a report rebuilt from the same records is the same bytes."""
  fig.savefig(os.path.join(out, f'{name}.png'), dpi=DPI)
  fig.savefig(os.path.join(out, f'{name}.pdf'), dpi=DPI, metadata={'CreationDate': None})


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


# Candidate replacements for class colours too close to another shown class's (Kelly's 22
# colours of maximum contrast, white and black left out: white is the page, black the ignore
# label).
DISTINCT_COLORS = ((243, 195, 0), (135, 86, 146), (243, 132, 0), (161, 202, 241),
                   (190, 0, 50), (194, 178, 128), (132, 132, 130), (0, 136, 86),
                   (230, 143, 172), (0, 103, 165), (249, 133, 98), (96, 78, 151),
                   (246, 166, 0), (179, 68, 108), (220, 211, 0), (136, 45, 23),
                   (141, 182, 0), (101, 69, 34), (226, 88, 34), (43, 61, 38))
# CIEDE2000 difference below which two small regions of colour are told apart with effort:
# Cityscapes' car / truck / motorcycle (11-12), bus / train (12), person / rider (14).
MIN_COLOR_DIFFERENCE = 15.0


def to_lab(rgb) -> np.ndarray:
  """CIELAB (D65) of sRGB uint8 colours [..., 3]."""
  c = np.asarray(rgb, np.float64) / 255
  c = np.where(c > 0.04045, ((c + 0.055) / 1.055) ** 2.4, c / 12.92)
  xyz = c @ np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722],
                      [0.0193, 0.1192, 0.9505]]).T / np.array([0.95047, 1.0, 1.08883])
  f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
  return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]),
                   200 * (f[..., 1] - f[..., 2])], -1)


def ciede2000(lab1, lab2) -> np.ndarray:
  """The CIEDE2000 colour difference of CIELAB colours [..., 3] (Sharma, Wu and Dalal's
  formulation, k_L = k_C = k_H = 1)."""
  L1, a1, b1 = np.moveaxis(np.asarray(lab1, np.float64), -1, 0)
  L2, a2, b2 = np.moveaxis(np.asarray(lab2, np.float64), -1, 0)
  c_bar = (np.hypot(a1, b1) + np.hypot(a2, b2)) / 2
  g = 0.5 * (1 - np.sqrt(c_bar ** 7 / (c_bar ** 7 + 25.0 ** 7)))
  a1p, a2p = (1 + g) * a1, (1 + g) * a2
  c1p, c2p = np.hypot(a1p, b1), np.hypot(a2p, b2)
  h1p = np.degrees(np.arctan2(b1, a1p)) % 360
  h2p = np.degrees(np.arctan2(b2, a2p)) % 360
  dl, dc = L2 - L1, c2p - c1p
  dh = h2p - h1p
  dh = np.where(dh > 180, dh - 360, np.where(dh < -180, dh + 360, dh))
  dh = np.where(c1p * c2p == 0, 0, dh)
  dH = 2 * np.sqrt(c1p * c2p) * np.sin(np.radians(dh / 2))
  l_bar, cp_bar = (L1 + L2) / 2, (c1p + c2p) / 2
  hsum = h1p + h2p
  h_bar = np.where(np.abs(h1p - h2p) > 180,
                   np.where(hsum < 360, (hsum + 360) / 2, (hsum - 360) / 2), hsum / 2)
  h_bar = np.where(c1p * c2p == 0, hsum, h_bar)
  t = (1 - 0.17 * np.cos(np.radians(h_bar - 30)) + 0.24 * np.cos(np.radians(2 * h_bar))
       + 0.32 * np.cos(np.radians(3 * h_bar + 6)) - 0.20 * np.cos(np.radians(4 * h_bar - 63)))
  d_theta = 30 * np.exp(-(((h_bar - 275) / 25) ** 2))
  r_c = 2 * np.sqrt(cp_bar ** 7 / (cp_bar ** 7 + 25.0 ** 7))
  s_l = 1 + 0.015 * (l_bar - 50) ** 2 / np.sqrt(20 + (l_bar - 50) ** 2)
  s_c = 1 + 0.045 * cp_bar
  s_h = 1 + 0.015 * cp_bar * t
  r_t = -np.sin(np.radians(2 * d_theta)) * r_c
  return np.sqrt((dl / s_l) ** 2 + (dc / s_c) ** 2 + (dH / s_h) ** 2
                 + r_t * (dc / s_c) * (dH / s_h))


def distinct_palette(palette, shown: Sequence[int]) -> np.ndarray:
  """A copy of the dataset's `palette` [K, 3] in which the classes of `shown` (in order: put
  the most common first) can be told apart: a class whose colour differs by less than
  MIN_COLOR_DIFFERENCE (CIEDE2000) from a class shown before it, or from black (the ignore
  label), gets the candidate of DISTINCT_COLORS farthest from the colours of every other
  class shown. The other classes keep the dataset's colours."""
  out = np.array(palette, np.uint8, copy=True)
  black = to_lab(np.zeros(3))
  lab = {c: to_lab(out[c]) for c in shown}
  candidates = list(DISTINCT_COLORS)

  def nearest(color, classes):
    return min([float(ciede2000(color, black))] +
               [float(ciede2000(color, lab[d])) for d in classes])

  for i, c in enumerate(shown):
    if nearest(lab[c], shown[:i]) < MIN_COLOR_DIFFERENCE and candidates:
      others = [d for d in shown if d != c]
      best = max(candidates, key=lambda rgb: nearest(to_lab(np.array(rgb)), others))
      candidates.remove(best)
      out[c], lab[c] = best, to_lab(np.array(best))
  return out
