import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradest
from gradest._src.measure_valued import rayleigh
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


# A smooth cost whose delta-method expansion leaves a small third-order remainder.
def cv_cost(x):
  return jnp.sum(jnp.sin(x) + 0.1 * x**3)


CV_PARAMS = {"mu": jnp.array([0.2, -0.5]), "sigma": jnp.array([0.3, 0.6])}


def cv_dist(p):
  return Normal(p["mu"], p["sigma"])


def cv_cost_grad(p):
  """d/dmu and d/dsigma of E[sin x + 0.1 x^3] = sin(mu) e^{-s^2/2} + 0.1 (mu^3 + 3 mu s^2)."""
  mu, s = p["mu"], p["sigma"]
  damp = jnp.exp(-0.5 * s**2)
  return {
    "mu": jnp.cos(mu) * damp + 0.3 * (mu**2 + s**2),
    "sigma": -s * jnp.sin(mu) * damp + 0.6 * mu * s,
  }


@pytest.mark.parametrize("coefficient", [None, 1.0, "optimal"])
def test_control_variate_keeps_the_estimate_unbiased(coefficient, key):
  kwargs = {} if coefficient is None else {"control_variate": gradest.delta_method(cv_cost)}
  est = gradest.measure_valued_grad(
    cv_cost, cv_dist, CV_PARAMS, key, 4000, cv_coefficient=coefficient or 1.0, **kwargs
  )
  assert jax.tree.structure(est.grad) == jax.tree.structure(CV_PARAMS)
  assert est.values.shape == (4000,)
  assert_unbiased(est.per_sample, cv_cost_grad(CV_PARAMS))


def test_delta_method_lowers_the_variance(key):
  """f - h is the Taylor remainder of f at mu, of order sigma^3: its weak derivatives are
  far smaller than f's. Measured ratios Var(plain) / Var(delta) are 60 to 500 here."""
  plain = gradest.measure_valued_grad(cv_cost, cv_dist, CV_PARAMS, key, 4000)
  est = gradest.measure_valued_grad(
    cv_cost, cv_dist, CV_PARAMS, key, 4000, control_variate=gradest.delta_method(cv_cost)
  )
  assert_smaller_variance(est.per_sample, plain.per_sample)
  for a, b in zip(jax.tree.leaves(plain.variance()), jax.tree.leaves(est.variance()), strict=True):
    assert np.all(np.asarray(a) / np.asarray(b) > 10.0), (a, b)


@pytest.mark.parametrize("coefficient", [0.7, "optimal"])
def test_control_variate_mean_only_mode_matches_per_sample(coefficient, key):
  cv = gradest.delta_method(cv_cost)
  run = jax.jit(
    lambda p, k, per_sample: gradest.measure_valued_grad(
      cv_cost,
      cv_dist,
      p,
      k,
      64,
      control_variate=cv,
      cv_coefficient=coefficient,
      return_per_sample=per_sample,
    ),
    static_argnums=2,
  )
  full, mean_only = run(CV_PARAMS, key, True), run(CV_PARAMS, key, False)
  assert mean_only.per_sample is None
  for a, b in zip(jax.tree.leaves(mean_only.grad), jax.tree.leaves(full.grad), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(mean_only.values, full.values)


def test_control_variate_coefficient_is_checked(key):
  cv = gradest.delta_method(cv_cost)
  with pytest.raises(ValueError, match="cv_coefficient"):
    gradest.measure_valued_grad(
      cv_cost, cv_dist, CV_PARAMS, key, 4, control_variate=cv, cv_coefficient="best"
    )
  with pytest.raises(ValueError, match="cv_coefficient"):
    gradest.measure_valued_grad(
      cv_cost, cv_dist, CV_PARAMS, key, 4, control_variate=cv, cv_coefficient=jnp.ones(2)
    )


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


# jax.random.uniform(jax.random.key(4), (2**20,)) is exactly 0 at this index.
ZERO_KEY, ZERO_SHAPE, ZERO_INDEX = 4, (1 << 20,), 286683


@pytest.mark.numerics
def test_rayleigh_is_finite_where_the_uniform_is_zero():
  key = jax.random.key(ZERO_KEY)
  assert float(jax.random.uniform(key, ZERO_SHAPE)[ZERO_INDEX]) == 0.0, "pick another key"
  assert np.isinf(jax.random.rayleigh(key, 1.0, ZERO_SHAPE)[ZERO_INDEX])
  w = np.asarray(rayleigh(key, ZERO_SHAPE, jnp.float32))
  assert np.all(np.isfinite(w))
  np.testing.assert_allclose(w[ZERO_INDEX], np.sqrt(-2.0 * np.log(np.finfo(np.float32).tiny)))
  others = np.arange(w.size) != ZERO_INDEX
  np.testing.assert_array_equal(
    w[others], np.asarray(jax.random.rayleigh(key, 1.0, ZERO_SHAPE))[others]
  )


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16])
@pytest.mark.numerics
def test_rayleigh_in_half_precision_is_finite_and_returned_in_its_dtype(dtype):
  w = rayleigh(jax.random.key(ZERO_KEY), ZERO_SHAPE, dtype)
  assert w.dtype == dtype
  assert bool(jnp.all(jnp.isfinite(w)))


@pytest.mark.numerics
def test_a_zero_uniform_in_a_replacement_gives_finite_per_sample_gradients():
  """The draw that made optax's weighted-linear test infinite: key 1, sample 54202.

  With ``rng = key(1)`` the Rayleigh uniform of sample 54202, coordinate 1, is exactly 0;
  ``jax.random.rayleigh`` turned it into ``inf``, and the per-sample gradient with it.
  """
  n, sample, coordinate = 54203, 54202, 1
  sample_key = jax.random.split(jax.random.key(1), n)[sample]
  k_pos = jax.random.split(jax.random.fold_in(sample_key, 1), 4)[0]  # _replacements' stream
  assert float(jax.random.uniform(k_pos, (3,))[coordinate]) == 0.0, "pick another key"
  weights = jnp.array([4.0, 2.0, 3.0])
  params = (jnp.array([1.0, 2.0, 3.0]), jnp.array([-1.0, 0.3, -2.0]))
  est = jax.jit(
    lambda p, k: gradest.measure_valued_grad(
      lambda x: jnp.sum(weights * x), lambda q: Normal(q[0], jnp.exp(q[1])), p, k, n
    )
  )(params, jax.random.key(1))
  for leaf in jax.tree.leaves(est.per_sample):
    assert np.all(np.isfinite(leaf))
  assert_unbiased(est.per_sample, (weights, jnp.zeros(3)))
