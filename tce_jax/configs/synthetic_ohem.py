"""OHEM: cross-entropy over the hard pixels (mmsegmentation's OHEMPixelSampler, thresh 0.7,
min_kept 100,000 per 512 x 1024 crop scaled to the 128 x 128 crop: 3,125 per image)."""

from tce_jax.configs import synthetic_mcce


def get_config():
  config = synthetic_mcce.get_config()
  config.name = 'synthetic_ohem'
  config.loss.name = 'ohem'
  config.loss.ohem_thresh = 0.7
  config.loss.ohem_min_kept = 3125
  return config
