"""ImageNet ResNet weights from torchvision / timm state dicts into the Flax backbone.

torchvision and timm name ResNet tensors alike (`layer3.5.conv2.weight`, `downsample.1.
running_var`, ...); our modules carry the same names (`layer3_5/conv2`), so the mapping is by
name: conv OIHW -> HWIO, BatchNorm weight/bias -> scale/bias, running stats -> batch_stats.
Every tensor the backbone needs must be found with the right shape, and every tensor of the
file must be used (only the ImageNet classifier `fc.*` and `num_batches_tracked` are
expected leftovers): anything else is listed in the error.
"""

from __future__ import annotations

import functools
import os
from typing import Mapping

from flax import traverse_util
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from tce_jax.models.resnet import ResNet

_LEAF_NAMES = {('params', 'kernel'): 'weight', ('params', 'scale'): 'weight',
               ('params', 'bias'): 'bias', ('batch_stats', 'mean'): 'running_mean',
               ('batch_stats', 'var'): 'running_var'}


def load_state_dict(path: str) -> dict[str, np.ndarray]:
  """A state dict as numpy arrays from `.safetensors` (no torch needed) or `.pth` (torch)."""
  if not os.path.exists(path):
    raise FileNotFoundError(f'No weights file at {path}')
  if path.endswith('.safetensors'):
    from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
    return dict(load_file(path))
  if path.endswith(('.pth', '.pt', '.bin')):
    try:
      import torch  # pylint: disable=g-import-not-at-top
    except ImportError as e:
      raise ImportError(f'Reading {path} needs PyTorch (pip install torch==2.13.0), or convert '
                        'the file to .safetensors first') from e
    state = torch.load(path, map_location='cpu', weights_only=True)
    for key in ('state_dict', 'model'):  # common checkpoint wrappers
      if isinstance(state, dict) and key in state and isinstance(state[key], dict):
        state = state[key]
    return {k.removeprefix('module.'): v.float().numpy() for k, v in state.items()
            if hasattr(v, 'numpy')}
  raise ValueError(f'{path}: expected a .safetensors or .pth file')


def torch_key(collection: str, path: tuple[str, ...]) -> str:
  """Flax path ('layer1_0', 'downsample_bn', 'scale') -> 'layer1.0.downsample.1.weight'."""
  *modules, leaf = path
  parts = []
  for m in modules:
    if m.startswith('layer'):
      parts.append(m.replace('_', '.'))
    else:
      parts.append({'downsample_conv': 'downsample.0', 'downsample_bn': 'downsample.1'}.get(m, m))
  return '.'.join(parts + [_LEAF_NAMES[(collection, leaf)]])


def backbone_shapes(depth: str, width: int = 64) -> dict:
  """The variable shapes of the Flax backbone (no computation)."""
  model = ResNet(depth, width, norm=functools.partial(nn.BatchNorm, use_running_average=True))
  return jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 64, 64, 3))))


def torch_state_dict(variables: Mapping) -> dict[str, np.ndarray]:
  """Flax {'params', 'batch_stats'} under torch's names (`torch_key`), conv HWIO -> OIHW, as
  fresh, writable float32 numpy arrays. Serves the backbone (`state_dict_from_variables`) and
  the torch peer of scripts/torch_deeplabv3plus.py (the whole model)."""
  state = {}
  for collection in ('params', 'batch_stats'):
    for path, value in traverse_util.flatten_dict(dict(variables[collection])).items():
      value = np.asarray(value, np.float32)
      if value.ndim == 4:
        value = value.transpose(3, 2, 0, 1)
      state[torch_key(collection, path)] = np.array(value, order='C')  # a copy
  return state


def state_dict_from_variables(variables: Mapping, num_imagenet_classes: int = 1000
                              ) -> dict[str, np.ndarray]:
  """The inverse of `convert_state_dict`: backbone {'params', 'batch_stats'} as a torchvision
  ResNet state dict (numpy, conv HWIO -> OIHW), with what a torchvision file also holds (the
  ImageNet classifier `fc.*`, BatchNorm's `num_batches_tracked`). For rehearsals
  (`scripts/reproduce.py --dry_run`) and tests: a randomly initialised backbone written this
  way takes the path of a downloaded one."""
  state = torch_state_dict(variables)
  for key in [k for k in state if k.endswith('.running_var')]:
    state[key.removesuffix('running_var') + 'num_batches_tracked'] = np.zeros((), np.int64)
  features = max(v.shape[0] for k, v in state.items() if k.startswith('layer4.') and v.ndim)
  state['fc.weight'] = np.zeros((num_imagenet_classes, features), np.float32)
  state['fc.bias'] = np.zeros((num_imagenet_classes,), np.float32)
  return state


def random_backbone(depth: str, width: int = 64, seed: int = 0) -> dict:
  """A randomly initialised backbone's {'params', 'batch_stats'} (numpy)."""
  model = ResNet(depth, width, norm=functools.partial(nn.BatchNorm, use_running_average=True))
  variables = model.init(jax.random.PRNGKey(seed), jnp.zeros((1, 64, 64, 3)))
  return jax.tree.map(np.asarray, {k: variables[k] for k in ('params', 'batch_stats')})


