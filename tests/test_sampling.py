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


# ---- the class signal and the class-size prior (extensions; the paper's version above) ----

def test_class_signal_matches_numpy_over_steps():
  """tce.signal='class': T_c is updated with the batch's mean CE over the pixels labelled c,
  and kept when the batch has none (the draw is still counted)."""
  from scipy.special import logsumexp  # pylint: disable=g-import-not-at-top
  k, t, gamma = 4, 2.0, 0.3
  rng = np.random.default_rng(3)
  reference = NumpyAlgorithm1(k, t, gamma)
  state = sampling.init_sampler(k, t)
  update = jax.jit(lambda s, c, x, y: _class_update(s, c, x, y, t, gamma))
  for step in range(30):
    c = int(rng.integers(0, k))
    logits = rng.normal(0, 2, (2, 3, 4, k)).astype(np.float32)
    labels = rng.integers(0, k, (2, 3, 4))
    labels[rng.uniform(size=labels.shape) < 0.3] = 255
    if step % 5 == 0:
      labels[labels == c] = 255  # no pixel of c in this batch
    of_c = labels == c
    ce = logsumexp(np.float64(logits), axis=-1) - np.take_along_axis(
        np.float64(logits), np.where(of_c, c, 0)[..., None], axis=-1)[..., 0]
    if of_c.any():
      expected = reference.step(c, ce[of_c].mean())
    else:
      expected = reference.T / reference.T.sum()
    state = update(state, c, logits, labels.astype(np.int32))
    np.testing.assert_allclose(sampling.class_probabilities(state), expected, rtol=1e-5)


def _class_update(state, c, logits, labels, t, gamma):
  loss, has_pixels = sampling.class_batch_loss(logits, labels, c)
  return sampling.update_sampler(state, c, loss, t=t, gamma=gamma, has_loss=has_pixels)


def test_class_signal_over_two_devices_equals_one_device():
  from jax.sharding import NamedSharding, PartitionSpec as P  # pylint: disable=g-import-not-at-top
  mesh = jax.make_mesh((2,), ('batch',), axis_types=(jax.sharding.AxisType.Auto,))
  rng = np.random.default_rng(5)
  logits = rng.normal(0, 2, (4, 3, 4, 5)).astype(np.float32)
  labels = rng.integers(0, 5, (4, 3, 4)).astype(np.int32)
  labels[:2][labels[:2] == 1] = 255  # the first device holds no pixel of class 1
  sharding = NamedSharding(mesh, P('batch'))
  per_device = jax.jit(jax.shard_map(
      lambda x, y: sampling.class_batch_loss(x, y, jnp.int32(1), axis_name='batch'),
      mesh=mesh, in_specs=(P('batch'), P('batch')), out_specs=(P(), P()), check_vma=False))
  got = per_device(jax.device_put(logits, sharding), jax.device_put(labels, sharding))
  want = sampling.class_batch_loss(logits, labels, jnp.int32(1))
  np.testing.assert_allclose(got[0], want[0], rtol=1e-6)
  assert bool(got[1]) and bool(want[1])


def test_size_prior_multiplies_the_weights_by_class_size():
  """Weights proportional to |D_c|^beta T_c (TERM's class-size factor), in draws too."""
  k = 5
  state = sampling.init_sampler(k, 1.0, available=np.array([True, True, True, False, True]))
  for c, loss in enumerate([0.5, 2.0, 1.0, 0.0, 3.0]):
    state = sampling.update_sampler(state, c, jnp.float32(loss), t=1.0, gamma=0.5)
  sizes = np.array([400.0, 20.0, 100.0, 0.0, 5.0])
  beta = 0.7
  log_prior = np.where(sizes > 0, beta * np.log(np.maximum(sizes, 1)), 0).astype(np.float32)
  tilted = np.exp(np.float64(state.log_tilted))
  expected = np.where(state.available, sizes ** beta * tilted, 0)
  expected /= expected.sum()
  np.testing.assert_allclose(sampling.draw_probabilities(state, log_prior), expected, rtol=1e-5)
  keys = jax.random.split(jax.random.PRNGKey(2), 20000)
  draws = np.asarray(jax.jit(jax.vmap(lambda key: sampling.draw_class(state, key, log_prior)))(
      keys))
  observed = np.bincount(draws, minlength=k)
  assert observed[3] == 0
  keep = expected > 0
  _, p_value = stats.chisquare(observed[keep], 20000 * expected[keep])
  assert p_value > 1e-3, (observed, 20000 * expected)


# ---- rare class sampling (DAFormer) ----

def test_rcs_probabilities_match_daformer():
  """DAFormer's get_rcs_class_probs, transcribed with torch: freq = counts / sum,
  softmax((1 - freq) / T); classes without a D_c are left out and the rest renormalised."""
  import torch  # pylint: disable=g-import-not-at-top
  counts = np.array([500_000, 3_000, 120_000, 40, 900, 0, 15_000], np.int64)
  for temperature in (0.01, 0.1, 1.0):
    freq = torch.tensor(counts[counts > 0], dtype=torch.float64)
    freq = freq / torch.sum(freq)
    expected = torch.softmax((1 - freq) / temperature, dim=-1).numpy()
    got = sampling.rcs_probabilities(counts, counts > 0, temperature)
    np.testing.assert_allclose(got[counts > 0], expected, rtol=1e-10)
    assert got[5] == 0
  available = np.array([True, True, False, True, True, False, True])
  got = sampling.rcs_probabilities(counts, available, 0.01)
  logits = (1 - counts / counts.sum()) / 0.01
  expected = np.where(available, np.exp(logits - logits.max()), 0)
  np.testing.assert_allclose(got, expected / expected.sum(), rtol=1e-10)


