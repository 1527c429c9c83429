"""Stochastic TCE (Algorithm 1, t = 0.1; t = 1 by --config.tce.t=1.0) on the synthetic dataset."""

from tce_jax.configs import synthetic_mcce


def get_config():
  config = synthetic_mcce.get_config()
  config.name = 'synthetic_tce'
  config.sampling.name = 'tce'
  config.tce.t = 0.1
  return config
