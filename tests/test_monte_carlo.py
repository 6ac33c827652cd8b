"""gradest.monte_carlo against optax 0.2.6's optax.monte_carlo.

The sample streams differ (gradest draws sample i from split(rng, N)[i]), so the two
are compared statistically: both means within standard errors of the closed-form
gradient, and per-coordinate variances equal within the sampling error of a variance.
Where both are given the same samples (optax's own estimators passed to gradest's
control_variates_jacobians, the moving-average update) they must agree to float
precision.
"""

import functools
import math
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gradest import monte_carlo as gmc
from gradest.distributions import Bernoulli, Normal
from tests.helpers import assert_unbiased, z_value

omc = pytest.importorskip("optax.monte_carlo")
optax_utils = pytest.importorskip("optax._src.utils")

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

MU = jnp.array([0.3, -1.2, 2.0, 0.5])
LOG_SIGMA = jnp.array([0.0, -0.5, 0.4, 0.2])
PARAMS = [MU, LOG_SIGMA]
SIGMA = jnp.exp(LOG_SIGMA)
N_BIG = 20_000
RNG = jax.random.PRNGKey(0)
OTHER_RNG = jax.random.PRNGKey(1)


def cos_cost(x):
  return jnp.sum(jnp.cos(x))


def cos_grad():
  damp = jnp.exp(-0.5 * SIGMA**2)
  return [-jnp.sin(MU) * damp, -(SIGMA**2) * jnp.cos(MU) * damp]


def square_cost(x):
  return jnp.sum(x**2)


def square_grad():
  return [2.0 * MU, 2.0 * SIGMA**2]


OURS = {
  "score_function": gmc.score_function_jacobians,
  "pathwise": gmc.pathwise_jacobians,
  "measure_valued": gmc.measure_valued_jacobians,
}
THEIRS = {
  "score_function": omc.score_function_jacobians,
  "pathwise": omc.pathwise_jacobians,
  "measure_valued": omc.measure_valued_jacobians,
}


def assert_same_variance(per_sample_a, per_sample_b):
  """Per-coordinate variances of two independent sets of rows agree within z errors.

  The standard error of each sample variance comes from the fourth central moment,
  ``sqrt((m4 - s^4) / N)``; the two are independent, so their errors add in quadrature.
  """
  a_leaves = [np.asarray(x, np.float64) for x in jax.tree.leaves(per_sample_a)]
  b_leaves = [np.asarray(x, np.float64) for x in jax.tree.leaves(per_sample_b)]
  z = z_value(sum(x[0].size for x in a_leaves))

  def var_and_se(x):
    c = x - x.mean(axis=0)
    var = (c**2).sum(axis=0) / (x.shape[0] - 1)
    return var, np.sqrt(np.maximum((c**4).mean(axis=0) - var**2, 0.0) / x.shape[0])

  for a, b in zip(a_leaves, b_leaves, strict=True):
    (va, sa), (vb, sb) = var_and_se(a), var_and_se(b)
    tol = z * np.hypot(sa, sb) + 1e-6 * (1.0 + np.abs(vb))
    assert np.all(np.abs(va - vb) <= tol), (
      f"variances differ: gradest {va}, optax {vb}, |diff|/se={np.abs(va - vb) / np.hypot(sa, sb)}"
    )


