"""Losses against float64 references written from the paper's formulas, and their invariants."""

import functools

from hypothesis import given, settings, strategies as st
import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P
import numpy as np
import pytest
from scipy.special import logsumexp

from tce_jax import losses

K = 5
IGNORE = 255


# ---- float64 references, one pixel / image / class at a time, straight from docs/method.md ----

def ref_pixel_ce(logits, labels):
  logits = np.asarray(logits, np.float64)
  ce = np.zeros(labels.shape)
  for idx in np.ndindex(labels.shape):
    if labels[idx] != IGNORE:
      ce[idx] = logsumexp(logits[idx]) - logits[idx][labels[idx]]
  return ce, labels != IGNORE


def ref_cross_entropy(logits, labels, weights=None):
  ce, valid = ref_pixel_ce(logits, labels)
  w = np.where(valid, 1.0 if weights is None else np.asarray(weights, np.float64)[
      np.where(valid, labels, 0)], 0.0)
  return (w * ce).sum() / w.sum()


def ref_focal(logits, labels, gamma, alpha=None):
  ce, valid = ref_pixel_ce(logits, labels)
  p = np.exp(-ce)
  a = 1.0 if alpha is None else np.asarray(alpha, np.float64)[np.where(valid, labels, 0)]
  return (a * (1 - p) ** gamma * ce)[valid].mean()


def ref_tilt(values, t):
  values = np.asarray(values, np.float64)
  if abs(t) * np.ptp(values) < 1e-6:  # second-order expansion: float64 would cancel here
    return values.mean() + t * values.var() / 2
  return (logsumexp(t * values) - np.log(len(values))) / t


def ref_tilted_image(logits, labels, t):
  ce, valid = ref_pixel_ce(logits, labels)
  per_image = [ce[m][valid[m]].mean() for m in range(len(labels)) if valid[m].any()]
  return ref_tilt(per_image, t)


def ref_tilted_class(logits, labels, t):
  ce, _ = ref_pixel_ce(logits, labels)
  per_image = []
  for m in range(len(labels)):
    present = [c for c in range(logits.shape[-1]) if (labels[m] == c).any()]
    if present:
      per_image.append(ref_tilt([ce[m][labels[m] == c].mean() for c in present], t))
  return np.mean(per_image)


def ref_ohem(logits, labels, thresh, min_kept):
  """mmsegmentation's OHEMPixelSampler.sample, transcribed (a sort of the valid pixels'
  probabilities of their label), then the kept pixels' CE over the valid pixels."""
  ce, valid = ref_pixel_ce(logits, labels)
  prob = np.exp(-ce)
  ordered = np.sort(prob[valid])
  min_threshold = ordered[min(min_kept * len(labels), ordered.size - 1)] if ordered.size else 0
  kept = valid & (prob < max(min_threshold, thresh))
  return ce[kept].sum() / valid.sum()


def ref_recall(logits, labels):
  """Recall loss (Tian et al. 2022), one class at a time: weight_c = FN_c / GT_c."""
  ce, valid = ref_pixel_ce(logits, labels)
  pred = np.argmax(logits, axis=-1)
  weight = np.zeros(labels.shape)
  for c in range(logits.shape[-1]):
    of_c = valid & (labels == c)
    if of_c.any():
      weight[of_c] = (of_c & (pred != c)).sum() / of_c.sum()
  return (weight * ce)[valid].sum() / valid.sum()


def random_batch(seed, b=3, h=4, w=5, k=K, ignore_frac=0.2, scale=3.0):
  rng = np.random.default_rng(seed)
  logits = rng.normal(0, scale, (b, h, w, k)).astype(np.float32)
  labels = rng.integers(0, k, (b, h, w))
  labels[rng.uniform(size=labels.shape) < ignore_frac] = IGNORE
  return logits, labels.astype(np.int32)


# ---- values ----

