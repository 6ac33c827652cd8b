"""The variance benchmark: it runs, writes its files, and agrees with its exact values."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

import gradest
from benchmarks import variance

from .helpers import assert_variance, z_value

# Every figure a run writes meets the plot contract (benchmarks.common.figure_problems):
# save_figure's PlotWarning fails the test.
pytestmark = pytest.mark.filterwarnings("error::benchmarks.common.PlotWarning")

FILES = ("variance.csv", "variance.json", "seed.png", "square.png", "gauss.png", "cos.png")
# float32 rounding: what an exactly-zero variance (the coupled mean arm of (x - k)^2 at
# k = mu) or a zero-variance mean shows up as.
FLOOR = 1e-5


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
  out = tmp_path_factory.mktemp("variance")
  result = variance.main(["--quick", "--quiet", "--out", str(out)])
  return out, result


def test_rows_cover_every_gaussian_estimator_of_the_registry():
  """Each row is a registry entry (with overrides); every estimator for Gaussians has one."""
  entries = {v.entry for v in variance.VARIANTS.values()}
  assert entries == set(gradest.estimator_names("gaussian"))
  assert variance.ESTIMATORS == {n: v.label for n, v in variance.VARIANTS.items()}


def test_writes_every_file(quick_run):
  out, result = quick_run
  for name in FILES:
    assert (out / name).stat().st_size > 0, name
  with open(out / "variance.json") as fh:
    saved = json.load(fh)
  assert saved["config"]["samples"] == result["config"]["samples"] == 20
  assert len(saved["rows"]) == len(result["rows"])
  with open(out / "variance.csv", newline="") as fh:
    assert len(list(csv.DictReader(fh))) == len(result["rows"])


def test_every_estimator_problem_and_parameter(quick_run):
  rows = quick_run[1]["rows"]
  problems = variance.make_problems(quick=True)
  expected = sum(len(p.ks) * len(p.params) for p in problems) * len(variance.ESTIMATORS)
  assert len(rows) == expected
  assert {r["estimator"] for r in rows} == set(variance.ESTIMATORS)
  seed_rows = [r for r in rows if r["problem"] == "seed"]
  assert {r["exact_grad"] for r in seed_rows} == {20.0}
  table = variance.format_table(rows)
  assert table.count("\n") > len(rows)
  summary = variance.format_summary(rows).splitlines()
  groups = {(r["problem"], r["param"]) for r in rows}
  problems_seen = {r["problem"] for r in rows}
  # one line per (problem, parameter, estimator), one verdict per problem, head, legend
  expected_lines = len(groups) * len(variance.ESTIMATORS) + 2 * len(problems_seen) + 2
  assert len(summary) == expected_lines + len(variance.SUMMARY_LEGEND)
  assert all(
    any(line.startswith(f"{p}: lowest variance") for line in summary) for p in problems_seen
  )


def test_means_match_exact_gradients(quick_run):
  """Every row's mean is within z standard errors, Bonferroni-corrected over the rows."""
  rows = quick_run[1]["rows"]
  z = z_value(len(rows))
  bad = [
    r
    for r in rows
    if abs(r["mean"] - r["exact_grad"]) > z * r["mean_se"] + FLOOR * (1 + abs(r["exact_grad"]))
  ]
  assert not bad, f"{len(bad)} biased rows (z={z:.2f}): {bad[:3]}"


def test_variances_match_exact_variances(quick_run):
  """``N Var`` against its exact value, within z standard errors of a sample variance.

  The standard error of the sample variance of ``R`` repetitions is
  ``sqrt((m4 - var^2) / R)`` (``m4`` the fourth central moment), computed by the
  benchmark as ``n_var_se``.
  """
  rows = quick_run[1]["rows"]
  z = z_value(len(rows))
  bad = [
    r
    for r in rows
    if abs(r["n_var"] - r["exact_n_var"]) > z * r["n_var_se"] + FLOOR * (1 + r["exact_n_var"])
  ]
  assert not bad, f"{len(bad)} rows off their exact variance (z={z:.2f}): {bad[:3]}"


