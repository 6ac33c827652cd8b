"""Optional extras: without them, gradest imports and the extras' users say what to install.

Each case runs in a subprocess in which the missing package is blocked
(``sys.modules[name] = None`` makes it unimportable).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_without(blocked: list[str], code: str) -> subprocess.CompletedProcess:
  prelude = "import sys\n" + "".join(f"sys.modules[{name!r}] = None\n" for name in blocked)
  return subprocess.run(
    [sys.executable, "-c", prelude + code],
    cwd=ROOT, capture_output=True, text=True, timeout=120,
  )


def test_gradest_imports_without_any_extra():
  result = run_without(
    ["flax", "tqdm", "matplotlib", "scipy", "sklearn", "numpyro", "distrax"],
    "import gradest, gradest.fisher, gradest.samplers, gradest.monte_carlo\nprint('ok')",
  )
  assert result.returncode == 0, result.stderr
  assert result.stdout.strip() == "ok"


def test_import_gradest_imports_no_model_benchmark_or_extra():
  # gradest.models and benchmarks are imported explicitly, never by ``import gradest``.
  heavy = ("gradest.models", "gradest.flax", "gradest.numpyro", "benchmarks")
  heavy += ("flax", "numpyro", "distrax", "matplotlib", "scipy", "sklearn", "tqdm", "torch")
  code = (
    "import sys\nimport gradest\n"
    f"loaded = sorted(m for m in sys.modules if m.split('.')[0] in {heavy!r} "
    f"or m.startswith({heavy[:3]!r}))\n"
    "assert 'gradest.models' not in sys.modules, loaded\n"
    "assert not loaded, loaded\n"
    "assert not hasattr(gradest, 'models')\n"
    "from gradest.models import sbn, skipgram, vae\n"
    "import gradest.models\n"
    "assert gradest.models.sbn is sbn and gradest.models.skipgram is skipgram\n"
    "print('ok')"
  )
  result = subprocess.run(
    [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
  )
  assert result.returncode == 0, result.stderr
  assert result.stdout.strip() == "ok"


@pytest.mark.parametrize(
  "blocked, code, extra",
  [
    ("flax", "import gradest.flax", "flax"),
    ("flax", "from gradest.flax import nnx", "flax"),
    ("tqdm", "import benchmarks.variance", "bench"),
    ("matplotlib", "import benchmarks.nce", "bench"),
    ("sklearn", "import benchmarks.natural_gradient", "bench"),
    (
      "sklearn",
      "from benchmarks.datasets import load_binarized_digits\nload_binarized_digits()",
      "bench",
    ),
  ],
)
def test_missing_extra_names_the_install(blocked, code, extra):
  result = run_without([blocked], code)
  assert result.returncode != 0
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith("ImportError: Missing"), result.stderr
  assert blocked in last and f'pip install "gradest[{extra}]"' in last
