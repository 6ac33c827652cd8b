"""Estimators with samples sharded over 8 simulated CPU devices give the single-device result.

The device count must be fixed before JAX starts, so the check runs in a subprocess.
"""

import os
import pathlib
import subprocess
import sys


def test_sharded_samples_match_single_device():
  env = dict(os.environ)
  env["XLA_FLAGS"] = (
    env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
  ).strip()
  env["JAX_PLATFORMS"] = "cpu"
  script = pathlib.Path(__file__).with_name("sharded_check.py")
  result = subprocess.run(
    [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=600
  )
  assert result.returncode == 0, result.stdout + result.stderr
  assert "all ok" in result.stdout
