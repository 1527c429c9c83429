"""Tables and figures comparing runs.

  python -m tce_jax.report --runs A B ... --reference A --out DIR

Reads each run's config.json and latest evaluation (RUN/eval/<step>.json), groups runs by
label (the config's `name`, or --labels; several runs under one label are seeds: mean +- std),
and writes report.md, report.csv, report.json, and the figures per_class_iou,
per_class_difference (each label minus the reference, per class, differences beyond seed
noise framed), fairness, pareto (mIoU against the reference's worst classes), confusion and
qualitative (validation images where the reference's worst classes appear, with every
label's prediction), each as .png and .pdf, into DIR. Classes are sorted by the reference's
IoU, worst first.
"""

from __future__ import annotations

import csv
import json
import math
import os
from typing import Sequence
import warnings

from absl import app
from absl import flags
from absl import logging
import ml_collections
import numpy as np

from tce_jax import cli
from tce_jax import fairness
from tce_jax import records
from tce_jax import rundir
from tce_jax import stats
from tce_jax.models import pretrained

FLAGS = flags.FLAGS


def _define_flags():
  """Command-line flags, defined only when run as a program (importing defines none)."""
  flags.DEFINE_list('runs', None, 'Run directories to compare (space or comma separated).')
  flags.DEFINE_string('reference', None, 'The reference run (default: the first run).')
  flags.DEFINE_list('labels', None, 'Labels of the runs, in order (default: config names).')
  flags.DEFINE_string('out', None, 'Output directory.')
  flags.DEFINE_integer('qualitative_images', 4,
                       'Validation images in qualitative.png (0: none).')


STATS = ('miou', 'sorted_bottom', 'sorted_top', 'percentile_bottom', 'percentile_bottom_miou',
         'percentile_top', 'percentile_top_miou', 'worst', 'std')


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
  from tce_jax.evaluate import load_run_config  # pylint: disable=g-import-not-at-top
  loaded = []
  for i, run in enumerate(runs):
    config = load_run_config(run)
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
  """Mean and sample std over axis 0 (std 0 for a single run), NaN-aware."""
  values = np.asarray(values, np.float64)
  with warnings.catch_warnings():  # all-NaN columns (absent classes) stay NaN, quietly
    warnings.simplefilter('ignore', RuntimeWarning)
    mean = np.nanmean(values, axis=0)
    std = np.nanstd(values, axis=0, ddof=1) if len(values) > 1 else np.zeros_like(mean)
  return mean, std


def summarize_runs(runs: list[dict], reference_run: str, fraction: float) -> dict:
  """Per-label mean +- std of per-class IoU and of the fairness stats against the reference."""
  reference_label = next(r['label'] for r in runs if os.path.samefile(r['run'], reference_run))
  reference_iou, _ = mean_std([r['iou'] for r in runs if r['label'] == reference_label])
  classes = runs[0]['classes']
  excluded = [c for c, v in zip(classes, reference_iou) if not np.isfinite(v)]
  labels = list(dict.fromkeys(r['label'] for r in runs))
  summary = {}
  for label in labels:
    group = [r for r in runs if r['label'] == label]
    iou_mean, iou_std = mean_std([r['iou'] for r in group])
    stats = [fairness.fairness_stats(r['iou'], reference_iou, fraction) for r in group]
    stat_mean, stat_std = mean_std([[s[k] for k in STATS] for s in stats])
    summary[label] = {
        'runs': [r['run'] for r in group],
        'steps': [r['eval']['step'] for r in group],
        'backbone': sorted({pretrained.describe_init(r['config']) for r in group}),
        'per_class_iou': {c: {'mean': _num(m), 'std': _num(s)}
                          for c, m, s in zip(classes, iou_mean, iou_std)},
        'fairness': {k: {'mean': float(m), 'std': float(s)}
                     for k, m, s in zip(STATS, stat_mean, stat_std)},
        'num_classes': stats[0]['num_classes'],
    }
  finite = np.isfinite(reference_iou)
  order = [classes[i] for i in np.argsort(np.where(finite, reference_iou, np.inf),
                                          kind='stable') if finite[i]]
  return {'reference': reference_label, 'fraction': fraction, 'class_order': order,
          'excluded_classes': excluded, 'labels': summary}


def _num(x) -> float | None:
  return None if not np.isfinite(x) else float(x)


