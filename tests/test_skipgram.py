"""The skip-gram model: initialization, pair losses, the sparse SGD step.

One batch shape is shared by the tests, so each jitted function compiles few times.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gradest.models import skipgram
from gradest.samplers import UniformSampler, sample_candidates, unigram_sampler

# --------------------------------------------------------------------------------------
# The sparse step is the dense SGD step.
# --------------------------------------------------------------------------------------

V, DIM, BATCH, K = 7, 3, 16, 4  # a tiny vocabulary: ids repeat within the batch


def step_inputs(key):
  k1, k2, k3, k4, k5 = jax.random.split(key, 5)
  params = skipgram.SkipGramParams(
    jax.random.normal(k1, (V, DIM)), 0.5 * jax.random.normal(k2, (V, DIM))
  )
  centers = jax.random.randint(k3, (BATCH,), 0, V)
  contexts = jax.random.randint(k4, (BATCH,), 0, V)
  weights = (jax.random.uniform(k5, (BATCH,)) < 0.8).astype(jnp.float32)
  return params, centers, contexts, weights


def dense_reference(params, centers, contexts, weights, negatives, shared, remove_hits):
  """``(sum_b w_b loss_b, loss_b)`` written out on the full tables."""
  v = params.input[centers]
  true = jnp.sum(v * params.output[contexts], axis=-1)
  if shared:
    neg = v @ params.output[negatives].T
    negatives = jnp.broadcast_to(negatives, (BATCH, K))
  else:
    neg = jnp.einsum("bd,bkd->bk", v, params.output[negatives])
  keep = negatives != contexts[:, None] if remove_hits else jnp.ones(neg.shape, bool)
  losses = -jax.nn.log_sigmoid(true) - jnp.sum(jnp.where(keep, jax.nn.log_sigmoid(-neg), 0), -1)
  return jnp.sum(weights * losses), losses


@pytest.mark.parametrize("shared, remove_hits", [(False, True), (True, False)])
def test_sparse_step_equals_the_dense_gradient_step(key, shared, remove_hits):
  params, centers, contexts, weights = step_inputs(key)
  sampler = unigram_sampler(jnp.arange(1, V + 1), 0.75)
  step_key, lr = jax.random.key(7), 0.3
  options = dict(
    sampler=sampler, num_negatives=K, shared_negatives=shared, remove_accidental_hits=remove_hits
  )

  @jax.jit  # one compilation: the reference, pair_losses and train_step under jit
  def run(params):
    if shared:  # one set for the batch
      negatives = sample_candidates(sampler, step_key, contexts[:, None], K).sampled
    else:  # K per pair
      negatives = sampler.sample(step_key, (BATCH, K))
    (total, losses), grads = jax.value_and_grad(dense_reference, has_aux=True)(
      params, centers, contexts, weights, negatives, shared, remove_hits
    )
    expected = jax.tree.map(lambda p, g: p - lr * g, params, grads)
    got_losses = skipgram.pair_losses(params, centers, contexts, step_key, **options)
    new, mean_loss = skipgram.train_step(
      params, centers, contexts, step_key, lr, weights=weights, **options
    )
    return expected, total, losses, got_losses, new, mean_loss

  expected, total, losses, got_losses, new, mean_loss = run(params)
  np.testing.assert_allclose(got_losses, losses, rtol=1e-5)
  np.testing.assert_allclose(new.input, expected.input, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(new.output, expected.output, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(mean_loss, total / jnp.sum(weights), rtol=1e-5)
  # Rows the batch does not touch are unchanged, bit for bit.
  touched_in = np.zeros(V, bool)
  touched_in[np.asarray(centers)[np.asarray(weights) > 0]] = True
  assert not touched_in.all()
  np.testing.assert_array_equal(new.input[~touched_in], params.input[~touched_in])


def test_pair_losses_under_vmap_and_a_users_optax_loop(key):
  params, centers, contexts, _ = step_inputs(key)
  sampler = UniformSampler(V)
  options = dict(sampler=sampler, num_negatives=K)
  keys = jax.random.split(jax.random.key(3), 5)
  batched = jax.vmap(lambda k: skipgram.pair_losses(params, centers, contexts, k, **options))(keys)
  for i in (0, 4):
    np.testing.assert_allclose(
      batched[i], skipgram.pair_losses(params, centers, contexts, keys[i], **options), rtol=1e-6
    )
  # Dense gradients of the mean pair loss train with any optax optimizer.
  opt = optax.adam(0.05)

  @jax.jit
  def step(p, state, k):
    loss, g = jax.value_and_grad(
      lambda p: skipgram.pair_losses(p, centers, contexts, k, **options).mean()
    )(p)
    updates, state = opt.update(g, state, p)
    return optax.apply_updates(p, updates), state, loss

  p, state, losses = params, opt.init(params), []
  for i in range(60):
    p, state, loss = step(p, state, jax.random.fold_in(key, i))
    losses.append(float(loss))
  assert np.mean(losses[-10:]) < np.mean(losses[:10]) - 0.5


def test_train_step_with_an_optax_schedule(key):
  params, centers, contexts, weights = step_inputs(key)
  schedule = optax.linear_schedule(0.2, 0.0, transition_steps=30)
  options = dict(sampler=unigram_sampler(jnp.arange(1, V + 1), 0.75), num_negatives=K)
  losses = []
  for i in range(30):
    params, loss = skipgram.train_step(
      params, centers, contexts, jax.random.fold_in(key, i), schedule(i), weights=weights, **options
    )
    losses.append(float(loss))
  assert np.all(np.isfinite(losses)) and np.mean(losses[-5:]) < np.mean(losses[:5])


def test_init_params_is_word2vecs(key):
  p = jax.jit(skipgram.init_params, static_argnums=(1, 2))(key, 100, 8)
  assert p.input.shape == p.output.shape == (100, 8) and p.input.dtype == jnp.float32
  assert float(jnp.abs(p.input).max()) <= 0.5 / 8 and float(jnp.abs(p.output).max()) == 0.0
  assert float(p.input.std()) > 0.5 / 8 / 4  # uniform on (-1/2d, 1/2d): std 1/(2d sqrt 3)


# --------------------------------------------------------------------------------------
# Bad input.
# --------------------------------------------------------------------------------------


def test_bad_input_raises_errors_naming_the_argument(key):
  params = skipgram.init_params(key, 28, 4)
  sampler = UniformSampler(28)
  ids = jnp.arange(4)
  cases = [
    (
      "centers and contexts",
      lambda: skipgram.train_step(
        params, ids, jnp.arange(5), key, 0.1, sampler=sampler, num_negatives=2
      ),
    ),
    (
      "weights",
      lambda: skipgram.train_step(
        params, ids, ids, key, 0.1, sampler=sampler, num_negatives=2, weights=jnp.ones(3)
      ),
    ),
    (
      "learning_rate",
      lambda: skipgram.train_step(
        params, ids, ids, key, jnp.ones(2), sampler=sampler, num_negatives=2
      ),
    ),
    (
      "sampler.num_classes",
      lambda: skipgram.train_step(
        params, ids, ids, key, 0.1, sampler=UniformSampler(27), num_negatives=2
      ),
    ),
    (
      "sampler must be a gradest sampler",
      lambda: skipgram.pair_losses(params, ids, ids, key, sampler=None, num_negatives=2),
    ),
    (
      "num_negatives",
      lambda: skipgram.pair_losses(params, ids, ids, key, sampler=sampler, num_negatives=0),
    ),
    (
      "contexts",
      lambda: skipgram.pair_losses(params, ids, ids + 28, key, sampler=sampler, num_negatives=2),
    ),
    (
      "params.input and params.output",
      lambda: skipgram.train_step(
        skipgram.SkipGramParams(params.input, params.output[:5]),
        ids,
        ids,
        key,
        0.1,
        sampler=sampler,
        num_negatives=2,
      ),
    ),
    (
      "params must be SkipGramParams",
      lambda: skipgram.pair_losses(
        (params.input, params.output), ids, ids, key, sampler=sampler, num_negatives=2
      ),
    ),
    ("vocab_size", lambda: skipgram.init_params(key, 0, 4)),
    ("dim", lambda: skipgram.init_params(key, 4, 0)),
  ]
  for name, call in cases:
    with pytest.raises((ValueError, TypeError), match=name):
      call()
