"""The profile of a study's reference method over its seeds (per-class IoU, worst and best
classes, spread, seed-to-seed std) against the targets the study declares."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from tce_jax import records as records_lib
from tce_jax import rundir

def benchmark_profile(workdirs: list[str], steps: int) -> tuple[dict, list[str], np.ndarray]:
  """The profile figures of the runs in `workdirs` (one method, several seeds): returns
  (figures, class names, [seeds, K] per-class IoU with NaN for absent classes)."""
  records = []
  for workdir in workdirs:
    records.append(records_lib.read_json(rundir.eval_path(workdir, steps)))
  classes = list(records[0]['per_class_iou'])
  iou = np.array([[np.nan if r['per_class_iou'][c] is None else r['per_class_iou'][c]
                   for c in classes] for r in records], np.float64)
  mean = np.sort(np.nanmean(iou[:, ~np.all(np.isnan(iou), axis=0)], axis=0))
  mious = [r['miou'] for r in records]
  figures = {'worst': mean[0], 'bottom5': mean[:5].mean(), 'top5': mean[-5:].mean(),
             'std': np.std(mean, ddof=1),
             'seed_std': np.std(mious, ddof=1) if len(mious) > 1 else float('nan'),
             'miou': float(np.mean(mious)), 'min_any_seed': float(np.nanmin(iou))}
  return figures, classes, iou


def profile_table(figures: dict, classes: list[str], iou: np.ndarray, label: str, *,
                  targets: Mapping[str, tuple[str, Any, Any, Any]],
                  paper_miou: float | None = None) -> str:
  """Markdown: the per-class IoU (seeds and mean, worst first) and the profile figures
  against their target ranges (`targets`: key -> (description, low, high, paper's value))
  and the paper's values."""
  present = ~np.all(np.isnan(iou), axis=0)
  mean = np.full(iou.shape[1], np.nan)
  mean[present] = np.nanmean(iou[:, present], axis=0)
  lines = [f'### Benchmark profile of {label} ({len(iou)} seeds)', '',
           '| class | mean IoU | ' + ' | '.join(f'seed {s}' for s in range(len(iou))) + ' |',
           '|---|---|' + '---|' * len(iou)]
  for c in np.argsort(np.where(np.isnan(mean), np.inf, mean)):
    lines.append(f'| {classes[c]} | {mean[c]:.1f} | ' +
                 ' | '.join(f'{v:.1f}' for v in iou[:, c]) + ' |')
  with_paper = paper_miou is not None or any(t[3] is not None for t in targets.values())
  lines += ['', '| figure | value | target | ' + ('paper (Table 1, MCCE) | ' if with_paper
                                                   else '') + 'in range |',
            '|---|---|---|---|' + ('---|' if with_paper else '')]
  for key, (what, low, high, paper) in targets.items():
    value = figures[key]
    target = (f'{low:g} - {high:g}' if low is not None and high is not None else
              f'>= {low:g}' if low is not None else f'<= {high:g}')
    ok = np.isfinite(value) and (low is None or value >= low) and (high is None or
                                                                   value <= high)
    paper_cell = (f'{"" if paper is None else paper} | ' if with_paper else '')
    lines.append(f'| {what} | {value:.1f} | {target} | {paper_cell}'
                 f'{"yes" if ok else "**no**"} |')
  empty = '| ' if with_paper else ''
  lines.append(f'| lowest class IoU in any seed | {figures["min_any_seed"]:.1f} | > 0 | {empty}'
               f'{"yes" if figures["min_any_seed"] > 0 else "**no**"} |')
  paper_cell = f'{"" if paper_miou is None else paper_miou} | ' if with_paper else ''
  lines.append(f'| mIoU | {figures["miou"]:.1f} | | {paper_cell}|')
  return '\n'.join(lines)


