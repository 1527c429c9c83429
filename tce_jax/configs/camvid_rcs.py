"""Rare class sampling (DAFormer) on CamVid, its image-size parameters scaled to CamVid's
360 x 480 images and the recipe's 256 x 256 crops by pixel fraction:
- D_c holds the images with more than 989 pixels of c: DAFormer's 3,000 pixels of a
  1024 x 512 image (0.57%) as the same fraction of 172,800 pixels;
- class-aware crops: up to 10 redraws until the crop holds 375 pixels of the drawn class,
  DAFormer's 1,500 of a 512 x 512 crop (0.57%) as the same fraction of 256 x 256;
- temperature 0.01 (DAFormer's).
"""

from tce_jax.configs import camvid_mcce


def get_config():
  config = camvid_mcce.get_config()
  config.name = 'camvid_rcs'
  config.sampling.name = 'rcs'
  config.sampling.rcs_temperature = 0.01
  config.sampling.min_pixels = camvid_mcce.rcs_min_pixels()  # 989
  config.sampling.class_crop.retries = 10
  # config.sampling.class_crop.min_pixels = 375: camvid_mcce sets it for the 256 x 256 crop
  return config
