"""The natural-gradient benchmark: it runs, writes its files, and its numbers are sane.

One quick run (about half a minute, mostly compilation) is checked by helpers called
from a single test: pytest-xdist would otherwise run a module fixture once per worker.
"""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from benchmarks import natural_gradient as bench

# Every figure a run writes meets the plot contract (benchmarks.common.figure_problems):
# save_figure's PlotWarning fails the test.
pytestmark = pytest.mark.filterwarnings("error::benchmarks.common.PlotWarning")

FILES = ("cost.csv", "convergence.csv", "natural_gradient.json", "cost.png", "convergence.png")
COST_FUNCTIONS = (
  "gradient",
  "fvp_exact",
  "fvp_empirical",
  "fvp_monte_carlo",
  "ggn",
  "step_natural_gradient",
  "step_fisher_diagonal",
  "step_adam",
  "cg_iteration",
)


def test_quick_run(tmp_path):
  result = bench.main(["--quick", "--quiet", "--out", str(tmp_path)])
  quick_run = (tmp_path, result)
  check_writes_every_file(quick_run)
  check_cost_rows(quick_run)
  check_convergence_rows(quick_run)
  check_kfac_is_run_or_explained(quick_run)
  check_format_tables(quick_run)


def check_writes_every_file(quick_run):
  out, result = quick_run
  for name in FILES:
    assert (out / name).stat().st_size > 0, name
  with open(out / "natural_gradient.json") as fh:
    saved = json.load(fh)
  assert saved["config"]["quick"] is True
  assert len(saved["convergence"]) == len(result["convergence"])
  with open(out / "convergence.csv", newline="") as fh:
    rows = list(csv.DictReader(fh))
  assert [(r["problem"], r["optimizer"]) for r in rows] == [
    (r["problem"], r["optimizer"]) for r in result["convergence"]
  ]


def check_cost_rows(quick_run):
  _, result = quick_run
  rows = {r["function"]: r for r in result["cost"]}
  assert tuple(rows) == COST_FUNCTIONS
  assert rows["gradient"]["gradients"] == pytest.approx(1.0)
  for name, r in rows.items():
    assert math.isfinite(r["gradients"]) and math.isfinite(r["ms"]), name
    if name != "cg_iteration":  # a difference of two timings; may be ~0 at tiny sizes
      assert r["ms"] > 0, name


def check_convergence_rows(quick_run):
  _, result = quick_run
  rows = result["convergence"]
  problems = ["logreg", "autoencoder"]
  assert [(r["problem"], r["optimizer"]) for r in rows] == [
    (p, o) for p in problems for o in bench.OPTIMIZERS
  ]
  for r in rows:
    if r["optimizer"] == "kfac_jax" and r["status"] != "ok" and not r["losses"]:
      continue
    steps = result["config"]["steps"][r["problem"]]
    losses, seconds = np.asarray(r["losses"]), np.asarray(r["seconds"])
    assert r["steps"] == steps
    assert len(losses) == len(seconds) == steps + 1, r["optimizer"]
    assert np.all(np.isfinite(losses)), (r["problem"], r["optimizer"])
    assert r["final_loss"] == pytest.approx(losses[-1])
    # Seconds after compilation: from 0, growing, the sum of the timed steps.
    assert seconds[0] == 0 and np.all(np.diff(seconds) > 0)
    assert r["total_seconds"] == pytest.approx(seconds[-1])
    assert r["ms_per_step_min"] <= r["ms_per_step_median"]
    assert r["compile_seconds"] >= 0
    assert r["steps_to_target"] == bench.steps_to_target(losses, r["target"])
    if r["steps_to_target"] is not None:
      assert losses[r["steps_to_target"]] <= r["target"]
      assert r["seconds_to_target"] == pytest.approx(seconds[r["steps_to_target"]])
    for ratio in ("vs_adam_median", "vs_adam_min", "vs_adam_amortized"):
      assert r[ratio] > 0, (r["optimizer"], ratio)
    if r["optimizer"] == "adam":
      assert r["vs_adam_median"] == r["vs_adam_amortized"] == pytest.approx(1.0)
    assert len(r["grid"]) == min(len(bench.LEARNING_RATES[r["optimizer"]]), 1)
  by_name = {(r["problem"], r["optimizer"]): r for r in rows}
  for problem in problems:
    # The exact natural gradient makes progress in the few quick steps.
    exact = by_name[(problem, "ng_exact")]["losses"]
    assert exact[-1] < 0.8 * exact[0], problem


