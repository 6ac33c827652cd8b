"""Smoke test of ``python -m benchmarks.speed`` in its quick mode."""

from __future__ import annotations

import csv
import json
import math

import jax
import numpy as np
import pytest

from benchmarks import speed

# Every figure a run writes meets the plot contract (benchmarks.common.figure_problems):
# save_figure's PlotWarning fails the test.
pytestmark = pytest.mark.filterwarnings("error::benchmarks.common.PlotWarning")


def _assert_same(gradest_out, reference_out, what):
  """Leaf-by-leaf allclose, relative to the largest entry of the reference leaf."""
  g_leaves = {"grad": gradest_out[0], "per_sample": gradest_out[1], "values": gradest_out[2]}
  r_leaves = {"grad": reference_out[0], "per_sample": reference_out[1], "values": reference_out[2]}
  for part in ("grad", "per_sample"):
    if r_leaves[part] is None:
      assert g_leaves[part] is None, f"{what}: gradest returned {part} that was not asked for"
      continue
    g_tree = jax.tree_util.tree_flatten_with_path(g_leaves[part])
    r_tree = jax.tree_util.tree_flatten_with_path(r_leaves[part])
    assert g_tree[1] == r_tree[1], f"{what} {part}: different parameters"
    for (path, g), (_, r) in zip(g_tree[0], r_tree[0], strict=True):
      name = jax.tree_util.keystr(path)
      g, r = np.asarray(g), np.asarray(r)
      assert g.shape == r.shape, f"{what} {part}[{name}]: shapes {g.shape} != {r.shape}"
      np.testing.assert_allclose(
        g, r, rtol=1e-4, atol=1e-5 * float(np.max(np.abs(r))), err_msg=f"{what} {part}[{name}]"
      )
  np.testing.assert_allclose(g_leaves["values"], r_leaves["values"], rtol=1e-5, err_msg=what)


def test_quick_run_writes_outputs_and_matches_references(tmp_path):
  args = speed.parse_args(
    ["--quick", "--out", str(tmp_path), "--repeats", "2", "--no-progress", "--min-time", "0"]
  )
  rows = speed.run_from_args(args, keep_outputs=True)

  # The default costs: cos with all 4 continuous estimators, squares with 3 (no
  # measure-valued), and the Bernoulli cost bits with the 4 discrete ones.
  assert speed.DEFAULT_COSTS == ("cos", "squares", "bits")
  expected_cells = len(speed.QUICK_DIMS) * len(speed.QUICK_SAMPLES) * (4 + 3 + 4) * 2
  assert len(rows) == expected_cells
  assert {r["cost"] for r in rows} == {"cos", "squares", "bits"}
  discrete = {(r["estimator"], r["mode"]) for r in rows if r["cost"] == "bits"}
  assert discrete == {(e, m) for e in speed.DISCRETE_ESTIMATORS for m in speed.MODES}
  for name in ("speed.csv", "speed.json", "speed.png"):
    assert (tmp_path / name).stat().st_size > 0, name
  with open(tmp_path / "speed.csv") as fh:
    assert len(list(csv.DictReader(fh))) == expected_cells
  payload = json.loads((tmp_path / "speed.json").read_text())
  assert len(payload["results"]) == expected_cells
  assert payload["meta"]["runtime_s"] > 0

  for row in rows:
    what = f"{row['cost']} {row['estimator']} {row['mode']} D={row['dim']} N={row['num_samples']}"
    assert row["check"] == "ok", f"{what}: {row['check']} {row['note']}"
    assert row["max_rel_err"] <= 1e-4, what
    _assert_same(row["outputs"]["gradest"], row["outputs"]["reference"], what)
    grad, per_sample, values = row["outputs"]["gradest"]
    if row["cost"] == "bits":
      # The gradient with respect to the (D,) logits; N/2 rows for the antithetic pairs.
      rows_per_sample = row["num_samples"] // (2 if row["estimator"] in ("arm", "disarm") else 1)
      assert np.shape(grad) == (row["dim"],), what
      if row["mode"] == "per_sample":
        assert np.shape(per_sample) == (rows_per_sample, row["dim"]), what
      assert np.shape(values) == (row["num_samples"],), what
      assert np.any(np.asarray(grad) != 0), f"{what}: an all-zero gradient checks nothing"
    else:
      # The squares cost has the mean as its only parameter (the scale is fixed).
      params = {"cos": {"mu", "log_sigma"}, "squares": {"mu"}}[row["cost"]]
      assert set(grad) == params, what
    for impl in ("gradest", "reference"):
      assert math.isfinite(row[f"{impl}_ms"]) and row[f"{impl}_ms"] > 0, what
    assert math.isfinite(row["gradest_over_reference"]), what
    # optax forms per-sample jacobians only, has no leave-one-out baseline and no
    # discrete estimators.
    if row["cost"] == "bits" and row["mode"] == "per_sample":
      assert "no discrete estimators" in row["note"], what
    elif row["estimator"] == "score_loo" and row["mode"] == "per_sample":
      assert "leave-one-out" in row["note"]
    elif row["mode"] == "per_sample":
      assert math.isfinite(row["optax_over_gradest"]), f"{what}: {row['note']}"


