"""The compile settings of the test run (root conftest.py)."""

import importlib.util
import os
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def root_conftest():
  spec = importlib.util.spec_from_file_location("root_conftest", ROOT / "conftest.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_flag_check_refuses_an_unknown_flag():
  assert not root_conftest()._accepted(["--xla_gradest_no_such_flag=true"])


@pytest.mark.skipif(
  os.environ.get("GRADEST_TEST_XLA_OPTIMIZE") == "1", reason="the suite runs with XLA's defaults"
)
def test_every_accepted_fast_compile_flag_is_set():
  conftest = root_conftest()
  names = [f.split("=")[0] for f in os.environ.get("XLA_FLAGS", "").split()]
  for flag in conftest.FAST_COMPILE_FLAGS:
    if conftest._accepted([flag]):
      assert flag.split("=")[0] in names
