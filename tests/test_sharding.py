"""Sharded computations over 8 simulated CPU devices give the single-device result.

The device count must be fixed before JAX starts, so the check runs in a subprocess.
"""

import os
import pathlib
import subprocess
import sys


def run_on_8_devices(script_name):
  env = dict(os.environ)
  env["XLA_FLAGS"] = (
    env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
  ).strip()
  env["JAX_PLATFORMS"] = "cpu"
  # Import gradest from this checkout, as the test process does.
  root = str(pathlib.Path(__file__).resolve().parents[1])
  env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
  script = pathlib.Path(__file__).with_name(script_name)
  result = subprocess.run(
    [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=600
  )
  assert result.returncode == 0, result.stdout + result.stderr
  assert "all ok" in result.stdout


def test_sharded_samples_match_single_device():
  run_on_8_devices("sharded_check.py")


def test_sharded_batch_fisher_products_and_step_match_single_device():
  run_on_8_devices("sharded_fisher_check.py")
