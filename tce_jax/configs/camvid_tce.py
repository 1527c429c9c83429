"""Stochastic TCE (Algorithm 1) on CamVid: each batch is drawn from the images holding a class
drawn with probability proportional to its tilted-loss EMA; t = 0.1 (`--config.tce.t=1.0` for
the paper's t = 1, 0 for class-uniform sampling). The recipe is configs/camvid_mcce.py's."""

from tce_jax.configs import camvid_mcce


def get_config():
  config = camvid_mcce.get_config()
  config.name = 'camvid_tce'
  config.sampling.name = 'tce'
  config.tce.t = 0.1
  return config
