"""The NumPyro benchmark: it runs, writes its files, and its numbers are sane.

One quick run (compilation is most of it) is checked by helpers called from a single test:
pytest-xdist would otherwise run a module fixture once per worker.
"""

from __future__ import annotations

import csv
import json
import math

import pytest

pytest.importorskip("numpyro")

from benchmarks import numpyro as bench  # noqa: E402

# Every figure a run writes meets the plot contract (benchmarks.common.figure_problems):
# save_figure's PlotWarning fails the test.
pytestmark = pytest.mark.filterwarnings("error::benchmarks.common.PlotWarning")

FILES = (
  "variance.csv",
  "convergence.csv",
  "numpyro.json",
  "variance.png",
  "elbo_steps.png",
  "elbo_seconds.png",
)


def test_quick_run(tmp_path):
  result = bench.main(["--quick", "--quiet", "--out", str(tmp_path)])
  quick_run = (tmp_path, result)
  check_writes_every_file(quick_run)
  check_variance_rows(quick_run)
  check_convergence_rows(quick_run)
  check_format_tables(quick_run)


def _read(path):
  with open(path, newline="") as fh:
    return list(csv.DictReader(fh))


def check_writes_every_file(quick_run):
  out, result = quick_run
  for name in FILES:
    assert (out / name).stat().st_size > 0, name
  with open(out / "numpyro.json") as fh:
    saved = json.load(fh)
  assert saved["config"]["quick"] is True
  assert len(saved["convergence"]) == len(result["convergence"])
  variance = _read(out / "variance.csv")
  assert tuple(variance[0]) == bench.VARIANCE_COLUMNS
  assert len(variance) == len(result["variance"])
  convergence = _read(out / "convergence.csv")
  assert tuple(convergence[0]) == bench.CONVERGENCE_COLUMNS
  assert [(r["problem"], r["estimator"]) for r in convergence] == [
    (r["problem"], r["estimator"]) for r in result["convergence"]
  ]


def check_variance_rows(quick_run):
  _, result = quick_run
  rows = result["variance"]
  expected_sites = {"gmm": {"mu", "z"}, "sbn": {"z1", "z2"}}
  for problem, sites in expected_sites.items():
    assert {r["site"] for r in rows if r["problem"] == problem} == sites
  assert {r["point"] for r in rows} == {"init", "trained"}
  for r in rows:
    assert math.isfinite(r["variance"]) and r["variance"] > 0, r
    assert math.isfinite(r["ratio"]) and r["ratio"] > 0, r
    if r["estimator"] == bench.REFERENCE:
      assert r["ratio"] == pytest.approx(1.0)
  # The exact reference has no sampled discrete site: it has no variance row.
  assert not any(r["estimator"] == bench.ENUM for r in rows)
  # DisARM's Bernoulli sites: less variance than TraceGraph_ELBO's score function.
  for r in rows:
    if r["estimator"] == "disarm" and r["site"] != "mu":
      assert r["ratio"] > 1.0, r


def check_convergence_rows(quick_run):
  _, result = quick_run
  rows = {(r["problem"], r["estimator"]): r for r in result["convergence"]}
  for problem in ("gmm", "sbn"):
    for name in (bench.REFERENCE, "disarm", bench.ENUM):
      assert (problem, name) in rows, (problem, name)  # the exact reference is present
  for r in rows.values():
    assert not r["diverged"], r["estimator"]
    assert all(math.isfinite(v) for v in r["curve_elbo"]), r["estimator"]
    assert r["curve_steps"][0] == 0 and r["curve_steps"][-1] == r["steps"]
    assert r["curve_seconds"] == sorted(r["curve_seconds"])
    assert r["ms_per_step"] > 0 and r["compile_seconds"] > 0
    assert r["final_elbo"] < 0
  for problem in ("gmm", "sbn"):
    ref = rows[(problem, bench.REFERENCE)]
    assert ref["target"] == ref["final_elbo"] and ref["steps_to_target"] is not None
    # The exact objectives bound the mean-field ELBO from above (the same parameters of
    # the model at step 0; evaluated with many particles).
    exact = rows[(problem, bench.ENUM)]
    assert exact["curve_elbo"][0] > ref["curve_elbo"][0]


def check_format_tables(quick_run):
  _, result = quick_run
  table = bench.format_variance_table(result["variance"])
  assert table.count("\n") == len(result["variance"]) + 1
  assert bench.ENUM in bench.format_convergence_table(result["convergence"])


@pytest.mark.parametrize(
  "argv",
  [
    ["--particles", "1", "--estimators", "reinforce_loo"],
    ["--repeats", "1"],
    ["--steps", "0"],
    ["--lr", "0"],
    ["--train-size", "5000"],
  ],
)
def test_bad_flags(argv):
  with pytest.raises(SystemExit):
    bench.parse_args(argv)
