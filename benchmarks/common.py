"""Timing and reporting shared by every benchmark script.

Timing:

* :func:`compile_ahead`: jit, lower and compile a function ahead of time (compilation is
  then never part of a timed call), with the seconds it took and the memory XLA says the
  program needs; :func:`jit` (optionally fast to compile) and :class:`JitBoth` (a function
  jitted both ways);
* :func:`time_call`: seconds of one call, blocking on its result;
* :func:`time_interleaved`: seconds per call of several functions, measured in a rotating
  order so that machine noise hits all of them alike, each measurement lasting at least
  ``min_time``; the :class:`Timing` of each has every measurement, their minimum and
  median;
* :class:`Stopwatch`: wall-clock seconds of a whole section (a training run, a script).

Reporting: :func:`write_csv`, :func:`write_json` (strict JSON: non-finite floats become
``null``) and :func:`format_table` (a plain or Markdown table from rows and
:class:`Column` specs, the one table formatter of every benchmark).

Plots (every benchmark's PNG files): :func:`pyplot` (matplotlib on the non-interactive Agg
backend), :func:`series_styles` and :func:`plot_series` (a distinct colour, marker and line
style per series, markers staggered and lines layered so that curves lying on top of each
other stay visible), :func:`annotate_bars` (each bar's value printed on it) and
:func:`save_figure`, which gives every log axis readable ticks (at least three labelled
ones over the shown range, in plain numbers), lays out, saves and closes the figure, and
warns (:class:`PlotWarning`) about what :func:`figure_problems` finds: an axes without
an x or y label or title, two legend entries with the same marker and line style, a log
axis with fewer than three labelled ticks.

Every time is wall-clock time from :func:`time.perf_counter`, and every timed JAX call is
followed by :func:`jax.block_until_ready`, so that asynchronous dispatch does not hide
the work.
"""

from __future__ import annotations

import argparse
import csv
import functools
import json
import math
import statistics
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import numpy as np

__all__ = [
  "FAST_COMPILE_OPTIONS",
  "Column",
  "Compiled",
  "JitBoth",
  "PlotWarning",
  "Stopwatch",
  "Timing",
  "annotate_bars",
  "compile_ahead",
  "figure_problems",
  "format_table",
  "integer",
  "integer_list",
  "jit",
  "plot_series",
  "pyplot",
  "save_figure",
  "series_styles",
  "time_call",
  "time_interleaved",
  "write_csv",
  "write_json",
]

# XLA's backend optimizations off: about 3x faster compilation, slower programs (for
# smoke tests, whose times mean nothing).
FAST_COMPILE_OPTIONS = {"xla_backend_optimization_level": 0}


# --------------------------------------------------------------------------------------
# Timing.
# --------------------------------------------------------------------------------------


class Stopwatch:
  """Wall-clock seconds since it was made (or last :meth:`restart`-ed).

  Examples:
    >>> clock = Stopwatch()
    >>> seconds = clock()  # seconds so far; the stopwatch keeps running
  """

  def __init__(self):
    self.start = time.perf_counter()

  def restart(self) -> None:
    """Starts counting from now."""
    self.start = time.perf_counter()

  def __call__(self) -> float:
    return time.perf_counter() - self.start


class Compiled(NamedTuple):
  """An ahead-of-time compiled function (:func:`compile_ahead`).

  Attributes:
    executable: call it with the arguments it was compiled for (static arguments left out).
    seconds: wall-clock seconds of lowering and compiling.
    bytes_needed: XLA's estimate of the program's temporary and output memory; NaN
      where the backend gives none.
  """

  executable: Callable[..., Any]
  seconds: float
  bytes_needed: float


def compile_ahead(fn: Callable[..., Any], args: Sequence[Any], *, fast: bool = False) -> Compiled:
  """Lowers and compiles ``fn`` for ``args`` ahead of time.

  Args:
    fn: a function, jitted here; or an already jitted function (anything with a
      ``lower`` method), lowered as it is, so that its static arguments are kept: pass
      them in ``args`` and leave them out when calling the executable.
    args: example arguments (arrays, or ``jax.ShapeDtypeStruct``).
    fast: compile with :data:`FAST_COMPILE_OPTIONS` (quick to compile, slow to run).

  Returns:
    The :class:`Compiled` executable, the seconds compiling took and the memory needed.
  """
  clock = Stopwatch()
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    jitted = fn if hasattr(fn, "lower") else jax.jit(fn)
    lowered = jitted.lower(*args)
    executable = lowered.compile(FAST_COMPILE_OPTIONS) if fast else lowered.compile()
  seconds = clock()
  needed = math.nan
  try:
    stats = executable.memory_analysis()
    needed = float(stats.temp_size_in_bytes + stats.output_size_in_bytes)
  except Exception:  # noqa: BLE001 - memory analysis is optional on some backends.
    pass
  return Compiled(executable, seconds, needed)


