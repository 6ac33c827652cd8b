"""The estimator table of "Choosing an estimator", generated from ``gradest.ESTIMATORS``.

The metadata columns (distributions, bias, whether ``f`` is differentiated, the smallest
``num_samples``, evaluations per row, the cost) are read from the registry, so the page
cannot drift from what the estimators declare. ``docs/conf.py`` calls
:func:`write_registry_table` before every build.
"""

from __future__ import annotations

from pathlib import Path

import gradest


def _function_ref(fn) -> str:
  if fn is None:
    return "-"
  name = getattr(fn, "__name__", None)
  if name and getattr(gradest, name, None) is fn:
    return f"{{func}}`~gradest.{name}`"
  return f"`{name or fn!r}`"


def registry_rows() -> list[list[str]]:
  rows = []
  for name in gradest.estimator_names():
    e = gradest.get_estimator(name)
    options = ", ".join(f"`{k}={v!r}`" for k, v in e.options.items())
    grad = _function_ref(e.grad) + (f" ({options})" if options else "")
    rows.append(
      [
        f"`{name}`",
        ", ".join(e.distributions),
        "yes" if e.unbiased else "**no**",
        "yes" if e.differentiates_f else "no",
        str(e.min_samples),
        str(e.evaluations_per_row),
        e.cost,
        grad,
        _function_ref(e.objective),
      ]
    )
  return rows


HEADER = [
  "registry name",
  "`dist_fn(params)`",
  "unbiased",
  "uses `grad f`",
  "min. `N`",
  "`f` calls per row",
  "cost of one sample",
  "gradient level",
  "objective level",
]
# Two tables of the same rows, so that neither is too wide to read.
SPLIT = ([0, 1, 2, 3, 4, 5], [0, 6, 7, 8])


def _table(columns: list[int], rows: list[list[str]]) -> list[str]:
  lines = ["| " + " | ".join(HEADER[c] for c in columns) + " |", "|" + "---|" * len(columns)]
  return lines + ["| " + " | ".join(row[c] for c in columns) + " |" for row in rows]


def registry_table() -> str:
  rows = registry_rows()
  return "\n".join(_table(SPLIT[0], rows) + [""] + _table(SPLIT[1], rows)) + "\n"


def write_registry_table(path: Path) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  text = registry_table()
  if not path.exists() or path.read_text() != text:
    path.write_text(text)
