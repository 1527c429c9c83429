"""A plain-PyTorch DeepLabv3+ on a dilated ResNet: the peer of scripts/benchmark.py.

The same architecture as `tce_jax.models.DeepLabV3Plus` (torchvision's ResNet layout, ASPP
with image pooling, stride-4 decoder, bilinear upsampling with half-pixel centres) and the
same module names, so our Flax variables load into it with a strict `load_state_dict`
(`state_dict_from_flax`): tests/test_peer.py checks that both give the same logits. Written
for the speed comparison only; training code is the usual torch loop (`make_train_step`).

  python scripts/torch_deeplabv3plus.py --backbone=resnet18 --width=16 --size=128 --batch=8
"""

from __future__ import annotations

import functools
import time
from typing import Mapping, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

BN_EPSILON = 1e-5  # as tce_jax.models.create_model
# depth -> (bottleneck blocks?, blocks per stage), as torchvision
RESNETS = {'resnet18': (False, (2, 2, 2, 2)), 'resnet34': (False, (3, 4, 6, 3)),
           'resnet50': (True, (3, 4, 6, 3)), 'resnet101': (True, (3, 4, 23, 3)),
           'resnet152': (True, (3, 8, 36, 3))}


class Block(nn.Module):
  """torchvision's BasicBlock / Bottleneck (stride on the 3x3 conv), same parameter names."""

  def __init__(self, inplanes: int, planes: int, stride: int, dilation: int, bottleneck: bool):
    super().__init__()
    self.bottleneck = bottleneck
    out = planes * (4 if bottleneck else 1)
    conv3 = functools.partial(nn.Conv2d, kernel_size=3, padding=dilation, dilation=dilation,
                              bias=False)
    if bottleneck:
      self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
      self.conv2 = conv3(planes, planes, stride=stride)
      self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
      self.bn3 = nn.BatchNorm2d(out, eps=BN_EPSILON)
    else:
      self.conv1 = conv3(inplanes, planes, stride=stride)
      self.conv2 = conv3(planes, planes)
    self.bn1 = nn.BatchNorm2d(planes, eps=BN_EPSILON)
    self.bn2 = nn.BatchNorm2d(planes, eps=BN_EPSILON)
    self.downsample = None
    if stride != 1 or inplanes != out:
      self.downsample = nn.Sequential(nn.Conv2d(inplanes, out, 1, stride, bias=False),
                                      nn.BatchNorm2d(out, eps=BN_EPSILON))

  def forward(self, x):
    y = torch.relu(self.bn1(self.conv1(x)))
    if self.bottleneck:
      y = torch.relu(self.bn2(self.conv2(y)))
      y = self.bn3(self.conv3(y))
    else:
      y = self.bn2(self.conv2(y))
    return torch.relu(y + (x if self.downsample is None else self.downsample(x)))


class ResNet(nn.Module):
  """torchvision.models.ResNet without fc, with replace_stride_with_dilation and multi-grid
  (dilation multipliers of the last stage's blocks); returns the four stage features."""

  def __init__(self, depth: str = 'resnet101', width: int = 64, output_stride: int = 16,
               multi_grid: Sequence[int] = (1, 1, 1), with_fc: bool = False):
    super().__init__()
    bottleneck, blocks = RESNETS[depth]
    dilate = {8: (False, True, True), 16: (False, False, True), 32: (False, False, False)}[
        output_stride]  # torchvision's replace_stride_with_dilation
    self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
    self.bn1 = nn.BatchNorm2d(width, eps=BN_EPSILON)
    self.maxpool = nn.MaxPool2d(3, 2, 1)
    inplanes, dilation = width, 1
    for i, n in enumerate(blocks):  # torchvision's _make_layer
      stride, previous = (1 if i == 0 else 2), dilation
      if i > 0 and dilate[i - 1]:
        dilation, stride = dilation * stride, 1
      layer = []
      for j in range(n):
        d = previous if j == 0 else dilation
        if i == 3:
          d *= multi_grid[j % len(multi_grid)]
        layer.append(Block(inplanes, width * 2 ** i, stride if j == 0 else 1, d, bottleneck))
        inplanes = width * 2 ** i * (4 if bottleneck else 1)
      setattr(self, f'layer{i + 1}', nn.Sequential(*layer))
    self.out_channels = inplanes
    if with_fc:  # the ImageNet head of torchvision checkpoints (not used by forward)
      self.fc = nn.Linear(inplanes, 1000)

  def forward(self, x):
    x = self.maxpool(torch.relu(self.bn1(self.conv1(x))))
    features = []
    for i in range(4):
      x = getattr(self, f'layer{i + 1}')(x)
      features.append(x)
    return features


