"""VIMCO against exact enumeration, its surrogate, and REBAR/RELAX's control-variate gradient.

As in ``test_discrete.py``, each group of estimates is one ``jax.jit`` program run once
(``functools.cache``): compiling dominates the cost of these toy problems.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradest
from gradest.distributions import Bernoulli, OneHotCategorical

from .helpers import FALSE_FAILURE, assert_unbiased, z_value

# --------------------------------------------------------------------------------------
# VIMCO: unbiased for the gradient of E[log (1/K) sum_k exp w_k].
# --------------------------------------------------------------------------------------

K = 3
M = 20000  # independent VIMCO estimates (K samples each)
T3 = jnp.array([0.2, 0.7, 0.45])


def log_weight(b):
  """A Bernoulli log-weight (e.g. log p(x, b)), non-separable."""
  return -2.0 * jnp.sum((b - T3) ** 2) + 0.8 * b[0] * b[1]


CAT_W = jnp.array([[1.0, -2.0, 0.5], [0.3, 2.0, -1.0]])


def categorical_log_weight(y):
  return jnp.sum(y * CAT_W) - 1.5 * jnp.sum(y[0] * y[1])


def bernoulli_log_prob(logits, b):
  return jnp.sum(b * jax.nn.log_sigmoid(logits) + (1.0 - b) * jax.nn.log_sigmoid(-logits))


def categorical_log_prob(logits, y):
  return jnp.sum(y * jax.nn.log_softmax(logits, axis=-1))


FAMILIES = {"bernoulli": Bernoulli, "categorical": OneHotCategorical}
VIMCO_PROBLEMS = {  # name: (f, logits, family, importance_weighted)
  "bernoulli": (log_weight, jnp.array([0.3, -1.0, 2.0]), "bernoulli", False),
  "bernoulli_large": (log_weight, jnp.array([4.0, -4.0, 0.5]), "bernoulli", False),
  "bernoulli_iw": (log_weight, jnp.array([0.3, -1.0, 2.0]), "bernoulli", True),
  "bernoulli_large_iw": (log_weight, jnp.array([4.0, -4.0, 0.5]), "bernoulli", True),
  "categorical": (
    categorical_log_weight,
    jnp.array([[0.5, -1.0, 0.2], [0.0, 1.0, -2.0]]),
    "categorical",
    False,
  ),
  "categorical_iw": (
    categorical_log_weight,
    jnp.array([[0.5, -1.0, 0.2], [0.0, 4.0, -2.0]]),
    "categorical",
    True,
  ),
}


def exact_vimco_objective(logits, f, family, importance_weighted):
  """E[log (1/K) sum_k exp w_k] by enumeration: the K i.i.d. copies are one discrete
  variable of shape (K,) + logits.shape whose cost is the logmeanexp over its rows, with
  w_k = f(b_k) - log q_logits(b_k) for the importance-weighted bound (the log q depends
  on the logits: jax.grad of this differentiates through it too)."""
  log_prob = bernoulli_log_prob if family == "bernoulli" else categorical_log_prob

  def objective(samples):
    w = jax.vmap(f)(samples)
    if importance_weighted:
      w = w - jax.vmap(lambda b: log_prob(logits, b))(samples)
    return jax.nn.logsumexp(w) - math.log(K)

  copies = jnp.broadcast_to(logits, (K,) + logits.shape)
  return gradest.exact_expectation(objective, FAMILIES[family](copies))


_exact_vimco = jax.jit(jax.value_and_grad(exact_vimco_objective), static_argnums=(1, 2, 3))


@functools.cache
def exact_vimco(name):
  f, logits, family, iw = VIMCO_PROBLEMS[name]
  return _exact_vimco(logits, f, family, iw)


@jax.jit
def _vimco_program(key):
  keys = jax.random.split(key, M)
  out = {}
  for name, (f, logits, family, iw) in VIMCO_PROBLEMS.items():
    estimator = functools.partial(
      gradest.vimco_grad, f, FAMILIES[family], num_samples=K, importance_weighted=iw
    )
    out[name] = jax.vmap(lambda k, est=estimator, lg=logits: est(lg, k))(keys)
  return out


@functools.cache
def vimco_results():
  return jax.device_get(_vimco_program(jax.random.key(0)))


@pytest.mark.parametrize("name", sorted(VIMCO_PROBLEMS))
def test_vimco_unbiased(name):
  _, logits, _, _ = VIMCO_PROBLEMS[name]
  est = vimco_results()[name]
  assert est.grad.shape == (M,) + logits.shape
  assert est.values.shape == (M, K)
  # per_sample: K times each sample's term, whose mean over the K samples is the estimate.
  assert est.per_sample.shape == (M, K) + logits.shape
  np.testing.assert_allclose(est.per_sample.mean(1), est.grad, rtol=1e-5, atol=1e-6)
  value, grad = exact_vimco(name)
  # Over M independent keys the estimates average to the exact gradient ...
  assert_unbiased(est.grad, grad)
  # ... and the objective log (1/K) sum_k exp(values_k) to its exact expectation.
  objective = jax.nn.logsumexp(est.values, axis=1) - math.log(K)
  assert_unbiased(objective, value)


def assert_biased_mean(samples, wrong, *, false_failure=FALSE_FAILURE):
  s = np.asarray(samples, np.float64)
  se = s.std(0, ddof=1) / math.sqrt(s.shape[0])
  gap = np.abs(s.mean(0) - np.asarray(wrong, np.float64))
  assert np.any(gap > z_value(gap.size, false_failure) * se), gap / se


def test_vimco_importance_weighting_matters():
  """The two exact references differ, so the unbiasedness tests tell them apart."""
  for plain, weighted in (("bernoulli", "bernoulli_iw"), ("bernoulli_large", "bernoulli_large_iw")):
    assert np.abs(exact_vimco(plain)[1] - exact_vimco(weighted)[1]).max() > 0.05
    assert_biased_mean(vimco_results()[weighted].grad, exact_vimco(plain)[1])


def test_vimco_is_deterministic():
  a = vimco_results()
  b = jax.device_get(_vimco_program(jax.random.key(0)))
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_array_equal(x, y)


# --------------------------------------------------------------------------------------
# The VIMCO surrogate.
# --------------------------------------------------------------------------------------

CODE = jnp.array([1.0, 2.0, 4.0])


def encoding_log_weight(b):
  """Distinct for each of the 8 states, so the samples can be read back from ``values``."""
  return 0.3 * (b @ CODE) - 1.0


SURROGATE_LOGITS = jnp.array([0.3, -1.0, 2.0])


def _surrogate_case(logits, key, num_samples):
  def run(iw):
    return gradest.vimco_grad(
      encoding_log_weight, Bernoulli, logits, key, num_samples, importance_weighted=iw
    )

  def objective(lg, iw):
    return gradest.vimco_objective(
      encoding_log_weight, Bernoulli(lg), key, num_samples, importance_weighted=iw
    )

  plain, weighted = run(False), run(True)
  # The samples, decoded from the plain log-weights (sampling does not depend on iw).
  codes = jnp.round((plain.values + 1.0) / 0.3).astype(jnp.int32)
  samples = ((codes[:, None] >> jnp.arange(3)) & 1).astype(logits.dtype)

  def surrogate(lg, iw):
    log_q = jax.vmap(bernoulli_log_prob, (None, 0))(lg, samples)
    w = jax.vmap(encoding_log_weight)(samples)
    return gradest.vimco_surrogate(w - log_q if iw else w, log_q)

  return {
    "plain": plain,
    "weighted": weighted,
    "samples": samples,
    "encoded": jax.vmap(encoding_log_weight)(samples),
    "log_q": jax.vmap(bernoulli_log_prob, (None, 0))(logits, samples),
    "surrogate_value": surrogate(logits, False),
    "surrogate_grad": jax.grad(surrogate)(logits, False),
    "surrogate_grad_iw": jax.grad(surrogate)(logits, True),
    "objective": {iw: jax.value_and_grad(objective)(logits, iw) for iw in (False, True)},
    "mean_only": gradest.vimco_grad(
      encoding_log_weight, Bernoulli, logits, key, num_samples, return_per_sample=False
    ),
  }


def _surrogate_batch(lw, lq):
  total = lambda a, b: jnp.sum(gradest.vimco_surrogate(a, b))
  column = jax.grad(lambda a, b: gradest.vimco_surrogate(a, b), (0, 1))
  return (
    gradest.vimco_surrogate(lw, lq),
    jax.grad(total, (0, 1))(lw, lq),
    jax.vmap(column, 1)(lw, lq),
  )


@jax.jit
def _surrogate_program(logits, key, lw, lq):
  out = {f"k{n}": _surrogate_case(logits, key, n) for n in (2, 5)}
  out["batch"] = _surrogate_batch(lw, lq)
  return out


BATCH_LW = jax.random.normal(jax.random.key(3), (4, 3))
BATCH_LQ = jax.random.normal(jax.random.key(4), (4, 3))


@functools.cache
def surrogate_results():
  return jax.device_get(_surrogate_program(SURROGATE_LOGITS, jax.random.key(0), BATCH_LW, BATCH_LQ))


def vimco_by_hand(logits, samples, w):
  """sum_k (L - L_{-k}) (b_k - sigma(l)), L_{-k} = log((sum_{j!=k} e^w_j + e^{mean_{j!=k} w})/K),
  in float64 numpy (the non-importance-weighted case, where w does not depend on l)."""
  w = np.asarray(w, np.float64)
  k = w.size
  objective = np.log(np.mean(np.exp(w)))
  grad = 0.0
  for i in range(k):
    others = np.delete(w, i)
    baseline = np.log((np.sum(np.exp(others)) + np.exp(others.mean())) / k)
    score = np.asarray(samples[i], np.float64) - 1.0 / (1.0 + np.exp(-np.asarray(logits)))
    grad = grad + (objective - baseline) * score
  return objective, grad


@pytest.mark.parametrize("num_samples", [2, 5])
def test_vimco_surrogate_matches_vimco_grad(num_samples):
  out = surrogate_results()[f"k{num_samples}"]
  samples, plain, weighted = out["samples"], out["plain"], out["weighted"]
  np.testing.assert_allclose(out["encoded"], plain.values, atol=1e-6)
  np.testing.assert_allclose(weighted.values, plain.values - out["log_q"], rtol=1e-6, atol=1e-6)
  # Value: logmeanexp; gradient: VIMCO's, for the same samples.
  value, grad = vimco_by_hand(SURROGATE_LOGITS, samples, plain.values)
  np.testing.assert_allclose(out["surrogate_value"], value, rtol=1e-6)
  np.testing.assert_allclose(out["surrogate_grad"], plain.grad, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(plain.grad, grad, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(out["surrogate_grad_iw"], weighted.grad, rtol=1e-5, atol=1e-6)
  # per_sample: K times each sample's term; grad is their mean, also without them.
  assert plain.per_sample.shape == (num_samples,) + SURROGATE_LOGITS.shape
  np.testing.assert_allclose(plain.per_sample.mean(0), plain.grad, rtol=1e-5, atol=1e-6)
  assert out["mean_only"].per_sample is None
  np.testing.assert_allclose(out["mean_only"].grad, plain.grad, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("num_samples", [2, 5])
def test_vimco_objective_matches_vimco_grad(num_samples):
  """The objective level: the same samples, value logmeanexp(w), gradient VIMCO's."""
  out = surrogate_results()[f"k{num_samples}"]
  for iw, est in ((False, out["plain"]), (True, out["weighted"])):
    value, grad = out["objective"][iw]
    expected = jax.nn.logsumexp(est.values) - math.log(num_samples)
    np.testing.assert_allclose(value, expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(grad, est.grad, rtol=1e-5, atol=1e-6)


def test_vimco_surrogate_value_and_batch():
  lw = BATCH_LW
  value, grads, columns = surrogate_results()["batch"]
  np.testing.assert_allclose(value, jax.nn.logsumexp(lw, axis=0) - math.log(4), rtol=1e-6)
  # A batch axis is independent problems: the gradient of the sum is column by column.
  np.testing.assert_allclose(grads[0], columns[0].T, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(grads[1], columns[1].T, rtol=1e-5, atol=1e-7)
  # d/dw is the self-normalized weights; d/d(log q) the learning signals L - L_{-k}.
  w = np.asarray(lw, np.float64)
  np.testing.assert_allclose(grads[0], np.exp(w) / np.exp(w).sum(0), rtol=1e-5, atol=1e-7)
  for j in range(3):
    col = w[:, j]
    signals = [
      np.log(np.mean(np.exp(col)))
      - np.log((np.sum(np.exp(np.delete(col, k))) + np.exp(np.delete(col, k).mean())) / 4)
      for k in range(4)
    ]
    np.testing.assert_allclose(grads[1][:, j], signals, rtol=1e-5, atol=1e-6)


def test_vimco_surrogate_errors():
  with pytest.raises(ValueError, match="same shape"):
    gradest.vimco_surrogate(jnp.zeros((4, 2)), jnp.zeros((4,)))
  with pytest.raises(ValueError, match="K >= 2"):
    gradest.vimco_surrogate(jnp.zeros((1, 3)), jnp.zeros((1, 3)))
  with pytest.raises(ValueError, match="K >= 2"):
    gradest.vimco_surrogate(jnp.float32(0.0), jnp.float32(0.0))


def test_vimco_errors(key):
  logits = jnp.array([0.3, -1.0, 2.0])
  with pytest.raises(ValueError, match="num_samples must be >= 2"):
    gradest.vimco_grad(log_weight, Bernoulli, logits, key, 1)
  with pytest.raises(ValueError, match="num_samples must be >= 2"):
    gradest.vimco_objective(log_weight, Bernoulli(logits), key, 1)
  with pytest.raises(TypeError, match="num_samples must be a Python int"):
    gradest.vimco_grad(log_weight, Bernoulli, logits, key, 3.0)
  with pytest.raises(ValueError, match="OneHotCategorical logits must have shape"):
    gradest.vimco_grad(jnp.sum, OneHotCategorical, jnp.zeros((3, 1)), key, 3)
  with pytest.raises(ValueError, match="f must map one sample to a scalar"):
    gradest.vimco_grad(lambda b: b, Bernoulli, logits, key, 3)


# --------------------------------------------------------------------------------------
# REBAR / RELAX: cv_grad is the gradient of the mean squared norm of the estimates.
# --------------------------------------------------------------------------------------

T4 = jnp.array([0.1, 0.6, 0.45, 0.9])


def cost4(b):
  return jnp.sum((b - T4) ** 2) + 1.5 * b[0] * b[1] - b[2] * b[3]


def mlp(rho, z):
  return jnp.tanh(z.reshape(-1) @ rho["w1"] + rho["b1"]) @ rho["w2"]


def network_params(size, seed, hidden=4, scale=0.5):
  k1, k2 = jax.random.split(jax.random.key(seed))
  return dict(
    w1=scale * jax.random.normal(k1, (size, hidden)),
    b1=0.1 * jnp.ones(hidden),
    w2=scale * jax.random.normal(k2, (hidden,)),
  )


CV4 = gradest.relax_control_variate(cost4, mlp, family="bernoulli")
LOGITS4 = jnp.array([0.5, -1.5, 3.0, -0.2])
CV_N = 64


def constant_cv(params, z):
  return params["c"] + 0.0 * jnp.sum(z)


def _mean_squared_norm(per_sample):
  return jnp.mean(jnp.sum(per_sample.reshape(per_sample.shape[0], -1) ** 2, axis=1))


@jax.jit
def _cv_program(logits, key, rebar_params, relax_params, c):
  rebar = lambda p: gradest.rebar_grad(cost4, Bernoulli, logits, key, CV_N, cv_params=p)
  relax = lambda p: gradest.relax_grad(cost4, Bernoulli, logits, key, CV_N, cv_fn=CV4, cv_params=p)

  def relax_objective(lg, p):
    return gradest.relax_objective(cost4, Bernoulli(lg), key, CV_N, cv_fn=CV4, cv_params=p)

  def rebar_objective(lg, p):
    return gradest.rebar_objective(cost4, Bernoulli(lg), key, CV_N, cv_params=p)

  return {
    "rebar": rebar(rebar_params),
    "relax": relax(relax_params),
    # The same quantity recomputed: jax.grad of the mean squared per-sample norm, with
    # per_sample recomputed through the estimator as a function of the parameters.
    "relax_check": jax.grad(lambda p: _mean_squared_norm(relax(p).per_sample))(relax_params),
    "constant": gradest.relax_grad(
      cost4, Bernoulli, logits, key, CV_N, cv_fn=constant_cv, cv_params={"c": c}
    ),
    "rebar_eta0": rebar(gradest.init_rebar_params(eta=0.0)),
    # The objective level, differentiated with respect to the logits and cv_params.
    "relax_objective": jax.value_and_grad(relax_objective, (0, 1))(logits, relax_params),
    "rebar_objective": jax.value_and_grad(rebar_objective, (0, 1))(logits, rebar_params),
    "rebar_objective_default": jax.grad(rebar_objective)(logits, None),
  }


C = -1.0  # a constant control variate far from the best constant: a large d/dc


@functools.cache
def cv_results():
  relax_params = dict(gradest.init_rebar_params(0.8, 0.7), network=network_params(4, 5))
  return jax.device_get(
    _cv_program(
      LOGITS4,
      jax.random.key(0),
      gradest.init_rebar_params(1.3, 0.3),
      relax_params,
      jnp.float32(C),
    )
  )


def test_cv_grad_is_the_gradient_of_the_mean_squared_estimate():
  """RELAX's cv_grad (whose control variate contains REBAR's, eta and log_temperature)."""
  out = cv_results()
  est, check = out["relax"], out["relax_check"]
  assert isinstance(est, gradest.GradEstimate)
  cv_grad = est.aux["cv_grad"]
  assert jax.tree.structure(cv_grad) == jax.tree.structure(check)
  assert sorted(cv_grad)[:2] == ["eta", "log_temperature"]
  for got, want in zip(jax.tree.leaves(cv_grad), jax.tree.leaves(check), strict=True):
    assert got.shape == want.shape
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * np.abs(want).max())
  assert np.abs(cv_grad["eta"]) > 0  # the control variate's scale matters
  assert est.per_sample.shape == (CV_N,) + LOGITS4.shape
  assert est.values.shape == (CV_N,)


def test_rebar_cv_grad_structure():
  est = cv_results()["rebar"]
  assert sorted(est.aux) == ["cv_grad"]
  assert sorted(est.aux["cv_grad"]) == ["eta", "log_temperature"]
  for leaf in jax.tree.leaves(est.aux["cv_grad"]):
    assert leaf.shape == () and np.isfinite(leaf) and leaf != 0.0
  np.testing.assert_allclose(est.grad, est.per_sample.mean(0), rtol=1e-5, atol=1e-6)


def test_relax_with_a_constant_control_variate_is_reinforce_with_that_baseline():
  """c(z) = c: no reparameterized terms, (f(b) - c) * score; d/dc E||g||^2 in closed form.

  REBAR with eta = 0 has a zero control variate: plain REINFORCE, f(b) * score, on the
  same samples (the same key, the same perturbation noise), so the score b - sigmoid(l)
  of each sample is (REBAR_eta0 - constant) / c, and b itself is read back from it.
  """
  out = cv_results()
  est, plain = out["constant"], out["rebar_eta0"]
  np.testing.assert_array_equal(est.values, plain.values)
  score = (np.asarray(plain.per_sample, np.float64) - est.per_sample) / C  # f s - (f - c) s
  b = score + np.asarray(jax.nn.sigmoid(LOGITS4), np.float64)
  np.testing.assert_allclose(b, np.round(b), atol=1e-5)  # an exact 0/1 sample
  b = np.round(b).astype(np.float32)
  np.testing.assert_allclose(est.values, jax.vmap(cost4)(jnp.asarray(b)), rtol=1e-6)
  values = np.asarray(est.values, np.float64)
  np.testing.assert_allclose(est.per_sample, (values - C)[:, None] * score, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(plain.per_sample, values[:, None] * score, rtol=1e-5, atol=1e-5)
  score_sq = np.sum(score**2, axis=1)
  cv_grad = est.aux["cv_grad"]
  np.testing.assert_allclose(cv_grad["c"], np.mean(-2.0 * (values - C) * score_sq), rtol=1e-4)
  # No temperature gradient at eta = 0 (eta multiplies everything the temperature touches).
  assert plain.aux["cv_grad"]["log_temperature"] == 0.0
  assert plain.aux["cv_grad"]["eta"] != 0.0


def test_objectives_give_the_estimate_and_cv_grad():
  """jax.grad of relax_objective / rebar_objective: the estimate for the logits and
  cv_grad for cv_params (the same samples from the same key); the value is the mean cost."""
  out = cv_results()
  for name in ("relax", "rebar"):
    est = out[name]
    value, (g_logits, g_cv) = out[f"{name}_objective"]
    np.testing.assert_allclose(value, est.values.mean(), rtol=1e-6)
    np.testing.assert_allclose(g_logits, est.grad, rtol=1e-5, atol=1e-6)
    cv_grad = est.aux["cv_grad"]
    assert jax.tree.structure(g_cv) == jax.tree.structure(cv_grad)
    for got, want in zip(jax.tree.leaves(g_cv), jax.tree.leaves(cv_grad), strict=True):
      np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  # REBAR's default parameters (cv_params=None) are init_rebar_params().
  default = gradest.rebar_grad(cost4, Bernoulli, LOGITS4, jax.random.key(0), CV_N)
  np.testing.assert_allclose(out["rebar_objective_default"], default.grad, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------------------
# A few Adam steps on cv_grad reduce the variance on the D = 100 toy.
# --------------------------------------------------------------------------------------

TOY_T = jnp.linspace(0.0, 1.0, 100)
TOY_LOGITS = jnp.linspace(-2.0, 2.0, 100)


def toy_cost(b):
  return jnp.sum((b - TOY_T) ** 2)


TOY_CV = gradest.relax_control_variate(toy_cost, mlp, family="bernoulli")
STEP_N = 256


@jax.jit
def _toy_relax(params, key):
  return gradest.relax_grad(
    toy_cost, Bernoulli, TOY_LOGITS, key, STEP_N, cv_fn=TOY_CV, cv_params=params
  )


def test_adam_on_cv_grad_reduces_the_variance(key):
  params = dict(gradest.init_rebar_params(), network=network_params(100, 7, hidden=8, scale=0.3))
  optimizer = optax.adam(0.05)
  update = jax.jit(optimizer.update)
  state = optimizer.init(params)
  trained = params
  train_key, eval_key = jax.random.split(key)
  for i in range(15):
    est = _toy_relax(trained, jax.random.fold_in(train_key, i))
    updates, state = update(est.aux["cv_grad"], state, trained)
    trained = optax.apply_updates(trained, updates)

  # Fresh keys, the same for both parameter sets: paired per-sample estimates.
  eval_keys = jax.random.split(eval_key, 8)
  before = np.concatenate([_toy_relax(params, k).per_sample for k in eval_keys])
  after = np.concatenate([_toy_relax(trained, k).per_sample for k in eval_keys])
  sq = lambda g: np.sum((g - g.mean(0)) ** 2, axis=1, dtype=np.float64)
  diff = sq(before) - sq(after)
  z = diff.mean() / (diff.std(ddof=1) / math.sqrt(diff.size))
  assert z > z_value(1), (sq(before).mean(), sq(after).mean(), z)
  assert sq(after).mean() < 0.5 * sq(before).mean()
  # Both parameter sets are unbiased: their mean estimates agree within noise.
  d = np.asarray(before - after, np.float64)
  assert_unbiased(d, np.zeros(100))


# --------------------------------------------------------------------------------------
# RELAX input errors.
# --------------------------------------------------------------------------------------


def test_relax_control_variate_errors(key):
  params = dict(gradest.init_rebar_params(), network=network_params(4, 5))
  with pytest.raises(ValueError, match="must return a scalar"):
    gradest.relax_grad(
      cost4, Bernoulli, LOGITS4, key, 4, cv_fn=lambda p, z: z * p["eta"], cv_params=params
    )
  with pytest.raises(TypeError, match=r"cv_fn\(cv_params, z\) failed"):
    gradest.relax_grad(
      cost4, Bernoulli, LOGITS4, key, 4, cv_fn=CV4, cv_params=gradest.init_rebar_params()
    )
  with pytest.raises(TypeError, match="cv_fn must be a function"):
    gradest.relax_grad(cost4, Bernoulli, LOGITS4, key, 4, cv_fn=None, cv_params=params)
  with pytest.raises(TypeError, match="family"):
    gradest.relax_control_variate(cost4, mlp)  # the relaxation depends on the family
  with pytest.raises(ValueError, match="temperature must be > 0"):
    gradest.init_rebar_params(temperature=0.0)
