"""Score function (REINFORCE-LOO), ARM, DisARM, straight-through, Gumbel-Rao, REBAR/RELAX
on Bernoulli and one-hot categorical distributions, and exact enumeration.

Statistical checks are against exact values (enumeration, closed forms or quadrature)
with tolerances from the estimators' own standard errors (see ``helpers.py``).

Compiling an estimator costs seconds on CPU (the per-sample PRNG splits dominate) while
running it on these toy costs costs milliseconds, so the estimators of one problem are
compiled together in one ``jax.jit`` program (they share the per-sample noise, which XLA
computes once), run once per problem (``functools.cache``) and the parametrized tests
read their results. Every program calls the public estimators with ``f``, ``dist_fn``
and ``num_samples`` static and the parameters, key, temperature and control-variate
parameters traced.

The contract every registry entry shares (jit, vmap, determinism, argument checks) is
tested over :data:`gradest.ESTIMATORS` elsewhere; this file holds what is specific to the
discrete estimators. VIMCO and the REBAR/RELAX control-variate gradient have their own
file, ``test_vimco_relax.py``.
"""

import functools
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, special

import gradest
from gradest.distributions import Bernoulli, Categorical, Normal, OneHotCategorical

from .helpers import (
  FALSE_FAILURE,
  assert_smaller_variance,
  assert_unbiased,
  assert_variance,
  z_value,
)

N = 20000  # independent rows for the unbiasedness checks


@functools.cache
def _exact_grad(f, dist_fn=Bernoulli):
  return jax.jit(functools.partial(gradest.exact_grad, f, dist_fn))


def assert_grad_is_mean(est):
  """``grad`` is the float32 mean of ``per_sample`` (up to float32 summation order: the
  score function sums its N terms in a backward pass, not as the mean of the rows)."""
  for grad, per_sample in zip(
    jax.tree.leaves(est.grad), jax.tree.leaves(est.per_sample), strict=True
  ):
    per_sample = np.asarray(per_sample, np.float64)
    scale = np.abs(per_sample).mean()
    np.testing.assert_allclose(grad, per_sample.mean(0), rtol=0, atol=1e-4 * (1 + scale))


def assert_biased(per_sample, wrong, *, false_failure=FALSE_FAILURE):
  """Asserts every coordinate's mean differs from ``wrong`` by more than z standard errors."""
  s = np.asarray(per_sample, np.float64)
  wrong = np.asarray(wrong, np.float64)
  z = z_value(wrong.size, false_failure)
  se = s.std(0, ddof=1) / math.sqrt(s.shape[0])
  gap = np.abs(s.mean(0) - wrong)
  assert np.all(gap > z * se), f"bias not significant: |mean - wrong| / se = {gap / se}"


def centered_squared_norm(per_sample):
  """Per sample ||g_i - mean g||^2 over all coordinates: its mean is the summed variance."""
  g = np.asarray(per_sample, np.float64).reshape(len(per_sample), -1)
  return np.sum((g - g.mean(0)) ** 2, axis=1)


def total_squared_error(estimates, exact):
  """Per repetition ||g_r - g||^2 (float64): its mean is the summed variance (unbiased g)."""
  e = np.asarray(estimates, np.float64) - np.asarray(exact, np.float64)
  return np.sum(e**2, axis=1)


def assert_smaller_total(err_a, err_b, *, false_failure=FALSE_FAILURE):
  """One-sided z-test that E[err_a] < E[err_b]; repetitions i.i.d. (paired or not), the
  standard error is that of the mean per-repetition difference."""
  diff = err_b - err_a
  gap, se = diff.mean(), diff.std(ddof=1) / math.sqrt(diff.size)
  z = z_value(1, false_failure)
  assert gap > z * se, f"ordering not significant: {err_a.mean()} vs {err_b.mean()}, z={gap / se}"


# --------------------------------------------------------------------------------------
# Costs and control variates.
# --------------------------------------------------------------------------------------

# Strictly upper-triangular pairwise interactions for up to 8 Bernoulli variables.
QUAD = jnp.asarray(np.triu(np.random.default_rng(0).normal(size=(8, 8)), 1), jnp.float32)


def bernoulli_cost(b):
  """Non-separable: squared distances, a random quadratic form and a 3rd-order term."""
  d = b.shape[-1]
  t = jnp.linspace(0.1, 0.9, d)
  return jnp.sum((b - t) ** 2) + b @ QUAD[:d, :d] @ b + 2.0 * b[0] * b[1] * b[2]


CAT_V = jnp.array([[1.0, -2.0, 0.5], [0.3, 2.0, -1.0]])
CAT_M = jnp.array([[1.5, -1.0, 0.0], [0.5, 2.0, -2.0], [-1.0, 0.0, 1.0]])


def categorical_cost(y):
  """A nonlinear function of two one-hot (or relaxed) 3-class variables, shape (2, 3)."""
  return jnp.sum(y * CAT_V) + y[0] @ CAT_M @ y[1] + jnp.sin(2.0 * jnp.sum(y * CAT_V)) ** 2


def mlp(rho, z):
  """RELAX's free-form part r_rho(z): a one-hidden-layer tanh network of the relaxed z."""
  return jnp.tanh(z.reshape(-1) @ rho["w1"] + rho["b1"]) @ rho["w2"]


def relax_params(size, seed, hidden=4):
  """Non-default REBAR part and a random (nonzero) network: any parameters are unbiased."""
  k1, k2 = jax.random.split(jax.random.key(seed))
  return dict(
    gradest.init_rebar_params(eta=0.8, temperature=0.7),
    network=dict(
      w1=0.5 * jax.random.normal(k1, (size, hidden)),
      b1=0.1 * jnp.ones(hidden),
      w2=0.5 * jax.random.normal(k2, (hidden,)),
    ),
  )


