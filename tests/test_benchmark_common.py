"""The benchmarks' shared timing and reporting helpers (structure, not speed)."""

from __future__ import annotations

import csv
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import common


def test_time_interleaved_orders_functions_of_known_cost():
  # The same jitted work, once and 20 times over (a sequential chain XLA cannot fold).
  def work(x, times):
    def body(_, y):
      return jnp.tanh(y @ x) + y

    return jax.lax.fori_loop(0, times, body, x)

  x = jnp.eye(128) * 0.5 + 0.01
  fns = {
    "once": common.compile_ahead(lambda x: work(x, 1), (x,)).executable,
    "twenty": common.compile_ahead(lambda x: work(x, 20), (x,)).executable,
  }
  timings = common.time_interleaved(fns, (x,), repeats=3, min_time=0.005)
  assert list(timings) == ["once", "twenty"]
  for t in timings.values():
    assert isinstance(t, common.Timing)
    assert t.repeats == 3 and t.number >= 1
    assert all(math.isfinite(s) and s > 0 for s in t.times)
    assert t.min <= t.median <= max(t.times)
    assert t.statistic("min") == t.min and t.statistic("median") == t.median
  # Loose: 20x the work is measured at least 3x slower, by either statistic.
  assert timings["twenty"].min > 3 * timings["once"].min
  assert timings["twenty"].median > 3 * timings["once"].median
  # Each measurement lasts about min_time: the cheaper function makes more calls.
  assert timings["once"].number >= timings["twenty"].number


def test_time_interleaved_budget_and_same_number():
  calls = {"a": 0, "b": 0}

  def counter(name):
    def fn():
      calls[name] += 1
      return jnp.zeros(())

    return fn

  fns = {name: counter(name) for name in calls}
  timings = common.time_interleaved(
    fns, repeats=10, min_time=0.0, first_call={"a": 1.0, "b": 0.5}, budget=0.1, same_number=True
  )
  # The budget cuts the repeats to min_repeats; no warm-up calls when first_call is given.
  assert all(t.repeats == 3 and t.number == 1 for t in timings.values())
  assert calls == {"a": 3, "b": 3}


def test_compile_ahead_keeps_static_arguments():
  scale = jax.jit(lambda x, k: x * k, static_argnums=1)
  compiled = common.compile_ahead(scale, (jnp.ones(3), 2.0))
  assert compiled.seconds >= 0
  np.testing.assert_allclose(compiled.executable(jnp.ones(3)), 2.0)


def test_writers(tmp_path):
  rows = [{"a": 1, "b": math.nan}, {"a": 2, "c": "x"}]
  common.write_csv(rows, str(tmp_path / "t.csv"))
  with open(tmp_path / "t.csv") as fh:
    read = list(csv.DictReader(fh))
  assert [r["a"] for r in read] == ["1", "2"] and list(read[0]) == ["a", "b", "c"]
  common.write_json(
    {"rows": rows, "t": (1, 2), "x": np.float32(0.5), "inf": math.inf}, str(tmp_path / "t.json")
  )
  saved = json.loads((tmp_path / "t.json").read_text())
  assert saved == {
    "rows": [{"a": 1, "b": None}, {"a": 2, "c": "x"}],
    "t": [1, 2],
    "x": 0.5,
    "inf": None,
  }


def test_integer_flags_accept_the_usual_notations():
  import argparse

  from benchmarks.common import integer, integer_list

  assert integer("1e6") == integer("1_000_000") == integer("1000000") == 1_000_000
  assert integer_list("1e4,1e5,2") == (10_000, 100_000, 2)
  for bad in ("1.5", "1e-3", "inf", "a lot"):
    with pytest.raises(argparse.ArgumentTypeError):
      integer(bad)


def test_every_benchmark_size_flag_takes_1e6():
  from benchmarks import nce, skipgram

  assert nce.parse_args(["--sampler-vocab", "1e6"]).sampler_vocab == 1_000_000
  assert nce.parse_args(["--vocab", "1e4,1e5"]).vocab == (10_000, 100_000)
  assert skipgram.parse_args(["--sentences", "1.5e5"]).sentences == 150_000
