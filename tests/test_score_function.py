import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradest
from gradest.distributions import Bernoulli, Categorical, Normal

from .helpers import assert_smaller_variance, assert_unbiased
from .problems import SEED_THETA, seed_dist, seed_grad

T = jnp.array([0.45, 0.1, 0.9, 0.499])


def bernoulli_cost(b):
  return jnp.sum((b - T) ** 2)


def enumerate_bernoulli_grad(logits):
  """Exact gradient by summing over all 2^D states."""
  states = jnp.array(list(itertools.product([0.0, 1.0], repeat=logits.shape[0])))

  def expectation(lg):
    return jnp.sum(jnp.exp(Bernoulli(lg).log_prob(states)) * jax.vmap(bernoulli_cost)(states))

  return jax.grad(expectation)(logits)


@pytest.mark.parametrize("baseline", [None, 0.5, "leave_one_out"])
def test_bernoulli_unbiased_against_enumeration(baseline, key):
  logits = jnp.array([0.3, -1.0, 2.0, 0.0])
  est = gradest.score_function_grad(
    bernoulli_cost, Bernoulli, logits, key, 20000, baseline=baseline
  )
  assert_unbiased(est.per_sample, enumerate_bernoulli_grad(logits))


def test_categorical_unbiased(key):
  logits = jnp.array([0.5, -1.0, 0.0, 2.0])
  table = jnp.array([1.0, -2.0, 0.5, 3.0])
  est = gradest.score_function_grad(lambda x: table[x], Categorical, logits, key, 20000)
  p = jax.nn.softmax(logits)
  assert_unbiased(est.per_sample, p * (table - jnp.sum(p * table)))


def test_baselines_reduce_variance_on_seed_example(key):
  n = 20000
  plain = gradest.score_function_grad(jnp.square, seed_dist, SEED_THETA, key, n)
  loo = gradest.score_function_grad(
    jnp.square, seed_dist, SEED_THETA, key, n, baseline="leave_one_out"
  )
  assert_unbiased(plain.per_sample, seed_grad(SEED_THETA))
  assert_unbiased(loo.per_sample, seed_grad(SEED_THETA))
  assert_smaller_variance(loo.per_sample, plain.per_sample)


def test_moving_average_baseline_state_and_unbiasedness(key):
  ma = gradest.moving_average_baseline(decay=0.5)
  state = ma.init()
  assert float(state.value) == 0.0
  state = ma.update(state, jnp.array([2.0, 4.0]))
  np.testing.assert_allclose(state.value, 3.0)  # zero-debiased: exactly the first mean
  state = ma.update(state, jnp.array([5.0]))
  np.testing.assert_allclose(state.average, 0.5 * 1.5 + 0.5 * 5.0)
  np.testing.assert_allclose(state.value, (0.5 * 1.5 + 0.5 * 5.0) / (1 - 0.25))
  assert int(state.count) == 2

  @jax.jit
  def step(state, k):
    est = gradest.score_function_grad(
      jnp.square, seed_dist, SEED_THETA, k, 64, baseline=state.value
    )
    return ma.update(state, est.values), est.grad

  _, grads = jax.lax.scan(step, ma.init(), jax.random.split(key, 400))
  assert_unbiased(grads, seed_grad(SEED_THETA))


def test_moving_average_rejects_bad_decay():
  with pytest.raises(ValueError, match="decay"):
    gradest.moving_average_baseline(decay=1.0)


def test_delta_method_control_variate(key):
  f = lambda x: jnp.sum(jnp.cos(x))  # noqa: E731
  mu = jnp.array([0.3, -0.4])
  dist_fn = lambda m: Normal(m, 0.5)  # noqa: E731
  exact = -jnp.sin(mu) * jnp.exp(-0.125)
  plain = gradest.score_function_grad(f, dist_fn, mu, key, 20000)
  for coefficient in (1.0, "optimal"):
    est = gradest.score_function_grad(
      f,
      dist_fn,
      mu,
      key,
      20000,
      control_variate=gradest.delta_method(f),
      cv_coefficient=coefficient,
    )
    assert_unbiased(est.per_sample, exact)
    assert_smaller_variance(est.per_sample, plain.per_sample)
  mean_only = gradest.score_function_grad(
    f, dist_fn, mu, key, 200, control_variate=gradest.delta_method(f), return_per_sample=False
  )
  full = gradest.score_function_grad(
    f, dist_fn, mu, key, 200, control_variate=gradest.delta_method(f)
  )
  np.testing.assert_allclose(mean_only.grad, full.grad, rtol=1e-4, atol=1e-6)


def test_delta_method_is_exact_for_quadratics(key):
  f = lambda x: jnp.sum((x - 1.0) ** 2)  # noqa: E731
  est = gradest.score_function_grad(
    f,
    lambda m: Normal(m, 1.0),
    jnp.array([0.5]),
    key,
    50,
    control_variate=gradest.delta_method(f),
  )
  np.testing.assert_allclose(est.per_sample, jnp.full((50, 1), -1.0), atol=1e-4)


