"""Stochastic TCE (Algorithm 1): which class's images the next minibatch is drawn from.

The sampler keeps, per class c, an exponential moving average T_c of the tilted batch losses
exp(t * L_B) of the batches drawn from D_c, and draws the next class with probability
w_c = T_c / sum_l T_l. Everything is kept in log space (log T_c), so exp(t * L_B) never
overflows float32. All functions are pure and jit-able.
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp

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


def draw_class(state: SamplerState, key: Array) -> Array:
  """c ~ Categorical(w), restricted to the classes whose D_c is non-empty."""
  logits = jnp.where(state.available, state.log_tilted, -jnp.inf)
  return jax.random.categorical(key, logits).astype(jnp.int32)
