"""sweep.png: the headline statistics against the tilt t, one line per series of labels."""

from __future__ import annotations

from typing import Any, Mapping

from tce_jax import fairness
from tce_jax.analysis import registry
from tce_jax.analysis import style as style_lib
from tce_jax.analysis.style import PALETTE


def plot_sweep(report: dict, out: str, series: dict[str, dict[float, str]],
               name: str = 'sweep') -> list[str]:
  """NAME.png / .pdf: the headline statistics against the tilt t, one line per `series`
  (title -> {t: label}; labels absent from the report are left out, a series with none
  altogether). Two panels, mIoU and the mean IoU over the reference's k worst classes, each
  point a label's mean over runs with 1-std bars; the reference's mean as a dashed line. The
  t axis is logarithmic beyond |t| = 0.1 and linear inside (t = 0 is class-uniform
  sampling). Returns the series drawn (none: nothing written)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  drawn = {title: sorted((t, l) for t, l in points.items() if l in report['labels'])
           for title, points in series.items()}
  drawn = {title: points for title, points in drawn.items() if points}
  if not drawn:
    return []
  k = fairness.num_sorted(len(report['class_order']), report['fraction'])
  panels = {'miou': 'mIoU (%)',
            'sorted_bottom': f"mean IoU of {report['reference']}'s {k} worst classes (%)"}
  fig, axes = plt.subplots(1, len(panels), figsize=(11, 4.5))
  reference = report['labels'][report['reference']]['fairness']
  ticks = sorted({t for points in drawn.values() for t, _ in points})
  for ax, (key, ylabel) in zip(axes, panels.items()):
    for i, (title, points) in enumerate(drawn.items()):
      entries = [report['labels'][l]['fairness'][key] for _, l in points]
      shift = 0.08 * (i - (len(drawn) - 1) / 2)  # series side by side where their t meet
      ax.errorbar([t * (1 + shift) if t else shift / 10 for t, _ in points],
                  [e['mean'] for e in entries],
                  yerr=[e['std'] or 0.0 for e in entries], marker='os^Dv'[i % 5],
                  color=PALETTE[i % len(PALETTE)], capsize=3, linewidth=1.2, label=title)
    ax.axhline(reference[key]['mean'], color='grey', linewidth=0.8, linestyle='--',
               label=report['reference'])
    ax.set_xscale('symlog', linthresh=0.1)
    ax.set_xticks(ticks, [f'{t:g}' for t in ticks])
    ax.minorticks_off()
    ax.set_xlim(min(ticks) - 0.05, max(ticks) * 1.5)
    ax.set_xlabel('tilt t (series drawn slightly apart where they share a t)')
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
  axes[0].legend(fontsize=8, loc='best')
  fig.suptitle('Headline statistics against the tilt: mean over runs, bars 1 std over runs',
               fontsize=10)
  fig.tight_layout()
  style_lib.save(fig, out, name)
  plt.close(fig)
  return list(drawn)


@registry.register('sweep', default=False)
def draw(runs: list[dict], report: dict, out: str, options: Mapping[str, Any]) -> None:
  """sweep; options: series (title -> {t: label}, required), name."""
  del runs
  plot_sweep(report, out, options['series'], options.get('name', 'sweep'))
