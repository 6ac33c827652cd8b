"""Settings for the whole test run (docstring examples in gradest/ and tests/).

The suite is bound by XLA compilation (a thousand small programs, most run once), not by
running them, so it compiles for speed of compilation:

- ``--xla_backend_optimization_level=0``: XLA's CPU backend (LLVM) optimizations off;
- ``--xla_cpu_use_fusion_emitters=false``: fusions emitted by XLA's elemental emitter
  instead of its MLIR fusion emitters, about half the backend compile time per program.

XLA's graph passes still run and the programs compute the same operations (the suite's
time with and without these flags is in docs/development.md). Users' programs compile
with the defaults, and CI runs the numerical property tests (``tests/test_numerics.py``)
once more with them. Set ``GRADEST_TEST_XLA_OPTIMIZE=1`` to run the suite with XLA's
defaults.

XLA aborts on a flag it does not know, so each flag is first tried in a subprocess and
used only where this jaxlib accepts it. The accepted flags go into ``XLA_FLAGS`` of this
process before JAX starts; pytest-xdist workers and the subprocesses that tests start
inherit them (and skip the check).
"""

import os
import subprocess
import sys

FAST_COMPILE_FLAGS = (
  "--xla_backend_optimization_level=0",
  "--xla_cpu_use_fusion_emitters=false",
)


def _accepted(flags: list[str]) -> bool:
  """Whether a JAX process starts and compiles with ``flags`` in ``XLA_FLAGS``."""
  env = {**os.environ, "XLA_FLAGS": " ".join([os.environ.get("XLA_FLAGS", ""), *flags])}
  probe = "import jax; jax.jit(lambda x: x + 1)(1.0).block_until_ready()"
  result = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True)
  return result.returncode == 0


def _fast_compile_flags() -> list[str]:
  current = os.environ.get("XLA_FLAGS", "")
  wanted = [f for f in FAST_COMPILE_FLAGS if f.split("=")[0] not in current]
  if not wanted or _accepted(wanted):
    return wanted
  return [f for f in wanted if _accepted([f])]


if os.environ.get("GRADEST_TEST_XLA_OPTIMIZE", "0") != "1":
  _flags = _fast_compile_flags()
  if _flags:
    os.environ["XLA_FLAGS"] = " ".join([os.environ.get("XLA_FLAGS", ""), *_flags]).strip()