@pytest.mark.parametrize('seed', range(3))
def test_values_match_float64_references(seed):
  logits, labels = random_batch(seed)
  weights = np.random.default_rng(seed).uniform(0.1, 3.0, K).astype(np.float32)
  close = functools.partial(np.testing.assert_allclose, rtol=2e-5, atol=1e-6)
  close(losses.cross_entropy(logits, labels), ref_cross_entropy(logits, labels))
  close(losses.cross_entropy(logits, labels, class_weights=weights),
        ref_cross_entropy(logits, labels, weights))
  close(losses.focal_loss(logits, labels), ref_focal(logits, labels, 2.0))
  close(losses.focal_loss(logits, labels, gamma=0.5, alpha=weights),
        ref_focal(logits, labels, 0.5, weights))
  for t in (-2.0, -0.1, 0.0, 0.1, 1.0, 5.0):
    close(losses.tilted_image_loss(logits, labels, t), ref_tilted_image(logits, labels, t))
    close(losses.tilted_class_loss(logits, labels, t), ref_tilted_class(logits, labels, t))


@pytest.mark.parametrize('seed', range(3))
@pytest.mark.parametrize('thresh,min_kept', [(0.7, 0), (0.7, 6), (0.3, 15), (1.0, 0),
                                             (0.05, 1000)])
def test_ohem_matches_mmsegmentation_transcription(seed, thresh, min_kept):
  logits, labels = random_batch(seed, scale=2.0)
  np.testing.assert_allclose(
      losses.ohem_cross_entropy(logits, labels, thresh=thresh, min_kept=min_kept),
      ref_ohem(logits, labels, thresh, min_kept), rtol=2e-5, atol=1e-7)


def test_ohem_limits():
  """thresh 1 keeps every pixel but those predicted with certainty (MCCE); a huge min_kept
  keeps every pixel whatever thresh."""
  logits, labels = random_batch(4)
  np.testing.assert_allclose(losses.ohem_cross_entropy(logits, labels, thresh=1.0, min_kept=0),
                             losses.cross_entropy(logits, labels), rtol=1e-6)
  np.testing.assert_allclose(
      losses.ohem_cross_entropy(logits, labels, thresh=1e-9, min_kept=10**6),
      ref_ohem(logits, labels, 1e-9, 10**6), rtol=1e-6)


@pytest.mark.parametrize('seed', range(3))
def test_recall_loss_matches_reference(seed):
  logits, labels = random_batch(seed, scale=1.0)
  np.testing.assert_allclose(losses.recall_loss(logits, labels), ref_recall(logits, labels),
                             rtol=2e-5, atol=1e-7)
  # A perfect prediction has recall 1 everywhere: no loss and no gradient.
  perfect = np.where((labels != IGNORE)[..., None],
                     10.0 * np.eye(K)[np.where(labels != IGNORE, labels, 0)], 0.0)
  value, grad = jax.value_and_grad(lambda x: losses.recall_loss(x, labels))(
      perfect.astype(np.float32))
  assert value == 0 and np.all(grad == 0)


def test_recall_weights_are_not_differentiated():
  """The weights are counts (no gradient): the gradient is that of CE with fixed weights."""
  logits, labels = random_batch(9, scale=1.0)
  weights = np.asarray(losses.recall_weights(logits, labels))
  valid = labels != IGNORE
  grad = jax.grad(lambda x: losses.recall_loss(x, labels))(logits)
  # sum(w_y CE) / N_valid = cross_entropy(class_weights=w) x sum(w_y) / N_valid.
  scale = weights[np.where(valid, labels, 0)][valid].sum() / valid.sum()
  expected = jax.grad(lambda x: losses.cross_entropy(x, labels, class_weights=weights))(logits)
  np.testing.assert_allclose(grad, np.asarray(expected) * scale, atol=1e-6)