class ConvBNReLU(nn.Module):
  def __init__(self, inplanes: int, features: int, kernel: int = 1, dilation: int = 1):
    super().__init__()
    self.conv = nn.Conv2d(inplanes, features, kernel, padding=dilation * (kernel // 2),
                          dilation=dilation, bias=False)
    self.bn = nn.BatchNorm2d(features, eps=BN_EPSILON)

  def forward(self, x):
    return torch.relu(self.bn(self.conv(x)))


class ASPP(nn.Module):
  """1x1, three atrous 3x3 and image pooling, concatenated and projected."""

  def __init__(self, inplanes: int, features: int, rates: Sequence[int], dropout: float):
    super().__init__()
    self.branch0 = ConvBNReLU(inplanes, features)
    for i, rate in enumerate(rates):
      setattr(self, f'branch{i + 1}', ConvBNReLU(inplanes, features, 3, rate))
    self.num_rates = len(rates)
    self.image_pool = ConvBNReLU(inplanes, features)
    self.project = ConvBNReLU(features * (len(rates) + 2), features)
    self.dropout = nn.Dropout(dropout)

  def forward(self, x):
    branches = [getattr(self, f'branch{i}')(x) for i in range(self.num_rates + 1)]
    pooled = self.image_pool(x.mean(dim=(2, 3), keepdim=True))
    branches.append(pooled.expand_as(branches[0]))
    return self.dropout(self.project(torch.cat(branches, dim=1)))


class DeepLabV3Plus(nn.Module):
  """Logits [B, K, H, W] for normalised images [B, 3, H, W]."""

  def __init__(self, num_classes: int, backbone: str = 'resnet101', width: int = 64,
               output_stride: int = 16, multi_grid: Sequence[int] = (1, 1, 1),
               aspp_channels: int = 256, decoder_channels: int = 256,
               low_level_channels: int = 48, dropout: float = 0.1):
    super().__init__()
    self.backbone = ResNet(backbone, width, output_stride, multi_grid)
    low_channels = width * (4 if RESNETS[backbone][0] else 1)
    rates = tuple(r * 16 // output_stride for r in (6, 12, 18))
    self.aspp = ASPP(self.backbone.out_channels, aspp_channels, rates, dropout)
    self.low_level_project = ConvBNReLU(low_channels, low_level_channels)
    self.decoder0 = ConvBNReLU(aspp_channels + low_level_channels, decoder_channels, 3)
    self.decoder1 = ConvBNReLU(decoder_channels, decoder_channels, 3)
    self.classifier = nn.Conv2d(decoder_channels, num_classes, 1)

  def forward(self, x):
    height, width = x.shape[2:]
    features = self.backbone(x)
    y = self.aspp(features[-1])
    low = self.low_level_project(features[0])
    y = F.interpolate(y, size=low.shape[2:], mode='bilinear', align_corners=False)
    y = self.decoder1(self.decoder0(torch.cat([y, low], dim=1)))
    y = self.classifier(y)
    return F.interpolate(y, size=(height, width), mode='bilinear', align_corners=False)


def from_config(config, num_classes: int) -> DeepLabV3Plus:
  """The peer of `config.model` (a DeepLabv3+ config)."""
  m = config.model
  if m.name != 'deeplabv3plus':
    raise ValueError(f'The torch peer is a DeepLabv3+; config.model.name is {m.name!r}')
  return DeepLabV3Plus(num_classes, m.backbone, m.width, m.output_stride, tuple(m.multi_grid),
                       m.aspp_channels, m.decoder_channels, dropout=m.dropout)


def state_dict_from_flax(variables: Mapping) -> dict[str, torch.Tensor]:
  """Our Flax {'params', 'batch_stats'} as a torch state dict of the peer (conv HWIO -> OIHW)."""
  from tce_jax.models import pretrained  # pylint: disable=g-import-not-at-top  (names map)
  return {k: torch.from_numpy(v) for k, v in pretrained.torch_state_dict(variables).items()}


def make_train_step(model: nn.Module, *, learning_rate: float = 0.01, momentum: float = 0.9,
                    weight_decay: float = 1e-4, ignore_index: int = 255,
                    optimizer: str = 'sgd'):
  """One step of pixel cross-entropy on (images [B,3,H,W], labels [B,H,W]) with the update
  rule of our `config.train.optimizer`: 'sgd' (momentum, L2 weight decay in the gradient) or
  'adamw' (beta1 = momentum, beta2 = 0.999, decoupled weight decay), as tce_jax.train."""
  if optimizer == 'adamw':
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, betas=(momentum, 0.999),
                                  eps=1e-8, weight_decay=weight_decay)
  elif optimizer == 'sgd':
    optimizer = torch.optim.SGD(model.parameters(), lr=learning_rate, momentum=momentum,
                                weight_decay=weight_decay)
  else:
    raise ValueError(f'optimizer={optimizer!r}: the peer knows sgd and adamw')
  model.train()

  def step(images: torch.Tensor, labels: torch.Tensor) -> float:
    optimizer.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(images), labels, ignore_index=ignore_index)
    loss.backward()
    optimizer.step()
    return loss.item()  # waits for the step, like block_until_ready

  return step


def time_train_steps(step, images, labels, num_steps: int, warmup: int) -> np.ndarray:
  """Seconds per step on one fixed batch, after `warmup` steps."""
  for _ in range(warmup):
    step(images, labels)
  times = []
  for _ in range(num_steps):
    start = time.perf_counter()
    step(images, labels)
    times.append(time.perf_counter() - start)
  return np.asarray(times)


def main():
  import argparse  # pylint: disable=g-import-not-at-top
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--backbone', default='resnet18')
  parser.add_argument('--width', type=int, default=16)
  parser.add_argument('--classes', type=int, default=19)
  parser.add_argument('--size', type=int, default=128)
  parser.add_argument('--batch', type=int, default=8)
  parser.add_argument('--steps', type=int, default=20)
  parser.add_argument('--channels_last', action='store_true')
  args = parser.parse_args()
  model = DeepLabV3Plus(args.classes, args.backbone, args.width, aspp_channels=64,
                        decoder_channels=64)
  images = torch.randn(args.batch, 3, args.size, args.size)
  labels = torch.randint(0, args.classes, (args.batch, args.size, args.size))
  if args.channels_last:
    model = model.to(memory_format=torch.channels_last)
    images = images.contiguous(memory_format=torch.channels_last)
  times = time_train_steps(make_train_step(model), images, labels, args.steps, warmup=3)
  print(f'torch {torch.__version__}, {torch.get_num_threads()} threads: median step '
        f'{1e3 * np.median(times):.1f} ms ({args.batch / np.median(times):.1f} images/s)')


if __name__ == '__main__':
  main()