BERNOULLI_CV = gradest.relax_control_variate(bernoulli_cost, mlp, family="bernoulli")
CATEGORICAL_CV = gradest.relax_control_variate(categorical_cost, mlp, family="categorical")
REBAR_PARAMS = gradest.init_rebar_params(eta=0.6, temperature=2.0)  # non-default eta, lambda


# --------------------------------------------------------------------------------------
# Exact enumeration (the reference of everything else) against independent computations.
# --------------------------------------------------------------------------------------


def test_exact_grad_matches_closed_forms():
  logits = jnp.array([0.3, -1.0, 2.0, 4.0])
  c = jnp.array([1.0, -2.0, 0.5, 3.0])
  s = jax.nn.sigmoid(logits)
  ds = s * (1 - s)
  # E[c.b + b0 b1] = c.sigma(l) + sigma(l0) sigma(l1).
  exact = _exact_grad(lambda b: jnp.dot(c, b) + b[0] * b[1])(logits)
  expected = c * ds + jnp.array([ds[0] * s[1], s[0] * ds[1], 0.0, 0.0])
  np.testing.assert_allclose(exact.grad, expected, rtol=1e-5, atol=1e-7)
  np.testing.assert_array_equal(exact.per_sample, exact.grad[None])  # one "sample"
  np.testing.assert_allclose(exact.values, [jnp.dot(c, s) + s[0] * s[1]], rtol=1e-5)
  # A scalar Bernoulli logit is one variable.
  np.testing.assert_allclose(_exact_grad(lambda b: 3.0 * b)(0.5).grad, 3 * 0.2350037, 1e-5)

  # Categorical, linear: d/dl E[V . y] = p * (V - p.V) row by row.
  logits = jnp.array([[0.5, -1.0, 4.0], [0.0, 1.0, -2.0]])
  p = jax.nn.softmax(logits, axis=-1)
  expected = p * (CAT_V - jnp.sum(p * CAT_V, axis=-1, keepdims=True))
  exact = _exact_grad(lambda y: jnp.sum(y * CAT_V), OneHotCategorical)(logits)
  np.testing.assert_allclose(exact.grad, expected, rtol=1e-5, atol=1e-7)


def test_exact_grad_signature_of_the_estimators(key):
  """key and num_samples as the Monte Carlo estimators take them: zero variance."""
  logits = jnp.array([0.3, -1.0, 2.0])
  est = gradest.exact_grad(bernoulli_cost, Bernoulli, logits, key, 5)
  assert est.per_sample.shape == (5, 3) and est.values.shape == (5,)
  np.testing.assert_allclose(est.variance(), np.zeros(3), atol=1e-12)  # up to rounding
  mean_only = gradest.exact_grad(bernoulli_cost, Bernoulli, logits, return_per_sample=False)
  assert mean_only.per_sample is None
  np.testing.assert_allclose(mean_only.grad, est.grad, rtol=1e-6)


def test_exact_expectation_matches_brute_force():
  for logits in (BERNOULLI_LOGITS["moderate"], BERNOULLI_LOGITS["mixed"]):
    states = np.array(list(itertools.product([0.0, 1.0], repeat=logits.size)))
    lg = np.asarray(logits, np.float64)
    p = np.prod(np.where(states == 1.0, special.expit(lg), special.expit(-lg)), axis=1)
    values = np.asarray(jax.vmap(bernoulli_cost)(jnp.asarray(states, jnp.float32)), np.float64)
    value = _exact_grad(bernoulli_cost)(logits).values[0]  # exact_expectation's value
    np.testing.assert_allclose(value, np.sum(p * values), rtol=1e-5)

  logits = CATEGORICAL_LOGITS["large"]
  p = np.asarray(jax.nn.softmax(logits, axis=-1), np.float64)
  pairs = list(itertools.product(range(3), range(3)))
  states = jnp.stack([jnp.eye(3)[jnp.array(ij)] for ij in pairs])
  values = np.asarray(jax.vmap(categorical_cost)(states), np.float64)
  brute = sum(p[0, i] * p[1, j] * v for (i, j), v in zip(pairs, values, strict=True))
  value = _exact_grad(categorical_cost, OneHotCategorical)(logits).values[0]
  np.testing.assert_allclose(value, brute, rtol=1e-5)
  # exact_expectation itself (exact_grad differentiates it): sum_states p = 1.
  one = gradest.exact_expectation(lambda y: jnp.sum(y) / 2.0, OneHotCategorical(logits))
  np.testing.assert_allclose(one, 1.0, rtol=1e-6)


# --------------------------------------------------------------------------------------
# 1. Unbiasedness against exact enumeration.
# --------------------------------------------------------------------------------------

BERNOULLI_LOGITS = {  # D = 6: moderate, large and mixed logits (one compilation for all)
  "moderate": jnp.linspace(-1.5, 2.0, 6),
  "large": jnp.array([4.0, -4.0, 3.5, -3.0, 4.0, -4.0]),
  "mixed": jnp.array([4.0, -0.3, 0.2, -4.0, 1.0, 0.0]),
}
PAIR = gradest.ESTIMATORS["arm"].evaluations_per_row  # evaluations of f per ARM/DisARM row


def _bernoulli_estimates(f, logits, key, rebar_params, cv_params, *, num_samples):
  n = num_samples
  sf = functools.partial(gradest.score_function_grad, f, Bernoulli, logits, key, n)
  return {
    "reinforce_loo": sf(baseline="leave_one_out"),
    "reinforce_no_baseline": sf(),
    "reinforce_constant": sf(baseline=1.7),
    # n antithetic pairs (2 n evaluations of f): n independent rows, as for the others.
    "arm": gradest.arm_grad(f, Bernoulli, logits, key, PAIR * n),
    "disarm": gradest.disarm_grad(f, Bernoulli, logits, key, PAIR * n),
    "rebar": gradest.rebar_grad(f, Bernoulli, logits, key, n),
    "rebar_eta_temperature": gradest.rebar_grad(
      f, Bernoulli, logits, key, n, cv_params=rebar_params
    ),
    "relax": gradest.relax_grad(
      f, Bernoulli, logits, key, n, cv_fn=BERNOULLI_CV, cv_params=cv_params
    ),
  }


