"""Measurements both benchmark scripts make (scripts/benchmark.py, scripts/benchmark_paper.py):
the matmul peak, timed steps on a fixed batch, peak memory, and the PyTorch peer. JAX only;
torch is imported when the peer is asked for."""

from __future__ import annotations

import functools
import resource
import time

import jax
import jax.numpy as jnp
import numpy as np

from tce_jax.data import imagenet


def matmul_peak(n: int, reps: int = 10, dtype=jnp.float32) -> dict[str, float]:
  """FLOP/s of an n x n matmul in `dtype` on the default device (2 n^3 FLOPs), median of
  reps: the peak the achieved FLOP/s of a step are compared with."""
  a, b = (jax.random.normal(jax.random.PRNGKey(i), (n, n), dtype) for i in range(2))
  dot = jax.jit(jnp.dot)
  dot(a, b).block_until_ready()
  times = []
  for _ in range(reps):
    start = time.perf_counter()
    dot(a, b).block_until_ready()
    times.append(time.perf_counter() - start)
  return {'size': n, 'median_ms': 1e3 * float(np.median(times)),
          'flops_per_s': 2 * n ** 3 / float(np.median(times))}


def compile_with_flops(jitted, *args, num_devices: int) -> tuple[object, float, float]:
  """(executable, compile seconds, XLA FLOPs of the global step): the SPMD program's cost is
  one device's share, times `num_devices`."""
  start = time.perf_counter()
  compiled = jitted.lower(*args).compile()
  seconds = time.perf_counter() - start
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return compiled, seconds, float(cost['flops']) * num_devices


def time_fixed_batch(step, state, batch, num_steps: int, warmup: int):
  """Seconds per step on one batch already on the device; returns (times, last state)."""
  times = []
  for i in range(warmup + num_steps):
    start = time.perf_counter()
    state, metrics, _ = step(state, batch)
    jax.block_until_ready(metrics['loss'])
    if i >= warmup:
      times.append(time.perf_counter() - start)
  return np.asarray(times), state


def host_peak_bytes() -> int:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def device_peak_bytes() -> int | None:
  stats = jax.local_devices()[0].memory_stats()  # None on the CPU backend
  return int(stats['peak_bytes_in_use']) if stats and 'peak_bytes_in_use' in stats else None


class Peer:
  """The PyTorch DeepLabv3+ on the same batch, starting from our initial weights."""

  def __init__(self, config, num_classes: int, state, batch, channels_last: bool):
    import torch  # pylint: disable=g-import-not-at-top
    import torch_deeplabv3plus as peer  # pylint: disable=g-import-not-at-top
    model = peer.from_config(config, num_classes)
    model.load_state_dict(peer.state_dict_from_flax(jax.device_get(
        {'params': state.params, 'batch_stats': state.batch_stats})))
    images = np.asarray(imagenet.normalize(jnp.asarray(batch['image'])))
    self.images = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())
    self.labels = torch.from_numpy(np.asarray(batch['label']).astype(np.int64))
    if channels_last:
      model = model.to(memory_format=torch.channels_last)
      self.images = self.images.contiguous(memory_format=torch.channels_last)
    step = peer.make_train_step(model, learning_rate=config.train.learning_rate,
                                momentum=config.train.momentum,
                                weight_decay=config.train.weight_decay,
                                optimizer=config.train.optimizer)
    self._time = functools.partial(peer.time_train_steps, step, self.images, self.labels)
    self.info = {'framework': f'torch {torch.__version__}', 'threads': torch.get_num_threads(),
                 'channels_last': channels_last}

  def time(self, num_steps: int, warmup: int) -> np.ndarray:
    """Seconds per peer step on the batch, after `warmup` steps."""
    return self._time(num_steps, warmup)
