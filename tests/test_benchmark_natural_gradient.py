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
    if r["optimizer"] == "kfac" and r["status"] != "ok" and not r["losses"]:
      continue
    losses = np.asarray(r["losses"])
    assert len(losses) == result["config"]["steps"][r["problem"]] + 1, r["optimizer"]
    assert np.all(np.isfinite(losses)), (r["problem"], r["optimizer"])
    assert r["final_loss"] == pytest.approx(losses[-1])
    assert r["steps_to_target"] == bench.steps_to_target(losses, r["target"])
    if r["steps_to_target"] is not None:
      assert losses[r["steps_to_target"]] <= r["target"]
      assert r["seconds_to_target"] >= 0
    assert r["seconds_per_step"] > 0
  by_name = {(r["problem"], r["optimizer"]): r for r in rows}
  for problem in problems:
    # The exact natural gradient makes progress in the few quick steps.
    exact = by_name[(problem, "ng_exact")]["losses"]
    assert exact[-1] < 0.8 * exact[0], problem


def check_kfac_is_run_or_explained(quick_run):
  _, result = quick_run
  kfac_rows = [r for r in result["convergence"] if r["optimizer"] == "kfac"]
  assert kfac_rows
  status = result["kfac"]["status"]
  assert status
  for r in kfac_rows:
    assert r["status"] == ("ok" if result["kfac"]["available"] else status)


def check_format_tables(quick_run):
  _, result = quick_run
  assert bench.format_cost_table(result["cost"]).count("\n") == len(result["cost"]) + 1
  table = bench.format_convergence_table(result["convergence"])
  assert table.count("\n") == len(result["convergence"]) + 1
  assert "ng_exact" in table


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
    ["--steps", "0", "1", "1"],
    ["--cost-sizes", "5"],
    ["--autoencoder-sizes", "64", "8", "32"],
    ["--examples", "0"],
    ["--skip-cost", "--skip-convergence"],
  ],
)
def test_bad_flags(argv):
  with pytest.raises(SystemExit):
    bench.parse_args(argv)
