"""Focal loss without class weights (alpha = 1, gamma 2), the form users compare with; the
paper's Focal (alpha = inverse pixel frequency) is configs/synthetic_focal.py."""

from tce_jax.configs import synthetic_mcce


def get_config():
  config = synthetic_mcce.get_config()
  config.name = 'synthetic_focal_no_alpha'
  config.loss.name = 'focal_no_alpha'
  config.loss.focal_gamma = 2.0
  return config