def check_kfac_is_run_or_explained(quick_run):
  _, result = quick_run
  kfac_rows = [r for r in result["convergence"] if r["optimizer"] == "kfac_jax"]
  assert kfac_rows
  info = result["kfac_jax"]
  assert info["status"]
  if info["available"]:
    assert info["status"] == "ok" and info["version"]
  for r in kfac_rows:
    assert r["status"] == info["status"]
    assert r["version"] == info["version"]
    if info["available"]:  # timed like every other optimizer, compilation excluded
      assert r["losses"] and r["compile_seconds"] >= 0 and r["vs_adam_median"] > 0
      assert r["reference_loss"] == pytest.approx(r["final_loss"])
      assert r["steps_to_reference"] is not None
    else:
      assert not r["losses"] and r["final_loss"] is None
  # The gradest K-FAC rows always run.
  for name in ("kfac_gradest", "kfac_gradest_adaptive"):
    assert all(r["status"] == "ok" for r in result["convergence"] if r["optimizer"] == name)


def check_format_tables(quick_run):
  _, result = quick_run
  assert bench.format_cost_table(result["cost"]).count("\n") == len(result["cost"]) + 1
  table = bench.format_convergence_table(result["convergence"])
  assert table.count("\n") == len(result["convergence"]) + 1
  assert "ng_exact" in table and "kfac_gradest_adaptive" in table


def test_interleave_rotates_and_times_every_step():
  calls = []

  def make(name):
    def step(params, state, key):
      calls.append(name)
      return params + 1.0, state, np.float32(params)

    return bench.Run(name, None, step, np.float32(0.0), None, [None] * 3, 0.0)

  runs = [make("a"), make("b"), make("c")]
  bench.interleave(runs, 3)
  assert calls == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]
  for run in runs:
    assert len(run.times) == 3 and all(t >= 0 for t in run.times)
    assert [float(v) for v in run.losses] == [0.0, 1.0, 2.0]


def test_step_keys_are_fresh_per_step():
  import jax

  keys = bench.step_keys(jax.random.key(0), 4)
  assert len(keys) == 4
  data = {tuple(np.asarray(jax.random.key_data(k)).tolist()) for k in keys}
  assert len(data) == 4
  assert np.array_equal(
    jax.random.key_data(keys[2]), jax.random.key_data(jax.random.fold_in(jax.random.key(0), 2))
  )


def test_cost_part_alone(tmp_path):
  result = bench.main(
    [
      "--quick",
      "--quiet",
      "--skip-convergence",
      "--no-plots",
      "--cost-cg",
      "2",
      "--out",
      str(tmp_path),
    ]
  )
  assert result["convergence"] == [] and not (tmp_path / "convergence.csv").exists()
  rows = {r["function"]: r for r in result["cost"]}
  assert tuple(rows) == COST_FUNCTIONS
  assert rows["step_natural_gradient"]["products"] == 3  # 2 CG iterations and the warm start
  assert rows["fvp_exact"]["products"] == 1 and rows["gradient"]["products"] == 0
  with open(tmp_path / "cost.csv", newline="") as fh:
    assert [r["function"] for r in csv.DictReader(fh)] == list(COST_FUNCTIONS)


def test_steps_to_target():
  assert bench.steps_to_target([3.0, 2.0, 1.0, 0.5], 1.0) == 2
  assert bench.steps_to_target([3.0, 2.0], 1.0) is None


@pytest.mark.parametrize(
  "argv",
  [
    ["--damping", "-1"],
    ["--cg-maxiter", "0"],
    ["--grid", "0"],
    ["--steps", "0", "1", "1", "1"],
    ["--steps", "1", "1", "1"],
    ["--kfac-damping", "0"],
    ["--kfac-momentum", "1"],
    ["--kfac-curvature-period", "0"],
    ["--kfac-inverse-period", "0"],
    ["--kfac-kl-clip", "-1"],
    ["--cost-sizes", "5"],
    ["--autoencoder-sizes", "64", "8", "32"],
    ["--examples", "0"],
    ["--skip-cost", "--skip-convergence"],
  ],
)
def test_bad_flags(argv):
  with pytest.raises(SystemExit):
    bench.parse_args(argv)