def assert_same_structure(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    assert x.shape == y.shape and x.dtype == y.dtype


# --------------------------------------------------------------------------------------
# multi_normal
# --------------------------------------------------------------------------------------


def test_multi_normal_matches_optax():
  ours, theirs = gmc.multi_normal(MU, LOG_SIGMA), optax_utils.multi_normal(MU, LOG_SIGMA)
  x = ours.sample((7,), key=RNG)
  np.testing.assert_allclose(x, theirs.sample((7,), key=RNG), rtol=1e-6)
  assert x.shape == (7, 4)
  np.testing.assert_allclose(ours.log_prob(x), theirs.log_prob(x), rtol=1e-6)
  np.testing.assert_allclose(ours.log_prob(x[0]), theirs.log_prob(x[0]), rtol=1e-6)
  for a, b in zip(ours.params, theirs.params, strict=True):
    np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(ours.log_scale, theirs.log_scale)
  # A pytree: it crosses jit boundaries.
  y = jax.jit(lambda d, k: d.sample((7,), k))(ours, RNG)
  np.testing.assert_allclose(y, x, rtol=1e-6)


# --------------------------------------------------------------------------------------
# Estimators: statistics, structure, builders.
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(OURS))
def test_estimator_matches_optax_statistically(name):
  # The measure-valued estimator runs coupled and uncoupled (one compilation for both).
  options = [{"coupling": True}, {"coupling": False}] if name == "measure_valued" else [{}]

  def run(module, builder):
    @jax.jit
    def estimates(params, rng):
      return [module(cos_cost, params, builder, rng, N_BIG, **kw) for kw in options]

    return estimates

  ours = run(OURS[name], gmc.multi_normal)(PARAMS, RNG)
  theirs = run(THEIRS[name], optax_utils.multi_normal)(PARAMS, OTHER_RNG)
  for ours_jac, theirs_jac in zip(ours, theirs, strict=True):
    assert_same_structure(ours_jac, theirs_jac)
    assert_unbiased(ours_jac, cos_grad())
    assert_unbiased(theirs_jac, cos_grad())
    assert_same_variance(ours_jac, theirs_jac)


@pytest.mark.parametrize("container", [list, tuple])
def test_output_structure_matches_optax(container):
  params = container(PARAMS)
  for name in ("score_function", "pathwise", "measure_valued"):
    ours = jax.eval_shape(
      functools.partial(OURS[name], square_cost, dist_builder=gmc.multi_normal, num_samples=8),
      params,
      rng=RNG,
    )
    theirs = jax.eval_shape(
      functools.partial(
        THEIRS[name], square_cost, dist_builder=optax_utils.multi_normal, num_samples=8
      ),
      params,
      rng=RNG,
    )
    assert_same_structure(ours, theirs)
    for jac, p in zip(ours, params, strict=True):
      assert jac.shape == (8,) + p.shape


