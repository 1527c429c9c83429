"""Does a hand-written kernel gradient beat XLA:CPU's for our convolutions? A measurement.

  python scripts/benchmark_conv_grad.py --config=configs/synthetic_mcce.py [--rounds=4]
                                       [--per_tap]

XLA:CPU computes a convolution's kernel gradient as another convolution in which the batch is
the contracted dimension, and lays its operands out for that with transposes
(`transpose_copy_fusion`, ~14% of the synthetic_mcce step: docs/performance.md). The
alternative here: the kernel gradient as one matmul of the shifted input windows ("im2col":
for each kernel tap, the strided slice of the padded input it multiplies) with the output
gradient, contracted over batch and space, while the forward pass and the input gradient
stay XLA's. Installed by swapping the `lax.conv_general_dilated` that flax's nn.Conv calls
while the step is traced, for convolutions with NHWC inputs, HWIO kernels, no input dilation
and one feature group (all of this project's).

Prints, for the config's train step on one fixed batch, the median step time of XLA's
gradient and of the im2col one, measured in alternating rounds in one process, their ratio,
and how far the im2col step's parameters after one step are from XLA's (float32: the sums
run in another order, so equal to rounding, not bit for bit).
"""

from __future__ import annotations

import contextlib
import functools
import time

from absl import app
from absl import flags
import flax.linen.linear
import jax
from jax import lax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import jax.numpy as jnp
from ml_collections import config_flags
import numpy as np

from tce_jax import train
from tce_jax import train_step

FLAGS = flags.FLAGS


def _define_flags():
  """Only when run as a script (the tests import this module)."""
  config_flags.DEFINE_config_file('config', 'configs/synthetic_mcce.py')
  flags.DEFINE_integer('rounds', 4, 'Alternating rounds of timed steps.')
  flags.DEFINE_integer('steps', 20, 'Timed steps per round and variant.')
  flags.DEFINE_bool('per_tap', False, 'One matmul per kernel tap instead of one matmul of the '
                    'stacked windows.')

_XLA_CONV = lax.conv_general_dilated
_NHWC = ('NHWC', 'HWIO', 'NHWC')


def kernel_gradient(x: jax.Array, g: jax.Array, kernel_hw: tuple[int, int],
                    strides: tuple[int, int], padding: tuple[tuple[int, int], ...],
                    dilation: tuple[int, int], per_tap: bool = False) -> jax.Array:
  """d(conv(x, w)) / dw contracted with the output gradient g: [kh, kw, C_in, C_out].

  Output pixel (h, w) of tap (i, j) reads the padded input at (h s_h + i d_h, w s_w + j d_w),
  so each tap's input is a strided slice of the padded input, of the output's spatial size;
  stacked over taps they form the [N Ho Wo, taps C_in] window matrix, and the gradient is its
  transpose times g as [N Ho Wo, C_out] (`per_tap`: one matmul per tap, no window matrix)."""
  (kh, kw), (sh, sw), (dh, dw) = kernel_hw, strides, dilation
  n, ho, wo, c_out = g.shape
  xp = jnp.pad(x, ((0, 0), padding[0], padding[1], (0, 0)))
  taps = [lax.slice(xp, (0, i * dh, j * dw, 0),
                    (n, i * dh + sh * (ho - 1) + 1, j * dw + sw * (wo - 1) + 1, x.shape[3]),
                    (1, sh, sw, 1)) for i in range(kh) for j in range(kw)]
  g = g.reshape(n * ho * wo, c_out)
  if per_tap:
    grads = [lax.dot_general(t.reshape(n * ho * wo, x.shape[3]), g, (((0,), (0,)), ((), ())))
             for t in taps]
    return jnp.stack(grads).reshape(kh, kw, x.shape[3], c_out)
  windows = jnp.stack(taps, axis=3).reshape(n * ho * wo, kh * kw * x.shape[3])
  grad = lax.dot_general(windows, g, (((0,), (0,)), ((), ())))
  return grad.reshape(kh, kw, x.shape[3], c_out)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5))
def _conv(x, w, strides, padding, dilation, per_tap):
  del per_tap
  return _XLA_CONV(x, w, strides, padding, rhs_dilation=dilation, dimension_numbers=_NHWC)


def _conv_fwd(x, w, strides, padding, dilation, per_tap):
  return _conv(x, w, strides, padding, dilation, per_tap), (x, w)


