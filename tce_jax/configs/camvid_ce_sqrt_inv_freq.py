"""Cross-entropy weighted by 1 / sqrt(pixel frequency) of the train split (mean 1) on CamVid:
the milder re-weighting baseline."""

from tce_jax.configs import camvid_mcce


def get_config():
  config = camvid_mcce.get_config()
  config.name = 'camvid_ce_sqrt_inv_freq'
  config.loss.name = 'ce_sqrt_inv_freq'
  return config
