"""Checks a config before anything is built or compiled; errors name the field.

The lists of valid names are the registries themselves (datasets, models, losses, samplers),
so a new entry is valid as soon as it is registered. Deprecated fields are moved to their new
place here, with a warning.
"""

from __future__ import annotations

import functools

from absl import logging
import ml_collections

from tce_jax import evaluation
from tce_jax import losses
from tce_jax import models
from tce_jax import sampling
from tce_jax.models import pretrained


def _fail(field: str, value, why: str):
  raise ValueError(f'config.{field}={value!r}: {why}')


def value(config: ml_collections.ConfigDict, field: str):
  """The value of a dotted field ('tce.t') of `config`."""
  return functools.reduce(lambda node, part: node[part], field.split('.'), config)



# Update rules of train_step.create_optimizer.
OPTIMIZERS = ('sgd', 'adamw')


def _one_of(config: ml_collections.ConfigDict, field: str, choices):
  current = value(config, field)
  if current not in choices:
    _fail(field, current, f'must be one of {sorted(choices)}')


def _positive(config: ml_collections.ConfigDict, field: str, *, allow_zero: bool = False):
  current = value(config, field)
  if not isinstance(current, (int, float)) or current < 0 or (current == 0 and not allow_zero):
    _fail(field, current, 'must be a non-negative number' if allow_zero else
          'must be a positive number')


def upgrade_deprecated(config: ml_collections.ConfigDict) -> None:
  """Moves deprecated fields to their new place (in place), warning when one was set.

  config.loss.t_warmup_steps -> config.tce.t_warmup_steps (the tilt's section).
  """
  old = config.loss.t_warmup_steps
  if old is None:
    return
  if old:
    if config.tce.t_warmup_steps not in (0, old):
      _fail('loss.t_warmup_steps', old, 'deprecated, and config.tce.t_warmup_steps='
            f'{config.tce.t_warmup_steps} is set too: set only config.tce.t_warmup_steps')
    logging.warning('config.loss.t_warmup_steps is deprecated: use config.tce.t_warmup_steps '
                    '(set to %d from it).', old)
    config.tce.t_warmup_steps = old
  config.loss.t_warmup_steps = None  # 0: the old default, nothing to move


def validate_model_config(config: ml_collections.ConfigDict) -> None:
  """The fields that building the model and evaluating it read (training's are extra)."""
  from tce_jax.data import datasets  # pylint: disable=g-import-not-at-top  (the step needs none)
  upgrade_deprecated(config)
  _one_of(config, 'dataset.name', datasets.DATASETS)
  _one_of(config, 'model.name', models.MODELS)
  _one_of(config, 'model.backbone', models.BACKBONES)
  _one_of(config, 'model.output_stride', (8, 16, 32))
  _one_of(config, 'model.eval_output_stride', (8, 16, 32))
  for field in ('input.eval_batch_size', 'model.width', 'model.aspp_channels',
                'model.decoder_channels'):
    _positive(config, field)
  if not config.eval.scales or min(config.eval.scales) <= 0:
    _fail('eval.scales', tuple(config.eval.scales), 'must be positive factors')
  _one_of(config, 'eval.mode', evaluation.MODES)
  _one_of(config, 'eval.resolution', evaluation.RESOLUTIONS)
  if config.eval.mode == 'slide':
    for field in ('window', 'stride'):
      pair = config.eval[field]
      if pair is None or len(pair) != 2 or min(pair) < 1:
        _fail(f'eval.{field}', pair, 'sliding-window inference needs (height, width), '
              'positive (e.g. --config.eval.window=769,769 --config.eval.stride=513,513)')
    if any(s > w for s, w in zip(config.eval.stride, config.eval.window)):
      _fail('eval.stride', tuple(config.eval.stride),
            f'must not exceed the window {tuple(config.eval.window)} (pixels would be missed)')
  sides = config.eval.canvas_sides
  if sides is not None and (not sides or min(sides) < 1 or list(sides) != sorted(set(sides))):
    _fail('eval.canvas_sides', tuple(sides), 'must be positive and increasing (or None)')
  if config.input.memory_cache_gb < 0:
    _fail('input.memory_cache_gb', config.input.memory_cache_gb, 'must be >= 0 (0: no cache)')
  if config.eval.preview_images < 0:
    _fail('eval.preview_images', config.eval.preview_images, 'must be >= 0 (0: no preview)')
  if not 0 < config.eval.fairness_fraction <= 0.5:
    _fail('eval.fairness_fraction', config.eval.fairness_fraction, 'must be in (0, 0.5]')