# f and num_samples static through functools.partial; everything else traced.
_bernoulli_program = jax.jit(functools.partial(_bernoulli_estimates, bernoulli_cost, num_samples=N))


@functools.cache
def bernoulli_results(problem):
  logits = BERNOULLI_LOGITS[problem]
  out = _bernoulli_program(logits, jax.random.key(0), REBAR_PARAMS, relax_params(logits.size, 1))
  return jax.device_get(out)


@pytest.mark.parametrize("problem", sorted(BERNOULLI_LOGITS))
@pytest.mark.parametrize(
  "name",
  [
    "reinforce_loo",
    "reinforce_no_baseline",
    "reinforce_constant",
    "arm",
    "disarm",
    "rebar",
    "rebar_eta_temperature",
    "relax",
  ],
)
def test_bernoulli_unbiased(name, problem):
  logits = BERNOULLI_LOGITS[problem]
  est = bernoulli_results(problem)[name]
  evaluations = PAIR * N if name in ("arm", "disarm") else N
  assert est.per_sample.shape == (N,) + logits.shape
  assert est.values.shape == (evaluations,)
  assert_grad_is_mean(est)
  assert_unbiased(est.per_sample, _exact_grad(bernoulli_cost)(logits).grad)


def test_bernoulli_values_are_the_cost_at_exact_samples():
  """``values`` average to E[f] (ARM/DisARM's are pairs: their means are independent)."""
  for problem in ("moderate", "mixed"):
    results = bernoulli_results(problem)
    exact = _exact_grad(bernoulli_cost)(BERNOULLI_LOGITS[problem]).values[0]
    for name in ("reinforce_loo", "rebar", "relax"):
      assert_unbiased(results[name].values, exact)
    # values: the pairs' first members, then their second.
    assert_unbiased(results["arm"].values.reshape(PAIR, N).mean(0), exact)
    # The same key gives the same discrete samples to REBAR and RELAX, and the same pairs
    # to ARM and DisARM.
    np.testing.assert_array_equal(results["rebar"].values, results["relax"].values)
    np.testing.assert_array_equal(results["arm"].values, results["disarm"].values)


CATEGORICAL_LOGITS = {
  "moderate": jnp.array([[0.5, -1.0, 0.2], [0.0, 1.0, -2.0]]),
  "large": jnp.array([[0.5, -1.0, 0.2], [0.0, 4.0, -2.0]]),
}
CAT_TAU = 0.7


def _categorical_estimates(f, logits, key, rebar_params, cv_params, tau, *, num_samples):
  n, dist = num_samples, OneHotCategorical
  return {
    # Biased: straight-through and Gumbel-Rao (section 2), the surrogate (section 5).
    "straight_through": gradest.straight_through_grad(f, dist, logits, key, n, temperature=tau),
    "gumbel_rao": gradest.gumbel_rao_grad(
      f, dist, logits, key, n, temperature=tau, num_conditional=NUM_CONDITIONAL
    ),
    "surrogate": _surrogate_per_sample(f, logits, key, n, tau, "categorical"),
    # Unbiased.
    "reinforce_loo": gradest.score_function_grad(f, dist, logits, key, n, baseline="leave_one_out"),
    "rebar": gradest.rebar_grad(f, dist, logits, key, n),
    "rebar_eta_temperature": gradest.rebar_grad(f, dist, logits, key, n, cv_params=rebar_params),
    "relax": gradest.relax_grad(f, dist, logits, key, n, cv_fn=CATEGORICAL_CV, cv_params=cv_params),
  }


_categorical_program = jax.jit(
  functools.partial(_categorical_estimates, categorical_cost, num_samples=N)
)


@functools.cache
def categorical_results(problem):
  out = _categorical_program(
    CATEGORICAL_LOGITS[problem], jax.random.key(0), REBAR_PARAMS, relax_params(6, 2), CAT_TAU
  )
  return jax.device_get(out)


@pytest.mark.parametrize("problem", sorted(CATEGORICAL_LOGITS))
@pytest.mark.parametrize("name", ["reinforce_loo", "rebar", "rebar_eta_temperature", "relax"])
def test_categorical_unbiased(name, problem):
  logits = CATEGORICAL_LOGITS[problem]
  est = categorical_results(problem)[name]
  assert est.per_sample.shape == (N,) + logits.shape
  assert_grad_is_mean(est)
  assert_unbiased(est.per_sample, _exact_grad(categorical_cost, OneHotCategorical)(logits).grad)
  if name == "reinforce_loo":  # the score b - softmax(l) of a one-hot b sums to zero
    np.testing.assert_allclose(est.per_sample.sum(-1), 0.0, atol=1e-4)


def test_categorical_samples_are_shared_and_one_hot():
  """The same key gives the same one-hot samples to every perturbation-based estimator."""
  results = categorical_results("moderate")
  values = results["straight_through"].values
  for name in ("gumbel_rao", "rebar", "rebar_eta_temperature", "relax"):
    np.testing.assert_array_equal(results[name].values, values, err_msg=name)
  y = results["surrogate"][0]
  np.testing.assert_array_equal(y.sum(-1), 1.0)
  np.testing.assert_allclose(jax.vmap(categorical_cost)(y), values, rtol=1e-6)


# --------------------------------------------------------------------------------------
# 1b. An encoder's parameters directly: params = {"w", "b"}, logits = x @ w + b.
# --------------------------------------------------------------------------------------

ENCODER_X = {
  "bernoulli": jnp.array([0.5, -1.0, 1.5]),  # logits (6,)
  "categorical": jnp.array([[0.5, -1.0, 1.5, 0.2], [-0.3, 0.8, 0.0, 1.0]]),  # logits (2, 3)
}
ENCODER_FAMILIES = {"bernoulli": Bernoulli, "categorical": OneHotCategorical}
ENCODER_COSTS = {"bernoulli": bernoulli_cost, "categorical": categorical_cost}


