"""Stochastic TCE on ADE20k (t = 0.1; the paper's t = 1 by --config.tce.t=1.0)."""

from tce_jax.configs import ade20k_mcce


def get_config():
  config = ade20k_mcce.get_config()
  config.name = 'ade20k_tce'
  config.sampling.name = 'tce'
  config.tce.t = 0.1
  return config