def test_rcs_sampler_draws_its_probabilities():
  import ml_collections  # pylint: disable=g-import-not-at-top
  from tce_jax.configs import default  # pylint: disable=g-import-not-at-top
  from tce_jax.data import class_index as class_index_lib  # pylint: disable=g-import-not-at-top
  config = default.get_config()
  config.sampling.name = 'rcs'
  config.sampling.rcs_temperature = 0.05
  counts = np.array([[50, 0, 3, 0], [40, 2, 0, 0], [60, 0, 9, 0]], np.int32)
  index = class_index_lib.ClassIndex(counts > 0, counts.sum(0).astype(np.int64), counts)
  sampler = sampling.create_sampler(config, num_classes=4, class_index=index)
  assert isinstance(config, ml_collections.ConfigDict) and sampler.lag == 2
  expected = sampling.rcs_probabilities(index.pixel_counts, [True, True, True, False], 0.05)
  np.testing.assert_allclose(sampler.probabilities, expected)
  state = sampler.init()
  keys = jax.random.split(jax.random.PRNGKey(3), 20000)
  draws = np.asarray(jax.jit(jax.vmap(lambda key: sampler.draw(state, key)))(keys))
  observed = np.bincount(draws, minlength=4)
  assert observed[3] == 0
  _, p_value = stats.chisquare(observed[:3], 20000 * expected[:3])
  assert p_value > 1e-3, (observed, 20000 * expected)
  state = sampler.update(state, cls=jnp.int32(2), logits=None, labels=None, mcce=None,
                         axis_name=None)
  scalars = sampler.scalars(state, ['a', 'b', 'c', 'd'])
  assert scalars['sampling/draw_count/c'] == 1
  assert abs(sum(v for k, v in scalars.items() if 'probability' in k) - 1) < 1e-9


def test_samplers_and_class_index_without_a_config_equal_the_config_path(make_tiny_config):
  """The config-free constructors (docs/use_in_your_code.md) build what the training loop
  builds from a config and a prepared dataset: the same class index from the split's label
  maps, and samplers whose states, updates and draws are the same bit for bit."""
  from tce_jax.data import class_index as class_index_lib  # pylint: disable=g-import-not-at-top
  from tce_jax.data import datasets  # pylint: disable=g-import-not-at-top
  config = make_tiny_config({'sampling.name': 'tce', 'tce.t': 1.0, 'tce.signal': 'class',
                             'tce.size_prior': 0.5, 'tce.gamma': 0.3, 'sampling.lag': 3,
                             'sampling.rcs_temperature': 0.05})
  source = datasets.load_source(config, 'train')
  from_dataset = class_index_lib.load_class_index(source, progress=False)
  from_maps = class_index_lib.ClassIndex.from_label_maps(
      (source[i]['label'] for i in range(len(source))), source.num_classes)
  for field in ('presence', 'pixel_counts', 'image_pixel_counts'):
    np.testing.assert_array_equal(getattr(from_maps, field), getattr(from_dataset, field))
  k = source.num_classes
  plain = {'tce': sampling.TCESampler(num_classes=k, class_index=from_maps, t=1.0, gamma=0.3,
                                      signal='class', size_prior=0.5, lag=3),
           'rcs': sampling.RareClassSampler(num_classes=k, class_index=from_maps,
                                            temperature=0.05, lag=3)}
  key = jax.random.PRNGKey(7)
  logits = jax.random.normal(key, (2, 8, 8, k))
  labels = jax.random.randint(jax.random.PRNGKey(8), (2, 8, 8), 0, k)
  for name, sampler in plain.items():
    config.sampling.name = name
    configured = sampling.create_sampler(config, num_classes=k, class_index=from_dataset)
    assert configured.lag == sampler.lag == 3
    states = [configured.init(), sampler.init()]
    queues = [s.initial_queue(state, key) for s, state in zip((configured, sampler), states)]
    np.testing.assert_array_equal(queues[0], queues[1])
    for step in range(4):
      states = [s.update(state, cls=queue[0], logits=logits, labels=labels,
                         mcce=jnp.float32(1.5 + step), axis_name=None)
                for s, state, queue in zip((configured, sampler), states, queues)]
      advanced = [s.advance(state, queue, key, jnp.int32(step))
                  for s, state, queue in zip((configured, sampler), states, queues)]
      queues = [a[0] for a in advanced]
      np.testing.assert_array_equal(advanced[0][1], advanced[1][1])
      for a, b in zip(jax.tree.leaves(states[0]), jax.tree.leaves(states[1])):
        np.testing.assert_array_equal(a, b)
    assert int(np.asarray(jax.tree.leaves(states[1])[-1]).sum()) >= 4  # draws were counted
  with pytest.raises(ValueError, match='label map 1 holds 9'):
    class_index_lib.ClassIndex.from_label_maps([np.zeros((2, 2), np.uint8),
                                                np.full((2, 2), 9, np.uint8)], 5)
  with pytest.raises(ValueError, match="signal='pixel'"):
    sampling.TCESampler(num_classes=k, class_index=from_maps, t=1.0, signal='pixel')