def convert_state_dict(state: Mapping[str, np.ndarray], depth: str, width: int = 64) -> dict:
  """{'params', 'batch_stats'} of the backbone from a torch state dict; ValueError lists every
  missing key, unexpected key and shape mismatch."""
  shapes = backbone_shapes(depth, width)
  converted, missing, mismatched, used = {}, [], [], set()
  for collection in ('params', 'batch_stats'):
    flat = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(shapes[collection])[0]:
      names = tuple(p.key for p in path)
      key = torch_key(collection, names)
      if key not in state:
        missing.append(key)
        continue
      used.add(key)
      value = np.asarray(state[key], np.float32)
      if names[-1] == 'kernel':
        value = value.transpose(2, 3, 1, 0)  # OIHW -> HWIO
      if value.shape != leaf.shape:
        mismatched.append(f'{key}: file {tuple(state[key].shape)}, model expects '
                          f'{leaf.shape} (as HWIO for convs)')
        continue
      flat[names] = value
    converted[collection] = traverse_util.unflatten_dict(flat)
  unexpected = sorted(k for k in state if k not in used and not k.startswith('fc.')
                      and not k.endswith('num_batches_tracked'))
  if missing or unexpected or mismatched:
    problems = []
    for title, items in (('missing', missing), ('unexpected', unexpected),
                         ('shape mismatch', mismatched)):
      if items:
        problems.append(f'{len(items)} {title}: ' + ', '.join(items[:20])
                        + (' ...' if len(items) > 20 else ''))
    raise ValueError(f'The weights do not fit a {depth} (width {width}) backbone: '
                     + '; '.join(problems))
  return converted


# `config.model.pretrained` value that says "train from scratch, on purpose".
FROM_SCRATCH = 'none'


def weights_dir(config) -> str | None:
  """The directory of the backbone weights a run starts from; None: random initialisation
  (`config.model.pretrained` unset, or 'none')."""
  path = config.model.pretrained
  if path is None or path.strip().lower() == FROM_SCRATCH:
    return None
  return path


def describe_init(config) -> str:
  """How the backbone of a run was initialised, for records and reports."""
  path = weights_dir(config)
  if path is not None:
    return f'pretrained ({path})'
  if config.model.pretrained is not None:
    return 'from scratch (pretrained=none)'
  return 'from scratch'


def check_config(config) -> None:
  """Refuses, before anything is built, a run that needs ImageNet weights and has none, or
  names a weights directory that does not exist (ValueError naming the flag)."""
  path = weights_dir(config)
  if path is not None:
    if not os.path.isdir(path):
      raise ValueError(
          f'config.model.pretrained={path!r} does not exist. Make it with '
          f'python scripts/convert_resnet.py --input=<ImageNet {config.model.backbone} '
          f'.safetensors or .pth> --depth={config.model.backbone} --output={path} '
          '(docs/reproduce.md)')
    return
  if config.model.require_pretrained and config.model.pretrained is None:
    backbone = config.model.backbone
    raise ValueError(
        f'config.model.pretrained is not set, and {config.name or "this config"} starts from '
        'ImageNet weights, as the paper does (config.model.require_pretrained). Convert '
        f'torchvision\'s or timm\'s ImageNet {backbone} once: python scripts/convert_resnet.py '
        f'--input={backbone}.safetensors --depth={backbone} '
        f'--output=weights/{backbone}_imagenet (docs/reproduce.md), then pass '
        f'--config.model.pretrained=weights/{backbone}_imagenet. To train from scratch on '
        'purpose, pass --config.model.pretrained=none.')


def save_backbone(variables: dict, directory: str):
  """Saves converted backbone variables as an orbax checkpoint (`config.model.pretrained`)."""
  directory = os.path.abspath(directory)
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(directory, variables)


def load_backbone(directory: str) -> dict:
  directory = os.path.abspath(directory)
  if not os.path.isdir(directory):
    raise FileNotFoundError(f'config.model.pretrained={directory!r} does not exist; convert '
                            'weights with scripts/convert_resnet.py')
  with ocp.StandardCheckpointer() as checkpointer:
    return checkpointer.restore(directory)


def apply_backbone(variables: dict, backbone: dict) -> dict:
  """`variables` with the backbone's params and batch_stats replaced; ValueError on mismatch."""
  out = {}
  for collection in ('params', 'batch_stats'):
    current = variables[collection]['backbone']
    new = backbone[collection]
    want = jax.tree.map(lambda x: tuple(x.shape), current)
    have = jax.tree.map(lambda x: tuple(np.shape(x)), new)
    if want != have:
      raise ValueError('The pretrained backbone does not fit config.model (backbone / width): '
                       f'{collection} structures or shapes differ')
    new = jax.tree.map(lambda c, n: jnp.asarray(n, c.dtype), current, new)
    out[collection] = {**variables[collection], 'backbone': new}
  return {**variables, **out}
