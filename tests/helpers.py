"""Statistical assertions shared by the tests.

Tolerances are derived from the estimator's own standard error: a check of ``m``
coordinates uses ``z`` standard errors with ``z`` chosen so that a correct estimator
fails with probability at most ``FALSE_FAILURE`` over all ``m`` coordinates together
(a Bonferroni correction; ``z`` is about 5 for one coordinate).
"""

from __future__ import annotations

import math
from statistics import NormalDist

import jax
import numpy as np

FALSE_FAILURE = 1e-6


def z_value(num_checks: int, false_failure: float = FALSE_FAILURE) -> float:
  return NormalDist().inv_cdf(1.0 - false_failure / (2.0 * max(num_checks, 1)))


def _leaves(tree):
  return [np.asarray(x, np.float64) for x in jax.tree.leaves(tree)]


def assert_unbiased(per_sample, expected, *, false_failure: float = FALSE_FAILURE, floor=1e-6):
  """Asserts the mean of ``per_sample`` (leading sample axis) matches ``expected``.

  The tolerance per coordinate is ``z * std / sqrt(N)`` plus a float32 ``floor``
  (relative to the expected magnitude) for estimators with (near-)zero variance.
  """
  samples, targets = _leaves(per_sample), _leaves(expected)
  assert len(samples) == len(targets), "per_sample and expected have different structures"
  m = sum(t.size for t in targets)
  z = z_value(m, false_failure)
  for s, t in zip(samples, targets, strict=True):
    n = s.shape[0]
    assert s.shape[1:] == t.shape, f"shape {s.shape[1:]} != expected {t.shape}"
    mean = s.mean(axis=0)
    se = s.std(axis=0, ddof=1) / math.sqrt(n)
    tol = z * se + floor * (1.0 + np.abs(t))
    err = np.abs(mean - t)
    assert np.all(err <= tol), (
      f"biased beyond {z:.2f} standard errors: mean={mean}, expected={t}, "
      f"standard error={se}, |error|/se={err / np.maximum(se, 1e-30)}"
    )


def assert_variance(per_sample, expected_variance, *, false_failure: float = FALSE_FAILURE):
  """Asserts the per-coordinate sample variance matches ``expected_variance``.

  The standard error of the sample variance is estimated from the fourth central
  moment, ``sqrt((m4 - s^4) / N)``.
  """
  samples, targets = _leaves(per_sample), _leaves(expected_variance)
  m = sum(t.size for t in targets)
  z = z_value(m, false_failure)
  for s, t in zip(samples, targets, strict=True):
    n = s.shape[0]
    c = s - s.mean(axis=0)
    var = (c**2).sum(axis=0) / (n - 1)
    m4 = (c**4).mean(axis=0)
    se = np.sqrt(np.maximum(m4 - var**2, 0.0) / n)
    err = np.abs(var - t)
    assert np.all(err <= z * se + 1e-6 * (1 + np.abs(t))), (
      f"variance {var} differs from {t} by more than {z:.2f} standard errors ({se})"
    )


def assert_smaller_variance(per_sample_a, per_sample_b, *, false_failure=FALSE_FAILURE):
  """Asserts Var(a) < Var(b) per coordinate with a one-sided z-test.

  ``a`` and ``b`` are per-sample values from the same ``N`` draws (common random
  numbers), so the test is paired: the standard error is that of the mean of
  ``(b - mean b)^2 - (a - mean a)^2``.
  """
  a_leaves, b_leaves = _leaves(per_sample_a), _leaves(per_sample_b)
  m = sum(x[0].size for x in a_leaves)
  z = z_value(m, false_failure)
  for a, b in zip(a_leaves, b_leaves, strict=True):
    n = a.shape[0]
    diff = (b - b.mean(0)) ** 2 - (a - a.mean(0)) ** 2
    gap = diff.mean(0)
    se = diff.std(0, ddof=1) / math.sqrt(n)
    assert np.all(gap > z * se), (
      f"variance ordering not significant: var_a={a.var(0)}, var_b={b.var(0)}, "
      f"gap/se={gap / np.maximum(se, 1e-30)} (needs > {z:.2f})"
    )
