"""K-FAC: factors against their definition, blocks against the Fisher, the transform."""

import flax.linen as nn
import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import gradest
from gradest import fisher
from gradest.fisher import register_conv2d, register_dense, register_embed

N, D_IN, D_HID, D_OUT = 12, 4, 6, 3


def plain_mlp(p, x):
  h = register_dense(x @ p["w1"] + p["b1"], x, p["w1"], p["b1"])
  a = jnp.tanh(h)
  return register_dense(a @ p["w2"] + p["b2"], a, p["w2"], p["b2"])


def mlp_params(key):
  k1, k2, k3 = jax.random.split(key, 3)
  return {
    "w1": jax.random.normal(k1, (D_IN, D_HID)) / 2,
    "b1": 0.1 * jax.random.normal(k3, (D_HID,)),
    "w2": jax.random.normal(k2, (D_HID, D_OUT)) / 2,
    "b2": jnp.zeros(D_OUT),
  }


@pytest.fixture(scope="module")
def problem():
  kp, kx = jax.random.split(jax.random.key(0))
  params = mlp_params(kp)
  x = jax.random.normal(kx, (N, D_IN))
  y = jnp.arange(N) % D_OUT
  return params, x, y


def nll(apply_fn, x, y):
  def loss(p):
    logp = jax.nn.log_softmax(apply_fn(p, x))
    return -jnp.mean(logp[jnp.arange(x.shape[0]), y])

  return loss


# --------------------------------------------------------------------------------------
# Factors.
# --------------------------------------------------------------------------------------