def _cell(entry: dict, bold: bool = False) -> str:
  if entry['mean'] is None:
    return '-'
  text = f"{entry['mean']:.1f}" + (f" ± {entry['std']:.1f}" if entry['std'] else '')
  return f'**{text}**' if bold else text


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
    lines.append(f"- {label}: {len(entry['runs'])} run(s), step {entry['steps']}, backbone "
                 f"{backbone}: " + ', '.join(entry['runs']))
  if report['excluded_classes']:
    lines.append(f"\nLeft out (absent from the reference's evaluation): "
                 f"{', '.join(report['excluded_classes'])}")
  lines += ['\n## Per-class IoU\n', '| class | ' + ' | '.join(labels) + ' |',
            '|---|' + '---|' * len(labels)]
  for c in report['class_order']:
    entries = [report['labels'][l]['per_class_iou'][c] for l in labels]
    shown = [None if e['mean'] is None else round(e['mean'], 1) for e in entries]
    best = max((v for v in shown if v is not None), default=None)
    tie = len({v for v in shown if v is not None}) <= 1  # nothing to single out
    lines.append(f'| {c} | ' + ' | '.join(_cell(e, not tie and v == best)
                                          for e, v in zip(entries, shown)) + ' |')
  lines += ['\n## Fairness\n', '| model | ' + ' | '.join(STATS) + ' |',
            '|---|' + '---|' * len(STATS)]
  for label in labels:
    stats = report['labels'][label]['fairness']
    lines.append(f'| {label} | ' + ' | '.join(_cell(stats[k]) for k in STATS) + ' |')
  lines.append('\nBold: the best value of a row as printed (none when all print alike).')
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


def _save(fig, out: str, name: str):
  """name.png (for viewing) and name.pdf (vector, for papers)."""
  for ext in ('png', 'pdf'):
    fig.savefig(os.path.join(out, f'{name}.{ext}'), dpi=100)


