"""Stochastic TCE (Algorithm 1): which class's images the next minibatch is drawn from.

The sampler keeps, per class c, an exponential moving average T_c of the tilted batch losses
exp(t * L_B) of the batches drawn from D_c, and draws the next class with probability
w_c = T_c / sum_l T_l. Everything is kept in log space (log T_c), so exp(t * L_B) never
overflows float32. The functions are pure and jit-able; `TCESampler` plugs them into
training through the sampler interface (`tce_jax.sampling.base`).

Two options extend the paper's version (which is their default): `tce.signal='class'`
updates T_c with the batch's loss over the pixels labelled c instead of the whole batch's,
and `tce.size_prior` = beta draws c with probability proportional to |D_c|^beta T_c (TERM's
class-size factor).
"""

from __future__ import annotations

from typing import Sequence

import flax.struct
import jax
import jax.numpy as jnp
from jax import lax
import numpy as np

from tce_jax import losses
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
                   gamma: float, has_loss: Array | bool = True) -> SamplerState:
  """Lines 6-8: T_c <- (1 - gamma) T_c + gamma exp(t L_B) for the drawn class c only.

  With `has_loss` False (the class signal of a batch without a pixel of c), T_c is kept; the
  draw is counted either way.
  """
  log_old = state.log_tilted[cls]
  log_new = jnp.logaddexp(jnp.log1p(-jnp.asarray(gamma, jnp.float32)) + log_old,
                          jnp.log(jnp.asarray(gamma, jnp.float32))
                          + jnp.asarray(t, jnp.float32) * batch_loss.astype(jnp.float32))
  log_new = jnp.where(has_loss, log_new, log_old)
  return state.replace(log_tilted=state.log_tilted.at[cls].set(log_new),
                       draw_counts=state.draw_counts.at[cls].add(1))


def class_batch_loss(logits: Array, labels: Array, cls: Array, *,
                     axis_name: str | None = None) -> tuple[Array, Array]:
  """The global batch's mean CE over the pixels labelled `cls`, and whether it has any
  (the 'class' signal: the class-conditional loss that the tilt is about)."""
  ce, valid = losses.pixel_cross_entropy(logits, labels)
  mask = valid & (labels == cls)
  total, count = jnp.sum(jnp.where(mask, ce, 0.0)), jnp.sum(mask, dtype=jnp.float32)
  if axis_name is not None:
    total, count = lax.psum(total, axis_name), lax.psum(count, axis_name)
  return jnp.where(count > 0, total / jnp.maximum(count, 1.0), 0.0), count > 0


def class_probabilities(state: SamplerState) -> Array:
  """w = softmax(log T) [C]: the sampling weights of Algorithm 1."""
  return jax.nn.softmax(state.log_tilted)


def _draw_logits(state: SamplerState, log_prior: Array | None) -> Array:
  logits = state.log_tilted if log_prior is None else state.log_tilted + log_prior
  return jnp.where(state.available, logits, -jnp.inf)


def draw_probabilities(state: SamplerState, log_prior: Array | None = None) -> Array:
  """[C]: the probabilities `draw_class` uses: w (times exp(log_prior), the class-size prior)
  renormalised over the available classes."""
  return jax.nn.softmax(_draw_logits(state, log_prior))


def draw_class(state: SamplerState, key: Array, log_prior: Array | None = None) -> Array:
  """c ~ Categorical(w), restricted to the classes whose D_c is non-empty; with `log_prior`
  [C], w_c is multiplied by exp(log_prior_c)."""
  return jax.random.categorical(key, _draw_logits(state, log_prior)).astype(jnp.int32)


SIGNALS = ('batch', 'class')


def _check(signal: str, size_prior: float, gamma: float) -> None:
  """ValueError naming the first invalid hyperparameter (field name first)."""
  if signal not in SIGNALS:
    raise ValueError(f'signal={signal!r}: must be one of {SIGNALS}')
  if isinstance(size_prior, bool) or not isinstance(size_prior, (int, float)) or not (
      -10 <= size_prior <= 10):
    raise ValueError(f'size_prior={size_prior!r}: the exponent must be in [-10, 10]')
  if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not 0 < gamma <= 1:
    raise ValueError(f'gamma={gamma!r}: the EMA rate must be in (0, 1]')


class TCESampler(base.Sampler):
  """Stochastic TCE (Algorithm 1): the batch of each step is drawn from D_c, c drawn with the
  tilted weights, which are updated with the batch's mean cross-entropy.

  `t`: the tilt (0: classes drawn uniformly); `gamma`: the EMA rate of T_c (TERM's code: 0.2);
  `signal`: 'batch' (the paper's: the whole batch's mean CE) or 'class' (the CE over the
  pixels of the drawn class); `size_prior` beta: draw with |D_c|^beta T_c (0: the paper's).
  From a config: config.tce.{t, gamma, signal, size_prior}."""
  name = 'tce'
  class_conditional = True
  needs_class_index = True

  def __init__(self, *, num_classes: int, class_index, t: float, gamma: float = 0.2,
               signal: str = 'batch', size_prior: float = 0.0, lag: int = 1):
    super().__init__(num_classes=num_classes, class_index=class_index, lag=lag)
    _check(signal, size_prior, gamma)
    self.t, self.gamma, self.signal, self.size_prior = (float(t), float(gamma), signal,
                                                        float(size_prior))

  @classmethod
  def config_kwargs(cls, config) -> dict:
    return {'t': config.tce.t, 'gamma': config.tce.gamma, 'signal': config.tce.signal,
            'size_prior': config.tce.size_prior}

  @classmethod
  def check_config(cls, config) -> None:
    try:
      _check(config.tce.signal, config.tce.size_prior, config.tce.gamma)
    except ValueError as e:
      raise ValueError(f'config.tce.{e}') from None

  @property
  def log_prior(self) -> np.ndarray | None:
    """[C] size_prior x log |D_c| (0 where D_c is empty), or None (size_prior 0)."""
    beta = self.size_prior
    if beta == 0:
      return None
    sizes = np.asarray(self.class_index.image_counts, np.float64)
    return np.where(sizes > 0, beta * np.log(np.maximum(sizes, 1)), 0.0).astype(np.float32)

  def init(self) -> SamplerState:
    return init_sampler(self.num_classes, self.t, available=self.available)

  def update(self, state: SamplerState, *, cls, logits, labels, mcce, axis_name):
    if self.signal == 'batch':  # Algorithm 1 line 7: the whole batch's loss
      return update_sampler(state, cls, mcce, t=self.t, gamma=self.gamma)
    loss, has_pixels = class_batch_loss(logits, labels, cls, axis_name=axis_name)
    return update_sampler(state, cls, loss, t=self.t, gamma=self.gamma, has_loss=has_pixels)

  def draw(self, state: SamplerState, key: Array) -> Array:
    return draw_class(state, key, self.log_prior)

  def scalars(self, state: SamplerState, class_names: Sequence[str]) -> dict[str, float]:
    """Per class: the probability of the next draw, log T_c, and the draws so far."""
    probs = np.asarray(jax.device_get(draw_probabilities(state, self.log_prior)))
    log_tilted = np.asarray(jax.device_get(state.log_tilted))
    counts = np.asarray(jax.device_get(state.draw_counts))
    scalars = {}
    for c, name in enumerate(class_names):
      scalars[f'sampling/probability/{class_tag(name)}'] = float(probs[c])
      scalars[f'sampling/log_tilted/{class_tag(name)}'] = float(log_tilted[c])
      scalars[f'sampling/draw_count/{class_tag(name)}'] = int(counts[c])
    return scalars