def jit(fn: Callable[..., Any], *, fast: bool = False, **jit_kwargs: Any) -> Callable[..., Any]:
  """:func:`jax.jit`, with :data:`FAST_COMPILE_OPTIONS` when ``fast`` (quick runs)."""
  options = FAST_COMPILE_OPTIONS if fast else None
  return jax.jit(fn, compiler_options=options, **jit_kwargs)


class JitBoth:
  """A function jitted twice: as usual, and with :data:`FAST_COMPILE_OPTIONS`.

  Calling it calls the usual one; :meth:`pick` chooses (a benchmark's ``--quick`` or
  ``--fast-compile`` mode compiles about three times faster, and runs slower). Use it as a
  decorator: ``@functools.partial(JitBoth, static_argnames=("steps",))``.

  Args:
    fn: the function.
    **jit_kwargs: passed on to :func:`jax.jit` (``static_argnames``, ``donate_argnums``).
  """

  def __init__(self, fn: Callable[..., Any], **jit_kwargs: Any):
    self.default = jax.jit(fn, **jit_kwargs)
    self.fast = jax.jit(fn, compiler_options=FAST_COMPILE_OPTIONS, **jit_kwargs)
    functools.update_wrapper(self, fn)

  def __call__(self, *args: Any, **kwargs: Any) -> Any:
    return self.default(*args, **kwargs)

  def pick(self, fast: bool) -> Callable[..., Any]:
    """The fast-compiling version when ``fast``, else the usual one."""
    return self.fast if fast else self.default


def time_call(fn: Callable[..., Any], args: Sequence[Any] = (), number: int = 1) -> float:
  """Seconds per call of ``fn(*args)``, over ``number`` calls, blocking on the last result.

  Calls are dispatched back to back (JAX runs them in order) and the clock stops when
  the last result is ready.
  """
  clock = Stopwatch()
  out = None
  for _ in range(number):
    out = fn(*args)
  jax.block_until_ready(out)
  return clock() / number


class Timing(NamedTuple):
  """Seconds per call of one function, from :func:`time_interleaved`.

  Attributes:
    times: seconds per call in each measurement (one per repeat).
    number: calls per measurement.
  """

  times: tuple[float, ...]
  number: int

  @property
  def min(self) -> float:
    """The fastest measurement: noise from other processes only adds time, so on a
    shared machine this is the most repeatable figure."""
    return min(self.times)

  @property
  def median(self) -> float:
    return statistics.median(self.times)

  @property
  def repeats(self) -> int:
    return len(self.times)

  def statistic(self, name: str) -> float:
    """``"min"`` or ``"median"``."""
    if name not in ("min", "median"):
      raise ValueError(f"statistic must be 'min' or 'median', got {name!r}.")
    return self.min if name == "min" else self.median


