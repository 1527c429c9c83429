"""ResNet / DeepLabv3+ shapes, dilation plan, parameter counts and mixed precision."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tce_jax.configs import default
from tce_jax import losses
from tce_jax import models
from tce_jax import train_step
from tce_jax.models import resnet


def compile_init(init):
  """`init` jitted and compiled as training compiles its initial state (XLA:CPU level 2: the
  same parameters bit for bit, compiled faster; train_step.init_compiler_options)."""
  return jax.jit(init).lower().compile(train_step.init_compiler_options())


def tiny_model_config(**model):
  config = default.get_config()
  config.model.update(dict(backbone='resnet18', width=8, aspp_channels=16, decoder_channels=16,
                           dropout=0.0), **model)
  return config


@pytest.mark.parametrize('output_stride,plan', [
    (32, [(1, 1, 1), (2, 1, 1), (2, 1, 1), (2, 1, 1)]),
    (16, [(1, 1, 1), (2, 1, 1), (2, 1, 1), (1, 1, 2)]),
    (8, [(1, 1, 1), (2, 1, 1), (1, 1, 2), (1, 2, 4)]),
])
def test_dilation_plan_matches_torchvision(output_stride, plan):
  assert resnet.stage_strides_and_dilations(output_stride) == plan


@pytest.mark.parametrize('backbone,output_stride', [('resnet18', 16), ('resnet50', 8),
                                                    ('resnet18', 32)])
def test_feature_strides_and_logit_shape(backbone, output_stride):
  config = tiny_model_config(backbone=backbone, output_stride=output_stride)
  model = models.create_model(config, 19, train=False)
  x = jnp.zeros((2, 64, 96, 3))
  variables = compile_init(lambda: model.init(jax.random.PRNGKey(0), x, train=False))()
  logits = model.apply(variables, x, train=False)
  assert logits.shape == (2, 64, 96, 19)
  norm = functools.partial(nn.BatchNorm, use_running_average=True)
  features = resnet.ResNet(backbone, 8, output_stride, norm=norm).apply(
      {'params': variables['params']['backbone'],
       'batch_stats': variables['batch_stats']['backbone']}, x)
  strides = [64 // f.shape[1] for f in features]
  assert strides == [4, 8, min(16, output_stride), output_stride]
  expansion = 4 if backbone == 'resnet50' else 1
  assert [f.shape[-1] for f in features] == [8 * expansion * 2 ** i for i in range(4)]


def count(params) -> int:
  return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))


def test_full_size_deeplabv3plus_resnet101_parameter_count():
  """59,343,795 = the standard DeepLabv3+ / ResNet-101 (256-ch ASPP and decoder, 19 classes)."""
  config = default.get_config()
  model = models.create_model(config, 19, train=False)
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 64, 64, 3)),
                                             train=False))
  assert count(shapes['params']['backbone']) == 42_500_160  # torchvision resnet101 minus fc
  assert count(shapes['params']) == 59_343_795


def test_half_precision_predicts_like_float32():
  config = tiny_model_config()
  x = jax.random.normal(jax.random.PRNGKey(1), (2, 64, 64, 3))
  f32 = models.create_model(config, 5, train=False)
  variables = f32.init(jax.random.PRNGKey(0), x, train=False)
  config.half_precision = True
  bf16 = models.create_model(config, 5, train=False)
  a = f32.apply(variables, x, train=False)
  b = bf16.apply(variables, x, train=False)
  assert b.dtype == jnp.bfloat16
  assert jax.tree.leaves(variables['params'])[0].dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(b, np.float32), a, atol=0.1 * float(jnp.std(a)))
  agreement = np.mean(np.argmax(np.asarray(b, np.float32), -1) == np.argmax(a, -1))
  assert agreement > 0.9


def test_upernet_shapes_and_auxiliary_head():
  config = tiny_model_config(backbone='resnet50', output_stride=32, upernet_channels=16,
                             aux_channels=8)
  config.model.name = 'upernet'
  model = models.create_model(config, 7, train=False)
  x = jnp.zeros((1, 64, 64, 3))
  variables = model.init({'params': jax.random.PRNGKey(0), 'dropout': jax.random.PRNGKey(1)},
                         x, train=True)
  assert 'aux_classifier' in variables['params']
  assert model.apply(variables, x, train=False).shape == (1, 64, 64, 7)
  logits, aux = model.apply(variables, x, train=True, rngs={'dropout': jax.random.PRNGKey(2)},
                            mutable=['batch_stats'])[0]
  assert logits.shape == aux.shape == (1, 64, 64, 7)


def test_adaptive_avg_pool_matches_torch_bins():
  from tce_jax.models.upernet import adaptive_avg_pool  # pylint: disable=g-import-not-at-top
  x = np.arange(2 * 7 * 5 * 1, dtype=np.float32).reshape(2, 7, 5, 1)
  out = np.asarray(adaptive_avg_pool(jnp.asarray(x), 3))
  # torch bins for n = 7, s = 3: [0, 3), [2, 5), [4, 7); for n = 5: [0, 2), [1, 4), [3, 5).
  expected = x[:, 2:5, 3:5].mean(axis=(1, 2))
  np.testing.assert_allclose(out[:, 1, 2], expected)


@pytest.mark.slow
@pytest.mark.parametrize('name,num_classes', [('deeplabv3plus', 19), ('upernet', 150)])
def test_full_size_models_forward_and_backward_at_512(name, num_classes):
  """ResNet-101 DeepLabv3+ (OS 16) and UPerNet (OS 32), batch 1 at 512 x 512, on CPU."""
  config = default.get_config()
  config.model.name = name
  config.model.output_stride = 16 if name == 'deeplabv3plus' else 32
  config.model.dropout = 0.0
  model = models.create_model(config, num_classes, train=True)
  x = jax.random.normal(jax.random.PRNGKey(0), (1, 512, 512, 3))
  labels = jax.random.randint(jax.random.PRNGKey(1), (1, 512, 512), 0, num_classes)
  variables = compile_init(lambda: model.init({'params': jax.random.PRNGKey(2),
                                               'dropout': jax.random.PRNGKey(3)}, x,
                                              train=True))()

  def logits_of(params):
    out, _ = model.apply({'params': params, 'batch_stats': variables['batch_stats']}, x,
                         train=True, mutable=['batch_stats'])
    return out[0] if isinstance(out, tuple) else out

  assert jax.eval_shape(logits_of, variables['params']).shape == (1, 512, 512, num_classes)
  loss, grads = jax.jit(jax.value_and_grad(
      lambda p: losses.cross_entropy(logits_of(p), labels)))(variables['params'])
  grad_norm = float(optax.global_norm(grads))
  assert np.isfinite(loss) and np.isfinite(grad_norm) and grad_norm > 0
