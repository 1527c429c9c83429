"""ResNet / DeepLabv3+ shapes, dilation plan, parameter counts and mixed precision."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default
from tce_jax import models
from tce_jax.models import resnet


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
  variables = jax.jit(lambda: model.init(jax.random.PRNGKey(0), x, train=False))()
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
