"""The discrete VAE trains with every registry estimator that has an objective level.

The same model and loss are trained on binarized 8x8 digits by changing only the
estimator's name; each must lower the negative ELBO (evaluated with many samples on
fixed keys) well beyond its evaluation noise.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradest
from gradest.models import discrete_vae

from .helpers import FALSE_FAILURE, z_value

NAMES = [
  n for n in gradest.estimator_names("bernoulli") if gradest.ESTIMATORS[n].objective is not None
]
STEPS, BATCH, LATENT, SAMPLES = 60, 64, 8, 4


@functools.cache
def data():
  sklearn_datasets = pytest.importorskip("sklearn.datasets")
  digits = sklearn_datasets.load_digits().data[:BATCH] / 16.0
  return jnp.asarray(digits > 0.5, jnp.float32)


@jax.jit
def negative_elbo(params, x):
  """The mean negative ELBO (64 samples per point, fixed key) and its standard error.

  The standard error is that of the mean of all ``B x 64`` costs treated as one i.i.d.
  sample; the spread between data points makes it larger than the sampling error alone.
  """

  def costs(x_i, k):
    q = discrete_vae.posterior(params, x_i)
    return jax.vmap(discrete_vae.cost(params, x_i))(q.sample(k, (64,)))

  values = jax.vmap(costs)(x, jax.random.split(jax.random.key(123), x.shape[0])).reshape(-1)
  return jnp.mean(values), jnp.std(values, ddof=1) / jnp.sqrt(values.size)


@functools.cache
def trained(name):
  x = data()
  params = discrete_vae.init_params(jax.random.key(0), x.shape[1], LATENT)
  opt = optax.adam(3e-2)

  @jax.jit
  def step(carry, key):
    params, state = carry
    grads = jax.grad(discrete_vae.loss)(params, x, key, SAMPLES, name)
    updates, state = opt.update(grads, state)
    return (optax.apply_updates(params, updates), state), None

  keys = jax.random.split(jax.random.key(1), STEPS)
  (final, _), _ = jax.lax.scan(step, (params, opt.init(params)), keys)
  return [float(v) for v in (*negative_elbo(params, x), *negative_elbo(final, x))]


def test_at_least_eight_estimators():
  assert len(NAMES) >= 8, NAMES


@pytest.mark.parametrize("name", NAMES)
def test_every_estimator_lowers_the_negative_elbo(name):
  before, se_before, after, se_after = trained(name)
  assert np.isfinite(after)
  # Lower by more than z standard errors of the two evaluations (one-sided, all names).
  z = z_value(len(NAMES), FALSE_FAILURE)
  assert after + z * se_after < before - z * se_before, (name, before, after, se_before)


def test_unknown_or_unfit_estimator_is_refused():
  params = discrete_vae.init_params(jax.random.key(0), 4, 2)
  x = jnp.ones((2, 4))
  with pytest.raises(ValueError, match="unknown estimator"):
    discrete_vae.loss(params, x, jax.random.key(0), 4, "reinforce")
  with pytest.raises(ValueError, match="objective level"):
    discrete_vae.loss(params, x, jax.random.key(0), 4, "measure_valued")
  with pytest.raises(ValueError, match="batch, data_dim"):
    discrete_vae.loss(params, x[0], jax.random.key(0), 4, "disarm")