def _conv_bwd(strides, padding, dilation, per_tap, residuals, g):
  x, w = residuals
  _, input_vjp = jax.vjp(lambda x_: _XLA_CONV(x_, w, strides, padding, rhs_dilation=dilation,
                                               dimension_numbers=_NHWC), x)
  return (input_vjp(g)[0],
          kernel_gradient(x, g, w.shape[:2], strides, padding, dilation,
                          per_tap).astype(w.dtype))


_conv.defvjp(_conv_fwd, _conv_bwd)


def im2col_conv(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                dimension_numbers=None, feature_group_count=1, precision=None, *,
                per_tap: bool = False, **kwargs):
  """lax.conv_general_dilated with the im2col kernel gradient where it applies (else XLA's)."""
  plain = (feature_group_count == 1 and not kwargs and precision is None and
           all(d == 1 for d in (lhs_dilation or (1, 1))) and lhs.ndim == 4 and
           tuple(lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)) ==
           tuple(lax.conv_dimension_numbers(lhs.shape, rhs.shape, _NHWC)))
  if not plain:
    return _XLA_CONV(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                     dimension_numbers, feature_group_count, precision=precision, **kwargs)
  dilation = tuple(rhs_dilation or (1, 1))
  if isinstance(padding, str):
    dilated = [(k - 1) * d + 1 for k, d in zip(rhs.shape[:2], dilation)]
    padding = lax.padtype_to_pads(lhs.shape[1:3], dilated, window_strides, padding)
  return _conv(lhs, rhs, tuple(window_strides), tuple(tuple(p) for p in padding), dilation,
               per_tap)


@contextlib.contextmanager
def im2col_kernel_gradients(per_tap: bool):
  """While active, flax's nn.Conv traces im2col_conv instead of lax.conv_general_dilated."""
  flax.linen.linear.lax = _PatchedLax(functools.partial(im2col_conv, per_tap=per_tap))
  try:
    yield
  finally:
    flax.linen.linear.lax = lax


class _PatchedLax:
  """jax.lax with conv_general_dilated replaced (what flax.linen.linear looks up)."""

  def __init__(self, conv):
    self._conv = conv

  def __getattr__(self, name):
    return self._conv if name == 'conv_general_dilated' else getattr(lax, name)


def main(argv):
  del argv
  config = FLAGS.config
  experiment = train.build_experiment(config)
  state = experiment.initial_state()
  batch = jax.tree.map(lambda x: jax.make_array_from_process_local_data(
      NamedSharding(experiment.mesh, P(train_step.AXIS)), x), experiment.train_batches(0))
  steps = {}
  variants = {'xla': contextlib.nullcontext(),
              'im2col': im2col_kernel_gradients(FLAGS.per_tap)}
  for name, context in variants.items():
    with context:  # a new jitted step each (a traced one would be reused)
      step = train.build_experiment(config).train_step
      start = time.perf_counter()
      steps[name] = step.lower(state, batch).compile()
      print(f'{name}: compiled in {time.perf_counter() - start:.1f} s')
  states = {name: jax.tree.map(jnp.copy, state) for name in steps}
  after_one = {}
  for name, step in steps.items():
    after_one[name], _, _ = step(jax.tree.map(jnp.copy, state), batch)
  deltas = [float(jnp.max(jnp.abs(a - b)) / (jnp.max(jnp.abs(a)) + 1e-30)) for a, b in zip(
      jax.tree.leaves(after_one['xla'].params), jax.tree.leaves(after_one['im2col'].params))]
  times = {name: [] for name in steps}
  rounds, num_steps = FLAGS.rounds, FLAGS.steps
  for _ in range(rounds):
    for name, step in steps.items():
      for i in range(3 + num_steps):
        start = time.perf_counter()
        states[name], metrics, _ = step(states[name], batch)
        jax.block_until_ready(metrics['loss'])
        if i >= 3:
          times[name].append(time.perf_counter() - start)
  medians = {name: 1e3 * float(np.median(t)) for name, t in times.items()}
  per_round = {name: [round(1e3 * float(np.median(t[r * num_steps:(r + 1) * num_steps])), 1)
                      for r in range(rounds)] for name, t in times.items()}
  print(f'\nconfig {config.name}, batch {config.train.batch_size}, crop {config.input.crop_size}')
  print('| kernel gradient | median step (ms) | per round (ms) |')
  print('|---|---|---|')
  for name in steps:
    print(f'| {name} | {medians[name]:.1f} | {per_round[name]} |')
  print(f'\nim2col / xla: {medians["im2col"] / medians["xla"]:.3f}; parameters after one step: '
        f'largest relative difference {max(deltas):.2e} over {len(deltas)} tensors')


if __name__ == '__main__':
  _define_flags()
  app.run(main)
