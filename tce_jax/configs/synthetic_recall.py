"""Recall loss (Tian et al., ICRA 2022): cross-entropy weighted per class by 1 - its recall
on the batch."""

from tce_jax.configs import synthetic_mcce


def get_config():
  config = synthetic_mcce.get_config()
  config.name = 'synthetic_recall'
  config.loss.name = 'recall'
  return config
