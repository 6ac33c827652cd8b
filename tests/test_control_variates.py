import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradest
from gradest.distributions import Normal


def test_hessian_diagonal_matches_full_hessian():
  f = lambda x: jnp.sum(jnp.sin(x) * jnp.roll(x, 1)) + jnp.prod(x[:2])  # noqa: E731
  x = jnp.array([[0.3, -1.0, 2.0], [0.5, 0.1, -0.7]])
  full = jax.hessian(f)(x).reshape(6, 6)
  for chunk in (1, 4, 64):
    np.testing.assert_allclose(
      gradest.hessian_diagonal(f, x, chunk_size=chunk), jnp.diag(full).reshape(2, 3), rtol=1e-5
    )


def test_delta_method_mean_is_exact_for_quadratic():
  f = lambda x: jnp.sum(x**2) + x[0] * x[1]  # noqa: E731
  d = Normal(jnp.array([0.5, -1.0]), jnp.array([2.0, 0.5]))
  cv = gradest.delta_method(f)
  # h equals f for a quadratic, so E[h] = E[f] = sum(mu^2 + sigma^2) + mu0 mu1.
  expected = jnp.sum(d.loc**2 + d.scale**2) + d.loc[0] * d.loc[1]
  np.testing.assert_allclose(cv.expected_value(d), expected, rtol=1e-6)
  x = jnp.array([1.0, 2.0])
  np.testing.assert_allclose(cv.value(d, x), f(x), rtol=1e-6)


def test_optimal_coefficient_recovers_linear_relation(key):
  h = jax.random.normal(key, (1000, 3))
  f = 2.5 * h + 0.01 * jax.random.normal(jax.random.key(1), (1000, 3))
  c = gradest.optimal_coefficient({"a": f}, {"a": h})
  np.testing.assert_allclose(c["a"], 2.5, rtol=1e-2)


def test_bad_arguments_name_the_argument():
  with pytest.raises(ValueError, match="chunk_size"):
    gradest.hessian_diagonal(jnp.sum, jnp.ones(3), chunk_size=0)
  with pytest.raises(ValueError, match="per_sample_h must be a pytree with the structure"):
    gradest.optimal_coefficient({"a": jnp.ones((4, 2))}, [jnp.ones((4, 2))])
  with pytest.raises(ValueError, match="leaf shapes of per_sample_f"):
    gradest.optimal_coefficient({"a": jnp.ones((4, 2))}, {"a": jnp.ones((4, 3))})
  with pytest.raises(ValueError, match=r"decay must be a finite number in \[0.0, 1.0\)"):
    gradest.moving_average_baseline(decay=-0.1)
