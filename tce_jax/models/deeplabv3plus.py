"""DeepLabv3+ (Chen et al. 2018): ASPP on a dilated ResNet plus a stride-4 decoder."""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from tce_jax.models.resnet import ResNet


def resize_to(x: jax.Array, height: int, width: int) -> jax.Array:
  """Bilinear resize of [B, h, w, C] to [B, height, width, C] (half-pixel centres)."""
  return jax.image.resize(x, (x.shape[0], height, width, x.shape[-1]), 'bilinear')


class ConvBNReLU(nn.Module):
  """conv (no bias) -> BatchNorm -> ReLU, the unit every head is built from."""
  features: int
  kernel: int = 1
  dilation: int = 1
  norm: Callable[..., nn.Module] = nn.BatchNorm
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    pad = self.dilation * (self.kernel // 2)
    x = nn.Conv(self.features, (self.kernel, self.kernel), padding=pad,
                kernel_dilation=self.dilation, use_bias=False, dtype=self.dtype, name='conv')(x)
    return nn.relu(self.norm(name='bn')(x))


class ASPP(nn.Module):
  """Atrous spatial pyramid pooling: 1x1, three atrous 3x3 and image pooling, projected."""
  features: int = 256
  rates: Sequence[int] = (6, 12, 18)
  dropout: float = 0.1
  norm: Callable[..., nn.Module] = nn.BatchNorm
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool):
    unit = functools.partial(ConvBNReLU, self.features, norm=self.norm, dtype=self.dtype)
    branches = [unit(1, name='branch0')(x)]
    branches += [unit(3, r, name=f'branch{i + 1}')(x) for i, r in enumerate(self.rates)]
    pooled = unit(1, name='image_pool')(jnp.mean(x, axis=(1, 2), keepdims=True))
    branches.append(jnp.broadcast_to(pooled, branches[0].shape))
    y = unit(1, name='project')(jnp.concatenate(branches, axis=-1))
    return nn.Dropout(self.dropout, deterministic=not train)(y)


class DeepLabV3Plus(nn.Module):
  """Logits [B, H, W, K] for images [B, H, W, 3]."""
  num_classes: int
  backbone: str = 'resnet101'
  width: int = 64
  output_stride: int = 16
  multi_grid: Sequence[int] = (1, 1, 1)
  aspp_channels: int = 256
  decoder_channels: int = 256
  low_level_channels: int = 48
  dropout: float = 0.1
  norm: Callable[..., nn.Module] = nn.BatchNorm
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool):
    height, width = x.shape[1:3]
    features = ResNet(self.backbone, self.width, self.output_stride, self.multi_grid,
                      norm=self.norm, dtype=self.dtype, name='backbone')(x)
    rates = tuple(r * 16 // self.output_stride for r in (6, 12, 18))  # 12/24/36 at OS 8
    y = ASPP(self.aspp_channels, rates, self.dropout, self.norm, self.dtype, name='aspp')(
        features[-1], train=train)
    low = ConvBNReLU(self.low_level_channels, norm=self.norm, dtype=self.dtype,
                     name='low_level_project')(features[0])
    y = resize_to(y, *low.shape[1:3]).astype(low.dtype)
    y = jnp.concatenate([y, low], axis=-1)
    for i in range(2):
      y = ConvBNReLU(self.decoder_channels, 3, norm=self.norm, dtype=self.dtype,
                     name=f'decoder{i}')(y)
    y = nn.Conv(self.num_classes, (1, 1), dtype=self.dtype, name='classifier')(y)
    return resize_to(y, height, width)