def encoder_params(family):
  k1, k2 = jax.random.split(jax.random.key(11))
  x = ENCODER_X[family]
  out = 6 if family == "bernoulli" else 3
  return {
    "w": 0.7 * jax.random.normal(k1, (x.shape[-1], out)),
    "b": 0.3 * jax.random.normal(k2, (out,)),
  }


def encoder_logits(params, family):
  return ENCODER_X[family] @ params["w"] + params["b"]


@functools.cache
def encoder_dist_fn(family):
  return lambda p: ENCODER_FAMILIES[family](encoder_logits(p, family))


# Unbiasedness of every registry estimator on an encoder is in test_contract.py.


def _pull_back(per_sample_logits, family):
  """The rows of logits-space terms as gradients for {"w", "b"}: J^T g, in float64."""
  g = np.asarray(per_sample_logits, np.float64)
  x = np.asarray(ENCODER_X[family], np.float64)
  if family == "bernoulli":
    return {"b": g, "w": np.einsum("i,nj->nij", x, g)}
  return {"b": g.sum(1), "w": np.einsum("ri,nrj->nij", x, g)}


def test_encoder_exact_grad_is_the_pulled_back_logits_gradient():
  for family in ENCODER_X:
    params = encoder_params(family)
    f = ENCODER_COSTS[family]
    exact = _exact_grad(f, encoder_dist_fn(family))(params).grad
    logits = encoder_logits(params, family)
    at_logits = _exact_grad(f, ENCODER_FAMILIES[family])(logits).grad
    expected = _pull_back(at_logits[None], family)
    for leaf in ("w", "b"):
      np.testing.assert_allclose(exact[leaf], expected[leaf][0], rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------------------
# 2. Straight-through: its bias against quadrature; Gumbel-Rao has the same mean.
# 5. The Gumbel-Rao surrogate: same samples and per-sample gradients as gumbel_rao_grad.
# --------------------------------------------------------------------------------------

ST_LOGITS = jnp.array([-3.0, -0.5, 0.0, 0.7, 2.5])
ST_C = jnp.array([1.5, -1.0, 2.0, 0.5, -2.5])
ST_N = 50000
NUM_CONDITIONAL = 10


def linear_cost(b):
  return jnp.dot(ST_C, b)


def straight_through_mean(logit, tau):
  """E_L[s (1 - s)] / tau with s = sigmoid((logit + L) / tau), L standard logistic."""

  def integrand(x):
    s = special.expit((logit + x) / tau)
    return s * (1 - s) / tau * special.expit(x) * special.expit(-x)

  value, err = integrate.quad(integrand, -np.inf, np.inf, epsabs=1e-12, epsrel=1e-10)
  assert err < 1e-8
  return value


def _surrogate_per_sample(f, logits, key, n, tau, family):
  """For each k in split(key, n): the forward value of gumbel_rao(k, ...), f of it and the
  gradient of f(gumbel_rao(k, logits)) with respect to the logits."""

  def one(k):
    def loss(lg):
      y = gradest.gumbel_rao(k, lg, tau, NUM_CONDITIONAL, family=family)
      return f(y), y

    (value, y), grad = jax.value_and_grad(loss, has_aux=True)(logits)
    return y, value, grad

  return jax.vmap(one)(jax.random.split(key, n))


@jax.jit
def _straight_through_program(logits, key, tau):
  f, n = linear_cost, ST_N
  return {
    "straight_through": gradest.straight_through_grad(
      f, Bernoulli, logits, key, n, temperature=tau
    ),
    "gumbel_rao": gradest.gumbel_rao_grad(
      f, Bernoulli, logits, key, n, temperature=tau, num_conditional=NUM_CONDITIONAL
    ),
    "surrogate": _surrogate_per_sample(f, logits, key, n, tau, "bernoulli"),
  }


@functools.cache
def straight_through_results(tau):
  return jax.device_get(_straight_through_program(ST_LOGITS, jax.random.key(0), tau))


@pytest.mark.parametrize("tau", [0.5, 2.0])
def test_straight_through_bias_and_gumbel_rao_same_mean_lower_variance(tau):
  expected = ST_C * np.array([straight_through_mean(float(x), tau) for x in ST_LOGITS])
  s = jax.nn.sigmoid(ST_LOGITS)
  true = ST_C * s * (1 - s)
  # The bias itself is far from zero at these logits (quadrature alone, no sampling).
  assert np.all(np.abs(expected - true) > 5e-3)

  results = straight_through_results(tau)
  st, gr = results["straight_through"], results["gumbel_rao"]
  np.testing.assert_array_equal(st.values, gr.values)  # the same discrete samples
  assert_unbiased(st.per_sample, expected)
  assert_biased(st.per_sample, true)
  assert_unbiased(gr.per_sample, expected)
  assert_biased(gr.per_sample, true)
  # Gumbel-Rao is the straight-through estimate averaged over conditional noise given the
  # same discrete sample: paired (common random numbers), smaller in every coordinate.
  assert_smaller_variance(gr.per_sample, st.per_sample)


def test_categorical_gumbel_rao_same_mean_as_straight_through():
  """For any f, E[GR - ST] = 0 (same discrete sample; GR averages ST's noise given it)."""
  results = categorical_results("large")
  st, gr = results["straight_through"], results["gumbel_rao"]
  np.testing.assert_array_equal(st.values, gr.values)
  assert_unbiased(gr.per_sample - st.per_sample, np.zeros((2, 3)))
  # Summed over the coordinates (paired: the same discrete samples); a rarely sampled class
  # (logit -2 next to 4) has too little variance in either for a per-coordinate test.
  assert_smaller_total(centered_squared_norm(gr.per_sample), centered_squared_norm(st.per_sample))
  # Straight-through (hence Gumbel-Rao) is biased for this nonlinear cost.
  exact = _exact_grad(categorical_cost, OneHotCategorical)(CATEGORICAL_LOGITS["large"]).grad
  assert_biased(st.per_sample, exact)


@pytest.mark.parametrize("family", ["bernoulli", "categorical"])
def test_gumbel_rao_surrogate_matches_gumbel_rao_grad(family):
  """Sample i of gumbel_rao_grad is jax.grad of f(gumbel_rao(split(key, N)[i], logits)):
  the same noise splitting, so the same discrete sample and the same conditional noise."""
  if family == "bernoulli":
    results, logits = straight_through_results(0.5), ST_LOGITS
  else:
    results, logits = categorical_results("large"), CATEGORICAL_LOGITS["large"]
  y, values, grads = results["surrogate"]
  gr = results["gumbel_rao"]
  np.testing.assert_array_equal(values, gr.values)
  np.testing.assert_allclose(grads, gr.per_sample, rtol=1e-5, atol=1e-6)
  # The forward value is an exact discrete sample with the right distribution.
  assert y.shape == (values.size,) + logits.shape
  assert set(np.unique(y).tolist()) <= {0.0, 1.0}
  if family == "categorical":
    np.testing.assert_array_equal(y.sum(-1), 1.0)
    assert_unbiased(y, jax.nn.softmax(logits, axis=-1))
  else:
    assert_unbiased(y, jax.nn.sigmoid(logits))


# --------------------------------------------------------------------------------------
# 3. Variance ordering on the D = 100 toy.
# --------------------------------------------------------------------------------------

TOY_T = jnp.linspace(0.0, 1.0, 100)
TOY_LOGITS = jnp.linspace(-2.0, 2.0, 100)  # a spread in [-2, 2]; no logit is exactly 0
TOY_REPS, TOY_PAIRS = 2000, 10


def toy_cost(b):
  return jnp.sum((b - TOY_T) ** 2)


def toy_closed_forms(logits):
  """Exact gradient and single-estimate variances for the separable toy.

  On {0, 1}, f(b) = const + sum_j w_j b_j with w = 1 - 2t. With a = sigmoid(|l|), an
  antithetic pair disagrees in coordinate j (e_j = b_j - b~_j = +-1) with probability
  p_j = 2 sigmoid(-|l_j|), two independent samples (d_j = b_j - b'_j) with probability
  q_j = 2 s_j (1 - s_j) <= p_j. With S(r) = sum_{j != i} w_j^2 r_j:

  * ARM pair: g_i = (w_i e_i + sum_{j!=i} w_j e_j)(u_i - 1/2), so
    E g_i^2 = w_i^2 E[e_i^2 (u_i - 1/2)^2] + S(p) / 12 with
    E[e_i^2 (u_i - 1/2)^2] = 2 int_a^1 (u - 1/2)^2 du = (2/3)(1/8 - (a - 1/2)^3).
  * DisARM pair: g_i = (a_i / 2)(w_i e_i^2 + e_i sum_{j!=i} w_j e_j), so
    E g_i^2 = (a_i^2 / 4) p_i (w_i^2 + S(p)).
  * REINFORCE-LOO with 2 samples: g_i = (1/2)(f_1 - f_2)(b_1i - b_2i), so
    E g_i^2 = (q_i / 4)(w_i^2 + S(q)).
  """
  lg = np.asarray(logits, np.float64)
  w = 1.0 - 2.0 * np.asarray(TOY_T, np.float64)
  s = special.expit(lg)
  a = special.expit(np.abs(lg))
  p = 2.0 * special.expit(-np.abs(lg))
  q = 2.0 * s * (1.0 - s)
  grad = w * s * (1.0 - s)
  others = lambda r: np.sum(w**2 * r) - w**2 * r
  arm = w**2 * (2.0 / 3.0) * (0.125 - (a - 0.5) ** 3) + others(p) / 12.0 - grad**2
  disarm = a**2 / 4.0 * p * (w**2 + others(p)) - grad**2
  loo2 = q / 4.0 * (w**2 + others(q)) - grad**2
  return grad, arm, disarm, loo2


@jax.jit
def _toy_program(key):
  """Each estimator at an equal budget of PAIR * TOY_PAIRS evaluations of f, TOY_REPS times.

  ARM and DisARM: TOY_REPS * TOY_PAIRS i.i.d. pairs from one call (the same key, hence
  the same pairs for both); grouped by TOY_PAIRS they are TOY_REPS independent
  TOY_PAIRS-pair estimates. REINFORCE-LOO couples its samples through the baseline, so it
  is vmapped over TOY_REPS keys, PAIR * TOY_PAIRS samples per estimate.
  """
  n = PAIR * TOY_REPS * TOY_PAIRS  # evaluations of f
  arm = gradest.arm_grad(toy_cost, Bernoulli, TOY_LOGITS, key, n).per_sample
  disarm = gradest.disarm_grad(toy_cost, Bernoulli, TOY_LOGITS, key, n).per_sample

  def loo(k):
    return gradest.score_function_grad(
      toy_cost,
      Bernoulli,
      TOY_LOGITS,
      k,
      PAIR * TOY_PAIRS,
      baseline="leave_one_out",
      return_per_sample=False,
    ).grad

  return arm, disarm, jax.vmap(loo)(jax.random.split(jax.random.fold_in(key, 1), TOY_REPS))


@functools.cache
def toy_results():
  return jax.device_get(_toy_program(jax.random.key(0)))


def test_toy_single_pair_variances_match_closed_forms():
  """ARM and DisARM pairs have exactly the variances derived in ``toy_closed_forms``."""
  arm, disarm, _ = toy_results()
  grad, var_arm, var_disarm, var_loo2 = toy_closed_forms(TOY_LOGITS)
  for samples, var in ((arm, var_arm), (disarm, var_disarm)):
    assert_unbiased(samples, grad)
    assert_variance(samples, var)
  # DisARM = E[ARM | b, b~] is smaller coordinate by coordinate (paired: the same pairs).
  assert_smaller_variance(disarm, arm)
  # Per pair of evaluations of f, by the closed forms: DisARM < REINFORCE-LOO(2) < ARM.
  assert var_disarm.sum() < var_loo2.sum() < var_arm.sum()


def test_toy_variance_ordering_at_equal_evaluations():
  """Summed variance over the 100 coordinates at an equal budget of 20 evaluations of f.

  Fair comparison: every estimate spends PAIR * TOY_PAIRS = 20 evaluations of f (ARM and
  DisARM: 10 antithetic pairs, ``evaluations_per_row = 2``; REINFORCE-LOO: 20 samples).
  The total variance of an estimate is E||g - grad||^2 (all three are unbiased), measured
  over TOY_REPS independent repetitions against the exact gradient; each comparison's
  standard error is that of the mean per-repetition difference. DisARM and ARM use the same pairs.

  ARM is *worse* than REINFORCE-LOO at equal evaluations on this separable toy: an
  antithetic pair disagrees in each coordinate with probability 2 sigmoid(-|l|), more
  often than two independent samples (2 s (1 - s)), so f(b) - f(b~) is noisier than
  f(b_1) - f(b_2) (``toy_closed_forms``), and a leave-one-out baseline over 19 other
  samples is better than a pair's. The ordering that holds, and is asserted, is
  REINFORCE-LOO(20) < DisARM(10 pairs) < ARM(10 pairs).
  """
  arm, disarm, loo = toy_results()
  grad, var_arm, var_disarm, _ = toy_closed_forms(TOY_LOGITS)
  err_arm = total_squared_error(arm.reshape(TOY_REPS, TOY_PAIRS, -1).mean(1), grad)
  err_disarm = total_squared_error(disarm.reshape(TOY_REPS, TOY_PAIRS, -1).mean(1), grad)
  err_loo = total_squared_error(loo, grad)
  assert_smaller_total(err_disarm, err_arm)
  assert_smaller_total(err_loo, err_disarm)
  # The measured totals are those of the closed forms (z-tests on the mean squared error).
  for err, var in ((err_arm, var_arm), (err_disarm, var_disarm)):
    se = err.std(ddof=1) / math.sqrt(err.size)
    assert abs(err.mean() - var.sum() / TOY_PAIRS) < z_value(2) * se


# --------------------------------------------------------------------------------------
# 6. Determinism of the compiled programs, low precision.
# --------------------------------------------------------------------------------------

SMALL_LOGITS = jnp.array([0.3, -1.0, 2.0])
SMALL_CAT_LOGITS = jnp.array([[0.5, -1.0, 0.2], [0.0, 1.0, -2.0]])
SMALL = {  # family: (cost, dist_fn, logits)
  "bernoulli": (bernoulli_cost, Bernoulli, SMALL_LOGITS),
  "categorical": (categorical_cost, OneHotCategorical, SMALL_CAT_LOGITS),
}
SMALL_CASES = [(fam, name) for fam in SMALL for name in gradest.estimator_names(fam)]


def _small_estimates(bernoulli_logits, categorical_logits, key, *, num_samples):
  """Every registry estimator on both families, f and num_samples static, the rest traced."""
  out = {}
  for family, name in SMALL_CASES:
    f, dist_fn, _ = SMALL[family]
    logits = bernoulli_logits if family == "bernoulli" else categorical_logits
    e = gradest.ESTIMATORS[name]
    out[f"{family}/{name}"] = e.grad(
      f, dist_fn, logits, key, num_samples, **e.kwargs(f, family, logits.shape)
    )
  return out


_small_program = jax.jit(functools.partial(_small_estimates, num_samples=8))


PROGRAMS = {  # the statistical programs above, run again with the same and another key
  "bernoulli": lambda key: _bernoulli_program(
    BERNOULLI_LOGITS["mixed"], key, REBAR_PARAMS, relax_params(6, 1)
  ),
  "categorical": lambda key: _categorical_program(
    CATEGORICAL_LOGITS["moderate"], key, REBAR_PARAMS, relax_params(6, 2), CAT_TAU
  ),
  "straight_through": lambda key: _straight_through_program(ST_LOGITS, key, 0.5),
}


def _leaves(tree):
  return [np.asarray(x) for x in jax.tree.leaves(tree)]


@pytest.mark.parametrize("program", sorted(PROGRAMS))
def test_jitted_estimators_are_deterministic(program):
  """The same key gives the same result bit for bit; another key another result."""
  run = PROGRAMS[program]
  first, again = jax.device_get(run(jax.random.key(0))), jax.device_get(run(jax.random.key(0)))
  other = jax.device_get(run(jax.random.key(1)))
  for x, y in zip(_leaves(first), _leaves(again), strict=True):
    np.testing.assert_array_equal(x, y)
  for name, est in first.items():
    if name != "surrogate":
      assert not np.allclose(est.grad, other[name].grad), name
      for leaf in _leaves(est):
        assert np.all(np.isfinite(leaf)), name


@pytest.mark.slow  # one compilation of every discrete estimator per dtype
@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16])
@pytest.mark.numerics
def test_low_precision_logits_give_finite_estimates(dtype):
  key = jax.random.key(0)
  out = _small_program(SMALL_LOGITS.astype(dtype), SMALL_CAT_LOGITS.astype(dtype), key)
  assert sorted(out) == sorted(f"{fam}/{name}" for fam, name in SMALL_CASES)
  for name, est in out.items():
    for leaf in jax.tree.leaves(est):
      assert np.all(np.isfinite(np.asarray(leaf, np.float32))), name
    logits = SMALL[name.split("/")[0]][2]
    assert est.grad.shape == logits.shape, name


