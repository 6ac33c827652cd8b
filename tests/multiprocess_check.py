"""Run by tests/test_multiprocess.py: one of several processes sharing one batch.

Each process runs::

  XLA_FLAGS=--xla_force_host_platform_device_count=2 JAX_PLATFORMS=cpu \\
    python tests/multiprocess_check.py --process-id I --num-processes 2 \\
      --coordinator localhost:PORT --out DIR

It joins the others with ``jax.distributed.initialize`` (CPU collectives over gloo), builds
one ``Mesh`` over all the processes' devices (axis ``"data"``), assembles the global batch
from its own rows with ``jax.make_array_from_process_local_data``, replicates the
parameters, and runs every entry of :data:`CASES` under ``jax.jit`` with those shardings
and a replicated output sharding, so that every process ends up with the whole result.
Process 0 writes the results to ``DIR/results.npz`` (one entry per leaf, named
``case/path``) and the timings to ``DIR/timings.json``.

The test process imports this module (without running :func:`main`) and computes the
same :data:`CASES` on one device on the full batch. A new case is one entry of
:data:`CASES`: a function ``(params, batch, key) -> pytree`` of arrays, traced once
under ``jax.jit``.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import time
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import optax

import gradest
from gradest import fisher

NUM_EXAMPLES = 64  # divisible by the 4 devices
NUM_FEATURES, NUM_HIDDEN, NUM_CLASSES = 5, 16, 3
NUM_STEPS = 3  # optimizer steps per optimizer case
TIMED_CALLS = 5  # timed calls of the compiled natural-gradient case
KEY_SEED = 7


def mlp(params, x):
  # The dense layers are registered for K-FAC (identity functions for everything else).
  h = fisher.register_dense(x @ params["w1"] + params["b1"], x, params["w1"], params["b1"])
  a = jnp.tanh(h)
  return fisher.register_dense(a @ params["w2"], a, params["w2"])


def make_data() -> tuple[dict, tuple[np.ndarray, np.ndarray]]:
  """The parameters and the full batch, as NumPy arrays, the same in every process."""
  rng = np.random.default_rng(0)
  params = {
    "w1": (rng.standard_normal((NUM_FEATURES, NUM_HIDDEN)) / 2).astype(np.float32),
    "b1": (rng.standard_normal(NUM_HIDDEN) / 10).astype(np.float32),
    "w2": (rng.standard_normal((NUM_HIDDEN, NUM_CLASSES)) / 4).astype(np.float32),
  }
  x = rng.standard_normal((NUM_EXAMPLES, NUM_FEATURES)).astype(np.float32)
  y = rng.integers(0, NUM_CLASSES, NUM_EXAMPLES).astype(np.int32)
  return params, (x, y)


def loss(params, batch):
  x, y = batch
  logp = jax.nn.log_softmax(mlp(params, x))
  return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1))


def cross_entropy(logits, y):
  return -jax.nn.log_softmax(logits)[y]


def direction(params):
  """A fixed vector for the products, shaped like ``params``."""
  return jax.tree.map(
    lambda p: jnp.linspace(-1.0, 1.0, p.size, dtype=p.dtype).reshape(p.shape), params
  )


def fvp_case(kind, **kwargs):
  def case(params, batch, key):
    fvp = fisher.fisher_vector_product(
      mlp, params, batch, likelihood="categorical", kind=kind, key=key, **kwargs
    )
    return fvp(direction(params))

  return case


def ggn_case(params, batch, key):
  del key
  return fisher.ggn_vector_product(mlp, cross_entropy, params, batch)(direction(params))


def diagonal_case(kind, **kwargs):
  def case(params, batch, key):
    return fisher.fisher_diagonal(
      mlp, params, batch, likelihood="categorical", kind=kind, key=key, **kwargs
    )

  return case


def natural_gradient_optimizer():
  return gradest.natural_gradient(
    0.5, mlp, "categorical", damping=1e-2, cg_maxiter=8, adapt_damping=True
  )


def optimizer_case(make_optimizer, needs_key=False, extra_args=None):
  """``NUM_STEPS`` steps of the optimizer; returns the final ``(params, state)``.

  Args:
    make_optimizer: ``() -> optax.GradientTransformationExtraArgs``; its ``update``
      receives ``batch=`` and, as ``needs_key`` and ``extra_args`` say, ``key=`` (a
      fresh key per step) and more keyword arguments.
    needs_key: whether to pass ``key=``.
    extra_args: ``(params, batch) -> dict`` of further keyword arguments for ``update``.
  """

  def case(params, batch, key):
    opt = make_optimizer()

    def step(carry, step_key):
      params, state = carry
      value, grads = jax.value_and_grad(loss)(params, batch)
      kwargs = {"batch": batch}
      if needs_key:
        kwargs["key"] = step_key
      if extra_args is not None:
        kwargs.update(extra_args(params, batch, value))
      updates, state = opt.update(grads, state, params, **kwargs)
      return (optax.apply_updates(params, updates), state), None

    # A scan, not a Python loop: one step is traced and compiled once.
    (params, state), _ = jax.lax.scan(
      step, (params, opt.init(params)), jax.random.split(key, NUM_STEPS)
    )
    return params, state

  return case


def damping_args(params, batch, value):
  del params
  return {"value": value, "value_fn": lambda p: loss(p, batch)}


CASES = {
  "fvp_exact": fvp_case("exact"),
  "fvp_empirical": fvp_case("empirical"),
  "fvp_monte_carlo": fvp_case("monte_carlo", num_samples=2),
  "ggn": ggn_case,
  # Three chunks of 24, the last one padded: a scan over chunks of a sharded batch.
  "fisher_diagonal": diagonal_case("monte_carlo", num_samples=2, chunk_size=24),
  "natural_gradient": optimizer_case(natural_gradient_optimizer, extra_args=damping_args),
  "kl_trust_region": optimizer_case(
    lambda: gradest.kl_trust_region(mlp, "categorical", max_kl=1e-2, cg_maxiter=8),
  ),
  "kfac_factors": lambda params, batch, key: fisher.kfac_factors(
    mlp, params, batch, likelihood="categorical", key=key
  ),
  "kfac": optimizer_case(
    lambda: gradest.kfac(
      None,
      mlp,
      "categorical",
      example_inputs=jax.ShapeDtypeStruct((NUM_EXAMPLES, NUM_FEATURES), jnp.float32),
      damping=1e-2,
      adapt_damping=True,
      damping_adaptation_period=1,
      inverse_update_period=2,
    ),
    needs_key=True,
    extra_args=damping_args,
  ),
  "scale_by_fisher_diagonal": optimizer_case(
    lambda: optax.chain(gradest.scale_by_fisher_diagonal(mlp, "categorical"), optax.scale(-0.1)),
    needs_key=True,
  ),
}


def candidates_case(params, batch, key):
  # Counts replicated on every device (concrete in each process), labels split across them.
  sampler = gradest.samplers.unigram_sampler(jnp.abs(params["b1"]) + 1.0)
  return gradest.samplers.sample_candidates(sampler, key, batch[1][:, None], 4)


# Called without jax.jit, on the global arrays: the library's host-side argument checks must
# not try to read a value that spans other processes.
EAGER_CASES = {
  "eager_fvp_monte_carlo": fvp_case("monte_carlo"),
  "eager_sample_candidates": candidates_case,
}


def flatten(results: dict) -> dict[str, np.ndarray]:
  """``{case: pytree}`` as ``{'case/path': array}`` (host NumPy arrays)."""
  flat = {}
  for name, tree in results.items():
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
      flat[name + "/" + jax.tree_util.keystr(path)] = np.asarray(leaf)
  return flat


def local_rows(sharding, global_shape) -> slice:
  """The rows of the global batch that this process's devices hold (one contiguous block)."""
  blocks = sorted(
    {
      index[0].indices(global_shape[0])[:2]
      for index in sharding.addressable_devices_indices_map(global_shape).values()
    }
  )
  for (_, stop), (start, _) in zip(blocks, blocks[1:], strict=False):
    if stop != start:
      raise RuntimeError(f"this process's rows are not one contiguous block: {blocks}")
  return slice(blocks[0][0], blocks[-1][1])


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--process-id", type=int, required=True)
  parser.add_argument("--num-processes", type=int, required=True)
  parser.add_argument("--coordinator", required=True, help="host:port of process 0")
  parser.add_argument("--out", type=pathlib.Path, required=True)
  parser.add_argument("--init-timeout", type=int, default=60, help="seconds")
  args = parser.parse_args(argv)

  from jax.experimental import multihost_utils
  from jax.sharding import Mesh, NamedSharding
  from jax.sharding import PartitionSpec as P

  # Gloo is the default in recent JAX; setting it explicitly keeps older releases working.
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  start = time.perf_counter()
  jax.distributed.initialize(
    coordinator_address=args.coordinator,
    num_processes=args.num_processes,
    process_id=args.process_id,
    initialization_timeout=args.init_timeout,
  )
  devices = jax.devices()  # the first backend call connects the CPU collectives
  init_s = time.perf_counter() - start
  assert jax.process_count() == args.num_processes, jax.process_count()
  assert len(devices) == args.num_processes * jax.local_device_count(), devices

  mesh = Mesh(np.array(devices), ("data",))
  data = NamedSharding(mesh, P("data"))
  replicated = NamedSharding(mesh, P())

  params_np, (x_np, y_np) = make_data()
  rows = local_rows(data, x_np.shape)
  # Each process passes only its own rows; the global arrays span every process.
  batch = tuple(
    jax.make_array_from_process_local_data(data, a[rows], a.shape) for a in (x_np, y_np)
  )
  assert not batch[0].is_fully_addressable and batch[0].shape == x_np.shape
  params = jax.tree.map(lambda a: jax.make_array_from_process_local_data(replicated, a), params_np)
  key_data = jax.make_array_from_process_local_data(
    replicated, np.asarray(jax.random.key_data(jax.random.key(KEY_SEED)))
  )

  def gather(x):
    if x.is_fully_addressable:
      return x
    return multihost_utils.process_allgather(x, tiled=True)

  def run(fn):
    return jax.jit(
      lambda p, b, k: fn(p, b, jax.random.wrap_key_data(k)),
      in_shardings=(replicated, data, replicated),
      out_shardings=replicated,
    )

  start = time.perf_counter()
  compiled, case_compile_s = {}, {}
  for name, fn in CASES.items():
    case_start = time.perf_counter()
    compiled[name] = run(fn).lower(params, batch, key_data).compile()
    case_compile_s[name] = time.perf_counter() - case_start
  compile_s = time.perf_counter() - start

  start = time.perf_counter()
  results = jax.block_until_ready(
    {name: fn(params, batch, key_data) for name, fn in compiled.items()}
  )
  cases_s = time.perf_counter() - start

  key = jax.random.wrap_key_data(key_data)
  for name, fn in EAGER_CASES.items():
    results[name] = jax.tree.map(gather, fn(params, batch, key))

  # The natural-gradient case again, compiled: NUM_STEPS training steps per call.
  step_s = []
  for _ in range(TIMED_CALLS):
    start = time.perf_counter()
    jax.block_until_ready(compiled["natural_gradient"](params, batch, key_data))
    step_s.append((time.perf_counter() - start) / NUM_STEPS)

  # Replicated outputs: every process holds the whole value. Check that they agree, bit for bit.
  flat = flatten(results)
  digest = np.array([zlib.crc32(np.ascontiguousarray(v).tobytes()) for v in flat.values()])
  gathered = np.asarray(multihost_utils.process_allgather(digest.astype(np.uint32)))
  disagree = [name for name, col in zip(flat, gathered.T, strict=True) if len(set(col)) > 1]
  if disagree:
    raise AssertionError(f"the processes hold different replicated results for {disagree}")

  if jax.process_index() == 0:
    args.out.mkdir(parents=True, exist_ok=True)
    np.savez(args.out / "results.npz", **flat)
    timings = {
      "num_processes": jax.process_count(),
      "num_devices": jax.device_count(),
      "num_examples": NUM_EXAMPLES,
      "initialize_s": init_s,
      "compile_s": compile_s,
      "compile_s_per_case": case_compile_s,
      "cases_s": cases_s,
      "natural_gradient_steps_per_call": NUM_STEPS,
      "natural_gradient_step_s": step_s,
      "natural_gradient_step_median_s": float(np.median(step_s)),
    }
    (args.out / "timings.json").write_text(json.dumps(timings, indent=2) + "\n")
  multihost_utils.sync_global_devices("multiprocess_check done")
  jax.distributed.shutdown()
  print(f"process {args.process_id}: all ok", flush=True)


if __name__ == "__main__":
  flags = os.environ.get("XLA_FLAGS", "")
  if "xla_force_host_platform_device_count" not in flags:
    sys.exit("set XLA_FLAGS=--xla_force_host_platform_device_count=2 (or more) before starting")
  main()
