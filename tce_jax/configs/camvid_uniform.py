"""Stochastic TCE with t = 0 on CamVid: class-uniform sampling, the ablation that separates the
sampling from the tilt."""

from tce_jax.configs import camvid_tce


def get_config():
  config = camvid_tce.get_config()
  config.name = 'camvid_uniform'
  config.tce.t = 0.0
  return config
