"""What Stochastic TCE costs: train-step time with sampling=tce vs sampling=uniform.

Same config, model and batch; the two samplings run alternately in one process (rounds), so
machine noise hits both alike. Each step is timed from one completed step to the next (the
host waits for the device each step), after warm-up steps that include compilation; the
time therefore includes any wait for the input pipeline.

  python scripts/benchmark_sampling.py --config=configs/synthetic_tce.py --steps=100
"""

import time

from absl import app
from absl import flags
import jax
from ml_collections import config_flags
import numpy as np

from tce_jax import records
from tce_jax import train

FLAGS = flags.FLAGS


def _define_flags():
  """Only when run as a script: scripts/benchmark.py imports `time_steps` from here."""
  config_flags.DEFINE_config_file('config', 'configs/synthetic_tce.py', 'Config to time.')
  flags.DEFINE_integer('steps', 100, 'Timed steps per round and sampling.')
  flags.DEFINE_integer('warmup', 10, 'Untimed steps before (compilation, pipeline fill).')
  flags.DEFINE_integer('rounds', 3, 'Alternations of uniform / tce.')
  flags.DEFINE_string('json', None, 'Also write the results to this JSON file.')


def time_steps(experiment: train.Experiment, num_steps: int, warmup: int) -> np.ndarray:
  """Seconds between consecutive completed steps, after `warmup` steps."""
  state = experiment.initial_state()
  times, last = [], None
  for done, state, metrics in train.training_steps(experiment, state):
    jax.block_until_ready(metrics['loss'])
    now = time.perf_counter()
    if done > warmup:
      times.append(now - last)
    last = now
    if done >= warmup + num_steps:
      break
  return np.asarray(times)


def sampling_experiments(config, num_steps: int) -> dict[str, train.Experiment]:
  """`config` built with sampling=uniform and with sampling=tce, for `num_steps` steps, their
  training records read once (`warm_memory_cache`)."""
  experiments = {}
  for sampling in ('uniform', 'tce'):
    c = config.copy_and_resolve_references()
    c.sampling.name = sampling
    c.train.num_steps = num_steps
    experiments[sampling] = train.build_experiment(c)
    warm_memory_cache(experiments[sampling].train_source)
  return experiments


def warm_memory_cache(source) -> None:
  """Reads every record once, so that loops are timed in their steady state: with
  `config.input.memory_cache_gb` holding the split, from the first epoch on every read is a
  memory hit."""
  for i in range(len(source)):
    source[i]


def step_stats(times: np.ndarray, batch_size: int) -> dict[str, float]:
  """Median and p90 step time (ms) and images/s at the median."""
  median = float(np.median(times))
  return {'median_ms': 1e3 * median, 'p90_ms': 1e3 * float(np.percentile(times, 90)),
          'images_per_s': batch_size / median}


def main(argv):
  del argv
  experiments = sampling_experiments(FLAGS.config, FLAGS.warmup + FLAGS.steps)
  times = {name: [] for name in experiments}
  for _ in range(FLAGS.rounds):
    for name, experiment in experiments.items():
      times[name].append(time_steps(experiment, FLAGS.steps, FLAGS.warmup))
  batch = FLAGS.config.train.batch_size
  rows = {}
  for name, runs in times.items():
    rows[name] = {**step_stats(np.concatenate(runs), batch),
                  'round_medians_ms': [1e3 * float(np.median(r)) for r in runs]}
  ratio = rows['tce']['median_ms'] / rows['uniform']['median_ms']
  crop = tuple(FLAGS.config.input.crop_size)
  print(f'\nconfig: {FLAGS.config.name}, batch {batch}, crop {crop}, '
        f'{jax.device_count()} x {jax.devices()[0].platform}, {FLAGS.rounds} rounds x '
        f'{FLAGS.steps} steps')
  print('| sampling | median step (ms) | p90 (ms) | per-round medians (ms) | images/s |')
  print('|---|---|---|---|---|')
  for name, r in rows.items():
    rounds = ', '.join(f'{m:.1f}' for m in r['round_medians_ms'])
    print(f"| {name} | {r['median_ms']:.1f} | {r['p90_ms']:.1f} | {rounds} | "
          f"{r['images_per_s']:.1f} |")
  print(f'\ntce / uniform step time: {ratio:.3f} (overhead {100 * (ratio - 1):+.1f}%)')
  if FLAGS.json:
    records.write_json(FLAGS.json, {'rows': rows, 'ratio': ratio})


if __name__ == '__main__':
  _define_flags()
  app.run(main)
