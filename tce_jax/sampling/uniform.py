"""Shuffled epochs: every image once per epoch, in a seeded random order (plain training)."""

from __future__ import annotations

from tce_jax.sampling import base


class UniformSampler(base.Sampler):
  """Draws no class: the loader takes the images of each step from the shuffled epoch."""
  name = 'uniform'
