"""Stochastic TCE on Cityscapes (t = 0.1; the paper's t = 1 by --config.tce.t=1.0)."""

from tce_jax.configs import cityscapes_mcce


def get_config():
  config = cityscapes_mcce.get_config()
  config.name = 'cityscapes_tce'
  config.sampling.name = 'tce'
  config.tce.t = 0.1
  return config
