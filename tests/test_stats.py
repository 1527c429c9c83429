"""Seed statistics: Welch's test and interval against scipy on raw samples, Holm's correction
against its step-down definition."""

import math

from hypothesis import given, settings, strategies as st
import numpy as np
import pytest
from scipy import stats as scipy_stats

from tce_jax import stats

samples = st.lists(st.floats(0, 100, allow_nan=False), min_size=2, max_size=8)


@pytest.mark.filterwarnings('ignore:Precision loss occurred')  # scipy, near-identical samples
@settings(max_examples=60, deadline=None)
@given(samples, samples)
def test_welch_matches_scipy_on_the_raw_samples(a, b):
  a, b = np.array(a), np.array(b)
  if np.std(a) + np.std(b) < 1e-6:  # no spread: scipy returns NaN, we return the exact answer
    return
  ours = stats.welch(a.mean(), a.std(ddof=1), a.size, b.mean(), b.std(ddof=1), b.size)
  reference = scipy_stats.ttest_ind(a, b, equal_var=False)
  interval = reference.confidence_interval(0.95)
  np.testing.assert_allclose([ours['p'], ours['df'], ours['low'], ours['high']],
                             [reference.pvalue, reference.df, interval.low, interval.high],
                             rtol=1e-7, atol=1e-9)
  assert ours['diff'] == pytest.approx(a.mean() - b.mean())


def test_welch_closed_form_and_edge_cases():
  # t = 0.5 / sqrt(2 / 3) = 0.6124 with df = 4; the t(4) CDF in closed form:
  # F(t) = 1/2 + (3/4) a (1 - a^2 / 3) with a = t / sqrt(4 + t^2).
  t = 0.5 / math.sqrt(2 / 3)
  a = t / math.sqrt(4 + t * t)
  p = 2 * (0.5 - 0.75 * a * (1 - a * a / 3))
  result = stats.welch(10.5, 1.0, 3, 10.0, 1.0, 3)
  assert result['p'] == pytest.approx(p, rel=1e-10) and result['df'] == pytest.approx(4)
  # The interval's half width is t_{0.975}(4) = 2.7764451 times the standard error.
  assert result['high'] - result['diff'] == pytest.approx(2.7764451 * math.sqrt(2 / 3), rel=1e-7)
  single = stats.welch(2.0, 0.0, 1, 1.0, 0.0, 5)
  assert single['diff'] == 1.0 and all(math.isnan(single[k]) for k in ('p', 'low', 'high'))
  exact = stats.welch(3.0, 0.0, 3, 1.0, 0.0, 3)
  assert (exact['p'], exact['low'], exact['high']) == (0.0, 2.0, 2.0)
  assert stats.welch(1.0, 0.0, 3, 1.0, 0.0, 3)['p'] == 1.0


@pytest.mark.filterwarnings('ignore:Precision loss occurred')
@settings(max_examples=60, deadline=None)
@given(samples, samples, st.floats(0.1, 20))
def test_equivalence_is_two_one_sided_welch_tests_on_the_raw_samples(a, b, margin):
  """Against scipy's one-sided Welch tests of the shifted samples, and the duality with the
  90% interval: equivalent at 0.05 exactly when that interval lies inside the margin."""
  a, b = np.array(a), np.array(b)
  if np.std(a) + np.std(b) < 1e-6:
    return
  ours = stats.equivalence(a.mean(), a.std(ddof=1), a.size, b.mean(), b.std(ddof=1), b.size,
                           margin)
  above = scipy_stats.ttest_ind(a + margin, b, equal_var=False, alternative='greater')
  below = scipy_stats.ttest_ind(a - margin, b, equal_var=False, alternative='less')
  interval = scipy_stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.90)
  np.testing.assert_allclose([ours['p'], ours['low'], ours['high']],
                             [max(above.pvalue, below.pvalue), interval.low, interval.high],
                             rtol=1e-7, atol=1e-9)
  inside = -margin < ours['low'] and ours['high'] < margin
  if abs(ours['p'] - 0.05) > 1e-9:
    assert (ours['p'] < 0.05) == inside


