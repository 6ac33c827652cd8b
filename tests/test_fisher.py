"""Fisher-vector products against materialized matrices, and the estimators' unbiasedness.

The reference matrices are built explicitly: Jacobians by ``jax.jacfwd`` over the raveled
parameters, the output-space Fisher of each likelihood written out by hand, per-example
gradients by ``jax.jacfwd`` of the per-example log-likelihoods.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.flatten_util import ravel_pytree
from jax.test_util import check_grads

from gradest import fisher
from gradest.distributions import Bernoulli, Categorical, Normal, RelaxedBernoulli

from .helpers import assert_smaller_variance, assert_unbiased

N, D_IN, HIDDEN = 6, 3, 5
RTOL = 2e-4

# (likelihood, output size, targets maker)
CASES = {
  "categorical": (3, lambda k, n: jax.random.randint(k, (n,), 0, 3)),
  "bernoulli": (3, lambda k, n: jax.random.bernoulli(k, 0.4, (n, 3)).astype(jnp.float32)),
  "gaussian": (2, lambda k, n: jax.random.normal(k, (n, 2))),
  "gaussian_learned_scale": (4, lambda k, n: jax.random.normal(k, (n, 2))),
}


def mlp(params, x):
  h = jnp.tanh(x @ params["w1"] + params["b1"])
  return h @ params["w2"] + params["b2"]


def init(key, d_out):
  k1, k2, k3 = jax.random.split(key, 3)
  return {
    "w1": jax.random.normal(k1, (D_IN, HIDDEN)),
    "b1": 0.1 * jax.random.normal(k3, (HIDDEN,)),
    "w2": jax.random.normal(k2, (HIDDEN, d_out)) / np.sqrt(HIDDEN),
    "b2": jnp.zeros(d_out),
  }


@functools.cache
def problem(name):
  d_out, make_targets = CASES[name]
  k1, k2, k3 = jax.random.split(jax.random.key(1), 3)
  params = init(k1, d_out)
  x = jax.random.normal(k2, (N, D_IN))
  return params, (x, make_targets(k3, N))


def output_fisher(name, f):
  """The explicit output-space Fisher of one example, a (d_out, d_out) matrix."""
  if name == "categorical":
    p = jax.nn.softmax(f)
    return jnp.diag(p) - jnp.outer(p, p)
  if name == "bernoulli":
    p = jax.nn.sigmoid(f)
    return jnp.diag(p * (1 - p))
  if name == "gaussian":
    return jnp.eye(f.shape[0])
  sigma = jnp.exp(f[2:])
  return jnp.diag(jnp.concatenate([1 / sigma**2, 2.0 * jnp.ones(2)]))


def jacobians(apply_fn, params, x):
  flat, unravel = ravel_pytree(params)
  return jax.jacfwd(lambda w: apply_fn(unravel(w), x))(flat), flat, unravel  # (N, d_out, P)


@functools.partial(jax.jit, static_argnums=(0, 1))
def exact_matrix(name, apply_fn, params, x):
  jac, flat, _ = jacobians(apply_fn, params, x)
  hs = jax.vmap(functools.partial(output_fisher, name))(apply_fn(params, x))
  return jnp.einsum("nop,noq,nqr->pr", jac, hs, jac) / x.shape[0], flat


@functools.partial(jax.jit, static_argnums=0)
def per_example_grads(name, params, x, y):
  flat, unravel = ravel_pytree(params)
  lik = fisher.get_likelihood(name)

  def logliks(w):
    return jax.vmap(lik.log_likelihood)(mlp(unravel(w), x), y)

  return jax.jacfwd(logliks)(flat)  # (N, P)


def random_like(params, key):
  flat, unravel = ravel_pytree(params)
  return unravel(jax.random.normal(key, flat.shape))


def flat(tree):
  return ravel_pytree(tree)[0]


def assert_close(a, b, rtol=RTOL):
  a, b = np.asarray(a), np.asarray(b)
  np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * np.max(np.abs(b)))


@pytest.mark.parametrize("name", list(CASES))
def test_exact_matches_materialized(name):
  params, (x, y) = problem(name)
  f_mat, _ = exact_matrix(name, mlp, params, x)
  vs = jax.vmap(lambda k: random_like(params, k))(jax.random.split(jax.random.key(2), 3))

  @jax.jit
  def products(params, x, vs):
    fvp = fisher.fisher_vector_product(mlp, params, (x, None), likelihood=name)
    return jax.vmap(fvp)(vs)

  out = products(params, x, vs)
  expected = jax.vmap(lambda v: f_mat @ flat(v))(vs)
  assert_close(jax.vmap(flat)(out), expected)


@pytest.mark.parametrize("name", ["categorical", "gaussian_learned_scale"])
def test_empirical_matches_materialized(name):
  params, (x, y) = problem(name)
  g = per_example_grads(name, params, x, y)
  f_emp = g.T @ g / N
  v = random_like(params, jax.random.key(3))
  fvp = jax.jit(
    lambda p, b, v: fisher.fisher_vector_product(mlp, p, b, likelihood=name, kind="empirical")(v)
  )
  assert_close(flat(fvp(params, (x, y), v)), f_emp @ flat(v))
  # The empirical Fisher is a different matrix from the Fisher.
  f_mat, _ = exact_matrix(name, mlp, params, x)
  assert np.linalg.norm(f_emp - f_mat) > 0.1 * np.linalg.norm(f_mat)


@pytest.mark.parametrize("name", ["categorical", "bernoulli", "gaussian_learned_scale"])
def test_monte_carlo_is_unbiased(name):
  params, (x, _) = problem(name)
  f_mat, _ = exact_matrix(name, mlp, params, x)
  v = random_like(params, jax.random.key(4))

  @jax.jit
  def draws(keys):
    def one(k):
      fvp = fisher.fisher_vector_product(
        mlp, params, (x, None), likelihood=name, kind="monte_carlo", key=k
      )
      return flat(fvp(v))

    return jax.vmap(one)(keys)

  per_sample = draws(jax.random.split(jax.random.key(5), 4000))
  assert_unbiased(per_sample, f_mat @ flat(v))


def test_monte_carlo_more_samples_same_mean_lower_variance():
  params, (x, _) = problem("categorical")
  v = random_like(params, jax.random.key(6))

  def draws(s):
    def one(k):
      return flat(
        fisher.fisher_vector_product(
          mlp,
          params,
          (x, None),
          likelihood="categorical",
          kind="monte_carlo",
          key=k,
          num_samples=s,
        )(v)
      )

    return jax.vmap(one)(jax.random.split(jax.random.key(7), 1000))

  one, eight = jax.jit(lambda: (draws(1), draws(8)))()
  assert_unbiased(eight, exact_matrix("categorical", mlp, params, x)[0] @ flat(v))
  # Eight sampled targets per example: the variance of every coordinate is lower (1/8).
  assert_smaller_variance(eight, one)


def test_ggn_equals_exact_fisher_for_nll_in_natural_parameters():
  params, (x, y) = problem("categorical")
  loss = lambda f, t: -fisher.get_likelihood("categorical").log_likelihood(f, t)  # noqa: E731
  vs = jax.vmap(lambda k: random_like(params, k))(jax.random.split(jax.random.key(8), 2))

  @jax.jit
  def products(vs):
    ggn = fisher.ggn_vector_product(mlp, loss, params, (x, y))
    fvp = fisher.fisher_vector_product(mlp, params, (x, y), likelihood="categorical")
    return jax.vmap(ggn)(vs), jax.vmap(fvp)(vs)

  a, b = products(vs)
  assert_close(jax.vmap(flat)(a), jax.vmap(flat)(b))


def test_ggn_matches_materialized_for_a_convex_loss():
  params, (x, y) = problem("gaussian")

  def loss(f, t):  # log-cosh: convex, with a non-constant Hessian
    return jnp.sum(jnp.logaddexp(f - t, t - f))

  jac, _, _ = jacobians(mlp, params, x)
  hs = jax.vmap(jax.hessian(loss))(mlp(params, x), y)
  g_mat = jnp.einsum("nop,noq,nqr->pr", jac, hs, jac) / N
  v = random_like(params, jax.random.key(9))
  out = jax.jit(lambda p, b, v: fisher.ggn_vector_product(mlp, loss, p, b)(v))(params, (x, y), v)
  assert_close(flat(out), g_mat @ flat(v))


def test_products_are_differentiable_in_params():
  params, (x, y) = problem("bernoulli")
  v = random_like(params, jax.random.key(10))

  def quad(p):
    fvp = fisher.fisher_vector_product(mlp, p, (x, None), likelihood="bernoulli")
    return jnp.vdot(flat(v), flat(fvp(v)))

  check_grads(quad, (params,), order=1, modes=["rev"], atol=1e-2, rtol=1e-2)


def test_likelihood_from_distribution_matches_builtin():
  lik = fisher.likelihood_from_distribution("cat", lambda f: Categorical(f))
  params, (x, y) = problem("categorical")
  v = random_like(params, jax.random.key(11))
  a = fisher.fisher_vector_product(mlp, params, (x, y), likelihood=lik)(v)
  b = fisher.fisher_vector_product(mlp, params, (x, y), likelihood="categorical")(v)
  assert_close(flat(a), flat(b))
  sd2 = fisher.gaussian_likelihood(scale=2.0)
  np.testing.assert_allclose(sd2.output_fisher_vector_product(jnp.zeros(2), jnp.ones(2)), 0.25)


# --------------------------------------------------------------------------------------
# Distribution Fisher against closed forms.
# --------------------------------------------------------------------------------------


def test_distribution_fisher_normal_mu_log_sigma():
  sigma = jnp.array([0.5, 1.0, 3.0])
  params = {"mu": jnp.array([0.3, -1.0, 2.0]), "log_sigma": jnp.log(sigma)}
  dist_fn = lambda p: Normal(p["mu"], jnp.exp(p["log_sigma"]))  # noqa: E731
  v = {"mu": jnp.array([1.0, -2.0, 0.5]), "log_sigma": jnp.array([0.3, 1.0, -1.0])}
  out = jax.jit(lambda p, v: fisher.distribution_fisher_vector_product(dist_fn, p)(v))(params, v)
  assert_close(out["mu"], v["mu"] / sigma**2)
  assert_close(out["log_sigma"], 2.0 * v["log_sigma"])


def test_distribution_fisher_bernoulli_and_categorical():
  logits = np.array([[-2.0, 0.0, 1.5], [3.0, -1.0, 0.5]], np.float32)
  v = np.array([1.0, -0.5, 2.0], np.float32)

  @jax.jit
  @jax.vmap  # over a batch of parameters
  def products(lg):
    bern = fisher.distribution_fisher_vector_product(Bernoulli, lg)(v)
    return bern, fisher.distribution_fisher_vector_product(Categorical, lg)(v)

  bern, cat = products(logits)
  for lg, b, c in zip(logits, bern, cat, strict=True):
    p = 1 / (1 + np.exp(-lg))
    assert_close(b, p * (1 - p) * v)
    q = np.exp(lg) / np.exp(lg).sum()
    assert_close(c, (np.diag(q) - np.outer(q, q)) @ v)


def test_distribution_fisher_score_function_is_unbiased():
  sigma = jnp.array([0.5, 2.0])
  params = {"mu": jnp.zeros(2), "log_sigma": jnp.log(sigma)}
  dist_fn = lambda p: Normal(p["mu"], jnp.exp(p["log_sigma"]))  # noqa: E731
  v = {"mu": jnp.array([1.0, -1.0]), "log_sigma": jnp.array([0.5, 1.0])}

  def one(k):
    fvp = fisher.distribution_fisher_vector_product(dist_fn, params, key=k, num_samples=1)
    return fvp(v)

  per_sample = jax.jit(jax.vmap(one))(jax.random.split(jax.random.key(12), 20000))
  assert_unbiased(per_sample, {"mu": v["mu"] / sigma**2, "log_sigma": 2.0 * v["log_sigma"]})


def test_distribution_fisher_without_closed_form_needs_a_key():
  with pytest.raises(TypeError, match="key= and num_samples="):
    fisher.distribution_fisher_vector_product(lambda lg: RelaxedBernoulli(lg, 0.5), jnp.zeros(2))
  fvp = fisher.distribution_fisher_vector_product(
    lambda lg: RelaxedBernoulli(lg, 0.5), jnp.zeros(2), key=jax.random.key(0), num_samples=8
  )
  assert np.all(np.isfinite(fvp(jnp.ones(2))))
  with pytest.raises(TypeError, match="both key= and num_samples="):
    fisher.distribution_fisher_vector_product(Bernoulli, jnp.zeros(2), num_samples=4)


# --------------------------------------------------------------------------------------
# Diagonals.
# --------------------------------------------------------------------------------------


def test_fisher_diagonal_sampled_labels_is_unbiased():
  params, (x, _) = problem("categorical")
  f_mat, _ = exact_matrix("categorical", mlp, params, x)

  @jax.jit
  def draws(keys):
    def one(k):
      d = fisher.fisher_diagonal(mlp, params, (x, None), likelihood="categorical", key=k)
      return flat(d)

    return jax.vmap(one)(keys)

  assert_unbiased(draws(jax.random.split(jax.random.key(13), 4000)), jnp.diag(f_mat))


def test_fisher_diagonal_empirical_is_exact():
  params, (x, y) = problem("bernoulli")
  g = per_example_grads("bernoulli", params, x, y)
  d = jax.jit(
    lambda p, b: fisher.fisher_diagonal(mlp, p, b, likelihood="bernoulli", kind="empirical")
  )(params, (x, y))
  assert_close(flat(d), jnp.mean(g**2, axis=0))


# --------------------------------------------------------------------------------------
# Flax models.
# --------------------------------------------------------------------------------------


class LinenMLP(nn.Module):
  @nn.compact
  def __call__(self, x):
    return nn.Dense(3)(jnp.tanh(nn.Dense(HIDDEN)(x)))


class NnxMLP(nnx.Module):
  def __init__(self, rngs):
    self.hidden = nnx.Linear(D_IN, HIDDEN, rngs=rngs)
    self.out = nnx.Linear(HIDDEN, 3, rngs=rngs)

  def __call__(self, x):
    return self.out(jnp.tanh(self.hidden(x)))


def flax_models():
  _, (x, _) = problem("categorical")
  linen = LinenMLP()
  variables = linen.init(jax.random.key(0), x)
  graphdef, state = nnx.split(NnxMLP(nnx.Rngs(0)))
  nnx_apply = lambda s, xs: nnx.merge(graphdef, s)(xs)  # noqa: E731
  return {"linen": (linen.apply, variables), "nnx": (nnx_apply, state)}


@pytest.mark.parametrize("which", ["linen", "nnx"])
def test_flax_models(which):
  apply_fn, params = flax_models()[which]
  _, (x, y) = problem("categorical")
  f_mat, _ = exact_matrix("categorical", apply_fn, params, x)
  v = random_like(params, jax.random.key(14))

  @jax.jit
  def product(params, v):
    return fisher.fisher_vector_product(apply_fn, params, (x, y), likelihood="categorical")(v)

  out = product(params, v)
  assert jax.tree.structure(out) == jax.tree.structure(params)
  assert_close(flat(out), f_mat @ flat(v))


# --------------------------------------------------------------------------------------
# Bad input.
# --------------------------------------------------------------------------------------


def fvp_call(**overrides):
  params, batch = problem("categorical")
  kwargs = dict(likelihood="categorical", kind="exact")
  kwargs.update(overrides)
  b = kwargs.pop("batch", batch)
  return fisher.fisher_vector_product(mlp, params, b, **kwargs)


@pytest.mark.parametrize(
  "overrides, error, match",
  [
    (dict(likelihood="poisson"), ValueError, "likelihood must be one of"),
    (dict(kind="hessian"), ValueError, "kind must be one of"),
    (dict(batch=None), TypeError, "needs batch="),
    (dict(batch=jnp.zeros((N, D_IN))), TypeError, r"tuple \(inputs, targets\)"),
    (dict(kind="empirical", batch=(jnp.zeros((N, D_IN)), None)), ValueError, "observed targets"),
    (dict(kind="monte_carlo"), TypeError, "needs key="),
    (dict(kind="monte_carlo", key=jax.random.key(0), num_samples=0), ValueError, "num_samples"),
    (
      dict(kind="empirical", batch=(jnp.zeros((N, D_IN)), jnp.zeros(N - 1, int))),
      ValueError,
      "leading axis",
    ),
    (
      dict(kind="empirical", batch=(jnp.zeros((N, D_IN)), jnp.zeros((N, 3), int))),
      ValueError,
      "integer targets of shape",
    ),
    (
      dict(kind="empirical", batch=(jnp.zeros((N, D_IN)), jnp.zeros(N))),
      TypeError,
      "integer class targets",
    ),
  ],
)
def test_bad_input(overrides, error, match):
  with pytest.raises(error, match=match):
    fvp_call(**overrides)


def test_bad_vector_and_diagonal_kind():
  fvp = fvp_call()
  params, batch = problem("categorical")
  with pytest.raises(ValueError, match="structure of params"):
    fvp({"w1": params["w1"]})
  bad = dict(params, w1=jnp.zeros((2, 2)))
  with pytest.raises(ValueError, match="leaf shapes of params"):
    fvp(bad)
  with pytest.raises(ValueError, match="kind must be one of"):
    fisher.fisher_diagonal(mlp, params, batch, likelihood="categorical", kind="exact")
  with pytest.raises(ValueError, match="scale must be > 0"):
    fisher.gaussian_likelihood(scale=0.0)
  with pytest.raises(ValueError, match=r"\[mean, log_scale\]"):
    fisher.fisher_vector_product(
      lambda p, x: x @ p, jnp.ones((D_IN, 3)), batch, likelihood="gaussian_learned_scale"
    )
  with pytest.raises(ValueError, match="loss_fn must map one example"):
    fisher.ggn_vector_product(mlp, lambda f, t: f, params, batch)


def test_fisher_diagonal_chunks_equal_one_vectorized_pass():
  params, (x, y) = problem("categorical")  # N = 6: chunks of 4 leave a padded remainder
  kw = dict(likelihood="categorical", key=jax.random.key(15), num_samples=2)

  @jax.jit
  def both(params):
    out = {}
    for kind in ("monte_carlo", "empirical"):
      whole = fisher.fisher_diagonal(mlp, params, (x, y), kind=kind, chunk_size=None, **kw)
      chunked = fisher.fisher_diagonal(mlp, params, (x, y), kind=kind, chunk_size=4, **kw)
      out[kind] = (whole, chunked)
    return out

  for whole, chunked in both(params).values():
    assert_close(flat(chunked), flat(whole), rtol=1e-5)
