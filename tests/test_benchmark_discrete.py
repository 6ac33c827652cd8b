"""The discrete benchmark: it runs, writes its files, and its numbers are sane.

One quick run takes about a minute (compilation), so every check on it is a helper
called from a single test: pytest-xdist would otherwise run the module fixture once per
worker.
"""

from __future__ import annotations

import csv
import functools
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradest
from benchmarks import discrete
from benchmarks.common import FAST_COMPILE_OPTIONS
from benchmarks.datasets import load_binarized_digits
from gradest.models import sbn

from .helpers import z_value

# Every figure a run writes meets the plot contract (benchmarks.common.figure_problems):
# save_figure's PlotWarning fails the test.
pytestmark = pytest.mark.filterwarnings("error::benchmarks.common.PlotWarning")

ESTIMATORS = ("disarm", "relax", "vimco", "wake_sleep")
FILES = (
  "toy.csv",
  "sbn.csv",
  "discrete.json",
  "toy_variance.png",
  "toy_curves.png",
  "sbn_elbo.png",
  "sbn_variance.png",
)


def test_quick_run(tmp_path):
  result = discrete.main(
    ["--quick", "--quiet", "--out", str(tmp_path), "--estimators", *ESTIMATORS]
  )
  quick_run = (tmp_path, result)
  check_writes_every_file(quick_run)
  check_toy_rows_cover_problems_and_are_unbiased(quick_run)
  check_toy_curves_decrease(quick_run)
  check_sbn_training_improves_the_elbo(quick_run)
  check_format_tables(quick_run)


def check_writes_every_file(quick_run):
  out, result = quick_run
  for name in FILES:
    assert (out / name).stat().st_size > 0, name
  with open(out / "discrete.json") as fh:
    saved = json.load(fh)
  assert saved["config"]["estimators"] == list(ESTIMATORS)
  with open(out / "toy.csv", newline="") as fh:
    assert len(list(csv.DictReader(fh))) == len(result["toy"])
  with open(out / "sbn.csv", newline="") as fh:
    assert [r["estimator"] for r in csv.DictReader(fh)] == list(ESTIMATORS)


def check_toy_rows_cover_problems_and_are_unbiased(quick_run):
  _, result = quick_run
  rows = result["toy"]
  toy_estimators = [e for e in ESTIMATORS if e in discrete.ESTIMATORS]
  thetas = [-1.0, 1.0]
  assert len(rows) == len(discrete.make_toys()) * len(toy_estimators) * len(thetas)
  # Both estimators are unbiased; bias_se is the largest of up to 100 coordinates.
  z = z_value(sum(t.dim for t in discrete.make_toys()) * len(thetas) * len(toy_estimators))
  for r in rows:
    assert abs(r["bias_se"]) < z, r
    assert r["variance"] > 0
  for r in rows:
    toy = {t.name: t for t in discrete.make_toys()}[r["problem"]]
    p = 1.0 / (1.0 + math.exp(-r["theta"]))
    exact = p * (1 - p) * (1 - 2 * np.asarray(toy.target))
    expected = exact[0] if toy.dim == 1 else np.linalg.norm(exact)
    assert r["exact_grad"] == pytest.approx(expected, rel=1e-4)  # float32 1 - 2t


def check_toy_curves_decrease(quick_run):
  _, result = quick_run
  for toy in discrete.make_toys():
    for name, losses in result["toy_curves"][toy.name].items():
      assert len(losses) == 50
      assert all(np.isfinite(losses)), name
      assert min(losses) >= toy.minimum() - 1e-5


def check_sbn_training_improves_the_elbo(quick_run):
  _, result = quick_run
  train, _ = load_binarized_digits()
  params = sbn.init_variational_sbn(jax.random.key(0), train.shape[1], 8)
  start = float(np.mean(sbn.elbo(params, train[:500], jax.random.key(1), num_samples=10)))
  for r in result["sbn"]:
    assert len(r["train_elbo"]) == len(r["steps"]) == 2
    assert np.all(np.isfinite(r["grad_variance"])) and min(r["grad_variance"]) > 0
    assert r["final_train_elbo"] > start + 1.0, (r["estimator"], start)
    # The importance-weighted bound is at least the ELBO (up to Monte Carlo error).
    assert r["test_iw_bound"] >= r["test_elbo"] - 0.5


def check_format_tables(quick_run):
  _, result = quick_run
  assert discrete.format_toy_table(result["toy"]).count("\n") == len(result["toy"]) + 1
  assert "wake_sleep" in discrete.format_sbn_table(result["sbn"])


def test_estimators_come_from_the_registry():
  names = gradest.estimator_names("bernoulli")
  assert set(discrete.ESTIMATORS) | set(discrete.MULTI_SAMPLE) == set(names)
  assert set(discrete.BIASED) == {n for n in names if not gradest.ESTIMATORS[n].unbiased}
  assert set(discrete.LEARNED_CV) == {"rebar", "relax"}
  # ARM and DisARM get their evaluations as pairs: the same cost as the others.
  for name in ("arm", "disarm"):
    assert gradest.ESTIMATORS[name].evaluations_per_row == 2
  cfg = discrete.Config(samples=4)
  for name in discrete.ESTIMATORS:
    f = lambda b: jnp.sum((b - 0.45) ** 2)  # noqa: E731
    cv = discrete.init_cv(name, jax.random.key(0), 3, cfg)
    # One fast-compiled program per estimator (op-by-op execution is slower).
    estimate = jax.jit(
      functools.partial(discrete.estimate, name, f, cfg=cfg), compiler_options=FAST_COMPILE_OPTIONS
    )
    g, per_sample, cv_grad = estimate(jnp.zeros(3), jax.random.key(1), cv)
    rows = cfg.samples // gradest.ESTIMATORS[name].evaluations_per_row
    assert g.shape == (3,) and per_sample.shape == (rows, 3), name
    assert (name in discrete.LEARNED_CV) == bool(cv_grad), name


@pytest.mark.parametrize(
  "argv",
  [
    ["--samples", "3"],
    ["--samples", "0"],
    ["--samples", "1", "--estimators", "reinforce_loo"],
    ["--temperature", "0"],
    ["--repeats", "1"],
  ],
)
def test_bad_flags(argv):
  with pytest.raises(SystemExit):
    discrete.parse_args(argv)


def test_odd_samples_without_pairs():
  """An odd --samples is fine when no selected estimator evaluates f in pairs."""
  args = discrete.parse_args(["--samples", "3", "--estimators", "reinforce_loo", "rebar"])
  assert args.samples == 3
