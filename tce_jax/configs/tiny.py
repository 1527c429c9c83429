"""The tiny profile: a small ResNet-18 DeepLabv3+ on a small synthetic dataset, for smoke runs.

Not an experiment: overrides applied on top of any config (`scripts/experiment.py --quick`, the
test suite, dry runs), so that a whole run takes seconds on a CPU. The one copy of it.
"""

from __future__ import annotations

from typing import Any

import ml_collections

# 'section.field' -> value (the keys of ConfigDict.update_from_flattened_dict).
OVERRIDES: dict[str, Any] = {
    'dataset.synthetic.num_train': 48,
    'dataset.synthetic.num_validation': 8,
    'dataset.synthetic.height': 32,
    'dataset.synthetic.width': 64,
    'model.backbone': 'resnet18',
    'model.width': 8,
    'model.aspp_channels': 16,
    'model.decoder_channels': 16,
    'input.crop_size': (32, 32),
    'input.eval_batch_size': 4,
    'input.num_threads': 1,
    'train.batch_size': 4,
}


def apply(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """`config` with the tiny profile applied (in place; returned for chaining)."""
  config.update_from_flattened_dict(OVERRIDES)
  return config


def scale_method_sizes(config: ml_collections.ConfigDict) -> None:
  """The size-dependent method parameters of a study's config at the profile's 32 x 64 images
  and 32 x 32 crops, the same fractions as at full size: rare class sampling's D_c threshold
  (when set), the class-aware crops' pixels of the class, OHEM's pixels kept."""
  if config.sampling.min_pixels:
    config.sampling.min_pixels = 11
  config.sampling.class_crop.min_pixels = 6
  config.loss.ohem_min_kept = 195


def command_line_flags(**replace: Any) -> list[str]:
  """The profile as `--config.section.field=value` flags of `python -m tce_jax.main`.

  `replace` (keyword 'section__field', e.g. input__crop_size=(64, 64)) changes a value here
  rather than by a second flag: a tuple flag given twice is concatenated by ml_collections.
  """
  values = dict(OVERRIDES)
  for key, value in replace.items():
    field = key.replace('__', '.')
    if field not in values:
      raise KeyError(f'{field} is not a field of the tiny profile')
    values[field] = value
  return [f'--config.{field}={value}' for field, value in values.items()]


def get_config() -> ml_collections.ConfigDict:
  """The default config with the tiny profile: `--config=configs/tiny.py` is a smoke run of
  a few seconds (add `--config.train.num_steps=4`)."""
  from tce_jax.configs import default  # pylint: disable=g-import-not-at-top
  config = apply(default.get_config())
  config.name = 'tiny'
  return config
