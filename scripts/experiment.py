"""Runs a study (tce_jax/studies/<name>.py): every method x seeds, then the report.

  python scripts/experiment.py [--study=synthetic] --out=runs/experiment [--seeds=3]
      [--sweep_seeds=3] [--steps=N] [--quick] [--methods=mcce,tce_t1,...]
      [--records=docs/results/runs] [--notrain] [--report_dir=docs/results] [--jobs=2]

The study is data (its methods, families, ablations, qualitative figure and profile:
tce_jax/studies/synthetic.py for the synthetic one); the runner is tce_jax.studies.runner.
What follows describes the synthetic study.

Methods (identical model, data, steps and schedule; `METHODS` below, docs/method.md): the
paper's (MCCE, Focal with alpha = inverse pixel frequency, Stochastic TCE with t = 0.1 and
t = 1, the direct image- and class-level tilted losses at t = 1), the t = 0 ablation
(class-uniform sampling), and the added ones: Stochastic TCE with the class signal, with
class-aware crops, with TERM's class-size prior; rare class sampling (DAFormer); Focal
without alpha, CE with sqrt-inverse-frequency weights, OHEM and the Recall loss; and the t
sweep (`SWEEP`, `--sweep_seeds` seeds each). Runs go seed by seed (every method's seed 0
first). Each run lives in OUT/<method>_s<seed>; finished runs are skipped and interrupted
ones resume from their checkpoints, so the command can be started again after any
interruption. With `--records`, each finished run's config.json and eval/*.json (a few KB)
are copied to RECORDS/<method>_s<seed>/ as it finishes, and a run found there counts as
finished (its recorded config must train what this version would), so a study committed run
by run resumes on any machine, and its report rebuilds from the records alone. Every run
trains the benchmark of configs/synthetic_mcce.py (docs/synthetic_dataset.md) for its
train.num_steps unless `--steps` says otherwise. At the end it writes the report (MCCE as
the reference) into `--report_dir` (default OUT/report; with `--notrain` only the finished or
recorded runs are reported, nothing is trained): the report of tce_jax.report with its Pareto
figure, and summary.md: per family (the 5-seed methods, the t sweep) each method's headline
statistics (mean +- std over seeds) with the difference to MCCE and its 95% confidence
interval, Welch's test with Holm's correction over the family's table, and the classes better
/ worse than MCCE after Holm over the classes; then the ablations (`ABLATIONS`: pairs of
methods that differ in the signal, the tilt, the size prior or the crop alone), each pair's
difference with the same statistics and Holm over each ablation family; and sweep.png, the
headline statistics against t (`SWEEP_SERIES`). `--quick` is a smoke
version (tiny model and data, 1 seed, a few steps) for the tests.
"""

import os
import sys

from absl import app
from absl import flags

from tce_jax import preemption
from tce_jax import studies
from tce_jax.studies import runner

FLAGS = flags.FLAGS


def _define_flags():
  """Only when run as a script (the tests import this module)."""
  flags.DEFINE_string('study', 'synthetic', 'The study (a module of tce_jax/studies: '
                      f'{", ".join(studies.available())}).')
  flags.DEFINE_string('out', 'runs/experiment', 'Folder of the runs and the report.')
  flags.DEFINE_integer('seeds', 3, 'Seeds per method.')
  flags.DEFINE_integer('steps', None, 'Training steps of every run (default: the benchmark '
                       "config's train.num_steps).")
  flags.DEFINE_bool('quick', False, 'Smoke version: tiny model and data, 1 seed, 4 steps.')
  flags.DEFINE_string('data_dir', None, 'tfds data_dir (default: ~/tensorflow_datasets).')
  flags.DEFINE_string('records', None, 'Folder of committed run records, e.g. '
                      'docs/results/runs: runs recorded there are not trained again, and each '
                      'run finished here is recorded there.')
  flags.DEFINE_bool('train', True, 'Train the runs not finished yet; with --notrain, report '
                    'on the finished (or recorded) runs only.')
  flags.DEFINE_string('report_dir', None, 'Folder of the report (default: OUT/report), e.g. '
                      'docs/results.')
  flags.DEFINE_integer('sweep_seeds', 3, 'Seeds of each t-sweep method, at most '
                       '--seeds.')
  flags.DEFINE_integer('jobs', 1, 'Runs trained at once, each in its own process pinned to '
                       'its share of the cores (2 on a 2-core machine: docs/performance.md).')
  flags.DEFINE_list('methods', None, 'Methods to run (names of the study\'s methods; default: '
                    'all). The first is the reference of the report.')


def main(argv):
  del argv
  seeds, steps = (1, 4) if FLAGS.quick else (FLAGS.seeds, FLAGS.steps)
  try:
    runner.run_study(studies.load(FLAGS.study), FLAGS.out, seeds=seeds, steps=steps,
                     quick=FLAGS.quick, data_dir=FLAGS.data_dir, methods=FLAGS.methods,
                     records=FLAGS.records, sweep_seeds=FLAGS.sweep_seeds,
                     train_missing=FLAGS.train, report_dir=FLAGS.report_dir,
                     jobs=FLAGS.jobs)
  except ValueError as e:
    raise app.UsageError(str(e)) from e
  except preemption.SignalStop as e:  # the runner's, or a run's in this process
    print(e, file=sys.stderr)
    sys.exit(e.exit_code)
  except RuntimeError as e:
    sys.exit(f'Error: {e}')
  report_dir = FLAGS.report_dir or os.path.join(FLAGS.out, 'report')
  print(f'Report: {os.path.join(report_dir, "report.md")}')


if __name__ == '__main__':
  _define_flags()
  app.run(main)