def test_equivalence_edge_cases():
  assert math.isnan(stats.equivalence(1.0, 1.0, 1, 1.0, 1.0, 5, 1.0)['p'])
  assert stats.equivalence(1.5, 0.0, 3, 1.0, 0.0, 3, 1.0)['p'] == 0.0
  assert stats.equivalence(2.5, 0.0, 3, 1.0, 0.0, 3, 1.0)['p'] == 1.0
  with pytest.raises(ValueError, match='margin'):
    stats.equivalence(1.0, 1.0, 3, 1.0, 1.0, 3, 0.0)


def test_holm_by_hand():
  # Sorted: 0.005 x 4 = 0.02, 0.01 x 3 = 0.03, 0.03 x 2 = 0.06, 0.04 x 1 -> kept at 0.06.
  np.testing.assert_allclose(stats.holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])
  adjusted = stats.holm([0.5, float('nan'), 0.01])  # NaN: not a test, m = 2
  assert math.isnan(adjusted[1]) and adjusted[0] == 0.5 and adjusted[2] == 0.02
  assert stats.holm([]).size == 0
  with pytest.raises(ValueError, match=r'\[0, 1\]'):
    stats.holm([0.2, 1.5])


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(0, 1), min_size=1, max_size=30),
       st.sampled_from([0.001, 0.01, 0.05, 0.1, 0.5]))
def test_holm_rejects_exactly_what_the_step_down_procedure_rejects(p, alpha):
  """Holm's procedure: walk the p-values from the smallest; reject the j-th (from 1) while
  p_(j) <= alpha / (m - j + 1), stop at the first that is not."""
  p = np.array(p)
  m = p.size
  rejected = np.zeros(m, bool)
  for j, i in enumerate(np.argsort(p, kind='stable')):
    if p[i] > alpha / (m - j):
      break
    rejected[i] = True
  adjusted = stats.holm(p)
  np.testing.assert_array_equal(adjusted <= alpha, rejected)
  assert np.all(adjusted >= p) and np.all(adjusted <= 1)
  # Never less than Bonferroni rejects, and monotone in the raw p-values.
  assert np.all(rejected[np.minimum(1, p * m) <= alpha])
  order = np.argsort(p, kind='stable')
  assert np.all(np.diff(adjusted[order]) >= 0)


def test_per_class_is_welch_on_the_raw_samples_with_holm_over_the_shared_classes():
  rng = np.random.default_rng(0)
  runs_a, runs_b = rng.normal(50, 5, (5, 4)), rng.normal(45, 3, (4, 4))
  runs_a[:, 0] += 20  # one class clearly better

  def entry(runs, missing):
    return {'per_class_iou': {
        f'c{k}': {'mean': None, 'std': None} if k == missing else
                 {'mean': float(runs[:, k].mean()), 'std': float(runs[:, k].std(ddof=1))}
        for k in range(4)}}

  tests = stats.per_class(entry(runs_a, None), entry(runs_b, 3), 5, 4)
  assert list(tests) == ['c0', 'c1', 'c2']  # c3: no mean for the reference, not in the family
  p = [scipy_stats.ttest_ind(runs_a[:, k], runs_b[:, k], equal_var=False).pvalue
       for k in range(3)]
  np.testing.assert_allclose([t['p'] for t in tests.values()], p, rtol=1e-9)
  np.testing.assert_allclose([t['adjusted'] for t in tests.values()], stats.holm(p), rtol=1e-9)
  np.testing.assert_allclose([t['diff'] for t in tests.values()],
                             runs_a[:, :3].mean(0) - runs_b[:, :3].mean(0))
  assert tests['c0']['adjusted'] <= stats.ALPHA
  assert stats.beyond_noise(tests) == (1, 0)  # c2 (+7.1, adjusted p 0.065) is not beyond
