"""MCCE on CamVid (11 classes, real driving frames, 360 x 480), from scratch on 2 CPU cores:
the base of every CamVid config and of the CamVid fairness study.

Needs the prepared dataset: python -m tce_jax.prepare --dataset=camvid --manual_dir=DIR
(docs/camvid.md). Trains on `train` (367 images) and scores on `test` (233) at the full
360 x 480, void ignored, as the literature does; `val` (101 images, one clip) served only to
calibrate this recipe with MCCE (`--config.dataset.eval_split=validation`), and the recipe was
fixed before any other method was trained on CamVid (docs/camvid.md: how, when, at which
commit).

No ImageNet weights exist on the machines the study runs on, so the model trains from
scratch and says so (`model.pretrained='none'`, the reports then say "from scratch");
`--config.model.pretrained=DIR` (scripts/convert_resnet.py) starts a user's run from weights.
"""

from tce_jax.configs import default

# CamVid's image (360 x 480 = 172,800 pixels) and the training crop, for the size-dependent
# method parameters below.
IMAGE_PIXELS = 360 * 480
CROP = (256, 256)


def get_config():
  config = default.get_config()
  config.name = 'camvid_mcce'
  config.dataset.name = 'camvid'
  config.dataset.eval_split = 'test'
  config.model.backbone = 'resnet18'
  config.model.width = 16
  config.model.aspp_channels = 64
  config.model.decoder_channels = 64
  config.model.pretrained = 'none'  # from scratch, on purpose (see above)
  config.input.crop_size = CROP
  config.input.scales = (0.75, 1.0, 1.25, 1.5)
  config.input.photometric = True
  config.input.eval_batch_size = 4
  config.train.batch_size = 8
  config.train.optimizer = 'adamw'
  config.train.learning_rate = 5e-3
  config.train.weight_decay = 0.01
  config.train.num_steps = 4500
  config.train.log_every = 50
  config.train.eval_every = 2250
  config.train.checkpoint_every = 250
  config.eval.preview_images = 3
  # Size-dependent method parameters, scaled from their sources' values by pixel fraction:
  # OHEM keeps >= 100,000 pixels of a 512 x 1024 crop in mmsegmentation (19.1%): 19.1% of a
  # 256 x 256 crop is 12,500.
  config.loss.ohem_min_kept = round(100_000 / (512 * 1024) * CROP[0] * CROP[1])
  # Rare class sampling's D_c: DAFormer keeps images with > 3,000 pixels of c at 1024 x 512
  # (0.57% of the image): 0.57% of 360 x 480 is 989.
  config.sampling.min_pixels = 0  # the paper's D_c; camvid_rcs.py sets 989
  # Class-aware crops: DAFormer wants 1,500 pixels of c in a 512 x 512 crop (0.57%): 0.57% of
  # a 256 x 256 crop is 375.
  config.sampling.class_crop.min_pixels = round(1_500 / (512 * 512) * CROP[0] * CROP[1])
  return config


def rcs_min_pixels() -> int:
  """DAFormer's 3,000 pixels of 1024 x 512 as the same fraction of a CamVid image: 989."""
  return round(3_000 / (1024 * 512) * IMAGE_PIXELS)