def test_skip_rules_at_full_size():
  settings = speed.settings_from_args(speed.parse_args([]))
  # Per-sample output of N x D = 1e9 elements per leaf is over the 1e8 budget.
  assert "per-sample" in speed._skip_reason(settings, "score", "per_sample", 100_000, 10_000)
  # The mean mode there needs the 1e9 samples (4 GB) and their noise: over --max-gb 6.
  assert "GB" in speed._skip_reason(settings, "score", "mean", 100_000, 10_000)
  big = speed.settings_from_args(speed.parse_args(["--max-gb", "20"]))
  assert speed._skip_reason(big, "score", "mean", 100_000, 10_000) is None
  # Measure-valued is O(N D^2): by default only D = 10 runs; --mvd-max-work 1e8 adds
  # D = 1000 with N = 100.
  assert speed._skip_reason(settings, "measure_valued", "mean", 10, 10_000) is None
  assert "O(N D^2)" in speed._skip_reason(settings, "measure_valued", "mean", 1000, 100)
  more = speed.settings_from_args(speed.parse_args(["--mvd-max-work", "1e8"]))
  assert speed._skip_reason(more, "measure_valued", "mean", 1000, 100) is None
  assert "O(N D^2)" in speed._skip_reason(more, "measure_valued", "mean", 1000, 10_000)
  assert "O(N D^2)" in speed._skip_reason(settings, "measure_valued", "mean", 100_000, 100)
  # The default grid: every D with every N, and D = N = 1000.
  assert (1000, 1000) in settings.cells and (100_000, 10_000) in settings.cells
  assert len(settings.cells) == len(speed.FULL_DIMS) * len(speed.FULL_SAMPLES) + 1
  assert settings.costs == ("cos", "squares", "bits")
  # The Bernoulli cells: every D with N = 100 and 1000; the largest per-sample output
  # (N x D = 1e8) is within the element budget.
  assert settings.discrete_cells == tuple(
    (d, n) for d in speed.FULL_DIMS for n in speed.DISCRETE_SAMPLES
  )
  for estimator in speed.DISCRETE_ESTIMATORS:
    for mode in speed.MODES:
      assert speed._skip_reason(settings, estimator, mode, 100_000, 1000) is None
  # Antithetic pairs need an even N; the leave-one-out baseline two samples.
  assert "multiple of 2" in speed._skip_reason(settings, "disarm", "mean", 10, 15)
  assert "N >= 2" in speed._skip_reason(settings, "reinforce_loo", "mean", 10, 1)
  # ARM and DisARM have N/2 per-sample rows.
  small = speed.settings_from_args(speed.parse_args(["--per-sample-max-elements", "500"]))
  assert speed._skip_reason(small, "arm", "per_sample", 10, 100) is None
  assert "per-sample" in speed._skip_reason(small, "straight_through", "per_sample", 10, 100)
  # optax's forward-mode jacobians do N D^2 work: timed up to D = N = 1000 by default.
  assert speed.optax_work(1000, 1000) <= settings.optax_max_work
  assert speed.optax_work(10_000, 1000) > settings.optax_max_work
  row = speed.run_cell(settings, speed.COSTS["cos"], "measure_valued", "mean", 100_000, 100)
  assert row["check"] == "skipped" and row["note"].startswith("skipped:")


def test_cells_and_costs_flags():
  args = speed.parse_args(["--cells", "1000x1000,10x100", "--costs", "squares"])
  settings = speed.settings_from_args(args)
  assert settings.cells == ((1000, 1000), (10, 100))
  assert settings.costs == ("squares",)
  assert settings.discrete_cells == ((1000, 1000), (10, 100))
  grid = speed.settings_from_args(speed.parse_args(["--dims", "10,20", "--samples", "5"]))
  assert grid.cells == grid.discrete_cells == ((10, 5), (20, 5))
  # --families selects the costs of a family (continuous: Normal, discrete: Bernoulli).
  only = speed.settings_from_args(speed.parse_args(["--families", "discrete"]))
  assert only.costs == ("bits",)
  assert speed.settings_from_args(speed.parse_args(["--families", "continuous"])).costs == (
    "cos",
    "squares",
  )
  both = speed.parse_args(["--costs", "bits,bits_coupled,cos", "--families", "discrete"])
  assert both.costs == ("bits", "bits_coupled")


def test_discrete_references_match_on_a_non_separable_cost():
  """The straight-through reference uses the full gradient of f, not an elementwise one."""
  settings = speed.settings_from_args(
    speed.parse_args(["--quick", "--cells", "7x12", "--repeats", "1", "--min-time", "0"])
  )
  cost = speed.COSTS["bits_coupled"]
  for estimator in speed.DISCRETE_ESTIMATORS:
    row = speed.run_cell(settings, cost, estimator, "per_sample", 7, 12, keep_outputs=True)
    what = f"bits_coupled {estimator}"
    assert row["check"] == "ok", f"{what}: {row['note']}"
    _assert_same(row["outputs"]["gradest"], row["outputs"]["reference"], what)