def validate_config(config: ml_collections.ConfigDict, num_devices: int,
                    num_processes: int = 1) -> None:
  """Raises ValueError naming the first invalid field of `config` (a training config)."""
  validate_model_config(config)
  _one_of(config, 'loss.name', losses.LOSSES)
  _one_of(config, 'sampling.name', sampling.SAMPLERS)
  _one_of(config, 'train.nonfinite', ('stop', 'skip'))
  _one_of(config, 'train.optimizer', OPTIMIZERS)
  for field in ('train.batch_size', 'train.num_steps', 'train.learning_rate',
                'train.log_every', 'train.eval_every',
                'train.checkpoint_every', 'train.keep_checkpoints', 'input.num_threads',
                'input.prefetch'):
    _positive(config, field)
  for field in ('train.weight_decay', 'train.momentum', 'train.poly_power',
                'loss.focal_gamma', 'tce.t_warmup_steps'):
    _positive(config, field, allow_zero=True)
  for field in ('batch_size',):
    if config.train[field] % num_devices:
      _fail(f'train.{field}', config.train[field],
            f'must be divisible by the number of devices ({num_devices})')
  if config.input.eval_batch_size % num_devices:
    _fail('input.eval_batch_size', config.input.eval_batch_size,
          f'must be divisible by the number of devices ({num_devices})')
  if config.train.batch_size % num_processes:
    _fail('train.batch_size', config.train.batch_size,
          f'must be divisible by the number of processes ({num_processes})')
  if not 0 < config.tce.gamma <= 1:
    _fail('tce.gamma', config.tce.gamma, 'the EMA rate must be in (0, 1]')
  if not -100 <= config.tce.t <= 100:
    _fail('tce.t', config.tce.t, 'the tilt must be in [-100, 100]')
  if not isinstance(config.sampling.lag, int) or config.sampling.lag < 1:
    _fail('sampling.lag', config.sampling.lag, 'must be an integer >= 1')
  for field in ('sampling.min_pixels', 'sampling.class_crop.retries'):
    if not isinstance(value(config, field), int) or value(config, field) < 0:
      _fail(field, value(config, field), 'must be an integer >= 0')
  class_conditional = sampling.SAMPLERS[config.sampling.name].class_conditional
  if config.sampling.class_crop.retries:
    if not class_conditional:
      _fail('sampling.class_crop.retries', config.sampling.class_crop.retries,
            f'class-aware crops need a class-conditional sampler (config.sampling.name='
            f'{config.sampling.name!r} draws no class)')
    min_pixels = config.sampling.class_crop.min_pixels
    if not isinstance(min_pixels, int) or min_pixels < 1:
      _fail('sampling.class_crop.min_pixels', min_pixels, 'must be an integer >= 1')
  if config.sampling.min_pixels and not class_conditional:
    _fail('sampling.min_pixels', config.sampling.min_pixels,
          f'restricts D_c, which only class-conditional samplers use (config.sampling.name='
          f'{config.sampling.name!r})')
  if not 0 < config.loss.ohem_thresh <= 1:
    _fail('loss.ohem_thresh', config.loss.ohem_thresh, 'must be a probability in (0, 1]')
  if not isinstance(config.loss.ohem_min_kept, int) or config.loss.ohem_min_kept < 0:
    _fail('loss.ohem_min_kept', config.loss.ohem_min_kept, 'must be an integer >= 0')
  if not 0 <= config.model.dropout < 1:
    _fail('model.dropout', config.model.dropout, 'must be in [0, 1)')
  crop = tuple(config.input.crop_size)
  if len(crop) != 2 or min(crop) < 16:
    _fail('input.crop_size', crop, 'must be (height, width), each at least 16')
  if not config.input.scales or min(config.input.scales) <= 0:
    _fail('input.scales', tuple(config.input.scales), 'must be positive factors')
  if config.train.grad_clip_norm is not None and config.train.grad_clip_norm <= 0:
    _fail('train.grad_clip_norm', config.train.grad_clip_norm, 'must be positive or None')
  if config.dataset.train_split == config.dataset.eval_split:
    _fail('dataset.eval_split', config.dataset.eval_split, 'must differ from the train split')
  sampling.SAMPLERS[config.sampling.name].check_config(config)
  pretrained.check_config(config)
