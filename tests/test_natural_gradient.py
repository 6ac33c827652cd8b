"""The optax natural-gradient transforms: exact steps, composition, damping, errors."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import optax.tree_utils as otu
import pytest
from flax import nnx

import gradest
from gradest import fisher
from gradest._src import natural_gradient as ng_module
from gradest._src.natural_gradient import solve_damped_system

N, D = 12, 4


def linear(params, x):
  return x @ params["w"] + params["b"]


def linear_problem(seed=0):
  k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
  x = jax.random.normal(k1, (N, D)) * jnp.array([3.0, 1.0, 0.3, 0.1])  # ill-conditioned
  y = x @ jax.random.normal(k2, (D, 2)) + 0.1 * jax.random.normal(k3, (N, 2))
  params = {"w": jnp.zeros((D, 2)), "b": jnp.zeros(2)}
  return params, (x, y)


def gaussian_loss(params, batch):
  x, y = batch
  return 0.5 * jnp.mean(jnp.sum((linear(params, x) - y) ** 2, axis=-1))


def design(x):
  """Rows [x, 1] ⊗ I_2 in the raveled order of {'b', 'w'}: F = A^T A / N for unit variance."""
  return jnp.concatenate([jnp.ones((x.shape[0], 1)), x], axis=1)


def flat(tree):
  return jax.flatten_util.ravel_pytree(tree)[0]


def exact_fisher(x):
  """The Fisher of the linear-Gaussian model in the raveled ({'b', 'w'}) order."""
  a = np.asarray(design(x), np.float64)
  cov = a.T @ a / a.shape[0]  # over [1, x]
  # Raveled order: b (2,), then w (D, 2) row-major, i.e. feature-major, output-minor.
  return np.kron(cov, np.eye(2))


def test_exact_step_solves_the_damped_system_and_lands_on_least_squares():
  params, batch = linear_problem()
  x, y = batch
  g = jax.grad(gaussian_loss)(params, batch)
  f = exact_fisher(x)
  for damping in (0.1, 0.0):
    tx = gradest.scale_by_natural_gradient(
      linear, "gaussian", damping=damping, cg_maxiter=50, cg_tol=1e-6
    )
    out, state = jax.jit(tx.update)(g, tx.init(params), params, batch=batch)
    expected = np.linalg.solve(f + damping * np.eye(f.shape[0]), flat(g))
    np.testing.assert_allclose(flat(out), expected, rtol=1e-3, atol=1e-4)
    assert bool(state.converged) and float(state.residual) <= 1e-6
  # Undamped, the quadratic loss is minimized in one step of length 1 (Gauss-Newton).
  new = optax.apply_updates(params, jax.tree.map(jnp.negative, out))
  lstsq = np.linalg.lstsq(np.asarray(design(x)), np.asarray(y), rcond=None)[0]
  np.testing.assert_allclose(new["b"], lstsq[0], rtol=1e-3, atol=1e-3)
  np.testing.assert_allclose(new["w"], lstsq[1:], rtol=1e-3, atol=1e-3)


def test_empirical_kind_solves_with_the_empirical_fisher():
  params, batch = linear_problem()
  params = {"w": 0.3 * jnp.ones((D, 2)), "b": jnp.zeros(2)}
  per_example = jax.vmap(
    lambda xi, yi: flat(jax.grad(gaussian_loss)(params, (xi[None], yi[None])))
  )(*batch)
  f_emp = np.asarray(per_example.T @ per_example, np.float64) / N
  g = jax.grad(gaussian_loss)(params, batch)
  tx = gradest.scale_by_natural_gradient(
    linear, "gaussian", kind="empirical", damping=0.1, cg_maxiter=50, cg_tol=1e-6
  )
  out, state = tx.update(g, tx.init(params), params, batch=batch)
  expected = np.linalg.solve(f_emp + 0.1 * np.eye(f_emp.shape[0]), flat(g))
  np.testing.assert_allclose(flat(out), expected, rtol=1e-3, atol=1e-4)


def test_cg_non_convergence_is_reported():
  params, batch = linear_problem()
  g = jax.grad(gaussian_loss)(params, batch)
  tx = gradest.scale_by_natural_gradient(
    linear, "gaussian", damping=0.0, cg_maxiter=1, cg_tol=1e-6, warm_start=False
  )
  _, state = tx.update(g, tx.init(params), params, batch=batch)
  assert not bool(state.converged)
  assert float(state.residual) > 1e-3


def test_warm_start_improves_a_truncated_solve():
  params, batch = linear_problem()
  g = jax.grad(gaussian_loss)(params, batch)
  residuals = {}
  for warm in (False, True):
    tx = gradest.scale_by_natural_gradient(
      linear, "gaussian", damping=1e-3, cg_maxiter=2, cg_tol=1e-8, warm_start=warm
    )
    update = jax.jit(tx.update)
    state = tx.init(params)
    for _ in range(4):  # the same system each time
      _, state = update(g, state, params, batch=batch)
    residuals[warm] = float(state.residual)
  assert residuals[True] < 0.5 * residuals[False]


def test_kl_trust_region_step_has_the_requested_kl():
  params, batch = linear_problem()
  g = jax.grad(gaussian_loss)(params, batch)
  f = exact_fisher(batch[0])
  tx = gradest.kl_trust_region(linear, "gaussian", max_kl=0.05, damping=1e-4, cg_maxiter=30)
  out, state = jax.jit(tx.update)(g, tx.init(params), params, batch=batch)
  h = np.asarray(flat(out), np.float64)
  assert 0.5 * h @ f @ h == pytest.approx(0.05, rel=1e-3)
  assert h @ np.asarray(flat(g)) < 0  # a descent direction
  zero = jax.tree.map(jnp.zeros_like, g)
  out0, _ = tx.update(zero, tx.init(params), params, batch=batch)
  assert np.all(np.asarray(flat(out0)) == 0)


def test_fisher_diagonal_preconditioner_first_step():
  params, batch = linear_problem()
  params = {"w": 0.3 * jnp.ones((D, 2)), "b": jnp.zeros(2)}
  g = jax.grad(gaussian_loss)(params, batch)
  tx = gradest.scale_by_fisher_diagonal(linear, "gaussian", kind="empirical", damping=1e-2)
  out, state = jax.jit(tx.update)(g, tx.init(params), params, batch=batch)
  d = fisher.fisher_diagonal(linear, params, batch, likelihood="gaussian", kind="empirical")
  expected = jax.tree.map(lambda gi, di: gi / (di + 1e-2), g, d)
  np.testing.assert_allclose(flat(out), flat(expected), rtol=1e-5)
  assert int(state.count) == 1


# --------------------------------------------------------------------------------------
# The conjugate-gradient solver.
# --------------------------------------------------------------------------------------

SHAPES = {"a": (3, 4), "b": (5,)}  # 17 unknowns


def spd_system(seed, dtype, condition=100.0):
  """A random SPD matrix with the given condition number, as a pytree map, and a vector."""
  rng = np.random.default_rng(seed)
  n = sum(int(np.prod(s)) for s in SHAPES.values())
  q, _ = np.linalg.qr(rng.normal(size=(n, n)))
  m = (q * np.geomspace(1.0 / condition, 1.0, n)) @ q.T
  m = np.asarray(np.asarray(m, dtype), np.float64)  # the matrix the solver really sees
  template = {k: jnp.zeros(s, dtype) for k, s in SHAPES.items()}
  unravel = jax.flatten_util.ravel_pytree(template)[1]
  mat = jnp.asarray(m, dtype)

  def fvp(v):
    return unravel(mat @ flat(v))

  g = unravel(jnp.asarray(rng.normal(size=n), dtype))
  x0 = unravel(jnp.asarray(rng.normal(size=n), dtype))
  return m, fvp, g, x0


def check_solution(sol, m, g, damping, rtol):
  x = np.asarray(flat(sol.x), np.float64)
  gf = np.asarray(flat(g), np.float64)
  a = m + damping * np.eye(len(x))
  expected = np.linalg.solve(a, gf)
  assert np.linalg.norm(x - expected) <= rtol * np.linalg.norm(expected)
  # F x and the residual come from the recurrences; they match direct products.
  fx = np.asarray(flat(sol.fx), np.float64)
  assert np.linalg.norm(fx - m @ x) <= rtol * np.linalg.norm(m @ x)
  true_residual = np.linalg.norm(gf - a @ x) / np.linalg.norm(gf)
  return true_residual


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("warm", [False, True])
def test_cg_matches_a_dense_solve(dtype, warm):
  with jax.enable_x64(dtype == "float64"):
    m, fvp, g, x0 = spd_system(0, dtype)
    tol = 1e-5 if dtype == "float32" else 1e-12
    sol = jax.jit(lambda g, x0: solve_damped_system(fvp, g, 0.01, x0, tol, 200))(
      g, x0 if warm else None
    )
    assert all(leaf.dtype == dtype for leaf in jax.tree.leaves((sol.x, sol.fx)))
    true_residual = check_solution(sol, m, g, 0.01, 1e-3 if dtype == "float32" else 1e-9)
    assert float(sol.residual) <= tol
    assert true_residual <= (1e-4 if dtype == "float32" else 1e-11)
    assert int(sol.iterations) >= 1 and int(sol.iterations) < 200


@pytest.mark.parametrize("warm", [False, True])
def test_cg_stops_at_maxiter_and_reports_the_true_residual(warm):
  m, fvp, g, x0 = spd_system(1, "float32", condition=1e3)
  sol = solve_damped_system(fvp, g, 1e-3, x0 if warm else None, 1e-8, 4)
  assert int(sol.iterations) == 4
  x = np.asarray(flat(sol.x), np.float64)
  gf = np.asarray(flat(g), np.float64)
  true_residual = np.linalg.norm(gf - (m + 1e-3 * np.eye(len(x))) @ x) / np.linalg.norm(gf)
  assert true_residual > 1e-3  # far from converged: the report is not a trivial 0
  assert float(sol.residual) == pytest.approx(true_residual, rel=1e-4)
  fx = np.asarray(flat(sol.fx), np.float64)
  np.testing.assert_allclose(fx, m @ x, rtol=1e-4, atol=1e-5 * np.abs(m @ x).max())
  # The warm start predicts a decrease however few iterations run.
  assert 0.5 * x @ (m + 1e-3 * np.eye(len(x))) @ x - gf @ x < 0


def test_cg_zero_right_hand_side():
  _, fvp, g, x0 = spd_system(2, "float32")
  zero = jax.tree.map(jnp.zeros_like, g)
  for start in (None, x0):
    sol = jax.jit(lambda z, s: solve_damped_system(fvp, z, 0.1, s, 1e-6, 10))(zero, start)
    assert np.all(np.asarray(flat(sol.x)) == 0) and np.all(np.asarray(flat(sol.fx)) == 0)
    assert float(sol.residual) == 0 and int(sol.iterations) == 0


@pytest.mark.parametrize("scale", [1e-30, 1e30])
def test_cg_is_scale_invariant_in_float32(scale):
  # Squared norms of such gradients under- or overflow in float32; the solve does not.
  m, fvp, g, x0 = spd_system(3, "float32")
  ref = solve_damped_system(fvp, g, 0.01, x0, 1e-5, 200)
  big = jax.tree.map(lambda a: a * scale, g)
  sol = solve_damped_system(fvp, big, 0.01, jax.tree.map(lambda a: a * scale, x0), 1e-5, 200)
  assert np.all(np.isfinite(np.asarray(flat(sol.x))))
  # The same solution up to float32 rounding, measured against the solution's scale: the
  # rescaled iterations round differently, and a small coordinate of a large solution
  # carries the rounding of the large ones.
  reference = np.asarray(flat(ref.x))
  np.testing.assert_allclose(
    flat(sol.x) / scale, reference, rtol=1e-4, atol=1e-5 * np.abs(reference).max()
  )
  assert float(sol.residual) <= 1e-5 and abs(int(sol.iterations) - int(ref.iterations)) <= 1


def test_cg_curvature_is_accurate_when_damping_dominates():
  # F x is accumulated from F p, not taken as g - r - damping x (which would cancel).
  m, fvp, g, _ = spd_system(4, "float32")
  m_small = 1e-4 * m
  small = lambda v: jax.tree.map(lambda a: 1e-4 * a, fvp(v))  # noqa: E731
  sol = solve_damped_system(small, g, 10.0, None, 1e-6, 100)
  x = np.asarray(flat(sol.x), np.float64)
  xfx = float(otu.tree_vdot(sol.x, sol.fx))
  assert xfx == pytest.approx(x @ m_small @ x, rel=1e-4)


class ProductCounter:
  """Wraps ``fisher_vector_product`` so that each executed product is counted."""

  def __init__(self, monkeypatch):
    self.count = 0
    original = ng_module.fisher_vector_product

    def counting(*args, **kwargs):
      fvp = original(*args, **kwargs)

      def counted(v):
        jax.debug.callback(self.increment, ordered=True)
        return fvp(v)

      return counted

    monkeypatch.setattr(ng_module, "fisher_vector_product", counting)

  def increment(self):
    self.count += 1


@pytest.mark.parametrize("warm", [False, True])
def test_products_per_step_are_maxiter_plus_the_warm_start(monkeypatch, warm):
  counter = ProductCounter(monkeypatch)
  params, batch = logistic_problem()
  loss = lambda p: nll(linear, p, batch)  # noqa: E731
  g = jax.grad(loss)(params)
  maxiter = 5
  common = dict(damping=1e-3, cg_maxiter=maxiter, cg_tol=1e-30, warm_start=warm)
  transforms = {
    "plain": gradest.scale_by_natural_gradient(linear, "categorical", **common),
    "adaptive": gradest.scale_by_natural_gradient(
      linear, "categorical", adapt_damping=True, **common
    ),
    "trust_region": gradest.scale_by_kl_trust_region(linear, "categorical", **common),
  }
  for name, tx in transforms.items():
    update = jax.jit(lambda g, s, tx=tx: tx.update(g, s, params, batch=batch, value_fn=loss))
    state = tx.init(params)
    for _ in range(2):
      counter.count = 0
      _, state = update(g, state)
      jax.effects_barrier()
      assert counter.count == maxiter + warm, name
      assert not bool(state.converged)


# --------------------------------------------------------------------------------------
# Composition, jit, vmap, checkpointing.
# --------------------------------------------------------------------------------------


def logistic_problem():
  k1, k2 = jax.random.split(jax.random.key(3))
  x = jax.random.normal(k1, (32, 5))
  y = jnp.argmax(x[:, :3] + 0.5 * jax.random.normal(k2, (32, 3)), axis=-1)
  params = {"w": jnp.zeros((5, 3)), "b": jnp.zeros(3)}
  return params, (x, y)


def nll(apply_fn, params, batch):
  x, y = batch
  logp = jax.nn.log_softmax(apply_fn(params, x))
  return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1))


def test_jitted_inside_chain_with_clipping_schedule_weight_decay_and_multisteps():
  params, batch = logistic_problem()
  inner = optax.chain(
    optax.clip_by_global_norm(10.0),
    optax.add_decayed_weights(1e-4),
    gradest.natural_gradient(
      optax.linear_schedule(1.0, 0.5, 10),
      linear,
      "categorical",
      kind="monte_carlo",
      damping=1e-2,
      adapt_damping=True,
      cg_maxiter=5,
    ),
  )
  opt = optax.MultiSteps(inner, every_k_schedule=2)
  loss = lambda p: nll(linear, p, batch)  # noqa: E731

  @jax.jit
  def step(params, state, key):
    value, grads = jax.value_and_grad(loss)(params)
    updates, state = opt.update(
      grads, state, params, batch=batch, key=key, value=value, value_fn=loss
    )
    return optax.apply_updates(params, updates), state

  state = opt.init(params)
  start = float(loss(params))
  for i in range(8):
    params, state = step(params, state, jax.random.key(i))
  assert float(loss(params)) < 0.7 * start
  ng_state = state.inner_opt_state[2][0]
  assert isinstance(ng_state, gradest.NaturalGradientState)
  assert int(ng_state.count) == 4
  # The state is arrays only: it round-trips through numpy (a checkpoint).
  leaves = jax.tree.leaves(state)
  assert all(isinstance(leaf, jax.Array) for leaf in leaves)
  restored = jax.tree.map(jnp.asarray, jax.tree.map(np.asarray, state))
  a, _ = step(params, state, jax.random.key(99))
  b, _ = step(params, restored, jax.random.key(99))
  np.testing.assert_array_equal(flat(a), flat(b))


def test_vmap_over_independent_problems():
  params, (x, y) = linear_problem()
  ys = jnp.stack([y, -y, 2 * y])
  tx = gradest.scale_by_natural_gradient(
    linear, "gaussian", damping=0.1, cg_maxiter=50, cg_tol=1e-6
  )

  def one(y):
    g = jax.grad(gaussian_loss)(params, (x, y))
    return g, tx.update(g, tx.init(params), params, batch=(x, y))

  grads, (out, state) = jax.jit(jax.vmap(one))(ys)
  f = exact_fisher(x) + 0.1 * np.eye(10)
  for i in range(3):
    g_i = flat(jax.tree.map(lambda a, i=i: a[i], grads))
    x_i = flat(jax.tree.map(lambda a, i=i: a[i], out))
    np.testing.assert_allclose(x_i, np.linalg.solve(f, g_i), rtol=1e-3, atol=1e-4)
  assert state.residual.shape == (3,) and bool(jnp.all(state.converged))


def test_vmap_trust_region_and_diagonal():
  params, (x, y) = linear_problem()
  params = {"w": 0.3 * jnp.ones((D, 2)), "b": jnp.zeros(2)}
  ys = jnp.stack([y, -y])
  tr = gradest.scale_by_kl_trust_region(linear, "gaussian", max_kl=0.1, cg_maxiter=30)
  diag = gradest.scale_by_fisher_diagonal(linear, "gaussian", kind="empirical", damping=1e-2)

  def one(y):
    g = jax.grad(gaussian_loss)(params, (x, y))
    up_tr, _ = tr.update(g, tr.init(params), params, batch=(x, y))
    up_diag, _ = diag.update(g, diag.init(params), params, batch=(x, y))
    d = fisher.fisher_diagonal(linear, params, (x, y), likelihood="gaussian", kind="empirical")
    return up_tr, up_diag, jax.tree.map(lambda gi, di: gi / (di + 1e-2), g, d)

  up_tr, up_diag, expected = jax.jit(jax.vmap(one))(ys)
  f = exact_fisher(x)
  for i in range(2):
    h = np.asarray(flat(jax.tree.map(lambda a, i=i: a[i], up_tr)), np.float64)
    assert 0.5 * h @ f @ h == pytest.approx(0.1, rel=1e-3)
  np.testing.assert_allclose(flat(up_diag), flat(expected), rtol=1e-5)


# --------------------------------------------------------------------------------------
# Damping adaptation.
# --------------------------------------------------------------------------------------


def test_damping_decreases_when_the_quadratic_model_is_exact():
  params, batch = linear_problem()
  g = jax.grad(gaussian_loss)(params, batch)
  tx = gradest.scale_by_natural_gradient(
    linear, "gaussian", damping=1.0, adapt_damping=True, damping_factor=2.0, cg_maxiter=50
  )
  loss = lambda p: gaussian_loss(p, batch)  # noqa: E731
  _, state = jax.jit(lambda s: tx.update(g, s, params, batch=batch, value_fn=loss))(tx.init(params))
  # The loss is quadratic with Hessian F: the model's prediction is exact, rho = 1.
  assert float(state.reduction_ratio) == pytest.approx(1.0, abs=1e-3)
  assert float(state.damping) == pytest.approx(0.5)


def test_damping_increases_when_the_loss_disagrees_with_the_model():
  params, batch = linear_problem()
  g = jax.grad(gaussian_loss)(params, batch)
  tx = gradest.scale_by_natural_gradient(
    linear, "gaussian", damping=1e-3, adapt_damping=True, damping_factor=2.0, max_damping=1.5e-3
  )

  def stiff_loss(p):  # much more curved than the Fisher predicts away from params
    d = flat(p) - flat(params)
    return gaussian_loss(p, batch) + 10.0 * jnp.sum(d**2) ** 2

  value = gaussian_loss(params, batch)
  out, state = tx.update(g, tx.init(params), params, batch=batch, value=value, value_fn=stiff_loss)
  assert float(state.reduction_ratio) < 0.25
  assert float(state.damping) == pytest.approx(1.5e-3)  # doubled, then clipped
  nan_loss = lambda p: jnp.where(jnp.all(flat(p) == flat(params)), 1.0, jnp.nan)  # noqa: E731
  out, state = tx.update(g, tx.init(params), params, batch=batch, value_fn=nan_loss)
  assert float(state.damping) > 1e-3 and np.isfinite(float(state.reduction_ratio))
  # A step that does not lower the loss is rejected (a zero update) unless asked otherwise.
  assert np.all(np.asarray(flat(out)) == 0)
  keep = gradest.scale_by_natural_gradient(
    linear, "gaussian", damping=1e-3, adapt_damping=True, reject_steps=False
  )
  out, _ = keep.update(g, keep.init(params), params, batch=batch, value_fn=nan_loss)
  assert np.all(np.isfinite(np.asarray(flat(out)))) and np.any(np.asarray(flat(out)) != 0)


# --------------------------------------------------------------------------------------
# Flax.
# --------------------------------------------------------------------------------------


class LinenMLP(nn.Module):
  @nn.compact
  def __call__(self, x):
    return nn.Dense(3)(jnp.tanh(nn.Dense(8)(x)))


class NnxMLP(nnx.Module):
  def __init__(self, rngs):
    self.hidden = nnx.Linear(5, 8, rngs=rngs)
    self.out = nnx.Linear(8, 3, rngs=rngs)

  def __call__(self, x):
    return self.out(jnp.tanh(self.hidden(x)))


@pytest.mark.parametrize("which", ["linen", "nnx"])
def test_flax_training(which):
  _, batch = logistic_problem()
  if which == "linen":
    model = LinenMLP()
    params = model.init(jax.random.key(0), batch[0])
    apply_fn = model.apply
  else:
    graphdef, params = nnx.split(NnxMLP(nnx.Rngs(0)))
    apply_fn = lambda state, x: nnx.merge(graphdef, state)(x)  # noqa: E731
  opt = gradest.natural_gradient(0.5, apply_fn, "categorical", damping=1e-2, cg_maxiter=10)
  loss = lambda p: nll(apply_fn, p, batch)  # noqa: E731

  @jax.jit
  def step(params, state):
    updates, state = opt.update(jax.grad(loss)(params), state, params, batch=batch)
    return optax.apply_updates(params, updates), state

  state = opt.init(params)
  start = float(loss(params))
  for _ in range(5):
    params, state = step(params, state)
  assert float(loss(params)) < 0.8 * start
  if which == "nnx":
    model = nnx.merge(graphdef, params)
    assert model(batch[0]).shape == (32, 3)


# --------------------------------------------------------------------------------------
# Bad input.
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
  "kwargs, error, match",
  [
    (dict(damping=-1.0), ValueError, "damping must be a finite number >= 0"),
    (dict(cg_maxiter=0), ValueError, "cg_maxiter must be >= 1"),
    (dict(cg_maxiter=2.5), TypeError, "cg_maxiter must be a Python int"),
    (dict(cg_tol=0.0), ValueError, "cg_tol"),
    (dict(kind="gauss_newton"), ValueError, "kind must be one of"),
    (dict(likelihood="poisson"), ValueError, "likelihood must be one of"),
    (dict(adapt_damping=True, damping_factor=1.0), ValueError, "damping_factor"),
  ],
)
def test_bad_construction(kwargs, error, match):
  kwargs = dict(kwargs)
  likelihood = kwargs.pop("likelihood", "gaussian")
  with pytest.raises(error, match=match):
    gradest.scale_by_natural_gradient(linear, likelihood, **kwargs)


def test_bad_construction_of_the_other_transforms():
  with pytest.raises(ValueError, match="max_kl"):
    gradest.scale_by_kl_trust_region(linear, "gaussian", max_kl=0.0)
  with pytest.raises(ValueError, match="damping"):
    gradest.scale_by_kl_trust_region(linear, "gaussian", damping=-0.1)
  with pytest.raises(ValueError, match="decay must be in"):
    gradest.scale_by_fisher_diagonal(linear, "gaussian", decay=1.0)
  with pytest.raises(ValueError, match="kind must be one of"):
    gradest.scale_by_fisher_diagonal(linear, "gaussian", kind="exact")
  with pytest.raises(ValueError, match="damping"):
    gradest.scale_by_fisher_diagonal(linear, "gaussian", damping=-1.0)


def test_bad_update_arguments():
  params, batch = linear_problem()
  g = jax.grad(gaussian_loss)(params, batch)
  tx = gradest.scale_by_natural_gradient(linear, "gaussian")
  state = tx.init(params)
  with pytest.raises(TypeError, match="needs the current batch"):
    tx.update(g, state, params)
  with pytest.raises(ValueError, match="needs the current parameters"):
    tx.update(g, state, batch=batch)
  with pytest.raises(ValueError, match="leaf shapes of params"):
    tx.update(dict(g, w=jnp.zeros((D, 3))), state, params, batch=batch)
  with pytest.raises(ValueError, match="leading axis"):
    bad = (batch[0], batch[1][:-1])
    gradest.scale_by_natural_gradient(linear, "gaussian", kind="empirical").update(
      g, state, params, batch=bad
    )
  mc = gradest.scale_by_natural_gradient(linear, "gaussian", kind="monte_carlo")
  with pytest.raises(TypeError, match="needs key="):
    mc.update(g, mc.init(params), params, batch=batch)
  adapt = gradest.scale_by_natural_gradient(linear, "gaussian", adapt_damping=True)
  with pytest.raises(TypeError, match="needs value_fn="):
    adapt.update(g, adapt.init(params), params, batch=batch)
  diag = gradest.scale_by_fisher_diagonal(linear, "gaussian")
  with pytest.raises(TypeError, match="needs key="):
    diag.update(g, diag.init(params), params, batch=batch)
  tr = gradest.scale_by_kl_trust_region(linear, "gaussian")
  with pytest.raises(TypeError, match="needs the current batch"):
    tr.update(g, tr.init(params), params)


def test_levenberg_marquardt_rule_in_every_case():
  # The rule natural_gradient and K-FAC share: (actual, predicted) -> (damping, ratio).
  from gradest._src.natural_gradient import levenberg_marquardt

  def rule(actual, predicted):
    lam, ratio = levenberg_marquardt(
      jnp.float32(1.0), jnp.float32(actual), jnp.float32(predicted), 2.0, 0.1, 10.0
    )
    return float(lam), float(ratio)

  assert rule(-0.9, -1.0) == (0.5, pytest.approx(0.9))  # good fit: damping down
  assert rule(-0.1, -1.0) == (2.0, pytest.approx(0.1))  # poor fit: damping up
  assert rule(-0.5, -1.0) == (1.0, pytest.approx(0.5))  # in between: kept
  assert rule(0.3, 1.0) == (2.0, 0.0)  # the model predicts an increase: poor fit
  assert rule(0.0, 0.0) == (1.0, 0.5)  # nothing predicted (zero gradient): kept
  lam, ratio = rule(float("nan"), -1.0)  # trial loss not finite: damping up
  assert lam == 2.0 and ratio == float(np.finfo(np.float32).min)
  assert rule(-1.0, -1e-30)[0] == 0.5 and rule(5.0, -1.0)[0] == 2.0
  big, _ = levenberg_marquardt(
    jnp.float32(8.0), jnp.float32(1.0), jnp.float32(-1.0), 2.0, 0.1, 10.0
  )
  assert float(big) == 10.0  # clipped to max_damping
