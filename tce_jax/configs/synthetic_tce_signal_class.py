"""Stochastic TCE with the class-conditional signal and class-aware crops, t = 1: the EMA of
class c is updated with the batch's loss over the pixels labelled c (not the whole batch's,
Algorithm 1's line 7), and the crop is made to hold c (up to 10 redraws, as in
configs/synthetic_rcs.py). TERM's class-size factor is --config.tce.size_prior=1.0. The
paper's version is configs/synthetic_tce.py."""

from tce_jax.configs import synthetic_tce


def get_config():
  config = synthetic_tce.get_config()
  config.name = 'synthetic_tce_signal_class'
  config.tce.t = 1.0
  config.tce.signal = 'class'
  config.tce.size_prior = 0.0
  config.sampling.class_crop.retries = 10
  config.sampling.class_crop.min_pixels = 94
  return config
