"""Helpers the benchmark scripts share: CSV files and a headless matplotlib."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from typing import Any


def write_csv(rows: Sequence[dict[str, Any]], path: str, columns: Sequence[str] | None = None):
  """Writes ``rows`` with ``columns`` (default: every key, in order of appearance)."""
  if columns is None:
    columns = list(dict.fromkeys(k for r in rows for k in r))
  with open(path, "w", newline="") as fh:
    writer = csv.DictWriter(fh, fieldnames=list(columns), extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)


def pyplot():
  """``matplotlib.pyplot`` on the non-interactive Agg backend (no display needed)."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  return plt
