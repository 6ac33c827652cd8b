"""The NCE benchmark: a quick run writes every file, with one row per method and size.

Timings are not asserted (the benchmark reports them; the machines are shared).
"""

from __future__ import annotations

import csv
import json

import pytest

from benchmarks import nce

# Every figure a run writes meets the plot contract (benchmarks.common.figure_problems):
# save_figure's PlotWarning fails the test.
pytestmark = pytest.mark.filterwarnings("error::benchmarks.common.PlotWarning")


def test_quick_run(tmp_path):
  result = nce.main(["--quick", "--quiet", "--out", str(tmp_path)])
  for name in ("nce_time.csv", "nce_samplers.csv", "nce_tables.csv", "nce.json", "nce.png"):
    assert (tmp_path / name).stat().st_size > 0, name
  with open(tmp_path / "nce.json") as fh:
    saved = json.load(fh)
  assert saved["config"]["quick"] is True
  methods = {"full_softmax"} | {f"sampled_softmax/{mode}" for mode in ("dense", "sparse")}
  for vocab in (1_000, 10_000):
    rows = [r for r in result["time"] if r["vocab"] == vocab]
    assert {r["method"] for r in rows} == methods
    assert all(r["median_s"] > 0 and r["repeats"] >= 3 for r in rows)
    full = next(r for r in rows if r["method"] == "full_softmax")
    assert full["full_over_this"] == 1.0
  with open(tmp_path / "nce_time.csv", newline="") as fh:
    assert len(list(csv.DictReader(fh))) == len(result["time"]) == 2 * len(methods)
  samplers = result["samplers"]
  by_draws = {n: {r["method"] for r in samplers if r["draws"] == n} for n in (64, 4096)}
  # jax.random.categorical builds draws x V perturbations: run only under --categorical-max.
  assert "jax.random.categorical" in by_draws[64]
  assert "jax.random.categorical" not in by_draws[4096]
  assert {"unigram (alias)", "log_uniform", "uniform", "jax.random.choice(p=)"} <= by_draws[4096]
  assert all(r["draws_per_s"] > 0 and r["over_choice"] > 0 for r in samplers)
  assert all(r["over_uniform"] > 0 for r in samplers)
  table = nce.format_time_table(result["time"])
  assert "full_softmax" in table and "V=1e+04" in table
  assert "unigram (alias)" in nce.format_sampler_table(samplers)
  # The alias-table build: both kinds of counts, each built in a fresh process, exact.
  tables = result["tables"]
  assert {(r["vocab"], r["mode"]) for r in tables} == {(1_000, "concrete"), (1_000, "traced")}
  for r in tables:
    assert r["first_s"] > 0 and r["min_s"] > 0 and r["table_mb"] > 0
    assert r["max_rel_error"] < 1e-5 and r["traced_vs_concrete"] < 1e-5
  assert "traced" in nce.format_build_table(tables)
