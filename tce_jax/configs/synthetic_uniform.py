"""Class-uniform sampling: Stochastic TCE with t = 0, which separates the effect of the tilt
from that of class-conditional sampling (the ablation the paper lacks)."""

from tce_jax.configs import synthetic_tce


def get_config():
  config = synthetic_tce.get_config()
  config.name = 'synthetic_uniform'
  config.tce.t = 0.0
  return config
