"""Timing and reporting shared by every benchmark script.

Timing:

* :func:`compile_ahead`: jit, lower and compile a function ahead of time (compilation is
  then never part of a timed call), with the seconds it took and the memory XLA says the
  program needs;
* :func:`time_call`: seconds of one call, blocking on its result;
* :func:`time_interleaved`: seconds per call of several functions, measured in a rotating
  order so that machine noise hits all of them alike, each measurement lasting at least
  ``min_time``; the :class:`Timing` of each has every measurement, their minimum and
  median;
* :class:`Stopwatch`: wall-clock seconds of a whole section (a training run, a script).

Reporting: :func:`write_csv`, :func:`write_json` (strict JSON: non-finite floats become
``null``) and :func:`pyplot` (matplotlib on the non-interactive Agg backend).

Every time is wall-clock time from :func:`time.perf_counter`, and every timed JAX call is
followed by :func:`jax.block_until_ready`, so that asynchronous dispatch does not hide
the work.
"""

from __future__ import annotations

import argparse
import csv
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
  "Compiled",
  "Stopwatch",
  "Timing",
  "compile_ahead",
  "integer",
  "integer_list",
  "pyplot",
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


def pyplot():
  """``matplotlib.pyplot`` on the non-interactive Agg backend (no display needed)."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  return plt


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
