"""UPerNet (Xiao et al. 2018) on a ResNet, as mmsegmentation's ADE20k configs build it.

Pyramid pooling on the last stage, a feature pyramid over the four stages, fusion of all
levels at stride 4, classifier; plus an auxiliary FCN head on stage 3 used in training only
(its loss is weighted by `config.model.aux_weight`, 0.4).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from tce_jax.models.deeplabv3plus import ConvBNReLU, resize_to
from tce_jax.models.resnet import ResNet


def adaptive_avg_pool(x: jax.Array, size: int) -> jax.Array:
  """PyTorch's AdaptiveAvgPool2d to size x size: bin i spans [floor(i n/s), ceil((i+1) n/s))."""
  h, w = x.shape[1:3]
  rows = []
  for i in range(size):
    y0, y1 = (i * h) // size, -((-(i + 1) * h) // size)
    cols = [jnp.mean(x[:, y0:y1, (j * w) // size:-((-(j + 1) * w) // size)], axis=(1, 2))
            for j in range(size)]
    rows.append(jnp.stack(cols, axis=1))
  return jnp.stack(rows, axis=1)


class PyramidPooling(nn.Module):
  """PSP module: pooled context at several scales, concatenated with the input, fused."""
  features: int = 512
  pool_scales: Sequence[int] = (1, 2, 3, 6)
  norm: Callable[..., nn.Module] = nn.BatchNorm
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    unit = functools.partial(ConvBNReLU, self.features, norm=self.norm, dtype=self.dtype)
    h, w = x.shape[1:3]
    outs = [x]
    for i, scale in enumerate(self.pool_scales):
      pooled = unit(1, name=f'pool{i}')(adaptive_avg_pool(x, scale))
      outs.append(resize_to(pooled, h, w).astype(x.dtype))
    return unit(3, name='bottleneck')(jnp.concatenate(outs, axis=-1))


class UPerNet(nn.Module):
  """Logits [B, H, W, K] (and auxiliary logits from stage 3 when training)."""
  num_classes: int
  backbone: str = 'resnet101'
  width: int = 64
  output_stride: int = 32
  multi_grid: Sequence[int] = (1, 1, 1)
  channels: int = 512
  aux_channels: int = 256
  pool_scales: Sequence[int] = (1, 2, 3, 6)
  dropout: float = 0.1
  norm: Callable[..., nn.Module] = nn.BatchNorm
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool):
    height, width = x.shape[1:3]
    features = ResNet(self.backbone, self.width, self.output_stride, self.multi_grid,
                      norm=self.norm, dtype=self.dtype, name='backbone')(x)
    unit = functools.partial(ConvBNReLU, norm=self.norm, dtype=self.dtype)
    levels = [unit(self.channels, 1, name=f'lateral{i}')(f) for i, f in enumerate(features[:3])]
    levels.append(PyramidPooling(self.channels, self.pool_scales, self.norm, self.dtype,
                                 name='ppm')(features[3]))
    for i in range(3, 0, -1):  # top-down pathway
      levels[i - 1] = levels[i - 1] + resize_to(levels[i], *levels[i - 1].shape[1:3]).astype(
          levels[i - 1].dtype)
    outs = [unit(self.channels, 3, name=f'fpn{i}')(levels[i]) for i in range(3)] + [levels[3]]
    size = outs[0].shape[1:3]
    fused = jnp.concatenate([outs[0]] + [resize_to(o, *size).astype(outs[0].dtype)
                                         for o in outs[1:]], axis=-1)
    y = unit(self.channels, 3, name='fpn_bottleneck')(fused)
    y = nn.Dropout(self.dropout, deterministic=not train)(y)
    logits = resize_to(nn.Conv(self.num_classes, (1, 1), dtype=self.dtype, name='classifier')(y),
                       height, width)
    if not train:
      return logits
    aux = unit(self.aux_channels, 3, name='aux_conv')(features[2])
    aux = nn.Dropout(self.dropout, deterministic=not train)(aux)
    aux = nn.Conv(self.num_classes, (1, 1), dtype=self.dtype, name='aux_classifier')(aux)
    return logits, resize_to(aux, height, width)
