"""Loading and aggregating runs: each run's config and latest evaluation, grouped by label
(several runs under one label are seeds: mean and std over them), with what makes runs not
comparable."""

from __future__ import annotations

import json
import os
import warnings
from typing import Sequence

import numpy as np

from tce_jax import fairness
from tce_jax import records
from tce_jax import rundir
from tce_jax import workdir as workdir_lib
from tce_jax.models import pretrained


STATS = ('miou', 'sorted_bottom', 'sorted_top', 'percentile_bottom', 'percentile_bottom_miou',
         'percentile_top', 'percentile_top_miou', 'worst', 'std')
# The mean IoU over classes named in advance (summarize_runs' `fixed_classes`).
FIXED_BOTTOM = 'fixed_bottom'


def finite_or_none(x) -> float | None:
  """A float, or None (JSON null) for NaN and infinities."""
  return None if not np.isfinite(x) else float(x)


def latest_eval(run: str) -> dict:
  """The evaluation record of the run's latest step on its eval split."""
  steps = rundir.eval_steps(run)
  if not steps:
    raise FileNotFoundError(f'No evaluation in {run}/eval: train or evaluate the run first')
  return records.read_json(rundir.eval_path(run, steps[-1]))


def load_runs(runs: Sequence[str], labels: Sequence[str] | None) -> list[dict]:
  """[{run, label, config, eval, iou (np [K], NaN = absent)}] in the given order."""
  if labels is not None and len(labels) != len(runs):
    raise ValueError(f'--labels has {len(labels)} entries for {len(runs)} runs')
  loaded = []
  for i, run in enumerate(runs):
    config = workdir_lib.load_run_config(run)
    record = latest_eval(run)
    iou = np.array([np.nan if v is None else v for v in record['per_class_iou'].values()])
    loaded.append({'run': run, 'label': labels[i] if labels else config.name, 'config': config,
                   'eval': record, 'iou': iou, 'classes': list(record['per_class_iou'])})
  classes = loaded[0]['classes']
  for r in loaded[1:]:
    if r['classes'] != classes:
      raise ValueError(f'{r["run"]} has other classes than {loaded[0]["run"]}: runs of '
                       'different datasets cannot be compared')
  return loaded


def comparability_warnings(runs: list[dict]) -> list[str]:
  """What makes the runs' records not directly comparable: evaluations made under different
  protocols (split, resolution, mode, scales, flip, output stride, ...) or at different
  training steps. Empty when they agree."""
  warnings_ = []
  protocols = {r['run']: r['eval'].get('protocol') for r in runs}
  if len({json.dumps(p, sort_keys=True) for p in protocols.values()}) > 1:
    described = '; '.join(f'{run}: ' + (json.dumps(p, sort_keys=True) if p else
                                         'not recorded (an older record)')
                          for run, p in protocols.items())
    warnings_.append('The runs were evaluated under different protocols, so their numbers are '
                     f'not comparable: {described}. Evaluate them alike (python -m '
                     'tce_jax.evaluate --workdir=RUN with the same flags).')
  inits = {r['run']: pretrained.describe_init(r['config']) for r in runs}
  if len(set(inits.values())) > 1:
    warnings_.append('The runs start from different backbone weights: ' +
                     ', '.join(f'{run}: {init}' for run, init in inits.items()) + '.')
  steps = {r['run']: r['eval']['step'] for r in runs}
  if len(set(steps.values())) > 1:
    warnings_.append('The runs were evaluated at different training steps: ' +
                     ', '.join(f'{run}: {step}' for run, step in steps.items()) + '.')
  return warnings_


def mean_std(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Mean and sample std over axis 0, NaN-aware; a single run has no std (NaN: null in the
  records, blank in the tables), not a std of 0."""
  values = np.asarray(values, np.float64)
  with warnings.catch_warnings():  # all-NaN columns (absent classes) stay NaN, quietly
    warnings.simplefilter('ignore', RuntimeWarning)
    mean = np.nanmean(values, axis=0)
    std = np.nanstd(values, axis=0, ddof=1) if len(values) > 1 else np.full_like(mean, np.nan)
  return mean, std


def summarize_runs(runs: list[dict], reference_run: str, fraction: float,
                   fixed_classes: Sequence[str] = ()) -> dict:
  """Per-label mean +- std of per-class IoU and of the fairness stats against the reference.

  With `fixed_classes` (class names), each label's fairness also holds FIXED_BOTTOM: each
  run's mean IoU over those classes (absent ones skipped), then mean +- std over the runs. It
  is sorted_bottom with its classes named in advance rather than chosen as the reference's
  worst on the very split being scored, which favours every method against the reference on
  them (the reference's worst are partly its unlucky ones)."""
  reference_label = next(r['label'] for r in runs if os.path.samefile(r['run'], reference_run))
  reference_iou, _ = mean_std([r['iou'] for r in runs if r['label'] == reference_label])
  classes = runs[0]['classes']
  unknown = [c for c in fixed_classes if c not in classes]
  if unknown:
    raise ValueError(f'The fixed classes {unknown} are not classes of the runs: '
                     f'{", ".join(classes)}')
  fixed = [classes.index(c) for c in fixed_classes]
  excluded = [c for c, v in zip(classes, reference_iou) if not np.isfinite(v)]
  labels = list(dict.fromkeys(r['label'] for r in runs))
  summary = {}
  for label in labels:
    group = [r for r in runs if r['label'] == label]
    iou_mean, iou_std = mean_std([r['iou'] for r in group])
    stats = [fairness.fairness_stats(r['iou'], reference_iou, fraction) for r in group]
    stat_mean, stat_std = mean_std([[s[k] for k in STATS] for s in stats])
    label_stats = {k: {'mean': float(m), 'std': finite_or_none(s)}
                   for k, m, s in zip(STATS, stat_mean, stat_std)}
    if fixed:
      with warnings.catch_warnings():  # a run without any of the classes: NaN, quietly
        warnings.simplefilter('ignore', RuntimeWarning)
        per_run = [np.nanmean(r['iou'][fixed]) for r in group]
      m, s = mean_std(per_run)
      label_stats[FIXED_BOTTOM] = {'mean': float(m), 'std': finite_or_none(s)}
    summary[label] = {
        'runs': [r['run'] for r in group],
        'steps': [r['eval']['step'] for r in group],
        'backbone': sorted({pretrained.describe_init(r['config']) for r in group}),
        'per_class_iou': {c: {'mean': finite_or_none(m), 'std': finite_or_none(s)}
                          for c, m, s in zip(classes, iou_mean, iou_std)},
        'fairness': label_stats,
        'num_classes': stats[0]['num_classes'],
    }
  finite = np.isfinite(reference_iou)
  order = [classes[i] for i in np.argsort(np.where(finite, reference_iou, np.inf),
                                          kind='stable') if finite[i]]
  result = {'reference': reference_label, 'fraction': fraction, 'class_order': order,
            'excluded_classes': excluded, 'labels': summary}
  if fixed:
    result['fixed_classes'] = list(fixed_classes)
  return result
