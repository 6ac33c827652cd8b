"""Two processes sharing one batch over CPU collectives give the single-process result.

``multiprocess_check.py`` runs in two processes on localhost, joined by
``jax.distributed.initialize``, each with two simulated CPU devices (four in all), the
batch sharded over all four. This test starts them, computes the same cases here on one
device on the whole batch, and compares.
"""

import json
import os
import pathlib
import socket
import subprocess
import sys
import time

import jax
import numpy as np

from . import multiprocess_check as check

NUM_PROCESSES = 2
TIMEOUT_S = 300
# Tolerances relative to each leaf's largest magnitude (and to each element). The sums over
# the batch are reduced in another order (per device, then all-reduced across processes), so
# float32 results differ by a few epsilons (1.2e-7) of their scale: 1e-5 leaves a margin of
# about 40 over the differences seen (at most 3e-7). Sampled targets are drawn with one key
# per example, so sharding does not change them; different targets would differ by O(1).
DEFAULT_TOLERANCE = 1e-5
# Conjugate-gradient solutions amplify those differences by up to the condition number of
# F + damping I: about 1e2 at damping 1e-2 (natural_gradient) and 1e3 at the default 1e-3
# (kl_trust_region) for this model, hence differences of up to 1e-5 of the scale after three
# steps.
TOLERANCE = {
  "natural_gradient": 1e-4,
  "kl_trust_region": 1e-4,
  "kfac": 1e-4,
}  # generous: the whole exchange takes well under a minute on two idle cores


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _launch(out: pathlib.Path) -> list[tuple[subprocess.Popen, pathlib.Path]]:
  env = dict(os.environ)
  env["XLA_FLAGS"] = (
    env.get("XLA_FLAGS", "")
    + " --xla_force_host_platform_device_count=2"
    # XLA's backend optimizations off (as the root conftest.py does for the suite, unless
    # GRADEST_TEST_XLA_OPTIMIZE=1): compilation, most of this test's time, is about 3x
    # faster; results differ from an optimized reference only by float32 rounding.
    + " --xla_backend_optimization_level=0"
  ).strip()
  env["JAX_PLATFORMS"] = "cpu"
  root = str(pathlib.Path(__file__).resolve().parents[1])
  env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
  script = pathlib.Path(__file__).with_name("multiprocess_check.py")
  coordinator = f"localhost:{_free_port()}"
  procs = []
  for i in range(NUM_PROCESSES):
    log = out / f"process{i}.log"
    cmd = [sys.executable, str(script), "--process-id", str(i)]
    cmd += ["--num-processes", str(NUM_PROCESSES), "--coordinator", coordinator]
    cmd += ["--out", str(out), "--init-timeout", "120"]
    with open(log, "w") as f:
      procs.append((subprocess.Popen(cmd, env=env, stdout=f, stderr=subprocess.STDOUT), log))
  return procs


def _wait(procs, deadline: float) -> str | None:
  """Waits for every process; on a failure or the deadline, kills them all and says why."""
  failure = None
  for i, (proc, _) in enumerate(procs):
    try:
      rc = proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
    except subprocess.TimeoutExpired:
      failure = f"process {i} did not finish within {TIMEOUT_S} s"
      break
    if rc != 0:
      failure = f"process {i} exited with status {rc}"
      break
  if failure is not None:
    for proc, _ in procs:
      if proc.poll() is None:
        proc.kill()
        proc.wait()
    logs = "\n".join(
      f"--- process {i} ---\n{log.read_text()[-6000:]}" for i, (_, log) in enumerate(procs)
    )
    return f"{failure}\n{logs}"
  return None


def _single_device_results() -> dict[str, np.ndarray]:
  params, batch = check.make_data()
  key_data = jax.random.key_data(jax.random.key(check.KEY_SEED))
  device = jax.devices("cpu")[0]
  results = {}
  for name, fn in check.CASES.items():
    run = jax.jit(lambda p, b, k, fn=fn: fn(p, b, jax.random.wrap_key_data(k)))
    results[name] = run(*jax.device_put((params, batch, key_data), device))
  for name, fn in check.EAGER_CASES.items():
    results[name] = fn(*jax.device_put((params, batch), device), jax.random.key(check.KEY_SEED))
  return check.flatten(results)


def test_two_processes_match_one_device(tmp_path):
  start = time.monotonic()
  procs = _launch(tmp_path)
  try:
    # The single-device reference is computed while the processes run.
    expected = _single_device_results()
  except BaseException:
    for proc, _ in procs:
      proc.kill()
      proc.wait()
    raise
  failure = _wait(procs, start + TIMEOUT_S)
  assert failure is None, failure

  with np.load(tmp_path / "results.npz") as f:
    got = dict(f)
  assert sorted(got) == sorted(expected)
  mismatches = []
  for name, want in expected.items():
    have = got[name]
    assert have.shape == want.shape and have.dtype == want.dtype, name
    if want.dtype.kind in "biu":  # step counts, convergence flags
      if not np.array_equal(have, want):
        mismatches.append(f"{name}: {have} != {want}")
      continue
    tol = TOLERANCE.get(name.split("/")[0], DEFAULT_TOLERANCE)
    scale = float(np.max(np.abs(want)))
    error = np.abs(have - want)
    if np.any(error > tol * (np.abs(want) + scale)):
      mismatches.append(f"{name}: max |error| / max |value| = {np.max(error) / scale:.1e} > {tol}")
  assert not mismatches, "\n".join(mismatches)

  timings = json.loads((tmp_path / "timings.json").read_text())
  assert timings["num_processes"] == NUM_PROCESSES and timings["num_devices"] == 4
  print(json.dumps(timings, indent=2), f"\ntest wall time: {time.monotonic() - start:.1f} s")