def test_quadrature_is_converged_at_the_largest_k():
  fine = variance.Quadrature(tail=14.0, points=24001, points_2d=4801, points_u=1601)
  for cost in variance.COSTS.values():
    ks = (max(cost.ks, key=abs),)
    got = variance.exact_moments(cost, 1.0, 1.0, ks, 100, 0.9)
    ref = variance.exact_moments(cost, 1.0, 1.0, ks, 100, 0.9, fine)
    for key, (mean, var) in got.items():
      np.testing.assert_allclose(mean, ref[key][0], rtol=1e-8, atol=1e-12, err_msg=str(key))
      np.testing.assert_allclose(var, ref[key][1], rtol=1e-8, atol=1e-12, err_msg=str(key))


def test_the_k_ranges_cross_the_orderings():
  """Each default range contains a change of the variance ordering (see COSTS)."""
  coarse = variance.Quadrature(points=4001, points_2d=801, points_u=401)
  pairs = {
    "square": ("pathwise", "mv_coupled"),
    "gauss": ("pathwise", "score_oracle"),
    "cos": ("pathwise", "score_oracle"),
  }
  for name, (a, b) in pairs.items():
    cost = variance.COSTS[name]
    moments = variance.exact_moments(cost, 1.0, 1.0, cost.ks, 100, 0.9, coarse)
    sign = np.sign(moments[(a, "mu")][1] - moments[(b, "mu")][1])
    assert sign.min() < 0 < sign.max(), (name, a, b, sign)


def _gaussian_draws(rng, shape, mu=1.0, sigma=1.0):
  eps = rng.standard_normal(shape)
  x = mu + sigma * eps
  return x, {"mu": eps / sigma, "sigma": (eps**2 - 1.0) / sigma}


@pytest.mark.parametrize("moment", ["mu", "sigma"])
def test_leave_one_out_formula_by_simulation(moment):
  """The U-statistic variance, at N=2 where it is far from the oracle baseline's."""
  n, reps, k = 2, 100_000, 3.0
  cost = variance.COSTS["cos"]
  rng = np.random.default_rng(0)
  x, scores = _gaussian_draws(rng, (reps, n))
  f = cost.fn(x, k, np)
  baseline = (f.sum(axis=1, keepdims=True) - f) / (n - 1)
  g = np.mean((f - baseline) * scores[moment], axis=1)
  moments = variance.exact_moments(cost, 1.0, 1.0, (k,), n, 0.9)
  exact = moments[("score_loo", moment)][1]
  assert abs(exact[0] / moments[("score_oracle", moment)][1][0] - 1) > 0.2
  assert_variance(np.sqrt(n) * g, exact)


@pytest.mark.parametrize("moment", ["mu", "sigma"])
def test_moving_average_formula_by_simulation(moment):
  """The stationary moving-average variance, at N=2 and decay 0.2 where it matters.

  Independent chains of the zero-debiased average, each run past its burn-in; the
  last step of every chain is one draw.
  """
  n, chains, decay, k = 2, 100_000, 0.2, 3.0
  cost = variance.COSTS["cos"]
  rng = np.random.default_rng(1)
  average, value = np.zeros(chains), np.zeros(chains)
  for step in range(1, variance.burn_in_steps(decay) + 2):
    x, scores = _gaussian_draws(rng, (chains, n))
    f = cost.fn(x, k, np)
    g = np.mean((f - value[:, None]) * scores[moment], axis=1)
    average = decay * average + (1 - decay) * f.mean(axis=1)
    value = average / (1 - decay**step)
  moments = variance.exact_moments(cost, 1.0, 1.0, (k,), n, decay)
  exact = moments[("score_ma", moment)][1]
  assert abs(exact[0] / moments[("score_oracle", moment)][1][0] - 1) > 0.2
  assert_variance(np.sqrt(n) * g, exact)


def test_rejects_bad_flags():
  with pytest.raises(SystemExit):
    variance.parse_args(["--samples", "1"])
  with pytest.raises(SystemExit):
    variance.parse_args(["--decay", "1.0"])