# --------------------------------------------------------------------------------------
# 7. Bad input raises clear errors.
# --------------------------------------------------------------------------------------

DISCRETE_ONLY = sorted(
  n
  for n in gradest.estimator_names("bernoulli")
  if "any" not in gradest.ESTIMATORS[n].distributions
)
BERNOULLI_ONLY = sorted(
  set(gradest.estimator_names("bernoulli")) - set(gradest.estimator_names("categorical"))
)


def _call(name, f, dist_fn, logits, key, num_samples=4, **kw):
  """ESTIMATORS[name] with its registry options and overrides; traced only (errors are
  raised at tracing)."""
  e = gradest.ESTIMATORS[name]
  family = "categorical" if dist_fn is OneHotCategorical else "bernoulli"
  kwargs = {**e.kwargs(f, family, jnp.shape(logits)), **kw}
  return jax.eval_shape(lambda: e.grad(f, dist_fn, logits, key, num_samples, **kwargs))


def test_registry_families():
  """ARM and DisARM are the Bernoulli-only estimators; the rest also take one-hot ones."""
  assert BERNOULLI_ONLY == ["arm", "disarm"]
  assert set(DISCRETE_ONLY) >= {"arm", "disarm", "straight_through", "gumbel_rao", "rebar"}
  assert {"relax", "vimco"} <= set(DISCRETE_ONLY)


