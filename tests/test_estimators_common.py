"""The continuous estimators on a Gaussian, in settings the registry contract tests do not
cover (tests/test_contract.py checks jit, vmap, determinism, bad inputs for every entry):
non-default options, builtin costs, foreign Gaussians, common random numbers."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradest
from gradest.distributions import Normal

from .helpers import assert_unbiased
from .problems import PARAMS, cos_cost, cos_cost_grad, gaussian

ESTIMATORS = {
  "score_function": gradest.score_function_grad,
  "score_function_loo": functools.partial(gradest.score_function_grad, baseline="leave_one_out"),
  "pathwise": gradest.pathwise_grad,
  "measure_valued": gradest.measure_valued_grad,
  "measure_valued_uncoupled": functools.partial(gradest.measure_valued_grad, coupling=False),
}


@pytest.mark.parametrize("name", ["measure_valued_uncoupled"])  # the others: test_contract.py
def test_unbiased_on_nested_dict_params(name, key):
  n = 20000 if name.startswith("score") else 4000
  est = ESTIMATORS[name](cos_cost, gaussian, PARAMS, key, n)
  assert jax.tree.structure(est.grad) == jax.tree.structure(PARAMS)
  for leaf, p in zip(jax.tree.leaves(est.per_sample), jax.tree.leaves(PARAMS), strict=True):
    assert leaf.shape == (n,) + p.shape
  assert est.values.shape == (n,)
  assert_unbiased(est.per_sample, cos_cost_grad(PARAMS))
  np.testing.assert_allclose(
    jax.tree.leaves(est.grad), [x.mean(0) for x in jax.tree.leaves(est.per_sample)], rtol=1e-5
  )


@pytest.mark.parametrize("name", ESTIMATORS)
def test_same_key_gives_same_samples_across_estimators(name, key):
  est = ESTIMATORS[name](cos_cost, gaussian, PARAMS, key, 8)
  ref = gradest.score_function_grad(cos_cost, gaussian, PARAMS, key, 8)
  np.testing.assert_allclose(est.values, ref.values, rtol=1e-6)


@pytest.mark.parametrize("cost", [np.sum, sum], ids=["np.sum", "builtin_sum"])
@pytest.mark.parametrize("name", ESTIMATORS)
def test_numpy_and_builtin_costs(name, cost, key):
  """Any callable cost, static under jax.jit and called twice (np.sum cannot be weakly
  referenced, which jax.eval_shape and jax.jit need of the function they are given)."""
  fn = ESTIMATORS[name]
  jitted = jax.jit(lambda f, p, k: fn(f, gaussian, p, k, 8), static_argnums=0)
  for k in (key, jax.random.key(1)):
    got, want = jitted(cost, PARAMS, k), jitted(jnp.sum, PARAMS, k)
    for x, y in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
      np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-6)
  eager = fn(cost, gaussian, PARAMS, key, 8)
  assert np.all(np.isfinite(eager.values))


@pytest.mark.parametrize("name", ESTIMATORS)
def test_foreign_gaussians(name, key):
  distrax = pytest.importorskip("distrax")
  numpyro_dist = pytest.importorskip("numpyro.distributions")
  ref = ESTIMATORS[name](cos_cost, gaussian, PARAMS, key, 32).grad
  for family in (distrax.Normal, numpyro_dist.Normal):
    dist_fn = lambda p, fam=family: fam(p["loc"]["mu"], jnp.exp(p["log_sigma"]))  # noqa: E731
    got = ESTIMATORS[name](cos_cost, dist_fn, PARAMS, key, 32).grad
    np.testing.assert_allclose(got["log_sigma"], ref["log_sigma"], rtol=1e-4, atol=1e-6)


def test_scalar_params_and_float_event(key):
  est = gradest.pathwise_grad(jnp.square, lambda m: Normal(m, 1.0), 0.5, key, 10)
  assert est.grad.shape == () and est.per_sample.shape == (10,)
