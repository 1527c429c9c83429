"""Stochastic TCE (Algorithm 1): which class's images the next minibatch is drawn from.

The sampler keeps, per class c, an exponential moving average T_c of the tilted batch losses
exp(t * L_B) of the batches drawn from D_c, and draws the next class with probability
w_c = T_c / sum_l T_l. Everything is kept in log space (log T_c), so exp(t * L_B) never
overflows float32. The functions are pure and jit-able; `TCESampler` plugs them into
training through the sampler interface (`tce_jax.sampling.base`).
"""

from __future__ import annotations

from typing import Sequence

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from tce_jax.data.classes import class_tag
from tce_jax.sampling import base

Array = jax.Array


@flax.struct.dataclass
class SamplerState:
  """log_tilted [C]: log T_c; available [C]: D_c non-empty; draw_counts [C]: draws so far."""
  log_tilted: Array
  available: Array
  draw_counts: Array


def init_sampler(num_classes: int, t: float, *, available: Array | None = None) -> SamplerState:
  """Every class starts at T_c = exp(t log K), the tilted loss of a uniform prediction."""
  if available is None:
    available = jnp.ones((num_classes,), bool)
  return SamplerState(
      log_tilted=jnp.full((num_classes,), t * jnp.log(num_classes), jnp.float32),
      available=jnp.asarray(available, bool),
      draw_counts=jnp.zeros((num_classes,), jnp.int32))


def update_sampler(state: SamplerState, cls: Array, batch_loss: Array, *, t: float,
                   gamma: float) -> SamplerState:
  """Lines 6-8: T_c <- (1 - gamma) T_c + gamma exp(t L_B) for the drawn class c only."""
  log_old = state.log_tilted[cls]
  log_new = jnp.logaddexp(jnp.log1p(-jnp.asarray(gamma, jnp.float32)) + log_old,
                          jnp.log(jnp.asarray(gamma, jnp.float32))
                          + jnp.asarray(t, jnp.float32) * batch_loss.astype(jnp.float32))
  return state.replace(log_tilted=state.log_tilted.at[cls].set(log_new),
                       draw_counts=state.draw_counts.at[cls].add(1))


def class_probabilities(state: SamplerState) -> Array:
  """w = softmax(log T) [C]: the sampling weights of Algorithm 1."""
  return jax.nn.softmax(state.log_tilted)


def _draw_logits(state: SamplerState) -> Array:
  return jnp.where(state.available, state.log_tilted, -jnp.inf)


def draw_probabilities(state: SamplerState) -> Array:
  """[C]: the probabilities `draw_class` uses: w renormalised over the available classes."""
  return jax.nn.softmax(_draw_logits(state))


def draw_class(state: SamplerState, key: Array) -> Array:
  """c ~ Categorical(w), restricted to the classes whose D_c is non-empty."""
  return jax.random.categorical(key, _draw_logits(state)).astype(jnp.int32)


class TCESampler(base.Sampler):
  """Stochastic TCE (Algorithm 1): the batch of each step is drawn from D_c, c drawn with the
  tilted weights, which are updated with the batch's mean cross-entropy (config.tce.t,
  config.tce.gamma)."""
  name = 'tce'
  class_conditional = True
  needs_class_index = True

  def init(self) -> SamplerState:
    return init_sampler(self.num_classes, self.config.tce.t, available=self.available)

  def update(self, state: SamplerState, *, cls, logits, labels, mcce, axis_name):
    del logits, labels, axis_name  # Algorithm 1 line 7 uses the batch loss only
    return update_sampler(state, cls, mcce, t=self.config.tce.t, gamma=self.config.tce.gamma)

  def draw(self, state: SamplerState, key: Array) -> Array:
    return draw_class(state, key)

  def scalars(self, state: SamplerState, class_names: Sequence[str]) -> dict[str, float]:
    """Per class: the probability of the next draw, log T_c, and the draws so far."""
    probs = np.asarray(jax.device_get(draw_probabilities(state)))
    log_tilted = np.asarray(jax.device_get(state.log_tilted))
    counts = np.asarray(jax.device_get(state.draw_counts))
    scalars = {}
    for c, name in enumerate(class_names):
      scalars[f'sampling/probability/{class_tag(name)}'] = float(probs[c])
      scalars[f'sampling/log_tilted/{class_tag(name)}'] = float(log_tilted[c])
      scalars[f'sampling/draw_count/{class_tag(name)}'] = int(counts[c])
    return scalars
