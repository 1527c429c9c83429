"""pareto.png: each label's mIoU against its mean IoU over the reference's worst classes."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from tce_jax import fairness
from tce_jax.analysis import registry
from tce_jax.analysis import placement
from tce_jax.analysis import style as style_lib
from tce_jax.analysis.style import KIND_STYLES


ZOOM_MIOU = 2.0  # pareto.png zooms on the labels within this many mIoU points of the reference
# Single runs: each axis spans at least this many points (one seed moves mIoU by about 1).
MIN_SPAN = 4.0


def plot_pareto(report: dict, out: str, kinds: dict[str, str] | None = None):
  """pareto.png / .pdf: each label's mIoU against its mean IoU over the reference's k worst
  classes (mean over runs, error bars the std over runs), the labels on the Pareto front
  (better on both than every other) joined; `kinds` (label -> a KIND_STYLES key) sets markers.

  The methods worth a look cost little mIoU, and they crowd together: a right panel zooms on
  the labels whose mean mIoU is at least the reference's minus ZOOM_MIOU points (their box
  drawn on the left panel, which labels only the points outside it). No second panel when no
  label but the reference is in that range.
  """
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  labels = list(report['labels'])

  def stat(label: str, key: str) -> dict:
    return report['labels'][label]['fairness'][key]

  x = np.array([stat(l, 'miou')['mean'] for l in labels])
  y = np.array([stat(l, 'sorted_bottom')['mean'] for l in labels])
  xerr = np.array([stat(l, 'miou')['std'] or 0.0 for l in labels])
  yerr = np.array([stat(l, 'sorted_bottom')['std'] or 0.0 for l in labels])
  front = placement.pareto_front(x, y)
  reference = labels.index(report['reference'])
  zoomed = [i for i in range(len(labels)) if x[i] >= x[reference] - ZOOM_MIOU]
  # A zoom only when it shows something the full panel does not: some label outside it.
  panels = 2 if 1 < len(zoomed) < len(labels) else 1
  seeds = all(len(report['labels'][l]['runs']) > 1 for l in labels)
  fig, axes = plt.subplots(1, panels, figsize=(9 * panels, 7.5), squeeze=False)
  axes = axes[0]
  k = fairness.num_sorted(len(report['class_order']), report['fraction'])
  for ax in axes:
    if np.count_nonzero(front) > 1:  # a front of one point is no line
      ax.plot(x[front], y[front], color='grey', linewidth=1, linestyle=':', zorder=1,
              label='Pareto front' + (' (means)' if seeds else ''))
    ax.axvline(x[reference], color='grey', linewidth=0.6, linestyle='--', zorder=0)
    ax.axhline(y[reference], color='grey', linewidth=0.6, linestyle='--', zorder=0)
    seen = set()
    for i, label in enumerate(labels):
      kind = (kinds or {}).get(label, 'run')
      style = KIND_STYLES[kind]
      ax.errorbar(x[i], y[i], xerr=xerr[i] or None, yerr=yerr[i] or None,
                  marker=style['marker'], markersize=6, color=style['color'],
                  markerfacecolor=style['color'] if style['filled'] else 'white',
                  elinewidth=0.8, capsize=2, linestyle='none', zorder=2,
                  label=None if kind in seen else kind)
      seen.add(kind)
    ax.set_xlabel('mIoU (%)')
    ax.set_ylabel(f"mean IoU of {report['reference']}'s {k} worst classes (%)")
    ax.grid(alpha=0.3)
  legend = axes[0].legend(fontsize=8, loc='upper left')
  axes[0].margins(x=0.12, y=0.08)  # room for the labels of the outermost points
  if not seeds:  # no error bars to give the scale: a seed's noise must not fill the axes
    for get, set_ in ((axes[0].get_xlim, axes[0].set_xlim), (axes[0].get_ylim, axes[0].set_ylim)):
      low, high = get()
      if high - low < MIN_SPAN:
        middle = (low + high) / 2
        set_(middle - MIN_SPAN / 2, middle + MIN_SPAN / 2)
  spread = ("each label's mean over runs, bars 1 std over runs" if seeds else
            'one run per label (no error bars; nothing tested)')
  axes[0].set_title(f"Tail against mean: {spread}; dashed: {report['reference']}; bold: on "
                    'the Pareto front', fontsize=10)
  labelled = [list(range(len(labels)))]
  if panels == 2:
    _zoom(axes, x[zoomed], y[zoomed], report['reference'])
    labelled = [[i for i in range(len(labels)) if i not in zoomed], zoomed]
  fig.tight_layout()
  _place_labels(fig, axes, labelled, labels, x, y, front, legend)
  style_lib.save(fig, out, 'pareto')
  plt.close(fig)


def _zoom(axes, zx: np.ndarray, zy: np.ndarray, reference: str) -> None:
  """The right panel: the zoomed labels' means (`zx`, `zy`) with room for their labels (bars
  may run off it), and its box drawn on the left panel."""
  from matplotlib.patches import Rectangle  # pylint: disable=g-import-not-at-top
  pad_x, pad_y = 0.25 * (np.ptp(zx) or 1.0), 0.15 * (np.ptp(zy) or 1.0)
  box = (zx.min() - pad_x, zy.min() - pad_y, zx.max() + pad_x, zy.max() + pad_y)
  axes[1].set_xlim(box[0], box[2])
  axes[1].set_ylim(box[1], box[3])
  axes[1].set_title(f"Zoom: the labels within {ZOOM_MIOU:g} mIoU points of "
                    f"{reference} or above it", fontsize=10)
  axes[0].add_patch(Rectangle(
      box[:2], box[2] - box[0], box[3] - box[1], fill=False, edgecolor='black',
      linewidth=0.6, linestyle='-', zorder=0))


def _place_labels(fig, axes, labelled: list[list[int]], labels: list[str], x: np.ndarray,
                  y: np.ndarray, front: np.ndarray, legend) -> None:
  """Each panel's labels (`labelled`: the indices per panel) where they overlap no other
  label, marker or the legend, with a leader line when moved out (called once the axes are
  final: display coordinates no longer move)."""
  renderer = fig.canvas.get_renderer()
  for ax, indices in zip(axes, labelled):
    ax.set_xlim(ax.get_xlim())
    ax.set_ylim(ax.get_ylim())
    texts = [ax.text(0, 0, labels[i], fontsize=7,
                     fontweight='bold' if i in front else 'normal') for i in indices]
    sizes = np.array([[t.get_window_extent(renderer).width + 2,
                       t.get_window_extent(renderer).height + 1] for t in texts]).reshape(-1, 2)
    for t in texts:
      t.remove()
    frame = ax.get_window_extent(renderer)
    points = ax.transData.transform(np.stack([x, y], 1))
    inside = [i for i in range(len(labels))  # markers to keep clear: those in this panel
              if frame.x0 <= points[i, 0] <= frame.x1 and frame.y0 <= points[i, 1] <= frame.y1]
    keep_clear = [(px - 5, py - 5, px + 5, py + 5) for px, py in points[inside]]
    if ax is axes[0]:
      corner = legend.get_window_extent(renderer)
      keep_clear.append((corner.x0, corner.y0, corner.x1, corner.y1))
    offsets = placement.label_offsets(points[indices], sizes,
                                      (frame.x0, frame.y0, frame.x1, frame.y1),
                                      obstacles=keep_clear)
    for i, (dx, dy) in zip(indices, offsets * 72 / fig.dpi):  # points: scale with the dpi
      ax.annotate(labels[i], (x[i], y[i]), xytext=(dx, dy), textcoords='offset points',
                  fontsize=7, ha='left' if dx >= 0 else 'right', va='center',
                  fontweight='bold' if i in front else 'normal',
                  arrowprops=dict(arrowstyle='-', color='dimgrey', linewidth=0.5, shrinkA=0,
                                  shrinkB=2) if np.hypot(dx, dy) > 9 else None)


@registry.register('pareto')
def draw(runs: list[dict], report: dict, out: str, options: Mapping[str, Any]) -> None:
  """pareto; options: kinds (label -> a KIND_STYLES key)."""
  del runs
  plot_pareto(report, out, options.get('kinds'))
