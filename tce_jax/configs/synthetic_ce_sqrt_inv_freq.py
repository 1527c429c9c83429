"""Cross-entropy with class weights 1 / sqrt(pixel frequency), normalised to mean 1 (the
milder re-weighting baseline; plain inverse frequency is --config.loss.name=weighted_ce)."""

from tce_jax.configs import synthetic_mcce


def get_config():
  config = synthetic_mcce.get_config()
  config.name = 'synthetic_ce_sqrt_inv_freq'
  config.loss.name = 'ce_sqrt_inv_freq'
  return config
