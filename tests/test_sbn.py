"""Tests of gradest.models.sbn: sigmoid belief nets and the variational SBN.

The nets are small enough to enumerate every configuration, so log-probabilities,
sampling frequencies and marginal likelihoods are checked against exact sums. Test
parameters and configurations come from numpy (no compilation), and the reference
computations are jitted once per shape: on CPU, compiling dominates these tests.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy import special, stats

from gradest.distributions import Bernoulli
from gradest.models import sbn

from .helpers import assert_unbiased, z_value

SIZES = (3, 5, 4)  # the default three-layer net: 3 top units, 5 hidden, 4 visible


def random_sbn(seed, layer_sizes, scale=1.5):
  """An SBN with sizeable random weights, biases and top logits (not the init values)."""
  rng = np.random.default_rng(seed)
  normal = lambda *shape: rng.normal(size=shape).astype(np.float32)
  return {
    "top_logits": normal(layer_sizes[0]),
    "layers": [
      {"w": scale * normal(m, n), "b": normal(n)}
      for m, n in zip(layer_sizes[:-1], layer_sizes[1:], strict=True)
    ],
  }


def random_layers(seed, layer_sizes, batch=(), relaxed=False):
  """Random binary (or, with ``relaxed``, uniform in [0, 1]) layers of the given shapes."""
  rng = np.random.default_rng(seed)
  draw = (lambda s: rng.uniform(size=s)) if relaxed else (lambda s: rng.integers(0, 2, s))
  return [draw(batch + (n,)).astype(np.float32) for n in layer_sizes]


def all_states(n):
  """Every binary vector of length n, shape (2**n, n); row r is r in binary (bit j = unit j)."""
  return ((np.arange(2**n)[:, None] >> np.arange(n)) & 1).astype(np.float32)


def split_layers(states, layer_sizes):
  """Splits the columns of a (..., sum(sizes)) array into one array per layer."""
  return np.split(states, np.cumsum(layer_sizes)[:-1], axis=-1)


def brute_force_log_prob(params, layers):
  """log p by explicit per-unit products, in float64, one configuration at a time."""
  top = np.asarray(params["top_logits"], np.float64)
  ws = [np.asarray(p["w"], np.float64) for p in params["layers"]]
  bs = [np.asarray(p["b"], np.float64) for p in params["layers"]]
  layers = [np.asarray(s, np.float64) for s in layers]
  out = np.zeros(layers[0].shape[:-1])
  for idx in np.ndindex(*out.shape):
    total = 0.0
    for level, s in enumerate(layers):
      for i in range(s.shape[-1]):
        if level == 0:
          a = top[i]
        else:
          parent = layers[level - 1][idx]
          a = bs[level - 1][i] + sum(parent[j] * ws[level - 1][j, i] for j in range(len(parent)))
        p_on = 1.0 / (1.0 + math.exp(-a))
        total += math.log(p_on if s[idx][i] == 1 else 1.0 - p_on)
    out[idx] = total
  return out


@jax.jit
def autodiff_grad(params, layers):
  return jax.grad(lambda p: sbn.log_prob(p, layers).sum())(params)


def log_bernoulli(logits, s, xp=jnp):
  """Reference: the log-probability of independent 0/1 units, summed on the last axis."""
  p = 1 / (1 + xp.exp(-logits))
  return xp.sum(xp.where(s == 1, xp.log(p), xp.log1p(-p)), axis=-1)


def assert_trees_close(a, b, rtol=1e-5, atol=1e-5):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    assert x.shape == y.shape
    np.testing.assert_allclose(x, y, rtol=rtol, atol=atol)


# --------------------------------------------------------------------------------------
# Parameters, log-probabilities and their gradient.
# --------------------------------------------------------------------------------------


def test_init_sbn_shapes_and_scale():
  params = sbn.init_sbn(jax.random.key(0), (32, 64, 128), scale=0.3)
  assert params["top_logits"].shape == (32,)
  assert [p["w"].shape for p in params["layers"]] == [(32, 64), (64, 128)]
  assert [p["b"].shape for p in params["layers"]] == [(64,), (128,)]
  params = jax.tree.map(np.asarray, params)
  assert not np.any(params["top_logits"]) and not any(np.any(p["b"]) for p in params["layers"])
  np.testing.assert_allclose(np.std(params["layers"][1]["w"]), 0.3, rtol=0.05)
  single = sbn.init_sbn(jax.random.key(1), [5])
  assert single["top_logits"].shape == (5,) and single["layers"] == []
  assert [s.shape for s in sbn.sample(jax.random.key(2), single, 2)] == [(2, 5)]


def test_log_prob_matches_brute_force():
  params = random_sbn(0, SIZES)
  layers = random_layers(1, SIZES, batch=(6,))
  out = sbn.log_prob(params, layers)
  assert out.shape == (6,) and out.dtype == jnp.float32
  np.testing.assert_allclose(out, brute_force_log_prob(params, layers), rtol=1e-5)


@pytest.mark.parametrize("layer_sizes", [(2, 2, 3), (3, 4), (6,)])
def test_log_prob_sums_to_one_over_all_states(layer_sizes):
  params = random_sbn(0, layer_sizes)
  layers = split_layers(all_states(sum(layer_sizes)), layer_sizes)
  total = np.exp(np.asarray(sbn.log_prob(params, layers), np.float64)).sum()
  np.testing.assert_allclose(total, 1.0, rtol=1e-5)


def test_log_prob_batch_shapes_and_broadcasting():
  params = random_sbn(0, SIZES)
  layers = random_layers(1, SIZES, batch=(2, 5))
  out = sbn.log_prob(params, layers)
  assert out.shape == (2, 5)
  single = sbn.log_prob(params, [s[1, 3] for s in layers])
  assert single.shape == ()
  np.testing.assert_allclose(single, np.asarray(out)[1, 3], rtol=1e-6)
  # A shared top layer broadcasts against a batch of lower layers.
  shared = [layers[0][0, 0], layers[1], layers[2]]
  explicit = [np.broadcast_to(layers[0][0, 0], (2, 5, 3)), layers[1], layers[2]]
  np.testing.assert_allclose(sbn.log_prob(params, shared), sbn.log_prob(params, explicit))
  # Integer 0/1 values and nested lists are accepted.
  as_int = [np.asarray(s, np.int32) for s in layers]
  np.testing.assert_allclose(sbn.log_prob(params, as_int), out)
  as_lists = [np.asarray(s[1, 3]).tolist() for s in layers]
  np.testing.assert_allclose(sbn.log_prob(params, as_lists), single)


def test_layer_logits():
  params = random_sbn(0, SIZES)
  layers = random_layers(1, SIZES, batch=(2, 5))
  logits = [np.asarray(a) for a in sbn.layer_logits(params, [layers[0][0, 0]] + layers[1:])]
  assert [a.shape for a in logits] == [(2, 5, 3), (2, 5, 5), (2, 5, 4)]
  np.testing.assert_allclose(logits[0][1, 2], params["top_logits"])
  np.testing.assert_allclose(
    logits[1][1, 2],
    layers[0][0, 0] @ params["layers"][0]["w"] + params["layers"][0]["b"],
    rtol=1e-6,
  )
  np.testing.assert_allclose(
    logits[2], layers[1] @ params["layers"][1]["w"] + params["layers"][1]["b"], rtol=1e-6
  )
  # Per layer, log_prob is a Bernoulli log-likelihood with these logits.
  expected = sum(
    log_bernoulli(a.astype(np.float64), s, xp=np)
    for a, s in zip(logits, [layers[0][0, 0]] + layers[1:], strict=True)
  )
  np.testing.assert_allclose(
    sbn.log_prob(params, [layers[0][0, 0]] + layers[1:]), expected, rtol=1e-5
  )


@pytest.mark.numerics
def test_log_prob_is_stable_and_differentiable_for_relaxed_values():
  params = random_sbn(0, (3, 4), scale=200.0)  # logits of size ~ hundreds
  relaxed = random_layers(1, (3, 4), batch=(5,), relaxed=True)
  relaxed[1][0] = [0.0, 1.0, 0.0, 1.0]
  out = sbn.log_prob(params, relaxed)
  assert np.all(np.isfinite(out))
  grads = jax.jit(jax.grad(lambda s: sbn.log_prob(params, s).sum()))(relaxed)
  assert all(np.all(np.isfinite(g)) for g in grads)
  # d/ds [s log sig(a) + (1 - s) log sig(-a)] = a for the bottom layer (it is no parent).
  np.testing.assert_allclose(grads[1], sbn.layer_logits(params, relaxed)[1], rtol=1e-5)


@pytest.mark.parametrize(
  "layer_sizes, batch, relaxed",
  [
    (SIZES, (), False),
    (SIZES, (7,), False),
    (SIZES, (2, 6), False),
    (SIZES, (6,), True),
    ((4,), (6,), False),
  ],
)
def test_log_prob_grad_matches_autodiff(layer_sizes, batch, relaxed):
  params = random_sbn(0, layer_sizes)
  layers = random_layers(1, layer_sizes, batch, relaxed)
  assert_trees_close(sbn.log_prob_grad(params, layers), autodiff_grad(params, layers))


def test_log_prob_grad_with_broadcast_batch_axes():
  params = random_sbn(0, SIZES)
  layers = random_layers(1, SIZES, batch=(2, 6))
  shared = [layers[0][0, 0], layers[1][0], layers[2]]
  explicit = [np.broadcast_to(s, (2, 6, s.shape[-1])) for s in shared]
  assert_trees_close(sbn.log_prob_grad(params, shared), sbn.log_prob_grad(params, explicit))


def test_log_prob_grad_under_jit_and_vmap():
  params = random_sbn(0, SIZES)
  layers = random_layers(1, SIZES, batch=(2, 6))
  eager = sbn.log_prob_grad(params, layers)
  assert_trees_close(jax.jit(sbn.log_prob_grad)(params, layers), eager)
  per_row = jax.jit(jax.vmap(sbn.log_prob_grad, in_axes=(None, 0)))(params, layers)
  assert_trees_close(jax.tree.map(lambda g: np.asarray(g).sum(0), per_row), eager)
  assert_trees_close(
    jax.tree.map(lambda g: np.asarray(g)[1], per_row), autodiff_grad(params, [s[1] for s in layers])
  )


# --------------------------------------------------------------------------------------
# Sampling.
# --------------------------------------------------------------------------------------


def test_sample_frequencies_match_log_prob():
  layer_sizes = (2, 3, 2)
  params = random_sbn(3, layer_sizes, scale=1.0)
  n = 200_000
  layers = sbn.sample(jax.random.key(7), params, n)
  assert [s.shape for s in layers] == [(n, 2), (n, 3), (n, 2)]
  assert all(s.dtype == jnp.float32 for s in layers)
  joint = np.concatenate([np.asarray(s) for s in layers], axis=-1)
  assert set(np.unique(joint)) <= {0.0, 1.0}
  index = (joint * 2 ** np.arange(joint.shape[-1])).sum(-1).astype(int)
  counts = np.bincount(index, minlength=2 ** sum(layer_sizes))
  states = split_layers(all_states(sum(layer_sizes)), layer_sizes)
  probs = np.exp(np.asarray(sbn.log_prob(params, states), np.float64))
  np.testing.assert_allclose(probs.sum(), 1.0, rtol=1e-5)
  expected = n * probs / probs.sum()
  # Pool the rare states into one cell so that every expected count is at least 5.
  rare = expected < 5
  observed = np.append(counts[~rare], counts[rare].sum())
  expected = np.append(expected[~rare], expected[rare].sum())
  assert rare.sum() < 8, "the test net should have few rare states"
  assert stats.chisquare(observed, expected).pvalue > 1e-6
  # The same key gives the same samples, another key others.
  again = sbn.sample(jax.random.key(7), params, n)
  other = sbn.sample(jax.random.key(8), params, n)
  assert all(np.array_equal(a, b) for a, b in zip(layers, again, strict=True))
  assert not np.array_equal(layers[2], other[2])


# --------------------------------------------------------------------------------------
# The variational SBN.
# --------------------------------------------------------------------------------------

NUM_VISIBLE, NUM_LATENT = 10, 6


@pytest.fixture(scope="module")
def vsbn():
  """A variational SBN with a nontrivial posterior, an imperfect recognition model, and
  three data points."""
  rng = np.random.default_rng(3)
  params = {
    "generative": random_sbn(4, (NUM_LATENT, NUM_VISIBLE), scale=1.5),
    "recognition": {
      "w": (0.5 * rng.normal(size=(NUM_VISIBLE, NUM_LATENT))).astype(np.float32),
      "b": rng.normal(size=NUM_LATENT).astype(np.float32),
    },
  }
  x = rng.integers(0, 2, (3, NUM_VISIBLE)).astype(np.float32)
  return params, x


@jax.jit
def exact_elbo(params, x):
  """sum_h q(h | x) [log p(x, h) - log q(h | x)] over all latent states, per data point."""
  num_latent = params["recognition"]["w"].shape[1]
  h = jnp.asarray(all_states(num_latent))[:, None, :]  # (S, 1, H)
  log_q = log_bernoulli(x @ params["recognition"]["w"] + params["recognition"]["b"], h)
  log_p = sbn.log_joint(params["generative"], h, x)
  return jnp.sum(jnp.exp(log_q) * (log_p - log_q), axis=0)


def test_init_variational_sbn_and_recognition_logits(key):
  params = sbn.init_variational_sbn(key, 64, 16)
  assert params["generative"]["top_logits"].shape == (16,)
  assert params["generative"]["layers"][0]["w"].shape == (16, 64)
  assert params["recognition"]["w"].shape == (64, 16)
  assert params["recognition"]["b"].shape == (16,)
  assert float(np.std(np.asarray(params["recognition"]["w"]))) == pytest.approx(0.01, rel=0.1)
  x = np.ones((2, 3, 64), np.float32)
  logits = sbn.recognition_logits(params["recognition"], x)
  assert logits.shape == (2, 3, 16)
  np.testing.assert_allclose(
    np.asarray(logits)[1, 2], np.asarray(params["recognition"]["w"]).sum(0), atol=1e-6
  )


def test_exact_log_marginal(vsbn):
  params, x = vsbn
  gen = params["generative"]
  out = sbn.exact_log_marginal(gen, x)
  assert out.shape == (3,)
  h = all_states(NUM_LATENT)[:, None, :]
  by_log_prob = special.logsumexp(np.asarray(sbn.log_prob(gen, [h, x]), np.float64), axis=0)
  np.testing.assert_allclose(out, by_log_prob, rtol=1e-5)
  assert sbn.exact_log_marginal(gen, x[0]).shape == ()
  np.testing.assert_allclose(sbn.exact_log_marginal(gen, x[0]), np.asarray(out)[0], rtol=1e-5)
  # p(x) sums to one over all visible states.
  log_px = np.asarray(sbn.exact_log_marginal(gen, all_states(NUM_VISIBLE)), np.float64)
  np.testing.assert_allclose(np.exp(log_px).sum(), 1.0, rtol=1e-4)


def test_bounds_are_exact_when_q_is_the_posterior(key):
  """With W = 0 the posterior is the prior; a recognition model with R = 0, c = t is exact."""
  top = np.linspace(-2.0, 2.0, NUM_LATENT, dtype=np.float32)
  params = {
    "generative": {
      "top_logits": top,
      "layers": [
        {
          "w": np.zeros((NUM_LATENT, NUM_VISIBLE), np.float32),
          "b": np.linspace(-1.0, 1.5, NUM_VISIBLE, dtype=np.float32),
        }
      ],
    },
    "recognition": {"w": np.zeros((NUM_VISIBLE, NUM_LATENT), np.float32), "b": top},
  }
  x = random_layers(1, (NUM_VISIBLE,), (3,))[0]
  exact = np.asarray(sbn.exact_log_marginal(params["generative"], x))
  np.testing.assert_allclose(exact_elbo(params, x), exact, rtol=1e-5)
  # log p(x, h) - log q(h | x) = log p(x) for every h: the bound is exact for any K.
  copies = np.broadcast_to(x, (1000,) + x.shape)
  iwae = sbn.importance_weighted_bound(params, copies, key, 16)
  np.testing.assert_allclose(iwae, np.broadcast_to(exact, iwae.shape), rtol=1e-5)


def test_elbo_is_unbiased_and_below_log_marginal(vsbn):
  params, x = vsbn
  n = 4000
  # n copies of the data: every copy gets its own posterior samples.
  values = sbn.elbo(params, np.broadcast_to(x, (n,) + x.shape), jax.random.key(4), 2)
  assert values.shape == (n, 3)
  expected = exact_elbo(params, x)
  assert_unbiased(values, expected)
  exact = sbn.exact_log_marginal(params["generative"], x)
  assert np.all(np.asarray(expected) < np.asarray(exact) - 0.1), (expected, exact)


def test_iwae_increases_with_k_towards_the_exact_log_marginal(vsbn):
  """E[IWAE_K] rises with K from the ELBO to log p(x).

  Every row of the replicated data gets independent samples. With the same key, JAX
  draws the same leading random numbers for every K, so the differences between K are
  partly paired; their standard errors come from the differences themselves, which is
  valid whether or not they are paired.
  """
  params, x = vsbn
  ks, n = (1, 16, 256), 1000
  copies = np.broadcast_to(x, (n,) + x.shape)
  key = jax.random.key(5)
  values = np.stack(
    [np.asarray(sbn.importance_weighted_bound(params, copies, key, k), np.float64) for k in ks]
  )  # (len(ks), n, 3)
  se = lambda v: v.std(axis=-2, ddof=1) / math.sqrt(n)
  z = z_value(3 * 3 * len(ks))
  means = values.mean(-2)
  exact = np.asarray(sbn.exact_log_marginal(params["generative"], x), np.float64)
  elbo = np.asarray(exact_elbo(params, x), np.float64)
  assert np.all(np.abs(means[0] - elbo) <= z * se(values[0])), (means[0], elbo)
  assert np.all(means <= exact + z * se(values) + 1e-4), (means, exact)
  steps = np.diff(values, axis=0)
  assert np.all(steps.mean(-2) > -z * se(steps)), (means, steps.mean(-2))
  assert np.all(means[-1] - means[0] > z * se(values[-1] - values[0])), means
  assert np.all(exact - means[-1] < 0.1 * (exact - elbo)), (means, exact, elbo)


def test_wake_sleep_grads_match_autodiff(vsbn):
  params, _ = vsbn
  x = random_layers(1, (NUM_VISIBLE,), (16,))[0]
  key = jax.random.key(6)

  @jax.jit
  def reference(params):
    # The same samples as wake_sleep_grads draws, as its docstring describes.
    wake_key, sleep_key = jax.random.split(key)
    h = Bernoulli(sbn.recognition_logits(params["recognition"], x)).sample(wake_key)
    h_dream, x_dream = sbn.sample(sleep_key, params["generative"], 16)
    wake_loss = lambda gen: -jnp.mean(sbn.log_joint(gen, h, x))
    sleep_loss = lambda rec: -jnp.mean(log_bernoulli(sbn.recognition_logits(rec, x_dream), h_dream))
    return {
      "generative": jax.grad(wake_loss)(params["generative"]),
      "recognition": jax.grad(sleep_loss)(params["recognition"]),
    }

  grads = sbn.wake_sleep_grads(params, x, key)
  assert_trees_close(grads, reference(params))


def test_wake_sleep_training_increases_the_elbo_on_digits():
  pytest.importorskip("sklearn")
  from benchmarks.datasets import load_binarized_digits

  train, _ = load_binarized_digits()
  num_steps, batch_size = 200, 100
  rng = np.random.RandomState(0)
  batches = np.stack(
    [train[rng.choice(len(train), batch_size, replace=False)] for _ in range(num_steps)]
  )
  params = sbn.init_variational_sbn(jax.random.key(0), 64, 16)
  opt = optax.adam(3e-2)

  def step(carry, inputs):
    p, state = carry
    batch, key = inputs
    updates, state = opt.update(sbn.wake_sleep_grads(p, batch, key), state)
    return (optax.apply_updates(p, updates), state), None

  @jax.jit
  def fit(p, key):
    return jax.lax.scan(step, (p, opt.init(p)), (batches, jax.random.split(key, num_steps)))[0][0]

  # The Monte Carlo ELBO of the whole training set, with a fixed evaluation key.
  evaluate = lambda p: np.mean(np.asarray(sbn.elbo(p, train, jax.random.key(1), 4), np.float64))
  before = evaluate(params)
  after = evaluate(fit(params, jax.random.key(2)))
  # Fair coins give 64 log(1/2) = -44.4 nats; training must clearly beat that.
  assert before < -40.0, before
  assert after > before + 10.0, (before, after)


# --------------------------------------------------------------------------------------
# Bad input.
# --------------------------------------------------------------------------------------


def test_rejects_bad_layer_sizes(key):
  with pytest.raises(ValueError, match=r"layer_sizes\[1\]"):
    sbn.init_sbn(key, (3, 0))
  with pytest.raises(ValueError, match=r"layer_sizes\[0\]"):
    sbn.init_sbn(key, (-2, 4))
  with pytest.raises(ValueError, match="layer_sizes"):
    sbn.init_sbn(key, ())
  with pytest.raises(TypeError, match="layer_sizes"):
    sbn.init_sbn(key, 5)
  with pytest.raises(TypeError, match=r"layer_sizes\[1\]"):
    sbn.init_sbn(key, (3, 2.5))
  with pytest.raises(ValueError, match="scale"):
    sbn.init_sbn(key, (3, 4), scale=-1.0)
  with pytest.raises(ValueError, match="key"):
    sbn.init_sbn(jax.random.split(key, 2), (3, 4))
  with pytest.raises(ValueError, match="num_latent"):
    sbn.init_variational_sbn(key, 4, 0)
  with pytest.raises(ValueError, match="num_visible"):
    sbn.init_variational_sbn(key, 0, 4)


def test_rejects_layers_that_do_not_match_params(key):
  params = random_sbn(0, SIZES)
  layers = random_layers(1, SIZES, (5,))
  for fn in (sbn.log_prob, sbn.log_prob_grad, sbn.layer_logits):
    with pytest.raises(ValueError, match="one array per layer"):
      fn(params, layers[:2])
    with pytest.raises(ValueError, match=r"layers\[1\] must have shape batch \+ \(5,\)"):
      fn(params, [layers[0], layers[2], layers[2]])
    with pytest.raises(ValueError, match=r"layers\[0\]"):
      fn(params, [np.float32(1.0), layers[1], layers[2]])
    with pytest.raises(ValueError, match="broadcast"):
      fn(params, [layers[0][:2], layers[1], layers[2]])
    with pytest.raises(TypeError, match="list of arrays"):
      fn(params, layers[0])
  with pytest.raises(TypeError, match="init_sbn"):
    sbn.log_prob({"w": np.ones((3, 4))}, layers)
  bad = {"top_logits": params["top_logits"], "layers": [{"w": np.ones((4, 5)), "b": np.ones(5)}]}
  with pytest.raises(ValueError, match=r"params\['layers'\]\[0\]"):
    sbn.log_prob(bad, layers[:2])
  with pytest.raises(ValueError, match="num_samples"):
    sbn.sample(key, params, 0)


def test_rejects_bad_variational_input(key, vsbn):
  params, x = vsbn
  wide = {
    "top_logits": np.zeros(21, np.float32),
    "layers": [{"w": np.zeros((21, 4)), "b": np.zeros(4)}],
  }
  with pytest.raises(ValueError, match="num_latent = 21"):
    sbn.exact_log_marginal(wide, np.ones(4))
  deep = random_sbn(0, SIZES)
  with pytest.raises(ValueError, match="one latent and one visible"):
    sbn.exact_log_marginal(deep, np.ones(4))
  with pytest.raises(
    ValueError, match=r"x must have shape batch \+ \(num_visible,\) = batch \+ \(10,\)"
  ):
    sbn.elbo(params, np.ones((3, 9)), key)
  with pytest.raises(ValueError, match="x must have shape"):
    sbn.exact_log_marginal(params["generative"], np.ones(11))
  with pytest.raises(ValueError, match=r"h must have shape batch \+ \(6,\)"):
    sbn.log_joint(params["generative"], np.ones(5), x)
  with pytest.raises(ValueError, match="num_samples"):
    sbn.importance_weighted_bound(params, x, key, 0)
  with pytest.raises(TypeError, match="init_variational_sbn"):
    sbn.elbo(params["generative"], x, key)
  mismatched = {
    "generative": params["generative"],
    "recognition": {"w": np.ones((NUM_VISIBLE, 5)), "b": np.ones(5)},
  }
  with pytest.raises(ValueError, match="recognition"):
    sbn.wake_sleep_grads(mismatched, x, key)
  with pytest.raises(ValueError, match="at least one data point"):
    sbn.wake_sleep_grads(params, np.ones((0, NUM_VISIBLE)), key)
  with pytest.raises(ValueError, match="key"):
    sbn.wake_sleep_grads(params, x, jax.random.split(key, 2))
