"""The PyTorch peer of the benchmark is the same network: our Flax variables load into it
strictly and give the same logits; the benchmark's smoke version writes every entry; and the
alternative kernel gradient of scripts/benchmark_conv_grad.py is the convolution's gradient."""

import functools
import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import ROOT, subprocess_env
from tce_jax.configs import default
from tce_jax import models
from tce_jax.data import imagenet

torch = pytest.importorskip('torch', reason='the peer needs PyTorch (pip install torch==2.13.0)')
import torch_deeplabv3plus as peer  # noqa: E402  (scripts/ is on the path: pyproject pythonpath)


@pytest.mark.parametrize('backbone,output_stride,multi_grid', [('resnet18', 16, (1, 1, 1)),
                                                               ('resnet50', 8, (1, 2, 4))])
def test_peer_gives_our_logits_with_our_weights(backbone, output_stride, multi_grid):
  config = default.get_config()
  config.model.update(backbone=backbone, width=8, aspp_channels=16, decoder_channels=16,
                      output_stride=output_stride, eval_output_stride=output_stride,
                      multi_grid=multi_grid)
  model = models.create_model(config, 5, train=False)
  images = np.random.default_rng(0).integers(0, 256, (2, 48, 64, 3), dtype=np.uint8)
  x = imagenet.normalize(jnp.asarray(images))
  variables = model.init(jax.random.PRNGKey(0), x, train=False)
  # Non-trivial running statistics, so a BatchNorm mix-up shows.
  variables = {'params': variables['params'], 'batch_stats': jax.tree.map(
      lambda v: v + jax.random.uniform(jax.random.PRNGKey(1), v.shape, minval=0.1, maxval=0.5),
      variables['batch_stats'])}
  ours = np.asarray(model.apply(variables, x, train=False))

  reference = peer.from_config(config, 5)
  reference.load_state_dict(peer.state_dict_from_flax(variables))  # strict: same tensors
  with torch.no_grad():
    theirs = reference.eval()(torch.from_numpy(np.asarray(x).transpose(0, 3, 1, 2).copy()))
  theirs = theirs.numpy().transpose(0, 2, 3, 1)
  assert theirs.shape == ours.shape == (2, 48, 64, 5)
  np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4 * np.abs(ours).max())


@pytest.mark.parametrize('optimizer,learning_rate', [('sgd', 0.05), ('adamw', 5e-3)])
def test_peer_train_step_lowers_the_loss(optimizer, learning_rate):
  torch.manual_seed(0)
  model = peer.DeepLabV3Plus(3, 'resnet18', 8, aspp_channels=8, decoder_channels=8, dropout=0.0)
  images, labels = torch.randn(2, 3, 32, 32), torch.randint(0, 3, (2, 32, 32))
  step = peer.make_train_step(model, learning_rate=learning_rate, optimizer=optimizer)
  losses = [step(images, labels) for _ in range(8)]
  assert losses[-1] < losses[0]
  with pytest.raises(ValueError, match="optimizer='lamb'"):
    peer.make_train_step(model, optimizer='lamb')


def test_quick_benchmark_writes_every_measurement(tmp_path):
  out = tmp_path / 'bench.json'
  result = subprocess.run(
      [sys.executable, 'scripts/benchmark.py', '--quick', f'--data_dir={tmp_path / "tfds"}',
       f'--json={out}'], cwd=ROOT, env=subprocess_env(), capture_output=True, text=True,
      timeout=600, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  with open(out) as f:
    bench = json.load(f)
  assert bench['machine']['devices'] == 2
  step = bench['train_step']
  for key in ('median_ms', 'p90_ms', 'images_per_s', 'compile_s', 'flops',
              'achieved_flops_per_s', 'fraction_of_matmul_peak'):
    assert step[key] > 0, key
  assert step['p90_ms'] >= step['median_ms']
  # XLA's count covers the whole step: at least forward + backward of the convolutions.
  assert step['flops'] > 1e6
  assert bench['matmul_peak']['flops_per_s'] > 0
  assert set(bench['sampling']) == {'uniform', 'tce', 'uniform_uncached', 'tce_over_uniform'}
  for name in ('uniform', 'tce', 'uniform_uncached'):  # each loop against the fixed step
    assert bench['sampling'][name]['over_step'] == pytest.approx(
        bench['sampling'][name]['median_ms'] / step['median_ms'])
  assert bench['input']['images_per_s'] > 0 and bench['input']['threads'] == 1
  assert bench['eval']['images'] == 8 and bench['eval']['images_per_s'] > 0
  assert bench['memory']['peak_host_bytes'] > 2 ** 20
  assert bench['peer']['framework'].startswith('torch')
  assert bench['peer']['ours_over_peer'] == pytest.approx(
      step['median_ms'] / bench['peer']['median_ms'])
  assert '| ours / peer step time |' in result.stdout


@pytest.mark.parametrize('per_tap', [False, True])
def test_im2col_kernel_gradient_equals_autodiff_in_float64(per_tap):
  """scripts/benchmark_conv_grad.py's alternative kernel gradient (a measured negative
  result, docs/performance.md) is the convolution's gradient: strides, dilations, paddings."""
  import benchmark_conv_grad as conv_grad  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  dims = ('NHWC', 'HWIO', 'NHWC')
  with jax.enable_x64():
    for k, s, d, pad in [(3, 1, 1, 'SAME'), (3, 2, 1, ((1, 1), (1, 1))), (3, 1, 2, 'SAME'),
                         (1, 2, 1, 'VALID'), (7, 2, 1, ((3, 3), (3, 3)))]:
      x = jnp.asarray(rng.normal(size=(2, 13, 11, 5)))
      w = jnp.asarray(rng.normal(size=(k, k, 5, 4)))
      ours = jax.vjp(functools.partial(conv_grad.im2col_conv, window_strides=(s, s), padding=pad,
                                       rhs_dilation=(d, d), dimension_numbers=dims,
                                       per_tap=per_tap), x, w)
      xla = jax.vjp(functools.partial(jax.lax.conv_general_dilated, window_strides=(s, s),
                                      padding=pad, rhs_dilation=(d, d),
                                      dimension_numbers=dims), x, w)
      np.testing.assert_array_equal(ours[0], xla[0])
      g = jnp.asarray(rng.normal(size=xla[0].shape))
      for a, b in zip(ours[1](g), xla[1](g)):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