def test_bad_baseline_and_coefficient(key):
  with pytest.raises(ValueError, match="baseline"):
    gradest.score_function_grad(jnp.square, seed_dist, 1.0, key, 4, baseline="mean")
  with pytest.raises(ValueError, match="baseline"):
    gradest.score_function_grad(jnp.square, seed_dist, 1.0, key, 4, baseline=jnp.ones(4))
  with pytest.raises(ValueError, match="at least two"):
    gradest.score_function_grad(jnp.square, seed_dist, 1.0, key, 1, baseline="leave_one_out")
  with pytest.raises(ValueError, match="cv_coefficient"):
    gradest.score_function_grad(
      jnp.square,
      seed_dist,
      1.0,
      key,
      4,
      control_variate=gradest.delta_method(jnp.square),
      cv_coefficient="best",
    )


def test_delta_method_rejects_non_gaussian(key):
  with pytest.raises(TypeError, match="Gaussian"):
    gradest.score_function_grad(
      bernoulli_cost,
      Bernoulli,
      jnp.zeros(4),
      key,
      4,
      control_variate=gradest.delta_method(bernoulli_cost),
    )


# ----------------------------------------------------------------------------- surrogate


def _sample(mu, key, n):
  d = Normal(mu, 1.0)
  return d, jax.lax.stop_gradient(d.sample(key, (n,)))


@pytest.mark.parametrize("baseline", [None, 0.7, "leave_one_out"])
def test_surrogate_value_and_gradient(baseline, key):
  def surrogate(mu):
    d, x = _sample(mu, key, 32)
    return gradest.score_function_surrogate(jnp.square(x), d.log_prob(x), baseline)

  mu = jnp.array(0.4)
  _, x = _sample(mu, key, 32)
  np.testing.assert_array_equal(surrogate(mu), jnp.square(x))
  g = jax.grad(lambda m: surrogate(m).mean())(mu)
  b = (
    0.0
    if baseline is None
    else (gradest.leave_one_out_baseline(x**2) if isinstance(baseline, str) else baseline)
  )
  np.testing.assert_allclose(g, jnp.mean((x**2 - b) * (x - mu)), rtol=1e-5)


def test_surrogate_includes_direct_dependence(key):
  # E[theta * x] with x ~ N(theta, 1): d/dtheta = 2 theta.
  def loss(theta, k):
    d = Normal(theta, 1.0)
    x = jax.lax.stop_gradient(d.sample(k))
    return gradest.score_function_surrogate(theta * x, d.log_prob(x))

  per_sample = jax.vmap(jax.grad(loss), (None, 0))(0.8, jax.random.split(key, 40000))
  assert_unbiased(per_sample, 1.6)


@pytest.mark.parametrize("baseline", [None, "leave_one_out"])
def test_magic_box_second_derivative_matches_closed_form(baseline, key):
  """Hessian of E[cos(k x)], x ~ N(mu, sigma^2), w.r.t. mu: -k^2 cos(k mu) exp(-k^2 sigma^2 / 2)."""
  k, mu, sigma, n = 1.5, 0.3, 0.8, 4

  def objective(m, key):
    d = Normal(m, sigma)
    x = jax.lax.stop_gradient(d.sample(key, (n,)))
    return gradest.score_function_surrogate(jnp.cos(k * x), d.log_prob(x), baseline).mean()

  hessians = jax.vmap(jax.hessian(objective), (None, 0))(mu, jax.random.split(key, 50000))
  exact = -(k**2) * np.cos(k * mu) * np.exp(-0.5 * k**2 * sigma**2)
  assert_unbiased(hessians, exact)


def test_magic_box_value():
  x = jnp.array([-3.0, 0.0, 7.5])
  np.testing.assert_array_equal(gradest.magic_box(x), jnp.ones(3))
  np.testing.assert_allclose(jax.grad(lambda y: gradest.magic_box(2 * y).sum())(x), 2 * jnp.ones(3))


def test_surrogate_bad_input():
  with pytest.raises(ValueError, match="same shape"):
    gradest.score_function_surrogate(jnp.ones(3), jnp.ones(4))
  with pytest.raises(ValueError, match="leading sample axis"):
    gradest.score_function_surrogate(jnp.ones(()), jnp.ones(()), "leave_one_out")
  with pytest.raises(ValueError, match="at least 2"):
    gradest.score_function_surrogate(jnp.ones(1), jnp.ones(1), "leave_one_out")
  with pytest.raises(ValueError, match="baseline"):
    gradest.score_function_surrogate(jnp.ones(2), jnp.ones(2), "median")


def test_surrogate_under_jit_and_vmap(key):
  f = jax.jit(jax.vmap(lambda c, lp: gradest.score_function_surrogate(c, lp, "leave_one_out")))
  out = f(jnp.ones((3, 5)), jnp.zeros((3, 5)))
  assert out.shape == (3, 5)
