"""Speed of a config on this machine: one table (and JSON) of what a training run costs.

  python scripts/benchmark.py --config=configs/synthetic_mcce.py [--json=bench.json]
  python scripts/benchmark.py --quick          # smoke version (tiny model and data)

Measured in one process, the timed parts alternating in rounds so machine noise hits all:
- train step on one fixed batch (median and p90 of N after warm-up, `block_until_ready`),
  its compile time, XLA's FLOPs of the step and the achieved FLOP/s next to the measured
  float32 matmul peak of the machine (a large `jnp.dot`);
- the training loop as it runs (input pipeline included) with sampling=uniform and =tce,
  the training records in memory as from the second epoch on (`input.memory_cache_gb`), and
  with uniform sampling decoding every record at each read: each loop's median against the
  fixed-batch step's, and the sampler's cost as a ratio;
- the input pipeline alone (images/s with the config's loader threads);
- evaluation (images/s over the eval split, confusion-matrix update included);
- peak host memory (and peak device memory where the backend reports it);
- the peer: the same DeepLabv3+ and batch in plain PyTorch (scripts/torch_deeplabv3plus.py,
  pixel cross-entropy, the config's update rule: SGD momentum or AdamW), our step time / peer
  step time.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import time

from absl import app
from absl import flags
import jax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from ml_collections import config_flags
import numpy as np

from bench_common import (Peer, compile_with_flops, device_peak_bytes, host_peak_bytes,
                          matmul_peak, time_fixed_batch)
import benchmark_sampling  # a sibling script (scripts/ is on the path when run as a script)
from tce_jax import evaluator as evaluator_lib
from tce_jax import records
from tce_jax import train
from tce_jax import train_step
from tce_jax.configs import tiny
from tce_jax.data import pipeline

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', 'configs/synthetic_mcce.py', 'Config to time.')
flags.DEFINE_integer('steps', 30, 'Timed steps per round, for each timed part.')
flags.DEFINE_integer('warmup', 5, 'Untimed steps before each timed part.')
flags.DEFINE_integer('rounds', 3, 'Rounds alternating the timed parts.')
flags.DEFINE_integer('input_batches', 20, 'Batches timed for the input pipeline alone.')
flags.DEFINE_integer('eval_images', 0, 'Evaluate on the first N images of the eval split '
                     '(0: all of it).')
flags.DEFINE_integer('matmul_size', 0, 'n of the n x n matmul of the peak (0: 2048 on CPU, '
                     '8192 on an accelerator).')
flags.DEFINE_bool('peer', True, 'Time the PyTorch peer (needs torch; DeepLabv3+ configs).')
flags.DEFINE_bool('peer_channels_last', True, 'Run the peer in channels-last memory layout '
                  '(the faster one for torch on CPU).')
flags.DEFINE_string('json', None, 'Also write the results to this JSON file.')
flags.DEFINE_bool('quick', False, 'Smoke version: tiny model and data, 1 round of 3 steps.')
flags.DEFINE_string('data_dir', None, 'tfds data_dir (default: the config\'s).')


def compile_step(experiment: train.Experiment, state, batch):
  """(compiled train step, compile seconds, XLA FLOPs of the whole step over all devices)."""
  return compile_with_flops(experiment.train_step, state, batch,
                            num_devices=experiment.mesh.size)


def time_input(experiment: train.Experiment, num_batches: int) -> dict[str, float]:
  """Images/s of the training input pipeline alone (uniform sampling, config's threads)."""
  threads = experiment.config.input.num_threads
  prefetcher = pipeline.Prefetcher(experiment.train_batches, threads)
  try:
    ahead = 2 * threads
    for s in range(ahead):
      prefetcher.submit(s)
    prefetcher.get(0)  # warm-up (first reads open files)
    prefetcher.submit(ahead)
    start = time.perf_counter()
    for s in range(1, num_batches + 1):
      prefetcher.get(s)
      prefetcher.submit(s + ahead)
    seconds = time.perf_counter() - start
  finally:
    prefetcher.close()
  images = num_batches * experiment.train_batches.local_batch_size
  return {'threads': threads, 'images_per_s': images / seconds}


def time_eval(experiment: train.Experiment, state, num_images: int = 0) -> dict[str, float]:
  """Images/s of an evaluation pass over the eval split (or its first `num_images`), after
  one untimed pass that compiles."""
  source = experiment.eval_source
  source = source.head(num_images) if num_images else source
  evaluator = evaluator_lib.Evaluator(experiment.config, source,
                                      experiment.spec.class_names, experiment.mesh)
  variables = train_step.model_variables(state)
  evaluator(variables)
  start = time.perf_counter()
  evaluator(variables)
  seconds = time.perf_counter() - start
  return {'images': len(source), 'batch_size': experiment.config.input.eval_batch_size,
          'images_per_s': len(source) / seconds}


def run_benchmark(config, *, steps: int, warmup: int, rounds: int, input_batches: int,
                  eval_images: int, matmul_size: int, with_peer: bool,
                  peer_channels_last: bool) -> dict:
  """Every measurement of the module docstring, as a dict (the JSON)."""
  batch_size = config.train.batch_size
  device = jax.devices()[0]
  results = {
      'config': config.name, 'model': f'{config.model.name} / {config.model.backbone} '
      f'(width {config.model.width}, OS {config.model.output_stride})',
      'batch_size': batch_size, 'crop_size': list(config.input.crop_size),
      'machine': {'platform': device.platform, 'device_kind': device.device_kind,
                  'devices': jax.device_count(), 'cpu_cores': os.cpu_count(),
                  'processor': platform.processor() or platform.machine(),
                  'jax': jax.__version__, 'steps': steps, 'warmup': warmup, 'rounds': rounds}}

  n = matmul_size or (2048 if device.platform == 'cpu' else 8192)
  results['matmul_peak'] = matmul_peak(n)

  experiments = benchmark_sampling.sampling_experiments(config, warmup + steps)
  uniform = experiments['uniform']
  state = uniform.initial_state()
  batch = jax.tree.map(lambda x: jax.make_array_from_process_local_data(
      NamedSharding(uniform.mesh, P(train_step.AXIS)), x), uniform.train_batches(0))
  compiled, compile_s, flops = compile_step(uniform, state, batch)
  # The training loop of this config reuses the executable (a jit call would compile again).
  experiments['uniform'] = dataclasses.replace(uniform, train_step=compiled)
  if config.input.memory_cache_gb > 0:  # the same loop decoding every record at every read
    uncached = config.copy_and_resolve_references()
    uncached.sampling.name = 'uniform'
    uncached.train.num_steps = warmup + steps
    uncached.input.memory_cache_gb = 0.0
    experiments['uniform_uncached'] = dataclasses.replace(train.build_experiment(uncached),
                                                          train_step=compiled)
  peer = None
  if with_peer:  # built from the initial weights, before the state is donated
    peer = Peer(config, uniform.spec.num_classes, state, batch, peer_channels_last)
  results['input'] = time_input(uniform, input_batches)
  _, state = time_fixed_batch(compiled, state, batch, 0, warmup)  # warm-up
  results['eval'] = time_eval(uniform, state, eval_images)
  results['memory'] = {'peak_host_bytes': host_peak_bytes(),
                       'peak_device_bytes': device_peak_bytes()}  # before the peer runs

  times = {'step': [], 'peer': [], **{name: [] for name in experiments}}
  for _ in range(rounds):
    t, state = time_fixed_batch(compiled, state, batch, steps, warmup)
    times['step'].append(t)
    for sampling, built in experiments.items():
      times[sampling].append(benchmark_sampling.time_steps(built, steps, warmup))
    if peer is not None:
      times['peer'].append(peer.time(steps, warmup))

  step = benchmark_sampling.step_stats(np.concatenate(times['step']), batch_size)
  step.update(compile_s=compile_s, flops=flops,
              achieved_flops_per_s=flops / (step['median_ms'] / 1e3))
  step['fraction_of_matmul_peak'] = (step['achieved_flops_per_s'] /
                                     results['matmul_peak']['flops_per_s'])
  results['train_step'] = step
  results['sampling'] = {s: benchmark_sampling.step_stats(np.concatenate(times[s]), batch_size)
                         for s in experiments}
  for s in experiments:  # the loop against the fixed-batch step, medians of the same rounds
    results['sampling'][s]['over_step'] = results['sampling'][s]['median_ms'] / step['median_ms']
  results['sampling']['tce_over_uniform'] = (results['sampling']['tce']['median_ms'] /
                                             results['sampling']['uniform']['median_ms'])
  if peer is not None:
    results['peer'] = {**peer.info, **benchmark_sampling.step_stats(
        np.concatenate(times['peer']), batch_size)}
    results['peer']['ours_over_peer'] = step['median_ms'] / results['peer']['median_ms']
  return results


def table(r: dict) -> str:
  """The results as a markdown table."""
  m, s, pk = r['machine'], r['train_step'], r['matmul_peak']
  rows = [
      ('train step, fixed batch (median / p90)',
       f"{s['median_ms']:.1f} / {s['p90_ms']:.1f} ms, {s['images_per_s']:.1f} images/s"),
      ('compile time of the train step', f"{s['compile_s']:.1f} s"),
      ('FLOPs per train step (XLA cost analysis)', f"{s['flops'] / 1e9:.2f} GFLOP"),
      ('achieved FLOP/s', f"{s['achieved_flops_per_s'] / 1e9:.1f} GFLOP/s"),
      (f"float32 matmul peak ({pk['size']}^2 jnp.dot)", f"{pk['flops_per_s'] / 1e9:.1f} GFLOP/s"),
      ('achieved / matmul peak', f"{100 * s['fraction_of_matmul_peak']:.1f}%"),
  ]
  for name, x in r['sampling'].items():
    if not isinstance(x, dict):
      continue
    what = (f'sampling={name}' if name != 'uniform_uncached' else
            'sampling=uniform, input.memory_cache_gb=0')
    ratio = f", loop / step {x['over_step']:.3f}" if 'over_step' in x else ''
    rows.append((f'training loop, {what} (median / p90)',
                 f"{x['median_ms']:.1f} / {x['p90_ms']:.1f} ms, {x['images_per_s']:.1f} "
                 f'images/s{ratio}'))
  rows.append(('tce / uniform step time', f"{r['sampling']['tce_over_uniform']:.3f}"))
  rows.append((f"input pipeline alone ({r['input']['threads']} threads)",
               f"{r['input']['images_per_s']:.1f} images/s"))
  rows.append((f"evaluation ({r['eval']['images']} images, batch {r['eval']['batch_size']})",
               f"{r['eval']['images_per_s']:.1f} images/s"))
  rows.append(('peak host memory (RSS)', f"{r['memory']['peak_host_bytes'] / 2 ** 30:.2f} GiB"))
  if r['memory']['peak_device_bytes'] is not None:
    rows.append(('peak device memory',
                 f"{r['memory']['peak_device_bytes'] / 2 ** 30:.2f} GiB"))
  if 'peer' in r:
    p = r['peer']
    layout = ', channels-last' if p['channels_last'] else ''
    rows.append((f"peer: {p['framework']} ({p['threads']} threads{layout}) (median / p90)",
                 f"{p['median_ms']:.1f} / {p['p90_ms']:.1f} ms, {p['images_per_s']:.1f} "
                 'images/s'))
    rows.append(('ours / peer step time', f"{p['ours_over_peer']:.3f}"))
  head = (f"{r['config']}: {r['model']}, batch {r['batch_size']}, crop "
          f"{tuple(r['crop_size'])}; {m['devices']} x {m['platform']} ({m['device_kind']}), "
          f"{m['cpu_cores']} CPU cores, jax {m['jax']}; {m['rounds']} rounds x {m['steps']} "
          f"steps after {m['warmup']} warm-up")
  lines = [head, '', '| measurement | value |', '|---|---|']
  lines += [f'| {k} | {v} |' for k, v in rows]
  return '\n'.join(lines)


def main(argv):
  del argv
  config = FLAGS.config.copy_and_resolve_references()
  steps, warmup, rounds, input_batches = (FLAGS.steps, FLAGS.warmup, FLAGS.rounds,
                                          FLAGS.input_batches)
  matmul_size = FLAGS.matmul_size
  if FLAGS.quick:
    config = tiny.apply(config)
    steps, warmup, rounds, input_batches, matmul_size = 3, 1, 1, 3, 256
  if FLAGS.data_dir:
    config.dataset.data_dir = FLAGS.data_dir
  results = run_benchmark(config, steps=steps, warmup=warmup, rounds=rounds,
                          input_batches=input_batches, eval_images=FLAGS.eval_images,
                          matmul_size=matmul_size,
                          with_peer=FLAGS.peer, peer_channels_last=FLAGS.peer_channels_last)
  print('\n' + table(results))
  if FLAGS.json:
    records.write_json(FLAGS.json, results)


if __name__ == '__main__':
  app.run(main)
