"""Both paper settings at full size on the devices at hand, with JAX's stack alone.

  python scripts/benchmark_paper.py [--dtypes=float32,bfloat16] [--per_device_batch=2]
      [--rounds=3] [--steps=10] [--max_batch=16] [--peer] [--json=paper_bench.json] [--tiny]
      [--settings=cityscapes,ade20k]

For DeepLabv3+ / ResNet-101 at 769 x 769 (configs/cityscapes_mcce.py) and UPerNet /
ResNet-101 with its auxiliary head at 512 x 512 (configs/ade20k_mcce.py), each in float32 and
in bfloat16 compute (`config.half_precision`: activations and matmuls in bfloat16; the
parameters, BatchNorm statistics, the loss and the optimizer stay in float32), with the
paper's batch of 8 as 2 images per device (4 GPUs) unless told otherwise:

- the trainer's own step (`tce_jax.train_step`: `shard_map` over every visible device, the
  global batch = per-device batch x devices) on one fixed batch: median and p90 of
  `--rounds` x `--steps` timed steps, its compile time, XLA's FLOPs per step, the achieved
  FLOP/s and their fraction of the device's measured matmul peak in the same dtype;
- the step fed from host memory: a new batch every step, put on the devices as the training
  loop does (`jax.make_array_from_process_local_data`), against the fixed-batch step;
- peak device memory, and the largest per-device batch that fits (doubling up to
  `--max_batch` until the device runs out of memory; not searched on the CPU, which has no
  device memory to run out of);
- evaluation images/s at the paper's evaluation size (a Cityscapes frame of 1024 x 2048; an
  ADE20k image with its short side at 512, 512 x 683, the median shape), one image per device;
- with `--peer`, the PyTorch DeepLabv3+ of scripts/torch_deeplabv3plus.py (channels-last, in
  float32; it has no UPerNet) on the same batch from the same initial weights.

Nothing here imports TensorFlow, tensorflow-datasets, CLU or torch (the peer imports torch
when asked for); the configs need `ml_collections`. Images and labels are random: speed
does not depend on their content. `--tiny` shrinks both settings to seconds on a CPU (the
test suite runs it with 2 forced CPU devices and those modules unimportable).
"""

from __future__ import annotations

import json
import time

from absl import app
from absl import flags
import jax
from jax.sharding import NamedSharding, PartitionSpec as P
import jax.numpy as jnp
import numpy as np

from bench_common import (Peer, compile_with_flops, device_peak_bytes, matmul_peak,
                          time_fixed_batch)
from tce_jax import inference
from tce_jax import mesh as mesh_lib
from tce_jax import models
from tce_jax import sampling
from tce_jax import train_step
from tce_jax.configs import ade20k_mcce
from tce_jax.configs import cityscapes_mcce
from tce_jax.configs import tiny as tiny_lib
from tce_jax.data import classes

FLAGS = flags.FLAGS
flags.DEFINE_list('settings', ['cityscapes', 'ade20k'], 'Paper settings to time.')
flags.DEFINE_list('dtypes', ['float32', 'bfloat16'], 'Compute dtypes to time.')
flags.DEFINE_integer('per_device_batch', 2, 'Images per device (the paper: 8 on 4 GPUs).')
flags.DEFINE_integer('rounds', 3, 'Rounds of timed steps.')
flags.DEFINE_integer('steps', 10, 'Timed steps per round.')
flags.DEFINE_integer('warmup', 3, 'Untimed steps before each round.')
flags.DEFINE_integer('max_batch', 16, 'Largest per-device batch tried by the memory search.')
flags.DEFINE_bool('peer', False, 'Also time the PyTorch DeepLabv3+ (needs torch).')
flags.DEFINE_string('json', None, 'Also write the results to this JSON file.')
flags.DEFINE_bool('tiny', False, 'Both settings at tiny sizes (a CPU smoke run).')

# name -> (config module, classes, evaluation image (height, width)).
SETTINGS = {
    'cityscapes': (cityscapes_mcce, classes.CITYSCAPES_CLASSES, (1024, 2048)),
    'ade20k': (ade20k_mcce, classes.ADE20K_CLASSES, (512, 683)),
}


def setting_config(name: str, dtype: str, per_device_batch: int, tiny: bool):
  config = SETTINGS[name][0].get_config()
  config.half_precision = dtype == 'bfloat16'
  config.model.pretrained = 'none'  # speed does not depend on the weights
  config.sampling.name = 'uniform'
  if tiny:
    tiny_lib.apply(config)
    config.model.upernet_channels = config.model.aux_channels = 16
  config.train.batch_size = per_device_batch * jax.device_count()
  return config


