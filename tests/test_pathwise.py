import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradest
from gradest.distributions import Bernoulli, Gamma, Normal

from .helpers import assert_smaller_variance, assert_unbiased, assert_variance
from .problems import SEED_THETA, seed_dist, seed_grad


def test_seed_example_unbiased_and_better_than_score_function(key):
  pw = gradest.pathwise_grad(jnp.square, seed_dist, SEED_THETA, key, 20000)
  sf = gradest.score_function_grad(jnp.square, seed_dist, SEED_THETA, key, 20000)
  assert_unbiased(pw.per_sample, seed_grad(SEED_THETA))
  assert_smaller_variance(pw.per_sample, sf.per_sample)


@pytest.mark.parametrize("k", [-2.0, 0.0, 3.0])
def test_exact_variance_of_quadratic_cost(k, key):
  """d/dmu (x - k)^2 = 2 (x - k): variance 4 sigma^2 whatever k."""
  sigma = 1.7
  est = gradest.pathwise_grad(lambda x: (x - k) ** 2, lambda m: Normal(m, sigma), 1.0, key, 20000)
  assert_unbiased(est.per_sample, 2 * (1.0 - k))
  assert_variance(est.per_sample, 4 * sigma**2)


def test_gamma_implicit_reparameterization(key):
  """E[x^2] = a (a + 1) / b^2 for x ~ Gamma(a, b)."""
  params = {"a": jnp.array([0.6, 3.0]), "b": jnp.array([2.0, 0.7])}
  est = gradest.pathwise_grad(
    lambda x: jnp.sum(x**2), lambda p: Gamma(p["a"], p["b"]), params, key, 40000
  )
  a, b = params["a"], params["b"]
  assert_unbiased(est.per_sample, {"a": (2 * a + 1) / b**2, "b": -2 * a * (a + 1) / b**3})


def test_delta_control_variate_with_pathwise(key):
  f = lambda x: jnp.sum(jnp.sin(x) + 0.1 * x**3)  # noqa: E731
  mu = jnp.array([0.2, -0.5])
  dist_fn = lambda m: Normal(m, 0.3)  # noqa: E731
  # d/dmu E[sin x + 0.1 x^3] = cos(mu) e^{-s^2/2} + 0.3 (mu^2 + s^2)
  exact = jnp.cos(mu) * jnp.exp(-0.045) + 0.3 * (mu**2 + 0.09)
  plain = gradest.pathwise_grad(f, dist_fn, mu, key, 20000)
  est = gradest.pathwise_grad(
    f, dist_fn, mu, key, 20000, control_variate=gradest.delta_method(f), cv_coefficient="optimal"
  )
  assert_unbiased(est.per_sample, exact)
  assert_smaller_variance(est.per_sample, plain.per_sample)


def test_rejects_discrete_distribution(key):
  with pytest.raises(TypeError, match="reparameterized"):
    gradest.pathwise_grad(jnp.sum, Bernoulli, jnp.zeros(3), key, 4)


def test_rejects_non_reparameterized_foreign(key):
  numpyro_dist = pytest.importorskip("numpyro.distributions")
  with pytest.raises(TypeError, match="reparameterized"):
    gradest.pathwise_grad(jnp.sum, numpyro_dist.BernoulliLogits, jnp.zeros(3), key, 4)


def test_grad_through_the_estimate(key):
  """The estimate is itself differentiable (e.g. for meta-learning)."""

  def first_grad(mu):
    return gradest.pathwise_grad(jnp.square, lambda m: Normal(m, 1.0), mu, key, 10).grad

  np.testing.assert_allclose(jax.grad(first_grad)(0.3), 2.0, rtol=1e-5)


def test_control_variate_mean_only_mode_matches_per_sample(key):
  f = lambda x: jnp.sum(jnp.sin(x) + 0.1 * x**3)  # noqa: E731
  dist_fn = lambda m: Normal(m, 0.3)  # noqa: E731
  cv = gradest.delta_method(f)
  mu = jnp.array([0.2, -0.5])
  full = gradest.pathwise_grad(f, dist_fn, mu, key, 200, control_variate=cv, cv_coefficient=0.7)
  mean_only = gradest.pathwise_grad(
    f, dist_fn, mu, key, 200, control_variate=cv, cv_coefficient=0.7, return_per_sample=False
  )
  assert mean_only.per_sample is None
  np.testing.assert_allclose(mean_only.grad, full.grad, rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(mean_only.values, full.values)