def test_sqrt_inverse_frequency_weights():
  counts = np.array([900, 100, 0, 25])
  weights = losses.sqrt_inverse_frequency_weights(counts)
  raw = np.sqrt(1025 / np.array([900, 100, 25]))
  np.testing.assert_allclose(weights[[0, 1, 3]], raw / raw.mean(), rtol=1e-6)
  assert weights[2] == 0 and abs(weights[[0, 1, 3]].mean() - 1) < 1e-6
  np.testing.assert_allclose(weights[1] / weights[0], 3.0, rtol=1e-6)  # sqrt(900 / 100)


def test_focal_with_gamma_zero_is_cross_entropy():
  logits, labels = random_batch(7)
  np.testing.assert_allclose(losses.focal_loss(logits, labels, gamma=0.0),
                             losses.cross_entropy(logits, labels), rtol=1e-6)


def test_bf16_logits_give_float32_loss():
  logits, labels = random_batch(8)
  loss = losses.tilted_class_loss(jnp.asarray(logits, jnp.bfloat16), labels, 1.0)
  assert loss.dtype == jnp.float32
  np.testing.assert_allclose(loss, ref_tilted_class(
      np.asarray(jnp.asarray(logits, jnp.bfloat16).astype(jnp.float32)), labels, 1.0), rtol=1e-5)


def test_ignore_only_image_contributes_nothing():
  logits, labels = random_batch(1)
  labels_with_empty = labels.copy()
  labels_with_empty[1] = IGNORE
  keep = np.array([0, 2])
  for fn in (losses.cross_entropy, losses.focal_loss):
    np.testing.assert_allclose(fn(logits, labels_with_empty),
                               fn(logits[keep], labels[keep]), rtol=1e-6)
  for fn in (losses.tilted_image_loss, losses.tilted_class_loss):
    np.testing.assert_allclose(fn(logits, labels_with_empty, 1.0),
                               fn(logits[keep], labels[keep], 1.0), rtol=1e-6)
    grad = jax.grad(lambda x, fn=fn: fn(x, labels_with_empty, 1.0))(logits)
    assert np.all(np.isfinite(grad)) and np.all(grad[1] == 0)


def test_all_ignored_batch_is_zero_with_zero_gradient():
  logits, _ = random_batch(2)
  labels = np.full(logits.shape[:3], IGNORE, np.int32)
  for fn in (losses.cross_entropy, losses.focal_loss,
             functools.partial(losses.tilted_image_loss, t=1.0),
             functools.partial(losses.tilted_class_loss, t=1.0)):
    value, grad = jax.value_and_grad(lambda x, fn=fn: fn(x, labels))(logits)
    assert value == 0 and np.all(grad == 0)


# ---- gradients against closed forms and float64 finite differences ----

def test_cross_entropy_gradient_closed_form():
  logits, labels = random_batch(3)
  weights = np.random.default_rng(3).uniform(0.1, 3.0, K)
  grad = jax.grad(lambda x: losses.cross_entropy(x, labels, class_weights=weights))(logits)
  valid = labels != IGNORE
  p = np.exp(logits - logsumexp(np.float64(logits), axis=-1, keepdims=True))
  onehot = np.eye(K)[np.where(valid, labels, 0)]
  w = np.where(valid, weights[np.where(valid, labels, 0)], 0)
  expected = w[..., None] * (p - onehot) / w.sum()
  np.testing.assert_allclose(grad, expected, atol=1e-6)


@pytest.mark.parametrize('t', [-3.0, -0.5, 0.5, 2.0, 30.0])
def test_tilt_gradient_is_softmax_of_tilted_losses(t):
  values = np.random.default_rng(4).uniform(0, 5, 7).astype(np.float32)
  grad = jax.grad(lambda v: losses.tilt(v, t))(values)
  expected = np.exp(t * np.float64(values) - logsumexp(t * np.float64(values)))
  np.testing.assert_allclose(grad, expected, rtol=1e-4, atol=1e-7)


