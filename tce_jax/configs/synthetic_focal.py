"""Focal loss (gamma 2, alpha = inverse pixel frequency) on the synthetic dataset."""

from tce_jax.configs import synthetic_mcce


def get_config():
  config = synthetic_mcce.get_config()
  config.name = 'synthetic_focal'
  config.loss.name = 'focal'
  return config
