"""Focal loss (gamma 2, alpha = inverse pixel frequency) on Cityscapes."""

from tce_jax.configs import cityscapes_mcce


def get_config():
  config = cityscapes_mcce.get_config()
  config.name = 'cityscapes_focal'
  config.loss.name = 'focal'
  return config
