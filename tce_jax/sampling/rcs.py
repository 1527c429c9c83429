"""Rare class sampling (DAFormer, Hoyer et al. 2022): a fixed class distribution that favours
the classes with few pixels.

The class of each batch is drawn with p(c) = softmax((1 - f_c) / T) over the classes with a
non-empty D_c, f_c the pixel frequency of class c in the training split (over every class
with pixels) and T the temperature (config.sampling.rcs_temperature, DAFormer: 0.01). With
T = 0.01, a class with 1% fewer pixel share than another is drawn e times as often. The
images are then drawn from D_c, which DAFormer restricts to the images with more than
`min_pixels` pixels of c (config.sampling.min_pixels), and the crop is made to hold the class
(config.sampling.class_crop); `configs/synthetic_rcs.py` sets the three as DAFormer does.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from tce_jax.data.classes import class_tag
from tce_jax.sampling import base


def rcs_probabilities(pixel_counts: np.ndarray, available: np.ndarray,
                      temperature: float) -> np.ndarray:
  """[K] float64: DAFormer's p(c) = softmax((1 - f_c) / T), f_c = pixel_counts_c over the
  pixels of all classes, renormalised over the `available` classes (0 elsewhere)."""
  counts = np.asarray(pixel_counts, np.float64)
  available = np.asarray(available, bool)
  if not available.any():
    raise ValueError('Rare class sampling needs at least one class with a non-empty D_c')
  logits = (1.0 - counts / counts.sum()) / temperature
  logits = np.where(available, logits, -np.inf)
  weights = np.exp(logits - logits[available].max())
  return weights / weights.sum()


def _check_temperature(temperature: float) -> None:
  if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or (
      temperature <= 0):
    raise ValueError(f'temperature={temperature!r}: must be a positive number (DAFormer: '
                     '0.01)')


class RareClassSampler(base.Sampler):
  """Rare class sampling: each batch from D_c, c ~ softmax((1 - f_c) / T) (stateless but for
  the draw counts, which TensorBoard shows). `temperature`: T (DAFormer: 0.01); from a
  config: config.sampling.rcs_temperature. DAFormer's D_c (images with more than min_pixels
  of c) is the class index's `with_min_pixels`."""
  name = 'rcs'
  class_conditional = True
  needs_class_index = True

  def __init__(self, *, num_classes: int, class_index, temperature: float = 0.01,
               lag: int = 1):
    super().__init__(num_classes=num_classes, class_index=class_index, lag=lag)
    _check_temperature(temperature)
    self.temperature = float(temperature)

  @classmethod
  def config_kwargs(cls, config) -> dict:
    return {'temperature': config.sampling.rcs_temperature}

  @classmethod
  def check_config(cls, config) -> None:
    try:
      _check_temperature(config.sampling.rcs_temperature)
    except ValueError as e:
      raise ValueError(f'config.sampling.rcs_{e}') from None

  @property
  def probabilities(self) -> np.ndarray:
    """[K] float64: the fixed probability of drawing each class."""
    return rcs_probabilities(self.class_index.pixel_counts, self.available, self.temperature)

  def init(self) -> dict:
    return {'draw_counts': jnp.zeros((self.num_classes,), jnp.int32)}

  def update(self, state, *, cls, logits, labels, mcce, axis_name):
    del logits, labels, mcce, axis_name
    return {'draw_counts': state['draw_counts'].at[cls].add(1)}

  def draw(self, state, key: jax.Array) -> jax.Array:
    del state
    with np.errstate(divide='ignore'):
      log_p = np.log(self.probabilities).astype(np.float32)
    return jax.random.categorical(key, jnp.asarray(log_p)).astype(jnp.int32)

  def scalars(self, state, class_names: Sequence[str]) -> dict[str, float]:
    """Per class: the (fixed) probability of a draw and the draws so far."""
    probs = self.probabilities
    counts = np.asarray(jax.device_get(state['draw_counts']))
    scalars = {}
    for c, name in enumerate(class_names):
      scalars[f'sampling/probability/{class_tag(name)}'] = float(probs[c])
      scalars[f'sampling/draw_count/{class_tag(name)}'] = int(counts[c])
    return scalars
