"""Fairness statistics against a worked example and their input checks."""

import math

from hypothesis import given, settings, strategies as st
import numpy as np
import pytest

from tce_jax import fairness


def test_worked_example_19_classes_with_reference():
  """Model IoU 5, 10, ..., 95 (class i: 5(i+1)); reference IoU 100 - 5(i+1) (reversed)."""
  iou = [5.0 * (i + 1) for i in range(19)]
  reference = [100 - v for v in iou]
  stats = fairness.fairness_stats(iou, reference, fraction=0.25)
  # k = round(0.25 * 19) = round(4.75) = 5.
  # Reference's 5 worst classes: i = 18..14 (ref 5..25) where the model has 95..75 -> 85.
  assert stats['sorted_bottom'] == pytest.approx(85.0)
  # Reference's 5 best classes: i = 0..4, model 5..25 -> 15.
  assert stats['sorted_top'] == pytest.approx(15.0)
  # 0.25-quantile of 19 sorted values: position 18 * 0.25 = 4.5 -> (25 + 30) / 2.
  assert stats['percentile_bottom'] == pytest.approx(27.5)
  assert stats['percentile_bottom_miou'] == pytest.approx(15.0)  # mean of 5..25
  assert stats['percentile_top'] == pytest.approx(72.5)  # position 13.5 -> (70 + 75) / 2
  assert stats['percentile_top_miou'] == pytest.approx(85.0)  # mean of 75..95
  assert stats['miou'] == pytest.approx(50.0)
  assert stats['worst'] == 5.0
  # Sample std of 5 * (1..19): 5 * sqrt(19 * 20 / 12).
  assert stats['std'] == pytest.approx(5 * math.sqrt(19 * 20 / 12))
  assert stats['num_classes'] == 19


def test_self_reference_and_absent_classes():
  iou = [5.0 * (i + 1) for i in range(19)]
  with_absent = iou[:7] + [float('nan')] + iou[7:]
  stats = fairness.fairness_stats(with_absent)
  assert stats['num_classes'] == 19
  assert stats['sorted_bottom'] == pytest.approx(15.0)  # own 5 worst: 5..25
  assert stats['sorted_top'] == pytest.approx(85.0)
  assert stats == fairness.fairness_stats(iou)


def test_ade20k_rounding_of_k():
  iou = np.arange(150, dtype=float)
  stats = fairness.fairness_stats(iou, fraction=0.15)  # k = round(22.5) = 22 (banker's)
  assert stats['sorted_bottom'] == pytest.approx(np.mean(np.arange(22)))
  assert stats['sorted_top'] == pytest.approx(np.mean(np.arange(128, 150)))


def test_scale_is_preserved():
  iou = np.linspace(0.1, 0.9, 19)
  a = fairness.fairness_stats(iou)
  b = fairness.fairness_stats(100 * iou)
  for key in a:
    if key != 'num_classes':
      assert b[key] == pytest.approx(100 * a[key])


@pytest.mark.parametrize('args,message', [
    (([1.0, 2.0], [1.0, 2.0, 3.0]), '2 classes but reference_iou has 3'),
    (([float('nan')] * 4,), 'all NaN'),
    (([], ), 'non-empty'),
])
def test_bad_input_raises_value_error(args, message):
  with pytest.raises(ValueError, match=message):
    fairness.fairness_stats(*args)


@pytest.mark.parametrize('fraction', [0.0, -0.1, 0.51, 1.0])
def test_fraction_outside_range(fraction):
  with pytest.raises(ValueError, match='fraction must be in'):
    fairness.fairness_stats([1.0, 2.0, 3.0], fraction=fraction)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(st.floats(0, 100), st.just(float('nan'))), min_size=1, max_size=40),
       st.floats(0.01, 0.5))
def test_fuzzed_stats_are_ordered_or_value_error(values, fraction):
  try:
    stats = fairness.fairness_stats(values, fraction=fraction)
  except ValueError:
    assert all(math.isnan(v) for v in values)
    return
  assert all(math.isfinite(v) for v in stats.values())
  assert stats['worst'] <= stats['percentile_bottom_miou'] <= stats['miou'] + 1e-9
  assert stats['miou'] <= stats['percentile_top_miou'] + 1e-9
  assert stats['sorted_bottom'] <= stats['sorted_top'] + 1e-9


def test_extra_stats():
  iou = [10.0, 20.0, 30.0, 40.0, float('nan')]
  confusion = np.array([[8, 2, 0, 0, 0], [1, 3, 0, 0, 0], [0, 0, 5, 0, 0], [0, 0, 0, 0, 0],
                        [0, 0, 0, 0, 0]])
  extra = fairness.extra_fairness_stats(iou, confusion)
  x = np.array([10, 20, 30, 40.0])
  assert extra['gini'] == pytest.approx(np.abs(x[:, None] - x).sum() / (2 * 16 * 25))
  assert extra['cvar'] == 10.0 and extra['cvar_classes'] == 1
  assert extra['precision'][:3] == pytest.approx([8 / 9 * 100, 3 / 5 * 100, 100.0])
  assert extra['recall'][:3] == pytest.approx([80.0, 75.0, 100.0])
  assert extra['recall'][3] is None
  assert fairness.gini([5.0] * 7) == 0.0