@pytest.mark.parametrize("name", ["reinforce_loo", "vimco", "arm"])
def test_too_few_samples(name, key):
  with pytest.raises(ValueError, match="num_samples must be >= 2"):
    _call(name, bernoulli_cost, Bernoulli, SMALL_LOGITS, key, 1)
  _call(name, bernoulli_cost, Bernoulli, SMALL_LOGITS, key, 2)
  if name == "reinforce_loo":  # without the leave-one-out baseline, one sample is fine
    _call(name, bernoulli_cost, Bernoulli, SMALL_LOGITS, key, 1, baseline=None)


@pytest.mark.parametrize("name", BERNOULLI_ONLY)
def test_antithetic_pairs_need_an_even_num_samples(name, key):
  for odd in (3, 5):
    with pytest.raises(ValueError, match=f"must be even, got {odd}"):
      _call(name, bernoulli_cost, Bernoulli, SMALL_LOGITS, key, odd)
  objective = gradest.ESTIMATORS[name].objective
  with pytest.raises(ValueError, match="must be even"):
    objective(bernoulli_cost, Bernoulli(SMALL_LOGITS), key, 3)


@pytest.mark.parametrize("name", BERNOULLI_ONLY)
def test_arm_and_disarm_refuse_one_hot_categoricals(name, key):
  with pytest.raises(TypeError, match="Bernoulli distributions only"):
    _call(name, categorical_cost, OneHotCategorical, SMALL_CAT_LOGITS, key)
  objective = gradest.ESTIMATORS[name].objective
  with pytest.raises(TypeError, match="Bernoulli distributions only"):
    objective(categorical_cost, OneHotCategorical(SMALL_CAT_LOGITS), key, 4)


