"""MCCE on the built-in synthetic dataset with a small DeepLabv3+ (the quick-start job)."""

from tce_jax.configs import default


def get_config():
  config = default.get_config()
  config.name = 'synthetic_mcce'
  config.dataset.name = 'synthetic'
  config.model.backbone = 'resnet18'
  config.model.width = 16
  config.model.aspp_channels = 64
  config.model.decoder_channels = 64
  config.input.crop_size = (128, 128)
  config.train.batch_size = 8
  config.train.num_steps = 2500  # about 5 minutes on 2 CPU cores
  config.train.eval_every = 500
  config.train.checkpoint_every = 500
  return config
