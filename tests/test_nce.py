"""NCE and sampled losses: values against dense float64 formulas, consistency, gradients."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import gradest
from gradest.samplers import (
  LogUniformSampler,
  UniformSampler,
  accidental_hits,
  sample_candidates,
  unigram_sampler,
)

from .helpers import z_value

B, T, K = 4, 2, 6

assert_close = functools.partial(np.testing.assert_allclose, rtol=1e-5, atol=1e-6)


def log_sigmoid(x):
  return -np.logaddexp(0.0, -x)


def logsumexp(x, axis=-1):
  m = np.max(x, axis=axis, keepdims=True)
  return (m + np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True))).squeeze(axis)


def random_inputs(seed=0, num_true=T):
  rng = np.random.default_rng(seed)
  true = rng.normal(size=(B, num_true)) * 3
  sampled = rng.normal(size=(B, K)) * 3
  true_lec = np.log(rng.uniform(0.01, 2.0, size=(B, num_true)))
  sampled_lec = np.log(rng.uniform(0.01, 2.0, size=(K,)))
  mask = rng.random((B, K)) > 0.3
  return true, sampled, true_lec, sampled_lec, mask


def as_jax(*arrays):
  return [jnp.asarray(a, jnp.float32) if a.dtype != bool else jnp.asarray(a) for a in arrays]


# Dense references (float64, written from the formulas, one example at a time).


def ref_binary(true, sampled, true_shift, sampled_shift, mask):
  out = []
  for i in range(true.shape[0]):
    t = true[i] - true_shift[i]
    s = sampled[i] - sampled_shift
    loss = -np.mean(log_sigmoid(t)) - np.sum(np.where(mask[i], log_sigmoid(-s), 0.0))
    out.append(loss)
  return np.array(out)


def ref_softmax(true, sampled, true_lec, sampled_lec, mask):
  out = []
  for i in range(true.shape[0]):
    t = true[i] - true_lec[i]
    s = (sampled[i] - sampled_lec)[mask[i]]
    z = np.concatenate([t, s])
    out.append(logsumexp(z) - np.mean(t))
  return np.array(out)


def ref_ranking(true, sampled, true_lec, sampled_lec, mask):
  out = []
  for i in range(true.shape[0]):
    t = true[i] - true_lec[i]
    s = (sampled[i] - sampled_lec)[mask[i]]
    out.append(np.mean([logsumexp(np.concatenate([[ti], s])) - ti for ti in t]))
  return np.array(out)


def test_nce_loss_matches_dense_formula():
  true, sampled, tlec, slec, mask = random_inputs(0)
  got = gradest.nce_loss(*as_jax(true, sampled, tlec, slec), sampled_mask=jnp.asarray(mask))
  assert_close(got, ref_binary(true, sampled, tlec, slec, mask))
  # A learned log-partition per example shifts every logit.
  log_z = np.array([0.5, -1.0, 2.0, 0.0])
  got = gradest.nce_loss(*as_jax(true, sampled, tlec, slec), log_partition=jnp.asarray(log_z))
  want = ref_binary(
    true - log_z[:, None], sampled - log_z[:, None], tlec, slec, np.ones_like(mask)
  )
  assert_close(got, want)


def test_nce_loss_one_true_class_is_tensorflows():
  """With one true class: sigmoid cross-entropy, label 1 for it, 0 for the negatives."""
  true, sampled, tlec, slec, _ = random_inputs(1, num_true=1)
  logits = np.concatenate([true - tlec, sampled - slec], axis=1)
  labels = np.concatenate([np.ones((B, 1)), np.zeros((B, K))], axis=1)
  xent = np.maximum(logits, 0) - logits * labels + np.log1p(np.exp(-np.abs(logits)))
  got = gradest.nce_loss(*as_jax(true, sampled, tlec, slec))
  assert_close(got, xent.sum(1))


def test_negative_sampling_is_nce_without_the_correction():
  true, sampled, _, _, mask = random_inputs(2)
  got = gradest.negative_sampling_loss(*as_jax(true, sampled), sampled_mask=jnp.asarray(mask))
  want = ref_binary(true, sampled, np.zeros_like(true), np.zeros(K), mask)
  assert_close(got, want)
  np.testing.assert_allclose(
    got, gradest.nce_loss(*as_jax(true, sampled), 0.0, 0.0, sampled_mask=mask), rtol=1e-6
  )


def test_sampled_softmax_and_ranking_match_dense_formulas():
  true, sampled, tlec, slec, mask = random_inputs(3)
  args = as_jax(true, sampled, tlec, slec)
  got = gradest.sampled_softmax_loss(*args, sampled_mask=jnp.asarray(mask))
  assert_close(got, ref_softmax(true, sampled, tlec, slec, mask))
  got = gradest.ranking_nce_loss(*args, sampled_mask=jnp.asarray(mask))
  assert_close(got, ref_ranking(true, sampled, tlec, slec, mask))
  # One true class: the two coincide.
  one = as_jax(true[:, :1], sampled, tlec[:, :1], slec)
  np.testing.assert_allclose(
    gradest.ranking_nce_loss(*one), gradest.sampled_softmax_loss(*one), rtol=1e-6
  )


def test_infonce_matches_dense_formula():
  rng = np.random.default_rng(4)
  a, p = rng.normal(size=(5, 3)), rng.normal(size=(5, 3))
  shared, per = rng.normal(size=(4, 3)), rng.normal(size=(5, 2, 3))
  tau = 0.7

  def ref(a, p, negatives=None, in_batch=True):
    out = []
    for i in range(a.shape[0]):
      cands = list(p) if in_batch else [p[i]]
      if negatives is not None:
        cands += list(negatives if negatives.ndim == 2 else negatives[i])
      sims = np.array([a[i] @ c for c in cands]) / tau
      out.append(logsumexp(sims) - a[i] @ p[i] / tau)
    return np.array(out)

  a32, p32 = as_jax(a, p)
  assert_close(gradest.infonce_loss(a32, p32, temperature=tau), ref(a, p))
  for neg in (shared, per):
    got = gradest.infonce_loss(a32, p32, negatives=jnp.asarray(neg, jnp.float32), temperature=tau)
    assert_close(got, ref(a, p, neg))
    got = gradest.infonce_loss(
      a32, p32, negatives=jnp.asarray(neg, jnp.float32), temperature=tau, in_batch=False
    )
    assert_close(got, ref(a, p, neg, in_batch=False))
  unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)  # noqa: E731
  got = gradest.infonce_loss(a32, p32, temperature=tau, normalize=True)
  assert_close(got, ref(unit(a), unit(p)))
  got = gradest.infonce_loss(a32, p32, temperature=tau, symmetric=True)
  assert_close(got, 0.5 * (ref(a, p) + ref(p, a)))


def test_gradients_match_finite_differences():
  true, sampled, tlec, slec, mask = as_jax(*random_inputs(5))
  losses = {
    "nce": lambda t, s: gradest.nce_loss(t, s, tlec, slec, sampled_mask=mask).sum(),
    "negative_sampling": lambda t, s: gradest.negative_sampling_loss(t, s).sum(),
    "sampled_softmax": lambda t, s: gradest.sampled_softmax_loss(
      t, s, tlec, slec, sampled_mask=mask
    ).sum(),
    "ranking_nce": lambda t, s: gradest.ranking_nce_loss(t, s, tlec, slec, sampled_mask=mask).sum(),
  }
  for fn in losses.values():
    check_grads(fn, (true, sampled), order=1, modes=["rev"], atol=2e-2, rtol=2e-2, eps=1e-2)
  a, p = true, sampled[:, :2]
  check_grads(
    lambda a, p: gradest.infonce_loss(a, p, temperature=0.5, normalize=True).sum(),
    (a, p), order=1, modes=["rev"], atol=2e-2, rtol=2e-2, eps=1e-2,
  )


def test_masked_negatives_do_not_contribute():
  true, sampled, tlec, slec, mask = as_jax(*random_inputs(6))
  changed = jnp.where(mask, sampled, 1e4)  # a huge logit where masked
  for loss in (gradest.nce_loss, gradest.sampled_softmax_loss, gradest.ranking_nce_loss):
    a = loss(true, sampled, tlec, slec, sampled_mask=mask)
    b = loss(true, changed, tlec, slec, sampled_mask=mask)
    np.testing.assert_allclose(a, b, rtol=1e-6)
    g = jax.grad(lambda s, loss=loss: loss(true, s, tlec, slec, sampled_mask=mask).sum())(changed)
    assert jnp.all(jnp.where(mask, True, g == 0.0)) and jnp.all(jnp.isfinite(g))
  # Every negative masked: the softmax losses fall back to the true classes alone.
  none = jnp.zeros_like(mask)
  alone = gradest.ranking_nce_loss(true, sampled, tlec, slec, sampled_mask=none)
  np.testing.assert_allclose(alone, 0.0, atol=1e-6)


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16])
@pytest.mark.numerics
def test_half_precision_is_finite(dtype):
  # Logits whose exp overflows any dtype, with losses that still fit in float16.
  big = 4000.0
  true = jnp.array([[big, -big], [0.0, 1.0]], dtype)
  sampled = jnp.array([[-big, big, 0.0], [big, big, -big]], dtype)
  tlec = jnp.log(jnp.array([[1e-9, 1.0], [1e-30, 0.0]]))  # tiny and zero expected counts
  slec = jnp.log(jnp.array([1e-12, 1.0, 3.0]))
  mask = jnp.array([[True, False, True], [True, True, False]])
  for name, loss in {
    "nce": functools.partial(gradest.nce_loss, true_log_expected_count=tlec,
                             sampled_log_expected_count=slec),
    "negative_sampling": gradest.negative_sampling_loss,
    "sampled_softmax": functools.partial(gradest.sampled_softmax_loss,
                                         true_log_expected_count=tlec,
                                         sampled_log_expected_count=slec),
    "ranking_nce": functools.partial(gradest.ranking_nce_loss, true_log_expected_count=tlec,
                                     sampled_log_expected_count=slec),
  }.items():
    value, grads = jax.value_and_grad(
      lambda t, s, loss=loss: loss(t, s, sampled_mask=mask).astype(jnp.float32).sum(),
      argnums=(0, 1),
    )(true, sampled)
    out = loss(true, sampled, sampled_mask=mask)
    assert out.dtype == dtype, name
    assert jnp.isfinite(value), name
    assert all(bool(jnp.isfinite(g.astype(jnp.float32)).all()) for g in grads), name
  x = jnp.ones((3, 4), dtype) * 100
  assert jnp.all(jnp.isfinite(gradest.infonce_loss(x, x, temperature=0.01)))
  # The whole output layer in half precision.
  h = jnp.ones((2, 8), dtype)
  w = jnp.ones((100, 8), dtype)
  loss = gradest.sampled_logits_loss(
    h, w, jnp.zeros(100, dtype), jnp.array([1, 2]), jax.random.key(0),
    sampler=LogUniformSampler(100), num_sampled=10, loss="nce",
  )
  assert loss.dtype == dtype and jnp.all(jnp.isfinite(loss))


def layer(seed=0, num_classes=300, dim=8, batch=5):
  k = jax.random.split(jax.random.key(seed), 4)
  w = jax.random.normal(k[0], (num_classes, dim))
  b = jax.random.normal(k[1], (num_classes,))
  h = jax.random.normal(k[2], (batch, dim))
  labels = jax.random.randint(k[3], (batch, 2), 0, num_classes)
  return h, w, b, labels


def test_sampled_logits_match_the_full_product():
  h, w, b, labels = layer()
  full = np.asarray(h @ w.T + b)
  sampled = jnp.array([3, 7, 7, 250])
  t, s = gradest.sampled_logits(h, w, b, labels, sampled)
  assert_close(t, np.take_along_axis(full, np.asarray(labels), 1))
  assert_close(s, full[:, np.asarray(sampled)])
  per = jax.random.randint(jax.random.key(9), (5, 4), 0, 300)
  _, s = gradest.sampled_logits(h, w, None, labels, per)
  np.testing.assert_allclose(
    s, np.take_along_axis(np.asarray(h @ w.T), np.asarray(per), 1), rtol=1e-5, atol=1e-6
  )
  np.testing.assert_allclose(
    gradest.full_softmax_loss(h, w, b, labels),
    logsumexp(full) - np.take_along_axis(full, np.asarray(labels), 1).mean(1),
    rtol=1e-5,
  )


@pytest.mark.parametrize("loss", gradest._src.nce.LOSSES)
def test_sampled_logits_loss_is_the_composition(loss):
  h, w, b, labels = layer(1)
  sampler = unigram_sampler(jnp.arange(300.0, 0.0, -1.0), 0.75)
  key = jax.random.key(2)
  got = gradest.sampled_logits_loss(
    h, w, b, labels, key, sampler=sampler, num_sampled=20, loss=loss, shared_negatives=False
  )
  c = sample_candidates(sampler, key, labels, 20, unique=True, shared_negatives=False)
  t, s = gradest.sampled_logits(h, w, b, labels, c.sampled)
  softmax = loss in ("sampled_softmax", "ranking_nce")
  mask = ~accidental_hits(labels, c.sampled) if softmax else None
  fn = {
    "nce": gradest.nce_loss,
    "sampled_softmax": gradest.sampled_softmax_loss,
    "ranking_nce": gradest.ranking_nce_loss,
  }.get(loss)
  if fn is None:
    want = gradest.negative_sampling_loss(t, s, sampled_mask=mask)
  else:
    want = fn(t, s, c.true_log_expected_count, c.sampled_log_expected_count, sampled_mask=mask)
  np.testing.assert_allclose(got, want, rtol=1e-6)
  # Precomputed candidates give the same loss.
  again = gradest.sampled_logits_loss(
    h, w, b, labels, None, sampler=sampler, num_sampled=20, loss=loss, candidates=c
  )
  np.testing.assert_allclose(again, got, rtol=1e-6)


@pytest.mark.parametrize("loss", ["sampled_softmax", "nce"])
def test_sparse_row_recipe_equals_the_dense_gradient(loss):
  """Gathered rows + candidate_sampling_loss: the loss of sampled_logits_loss, and the
  row gradients scattered back are jax.grad with respect to the whole table."""
  h, w, b, labels = layer(7)
  labels = labels[:, :1]
  sampler = LogUniformSampler(300)
  c = sample_candidates(sampler, jax.random.key(3), labels, 16, unique=True)
  ids = jnp.concatenate([labels[:, 0], c.sampled])
  local_true, local_sampled = jnp.arange(5)[:, None], jnp.arange(5, 21)

  def row_loss(rows, row_biases):
    t, s = gradest.sampled_logits(h, rows, row_biases, local_true, local_sampled)
    return gradest.candidate_sampling_loss(t, s, labels, c, loss=loss).sum()

  def dense_loss(w, b):
    return gradest.sampled_logits_loss(
      h, w, b, labels, None, sampler=sampler, num_sampled=16, loss=loss, candidates=c
    ).sum()

  value, (g_rows, g_biases) = jax.jit(jax.value_and_grad(row_loss, (0, 1)))(w[ids], b[ids])
  dense_value, (g_w, g_b) = jax.value_and_grad(dense_loss, (0, 1))(w, b)
  assert_close(value, dense_value)
  assert_close(jnp.zeros_like(w).at[ids].add(g_rows), g_w)
  assert_close(jnp.zeros_like(b).at[ids].add(g_biases), g_b)
  per_key = jax.vmap(
    lambda t: gradest.candidate_sampling_loss(t, jnp.zeros((5, 16)), labels, c, loss=loss)
  )(jnp.zeros((3, 5, 1)))
  assert per_key.shape == (3, 5)
  with pytest.raises(ValueError, match="loss must be one of"):
    gradest.candidate_sampling_loss(jnp.zeros((5, 1)), jnp.zeros((5, 16)), labels, c, loss="x")
  with pytest.raises(ValueError, match="labels must have shape batch"):
    gradest.candidate_sampling_loss(jnp.zeros((5, 1)), jnp.zeros((5, 16)), labels[:2], c)
  with pytest.raises(TypeError, match="candidates must be a gradest.samplers.Candidates"):
    gradest.candidate_sampling_loss(jnp.zeros((5, 1)), jnp.zeros((5, 16)), labels, c.sampled)


def test_accidental_hits_are_removed_by_default_for_the_softmax_losses():
  h, w, b, _ = layer(3, num_classes=5)
  labels = jnp.array([[0], [1], [2], [3], [4]])
  c = sample_candidates(UniformSampler(5), jax.random.key(0), labels, 5, unique=True)
  assert sorted(c.sampled.tolist()) == [0, 1, 2, 3, 4]  # every example has one hit
  kwargs = dict(sampler=UniformSampler(5), num_sampled=5, candidates=c)
  soft = gradest.sampled_logits_loss(h, w, b, labels, None, loss="sampled_softmax", **kwargs)
  t, s = gradest.sampled_logits(h, w, b, labels, c.sampled)
  hits = accidental_hits(labels, c.sampled)
  assert hits.sum() == 5
  np.testing.assert_allclose(
    soft,
    gradest.sampled_softmax_loss(
      t, s, c.true_log_expected_count, c.sampled_log_expected_count, sampled_mask=~hits
    ),
    rtol=1e-6,
  )
  kept = gradest.sampled_logits_loss(
    h, w, b, labels, None, loss="sampled_softmax", remove_accidental_hits=False, **kwargs
  )
  assert np.all(np.asarray(kept) > np.asarray(soft))  # the hit adds to the normalizer
  nce = gradest.sampled_logits_loss(h, w, b, labels, None, loss="nce", **kwargs)
  np.testing.assert_allclose(
    nce, gradest.nce_loss(t, s, c.true_log_expected_count, c.sampled_log_expected_count),
    rtol=1e-6,
  )


# -------------------------------------------------------------------------------------
# Consistency: NCE fits an unnormalized log-linear model and its log-partition.
# -------------------------------------------------------------------------------------

NUM_WORDS, NUM_FEATURES, NOISE_RATIO, REPLICATES = 50, 4, 5, 24


def log_linear_problem():
  rng = np.random.default_rng(7)
  features = rng.normal(size=(NUM_WORDS, NUM_FEATURES))
  beta = rng.normal(size=NUM_FEATURES)
  scores = features @ beta
  log_z = logsumexp(scores)
  return jnp.asarray(features, jnp.float32), scores - log_z, float(log_z), beta


def fit(objective, num_params, steps=15):
  """Damped Newton on a convex objective of a few parameters, from zero.

  Each step takes the largest of the steps 1, 1/2, ..., 1/2^7 along the Newton
  direction that does not increase the objective.
  """
  grad, hess = jax.grad(objective), jax.hessian(objective)
  scales = 0.5 ** jnp.arange(8.0)

  def newton(_, params):
    direction = jnp.linalg.solve(hess(params) + 1e-6 * jnp.eye(num_params), grad(params))
    values = jax.vmap(lambda t: objective(params - t * direction))(scales)
    ok = values <= objective(params)
    step = jnp.where(jnp.any(ok), scales[jnp.argmax(ok)], 0.0)
    return params - step * direction

  return jax.lax.fori_loop(0, steps, newton, jnp.zeros(num_params))


def nce_fits(num_data, key, loss_name="nce"):
  """REPLICATES independent NCE fits with num_data observations each.

  Model: s(w) = phi(w) . beta, log Z a free parameter; noise q = unigram of a flat-ish
  distribution, NOISE_RATIO noise words per observation.
  """
  features, log_p, _, _ = log_linear_problem()
  noise = unigram_sampler(jnp.exp(0.3 * jnp.asarray(log_p)), 1.0)

  def one(key):
    data_key, noise_key = jax.random.split(key)
    data = jax.random.categorical(data_key, jnp.asarray(log_p, jnp.float32), shape=(num_data,))
    negatives = noise.sample(noise_key, (num_data, NOISE_RATIO))
    true_lec = noise.log_expected_count(data, NOISE_RATIO)[:, None]
    sampled_lec = noise.log_expected_count(negatives, NOISE_RATIO)

    def objective(params):
      beta, log_z = params[:NUM_FEATURES], params[NUM_FEATURES]
      t = (features[data] @ beta)[:, None]
      s = features[negatives] @ beta
      if loss_name == "nce":
        loss = gradest.nce_loss(t, s, true_lec, sampled_lec, log_partition=log_z)
      else:
        loss = gradest.negative_sampling_loss(t - log_z, s - log_z)
      return jnp.mean(loss)

    params = fit(objective, NUM_FEATURES + 1)
    model_log_p = features @ params[:NUM_FEATURES] - params[NUM_FEATURES]
    return jnp.exp(model_log_p), params[NUM_FEATURES]

  return jax.jit(jax.vmap(one))(jax.random.split(key, REPLICATES))


def test_nce_recovers_normalized_probabilities_and_log_partition():
  _, log_p, log_z, _ = log_linear_problem()
  p = np.exp(log_p)
  errors = {}
  for num_data in (300, 4800):
    probs, log_zs = nce_fits(num_data, jax.random.key(num_data))
    probs, log_zs = np.asarray(probs, np.float64), np.asarray(log_zs, np.float64)
    # Consistent: the mean fit is within z standard errors of the truth (its O(1/n)
    # finite-sample bias is far below the standard error of 24 replicates).
    se = probs.std(0, ddof=1) / math.sqrt(REPLICATES)
    z = z_value(NUM_WORDS + 1)
    assert np.all(np.abs(probs.mean(0) - p) <= z * se), (num_data,)
    se_z = log_zs.std(ddof=1) / math.sqrt(REPLICATES)
    assert abs(log_zs.mean() - log_z) <= z * se_z
    # The learned model is normalized without ever summing over the classes.
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=0.15 if num_data == 300 else 0.04)
    errors[num_data] = np.mean(np.sum((probs - p) ** 2, axis=1))
  # The error shrinks with the data: 16x the data, about 1/16 the squared error.
  assert errors[4800] < errors[300] / 6, errors


def test_negative_sampling_does_not_recover_the_probabilities():
  """The same fit with negative sampling converges elsewhere: its bias does not shrink."""
  _, log_p, _, _ = log_linear_problem()
  p = np.exp(log_p)
  probs, _ = nce_fits(4800, jax.random.key(1), loss_name="negative_sampling")
  probs = np.asarray(probs, np.float64)
  se = probs.std(0, ddof=1) / math.sqrt(REPLICATES)
  assert np.max(np.abs(probs.mean(0) - p) / np.maximum(se, 1e-12)) > 20


def test_sampled_softmax_gradient_approaches_the_full_gradient():
  """The squared bias of the sampled-softmax gradient falls as num_sampled grows.

  ``|mean - g|^2 - tr(Cov)/R`` is an unbiased estimate of the squared bias of one
  estimate, from ``R`` replicates. Draws with replacement and accidental hits kept: the
  estimator whose normalizer is consistent as ``k`` grows (see ``sampled_logits_loss``).
  """
  h, w, b, labels = layer(4, num_classes=200, dim=8, batch=16)
  w, labels = 0.3 * w, labels[:, :1]
  sampler = unigram_sampler(jnp.exp(-0.02 * jnp.arange(200.0)), 1.0)
  full = jax.grad(lambda h: gradest.full_softmax_loss(h, w, b, labels).sum())(h).ravel()
  reps = 400
  bias2, noise = {}, {}
  for k in (4, 32, 256):

    def estimate(key, k=k):
      return jax.grad(
        lambda h: gradest.sampled_logits_loss(
          h, w, b, labels, key, sampler=sampler, num_sampled=k, loss="sampled_softmax",
          unique=False, remove_accidental_hits=False,
        ).sum()
      )(h).ravel()

    g = np.asarray(jax.jit(jax.vmap(estimate))(jax.random.split(jax.random.key(k), reps)))
    noise[k] = g.var(0, ddof=1).sum() / reps
    bias2[k] = float(np.sum((g.mean(0) - full) ** 2) - noise[k])
  assert bias2[4] > 10 * noise[4]  # a real bias at small k ...
  assert bias2[32] < bias2[4] / 4  # ... that falls with k
  assert bias2[256] < bias2[32] / 4
  assert bias2[256] < 0.01 * float(np.sum(full**2))  # under 10% of the gradient's norm


def test_jit_and_vmap():
  true, sampled, tlec, slec, mask = as_jax(*random_inputs(8))
  for loss in (gradest.nce_loss, gradest.sampled_softmax_loss, gradest.ranking_nce_loss):
    eager = loss(true, sampled, tlec, slec, sampled_mask=mask)
    np.testing.assert_allclose(
      jax.jit(loss)(true, sampled, tlec, slec, sampled_mask=mask), eager, rtol=1e-6
    )
    mapped = jax.vmap(lambda t, s, m, loss=loss: loss(t, s, 0.0, slec, sampled_mask=m))(
      true, sampled, mask
    )
    assert mapped.shape == (B,)
  assert jax.vmap(gradest.negative_sampling_loss)(true, sampled).shape == (B,)
  x = jnp.ones((3, 2, 4))
  assert jax.vmap(lambda a: gradest.infonce_loss(a, a))(x).shape == (3, 2)
  h, w, b, labels = layer(5)
  sampler = LogUniformSampler(300)

  @jax.jit
  def step(h, w, b, key):
    return jax.grad(
      lambda h, w, b: gradest.sampled_logits_loss(
        h, w, b, labels, key, sampler=sampler, num_sampled=16, loss="nce"
      ).mean(),
      argnums=(0, 1, 2),
    )(h, w, b)

  grads = step(h, w, b, jax.random.key(0))
  assert [g.shape for g in grads] == [h.shape, w.shape, b.shape]
  # Rows that were neither true nor sampled get no gradient.
  assert int(jnp.sum(jnp.any(grads[1] != 0, axis=1))) <= labels.size + 16
  keys = jax.random.split(jax.random.key(1), 3)
  batched = jax.vmap(
    lambda k: gradest.sampled_logits_loss(h, w, b, labels, k, sampler=sampler, num_sampled=8)
  )(keys)
  assert batched.shape == (3, 5)


def test_bad_input():
  true, sampled, tlec, slec, mask = as_jax(*random_inputs(9))
  with pytest.raises(ValueError, match="share their batch shape"):
    gradest.nce_loss(true, sampled[:2], tlec, slec)
  with pytest.raises(ValueError, match="sampled_log_expected_count of shape"):
    gradest.sampled_softmax_loss(true, sampled, tlec, jnp.zeros(K + 1))
  with pytest.raises(TypeError, match="sampled_mask must be boolean"):
    gradest.ranking_nce_loss(true, sampled, tlec, slec, sampled_mask=mask.astype(jnp.int32))
  with pytest.raises(TypeError, match="true_logits must be a floating-point"):
    gradest.negative_sampling_loss(jnp.ones((2, 1), jnp.int32), jnp.ones((2, 3)))
  with pytest.raises(ValueError, match="log_partition of shape"):
    gradest.nce_loss(true, sampled, tlec, slec, log_partition=jnp.zeros(3))
  with pytest.raises(ValueError, match="temperature must be > 0"):
    gradest.infonce_loss(true, true, temperature=0.0)
  with pytest.raises(ValueError, match="anchors and positives"):
    gradest.infonce_loss(true, sampled)
  with pytest.raises(ValueError, match="negatives must have shape"):
    gradest.infonce_loss(true, true, negatives=jnp.ones((3, 5)))
  with pytest.raises(ValueError, match="needs negatives"):
    gradest.infonce_loss(true, true, in_batch=False)
  h, w, b, labels = layer(6)
  sampler = LogUniformSampler(300)
  call = functools.partial(
    gradest.sampled_logits_loss, key=jax.random.key(0), sampler=sampler, num_sampled=8
  )
  with pytest.raises(ValueError, match="num_sampled must be >= 1"):
    call(h, w, b, labels, num_sampled=0)
  with pytest.raises(ValueError, match="labels must lie in"):
    call(h, w, b, labels.at[0, 0].set(300))
  with pytest.raises(ValueError, match="labels must lie in"):
    call(h, w, b, labels.at[0, 0].set(-1))
  with pytest.raises(ValueError, match="weights must have shape"):
    call(h, w[:, :3], b, labels)
  with pytest.raises(ValueError, match="biases must have shape"):
    call(h, w, b[:10], labels)
  with pytest.raises(ValueError, match="labels must have shape batch"):
    call(h, w, b, labels[:3])
  with pytest.raises(ValueError, match="num_true=3 does not match"):
    call(h, w, b, labels, num_true=3)
  with pytest.raises(ValueError, match="sampler.num_classes=100"):
    call(h, w, b, labels, sampler=LogUniformSampler(100))
  with pytest.raises(ValueError, match="loss must be one of"):
    call(h, w, b, labels, loss="softmax")
  with pytest.raises(ValueError, match="log_partition is an NCE parameter"):
    call(h, w, b, labels, loss="sampled_softmax", log_partition=0.0)
  with pytest.raises(ValueError, match="key is needed"):
    call(h, w, b, labels, key=None)
  with pytest.raises(TypeError, match="sampler must be a gradest sampler"):
    call(h, w, b, labels, sampler="log_uniform")
