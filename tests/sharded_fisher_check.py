"""Run by tests/test_sharding.py in a fresh process with 8 simulated CPU devices.

With the batch sharded over the devices, the Fisher-vector products, the diagonal, a
natural-gradient step, K-FAC's factors and K-FAC steps equal the single-device results.
"""

import os

assert "xla_force_host_platform_device_count=8" in os.environ.get("XLA_FLAGS", "")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from jax.sharding import Mesh, NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

import gradest  # noqa: E402
from gradest import fisher  # noqa: E402

assert jax.device_count() == 8, jax.devices()
mesh = Mesh(np.array(jax.devices()), ("data",))
data_sharding = NamedSharding(mesh, P("data"))
replicated = NamedSharding(mesh, P())


def mlp(params, x):
  return jnp.tanh(x @ params["w1"] + params["b1"]) @ params["w2"]


k1, k2, k3, k4 = jax.random.split(jax.random.key(0), 4)
params = {
  "w1": jax.random.normal(k1, (5, 16)) / 2,
  "b1": jnp.zeros(16),
  "w2": jax.random.normal(k2, (16, 3)) / 4,
}
x = jax.random.normal(k3, (64, 5))
y = jax.random.randint(k4, (64,), 0, 3)
v = jax.tree.map(lambda p: jnp.ones_like(p) / p.size, params)
key = jax.random.key(7)


def loss(p, batch):
  xs, ys = batch
  logp = jax.nn.log_softmax(mlp(p, xs))
  return -jnp.mean(jnp.take_along_axis(logp, ys[:, None], axis=1))


def products(params, batch, v, key):
  out = {}
  for kind in ("exact", "empirical", "monte_carlo"):
    out[kind] = fisher.fisher_vector_product(
      mlp, params, batch, likelihood="categorical", kind=kind, key=key
    )(v)
  out["diagonal"] = fisher.fisher_diagonal(mlp, params, batch, likelihood="categorical", key=key)
  return out


opt = gradest.natural_gradient(
  0.5, mlp, "categorical", damping=1e-2, cg_maxiter=8, adapt_damping=True
)


def step(params, state, batch):
  value, grads = jax.value_and_grad(loss)(params, batch)
  updates, state = opt.update(
    grads, state, params, batch=batch, value=value, value_fn=lambda p: loss(p, batch)
  )
  return optax.apply_updates(params, updates), state


single_batch = (x, y)
sharded_batch = jax.device_put((x, y), data_sharding)
assert len(sharded_batch[0].sharding.device_set) == 8
rep_params = jax.device_put(params, replicated)

single = jax.jit(products)(params, single_batch, v, key)
sharded = jax.jit(products)(rep_params, sharded_batch, v, key)
for name in single:
  for a, b in zip(jax.tree.leaves(single[name]), jax.tree.leaves(sharded[name]), strict=True):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-5, atol=1e-7)
  print(name, "ok")

state = opt.init(params)
p1, s1 = params, state
p2, s2 = rep_params, jax.device_put(state, replicated)
jstep = jax.jit(step)
for _ in range(3):
  p1, s1 = jstep(p1, s1, single_batch)
  p2, s2 = jstep(p2, s2, sharded_batch)
# Sums over the batch are reduced in another order across devices; after three CG solves
# float32 rounding differences are ~1e-6 of each leaf's scale.
for a, b in zip(jax.tree.leaves((p1, s1)), jax.tree.leaves((p2, s2)), strict=True):
  a, b = np.asarray(a), np.asarray(b)
  if a.dtype == bool:
    np.testing.assert_array_equal(a, b)
  else:
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * max(float(np.max(np.abs(b))), 1e-6))
print("natural-gradient step ok")


# K-FAC: the factors are means over the sharded batch (reduced across devices by XLA);
# a few steps with the adaptive learning rate and damping equal the single-device ones.
def kfac_mlp(params, x):
  h = fisher.register_dense(x @ params["w1"] + params["b1"], x, params["w1"], params["b1"])
  a = jnp.tanh(h)
  return fisher.register_dense(a @ params["w2"], a, params["w2"])


kfac_opt = gradest.kfac(
  None,
  kfac_mlp,
  "categorical",
  example_inputs=x,
  damping=1e-2,
  adapt_damping=True,
  damping_adaptation_period=1,
  inverse_update_period=2,
)


def kfac_step(params, state, batch, key):
  value, grads = jax.value_and_grad(loss)(params, batch)
  updates, state = kfac_opt.update(
    grads, state, params, batch=batch, key=key, value=value, value_fn=lambda p: loss(p, batch)
  )
  return optax.apply_updates(params, updates), state


factors_single = jax.jit(
  lambda p, b: fisher.kfac_factors(kfac_mlp, p, b, likelihood="categorical", key=key)
)(params, single_batch)
factors_sharded = jax.jit(
  lambda p, b: fisher.kfac_factors(kfac_mlp, p, b, likelihood="categorical", key=key)
)(rep_params, sharded_batch)
for a, b in zip(jax.tree.leaves(factors_single), jax.tree.leaves(factors_sharded), strict=True):
  np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-5, atol=1e-7)
print("kfac factors ok")

state = kfac_opt.init(params)
p1, s1 = params, state
p2, s2 = rep_params, jax.device_put(state, replicated)
jstep = jax.jit(kfac_step)
for i in range(4):
  k = jax.random.fold_in(key, i)
  p1, s1 = jstep(p1, s1, single_batch, k)
  p2, s2 = jstep(p2, s2, sharded_batch, k)
for a, b in zip(jax.tree.leaves((p1, s1)), jax.tree.leaves((p2, s2)), strict=True):
  a, b = np.asarray(a), np.asarray(b)
  np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * max(float(np.max(np.abs(b))), 1e-6))
print("kfac step ok")
print("all ok")
