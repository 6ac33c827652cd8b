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

NAMES = [
  n for n in gradest.estimator_names("bernoulli") if gradest.ESTIMATORS[n].objective is not None
]
STEPS, BATCH, LATENT, SAMPLES = 60, 64, 8, 4


@functools.cache
def data():
  sklearn_datasets = pytest.importorskip("sklearn.datasets")
  digits = sklearn_datasets.load_digits().data[:BATCH] / 16.0
  return jnp.asarray(digits > 0.5, jnp.float32)


def negative_elbo(params, x):
  """The mean negative ELBO with 64 score-function samples per point on a fixed key."""
  return discrete_vae.loss(params, x, jax.random.key(123), 64, "score_function")


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
  return float(negative_elbo(params, x)), float(negative_elbo(final, x))


def test_at_least_eight_estimators():
  assert len(NAMES) >= 8, NAMES


@pytest.mark.parametrize("name", NAMES)
def test_every_estimator_lowers_the_negative_elbo(name):
  before, after = trained(name)
  assert np.isfinite(after)
  # The evaluation's own noise is far below 1 nat on this scale (about 44 nats at start).
  assert after < before - 3.0, (name, before, after)


def test_unknown_or_unfit_estimator_is_refused():
  params = discrete_vae.init_params(jax.random.key(0), 4, 2)
  x = jnp.ones((2, 4))
  with pytest.raises(ValueError, match="unknown estimator"):
    discrete_vae.loss(params, x, jax.random.key(0), 4, "reinforce")
  with pytest.raises(ValueError, match="objective level"):
    discrete_vae.loss(params, x, jax.random.key(0), 4, "measure_valued")
  with pytest.raises(ValueError, match="batch, data_dim"):
    discrete_vae.loss(params, x[0], jax.random.key(0), 4, "disarm")
