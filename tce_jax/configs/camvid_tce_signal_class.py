"""Stochastic TCE extended, on CamVid: the EMA of class c updated with the batch's loss over
c's pixels (the class signal), class-aware crops (10 redraws until the crop holds 375 pixels
of c, as configs/camvid_rcs.py), t = 1 (the study's `tce_signal_class_crop_t1`)."""

from tce_jax.configs import camvid_tce


def get_config():
  config = camvid_tce.get_config()
  config.name = 'camvid_tce_signal_class'
  config.tce.t = 1.0
  config.tce.signal = 'class'
  config.tce.size_prior = 0.0
  config.sampling.class_crop.retries = 10
  return config
