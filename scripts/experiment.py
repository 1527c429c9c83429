"""The fairness experiment on the synthetic dataset: every method x seeds, then the report.

  python scripts/experiment.py --out=runs/experiment [--seeds=3] [--steps=1500] [--quick]
                               [--methods=mcce,tce_t1,...]

Methods (identical model, data, steps and schedule; `METHODS` below, docs/method.md): the
paper's (MCCE, Focal with alpha = inverse pixel frequency, Stochastic TCE with t = 0.1 and
t = 1, the direct image- and class-level tilted losses at t = 1), the t = 0 ablation
(class-uniform sampling), and the added ones: Stochastic TCE with the class signal, with
class-aware crops, with TERM's class-size prior; rare class sampling (DAFormer); Focal
without alpha, CE with sqrt-inverse-frequency weights, OHEM and the Recall loss. Each run lives in
OUT/<method>_s<seed>; finished runs are skipped and interrupted ones resume from their
checkpoints, so the command can be started again after any interruption. At the end it
writes the report (MCCE as the reference) into OUT/report, and OUT/report/summary.md: the
headline statistics per method (mean +- std over seeds) with the difference to MCCE and
Welch's t-test p-value, and how many classes differ from MCCE at p < 0.05. `--quick` is a
smoke version (tiny model and data, 1 seed, a few steps) for the tests.
"""

import os

from absl import app
from absl import flags
import numpy as np
from scipy import stats as scipy_stats
import tqdm

from tce_jax import report
from tce_jax import train
from tce_jax.configs import synthetic_mcce
from tce_jax.configs import tiny

FLAGS = flags.FLAGS


def _define_flags():
  """Only when run as a script (the tests import this module)."""
  flags.DEFINE_string('out', 'runs/experiment', 'Folder of the runs and the report.')
  flags.DEFINE_integer('seeds', 3, 'Seeds per method.')
  flags.DEFINE_integer('steps', 1500, 'Training steps of every run.')
  flags.DEFINE_bool('quick', False, 'Smoke version: tiny model and data, 1 seed, 4 steps.')
  flags.DEFINE_string('data_dir', None, 'tfds data_dir (default: ~/tensorflow_datasets).')
  flags.DEFINE_list('methods', None, 'Methods to run (names of METHODS; default: all). The '
                    'first is the reference of the report.')

# DAFormer's parameters scaled to the synthetic images (configs/synthetic_rcs.py): class-aware
# crops (10 redraws, 94 pixels of the class in the 128 x 128 crop) and D_c restricted to the
# images with more than 188 pixels of c.
CLASS_CROP = {'sampling.class_crop.retries': 10, 'sampling.class_crop.min_pixels': 94}
RCS = {'sampling.name': 'rcs', 'sampling.rcs_temperature': 0.01, 'sampling.min_pixels': 188,
       **CLASS_CROP}

# method -> config overrides on top of configs/synthetic_mcce.py. The paper's methods first.
METHODS = {
    'mcce': {},
    'focal': {'loss.name': 'focal'},
    'uniform': {'sampling.name': 'tce', 'tce.t': 0.0},
    'tce_t0.1': {'sampling.name': 'tce', 'tce.t': 0.1},
    'tce_t1': {'sampling.name': 'tce', 'tce.t': 1.0},
    'tce_image_t1': {'loss.name': 'tce_image', 'tce.t': 1.0},
    'tce_class_t1': {'loss.name': 'tce_class', 'tce.t': 1.0},
    # Stochastic TCE extended (docs/method.md): the class signal, class-aware crops, both,
    # and TERM's class-size prior; the crops alone with class-uniform draws.
    'tce_signal_class_t1': {'sampling.name': 'tce', 'tce.t': 1.0, 'tce.signal': 'class'},
    'tce_crop_t1': {'sampling.name': 'tce', 'tce.t': 1.0, **CLASS_CROP},
    'tce_signal_class_crop_t1': {'sampling.name': 'tce', 'tce.t': 1.0, 'tce.signal': 'class',
                                 **CLASS_CROP},
    'tce_size_prior_t1': {'sampling.name': 'tce', 'tce.t': 1.0, 'tce.signal': 'class',
                          'tce.size_prior': 1.0, **CLASS_CROP},
    'uniform_crop': {'sampling.name': 'tce', 'tce.t': 0.0, **CLASS_CROP},
    # Baselines users compare with.
    'rcs': RCS,
    'focal_no_alpha': {'loss.name': 'focal_no_alpha'},
    'ce_sqrt_inv_freq': {'loss.name': 'ce_sqrt_inv_freq'},
    'ohem': {'loss.name': 'ohem'},
    'recall': {'loss.name': 'recall'},
}


