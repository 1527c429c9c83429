"""Focal loss (gamma 2, alpha = inverse pixel frequency) on ADE20k."""

from tce_jax.configs import ade20k_mcce


def get_config():
  config = ade20k_mcce.get_config()
  config.name = 'ade20k_focal'
  config.loss.name = 'focal'
  return config
