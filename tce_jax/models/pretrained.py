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
