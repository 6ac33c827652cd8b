"""Settings for the whole test run (docstring examples in gradest/ and tests/).

The suite is bound by XLA compilation (a thousand small programs, most run once), not by
running them, so it compiles with XLA's CPU backend (LLVM) optimizations off (on
test_kfac.py and test_numerics.py together, 174 s -> 130 s on two cores). XLA's own
graph passes still run and the results are the same computations; users' programs
compile with the defaults. Set
``GRADEST_TEST_XLA_OPTIMIZE=1`` to run the suite with the default optimization level.
Subprocesses started by tests inherit the setting.
"""

import os

if os.environ.get("GRADEST_TEST_XLA_OPTIMIZE", "0") != "1":
  _flag = "--xla_backend_optimization_level=0"
  _flags = os.environ.get("XLA_FLAGS", "")
  if "xla_backend_optimization_level" not in _flags:
    os.environ["XLA_FLAGS"] = f"{_flags} {_flag}".strip()
