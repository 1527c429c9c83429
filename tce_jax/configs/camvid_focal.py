"""Focal loss (the paper's: gamma 2, alpha = inverse pixel frequency of the train split, mean
1) on CamVid; everything else is configs/camvid_mcce.py's fixed recipe."""

from tce_jax.configs import camvid_mcce


def get_config():
  config = camvid_mcce.get_config()
  config.name = 'camvid_focal'
  config.loss.name = 'focal'
  return config
