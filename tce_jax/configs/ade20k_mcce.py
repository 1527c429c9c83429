"""MCCE on ADE20k (150 classes): UPerNet / ResNet-101 with mmsegmentation's ADE20k recipe.

Needs the prepared dataset: python -m tce_jax.prepare --dataset=ade20k --manual_dir=DIR
and ImageNet backbone weights: --config.model.pretrained=DIR from scripts/convert_resnet.py
(or --config.model.pretrained=none to train from scratch on purpose). See docs/reproduce.md.
"""

from tce_jax.configs import default


def get_config():
  config = default.get_config()
  config.name = 'ade20k_mcce'
  config.dataset.name = 'ade20k'
  config.model.name = 'upernet'
  config.model.backbone = 'resnet101'
  config.model.require_pretrained = True  # as in the paper (docs/reproduce.md)
  config.model.output_stride = 32
  config.model.eval_output_stride = 32
  config.input.crop_size = (512, 512)
  # Scaled to the crop's area (loss 'ohem', class-aware crops): mmsegmentation's OHEM keeps
  # >= 100,000 of a 512 x 1024 crop; DAFormer's crops hold >= 1,500 pixels of 512 x 512.
  config.loss.ohem_min_kept = 50_000
  config.sampling.class_crop.min_pixels = 1_500
  config.input.base_size = (2048, 512)  # mmsegmentation's ADE20k recipe: ratio 0.5-2.0
  config.input.ratio_range = (0.5, 2.0)
  config.input.photometric = True
  config.input.eval_size = (2048, 512)  # predict with the short side at 512 ...
  config.eval.resolution = 'original'  # ... and score at the original size (mmsegmentation)
  config.input.eval_batch_size = 8
  config.eval.fairness_fraction = 0.15  # the paper's convention for 150 classes
  config.input.num_threads = 8
  config.train.batch_size = 8  # as the paper (mmsegmentation uses 16)
  config.train.num_steps = 160_000
  config.train.learning_rate = 0.01
  config.train.log_every = 100
  config.train.eval_every = 16_000
  config.train.checkpoint_every = 4_000
  return config