def _grouped_bars(ax, groups: Sequence[str], series: dict[str, tuple], ylabel: str, *,
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
    ax.bar(position, height, width, yerr=std if np.any(std) else None, label=name,
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


def plot_bars(report: dict, out: str):
  """per_class_iou.png / .pdf and fairness.png / .pdf."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  classes = report['class_order']
  series = {label: (np.array([_nan(e['per_class_iou'][c]['mean']) for c in classes]),
                    np.array([_nan(e['per_class_iou'][c]['std']) for c in classes]))
            for label, e in report['labels'].items()}
  per_group = 0.6 * max(1.0, len(series) / 6)  # room for every label's bar
  fig, ax = plt.subplots(figsize=(max(8, per_group * len(classes) + 2), 5))
  _grouped_bars(ax, classes, series, 'IoU (%)')
  ax.set_title(f"Per-class IoU (mean ± std over runs), classes sorted by the reference "
               f"({report['reference']}), worst first; a dash marks 0")
  fig.tight_layout()
  _save(fig, out, 'per_class_iou')
  plt.close(fig)
  widths = [len(keys) + 1 for _, keys in STAT_PANELS]
  fig, axes = plt.subplots(1, len(STAT_PANELS),
                           figsize=(13 * max(1.0, len(report['labels']) / 8) ** 0.5, 4.8),
                           gridspec_kw={'width_ratios': widths})
  for i, (ax, (title, keys)) in enumerate(zip(axes, STAT_PANELS)):
    series = {label: (np.array([_nan(e['fairness'][k]['mean']) for k in keys]),
                      np.array([_nan(e['fairness'][k]['std']) for k in keys]))
              for label, e in report['labels'].items()}
    many = len(series) > len(PALETTE)
    _grouped_bars(ax, [STAT_NAMES[k] for k in keys], series, '', values=True,
                  legend=i == 0 and not many)
    ax.set_title(title, fontsize=10)
    ax.margins(y=0.12)
  fig.suptitle(f"Fairness statistics against the reference ({report['reference']}); "
               f"k and quantiles at the fraction {report['fraction']}", fontsize=11)
  fig.tight_layout()
  if many:  # one legend for the three panels, at the right of the figure
    columns = -(-len(report['labels']) // 12)
    fig.subplots_adjust(right=1 - 0.11 * columns)
    fig.legend(*axes[0].get_legend_handles_labels(), fontsize=8, loc='center right',
               ncol=columns)
  _save(fig, out, 'fairness')
  plt.close(fig)


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
  for r, label in enumerate(rows):
    entry = report['labels'][label]
    tests = stats.per_class(entry, reference, len(entry['runs']), len(reference['runs']))
    for c, name in enumerate(classes):
      if name in tests:
        diff[r, c] = tests[name]['diff']
        beyond[r, c] = tests[name]['adjusted'] <= alpha
    names.append('{} ({} / {})'.format(label, *stats.beyond_noise(tests, alpha)))
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
  ax.set_title(f"Per-class IoU difference to {report['reference']} (means over runs), classes "
               f"worst first; framed: beyond noise (Welch per class, Holm over the row's "
               f"classes, {alpha:g}); (better / worse) after each label", fontsize=9)
  fig.tight_layout()
  _save(fig, out, 'per_class_difference')
  plt.close(fig)
  return True


def _nan(x):
  return np.nan if x is None else x


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
  _save(fig, out, 'confusion')
  plt.close(fig)


# A run's stored qualitative predictions: RUN/qualitative/<validation index>.png, the
# predicted class ids as a palette PNG (viewable as it is; exact on reading). A run that has
# them needs no checkpoint for the qualitative figure, so a study's committed records rebuild it.
QUALITATIVE_DIR = rundir.QUALITATIVE


def qualitative_indices(source, class_ids: Sequence[int], num_images: int) -> list[int]:
  """The `num_images` validation images with the most pixels of `class_ids` (ties: the lower
  index); the first images where none has any."""
  scores = np.array([np.isin(source[i]['label'], class_ids).sum() for i in range(len(source))])
  chosen = [int(i) for i in np.argsort(-scores, kind='stable')[:num_images] if scores[i] > 0]
  return chosen or list(range(min(num_images, len(source))))


def write_predictions(run: str, indices: Sequence[int], predictions: Sequence[np.ndarray],
                      palette: np.ndarray) -> None:
  """Stores each predicted label map as RUN/qualitative/<index>.png (written to a temporary
  name first: a file there is always whole)."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  os.makedirs(os.path.dirname(rundir.qualitative_path(run, 0)), exist_ok=True)
  flat = np.zeros((256, 3), np.uint8)
  flat[:len(palette)] = np.asarray(palette, np.uint8)[:256]
  for index, prediction in zip(indices, predictions, strict=True):
    image = Image.fromarray(np.asarray(prediction, np.uint8), mode='P')
    image.putpalette(flat.ravel().tolist())
    path = rundir.qualitative_path(run, index)
    image.save(path + '.tmp', format='PNG')
    os.replace(path + '.tmp', path)


def read_predictions(run: str, indices: Sequence[int]) -> list[np.ndarray] | None:
  """The stored predictions of `indices` (uint8 class ids), or None if any is missing."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  paths = [rundir.qualitative_path(run, i) for i in indices]
  if not all(os.path.exists(p) for p in paths):
    return None
  loaded = []
  for path in paths:
    with Image.open(path) as image:
      if image.mode != 'P':
        raise ValueError(f'{path}: a stored prediction must be a palette PNG of class ids, '
                         f'not mode {image.mode}')
      loaded.append(np.asarray(image, np.uint8))
  return loaded


def plot_qualitative(runs: list[dict], report: dict, out: str, num_images: int,
                     labels: Sequence[str] | None = None,
                     indices: Sequence[int] | None = None,
                     qualitative_runs: Sequence[str] | None = None, title: str | None = None,
                     dataset: ml_collections.ConfigDict | None = None):
  """qualitative.png: image | ground truth | one prediction per label (those of `labels`, in
  the report's order; default all), on the validation images `indices` (default: the
  `num_images` where the reference's worst three classes appear most). Each label shows its
  run in `qualitative_runs` (default: its first run); a run's stored predictions
  (RUN/qualitative/) are used where they cover the images, else its checkpoint predicts.
  `title` replaces the figure's default title (which names the reference's worst classes);
  `dataset` (a config.dataset) the reference run's dataset config, e.g. to read the images from
  this machine's data_dir rather than the recorded one."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  from tce_jax import evaluate  # pylint: disable=g-import-not-at-top
  from tce_jax.data import classes as classes_lib, datasets  # pylint: disable=g-import-not-at-top

  first = {}
  shown_runs = None if qualitative_runs is None else {os.path.abspath(r)
                                                      for r in qualitative_runs}
  for r in runs:
    if shown_runs is not None and os.path.abspath(r['run']) not in shown_runs:
      continue
    if labels is None or r['label'] in labels or r['label'] == report['reference']:
      first.setdefault(r['label'], r)
  if report['reference'] not in first:
    raise ValueError('The qualitative figure needs a run of the reference '
                     f'{report["reference"]!r} among qualitative_runs')
  config = first[report['reference']]['config']
  if dataset is not None:
    config = config.copy_and_resolve_references()
    config.dataset = dataset
  spec = datasets.get_spec(config)
  source = datasets.load_source(config, config.dataset.eval_split)
  names = list(spec.class_names)
  if indices is None:
    indices = qualitative_indices(source, [names.index(c) for c in report['class_order'][:3]],
                                  num_images)
  chosen = [int(i) for i in indices]
  examples = [source[i] for i in chosen]
  predictions = {}
  for label, r in first.items():
    stored = read_predictions(r['run'], chosen)
    predictions[label] = stored if stored is not None else evaluate.predict_labels(
        r['config'], r['run'], [e['image'] for e in examples])
  columns = ['image', 'ground truth'] + list(predictions)
  fig, axes = plt.subplots(len(examples), len(columns),
                           figsize=(2.6 * len(columns), 1.6 * len(examples) + 0.6),
                           squeeze=False)
  for row, e in enumerate(examples):
    panels = [e['image'], classes_lib.colorize(e['label'], spec.palette)]
    panels += [classes_lib.colorize(p[row], spec.palette) for p in predictions.values()]
    for col, panel in enumerate(panels):
      axes[row, col].imshow(panel)
      axes[row, col].set_xticks([])
      axes[row, col].set_yticks([])
      if row == 0:
        axes[row, col].set_title(columns[col], fontsize=9)
    axes[row, 0].set_ylabel(f'#{chosen[row]}', fontsize=8)
  fig.suptitle(title or 'Validation images where the reference\'s worst classes (' +
               ', '.join(report['class_order'][:3]) + ') appear most', fontsize=10)
  from matplotlib.patches import Patch  # pylint: disable=g-import-not-at-top
  shown = sorted(set(np.concatenate([np.unique(e['label']) for e in examples] +
                                    [np.unique(p) for ps in predictions.values() for p in ps])))
  handles = [Patch(facecolor=np.asarray(spec.palette[c]) / 255, edgecolor='grey',
                   label=names[c]) for c in shown if c < len(names)]
  handles.append(Patch(facecolor='black', edgecolor='grey',
                       label='ignored (unlabelled, not scored)'))
  fig.legend(handles=handles, loc='lower center', ncol=min(len(handles), 6), fontsize=8,
             frameon=False)
  fig.tight_layout(rect=(0, 0.04 + 0.035 * math.ceil(len(handles) / 6), 1, 1))
  _save(fig, out, 'qualitative')
  plt.close(fig)


# Marker of each kind of label in the Pareto figure (make_report's `kinds`): colour for the
# origin, hollow for a label with fewer seeds (a sweep).
KIND_STYLES = {
    'paper': {'marker': 'o', 'color': PALETTE[0], 'filled': True},
    'added': {'marker': 's', 'color': PALETTE[5], 'filled': True},
    'paper (t sweep)': {'marker': 'o', 'color': PALETTE[0], 'filled': False},
    'added (t sweep)': {'marker': 's', 'color': PALETTE[5], 'filled': False},
}


def pareto_front(x: Sequence[float], y: Sequence[float]) -> list[int]:
  """Indices of the points no other point matches or beats on both coordinates while beating
  it on one (higher is better on both), sorted by x."""
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  front = [i for i in range(x.size)
           if not np.any((x >= x[i]) & (y >= y[i]) & ((x > x[i]) | (y > y[i])))]
  return sorted(front, key=lambda i: (x[i], -y[i]))


def label_offsets(points: np.ndarray, sizes: np.ndarray, bounds: tuple[float, float, float, float],
                  *, obstacles: Sequence[tuple[float, float, float, float]] = (),
                  marker: float = 5.0,
                  radii: Sequence[float] = (3, 8, 14, 22, 32, 44, 58, 75, 95)) -> np.ndarray:
  """Where to put each point's label so that no two labels, and no label and a marker, overlap.

  Pure geometry in display pixels (y up): `points` [n, 2], `sizes` [n, 2] (each label's width
  and height), `bounds` (x0, y0, x1, y1) the box the labels must stay in, `marker` the half
  width of the square kept clear around every point, `obstacles` more boxes (x0, y0, x1, y1)
  to keep clear (a legend). Greedy: the points are placed from the
  most crowded one, each at the first free spot on rings of growing `radii` (right of the
  point first, then above, below and left), so an isolated label sits next to its point and a
  crowded one moves out to where there is room (the caller draws a leader line when it is
  far). Returns [n, 2] offsets of each label's anchor: its left edge's middle for an offset
  to the right, its right edge's middle for one to the left. A label that fits nowhere gets
  the first ring's spot to the right (it may overlap).
  """
  points = np.asarray(points, float).reshape(-1, 2)
  sizes = np.asarray(sizes, float).reshape(-1, 2)
  n = len(points)
  taken = [(px - marker, py - marker, px + marker, py + marker) for px, py in points]
  taken += [tuple(b) for b in obstacles]
  angles = np.deg2rad([0, 30, -30, 60, -60, 90, -90, 120, -120, 150, -150, 180])
  distance = np.linalg.norm(points[:, None] - points[None], axis=-1)
  order = np.argsort(-(distance < 60).sum(1), kind='stable')  # the most crowded first
  offsets = np.zeros((n, 2))

  def box(i: int, dx: float, dy: float) -> tuple[float, float, float, float]:
    (px, py), (w, h) = points[i], sizes[i]
    x0 = px + dx if dx >= 0 else px + dx - w
    return (x0, py + dy - h / 2, x0 + w, py + dy + h / 2)

  def free(b: tuple[float, float, float, float]) -> bool:
    if b[0] < bounds[0] or b[1] < bounds[1] or b[2] > bounds[2] or b[3] > bounds[3]:
      return False
    return not any(b[0] < t[2] and t[0] < b[2] and b[1] < t[3] and t[1] < b[3] for t in taken)

  for i in order:
    choice = (radii[0] + marker, 0.0)
    for r in radii:
      spots = [((r + marker) * np.cos(a), (r + marker) * np.sin(a)) for a in angles]
      spot = next((s for s in spots if free(box(i, *s))), None)
      if spot is not None:
        choice = spot
        break
    offsets[i] = choice
    taken.append(box(i, *choice))
  return offsets


ZOOM_MIOU = 2.0  # pareto.png zooms on the labels within this many mIoU points of the reference


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
  from matplotlib.patches import Rectangle  # pylint: disable=g-import-not-at-top
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  labels = list(report['labels'])

  def stat(label: str, key: str) -> dict:
    return report['labels'][label]['fairness'][key]

  x = np.array([stat(l, 'miou')['mean'] for l in labels])
  y = np.array([stat(l, 'sorted_bottom')['mean'] for l in labels])
  xerr = np.array([stat(l, 'miou')['std'] or 0.0 for l in labels])
  yerr = np.array([stat(l, 'sorted_bottom')['std'] or 0.0 for l in labels])
  front = pareto_front(x, y)
  reference = labels.index(report['reference'])
  zoomed = [i for i in range(len(labels)) if x[i] >= x[reference] - ZOOM_MIOU]
  panels = 2 if len(zoomed) > 1 else 1
  fig, axes = plt.subplots(1, panels, figsize=(9 * panels, 7.5), squeeze=False)
  axes = axes[0]
  k = fairness.num_sorted(len(report['class_order']), report['fraction'])
  for ax in axes:
    ax.plot(x[front], y[front], color='grey', linewidth=1, linestyle=':', zorder=1,
            label='Pareto front (means)')
    ax.axvline(x[reference], color='grey', linewidth=0.6, linestyle='--', zorder=0)
    ax.axhline(y[reference], color='grey', linewidth=0.6, linestyle='--', zorder=0)
    seen = set()
    for i, label in enumerate(labels):
      kind = (kinds or {}).get(label, 'paper')
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
  axes[0].set_title(f"Tail against mean: each label's mean over runs, bars 1 std over runs; "
                    f"dashed: {report['reference']}; bold: on the Pareto front", fontsize=10)
  labelled = [list(range(len(labels)))]
  if panels == 2:
    # The zoom shows its points' means with room for their labels; bars may run off it.
    zx, zy = x[zoomed], y[zoomed]
    pad_x, pad_y = 0.25 * (np.ptp(zx) or 1.0), 0.15 * (np.ptp(zy) or 1.0)
    box = (zx.min() - pad_x, zy.min() - pad_y, zx.max() + pad_x, zy.max() + pad_y)
    axes[1].set_xlim(box[0], box[2])
    axes[1].set_ylim(box[1], box[3])
    axes[1].set_title(f"Zoom: the labels within {ZOOM_MIOU:g} mIoU points of "
                      f"{report['reference']} or above it", fontsize=10)
    axes[0].add_patch(Rectangle(
        box[:2], box[2] - box[0], box[3] - box[1], fill=False, edgecolor='black',
        linewidth=0.6, linestyle='-', zorder=0))
    labelled = [[i for i in range(len(labels)) if i not in zoomed], zoomed]
  fig.tight_layout()
  # Labels go where they overlap no other label, marker or the legend, with a leader line
  # when moved out (the axes are final now: display coordinates no longer move).
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
    offsets = label_offsets(points[indices], sizes, (frame.x0, frame.y0, frame.x1, frame.y1),
                            obstacles=keep_clear)
    for i, (dx, dy) in zip(indices, offsets * 72 / fig.dpi):  # points: scale with the dpi
      ax.annotate(labels[i], (x[i], y[i]), xytext=(dx, dy), textcoords='offset points',
                  fontsize=7, ha='left' if dx >= 0 else 'right', va='center',
                  fontweight='bold' if i in front else 'normal',
                  arrowprops=dict(arrowstyle='-', color='dimgrey', linewidth=0.5, shrinkA=0,
                                  shrinkB=2) if np.hypot(dx, dy) > 9 else None)
  _save(fig, out, 'pareto')
  plt.close(fig)


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
  _save(fig, out, name)
  plt.close(fig)
  return list(drawn)


def make_report(runs: Sequence[str], out: str, *, reference: str | None = None,
                labels: Sequence[str] | None = None, qualitative_images: int = 4,
                kinds: dict[str, str] | None = None,
                qualitative_labels: Sequence[str] | None = None,
                qualitative_indices: Sequence[int] | None = None,
                qualitative_runs: Sequence[str] | None = None,
                qualitative_title: str | None = None,
                qualitative_dataset: ml_collections.ConfigDict | None = None) -> dict:
  """Writes every report file into `out`; returns the report dict (as report.json). `kinds`
  (label -> a KIND_STYLES key) marks the labels apart in the Pareto figure. The qualitative
  figure (`qualitative_images` > 0): `qualitative_labels` limits its columns (the reference
  always shown), `qualitative_indices` fixes its validation images, `qualitative_runs` the run
  each label shows, `qualitative_title` its title, `qualitative_dataset` where its images are
  read from (plot_qualitative)."""
  loaded = load_runs(runs, labels)
  reference = reference or runs[0]
  if not any(os.path.samefile(r['run'], reference) for r in loaded):
    raise ValueError(f'--reference={reference} is not one of --runs')
  fraction = loaded[0]['config'].eval.fairness_fraction
  report = summarize_runs(loaded, reference, fraction)
  report['warnings'] = comparability_warnings(loaded)
  for warning in report['warnings']:
    logging.warning('%s', warning)
  os.makedirs(out, exist_ok=True)
  with open(os.path.join(out, 'report.md'), 'w') as f:
    f.write(markdown(report))
  records.write_json(os.path.join(out, 'report.json'), report)
  write_csv(report, os.path.join(out, 'report.csv'))
  plot_bars(report, out)
  plot_class_differences(report, out)
  plot_pareto(report, out, kinds)
  plot_confusion(loaded, report, out)
  if qualitative_images:
    plot_qualitative(loaded, report, out, qualitative_images, qualitative_labels,
                     qualitative_indices, qualitative_runs, qualitative_title,
                     qualitative_dataset)
  return report


def main(argv):
  cli.quiet_libraries()
  runs = list(FLAGS.runs or []) + list(argv[1:])  # `--runs A B C` leaves B C in argv
  if not runs or not FLAGS.out:
    raise app.UsageError('Give --runs RUN [RUN ...] and --out DIR')
  try:
    os.makedirs(FLAGS.out, exist_ok=True)
  except OSError as e:
    cli.exit_on(ValueError(f'--out {FLAGS.out} cannot be created: {e.strerror or e} (a file '
                           'in the way?)'))
  try:
    result = make_report(runs, FLAGS.out, reference=FLAGS.reference, labels=FLAGS.labels,
                         qualitative_images=FLAGS.qualitative_images)
  except (ValueError, OSError) as e:
    cli.exit_on(e)
  for warning in result['warnings']:
    print(f'WARNING: {warning}')
  print(f'Wrote the report to {FLAGS.out}/report.md')


if __name__ == '__main__':
  _define_flags()
  app.run(main, flags_parser=cli.parse_flags)
