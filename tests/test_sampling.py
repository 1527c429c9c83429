"""The Stochastic TCE sampler against a float64 numpy transcription of Algorithm 1."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from tce_jax import sampling


class NumpyAlgorithm1:
  """Lines 5-8 of Algorithm 1 in linear space and float64, as the paper writes them."""

  def __init__(self, num_classes, t, gamma):
    self.t, self.gamma = t, gamma
    self.T = np.full(num_classes, np.exp(t * np.log(num_classes)))

  def step(self, c, batch_loss):
    self.T[c] = (1 - self.gamma) * self.T[c] + self.gamma * np.exp(self.t * batch_loss)
    return self.T / self.T.sum()


@pytest.mark.parametrize('t,gamma', [(0.1, 0.2), (1.0, 0.05), (2.0, 0.5), (-1.0, 0.2)])
def test_matches_numpy_transcription_over_1000_steps(t, gamma):
  k, steps = 19, 1000
  rng = np.random.default_rng(0)
  classes = rng.integers(0, k, steps)
  batch_losses = rng.uniform(0.05, 5.0, steps).astype(np.float32)
  reference = NumpyAlgorithm1(k, t, gamma)
  expected = np.stack([reference.step(c, l) for c, l in zip(classes, batch_losses)])

  def body(state, inputs):
    state = sampling.update_sampler(state, inputs[0], inputs[1], t=t, gamma=gamma)
    return state, sampling.class_probabilities(state)

  final, probs = jax.jit(lambda: jax.lax.scan(
      body, sampling.init_sampler(k, t), (jnp.asarray(classes), jnp.asarray(batch_losses))))()
  np.testing.assert_allclose(probs, expected, atol=1e-5)
  np.testing.assert_array_equal(final.draw_counts, np.bincount(classes, minlength=k))


def test_initial_weights_are_uniform_and_t_zero_stays_uniform():
  state = sampling.init_sampler(7, 0.0)
  for c, loss in [(0, 3.0), (3, 0.1), (0, 9.0)]:
    state = sampling.update_sampler(state, c, jnp.float32(loss), t=0.0, gamma=0.3)
    np.testing.assert_allclose(sampling.class_probabilities(state), np.full(7, 1 / 7), atol=1e-7)
  np.testing.assert_allclose(sampling.init_sampler(19, 1.0).log_tilted, np.log(19), rtol=1e-6)


def test_draw_frequencies_match_weights_chi_square():
  k = 6
  state = sampling.init_sampler(k, 1.0)
  for c, loss in enumerate([0.2, 1.5, 0.7, 3.0, 0.1, 2.2]):
    state = sampling.update_sampler(state, c, jnp.float32(loss), t=1.0, gamma=0.6)
  w = np.asarray(sampling.class_probabilities(state), np.float64)
  n = 20000
  keys = jax.random.split(jax.random.PRNGKey(0), n)
  draws = np.asarray(jax.jit(jax.vmap(lambda key: sampling.draw_class(state, key)))(keys))
  observed = np.bincount(draws, minlength=k)
  _, p_value = stats.chisquare(observed, n * w / w.sum())
  assert p_value > 1e-3, (observed, n * w)


def test_unavailable_classes_are_never_drawn():
  available = np.array([True, False, True, False])
  state = sampling.init_sampler(4, 0.5, available=available)
  keys = jax.random.split(jax.random.PRNGKey(1), 2000)
  draws = np.asarray(jax.vmap(lambda key: sampling.draw_class(state, key))(keys))
  assert set(np.unique(draws)) == {0, 2}


def test_extreme_tilt_does_not_overflow():
  state = sampling.init_sampler(3, 100.0)
  state = sampling.update_sampler(state, 1, jnp.float32(50.0), t=100.0, gamma=0.2)
  state = sampling.update_sampler(state, 2, jnp.float32(49.0), t=100.0, gamma=0.2)
  probs = np.asarray(sampling.class_probabilities(state))
  assert np.all(np.isfinite(state.log_tilted)) and np.all(np.isfinite(probs))
  # T_1 = 0.8 * 3^100 + 0.2 e^5000 dominates T_2 = ... e^4900 by e^100.
  np.testing.assert_allclose(probs, [0.0, 1.0, 0.0], atol=1e-6)
  assert int(sampling.draw_class(state, jax.random.PRNGKey(0))) == 1