def test_tilted_image_gradient_closed_form():
  logits, labels = random_batch(5)
  t = 1.5
  grad = jax.grad(lambda x: losses.tilted_image_loss(x, labels, t))(logits)
  ce, valid = ref_pixel_ce(logits, labels)
  per_image = ce.sum((1, 2)) / valid.sum((1, 2))
  q = np.exp(t * per_image - logsumexp(t * per_image))
  p = np.exp(logits - logsumexp(np.float64(logits), axis=-1, keepdims=True))
  onehot = np.eye(K)[np.where(valid, labels, 0)]
  expected = (q / valid.sum((1, 2)))[:, None, None, None] * valid[..., None] * (p - onehot)
  np.testing.assert_allclose(grad, expected, atol=1e-6)


@pytest.mark.parametrize('name', ['focal', 'tce_class', 'ohem', 'recall'])
def test_gradients_match_float64_finite_differences(name):
  logits, labels = random_batch(6, b=2, h=3, w=3)
  fn, ref = {'focal': (lambda x: losses.focal_loss(x, labels, gamma=2.0),
                       lambda x: ref_focal(x, labels, 2.0)),
             'tce_class': (lambda x: losses.tilted_class_loss(x, labels, 2.0),
                           lambda x: ref_tilted_class(x, labels, 2.0)),
             # the kept set and the recall weights are piecewise constant in the logits
             'ohem': (lambda x: losses.ohem_cross_entropy(x, labels, thresh=0.6, min_kept=2),
                      lambda x: ref_ohem(x, labels, 0.6, 2)),
             'recall': (lambda x: losses.recall_loss(x, labels),
                        lambda x: ref_recall(x, labels))}[name]
  grad = np.asarray(jax.grad(fn)(logits))
  x = logits.astype(np.float64)
  rng = np.random.default_rng(0)
  for _ in range(12):
    idx = tuple(rng.integers(0, s) for s in x.shape)
    e = np.zeros_like(x)
    e[idx] = 1e-5
    numeric = (ref(x + e) - ref(x - e)) / 2e-5
    np.testing.assert_allclose(grad[idx], numeric, atol=2e-5, rtol=1e-3)


# ---- invariants of the tilt (hypothesis) ----

values_strategy = st.lists(st.floats(0, 50, allow_nan=False, width=32), min_size=1, max_size=12)
t_strategy = st.floats(-100, 100, allow_nan=False)


@settings(max_examples=60, deadline=None)
@given(values_strategy, st.floats(1e-4, 100))
def test_mean_le_tilt_le_max_and_min_le_negative_tilt_le_mean(values, t):
  v = np.asarray(values, np.float32)
  tol = 1e-4 * (1 + np.abs(v).max())
  up, down = float(losses.tilt(v, t)), float(losses.tilt(v, -t))
  assert v.mean() - tol <= up <= v.max() + tol
  assert v.min() - tol <= down <= v.mean() + tol


@settings(max_examples=60, deadline=None)
@given(values_strategy, t_strategy, t_strategy)
def test_tilt_is_monotone_in_t(values, t1, t2):
  v = np.asarray(values, np.float32)
  lo, hi = sorted((t1, t2))
  assert float(losses.tilt(v, lo)) <= float(losses.tilt(v, hi)) + 1e-4 * (1 + v.max())


@settings(max_examples=60, deadline=None)
@given(values_strategy, t_strategy)
def test_tilt_matches_float64_and_is_finite(values, t):
  v = np.asarray(values, np.float32)
  value, grad = jax.value_and_grad(lambda x: losses.tilt(x, t))(v)
  assert np.isfinite(value) and np.all(np.isfinite(grad))
  np.testing.assert_allclose(value, ref_tilt(v, t), rtol=1e-5, atol=2e-5)
  np.testing.assert_allclose(np.sum(grad), 1.0, rtol=1e-5)


