"""Samplers: how each training step's batch is composed, and the registry of their names.

`SAMPLERS` is the one list of sampler names (config.sampling.name); config validation and the
training loop read it. A new sampler is a `base.Sampler` subclass in its own module here and
one entry below. The paper's Algorithm 1 (Stochastic TCE) lives in `tce.py`, DAFormer's rare
class sampling in `rcs.py`; their pure functions are re-exported here.
"""

from __future__ import annotations

import ml_collections

from tce_jax.sampling.base import NO_CLASS, Sampler, draw_key
from tce_jax.sampling.rcs import RareClassSampler, rcs_probabilities
from tce_jax.sampling.tce import (SamplerState, TCESampler, class_batch_loss,
                                  class_probabilities, draw_class, draw_probabilities,
                                  init_sampler, update_sampler)
from tce_jax.sampling.uniform import UniformSampler

# config.sampling.name -> sampler class.
SAMPLERS: dict[str, type[Sampler]] = {
    'uniform': UniformSampler,
    'tce': TCESampler,
    'rcs': RareClassSampler,
}


def create_sampler(config: ml_collections.ConfigDict, *, num_classes: int,
                   class_index=None) -> Sampler:
  """The sampler of `config.sampling.name` (`Sampler.from_config`)."""
  return SAMPLERS[config.sampling.name].from_config(config, num_classes=num_classes,
                                                    class_index=class_index)


__all__ = ['NO_CLASS', 'SAMPLERS', 'RareClassSampler', 'Sampler', 'SamplerState', 'TCESampler',
           'UniformSampler', 'class_batch_loss', 'class_probabilities', 'create_sampler',
           'draw_class', 'draw_key', 'draw_probabilities', 'init_sampler', 'rcs_probabilities',
           'update_sampler']