def test_factors_match_their_definition_by_hand(problem):
  params, x, _ = problem
  key = jax.random.key(5)
  factors = fisher.kfac_factors(plain_mlp, params, (x, None), likelihood="categorical", key=key)
  # By hand: explicit activations; targets drawn with the same per-example keys.
  h = jnp.tanh(x @ params["w1"] + params["b1"])
  logits = h @ params["w2"] + params["b2"]
  lik = fisher.get_likelihood("categorical")
  ys = jax.vmap(lik.sample)(jax.random.split(key, (1, N))[0], logits)
  g2 = jax.nn.one_hot(ys, D_OUT) - jax.nn.softmax(logits)  # d log p / d logits
  g1 = (g2 @ params["w2"].T) * (1 - h**2)
  a1 = jnp.concatenate([x, jnp.ones((N, 1))], 1)
  a2 = jnp.concatenate([h, jnp.ones((N, 1))], 1)
  np.testing.assert_allclose(factors["w1"][0], a1.T @ a1 / N, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(factors["w2"][0], a2.T @ a2 / N, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(factors["w1"][1], g1.T @ g1 / N, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(factors["w2"][1], g2.T @ g2 / N, rtol=1e-4, atol=1e-6)


def test_empirical_factors_use_the_observed_targets(problem):
  params, x, y = problem
  factors = fisher.kfac_factors(
    plain_mlp, params, (x, y), likelihood="categorical", kind="empirical"
  )
  logits = plain_mlp(params, x)
  g2 = jax.nn.one_hot(y, D_OUT) - jax.nn.softmax(logits)
  np.testing.assert_allclose(factors["w2"][1], g2.T @ g2 / N, rtol=1e-4, atol=1e-6)


def test_block_equals_exact_fisher_for_linear_gaussian():
  # f = x W + b with a unit-variance Gaussian: F_W = E[a a^T] (x) I exactly, and the
  # sampled output factor G estimates I; tolerance from G's standard error.
  kx, kw = jax.random.split(jax.random.key(1))
  x = jax.random.normal(kx, (8, 3))
  params = {"w": jax.random.normal(kw, (3, 2)), "b": jnp.zeros(2)}

  def apply_fn(p, x):
    return register_dense(x @ p["w"] + p["b"], x, p["w"], p["b"])

  s = 4096
  factors = fisher.kfac_factors(
    apply_fn, params, (x, None), likelihood="gaussian", key=jax.random.key(2), num_samples=s
  )
  a, g = factors["w"]
  block = np.kron(np.asarray(a), np.asarray(g))
  # The exact Fisher over (w, b) in the layout [w; b] row-major, from Fisher products.
  fvp = fisher.fisher_vector_product(apply_fn, params, (x, None), likelihood="gaussian")
  flat, unravel = jax.flatten_util.ravel_pytree(params)
  basis = jnp.eye(flat.size)
  columns = jax.vmap(lambda e: jax.flatten_util.ravel_pytree(fvp(unravel(e)))[0])(basis)
  # ravel_pytree orders b (2) then w (3x2); the block orders rows of [w; b].
  order = np.concatenate([np.arange(2, 8), np.arange(0, 2)])
  exact = np.asarray(columns)[np.ix_(order, order)]
  se = np.sqrt(2.0 / (s * x.shape[0]))  # SE of an entry of G (unit Gaussian products)
  assert np.max(np.abs(block - exact)) < 5 * se * np.max(np.abs(np.asarray(a)))
  np.testing.assert_allclose(np.kron(np.asarray(a), np.eye(2)), exact, atol=1e-5)


def test_conv_patches_follow_the_kernel_layout():
  x = jax.random.normal(jax.random.key(0), (2, 7, 6, 3))
  kernel = jax.random.normal(jax.random.key(1), (3, 2, 3, 5))
  for strides, padding, dilation in [((1, 1), "SAME", (1, 1)), ((2, 1), "VALID", (1, 2))]:
    geometry = fisher.ConvGeometry((3, 2), strides, padding, dilation)
    layer = fisher.Layer("c", "conv2d", 0, None, "k", None, 18, 5, geometry)
    out = jax.lax.conv_general_dilated(
      x, kernel, strides, padding, rhs_dilation=dilation, dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    from gradest._src.layers import conv_patches, kernel_matrix  # same-package test

    via_patches = conv_patches(x, geometry) @ kernel_matrix(layer, kernel)
    np.testing.assert_allclose(via_patches, out, rtol=1e-4, atol=1e-5)


def test_conv_and_embedding_factors():
  x = jax.random.normal(jax.random.key(0), (4, 5, 5, 2))
  ids = jnp.array([[0, 1, 1], [2, 1, 0], [3, 3, 3], [0, 0, 1]])

  def apply_fn(p, inputs):
    images, tokens = inputs
    conv = jax.lax.conv_general_dilated(
      images, p["k"], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    conv = register_conv2d(conv, images, p["k"], strides=1, padding="SAME")
    emb = register_embed(p["table"][tokens], tokens, p["table"])
    return conv.mean((1, 2)) @ p["w"] + emb.mean(1)

  params = {
    "k": jnp.ones((3, 3, 2, 4)) / 10,
    "table": jax.random.normal(jax.random.key(2), (6, 3)),
    "w": jnp.ones((4, 3)) / 4,
  }
  factors = fisher.kfac_factors(
    apply_fn, params, ((x, ids), None), likelihood="gaussian", key=jax.random.key(3)
  )
  assert set(factors) == {"k", "table"}
  a_conv, g_conv = factors["k"]
  assert a_conv.shape == (18, 18) and g_conv.shape == (4, 4)
  counts = np.bincount(np.asarray(ids).ravel(), minlength=6) / ids.size
  np.testing.assert_allclose(factors["table"][0], counts, rtol=1e-6)


def test_fisher_quadratic_form_matches_fisher_products(problem):
  params, x, _ = problem
  vs = [
    jax.tree.map(lambda p, i=i: jnp.cos(jnp.arange(p.size) + i).reshape(p.shape), params)
    for i in range(3)
  ]
  q = fisher.fisher_quadratic_form(plain_mlp, params, (x, None), vs, likelihood="categorical")
  fvp = fisher.fisher_vector_product(plain_mlp, params, (x, None), likelihood="categorical")
  expected = np.array([[optax.tree_utils.tree_vdot(u, fvp(v)) for v in vs] for u in vs])
  np.testing.assert_allclose(q, expected, rtol=1e-4, atol=1e-6)


# --------------------------------------------------------------------------------------
# The preconditioner.
# --------------------------------------------------------------------------------------


def test_update_equals_direct_solve_with_materialized_blocks(problem):
  params, x, y = problem
  lam = 0.05
  opt = gradest.scale_by_kfac(
    plain_mlp, "categorical", example_inputs=x, learning_rate=1.0, damping=lam, decay=0.0
  )
  grads = jax.grad(nll(plain_mlp, x, y))(params)
  key = jax.random.key(9)
  step, state = opt.update(grads, opt.init(params), params, batch=(x, y), key=key)
  factors = fisher.kfac_factors(plain_mlp, params, (x, y), likelihood="categorical", key=key)
  for layer in ("1", "2"):
    a, g = (np.asarray(f, np.float64) for f in factors[f"w{layer}"])
    pi = np.sqrt((np.trace(a) / a.shape[0]) / (np.trace(g) / g.shape[0]))
    damped = np.kron(a + pi * np.sqrt(lam) * np.eye(len(a)), g + np.sqrt(lam) / pi * np.eye(len(g)))
    m = np.concatenate([grads[f"w{layer}"], grads[f"b{layer}"][None]], 0)
    solved = np.linalg.solve(damped, m.ravel()).reshape(m.shape)
    np.testing.assert_allclose(step[f"w{layer}"], solved[:-1], rtol=2e-3, atol=1e-5)
    np.testing.assert_allclose(step[f"b{layer}"], solved[-1], rtol=2e-3, atol=1e-5)


def test_unsupported_parameters_keep_their_gradient(problem):
  params, x, y = problem
  params = dict(params, scale=jnp.ones(D_OUT))

  def apply_fn(p, x):
    return plain_mlp(p, x) * p["scale"]

  summary = fisher.find_layers(apply_fn, params, x)
  assert summary.fallback == ("['scale']",)
  opt = gradest.scale_by_kfac(apply_fn, "categorical", example_inputs=x, learning_rate=1.0)
  grads = jax.grad(nll(apply_fn, x, y))(params)
  step, _ = opt.update(grads, opt.init(params), params, batch=(x, y), key=jax.random.key(0))
  np.testing.assert_array_equal(step["scale"], grads["scale"])


def test_shared_and_transformed_kernels_are_skipped_with_a_reason(problem):
  params, x, _ = problem

  def apply_fn(p, x):
    h = register_dense(x @ p["w1"] + p["b1"], x, p["w1"], p["b1"])
    w2 = p["w2"] * 2.0  # transformed before use
    return register_dense(h @ w2, h, w2)

  summary = fisher.find_layers(apply_fn, params, x)
  assert [layer.name for layer in summary.layers] == ["w1"]
  assert "not a leaf of params" in summary.skipped[0][1]
  assert "w2" in str(summary) and "identity preconditioner" in str(summary)

  def shared(p, x):
    h = register_dense(x @ p["w"], x, p["w"])
    return register_dense(h @ p["w"], h, p["w"])

  summary = fisher.find_layers(shared, {"w": jnp.ones((4, 4))}, x)
  assert not summary.layers and all("shared" in r for _, r in summary.skipped)


# --------------------------------------------------------------------------------------
# Flax models: linen, nnx and the registered plain function give the same step.
# --------------------------------------------------------------------------------------


class LinenMLP(nn.Module):
  @nn.compact
  def __call__(self, x):
    return nn.Dense(D_OUT, name="out")(jnp.tanh(nn.Dense(D_HID, name="hidden")(x)))


class NnxMLP(nnx.Module):
  def __init__(self, rngs):
    self.hidden = nnx.Linear(D_IN, D_HID, rngs=rngs)
    self.out = nnx.Linear(D_HID, D_OUT, rngs=rngs)

  def __call__(self, x):
    return self.out(jnp.tanh(self.hidden(x)))


def _one_step(apply_fn, params, x, y):
  opt = gradest.kfac(0.5, apply_fn, "categorical", example_inputs=x, damping=1e-2, decay=0.0)
  grads = jax.grad(nll(apply_fn, x, y))(params)
  updates, _ = jax.jit(lambda g, s, p: opt.update(g, s, p, batch=(x, y), key=jax.random.key(3)))(
    grads, opt.init(params), params
  )
  return updates


def test_linen_nnx_and_plain_models_give_the_same_update(problem):
  params, x, y = problem
  plain = _one_step(plain_mlp, params, x, y)

  linen_params = {
    "params": {
      "hidden": {"kernel": params["w1"], "bias": params["b1"]},
      "out": {"kernel": params["w2"], "bias": params["b2"]},
    }
  }
  model = LinenMLP()
  assert [la.name for la in fisher.find_layers(model.apply, linen_params, x).layers] == [
    "hidden",
    "out",
  ]
  linen = _one_step(model.apply, linen_params, x, y)["params"]
  np.testing.assert_allclose(linen["hidden"]["kernel"], plain["w1"], rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(linen["out"]["bias"], plain["b2"], rtol=1e-4, atol=1e-6)

  module = NnxMLP(nnx.Rngs(0))
  module.hidden.kernel[...] = params["w1"]
  module.hidden.bias[...] = params["b1"]
  module.out.kernel[...] = params["w2"]
  module.out.bias[...] = params["b2"]
  graphdef, state = nnx.split(module)

  def apply_nnx(s, x):
    return nnx.merge(graphdef, s)(x)

  assert [la.name for la in fisher.find_layers(apply_nnx, state, x).layers] == ["hidden", "out"]
  updates = _one_step(apply_nnx, state, x, y)
  np.testing.assert_allclose(updates["hidden"]["kernel"][...], plain["w1"], rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(updates["out"]["bias"][...], plain["b2"], rtol=1e-4, atol=1e-6)
  # Outside K-FAC the nnx layers are untouched.
  assert "gradest" not in getattr(nnx.Linear.__call__, "__module__", "")


def test_linen_conv_and_embed_are_found():
  class Model(nn.Module):
    @nn.compact
    def __call__(self, inputs):
      images, tokens = inputs
      c = nn.Conv(4, (3, 3), strides=2)(images).mean((1, 2))
      e = nn.Embed(7, 4)(tokens).mean(1)
      return nn.Dense(2)(nn.LayerNorm()(c + e))

  images = jnp.ones((3, 6, 6, 2))
  tokens = jnp.zeros((3, 5), jnp.int32)
  params = Model().init(jax.random.key(0), (images, tokens))
  summary = fisher.find_layers(Model().apply, params, (images, tokens))
  assert [(la.name, la.kind, la.in_size) for la in summary.layers] == [
    ("Conv_0", "conv2d", 19),
    ("Embed_0", "embed", 7),
    ("Dense_0", "dense", 5),
  ]
  assert len(summary.fallback) == 2  # the layer norm's scale and bias


# --------------------------------------------------------------------------------------
# Training, damping, optax composition, checkpoints.
# --------------------------------------------------------------------------------------


def _train(opt, params, x, y, steps, apply_fn=plain_mlp):
  loss = nll(apply_fn, x, y)

  @jax.jit
  def step(p, s, k):
    value, grads = jax.value_and_grad(loss)(p)
    updates, s = opt.update(grads, s, p, batch=(x, y), key=k, value=value, value_fn=loss)
    return optax.apply_updates(p, updates), s

  state = opt.init(params)
  for i in range(steps):
    params, state = step(params, state, jax.random.key(i))
  return params, state, loss


@pytest.mark.parametrize("learning_rate", [None, 0.5])
def test_kfac_trains(problem, learning_rate):
  params, x, y = problem
  opt = gradest.kfac(learning_rate, plain_mlp, "categorical", example_inputs=x, damping=1e-2)
  new, state, loss = _train(opt, params, x, y, 15)
  assert float(loss(new)) < 0.5 * float(loss(params))
  assert int(state[0].count) == 15


def test_damping_adaptation_moves_the_right_way(problem):
  params, x, y = problem
  common = dict(example_inputs=x, damping=1.0, adapt_damping=True, damping_adaptation_period=1)
  # A small step fits the quadratic model (rho near 1): the damping goes down.
  good = gradest.kfac(0.05, plain_mlp, "categorical", **common)
  _, state, _ = _train(good, params, x, y, 1)
  assert float(state[0].reduction_ratio) > 0.75 and float(state[0].damping) < 1.0
  # A huge step overshoots (rho < 1/4): the damping goes up.
  bad = gradest.kfac(200.0, plain_mlp, "categorical", **common)
  _, state, _ = _train(bad, params, x, y, 1)
  assert float(state[0].reduction_ratio) < 0.25 and float(state[0].damping) > 1.0


def test_kl_clip_bounds_the_step(problem):
  params, x, y = problem
  grads = jax.grad(nll(plain_mlp, x, y))(params)
  kw = dict(example_inputs=x, learning_rate=10.0, decay=0.0)
  free = gradest.scale_by_kfac(plain_mlp, "categorical", **kw)
  clipped = gradest.scale_by_kfac(plain_mlp, "categorical", kl_clip=1e-3, **kw)
  key = jax.random.key(0)
  s_free, _ = free.update(grads, free.init(params), params, batch=(x, y), key=key)
  s_clip, _ = clipped.update(grads, clipped.init(params), params, batch=(x, y), key=key)
  ratio = optax.tree_utils.tree_norm(s_clip) / optax.tree_utils.tree_norm(s_free)
  delta = jax.tree.map(lambda s: s / 10.0, s_free)
  expected = np.sqrt(1e-3 / (100.0 * float(optax.tree_utils.tree_vdot(delta, grads))))
  np.testing.assert_allclose(ratio, min(1.0, expected), rtol=1e-4)


def test_inverses_are_refreshed_every_period(problem):
  params, x, y = problem
  opt = gradest.scale_by_kfac(
    plain_mlp, "categorical", example_inputs=x, learning_rate=0.1, inverse_update_period=3
  )
  grads = jax.grad(nll(plain_mlp, x, y))(params)
  state = opt.init(params)
  seen = []
  for i in range(4):
    _, state = opt.update(grads, state, params, batch=(x, y), key=jax.random.key(i))
    seen.append(np.asarray(state.inverses_out["w2"]))
  assert np.array_equal(seen[0], seen[1]) and np.array_equal(seen[1], seen[2])
  assert not np.array_equal(seen[2], seen[3])


def test_factors_are_updated_every_curvature_period(problem):
  params, x, y = problem
  opt = gradest.scale_by_kfac(
    plain_mlp, "categorical", example_inputs=x, learning_rate=0.1, curvature_update_period=2
  )
  grads = jax.grad(nll(plain_mlp, x, y))(params)
  state = opt.init(params)
  seen = []
  for i in range(3):
    _, state = opt.update(grads, state, params, batch=(x, y), key=jax.random.key(i))
    seen.append(np.asarray(state.factors_out["w1"]))
  assert np.array_equal(seen[0], seen[1]) and not np.array_equal(seen[1], seen[2])
  # The first update's bias correction divides by 1 - decay: the factors of that batch.
  first = fisher.kfac_factors(
    plain_mlp, params, (x, y), likelihood="categorical", key=jax.random.key(0)
  )
  np.testing.assert_allclose(seen[0] / (1 - 0.95), first["w1"][1], rtol=1e-4)


def test_composes_with_optax_chain_schedules_and_multisteps(problem):
  params, x, y = problem
  schedule = optax.linear_schedule(0.3, 0.1, 10)
  chained = optax.chain(
    optax.clip_by_global_norm(1.0),
    optax.add_decayed_weights(1e-4),
    gradest.kfac(schedule, plain_mlp, "categorical", example_inputs=x, damping=1e-2),
  )
  new, _, loss = _train(chained, params, x, y, 8)
  assert float(loss(new)) < float(loss(params))
  multi = optax.MultiSteps(
    gradest.kfac(0.2, plain_mlp, "categorical", example_inputs=x, damping=0.1), every_k_schedule=2
  )
  new, state, loss = _train(multi, params, x, y, 6)
  assert float(loss(new)) < float(loss(params))
  assert int(state.inner_opt_state[0].count) == 3


def test_checkpoint_round_trip(problem):
  params, x, y = problem
  opt = gradest.kfac(None, plain_mlp, "categorical", example_inputs=x, damping=1e-2)
  _, state, _ = _train(opt, params, x, y, 3)
  restored = flax.serialization.from_bytes(opt.init(params), flax.serialization.to_bytes(state))
  chex_equal = jax.tree.map(lambda a, b: np.array_equal(a, b), state, restored)
  assert all(jax.tree.leaves(chex_equal))


def test_vector_likelihood_and_sequence_positions():
  # A dense layer applied at every position of (N, T, d) inputs: T rows per example.
  x = jax.random.normal(jax.random.key(0), (5, 4, 3))
  params = {"w": jax.random.normal(jax.random.key(1), (3, 2))}

  def apply_fn(p, x):
    return register_dense(x @ p["w"], x, p["w"]).sum(1)

  ((a, g),) = fisher.kfac_factors(
    apply_fn, params, (x, None), likelihood="gaussian", key=jax.random.key(2)
  ).values()
  rows = x.reshape(-1, 3)
  np.testing.assert_allclose(a, rows.T @ rows / 20, rtol=1e-5)
  assert g.shape == (2, 2)


# --------------------------------------------------------------------------------------
# Bad input.
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
  "kwargs, match",
  [
    ({"damping": -1.0}, "damping"),
    ({"damping": 0.0}, "damping"),
    ({"inverse_update_period": 0}, "inverse_update_period"),
    ({"curvature_update_period": 0}, "curvature_update_period"),
    ({"decay": 1.0}, "decay"),
    ({"kind": "exact"}, "kind"),
    ({"kl_clip": 0.01}, "kl_clip"),
    ({"momentum": 1.5}, "momentum"),
  ],
)
def test_bad_arguments(problem, kwargs, match):
  _, x, _ = problem
  with pytest.raises(ValueError, match=match):
    gradest.scale_by_kfac(plain_mlp, "categorical", example_inputs=x, **kwargs)


def test_model_without_supported_layer_is_refused(problem):
  params, x, _ = problem
  opt = gradest.kfac(0.1, lambda p, x: x @ p["w1"], "categorical", example_inputs=x)
  with pytest.raises(ValueError, match="no supported layer"):
    opt.init(params)


def test_missing_step_inputs(problem):
  params, x, y = problem
  opt = gradest.scale_by_kfac(plain_mlp, "categorical", example_inputs=x, learning_rate=0.1)
  state = opt.init(params)
  with pytest.raises(TypeError, match="batch"):
    opt.update(params, state, params)
  with pytest.raises(TypeError, match="key"):
    opt.update(params, state, params, batch=(x, y))
  with pytest.raises(ValueError, match="params"):
    opt.update(params, state, None, batch=(x, y), key=jax.random.key(0))
  adaptive = gradest.scale_by_kfac(
    plain_mlp, "categorical", example_inputs=x, learning_rate=0.1, adapt_damping=True
  )
  with pytest.raises(TypeError, match="value_fn"):
    adaptive.update(params, adaptive.init(params), params, batch=(x, y), key=jax.random.key(0))


def test_register_conv2d_refuses_unsupported_padding():
  with pytest.raises(ValueError, match="padding"):
    register_conv2d(
      jnp.ones((1, 2, 2, 1)), jnp.ones((1, 2, 2, 1)), jnp.ones((1, 1, 1, 1)), padding="CIRCULAR"
    )


def test_one_by_one_convolution_equals_a_dense_layer_at_every_pixel():
  # A 1x1 convolution is a dense layer applied at every pixel: same factors, same step.
  images = jax.random.normal(jax.random.key(0), (3, 4, 5, 2))
  y = jnp.arange(3) % 2

  class Conv(nn.Module):
    @nn.compact
    def __call__(self, x):
      return nn.Conv(2, (1, 1), name="c")(x).mean((1, 2))

  def dense(p, x):
    h = register_dense(x @ p["kernel"] + p["bias"], x, p["kernel"], p["bias"])
    return h.mean((1, 2))

  params = Conv().init(jax.random.key(1), images)
  plain = {"kernel": params["params"]["c"]["kernel"][0, 0], "bias": params["params"]["c"]["bias"]}
  key = jax.random.key(2)
  conv_f = fisher.kfac_factors(Conv().apply, params, (images, y), likelihood="categorical", key=key)
  dense_f = fisher.kfac_factors(dense, plain, (images, y), likelihood="categorical", key=key)
  for a, b in zip(conv_f["c"], dense_f["kernel"], strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
  conv_step = _one_step(Conv().apply, params, images, y)["params"]["c"]
  dense_step = _one_step(dense, plain, images, y)
  np.testing.assert_allclose(conv_step["kernel"][0, 0], dense_step["kernel"], rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(conv_step["bias"], dense_step["bias"], rtol=1e-4, atol=1e-6)


def test_embedding_step_equals_direct_solve_with_diagonal_input_factor():
  ids = jnp.array([[0, 1], [1, 1], [3, 0], [2, 2]])
  y = jnp.array([0, 1, 1, 0])
  params = {
    "table": jax.random.normal(jax.random.key(0), (5, 3)),
    "w": jax.random.normal(jax.random.key(1), (3, 2)),
  }

  def apply_fn(p, tokens):
    e = register_embed(p["table"][tokens], tokens, p["table"]).mean(1)
    return e @ p["w"]  # "w" is not registered: it keeps its gradient

  lam = 0.1
  opt = gradest.scale_by_kfac(
    apply_fn, "categorical", example_inputs=ids, learning_rate=1.0, damping=lam, decay=0.0
  )
  grads = jax.grad(nll(apply_fn, ids, y))(params)
  key = jax.random.key(4)
  step, _ = opt.update(grads, opt.init(params), params, batch=(ids, y), key=key)
  ((a, g),) = fisher.kfac_factors(
    apply_fn, params, (ids, y), likelihood="categorical", key=key
  ).values()
  a, g = np.asarray(a, np.float64), np.asarray(g, np.float64)
  pi = np.sqrt(np.mean(a) / (np.trace(g) / 3))
  damped = np.kron(np.diag(a) + pi * np.sqrt(lam) * np.eye(5), g + np.sqrt(lam) / pi * np.eye(3))
  solved = np.linalg.solve(damped, np.asarray(grads["table"], np.float64).ravel()).reshape(5, 3)
  np.testing.assert_allclose(step["table"], solved, rtol=2e-3, atol=1e-6)
  np.testing.assert_array_equal(step["w"], grads["w"])
  assert np.all(np.asarray(a)[[4]] == 0)  # id 4 never appears: its rows are damped only
