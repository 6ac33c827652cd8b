import jax.numpy as jnp
import numpy as np
import pytest

import gradest
from gradest.distributions import Gamma, Normal

from .helpers import assert_smaller_variance, assert_unbiased
from .problems import SEED_THETA, seed_dist, seed_grad


def test_seed_example(key):
  est = gradest.measure_valued_grad(jnp.square, seed_dist, SEED_THETA, key, 20000)
  assert_unbiased(est.per_sample, seed_grad(SEED_THETA))


def test_non_differentiable_cost(key):
  """E[1{x > 0}] = Phi(mu / sigma): d/dmu = phi(mu / sigma) / sigma."""
  mu, sigma = 0.4, 1.3
  est = gradest.measure_valued_grad(
    lambda x: (x > 0).astype(jnp.float32),
    lambda p: Normal(p[0], p[1]),
    jnp.array([mu, sigma]),
    key,
    20000,
  )
  phi = np.exp(-0.5 * (mu / sigma) ** 2) / np.sqrt(2 * np.pi)
  assert_unbiased(est.per_sample, jnp.array([phi / sigma, -phi * mu / sigma**2]))


def test_coupling_reduces_variance_near_the_minimum(key):
  """For (x - k)^2 with mu near k, coupling cancels the even part of the two arms.

  (Coupling is not better everywhere: far from k the coupled mean-arm variance is
  16 (mu - k)^2 Var(W) / (2 pi), twice the uncoupled cross term.)
  """
  f = lambda x: jnp.sum((x - 0.4) ** 2)  # noqa: E731
  dist_fn = lambda p: Normal(p["mu"], p["sigma"])  # noqa: E731
  params = {"mu": jnp.array([0.5, 0.3]), "sigma": jnp.array([1.0, 0.5])}
  coupled = gradest.measure_valued_grad(f, dist_fn, params, key, 20000)
  uncoupled = gradest.measure_valued_grad(f, dist_fn, params, key, 20000, coupling=False)
  exact = {"mu": 2 * (params["mu"] - 0.4), "sigma": 2 * params["sigma"]}
  assert_unbiased(coupled.per_sample, exact)
  assert_unbiased(uncoupled.per_sample, exact)
  assert_smaller_variance(coupled.per_sample, uncoupled.per_sample)


def test_chunking_does_not_change_the_result(key):
  f = lambda x: jnp.sum(jnp.sin(x) * jnp.arange(1.0, 6.0))  # noqa: E731
  dist_fn = lambda m: Normal(m, 1.0)  # noqa: E731
  ref = gradest.measure_valued_grad(f, dist_fn, jnp.zeros(5), key, 7)
  for chunk in (1, 2, 5, 100):
    got = gradest.measure_valued_grad(f, dist_fn, jnp.zeros(5), key, 7, coordinate_chunk_size=chunk)
    np.testing.assert_allclose(got.per_sample, ref.per_sample, rtol=1e-6)


def test_matrix_event_shape(key):
  dist_fn = lambda m: Normal(m, 1.0)  # noqa: E731
  est = gradest.measure_valued_grad(lambda x: jnp.sum(x**2), dist_fn, jnp.ones((2, 3)), key, 4000)
  assert est.per_sample.shape == (4000, 2, 3)
  assert_unbiased(est.per_sample, 2 * jnp.ones((2, 3)))


def test_rejects_non_gaussian(key):
  with pytest.raises(TypeError, match="Gaussian"):
    gradest.measure_valued_grad(jnp.sum, lambda a: Gamma(a, 1.0), jnp.ones(2), key, 4)


def test_bad_chunk_size(key):
  with pytest.raises(ValueError, match="coordinate_chunk_size"):
    gradest.measure_valued_grad(
      jnp.sum, lambda m: Normal(m, 1.0), jnp.ones(2), key, 4, coordinate_chunk_size=0
    )
