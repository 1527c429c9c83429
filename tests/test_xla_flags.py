"""tce_jax's XLA:CPU flags: added once, never over a user's own setting, and in effect."""

import os

import jax
import jax.numpy as jnp
import pytest

from tce_jax import xla_flags

FLAG = '--xla_cpu_experimental_ynn_fusion_type=-individual_convolution'


def test_flags_are_appended_once_and_the_users_win():
  environ = {'XLA_FLAGS': '--xla_force_host_platform_device_count=2'}
  assert xla_flags.add_cpu_flags(environ, '0.10.2') == [FLAG]
  assert environ['XLA_FLAGS'] == f'--xla_force_host_platform_device_count=2 {FLAG}'
  assert xla_flags.add_cpu_flags(environ, '0.10.2') == []  # already there
  assert environ['XLA_FLAGS'].count(FLAG) == 1
  mine = {'XLA_FLAGS': '--xla_cpu_experimental_ynn_fusion_type=-individual_dot'}
  assert xla_flags.add_cpu_flags(mine, '0.10.2') == [] and mine['XLA_FLAGS'].endswith('_dot')
  empty = {}
  xla_flags.add_cpu_flags(empty, '0.10.2')
  assert empty['XLA_FLAGS'] == FLAG


@pytest.mark.parametrize('environ,version', [({xla_flags.OPT_OUT: '1'}, '0.10.2'),
                                             ({}, '0.12.0')])
def test_opt_out_and_unmeasured_jaxlib_leave_xla_flags_alone(environ, version):
  assert xla_flags.add_cpu_flags(environ, version) == []
  assert 'XLA_FLAGS' not in environ


@pytest.mark.skipif(FLAG not in os.environ.get('XLA_FLAGS', ''),
                    reason='flags not added (opted out, or another jaxlib)')
def test_convolutions_leave_ynnpack_with_the_flag():
  x, w = jnp.ones((8, 64, 64, 64)), jnp.ones((3, 3, 64, 64))

  def loss(w, x):
    y = jax.lax.conv_general_dilated(x, w, (1, 1), 'SAME',
                                     dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    return jnp.sum(jax.nn.relu(y + 1.0) ** 2)

  # Without the flag both convolutions of this gradient are YNNPACK fusions (`__ynn_fusion`).
  assert '__ynn' not in jax.jit(jax.grad(loss)).lower(w, x).compile().as_text()