def time_interleaved(
  fns: Mapping[str, Callable[..., Any]],
  args: Sequence[Any] = (),
  repeats: int = 5,
  min_time: float = 0.02,
  first_call: Mapping[str, float] | None = None,
  budget: float = math.inf,
  min_repeats: int = 3,
  same_number: bool = False,
  max_number: int = 1000,
) -> dict[str, Timing]:
  """Seconds per call of each function, ``repeats`` measurements each, interleaved.

  Within every repeat the functions run in a rotating order (repeat ``r`` starts with
  the ``r``-th function), so drifts in machine load are shared out. Each measurement
  makes ``number`` calls back to back and blocks on the last result
  (:func:`time_call`); ``number`` is chosen so that the measurement lasts at least
  ``min_time`` seconds, from the seconds of one warm call (``first_call``; measured here
  after one warm-up call of each function when not given). With ``same_number`` every
  function makes the number of calls that the fastest one needs (fairer for functions
  of about the same cost, too slow when their costs differ by orders of magnitude).
  When all repeats would take longer than ``budget`` seconds, fewer are made (but at
  least ``min_repeats``).

  Args:
    fns: name -> function (compiled, or anything that returns JAX arrays).
    args: the arguments every function is called with.
    repeats: measurements per function.
    min_time: seconds per measurement, at least.
    first_call: name -> seconds of one call, to choose the number of calls.
    budget: seconds all measurements together should take, about.
    min_repeats: the fewest measurements per function when ``budget`` cuts them.
    same_number: the same number of calls per measurement for every function.
    max_number: the most calls per measurement.

  Returns:
    name -> :class:`Timing`, in the order of ``fns``.
  """
  names = list(fns)
  if first_call is None:
    first_call = {}
    for name in names:
      time_call(fns[name], args)  # warm-up (and compilation, if not done ahead of time)
      first_call[name] = time_call(fns[name], args)

  def calls(seconds: float) -> int:
    return int(min(max_number, max(1, math.ceil(min_time / max(seconds, 1e-7)))))

  fastest = min(first_call[name] for name in names)
  number = {name: calls(fastest if same_number else first_call[name]) for name in names}
  per_repeat = sum(number[name] * first_call[name] for name in names)
  if per_repeat * repeats > budget:
    repeats = max(min(repeats, min_repeats), int(budget // per_repeat))
  times: dict[str, list[float]] = {name: [] for name in names}
  for r in range(repeats):
    shift = r % len(names)
    for name in names[shift:] + names[:shift]:
      times[name].append(time_call(fns[name], args, number[name]))
  return {name: Timing(tuple(times[name]), number[name]) for name in names}


# --------------------------------------------------------------------------------------
# Reporting.
# --------------------------------------------------------------------------------------


def write_csv(
  rows: Sequence[Mapping[str, Any]], path: str, columns: Sequence[str] | None = None
) -> None:
  """Writes ``rows`` to a CSV file.

  Args:
    rows: one mapping per row.
    path: the file to write.
    columns: the columns, in order (default: every key, in order of appearance); keys
      not in ``columns`` are left out, and columns a row lacks are written empty.
  """
  if columns is None:
    columns = list(dict.fromkeys(k for r in rows for k in r))
  with open(path, "w", newline="") as fh:
    writer = csv.DictWriter(fh, fieldnames=list(columns), extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)


def _jsonable(x: Any) -> Any:
  if isinstance(x, Mapping):
    return {str(k): _jsonable(v) for k, v in x.items()}
  if isinstance(x, list | tuple | set | frozenset):
    return [_jsonable(v) for v in x]
  if isinstance(x, np.ndarray | jax.Array):
    return _jsonable(np.asarray(x).tolist())
  if isinstance(x, np.generic):
    x = x.item()
  if isinstance(x, float) and not math.isfinite(x):
    return None
  return x


def write_json(payload: Any, path: str, indent: int = 1) -> None:
  """Writes ``payload`` as strict JSON.

  Tuples and sets become lists, NumPy and JAX arrays nested lists, NumPy scalars
  Python numbers, and non-finite floats (NaN, infinities) ``null``.
  """
  with open(path, "w") as fh:
    json.dump(_jsonable(payload), fh, indent=indent, allow_nan=False)


class Column(NamedTuple):
  """One column of :func:`format_table`.

  Attributes:
    header: the column's heading.
    value: the row's key, or a function of the row that returns the cell's value.
    fmt: a format spec for numbers (``".3f"``, ``".2e"``, ``"d"``); empty: ``str``.
    align: ``"<"`` or ``">"``; by default numbers are right-aligned, text left-aligned.
  """

  header: str
  value: str | Callable[[Mapping[str, Any]], Any]
  fmt: str = ""
  align: str | None = None


def _cell(value: Any, fmt: str, missing: str) -> str:
  if value is None or (isinstance(value, float) and math.isnan(value)):
    return missing
  if isinstance(value, str) or not fmt:
    return str(value)
  return format(value, fmt)


def format_table(
  rows: Sequence[Mapping[str, Any] | str],
  columns: Sequence[Column],
  *,
  markdown: bool = False,
  missing: str = "-",
) -> str:
  """A fixed-width text table (or a Markdown one) of ``rows``.

  Args:
    rows: one mapping per row; a string among them is written as it is, on a line of its
      own (a blank line or a heading between groups of rows).
    columns: the :class:`Column` specs, in order.
    markdown: a Markdown table (``| a | b |`` and an alignment row) instead of a plain one
      (a heading, a rule of ``-`` and columns as wide as their widest cell).
    missing: the cell for a value that is ``None`` or NaN.

  Returns:
    The table, lines joined by ``"\n"`` (no trailing newline).

  Examples:
    >>> print(format_table([{"name": "a", "x": 0.5}], [Column("name", "name"),
    ...                    Column("x", "x", ".2f")]))
    name     x
    ----  ----
    a     0.50
  """
  if not columns:
    raise ValueError("format_table needs at least one Column.")
  body: list[list[str] | str] = []
  numeric = [False] * len(columns)
  for row in rows:
    if isinstance(row, str):
      body.append(row)
      continue
    cells = []
    for i, col in enumerate(columns):
      value = col.value(row) if callable(col.value) else row.get(col.value)
      if isinstance(value, int | float | np.number) and not isinstance(value, bool):
        numeric[i] = True
      cells.append(_cell(value, col.fmt, missing))
    body.append(cells)
  aligns = [col.align or (">" if numeric[i] else "<") for i, col in enumerate(columns)]
  headers = [col.header for col in columns]
  if markdown:
    rule = ["---:" if a == ">" else "---" for a in aligns]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(rule) + "|"]
    lines += [r if isinstance(r, str) else "| " + " | ".join(r) + " |" for r in body]
    return "\n".join(lines)
  widths = [len(h) for h in headers]
  for r in body:
    if not isinstance(r, str):
      widths = [max(w, len(c)) for w, c in zip(widths, r, strict=True)]

  def line(cells):
    padded = (f"{c:{a}{w}}" for c, a, w in zip(cells, aligns, widths, strict=True))
    return "  ".join(padded).rstrip()

  head = line(headers)
  lines = [head, "-" * len(head)]
  lines += [r if isinstance(r, str) else line(r) for r in body]
  return "\n".join(lines)


# --------------------------------------------------------------------------------------
# Plots.
# --------------------------------------------------------------------------------------

MARKERS = ("o", "s", "^", "v", "D", "P", "X", "*", "h", "<", ">", "p")
LINESTYLES = ("-", "--", "-.", ":")


class PlotWarning(UserWarning):
  """A figure that :func:`save_figure` wrote breaks the plot contract (:func:`figure_problems`)."""


def pyplot():
  """``matplotlib.pyplot`` on the non-interactive Agg backend (no display needed)."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  return plt


def series_styles(
  names: Sequence[str], linestyles: Mapping[str, str] | None = None
) -> dict[str, dict[str, Any]]:
  """Matplotlib keyword arguments for each named series, distinct from one another.

  Series ``i`` gets colour ``C{i}``, marker ``MARKERS[i]`` and line style
  ``LINESTYLES[i]`` (cycled so that no two of up to 48 series share a marker and a line
  style), a line width falling from 2.6 for the first series to 1.0 for the last, drawn
  in that order (``zorder``): a curve that lies exactly on an earlier one shows as a thin
  line inside a wider one. Pass the result's entries to :func:`plot_series`.

  Args:
    names: the series, in legend order.
    linestyles: name -> line style, where the style means something (dashed for biased
      estimators, say): then every other series is solid, and the markers (distinct for
      up to 12 series) tell them apart.
  """
  count = len(names)
  styles = {}
  for i, name in enumerate(names):
    marker = MARKERS[i % len(MARKERS)]
    linestyle = LINESTYLES[(i + i // len(MARKERS)) % len(LINESTYLES)]
    styles[name] = {
      "color": f"C{i % 10}",
      "marker": marker,
      "linestyle": linestyle if linestyles is None else linestyles.get(name, "-"),
      "linewidth": 2.6 - 1.6 * i / max(count - 1, 1),
      "zorder": 2.0 + i / max(count, 1),
      "index": i,
      "count": count,
    }
  return styles


def plot_series(ax, x, y, style: Mapping[str, Any], label: str | None = None, **kwargs):
  """Plots one series with a :func:`series_styles` style; returns the line.

  With more than 12 points the markers are thinned to about ten per line, evenly spaced
  on the screen, and each series starts its markers at a different place, so the markers
  of series that coincide do not hide one another.
  """
  style = dict(style)
  index, count = style.pop("index", 0), style.pop("count", 1)
  style.setdefault("markersize", 5)
  if np.size(x) > 12:
    style["markevery"] = (0.1 * index / max(count, 1), 0.1)
  style.update(kwargs)
  (line,) = ax.plot(x, y, label=label, **style)
  return line


def annotate_bars(ax, bars, fmt: str = ".3g", fontsize: float = 7) -> None:
  """Writes each bar's height (its top value when the bar starts elsewhere) above it, in
  plain digits below 100000 (``3960``, not ``3.96e+03``)."""
  for bar in bars:
    top = bar.get_y() + bar.get_height()
    if not math.isfinite(top):
      continue
    text = format(top, fmt)
    if "e" in text and 1e-4 <= abs(top) < 1e5:  # 3.96e+03 -> 3960
      text = f"{float(text):g}"
    ax.annotate(
      text,
      (bar.get_x() + bar.get_width() / 2, top),
      xytext=(0, 2),
      textcoords="offset points",
      ha="center",
      va="bottom",
      fontsize=fontsize,
    )


def _plain_number(value: float, _pos=None) -> str:
  return f"{value:g}"


def _power_of_ten(value: float, _pos=None) -> str:
  """``10^k`` or ``m x 10^k`` (mathtext)."""
  if value == 0:
    return "0"
  exponent = math.floor(math.log10(abs(value)) + 1e-9)
  mantissa = value / 10.0**exponent
  if abs(mantissa - 1) < 1e-6:
    return f"$10^{{{exponent}}}$"
  return f"${mantissa:.3g}\\times10^{{{exponent}}}$"


def _log_ticks(low: float, high: float) -> list[float]:
  """Tick values for a log axis from ``low`` to ``high``: at least three where possible."""
  if not (low > 0 and high > low and math.isfinite(high)):
    return []
  first, last = math.floor(math.log10(low)), math.ceil(math.log10(high))
  decades = last - first
  if decades > 8:  # a wide range: every k-th power of ten
    step = math.ceil(decades / 8)
    return [10.0**e for e in range(first, last + 1) if e % step == 0]
  for subs in ((1,), (1, 2, 5), (1, 2, 3, 4, 5, 6, 7, 8, 9)):
    ticks = [m * 10.0**e for e in range(first, last + 1) for m in subs]
    ticks = [t for t in ticks if low * (1 - 1e-9) <= t <= high * (1 + 1e-9)]
    if len(ticks) >= 3:
      return ticks
  from matplotlib.ticker import MaxNLocator  # a narrow range: linear steps

  return [t for t in MaxNLocator(nbins=4).tick_values(low, high) if low <= t <= high]


def _readable_log_axis(axis, low: float, high: float) -> None:
  from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

  if isinstance(axis.get_major_locator(), FixedLocator):  # ticks the plot chose itself
    return
  ticks = _log_ticks(low, high)
  if not ticks:
    return
  axis.set_major_locator(FixedLocator(ticks))
  # One notation per axis: plain numbers where every tick reads well so, else powers of ten.
  plain = all(1e-4 <= abs(t) < 1e5 for t in ticks)
  axis.set_major_formatter(FuncFormatter(_plain_number if plain else _power_of_ten))
  axis.set_minor_formatter(NullFormatter())


def _log_axes(ax):
  """(axis, low, high) for each log-scaled axis of ``ax``."""
  out = []
  if ax.get_xscale() == "log":
    out.append((ax.xaxis, *sorted(ax.get_xlim())))
  if ax.get_yscale() == "log":
    out.append((ax.yaxis, *sorted(ax.get_ylim())))
  return out


def _has_data(ax) -> bool:
  return bool(ax.lines or ax.patches or ax.collections or ax.images)


def _points_under_legend(ax) -> list[str]:
  """The labels of the lines of ``ax`` with a data point under its legend's box."""
  legend = ax.get_legend()
  if legend is None or not legend.get_visible():
    return []
  box = legend.get_window_extent(ax.figure.canvas.get_renderer())
  covered = []
  for line in ax.get_lines():
    xy = np.asarray(line.get_xydata(), float)
    xy = xy[np.all(np.isfinite(xy), axis=1)]
    if not xy.size:
      continue
    px = line.get_transform().transform(xy)
    inside = (px[:, 0] > box.x0) & (px[:, 0] < box.x1) & (px[:, 1] > box.y0) & (px[:, 1] < box.y1)
    if np.any(inside):
      covered.append(repr(line.get_label()))
  return covered


def figure_problems(fig) -> list[str]:
  """What keeps ``fig`` from being read: the contract every benchmark plot meets.

  Every axes that shows data has an x label, a y label and a title (its own, or the
  figure's), no two legend entries of an axes share a marker and a line style (colour
  alone does not tell lines apart in print or for colour-blind readers), a legend inside
  an axes covers none of its data points, and every log axis has at least three labelled
  ticks in the shown range. Call it on a drawn figure (after ``savefig``).

  Returns:
    One sentence per problem; empty when there is none.
  """
  problems = []
  suptitle = fig.get_suptitle()
  for n, ax in enumerate(fig.axes):
    if not ax.get_visible() or not ax.axison or not _has_data(ax):
      continue
    name = f"axes {n} ({ax.get_title() or 'untitled'})"
    if not ax.get_xlabel():
      problems.append(f"{name}: no x label")
    if not ax.get_ylabel():
      problems.append(f"{name}: no y label")
    if not (ax.get_title() or ax.get_title("left") or suptitle):
      problems.append(f"{name}: no title")
    seen: dict[tuple[str, str], str] = {}
    for line in ax.get_lines():
      label = line.get_label()
      if label.startswith("_"):
        continue
      pair = (str(line.get_marker()), str(line.get_linestyle()))
      if pair in seen and seen[pair] != label:
        problems.append(f"{name}: {label!r} and {seen[pair]!r} share marker and line style")
      seen.setdefault(pair, label)
    covered = _points_under_legend(ax)
    if covered:
      problems.append(f"{name}: the legend covers data points of {', '.join(covered)}")
    for axis, low, high in _log_axes(ax):
      locs = [t for t in axis.get_majorticklocs() if low * (1 - 1e-9) <= t <= high * (1 + 1e-9)]
      labels = [s for s in axis.get_major_formatter().format_ticks(locs) if s.strip()]
      if len(labels) < 3:
        problems.append(
          f"{name}: log {axis.axis_name} axis has {len(labels)} labelled ticks "
          f"between {low:.3g} and {high:.3g}"
        )
  return problems


def save_figure(fig, path: str, dpi: int = 110) -> None:
  """Gives every log axis readable ticks, lays ``fig`` out, saves it and closes it.

  Log axes get plain-number ticks chosen for the shown range: powers of ten, or 1-2-5 per
  decade, or every integer multiple, or linear steps in a range narrower than a factor of
  two, so that at least three are labelled (an axis given fixed ticks keeps them). A
  figure without a layout engine gets ``tight_layout``. Warns with :class:`PlotWarning`
  for each of :func:`figure_problems`.
  """
  plt = pyplot()
  for ax in fig.axes:
    for axis, low, high in _log_axes(ax):
      _readable_log_axis(axis, low, high)
  if fig.get_layout_engine() is None:
    fig.tight_layout()
  fig.savefig(path, dpi=dpi)
  for problem in figure_problems(fig):
    warnings.warn(f"{path}: {problem}", PlotWarning, stacklevel=2)
  plt.close(fig)


# --------------------------------------------------------------------------------------
# Command-line values.
# --------------------------------------------------------------------------------------


def integer(text: str) -> int:
  """An integer command-line value in any usual notation: ``1000000``, ``1_000_000``, ``1e6``.

  Every benchmark's count and size flags use it, so they all accept the same notation.

  Raises:
    argparse.ArgumentTypeError: not a number, or not a whole one (``1.5``, ``1e-3``).
  """
  cleaned = str(text).strip().replace("_", "")
  try:
    return int(cleaned)
  except ValueError:
    pass
  try:
    value = float(cleaned)
  except ValueError:
    raise argparse.ArgumentTypeError(
      f"{text!r} is not a number; write e.g. 1000000, 1_000_000 or 1e6"
    ) from None
  if not math.isfinite(value) or value != int(value):
    raise argparse.ArgumentTypeError(f"{text!r} is not a whole number")
  return int(value)


def integer_list(text: str) -> tuple[int, ...]:
  """Comma-separated :func:`integer` values: ``1e4,1e5,1e6``."""
  return tuple(integer(part) for part in str(text).split(","))
