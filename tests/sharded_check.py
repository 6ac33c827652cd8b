"""Run by tests/test_sharding.py in a fresh process with 8 simulated CPU devices."""

import os

assert "xla_force_host_platform_device_count=8" in os.environ.get("XLA_FLAGS", "")

import functools  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import Mesh, NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

import gradest  # noqa: E402
from gradest.distributions import Normal  # noqa: E402

assert jax.device_count() == 8, jax.devices()
mesh = Mesh(np.array(jax.devices()), ("data",))
sharding = NamedSharding(mesh, P("data"))

params = {"mu": jnp.array([0.3, -1.0, 2.0]), "log_sigma": jnp.array([0.0, -0.5, 0.2])}
dist_fn = lambda p: Normal(p["mu"], jnp.exp(p["log_sigma"]))  # noqa: E731
f = lambda x: jnp.sum(jnp.cos(x) * x)  # noqa: E731
key = jax.random.key(3)
estimators = {
  "score_function": functools.partial(gradest.score_function_grad, baseline="leave_one_out"),
  "pathwise": gradest.pathwise_grad,
  "measure_valued": gradest.measure_valued_grad,
}
for name, fn in estimators.items():
  single = jax.jit(lambda p, k, fn=fn: fn(f, dist_fn, p, k, 64))(params, key)
  sharded = jax.jit(lambda p, k, fn=fn: fn(f, dist_fn, p, k, 64, sample_sharding=sharding))(
    params, key
  )
  leaf = sharded.per_sample["mu"]
  assert len(leaf.sharding.device_set) == 8, (name, leaf.sharding)
  assert leaf.sharding.is_equivalent_to(sharding, leaf.ndim), (name, leaf.sharding)
  for a, b in zip(jax.tree.leaves(single), jax.tree.leaves(sharded), strict=True):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
  print(name, "ok")
print("all ok")