def run_config(method: str, seed: int, *, steps: int, quick: bool, data_dir: str | None):
  config = synthetic_mcce.get_config()
  config.name = method
  config.seed = seed
  config.dataset.data_dir = data_dir
  config.train.num_steps = steps
  config.train.eval_every = steps
  config.train.checkpoint_every = max(steps // 5, 1)
  config.train.log_every = max(min(50, steps // 2), 1)
  if quick:
    tiny.apply(config)
  config.update_from_flattened_dict(METHODS[method])
  if quick:  # the tiny profile's 32 x 64 images and 32 x 32 crops: the same fractions
    if config.sampling.min_pixels:
      config.sampling.min_pixels = 11
    config.sampling.class_crop.min_pixels = 6
    config.loss.ohem_min_kept = 195
  return config


def finished(workdir: str, steps: int) -> bool:
  return os.path.exists(os.path.join(workdir, 'eval', f'{steps}.json'))


def run_experiment(out: str, *, seeds: int, steps: int, quick: bool = False,
                   data_dir: str | None = None, methods: list[str] | None = None) -> dict:
  """Trains what is not finished yet, then writes OUT/report; returns the report."""
  methods = list(METHODS) if methods is None else list(methods)
  unknown = [m for m in methods if m not in METHODS]
  if unknown:
    raise ValueError(f'Unknown methods {unknown}; known: {", ".join(METHODS)}')
  runs = [(m, s) for m in methods for s in range(seeds)]
  workdirs = []
  with tqdm.tqdm(total=len(runs) * steps, desc='experiment', unit='step') as progress:
    for method, seed in runs:
      workdir = os.path.join(out, f'{method}_s{seed}')
      workdirs.append(workdir)
      if not finished(workdir, steps):
        train.train_and_evaluate(run_config(method, seed, steps=steps, quick=quick,
                                            data_dir=data_dir), workdir)
      progress.update(steps)
  result = report.make_report(workdirs, os.path.join(out, 'report'), reference=workdirs[0],
                              qualitative_images=0 if quick else 4)
  with open(os.path.join(out, 'report', 'summary.md'), 'w') as f:
    f.write(summary(result) + '\n')
  return result


SUMMARY_STATS = {'miou': 'mIoU', 'sorted_bottom': 'bottom 25% (MCCE\'s worst classes)',
                 'percentile_bottom_miou': 'own bottom 25%', 'worst': 'worst class',
                 'std': 'class-IoU std'}


def welch(a: dict, b: dict, n_a: int, n_b: int) -> float:
  """Two-sided p-value of Welch's t-test from means and sample stds (NaN below 2 runs)."""
  if min(n_a, n_b) < 2:
    return float('nan')
  if a['std'] == 0 and b['std'] == 0:  # no seed noise at all: any difference is real
    return 1.0 if a['mean'] == b['mean'] else 0.0
  return float(scipy_stats.ttest_ind_from_stats(a['mean'], a['std'], n_a, b['mean'], b['std'],
                                                n_b, equal_var=False).pvalue)


def summary(report_json: dict) -> str:
  """Markdown: each method's headline statistics against the reference, with seed noise."""
  labels, reference = report_json['labels'], report_json['reference']
  ref, n_ref = labels[reference], len(labels[reference]['runs'])
  lines = ['| method | runs | ' + ' | '.join(SUMMARY_STATS.values()) +
           ' | classes better / worse than ' + reference + ' (p < 0.05) |',
           '|---|---|' + '---|' * (len(SUMMARY_STATS) + 1)]
  for label, entry in labels.items():
    n = len(entry['runs'])
    cells = []
    for key in SUMMARY_STATS:
      a, b = entry['fairness'][key], ref['fairness'][key]
      cell = f"{a['mean']:.1f} ± {a['std']:.1f}"
      if label != reference:
        p = welch(a, b, n, n_ref)
        cell += f" ({a['mean'] - b['mean']:+.1f}, p {p:.2f})" if np.isfinite(p) else (
            f" ({a['mean'] - b['mean']:+.1f})")
      cells.append(cell)
    better = worse = 0
    if label != reference:
      for c, a in entry['per_class_iou'].items():
        b = ref['per_class_iou'][c]
        if a['mean'] is None or b['mean'] is None or not welch(a, b, n, n_ref) < 0.05:
          continue  # absent class, or no evidence (p >= 0.05, or NaN with one seed)
        better, worse = better + (a['mean'] > b['mean']), worse + (a['mean'] < b['mean'])
    lines.append(f'| {label} | {n} | ' + ' | '.join(cells) + ' | ' +
                 ('' if label == reference else f'{better} / {worse}') + ' |')
  lines += ['', f'Mean ± sample std over seeds; in brackets the difference to {reference} and '
            "the two-sided p-value of Welch's t-test over seeds (no correction for the "
            f'{len(SUMMARY_STATS)} statistics x {len(labels) - 1} methods compared).']
  return '\n'.join(lines)


def main(argv):
  del argv
  seeds, steps = (1, 4) if FLAGS.quick else (FLAGS.seeds, FLAGS.steps)
  try:
    run_experiment(FLAGS.out, seeds=seeds, steps=steps, quick=FLAGS.quick,
                   data_dir=FLAGS.data_dir, methods=FLAGS.methods)
  except ValueError as e:
    raise app.UsageError(str(e)) from e
  print(f'Report: {os.path.join(FLAGS.out, "report", "report.md")}')


if __name__ == '__main__':
  _define_flags()
  app.run(main)
