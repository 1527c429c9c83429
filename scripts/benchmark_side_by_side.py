"""Two training runs on this machine: one after the other (each using every core), or side by
side (each pinned to its own cores)? Times a pair of real runs of a config both ways.

  python scripts/benchmark_side_by_side.py [--config=configs/camvid_mcce.py] [--steps=300]
      [--data_dir=DIR] [--out=/tmp/side_by_side]

Each run is the real command (`python -m tce_jax.main`) for `--steps` steps with the
evaluation at the end, seed 0 and 1. Printed per way: the pair's wall time (start of the first
process to the end of the last; compilation and the final evaluation included) and each run's
steady training rate, measured from the wall times TensorBoard records for the loss between
the first logged step after `--warmup` and the last one (compilation and evaluation excluded),
and the pair's rate (sum for side by side; for one after the other, the rate a run has alone).
A study of many full-length runs gains what the steady rates say; the wall times add the
fixed costs of these short runs.

Time it on a quiet machine: pause anything else (kill -STOP) while it runs.
"""

import glob
import os
import subprocess
import sys
import time

from absl import app
from absl import flags
import numpy as np

FLAGS = flags.FLAGS
flags.DEFINE_string('config', 'configs/camvid_mcce.py', 'Config file of the runs.')
flags.DEFINE_integer('steps', 300, 'Training steps of each run.')
flags.DEFINE_integer('warmup', 100, 'Steps left out of the steady rate (compilation, caches).')
flags.DEFINE_string('data_dir', None, 'tfds data_dir of the dataset.')
flags.DEFINE_string('out', '/tmp/side_by_side', 'Folder of the runs (must not exist).')


def _command(workdir: str, seed: int) -> list[str]:
  steps = FLAGS.steps
  command = [sys.executable, '-m', 'tce_jax.main', f'--config={FLAGS.config}',
             f'--workdir={workdir}', f'--config.seed={seed}',
             f'--config.train.num_steps={steps}', f'--config.train.eval_every={steps}',
             f'--config.train.checkpoint_every={steps}', '--config.train.log_every=50']
  if FLAGS.data_dir:
    command.append(f'--config.dataset.data_dir={FLAGS.data_dir}')
  return command


def _start(workdir: str, seed: int, cores: set[int] | None) -> subprocess.Popen:
  log = open(workdir + '.log', 'w')  # pylint: disable=consider-using-with
  preexec = (lambda: os.sched_setaffinity(0, cores)) if cores else None
  return subprocess.Popen(_command(workdir, seed), stdout=log, stderr=subprocess.STDOUT,
                          preexec_fn=preexec)


def _wait(process: subprocess.Popen, workdir: str) -> None:
  if process.wait() != 0:
    raise RuntimeError(f'{workdir} failed (exit {process.returncode}); see {workdir}.log')


def steady_rate(workdir: str) -> float:
  """Steps/s between the first logged loss after --warmup and the last one."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  times = {}
  for path in glob.glob(os.path.join(workdir, 'events.out.tfevents.*')):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        if value.tag == 'loss/train':
          times[event.step] = event.wall_time
  steps = sorted(s for s in times if s >= FLAGS.warmup)
  if len(steps) < 2:
    raise RuntimeError(f'{workdir}: fewer than two logged steps after the warmup')
  return (steps[-1] - steps[0]) / (times[steps[-1]] - times[steps[0]])


def main(argv):
  del argv
  os.makedirs(FLAGS.out)
  cores = sorted(os.sched_getaffinity(0))
  halves = [set(cores[:len(cores) // 2]), set(cores[len(cores) // 2:])]
  rows = []
  start = time.perf_counter()
  runs = [os.path.join(FLAGS.out, f'after_{s}') for s in (0, 1)]
  for seed, workdir in enumerate(runs):
    _wait(_start(workdir, seed, None), workdir)
  wall = time.perf_counter() - start
  rates = [steady_rate(w) for w in runs]
  rows.append(('one after the other', wall, rates, float(np.mean(rates))))
  start = time.perf_counter()
  runs = [os.path.join(FLAGS.out, f'side_{s}') for s in (0, 1)]
  processes = [_start(w, s, halves[s]) for s, w in enumerate(runs)]
  for process, workdir in zip(processes, runs):
    _wait(process, workdir)
  wall = time.perf_counter() - start
  rates = [steady_rate(w) for w in runs]
  rows.append(('side by side, cores ' + ' and '.join(','.join(map(str, h)) for h in halves),
               wall, rates, float(sum(rates))))
  print(f'\n{FLAGS.config}, 2 runs of {FLAGS.steps} steps, {len(cores)} cores\n')
  print('| way | pair wall (s) | steady steps/s of each run | pair steps/s | ratio |')
  print('|---|---|---|---|---|')
  for way, wall, rates, pair in rows:
    print(f'| {way} | {wall:.0f} | {" / ".join(f"{r:.2f}" for r in rates)} | {pair:.2f} | '
          f'{pair / rows[0][3]:.2f} |')


if __name__ == '__main__':
  app.run(main)
