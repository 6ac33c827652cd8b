"""The benchmarks' shared timing and reporting helpers (structure, not speed)."""

from __future__ import annotations

import csv
import json
import math
import warnings

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


def test_format_table_plain_and_markdown():
  from benchmarks.common import Column, format_table

  rows = [
    {"name": "a", "x": 0.5, "n": 3, "miss": None},
    "",
    {"name": "longer", "x": math.nan, "n": 12, "miss": 1.0},
  ]
  columns = [
    Column("name", "name"),
    Column("x", "x", ".2f"),
    Column("n", "n", "d"),
    Column("twice", lambda r: 2 * r["n"], "d"),
    Column("miss", "miss", ".1f"),
  ]
  lines = format_table(rows, columns).split("\n")
  assert lines[0].split() == ["name", "x", "n", "twice", "miss"]
  assert set(lines[1]) == {"-"} and len(lines[1]) == len(lines[0])
  assert lines[2].split() == ["a", "0.50", "3", "6", "-"] and lines[3] == ""
  assert lines[4].split() == ["longer", "-", "12", "24", "1.0"]
  # Numbers are right-aligned, text left-aligned, every row as wide as the header.
  assert lines[2].startswith("a ") and lines[4].index("24") + 2 == lines[0].index("twice") + 5
  md = format_table(rows[:1], columns, markdown=True).split("\n")
  assert md == [
    "| name | x | n | twice | miss |",
    "|---|---:|---:|---:|---|",
    "| a | 0.50 | 3 | 6 | - |",
  ]
  with pytest.raises(ValueError, match="Column"):
    format_table(rows, [])


def _figure(log_range=(16.0, 19.0), same_style=False, labels=True):
  plt = common.pyplot()
  fig, ax = plt.subplots()
  styles = common.series_styles(["a", "b", "c"])
  x = np.arange(40)
  for name in "abc":
    style = styles["a"] if same_style else styles[name]
    common.plot_series(ax, x, np.linspace(*log_range, 40), style, label=name)
  ax.set_yscale("log")
  if labels:
    ax.set(xlabel="step", ylabel="variance", title="t")
  return fig


def test_series_styles_are_distinct():
  names = [f"s{i}" for i in range(30)]
  styles = common.series_styles(names)
  assert len({(s["marker"], s["linestyle"]) for s in styles.values()}) == len(names)
  # Up to 12 series have distinct markers, so meaningful line styles keep them apart.
  dashed = common.series_styles(names[:12], linestyles={n: "--" for n in names[:6]})
  assert len({(s["marker"], s["linestyle"]) for s in dashed.values()}) == 12
  assert dashed["s0"]["linestyle"] == "--" and dashed["s6"]["linestyle"] == "-"
  widths = [s["linewidth"] for s in styles.values()]
  assert widths == sorted(widths, reverse=True)  # later series thinner, drawn on top


def test_save_figure_makes_readable_log_ticks(tmp_path):
  # A range narrower than a decade (16 to 19): plain matplotlib labels no tick there.
  fig = _figure()
  with warnings.catch_warnings():
    warnings.simplefilter("error", common.PlotWarning)
    common.save_figure(fig, str(tmp_path / "ok.png"))
  assert (tmp_path / "ok.png").stat().st_size > 0
  assert common.figure_problems(fig) == []
  low, high = fig.axes[0].get_ylim()
  locs = [t for t in fig.axes[0].yaxis.get_majorticklocs() if low <= t <= high]
  assert len(locs) >= 3
  for low, high in ((16.0, 20.0), (0.9, 11.0), (1e-3, 1e4), (1e-12, 1e12), (2.0, 2.5)):
    ticks = common._log_ticks(low, high)
    assert 3 <= len(ticks) <= 25 and all(low <= t <= high for t in ticks), (low, high)


def test_figure_problems_names_each_broken_rule(tmp_path):
  fig = _figure(same_style=True, labels=False)
  with pytest.warns(common.PlotWarning) as record:
    common.save_figure(fig, str(tmp_path / "bad.png"))
  text = " ".join(str(w.message) for w in record)
  for problem in ("no x label", "no y label", "no title", "share marker and line style"):
    assert problem in text
  # Without save_figure's ticks, matplotlib labels no tick between 16 and 19.
  plt = common.pyplot()
  fig, ax = plt.subplots()
  ax.plot([0, 1], [16.0, 19.0], label="a")
  ax.set(yscale="log", xlabel="x", ylabel="y", title="t")
  fig.canvas.draw()
  assert any("labelled ticks" in p for p in common.figure_problems(fig))
  plt.close(fig)


def test_figure_problems_finds_a_legend_over_data(tmp_path):
  plt = common.pyplot()

  def figure(**legend):
    fig, ax = plt.subplots(figsize=(4, 3))
    grid = np.linspace(0.0, 1.0, 11)
    for k in range(4):  # points everywhere: no free corner for the legend
      ax.plot(grid, (grid + 0.25 * k) % 1.0, marker="os^v"[k], label=f"s{k}")
    ax.set(xlabel="x", ylabel="y", title="t")
    ax.legend(**legend)
    return fig

  with pytest.warns(common.PlotWarning, match="the legend covers data points of 's"):
    common.save_figure(figure(loc="center"), str(tmp_path / "over.png"))
  fig = figure(loc="center left", bbox_to_anchor=(1.01, 0.5))  # beside the axes
  fig.set_layout_engine("constrained")
  with warnings.catch_warnings():
    warnings.simplefilter("error", common.PlotWarning)
    common.save_figure(fig, str(tmp_path / "beside.png"))


def test_annotate_bars_writes_each_value():
  plt = common.pyplot()
  fig, ax = plt.subplots()
  bars = ax.bar([0, 1, 2], [16.0, 250.0, 3961.7])
  common.annotate_bars(ax, bars)
  assert sorted(t.get_text() for t in ax.texts) == ["16", "250", "3960"]
  plt.close(fig)
