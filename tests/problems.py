"""Closed-form test problems shared by the estimator tests."""

import jax.numpy as jnp

from gradest.distributions import Normal

MU = jnp.array([0.3, -1.2, 2.0])
LOG_SIGMA = jnp.array([0.0, -0.5, 0.4])
PARAMS = {"loc": {"mu": MU}, "log_sigma": LOG_SIGMA}  # nested on purpose


def gaussian(params):
  return Normal(params["loc"]["mu"], jnp.exp(params["log_sigma"]))


def cos_cost(x):
  return jnp.sum(jnp.cos(x))


def cos_cost_grad(params):
  """Exact gradient of E[sum cos x] under gaussian(params)."""
  mu, sigma = params["loc"]["mu"], jnp.exp(params["log_sigma"])
  damp = jnp.exp(-0.5 * sigma**2)
  return {"loc": {"mu": -jnp.sin(mu) * damp}, "log_sigma": -(sigma**2) * jnp.cos(mu) * damp}


# The seed's worked example: z ~ N(a theta + b, 1), f(z) = z^2.
SEED_A, SEED_B, SEED_THETA = 2.0, 3.0, 1.0


def seed_dist(theta):
  return Normal(SEED_A * theta + SEED_B, 1.0)


def seed_grad(theta):
  return 2 * SEED_A * (SEED_A * theta + SEED_B)