def _index_cost(i):
  return jnp.sum(jnp.asarray(i, jnp.float32))


@pytest.mark.parametrize("name", DISCRETE_ONLY)
def test_a_plain_categorical_is_refused(name, key):
  """Integer samples cannot be relaxed: the message points to OneHotCategorical."""
  with pytest.raises(TypeError, match="is a Categorical.*OneHotCategorical"):
    _call(name, _index_cost, Categorical, SMALL_CAT_LOGITS, key)
  e = gradest.ESTIMATORS[name]
  kwargs = e.kwargs(_index_cost, "categorical", SMALL_CAT_LOGITS.shape)
  with pytest.raises(TypeError, match="is a Categorical.*OneHotCategorical"):
    e.objective(_index_cost, Categorical(SMALL_CAT_LOGITS), key, 4, **kwargs)


def test_a_plain_categorical_is_refused_by_exact_enumeration():
  with pytest.raises(TypeError, match="is a Categorical"):
    gradest.exact_grad(_index_cost, Categorical, SMALL_CAT_LOGITS)
  with pytest.raises(TypeError, match="is a Categorical"):
    gradest.exact_expectation(_index_cost, Categorical(SMALL_CAT_LOGITS))


@pytest.mark.parametrize("name", DISCRETE_ONLY)
def test_continuous_distributions_are_refused(name, key):
  normal = lambda mu: Normal(mu, 1.0)  # noqa: E731
  with pytest.raises(TypeError, match="Bernoulli or OneHotCategorical"):
    _call(name, bernoulli_cost, normal, SMALL_LOGITS, key)
  with pytest.raises(TypeError, match="Bernoulli or OneHotCategorical"):
    gradest.exact_grad(bernoulli_cost, normal, SMALL_LOGITS)


@pytest.mark.parametrize("temperature", [0.0, -1.0, float("nan")])
def test_temperature_must_be_positive(temperature, key):
  for name in ("straight_through", "gumbel_rao"):
    with pytest.raises(ValueError, match="temperature must be > 0"):
      _call(name, bernoulli_cost, Bernoulli, SMALL_LOGITS, key, temperature=temperature)
  with pytest.raises(ValueError, match="temperature must be > 0"):
    gradest.gumbel_rao(key, SMALL_CAT_LOGITS, temperature)
  with pytest.raises(ValueError, match="temperature must be > 0"):
    gradest.init_rebar_params(temperature=temperature)
  with pytest.raises(ValueError, match="temperature must be a scalar"):
    _call("straight_through", bernoulli_cost, Bernoulli, SMALL_LOGITS, key, temperature=jnp.ones(3))


def test_num_conditional_must_be_a_positive_int(key):
  with pytest.raises(ValueError, match="num_conditional must be >= 1"):
    _call("gumbel_rao", bernoulli_cost, Bernoulli, SMALL_LOGITS, key, num_conditional=0)
  with pytest.raises(ValueError, match="num_conditional must be >= 1"):
    gradest.gumbel_rao(key, SMALL_CAT_LOGITS, 0.5, 0)
  with pytest.raises(TypeError, match="num_conditional must be a Python int"):
    _call("gumbel_rao", bernoulli_cost, Bernoulli, SMALL_LOGITS, key, num_conditional=2.5)


