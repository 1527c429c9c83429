"""The report's tables: report.md (markdown) and report.csv, from the report dict."""

from __future__ import annotations

import csv


from tce_jax.analysis.runs import STATS


def _cell(entry: dict, bold: bool = False) -> str:
  if entry['mean'] is None:
    return '-'
  text = f"{entry['mean']:.1f}" + (f" ± {entry['std']:.1f}" if entry['std'] else '')
  return f'**{text}**' if bold else text


def single_run_labels(report: dict) -> list[str]:
  """The labels with one run: no std, no error bars, no tests for them."""
  return [l for l, e in report['labels'].items() if len(e['runs']) < 2]


def markdown(report: dict) -> str:
  """report.md: per-class IoU table (best per class in bold) and the fairness table."""
  labels = list(report['labels'])
  lines = ['# Report\n']
  for warning in report.get('warnings', []):
    lines.append(f'> **Warning**: {warning}\n')
  lines.append(f"Reference: **{report['reference']}**; classes sorted by its IoU, worst "
               f"first; fairness fraction {report['fraction']}. IoU in percent, mean ± std "
               'over runs sharing a label.\n')
  for label, entry in report['labels'].items():
    backbone = '; '.join(entry.get('backbone', [])) or 'not recorded'
    count = len(entry['runs'])
    steps = sorted(set(entry['steps']))
    lines.append(f"- {label}: {count} run{'s' if count > 1 else ''}, step"
                 f"{'s' if len(steps) > 1 else ''} {', '.join(map(str, steps))}, backbone "
                 f"{backbone}: " + ', '.join(entry['runs']))
  single = single_run_labels(report)
  if single:
    lines.append(f"\n{', '.join(single)}: one run each. A single run has no spread and "
                 'no test is possible: nothing here says whether a difference is beyond seed '
                 'noise (on the synthetic benchmark one seed moves mIoU by up to about 1 point '
                 'and a class by several). Run several seeds under one label to get the std, '
                 'the error bars and the tests.')
  if report['excluded_classes']:
    lines.append(f"\nLeft out (absent from the reference's evaluation): "
                 f"{', '.join(report['excluded_classes'])}")
  lines += ['\n## Per-class IoU\n', '| class | ' + ' | '.join(labels) + ' |',
            '|---|' + '---|' * len(labels)]
  for c in report['class_order']:
    entries = [report['labels'][l]['per_class_iou'][c] for l in labels]
    shown = [None if e['mean'] is None else round(e['mean'], 1) for e in entries]
    best = max((v for v in shown if v is not None), default=None)
    # Nothing to single out: all print alike, or some label is one run (no spread known).
    tie = bool(single) or len({v for v in shown if v is not None}) <= 1
    lines.append(f'| {c} | ' + ' | '.join(_cell(e, not tie and v == best)
                                          for e, v in zip(entries, shown)) + ' |')
  lines += ['\n## Fairness\n', '| model | ' + ' | '.join(STATS) + ' |',
            '|---|' + '---|' * len(STATS)]
  for label in labels:
    stats = report['labels'][label]['fairness']
    lines.append(f'| {label} | ' + ' | '.join(_cell(stats[k]) for k in STATS) + ' |')
  lines.append('\nBold: the best value of a row as printed (none when all print alike or a '
               'label has one run).')
  lines.append('\nsorted_bottom/top: mean IoU over the reference\'s k worst/best classes; '
               'percentile_*: the quantile of the model\'s own IoUs and the mean beyond it; '
               'std: sample standard deviation over classes.')
  return '\n'.join(lines) + '\n'


def write_csv(report: dict, path: str):
  with open(path, 'w', newline='') as f:
    out = csv.writer(f)
    out.writerow(['label', 'num_runs', 'metric', 'mean', 'std'])
    for label, entry in report['labels'].items():
      for c in report['class_order']:
        e = entry['per_class_iou'][c]
        out.writerow([label, len(entry['runs']), f'iou/{c}', e['mean'], e['std']])
      for k in STATS:
        out.writerow([label, len(entry['runs']), f'fairness/{k}', entry['fairness'][k]['mean'],
                      entry['fairness'][k]['std']])