def test_tilt_limit_at_zero_is_exact_and_continuous():
  v = np.random.default_rng(9).uniform(0, 10, 9).astype(np.float32)
  assert float(losses.tilt(v, 0.0)) == pytest.approx(v.mean(), rel=1e-7)
  for t in (1e-3, -1e-3, 1e-6, -1e-6):
    assert float(losses.tilt(v, t)) == pytest.approx(ref_tilt(v, t), rel=1e-6)
    np.testing.assert_allclose(jax.grad(lambda x, t=t: losses.tilt(x, t))(v),
                               jax.grad(lambda x: losses.tilt(x, 0.0))(v), atol=1e-3)


def test_tilt_extremes_are_stable():
  v = np.array([0.0, 50.0, 49.0, 10.0], np.float32)
  assert float(losses.tilt(v, 100.0)) == pytest.approx(ref_tilt(v, 100.0), rel=1e-6)
  assert float(losses.tilt(v, -100.0)) == pytest.approx(ref_tilt(v, -100.0), abs=1e-5)
  logits = np.zeros((2, 2, 2, 3), np.float32)
  logits[..., 0] = 60.0  # CE of class 1 or 2 pixels = 60
  labels = np.array([[[1, 0], [0, 0]], [[2, 2], [0, 0]]])
  for fn in (losses.tilted_image_loss, losses.tilted_class_loss):
    for t in (100.0, -100.0):
      value, grad = jax.value_and_grad(lambda x, fn=fn, t=t: fn(x, labels, t))(logits)
      assert np.isfinite(value) and np.all(np.isfinite(grad))


def test_tilt_where_excludes_entries():
  v = np.array([[1.0, 2.0, 100.0], [3.0, 4.0, 5.0]], np.float32)
  where = np.array([[True, True, False], [True, True, True]])
  out = losses.tilt(v, 2.0, where=where)
  np.testing.assert_allclose(out, [ref_tilt([1, 2], 2.0), ref_tilt([3, 4, 5], 2.0)], rtol=1e-6)


# ---- global-batch semantics across devices ----

@pytest.mark.parametrize('name', sorted(losses.LOSSES))
def test_losses_over_two_devices_equal_one_device(name):
  assert jax.device_count() >= 2
  mesh = jax.make_mesh((2,), ('batch',), axis_types=(jax.sharding.AxisType.Auto,))
  logits, labels = random_batch(11, b=4)
  labels[0] = IGNORE  # devices see different numbers of valid pixels
  weights = np.random.default_rng(0).uniform(0.5, 2, K).astype(np.float32)
  kwargs = {'weighted_ce': dict(class_weights=weights), 'focal': dict(alpha=weights),
            'ce_sqrt_inv_freq': dict(class_weights=weights),
            # min_kept x 4 images = the 20th smallest probability of the global batch
            'ohem': dict(thresh=0.3, min_kept=5)}.get(name, {})
  t = (1.7,) if name.startswith('tce') else ()
  fn = lambda x, y, axis_name=None: losses.LOSSES[name](x, y, *t, axis_name=axis_name,
                                                       **kwargs)
  per_device = jax.jit(jax.shard_map(
      lambda x, y: jax.value_and_grad(fn)(x, y, axis_name='batch'), mesh=mesh,
      in_specs=(P('batch'), P('batch')), out_specs=(P(), P('batch')), check_vma=False))
  sharding = NamedSharding(mesh, P('batch'))
  value, grad = per_device(jax.device_put(logits, sharding), jax.device_put(labels, sharding))
  ref_value, ref_grad = jax.value_and_grad(fn)(logits, labels)
  np.testing.assert_allclose(value, ref_value, rtol=1e-6)
  # Under pmap semantics each device's gradient of the global loss is scaled by the device
  # count; the train step's pmean of parameter gradients undoes it.
  np.testing.assert_allclose(np.asarray(grad) / 2, ref_grad, rtol=1e-5, atol=1e-8)
