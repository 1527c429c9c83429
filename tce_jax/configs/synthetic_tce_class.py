"""The direct class-level tilted loss (eq. 3), t = 1, with plain (shuffled-epoch) sampling:
the method that lifted the tail in the first study (docs/results.md). The tilt can be ramped
up from 0 with --config.tce.t_warmup_steps=N (0 here, as in that study)."""

from tce_jax.configs import synthetic_mcce


def get_config():
  config = synthetic_mcce.get_config()
  config.name = 'synthetic_tce_class'
  config.loss.name = 'tce_class'
  config.tce.t = 1.0
  config.tce.t_warmup_steps = 0
  return config
