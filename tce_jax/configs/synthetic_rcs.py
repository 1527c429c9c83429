"""Rare class sampling (DAFormer, Hoyer et al. 2022) with DAFormer's parameters scaled to the
synthetic images: p(c) = softmax((1 - f_c) / 0.01); D_c = the images with more than 750
pixels of c (DAFormer: 3,000 of a 1024 x 512 image, 0.57%, here of 256 x 512; 188 on the
v1 benchmark's 128 x 256 images); class-aware crops with up to 10
redraws until the 128 x 128 crop holds 94 pixels of c (DAFormer: 1,500 of 512 x 512)."""

from tce_jax.configs import synthetic_mcce


def get_config():
  config = synthetic_mcce.get_config()
  config.name = 'synthetic_rcs'
  config.sampling.name = 'rcs'
  config.sampling.rcs_temperature = 0.01
  config.sampling.min_pixels = 750
  config.sampling.class_crop.retries = 10
  config.sampling.class_crop.min_pixels = 94
  return config
