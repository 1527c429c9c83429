"""MCCE on Cityscapes: DeepLabv3+ / ResNet-101, the paper's recipe (DeepLab preprocessing).

Needs the prepared dataset: python -m tce_jax.prepare --dataset=cityscapes --manual_dir=DIR
and ImageNet backbone weights: --config.model.pretrained=DIR from scripts/convert_resnet.py
(or --config.model.pretrained=none to train from scratch on purpose). See docs/reproduce.md.
"""

from tce_jax.configs import default


def get_config():
  config = default.get_config()
  config.name = 'cityscapes_mcce'
  config.dataset.name = 'cityscapes'
  config.model.name = 'deeplabv3plus'
  config.model.backbone = 'resnet101'
  config.model.require_pretrained = True  # as in the paper (docs/reproduce.md)
  config.model.output_stride = 16
  config.model.eval_output_stride = 16
  config.input.crop_size = (769, 769)
  # Scaled to the crop's area (loss 'ohem', class-aware crops): mmsegmentation's OHEM keeps
  # >= 100,000 of a 512 x 1024 crop; DAFormer's crops hold >= 1,500 pixels of 512 x 512.
  config.loss.ohem_min_kept = 112_794
  config.sampling.class_crop.min_pixels = 3_384
  config.input.scales = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0)
  config.input.eval_batch_size = 8
  config.input.num_threads = 8
  config.train.batch_size = 8  # 2 per GPU on 4 GPUs, as in the paper
  config.train.num_steps = 80_000
  config.train.learning_rate = 0.01
  config.train.log_every = 100
  config.train.eval_every = 8_000
  config.train.checkpoint_every = 2_000
  return config
