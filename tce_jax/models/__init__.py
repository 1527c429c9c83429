"""Segmentation models, built from the config (`config.model`)."""

from __future__ import annotations

import functools

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from tce_jax.models.deeplabv3plus import DeepLabV3Plus
from tce_jax.models.resnet import RESNETS
from tce_jax.models.upernet import UPerNet

# config.model.name -> model class
MODELS: dict[str, type[nn.Module]] = {'deeplabv3plus': DeepLabV3Plus, 'upernet': UPerNet}
# config.model.name -> the head's own fields of config.model, as the class's keyword arguments
HEAD_OPTIONS: dict[str, Callable[[ml_collections.ConfigDict], dict[str, Any]]] = {
    'deeplabv3plus': lambda m: dict(aspp_channels=m.aspp_channels,
                                    decoder_channels=m.decoder_channels),
    'upernet': lambda m: dict(channels=m.upernet_channels, aux_channels=m.aux_channels),
}
BACKBONES = tuple(RESNETS)


def create_model(config: ml_collections.ConfigDict, num_classes: int, *, train: bool,
                 axis_name: str | None = None, output_stride: int | None = None) -> nn.Module:
  """The model of `config.model`; BatchNorm is synchronised over `axis_name` when training.

  The training and evaluation models share parameters; they differ in BatchNorm mode
  (batch statistics vs running averages; frozen BN uses running averages in both) and
  possibly in output stride. In training a model may return (logits, auxiliary logits).
  """
  m = config.model
  use_running_average = (not train) or m.freeze_bn
  norm = functools.partial(nn.BatchNorm, use_running_average=use_running_average,
                           momentum=m.bn_momentum, epsilon=1e-5,
                           axis_name=axis_name if not use_running_average else None,
                           dtype=jnp.bfloat16 if config.half_precision else jnp.float32)
  kwargs = dict(num_classes=num_classes, backbone=m.backbone, width=m.width,
                output_stride=output_stride or m.output_stride, multi_grid=tuple(m.multi_grid),
                dropout=m.dropout, norm=norm,
                dtype=jnp.bfloat16 if config.half_precision else jnp.float32,
                **HEAD_OPTIONS[m.name](m))
  return MODELS[m.name](**kwargs)


def init_variables(config: ml_collections.ConfigDict, model: nn.Module, key: jax.Array) -> dict:
  """The model's initial {'params', 'batch_stats'} (auxiliary heads included)."""
  h, w = config.input.crop_size
  return model.init({'params': jax.random.fold_in(key, 2), 'dropout': key},
                    jnp.zeros((1, h, w, 3), jnp.float32), train=True)