def random_batch(config, num_classes: int, seed: int) -> dict[str, np.ndarray]:
  rng = np.random.default_rng(seed)
  h, w = config.input.crop_size
  b = config.train.batch_size // jax.process_count()
  return {'image': rng.integers(0, 256, (b, h, w, 3), np.uint8),
          'label': rng.integers(0, num_classes, (b, h, w)).astype(np.int32)}


class Setting:
  """One setting's model, train step, state and batches on the mesh of every device."""

  def __init__(self, config, num_classes: int):
    self.config, self.num_classes = config, num_classes
    self.mesh = mesh_lib.make_mesh()
    self.sharding = NamedSharding(self.mesh, P(mesh_lib.AXIS))
    model = models.create_model(config, num_classes, train=True, axis_name=mesh_lib.AXIS)
    tx = train_step.create_optimizer(config)
    sampler = sampling.create_sampler(config, num_classes=num_classes)
    self.step = train_step.make_train_step(config, model, tx, train_step.make_loss_fn(
        config, None), sampler, self.mesh)
    self.state = train_step.initial_train_state(config, model, tx, sampler,
                                                NamedSharding(self.mesh, P()))

  def put(self, batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
    return {k: jax.make_array_from_process_local_data(self.sharding, v)
            for k, v in batch.items()}

  def compile(self, batch) -> tuple[object, float, float]:
    """(executable, compile seconds, XLA FLOPs of the global step)."""
    return compile_with_flops(self.step, self.state, batch, num_devices=self.mesh.size)


def time_host_fed(setting: Setting, compiled, batches: list[dict], steps: int) -> np.ndarray:
  """Seconds per step with a new host batch put on the devices at each step."""
  times, state = [], setting.state
  for i in range(steps):
    start = time.perf_counter()
    state, metrics, _ = compiled(state, setting.put(batches[i % len(batches)]))
    jax.block_until_ready(metrics['loss'])
    times.append(time.perf_counter() - start)
  setting.state = state
  return np.asarray(times)


def largest_batch(name: str, dtype: str, start: int, limit: int) -> int | None:
  """The largest per-device batch (doubling from `start`, at most `limit`) whose train step
  compiles and runs; None on the CPU backend, which has no device memory limit."""
  if jax.default_backend() == 'cpu':
    return None
  fits, batch = None, start
  while batch <= limit:
    try:
      config = setting_config(name, dtype, batch, FLAGS.tiny)
      setting = Setting(config, len(SETTINGS[name][1]))
      data = setting.put(random_batch(config, setting.num_classes, 0))
      _, metrics, _ = setting.step(setting.state, data)
      jax.block_until_ready(metrics['loss'])
      fits, batch = batch, batch * 2
    except Exception as e:  # pylint: disable=broad-except  (XLA's out-of-memory error)
      if 'RESOURCE_EXHAUSTED' not in str(e) and 'out of memory' not in str(e).lower():
        raise
      break
  return fits


def eval_images_per_s(setting: Setting, shape: tuple[int, int], steps: int) -> float:
  """Inference at the evaluation size (the eval model, one image per device)."""
  config = setting.config
  model = models.create_model(config, setting.num_classes, train=False,
                              output_stride=config.model.eval_output_stride)
  variables = train_step.model_variables(setting.state)
  images = setting.put({'image': np.random.default_rng(1).integers(
      0, 256, (jax.local_device_count(), *shape, 3), np.uint8)})['image']
  predict = jax.jit(lambda v, x: jnp.argmax(inference.predict(model, v, x), -1))
  predict(variables, images).block_until_ready()
  start = time.perf_counter()
  for _ in range(steps):
    predict(variables, images).block_until_ready()
  return steps * jax.device_count() / (time.perf_counter() - start)


def measure(name: str, dtype: str, peaks: dict) -> dict:
  """Every figure of one setting in one dtype."""
  config = setting_config(name, dtype, FLAGS.per_device_batch, FLAGS.tiny)
  eval_shape = (64, 96) if FLAGS.tiny else SETTINGS[name][2]
  setting = Setting(config, len(SETTINGS[name][1]))
  batches = [random_batch(config, setting.num_classes, s) for s in range(4)]
  fixed = setting.put(batches[0])
  peer = None
  if FLAGS.peer and config.model.name == 'deeplabv3plus' and dtype == 'float32':
    peer = Peer(config, setting.num_classes, setting.state, batches[0], True)
  compiled, compile_s, flops = setting.compile(fixed)
  step_times, fed_times, peer_times = [], [], []
  for _ in range(FLAGS.rounds):
    t, setting.state = time_fixed_batch(compiled, setting.state, fixed, FLAGS.steps,
                                        FLAGS.warmup)
    step_times.append(t)
    fed_times.append(time_host_fed(setting, compiled, batches, FLAGS.steps))
    if peer is not None:
      peer_times.append(peer.time(FLAGS.steps, FLAGS.warmup))
  step = np.concatenate(step_times)
  median = float(np.median(step))
  result = {
      'setting': name, 'dtype': dtype, 'model': f'{config.model.name} / '
      f'{config.model.backbone}', 'crop': list(config.input.crop_size),
      'devices': jax.device_count(), 'per_device_batch': FLAGS.per_device_batch,
      'step_ms_median': 1e3 * median, 'step_ms_p90': 1e3 * float(np.percentile(step, 90)),
      'compile_s': compile_s, 'flops_per_step': flops, 'achieved_flops_per_s': flops / median,
      'fraction_of_peak': flops / median / (peaks[dtype] * jax.device_count()),
      'host_fed_over_step': float(np.median(np.concatenate(fed_times))) / median,
      'peak_device_bytes': device_peak_bytes(),
      'largest_per_device_batch': largest_batch(name, dtype, FLAGS.per_device_batch,
                                                FLAGS.max_batch),
      'eval_shape': list(eval_shape),
      'eval_images_per_s': eval_images_per_s(setting, eval_shape, FLAGS.steps)}
  if peer is not None:
    result['peer_ms_median'] = 1e3 * float(np.median(np.concatenate(peer_times)))
    result['ours_over_peer'] = result['step_ms_median'] / result['peer_ms_median']
  return result


def table(results: dict) -> str:
  cpu = jax.default_backend() == 'cpu'
  lines = [f"{results['device']} x {results['devices']}; matmul peak per device: "
           + ', '.join(f'{d} {p / 1e12:.2f} TFLOP/s' for d, p in results['peaks'].items()), '',
           '| setting | dtype | per-device batch | step ms (median / p90) | compile s | '
           'TFLOP / step | TFLOP/s | of peak | host-fed / fixed | peak device memory | '
           'largest per-device batch | eval images/s | PyTorch ms (ours / peer) |',
           '|---|---|---|---|---|---|---|---|---|---|---|---|---|']
  for r in results['runs']:
    memory = ('n/a (CPU)' if r['peak_device_bytes'] is None and cpu else
              f"{r['peak_device_bytes'] / 2**30:.1f} GiB" if r['peak_device_bytes'] else 'n/a')
    largest = ('not searched (CPU)' if r['largest_per_device_batch'] is None and cpu
               else str(r['largest_per_device_batch']))
    peer = (f"{r['peer_ms_median']:.0f} ({r['ours_over_peer']:.2f})" if 'peer_ms_median' in r
            else '-')
    lines.append(
        f"| {r['setting']} ({r['model']}, {r['crop'][0]} x {r['crop'][1]}) | {r['dtype']} | "
        f"{r['per_device_batch']} | {r['step_ms_median']:.1f} / {r['step_ms_p90']:.1f} | "
        f"{r['compile_s']:.1f} | {r['flops_per_step'] / 1e12:.3f} | "
        f"{r['achieved_flops_per_s'] / 1e12:.3f} | {100 * r['fraction_of_peak']:.0f}% | "
        f"{r['host_fed_over_step']:.2f} | {memory} | {largest} | "
        f"{r['eval_images_per_s']:.2f} | {peer} |")
  return '\n'.join(lines)


def main(argv):
  del argv
  device = jax.devices()[0]
  n = 256 if FLAGS.tiny else (2048 if device.platform == 'cpu' else 8192)
  peaks = {d: matmul_peak(n, dtype=jnp.dtype(d))['flops_per_s'] for d in FLAGS.dtypes}
  results = {'device': device.device_kind, 'platform': device.platform,
             'devices': jax.device_count(), 'jax': jax.__version__, 'peaks': peaks,
             'runs': [measure(name, dtype, peaks) for name in FLAGS.settings
                      for dtype in FLAGS.dtypes]}
  print(table(results))
  if FLAGS.json:
    with open(FLAGS.json, 'w') as f:
      json.dump(results, f, indent=1)


if __name__ == '__main__':
  app.run(main)