@pytest.mark.parametrize("logits", [jnp.float32(0.5), jnp.zeros((3, 1))], ids=["scalar", "1class"])
def test_categorical_logits_need_two_classes(logits, key):
  with pytest.raises(ValueError, match="OneHotCategorical logits must have shape"):
    OneHotCategorical(logits)
  with pytest.raises(ValueError, match="OneHotCategorical logits must have shape"):
    _call("straight_through", jnp.sum, OneHotCategorical, logits, key)
  with pytest.raises(ValueError, match="logits for family='categorical'"):
    gradest.gumbel_rao(key, logits, 0.5)


def test_unknown_family_of_the_sample_level_functions(key):
  with pytest.raises(ValueError, match="family must be one of"):
    gradest.gumbel_rao(key, SMALL_LOGITS, 0.5, family="poisson")
  with pytest.raises(ValueError, match="family must be one of"):
    gradest.rebar_control_variate(jnp.sum, family="poisson")
  with pytest.raises(ValueError, match="family must be one of"):
    gradest.relax_control_variate(jnp.sum, mlp, family="Bernoulli")


def test_exact_grad_errors():
  with pytest.raises(ValueError, match="f must map one sample to a scalar"):
    gradest.exact_grad(lambda b: b, Bernoulli, SMALL_LOGITS)
  with pytest.raises(ValueError, match="at most 20 entries"):
    gradest.exact_grad(jnp.sum, Bernoulli, jnp.zeros(21))
  with pytest.raises(ValueError, match="at most 20 entries"):
    gradest.exact_expectation(jnp.sum, Bernoulli(jnp.zeros((3, 7))))
  with pytest.raises(ValueError, match=r"4\*\*11 states"):
    gradest.exact_grad(jnp.sum, OneHotCategorical, jnp.zeros((11, 4)))
  jax.eval_shape(lambda: gradest.exact_grad(jnp.sum, Bernoulli, jnp.zeros(20)))  # the limit


def test_bad_baseline(key):
  with pytest.raises(ValueError, match="baseline must be"):
    _call("score_function", bernoulli_cost, Bernoulli, SMALL_LOGITS, key, baseline="mean")
  with pytest.raises(ValueError, match="baseline must be a scalar"):
    _call("score_function", bernoulli_cost, Bernoulli, SMALL_LOGITS, key, baseline=jnp.ones(2))


def _while_loop_cost(b):
  """Float in, float out, but not reverse-mode differentiable."""
  body = lambda c: (c[0] + 1, c[1] * 1.1)
  return jax.lax.while_loop(lambda c: c[0] < 3, body, (0, jnp.sum(b)))[1]


def _python_branch_cost(b):
  return jnp.sum(b) if b[0] > 0.5 else jnp.float32(0.0)


# Estimators that check f's differentiability themselves (RELAX differentiates f only
# through the registry's control variate, which is its setup, not relax_grad's check).
DIFFERENTIATING = sorted(
  n
  for n in gradest.estimator_names("bernoulli")
  if gradest.ESTIMATORS[n].differentiates_f and gradest.ESTIMATORS[n].setup is None
)
EVALUATING = sorted(
  n
  for n in gradest.estimator_names("bernoulli")
  if not gradest.ESTIMATORS[n].differentiates_f and gradest.ESTIMATORS[n].setup is None
)


def test_registry_says_which_estimators_differentiate_f():
  assert DIFFERENTIATING == ["gumbel_rao", "rebar", "straight_through"]
  assert {"score_function", "reinforce_loo", "arm", "disarm", "vimco"} <= set(EVALUATING)


@pytest.mark.parametrize("name", DIFFERENTIATING)
def test_relaxed_estimators_reject_costs_jax_cannot_differentiate(name, key):
  # JAX's own error for a while_loop under reverse mode comes through unchanged.
  with pytest.raises(ValueError, match="[Rr]everse-mode differentiation"):
    _call(name, _while_loop_cost, Bernoulli, SMALL_LOGITS, key)
  # Value-dependent Python control flow cannot be traced at all (a TypeError subclass).
  with pytest.raises(TypeError):
    _call(name, _python_branch_cost, Bernoulli, SMALL_LOGITS, key)


@pytest.mark.parametrize("name", EVALUATING)
def test_evaluating_estimators_accept_costs_jax_cannot_differentiate(name, key):
  _call(name, _while_loop_cost, Bernoulli, SMALL_LOGITS, key)
  # RELAX only evaluates f: a control variate that does not differentiate it is fine.
  _call(
    "relax",
    _while_loop_cost,
    Bernoulli,
    SMALL_LOGITS,
    key,
    cv_fn=lambda p, z: p * jnp.sum(jnp.tanh(z)),
    cv_params=jnp.float32(0.5),
  )


TABLE = jnp.array([1.0, -2.0, 3.0])


def _argmax_index_cost(y):
  """The table entry of the sampled class: a valid cost for REINFORCE, but integer-valued
  in its input (argmax then indexing), so jax.grad through it is zero, not an error."""
  return TABLE[jnp.argmax(y[0])]


@pytest.mark.parametrize("name", DIFFERENTIATING)
def test_relaxed_estimators_reject_integer_valued_costs(name, key):
  logits = jnp.array([[0.5, -1.0, 0.2]])
  p = jax.nn.softmax(logits[0])
  exact = p * (TABLE - p @ TABLE)  # far from zero; REINFORCE estimates it
  assert np.abs(np.asarray(exact)).max() > 0.3
  with pytest.raises(TypeError, match="differentiates f"):
    _call(name, _argmax_index_cost, OneHotCategorical, logits, key)
  _call("reinforce_loo", _argmax_index_cost, OneHotCategorical, logits, key)