def test_measure_valued_builders_jit_and_vmap():
  keys = jax.random.split(OTHER_RNG, 3)

  @jax.jit
  def run(params):
    mvd = gmc.measure_valued_jacobians
    batched = jax.vmap(lambda k: mvd(cos_cost, params, gmc.multi_normal, k, 8))(keys)
    optax_builder = mvd(cos_cost, params, optax_utils.multi_normal, keys[1], 8)
    # A builder in (loc, scale): jacobians with respect to its own arguments.
    loc_scale = mvd(cos_cost, [params[0], jnp.exp(params[1])], Normal, keys[1], 8)
    return batched, optax_builder, loc_scale

  batched, optax_builder, (j_loc, j_scale) = run(PARAMS)
  assert isinstance(batched, list) and [b.shape for b in batched] == [(3, 8, 4)] * 2
  for a, b in zip(batched, optax_builder, strict=True):
    np.testing.assert_allclose(a[1], b, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(j_loc, batched[0][1], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(j_scale * SIGMA, batched[1][1], rtol=1e-5, atol=1e-6)  # chain rule


class OptaxStyleNormal:
  """A user distribution written against optax's protocol: sample(shape, key=...)."""

  def __init__(self, loc, log_scale):
    self.loc, self.scale = loc, jnp.exp(log_scale)

  def sample(self, shape, key):
    return self.loc + self.scale * jax.random.normal(key, tuple(shape) + self.loc.shape)

  def log_prob(self, x):
    z = (x - self.loc) / self.scale
    return jnp.sum(-0.5 * z**2 - jnp.log(self.scale) - 0.5 * math.log(2 * math.pi), axis=-1)


class OptaxStyleLaplace(OptaxStyleNormal):
  def sample(self, shape, key):
    return self.loc + self.scale * jax.random.laplace(key, tuple(shape) + self.loc.shape)


@pytest.mark.parametrize("name", ["score_function", "pathwise"])
def test_optax_protocol_distribution_builder(name):
  @jax.jit
  def run(params, rng):
    return (
      OURS[name](cos_cost, params, gmc.multi_normal, rng, 32),
      OURS[name](cos_cost, params, OptaxStyleNormal, rng, 32),
    )

  ours, custom = run(PARAMS, RNG)
  for a, b in zip(ours, custom, strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------------------
# Control variates.
# --------------------------------------------------------------------------------------


def test_control_delta_method_matches_optax():
  f = lambda x: jnp.sum(jnp.cos(x)) + x[0] * x[1] ** 2 + jnp.sin(x[2] * x[3])  # noqa: E731
  xs = gmc.multi_normal(MU, LOG_SIGMA).sample((5,), key=RNG)

  @jax.jit
  def evaluate(params):
    out = []
    for value, expected, _ in (gmc.control_delta_method(f), omc.control_delta_method(f)):
      cv_sum = lambda p, h=value: jnp.sum(jax.vmap(lambda x: h(p, x, None))(xs))  # noqa: E731
      mean = lambda p, m=expected: m(p, None)  # noqa: E731
      # Gradients run through the expansion point (third derivatives of f).
      out.append(jax.value_and_grad(cv_sum)(params) + jax.value_and_grad(mean)(params))
    return out

  ours, theirs = evaluate(PARAMS)
  for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
  assert gmc.control_delta_method(f)[2](PARAMS, xs, None) is None


@pytest.mark.parametrize("zero_debias", [True, False])
@pytest.mark.parametrize("heuristic", [True, False])
def test_moving_avg_baseline_state_matches_optax(zero_debias, heuristic):
  kwargs = dict(decay=0.9, zero_debias=zero_debias, use_decay_early_training_heuristic=heuristic)
  ours = gmc.moving_avg_baseline(square_cost, **kwargs)
  theirs = omc.moving_avg_baseline(square_cost, **kwargs)
  state_ours = state_theirs = (jnp.array(0.0), 0)
  for step, key in enumerate(jax.random.split(RNG, 6)):
    samples = gmc.multi_normal(MU, LOG_SIGMA).sample((16,), key=key)
    state_ours = ours[2](PARAMS, samples, state_ours)
    state_theirs = theirs[2](PARAMS, samples, state_theirs)
    np.testing.assert_allclose(state_ours[0], state_theirs[0], rtol=1e-6)
    assert int(state_ours[1]) == int(state_theirs[1]) == step + 1
    np.testing.assert_array_equal(ours[0](PARAMS, samples[0], state_ours), state_ours[0])
    np.testing.assert_array_equal(ours[1](PARAMS, state_ours), state_ours[0])


@pytest.mark.parametrize(
  "cv_name,estimator,state",
  [
    ("control_delta_method", "pathwise_jacobians", None),
    ("moving_avg_baseline", "score_function_jacobians", (1.5, 3)),
  ],
)
def test_control_variates_jacobians_equal_optax_on_optax_estimators(cv_name, estimator, state):
  """Given optax's own estimator (hence optax's samples), the results are optax's."""
  state = None if state is None else (jnp.array(state[0]), state[1])

  @jax.jit
  def both(params, rng, state):
    args = (getattr(omc, estimator), params, optax_utils.multi_normal, rng, 16, state)
    return (
      gmc.control_variates_jacobians(cos_cost, getattr(gmc, cv_name), *args),
      omc.control_variates_jacobians(cos_cost, getattr(omc, cv_name), *args),
    )

  (ours, new_ours), (theirs, new_theirs) = both(PARAMS, RNG, state)
  assert_same_structure(ours, theirs)
  for a, b in zip(ours, theirs, strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
  for a, b in zip(jax.tree.leaves(new_ours), jax.tree.leaves(new_theirs), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-6)


# optax's update folds the current batch into the moving average before it is used
# (an O(1/N) bias); a long history (step 10_000, decay 0.99) makes that negligible.
CV_CASES = [
  ("score_function", "control_delta_method", None),
  ("pathwise", "control_delta_method", None),
  ("measure_valued", "control_delta_method", None),
  ("score_function", "moving_avg_baseline", (1.0, 10_000)),
]


def iid_rows(jacobians, cv_name, samples):
  """The rows of control_variates_jacobians made i.i.d. again.

  Every row contains the same term, the mean over the call's samples of
  grad_params h(params, x_j) (optax's layout). It shifts the rows alike (their spread
  is the per-sample variance) but its own fluctuation is not in that spread; swapping
  it for each row's own term grad_params h(params, x_i) gives i.i.d. rows with the
  same mean, whose standard error is the usual one.
  """
  if cv_name != "control_delta_method":
    return jacobians  # the moving average does not depend on params
  h = gmc.control_delta_method(cos_cost)[0]
  own = jax.jit(jax.vmap(jax.grad(lambda p, x: h(p, x, None)), in_axes=(None, 0)))(PARAMS, samples)
  return [j + g.mean(axis=0) - g for j, g in zip(jacobians, own, strict=True)]


@functools.cache
def jitted_cv(module, estimator, cv, num_samples):
  builder = gmc.multi_normal if module is gmc else optax_utils.multi_normal
  return jax.jit(
    lambda params, rng, state: module.control_variates_jacobians(
      cos_cost, cv, estimator, params, builder, rng, num_samples, state
    )
  )


@pytest.mark.parametrize("name,cv_name,state", CV_CASES)
def test_control_variates_jacobians_match_optax(name, cv_name, state):
  state = None if state is None else (jnp.array(state[0]), state[1])
  ours, ours_state = jitted_cv(gmc, OURS[name], getattr(gmc, cv_name), N_BIG)(PARAMS, RNG, state)
  theirs, theirs_state = jitted_cv(omc, THEIRS[name], getattr(omc, cv_name), N_BIG)(
    PARAMS, OTHER_RNG, state
  )
  assert isinstance(ours, list)
  assert_same_structure(ours, theirs)
  assert jax.tree.structure(ours_state) == jax.tree.structure(theirs_state)
  assert_same_variance(ours, theirs)
  # The samples each implementation draws (gradest: one key per sample).
  ours_samples = jax.vmap(Normal(MU, SIGMA).sample)(jax.random.split(RNG, N_BIG))
  theirs_samples = optax_utils.multi_normal(MU, LOG_SIGMA).sample((N_BIG,), key=OTHER_RNG)
  assert_unbiased(iid_rows(ours, cv_name, ours_samples), cos_grad())
  assert_unbiased(iid_rows(theirs, cv_name, theirs_samples), cos_grad())
  if cv_name == "moving_avg_baseline":
    # The state is updated once, with the samples the estimator used.
    expected = gmc.moving_avg_baseline(cos_cost)[2](PARAMS, ours_samples, state)
    np.testing.assert_allclose(ours_state[0], expected[0], rtol=1e-5)
    assert int(ours_state[1]) == int(theirs_state[1]) == state[1] + 1


REPLICATES, PER_REPLICATE = 256, 16


def replicate_stats(jacobians):
  """Per-call means and within-call variances, both i.i.d. across calls (leading axis)."""
  leaves = [np.asarray(j, np.float64) for j in jacobians]
  return [j.mean(axis=1) for j in leaves], [j.var(axis=1, ddof=1) for j in leaves]


def assert_same_mean(a_tree, b_tree):
  """Two-sample z-test on the means of two sets of i.i.d. replicates (leading axis)."""
  a_leaves, b_leaves = jax.tree.leaves(a_tree), jax.tree.leaves(b_tree)
  z = z_value(sum(np.asarray(x[0]).size for x in a_leaves))
  for a, b in zip(a_leaves, b_leaves, strict=True):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    se = np.hypot(a.std(axis=0, ddof=1), b.std(axis=0, ddof=1)) / math.sqrt(a.shape[0])
    gap = np.abs(a.mean(axis=0) - b.mean(axis=0))
    assert np.all(gap <= z * se + 1e-6), (a.mean(axis=0), b.mean(axis=0), se)


def test_estimated_coefficients_match_optax():
  from optax.monte_carlo.control_variates import estimate_control_variate_coefficients

  cv, est, coeff_samples = gmc.control_delta_method, gmc.score_function_jacobians, 100

  # vmap over rng: each call's mean is one i.i.d. draw of the estimate.
  @jax.jit
  @functools.partial(jax.vmap, in_axes=(None, 0))
  def run(params, rng):
    jac, _ = gmc.control_variates_jacobians(
      cos_cost, cv, est, params, gmc.multi_normal, rng, PER_REPLICATE,
      estimate_cv_coeffs=True, estimate_cv_coeffs_num_samples=coeff_samples,
    )  # fmt: skip
    coeffs = gmc.estimate_control_variate_coefficients(
      cos_cost, cv, est, params, gmc.multi_normal, rng, coeff_samples
    )
    return jac, coeffs

  reps, ours = run(PARAMS, jax.random.split(RNG, REPLICATES))
  assert [r.shape for r in reps] == [(REPLICATES, PER_REPLICATE, 4)] * 2
  assert_unbiased(replicate_stats(reps)[0], cos_grad())

  # The coefficients: the same (ratio) estimator of the same quantity as optax's.
  optax_one = jax.jit(
    lambda rng: estimate_control_variate_coefficients(
      cos_cost,
      omc.control_delta_method,
      omc.score_function_jacobians,
      PARAMS,
      optax_utils.multi_normal,
      rng,
      coeff_samples,
    )
  )
  theirs = np.stack([optax_one(k) for k in list(jax.random.split(OTHER_RNG, REPLICATES))])
  assert isinstance(ours, list) and [c.shape for c in ours] == [(REPLICATES,)] * 2
  assert_same_mean(np.stack(ours, axis=1), theirs)


def counting_control_variate(function):
  """h = f, with its closed-form mean under multi_normal; the state counts samples."""

  def value(params, x, state):
    del params, state
    return function(x)

  def expected(params, state):
    del state
    return jnp.sum(params[0] ** 2 + jnp.exp(2.0 * params[1]))

  def update(params, samples, state):
    del params
    return state + samples.shape[0]

  return value, expected, update


USER_CV_ESTIMATORS = {
  # Wrapped estimators of this module are recognised as drawing gradest's samples.
  "score_function": functools.partial(gmc.score_function_jacobians),
  "pathwise": jax.jit(gmc.pathwise_jacobians, static_argnums=(0, 2, 4)),
}


@pytest.mark.parametrize("name", list(USER_CV_ESTIMATORS))
def test_user_defined_control_variate(name):
  """With h = f, f and h on the same samples cancel and leave exactly grad E[f]."""
  est, cv = USER_CV_ESTIMATORS[name], counting_control_variate

  @jax.jit
  def run(params, rng, state):
    jac, new_state = gmc.control_variates_jacobians(
      square_cost, cv, est, params, gmc.multi_normal, rng, 16, state
    )
    coeffs = gmc.estimate_control_variate_coefficients(
      square_cost, cv, est, params, gmc.multi_normal, rng, 50, state
    )
    pilot = est(square_cost, params, gmc.multi_normal, jax.random.fold_in(rng, 2**31 - 1), 50)
    return jac, new_state, coeffs, pilot

  jac, state, coeffs, pilot = run(PARAMS, RNG, jnp.array(0))
  assert int(state) == 16
  for j, g in zip(jac, square_grad(), strict=True):
    np.testing.assert_allclose(j, jnp.broadcast_to(g, (16, 4)), rtol=1e-5, atol=1e-5)
  # Coefficients for h = f: c = S / (S + eps), S the summed variance of the jacobians
  # of the coefficient samples (the key fold_in(rng, 2**31 - 1)).
  for c, j in zip(coeffs, pilot, strict=True):
    s = float(jnp.sum(jnp.var(j, axis=0)))
    np.testing.assert_allclose(c, s / (s + 1e-3), rtol=1e-4)


# --------------------------------------------------------------------------------------
# jit, vmap, keys, errors.
# --------------------------------------------------------------------------------------


def test_jit_and_vmap_over_rng():
  # (measure_valued_jacobians: test_measure_valued_builders_jit_and_vmap.)
  estimators = (gmc.score_function_jacobians, gmc.pathwise_jacobians)
  keys = jax.random.split(OTHER_RNG, 3)

  @jax.jit
  def single(rng):
    return [est(cos_cost, PARAMS, gmc.multi_normal, rng, 8) for est in estimators]

  batched = jax.jit(jax.vmap(single.__wrapped__))(keys)
  for jac_batched, jac_one in zip(batched, single(keys[1]), strict=True):
    assert [b.shape for b in jac_batched] == [(3, 8, 4)] * 2
    for a, b in zip(jac_batched, jac_one, strict=True):
      np.testing.assert_allclose(a[1], b, rtol=1e-5, atol=1e-6)


def test_typed_keys_and_determinism():
  run = jax.jit(gmc.score_function_jacobians, static_argnums=(0, 2, 4))
  a = run(cos_cost, PARAMS, gmc.multi_normal, jax.random.key(0), 8)
  b = run(cos_cost, PARAMS, gmc.multi_normal, jax.random.key(0), 8)
  assert [x.shape for x in a] == [(8, 4)] * 2
  for x, y in zip(a, b, strict=True):
    np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("name", ["score_function", "pathwise", "measure_valued"])
def test_bad_num_samples(name):
  with pytest.raises(ValueError, match="num_samples"):
    OURS[name](cos_cost, PARAMS, gmc.multi_normal, RNG, 0)
  with pytest.raises(ValueError, match="num_samples"):
    gmc.control_variates_jacobians(
      cos_cost, gmc.control_delta_method, OURS[name], PARAMS, gmc.multi_normal, RNG, 0
    )


@pytest.mark.parametrize("builder", [Bernoulli, OptaxStyleLaplace])
def test_measure_valued_rejects_non_gaussian(builder):
  params = PARAMS[:1] if builder is Bernoulli else PARAMS
  with pytest.raises(ValueError, match="Gaussian"):
    gmc.measure_valued_jacobians(cos_cost, params, builder, RNG, 8)


def test_other_bad_inputs():
  with pytest.raises(TypeError, match="tuple or list"):
    gmc.score_function_jacobians(cos_cost, {"loc": MU}, gmc.multi_normal, RNG, 8)
  with pytest.raises(TypeError, match="triple"):
    gmc.control_variates_jacobians(
      cos_cost, lambda f: f, gmc.score_function_jacobians, PARAMS, gmc.multi_normal, RNG, 8
    )
  with pytest.raises(ValueError, match="estimate_cv_coeffs_num_samples"):
    gmc.control_variates_jacobians(
      cos_cost, gmc.control_delta_method, gmc.score_function_jacobians, PARAMS,
      gmc.multi_normal, RNG, 8, estimate_cv_coeffs=True, estimate_cv_coeffs_num_samples=0,
    )  # fmt: skip
  with pytest.raises(ValueError, match="scalar"):
    gmc.pathwise_jacobians(lambda x: x, PARAMS, gmc.multi_normal, RNG, 8)


# --------------------------------------------------------------------------------------
# Costs and builders optax accepted.
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("cost", [np.sum, sum], ids=["np.sum", "builtin_sum"])
@pytest.mark.parametrize("name", list(OURS))
def test_numpy_and_builtin_costs_under_jit(name, cost):
  """optax's own tests pass np.sum as the cost, static under jax.jit; called twice."""
  jitted = jax.jit(OURS[name], static_argnums=(0, 2, 4))
  for rng in (RNG, OTHER_RNG):  # the second call is the one that crashed the process
    got = jitted(cost, PARAMS, gmc.multi_normal, rng, 16)
    want = jitted(jnp.sum, PARAMS, gmc.multi_normal, rng, 16)
    for a, b in zip(got, want, strict=True):
      np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


NUMPY_COST_SCRIPT = """
import jax, jax.numpy as jnp, numpy as np
from gradest import monte_carlo as mc
params = [jnp.zeros(3), jnp.zeros(3)]
for estimator in (mc.score_function_jacobians, mc.pathwise_jacobians,
                  mc.measure_valued_jacobians):
  jitted = jax.jit(estimator, static_argnums=(0, 2, 4))
  for seed in (0, 1):
    jac = jitted(np.sum, params, mc.multi_normal, jax.random.key(seed), 4)
    assert all(bool(jnp.all(jnp.isfinite(j))) for j in jac)
print("all ok")
"""


def test_numpy_cost_does_not_crash_a_fresh_process():
  """In a fresh process, with no earlier JAX state: np.sum used to crash the interpreter."""
  root = str(pathlib.Path(__file__).resolve().parents[1])
  env = {
    **os.environ,
    "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])),
  }
  result = subprocess.run(
    [sys.executable, "-c", NUMPY_COST_SCRIPT], env=env, capture_output=True, text=True, timeout=300
  )
  assert result.returncode == 0, result.stdout + result.stderr
  assert "all ok" in result.stdout


class OneArgumentDist:
  """A non-Gaussian class whose constructor takes one argument (as in optax's tests)."""

  def __init__(self, params):
    self._params = params

  def sample(self, n):
    return np.zeros(n)


@pytest.mark.parametrize("jit", [False, True])
@pytest.mark.parametrize("coupling", [True, False])
def test_measure_valued_rejects_a_non_gaussian_class_before_building_it(coupling, jit):
  """optax raised ValueError, not the constructor's TypeError, for two params."""
  est = gmc.measure_valued_jacobians
  if jit:
    est = jax.jit(est, static_argnums=(0, 2, 4, 5))
  with pytest.raises(ValueError, match="Gaussian"):
    est(lambda x: jnp.sum(x) ** 2, PARAMS, OneArgumentDist, RNG, 8, coupling)


def test_measure_valued_rejects_a_non_distribution_from_a_function_builder():
  with pytest.raises(ValueError, match="returned OneArgumentDist"):
    gmc.measure_valued_jacobians(cos_cost, PARAMS, lambda m, s: OneArgumentDist(m), RNG, 8)


# --------------------------------------------------------------------------------------
# Settings of optax's own tests whose fixed tolerances are one or two standard errors of
# the estimator (optax 0.2.6 misses them too with other keys): here with tolerances from
# the estimator's standard error.
# --------------------------------------------------------------------------------------

W_QUADRATIC = jnp.array([4.0, 2.0, 3.0])
OPTAX_SUITE_SETTINGS = {
  # test_linear_function (score function): np.sum, mean 0.7 / 0.8, log-scale 0.0 / 0.1.
  "linear_0.7_0.0": (np.sum, (0.7, 0.0), 5 * 10**5),
  "linear_0.8_0.1": (np.sum, (0.8, 0.1), 5 * 10**5),
  # test_weighted_quadratic case_2 (score function).
  "weighted_quadratic_case_2": (
    lambda x: jnp.sum(x * W_QUADRATIC) ** 2,
    ([1.0, 2.0, 3.0], [-1.0, 0.3, -2.0]),
    10**6,
  ),
}


@pytest.mark.parametrize("setting", list(OPTAX_SUITE_SETTINGS))
def test_score_function_unbiased_at_optax_suite_settings(setting):
  cost, (mean, log_scale), n = OPTAX_SUITE_SETTINGS[setting]
  mean = jnp.broadcast_to(jnp.asarray(mean, jnp.float32), (3,))
  log_scale = jnp.broadcast_to(jnp.asarray(log_scale, jnp.float32), (3,))
  jitted = jax.jit(gmc.score_function_jacobians, static_argnums=(0, 2, 4))
  jac = jitted(cost, [mean, log_scale], gmc.multi_normal, jax.random.key(1), n)
  if setting.startswith("linear"):
    expected = [jnp.ones(3), jnp.zeros(3)]
  else:
    m = jnp.sum(W_QUADRATIC * mean)
    expected = [2 * W_QUADRATIC * m, 2 * W_QUADRATIC**2 * jnp.exp(2 * log_scale)]
  assert_unbiased(jac, expected)


def test_delta_method_agrees_with_plain_score_function_at_optax_suite_setting():
  """test_non_polynomial_function's setting: log(sum x^2), mean = log-scale = 1."""
  f = lambda x: jnp.log(jnp.sum(x**2))  # noqa: E731
  params = [jnp.ones(3), jnp.ones(3)]
  cv_rng, plain_rng = jax.random.split(jax.random.key(1))
  cv_jacobians, _ = jax.jit(gmc.control_variates_jacobians, static_argnums=(0, 1, 2, 4, 6))(
    f, gmc.control_delta_method, gmc.score_function_jacobians, params, gmc.multi_normal,
    cv_rng, 10**5,
  )  # fmt: skip
  plain = jax.jit(gmc.score_function_jacobians, static_argnums=(0, 2, 4))(
    f, params, gmc.multi_normal, plain_rng, 10**5
  )
  assert_same_mean(cv_jacobians, list(plain))
