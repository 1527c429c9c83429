"""Is a difference between two methods beyond seed noise? Statistics over seeds.

Each seed is an independent training run, so a method's runs are a sample of its outcome; two
methods' samples may have different variances (a tilted method can be noisier than MCCE). The
difference of means is therefore tested with Welch's t-test, and its confidence interval uses
the same Welch-Satterthwaite degrees of freedom. A study compares many methods on many
statistics at once; Holm's step-down procedure corrects a family of p-values so that the
chance of any false "significant" in the family stays below the level (no independence
assumed), and it rejects everything Bonferroni rejects, and often more.

"No difference" is a claim of its own: a test that fails to find a difference shows nothing.
Equivalence within a margin m fixed in advance is tested with two one-sided tests (TOST):
the difference is shown to lie above -m and below +m, each with Welch's one-sided test; the
larger of the two p-values is the equivalence p-value, and equivalence at level alpha holds
exactly when the (1 - 2 alpha) Welch interval lies inside (-m, +m).

Everything here takes summary numbers (mean, sample std with ddof 1, number of runs), which
is what the report keeps per method.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from scipy import stats as scipy_stats

ALPHA = 0.05  # the level of "beyond noise" in this project's reports, after Holm's correction


def welch(mean_a: float, std_a: float, n_a: int, mean_b: float, std_b: float, n_b: int,
          confidence: float = 0.95) -> dict[str, float]:
  """Welch's comparison of A against B from means and sample stds.

  Returns diff = mean_a - mean_b, its `confidence` interval (low, high), the two-sided
  p-value and the degrees of freedom. Below 2 runs on either side there is no estimate of the
  noise: p, low, high and df are NaN. With no spread in either sample (std 0 and 0) the
  difference is exact: p is 0 when the means differ and 1 when they are equal, the interval
  is the point."""
  diff = float(mean_a - mean_b)
  nan = float('nan')
  if min(n_a, n_b) < 2:
    return {'diff': diff, 'low': nan, 'high': nan, 'p': nan, 'df': nan}
  var_a, var_b = std_a ** 2 / n_a, std_b ** 2 / n_b
  if var_a + var_b == 0:
    return {'diff': diff, 'low': diff, 'high': diff, 'p': float(diff == 0), 'df': nan}
  se = math.sqrt(var_a + var_b)
  df = (var_a + var_b) ** 2 / (var_a ** 2 / (n_a - 1) + var_b ** 2 / (n_b - 1))
  p = 2 * float(scipy_stats.t.sf(abs(diff) / se, df))
  half = float(scipy_stats.t.ppf(0.5 + confidence / 2, df)) * se
  return {'diff': diff, 'low': diff - half, 'high': diff + half, 'p': p, 'df': df}


def equivalence(mean_a: float, std_a: float, n_a: int, mean_b: float, std_b: float, n_b: int,
                margin: float, alpha: float = ALPHA) -> dict[str, float]:
  """Welch's two one-sided tests that mean_a - mean_b lies inside (-margin, +margin).

  Returns diff, the (1 - 2 alpha) interval (low, high: 90% at alpha = 0.05), p (the larger
  one-sided p-value: small p shows equivalence) and df. NaN without two runs on each side;
  with no spread at all, p is 0 inside the margin and 1 outside."""
  if not margin > 0:
    raise ValueError(f'margin must be > 0, got {margin}')
  test = welch(mean_a, std_a, n_a, mean_b, std_b, n_b, confidence=1 - 2 * alpha)
  diff, df = test['diff'], test['df']
  if not np.isfinite(test['low']):
    return {'diff': diff, 'low': test['low'], 'high': test['high'], 'p': float('nan'),
            'df': df}
  se = math.sqrt(std_a ** 2 / n_a + std_b ** 2 / n_b)
  if se == 0:
    p = float(not -margin < diff < margin)
  else:
    above = float(scipy_stats.t.sf((diff + margin) / se, df))  # H0: diff <= -margin
    below = float(scipy_stats.t.sf((margin - diff) / se, df))  # H0: diff >= +margin
    p = max(above, below)
  return {'diff': diff, 'low': test['low'], 'high': test['high'], 'p': p, 'df': df}


def holm(p_values: Sequence[float]) -> np.ndarray:
  """Holm-adjusted p-values, in the input's order: the i-th smallest of the m finite p-values
  becomes max over j <= i of min(1, (m - j + 1) p_(j)). A comparison is significant at level
  alpha after the correction exactly when its adjusted p-value is <= alpha. NaN entries (no
  test possible) stay NaN and do not count in m."""
  p = np.asarray(p_values, np.float64)
  if p.ndim != 1:
    raise ValueError(f'p_values must be one-dimensional, got shape {p.shape}')
  if np.any((p < 0) | (p > 1)):
    raise ValueError(f'p-values must lie in [0, 1], got {p[(p < 0) | (p > 1)]}')
  adjusted = np.full_like(p, np.nan)
  finite = np.flatnonzero(np.isfinite(p))
  m = finite.size
  order = finite[np.argsort(p[finite], kind='stable')]
  scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
  adjusted[order] = np.maximum.accumulate(scaled)
  return adjusted


def per_class(entry: dict, reference: dict, n: int, n_ref: int) -> dict[str, dict[str, float]]:
  """Per class, Welch's comparison of `entry` against `reference` with Holm's correction over
  the family of the classes both have a mean for.

  `entry` and `reference` are report.json label entries ({'per_class_iou': {class: {'mean',
  'std'}}}), `n` and `n_ref` their numbers of runs. Returns {class: welch()'s dict plus
  'adjusted', the Holm-adjusted p-value}, in `entry`'s class order; a class without a mean on
  either side is left out (it is not in the family)."""
  pairs = {c: (a, reference['per_class_iou'][c]) for c, a in entry['per_class_iou'].items()
           if c in reference['per_class_iou']}
  pairs = {c: (a, b) for c, (a, b) in pairs.items()
           if a['mean'] is not None and b['mean'] is not None}
  tests = {c: welch(a['mean'], a['std'], n, b['mean'], b['std'], n_ref)
           for c, (a, b) in pairs.items()}
  adjusted = holm([t['p'] for t in tests.values()])
  return {c: {**t, 'adjusted': float(p)} for (c, t), p in zip(tests.items(), adjusted)}


def beyond_noise(tests: dict[str, dict[str, float]], alpha: float = ALPHA) -> tuple[int, int]:
  """(better, worse): how many of per_class()'s classes differ at `alpha` after Holm's
  correction, in either direction."""
  better = sum(bool(t['adjusted'] <= alpha and t['diff'] > 0) for t in tests.values())
  worse = sum(bool(t['adjusted'] <= alpha and t['diff'] < 0) for t in tests.values())
  return better, worse
