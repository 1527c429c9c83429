"""Dilated ResNet backbones (torchvision layout: stride on the 3x3 conv of a bottleneck).

`output_stride` 8, 16 or 32 replaces the strides of the last stages with dilation (as
torchvision's `replace_stride_with_dilation`), so segmentation heads get dense features.
Module names follow torchvision's (`conv1`, `bn1`, `layer3_5`, `downsample_conv`, ...) so
ImageNet weights map across by name.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax.numpy as jnp

ModuleDef = Any

# name -> (block type, blocks per stage)
RESNETS: dict[str, tuple[str, tuple[int, ...]]] = {
    'resnet18': ('basic', (2, 2, 2, 2)),
    'resnet34': ('basic', (3, 4, 6, 3)),
    'resnet50': ('bottleneck', (3, 4, 6, 3)),
    'resnet101': ('bottleneck', (3, 4, 23, 3)),
    'resnet152': ('bottleneck', (3, 8, 36, 3)),
}


class BasicBlock(nn.Module):
  """Two 3x3 convs with a residual connection (ResNet-18/34)."""
  planes: int
  stride: int
  dilation: int
  conv: ModuleDef
  norm: ModuleDef
  expansion = 1

  @nn.compact
  def __call__(self, x):
    d = self.dilation
    y = self.conv(self.planes, (3, 3), self.stride, padding=d, kernel_dilation=d, name='conv1')(x)
    y = nn.relu(self.norm(name='bn1')(y))
    y = self.conv(self.planes, (3, 3), padding=d, kernel_dilation=d, name='conv2')(y)
    y = self.norm(name='bn2')(y)
    if x.shape[-1] != self.planes or self.stride != 1:
      x = self.conv(self.planes, (1, 1), self.stride, name='downsample_conv')(x)
      x = self.norm(name='downsample_bn')(x)
    return nn.relu(x + y)


class Bottleneck(nn.Module):
  """1x1 reduce, 3x3 (strided, dilated), 1x1 expand x4, residual (ResNet-50/101/152)."""
  planes: int
  stride: int
  dilation: int
  conv: ModuleDef
  norm: ModuleDef
  expansion = 4

  @nn.compact
  def __call__(self, x):
    d, out = self.dilation, self.planes * self.expansion
    y = nn.relu(self.norm(name='bn1')(self.conv(self.planes, (1, 1), name='conv1')(x)))
    y = self.conv(self.planes, (3, 3), self.stride, padding=d, kernel_dilation=d, name='conv2')(y)
    y = nn.relu(self.norm(name='bn2')(y))
    y = self.norm(name='bn3')(self.conv(out, (1, 1), name='conv3')(y))
    if x.shape[-1] != out or self.stride != 1:
      x = self.conv(out, (1, 1), self.stride, name='downsample_conv')(x)
      x = self.norm(name='downsample_bn')(x)
    return nn.relu(x + y)


def stage_strides_and_dilations(output_stride: int) -> list[tuple[int, int, int]]:
  """Per stage (stride, dilation of its first block, dilation of the others)."""
  if output_stride not in (8, 16, 32):
    raise ValueError(f'output_stride must be 8, 16 or 32, got {output_stride}')
  dilated = {32: 0, 16: 1, 8: 2}[output_stride]  # how many of the last stages are dilated
  plan, dilation = [], 1
  for stage in range(4):
    stride = 1 if stage == 0 else 2
    previous = dilation
    if stage >= 4 - dilated:
      dilation, stride = dilation * stride, 1
    plan.append((stride, previous, dilation))
  return plan


class ResNet(nn.Module):
  """Returns the four stage features [B, H/4, W/4, C1], ..., [B, H/OS, W/OS, C4]."""
  depth: str = 'resnet101'
  width: int = 64  # channels of the stem; 64 for the standard nets, smaller for tests
  output_stride: int = 16
  multi_grid: Sequence[int] = (1, 1, 1)  # dilation multipliers of the last stage's blocks
  norm: Callable[..., nn.Module] = nn.BatchNorm
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x) -> list:
    block_type, stage_sizes = RESNETS[self.depth]
    block_cls = BasicBlock if block_type == 'basic' else Bottleneck
    conv = functools.partial(nn.Conv, use_bias=False, dtype=self.dtype)
    x = conv(self.width, (7, 7), 2, padding=3, name='conv1')(x)
    x = nn.relu(self.norm(name='bn1')(x))
    x = nn.max_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1)))
    features = []
    plan = stage_strides_and_dilations(self.output_stride)
    for stage, (num_blocks, (stride, first_dilation, dilation)) in enumerate(
        zip(stage_sizes, plan)):
      for j in range(num_blocks):
        d = first_dilation if j == 0 else dilation
        if stage == 3:
          d = d * self.multi_grid[j % len(self.multi_grid)]
        x = block_cls(planes=self.width * 2 ** stage, stride=stride if j == 0 else 1,
                      dilation=d, conv=conv, norm=self.norm, name=f'layer{stage + 1}_{j}')(x)
      features.append(x)
    return features
