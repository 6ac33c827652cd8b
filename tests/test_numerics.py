"""Property-based tests of the numerical claims: every dtype, shape and extreme value.

Functions that accept half-precision logits compute in at least float32 and return the
logits' dtype; their results must be finite, of that dtype, on the simplex where they
are samples of it, invariant to a shift of the logits where the distribution is, and
the same eagerly and under ``jax.jit`` up to the rounding the computation allows (XLA
orders and fuses jitted arithmetic differently; where large terms cancel, that rounding
is at the size of the terms, not of the result). Logits range over [-1e4, 1e4] (beyond
float16's exponent range once divided by a small temperature) and temperatures over
[1e-3, 1e3]. float64 runs under ``jax.enable_x64``.

The number of examples is bounded by the hypothesis profile registered in conftest.py.
All these tests carry the ``numerics`` marker: CI runs them with the suite's compile
settings and again with XLA's defaults.
"""

from __future__ import annotations

import contextlib
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import gradest
from gradest.distributions import RelaxedBernoulli, RelaxedCategorical

pytestmark = pytest.mark.numerics

DTYPES = ["float16", "bfloat16", "float32", "float64"]
# Shapes with the class axis last: size-1 axes and batch dimensions included.
SHAPES = [(1,), (2,), (5,), (1, 1), (3, 1), (1, 4), (2, 3, 4)]
LOGIT = st.one_of(
  st.floats(-1e4, 1e4, allow_nan=False, width=32),
  st.sampled_from([-1e4, 1e4, 0.0, -7000.0, 7000.0]),
)
TEMPERATURE = st.floats(-3.0, 3.0).map(lambda e: float(10.0**e))


def precision(dtype):
  """Enables float64 for the duration of a float64 check."""
  return jax.enable_x64(True) if dtype == "float64" else contextlib.nullcontext()


@st.composite
def logits_case(draw, shapes=SHAPES, min_classes=1):
  dtype = draw(st.sampled_from(DTYPES))
  shape = draw(st.sampled_from([s for s in shapes if s[-1] >= min_classes]))
  values = draw(hnp.arrays(np.float64, shape, elements=LOGIT))
  return dtype, values


def eps(dtype) -> float:
  return float(jnp.finfo(dtype).eps)


def assert_finite_of(y, dtype, name):
  assert y.dtype == jnp.dtype(dtype), f"{name}: dtype {y.dtype}, expected {dtype}"
  assert bool(jnp.all(jnp.isfinite(y))), f"{name}: not finite: {y}"


def assert_simplex(y, dtype, axis=-1):
  y32 = np.asarray(y, np.float64)
  assert np.all(y32 >= 0.0) and np.all(y32 <= 1.0)
  k = y.shape[axis]
  np.testing.assert_allclose(y32.sum(axis), 1.0, atol=2 * k * eps(dtype))


def assert_same(eager, jitted, dtype, argument_scale=0.0):
  """Eager and jitted results agree to the rounding of the compute dtype, cast back.

  For a softmax or sigmoid of an argument ``x`` computed in at least float32,
  ``argument_scale`` bounds ``|x|``: XLA may order or fuse the arithmetic of ``x``
  differently under jit (a division by the temperature becomes a multiplication by its
  reciprocal), which moves ``x`` by a few of its own ulps and the result by at most half
  that (the derivatives of softmax and sigmoid sum to at most 1/2 in absolute value).
  """
  a, b = np.asarray(eager, np.float64), np.asarray(jitted, np.float64)
  work = jnp.promote_types(dtype, jnp.float32)
  atol = 4 * eps(dtype) + 4 * eps(work) * argument_scale
  np.testing.assert_allclose(a, b, rtol=4 * eps(dtype), atol=atol)


def relaxation_argument_scale(values, temperature, dtype):
  """A bound on ``|(logits + noise) / temperature|`` inside a relaxed sample.

  Gumbel and logistic noise are drawn in ``work`` from uniforms clipped to
  ``[tiny, 1 - epsneg]``, so ``|noise| <= -log(tiny)`` (87.3 in float32); the logits may
  be centred first, which at most doubles them.
  """
  work = jnp.promote_types(dtype, jnp.float32)
  noise = -math.log(float(jnp.finfo(work).tiny))
  return (2.0 * float(np.max(np.abs(values))) + noise) / temperature


# --------------------------------------------------------------------------------------
# Gumbel toolkit.
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("relaxation", ["gumbel_softmax", "binary_gumbel_softmax"])
@given(case=logits_case(), temperature=TEMPERATURE, hard=st.booleans())
def test_relaxed_samples_finite_dtype_jit(relaxation, case, temperature, hard):
  dtype, values = case
  fn = getattr(gradest, relaxation)
  key = jax.random.key(1)
  with precision(dtype):
    logits = jnp.asarray(values, dtype)
    y = fn(key, logits, temperature, hard=hard)
    assert_finite_of(y, dtype, relaxation)
    if relaxation == "gumbel_softmax":
      assert_simplex(y, dtype)
    assert bool(jnp.all((y >= 0) & (y <= 1)))
    if hard:
      assert set(np.unique(np.asarray(y, np.float64))) <= {0.0, 1.0}
    jitted = jax.jit(fn, static_argnames="hard")(key, logits, temperature, hard=hard)
    assert_same(y, jitted, dtype, relaxation_argument_scale(values, temperature, dtype))
    # Gradients compiled whole (op-by-op tracing of the backward pass at every new shape
    # and dtype is the slowest part of an example); eager = jit is checked on the values.
    grad = jax.jit(jax.grad(lambda lg: jnp.sum(fn(key, lg, temperature, hard=hard)[..., 0])))(
      logits
    )
    assert_finite_of(grad, dtype, f"{relaxation} gradient")


@given(
  logits_case(shapes=[(2,), (3, 2), (1, 4)]),
  TEMPERATURE,
  st.sampled_from(["categorical", "bernoulli"]),
)
def test_gumbel_rao_finite_dtype_jit(case, temperature, family):
  dtype, values = case
  key = jax.random.key(3)
  with precision(dtype):
    logits = jnp.asarray(values, dtype)
    y = gradest.gumbel_rao(key, logits, temperature, 4, family=family)
    assert_finite_of(y, dtype, "gumbel_rao")
    if family == "categorical":
      assert_simplex(y, dtype)
    assert set(np.unique(np.asarray(y, np.float64))) <= {0.0, 1.0}
    jitted = jax.jit(gradest.gumbel_rao, static_argnums=3, static_argnames="family")(
      key, logits, temperature, 4, family=family
    )
    np.testing.assert_array_equal(np.asarray(y, np.float64), np.asarray(jitted, np.float64))
    grad = jax.jit(
      jax.grad(
        lambda lg: jnp.sum(gradest.gumbel_rao(key, lg, temperature, 4, family=family)[..., 0])
      )
    )(logits)
    assert_finite_of(grad, dtype, "gumbel_rao gradient")


@given(logits_case(), TEMPERATURE)
def test_straight_through_is_hard_forward_soft_backward(case, temperature):
  dtype, values = case
  with precision(dtype):
    soft = jax.nn.softmax(jnp.asarray(values, jnp.float32) / temperature).astype(dtype)
    hard = jax.nn.one_hot(jnp.argmax(soft, -1), soft.shape[-1], dtype=dtype)
    y = gradest.straight_through(hard, soft)
    assert_finite_of(y, dtype, "straight_through")
    np.testing.assert_array_equal(np.asarray(y, np.float64), np.asarray(hard, np.float64))
    grad = jax.grad(lambda s: jnp.sum(gradest.straight_through(hard, s) * 2.0))(soft)
    np.testing.assert_array_equal(np.asarray(grad, np.float64), 2.0)


@given(logits_case(), st.data())
def test_conditional_gumbel_keeps_the_argmax(case, data):
  dtype, values = case
  index = data.draw(hnp.arrays(np.int32, values.shape[:-1], elements=st.integers(0, 99)))
  index = index % values.shape[-1]
  key = jax.random.key(4)
  with precision(dtype):
    logits = jnp.asarray(values, dtype)
    z = gradest.conditional_gumbel(key, logits, index)
    assert_finite_of(z, dtype, "conditional_gumbel")
    np.testing.assert_array_equal(np.asarray(jnp.argmax(z, -1)), index)
    if values.shape[-1] > 1:  # the argmax is strict
      top = np.take_along_axis(np.asarray(z, np.float64), index[..., None], -1)
      assert np.all(np.sum(np.asarray(z, np.float64) >= top, -1) == 1)
    assert_same(z, jax.jit(gradest.conditional_gumbel)(key, logits, index), dtype)


@given(logits_case(), st.data())
def test_conditional_logistic_keeps_the_sign(case, data):
  dtype, values = case
  sample = data.draw(hnp.arrays(np.int32, values.shape, elements=st.integers(0, 1)))
  key = jax.random.key(5)
  with precision(dtype):
    logits = jnp.asarray(values, dtype)
    z = gradest.conditional_logistic(key, logits, sample)
    assert_finite_of(z, dtype, "conditional_logistic")
    np.testing.assert_array_equal(np.asarray(z > 0), sample.astype(bool))
    assert_same(z, jax.jit(gradest.conditional_logistic)(key, logits, sample), dtype)


@given(logits_case(), st.floats(-1e4, 1e4, width=32))
def test_truncated_gumbel_below_upper(case, upper):
  dtype, values = case
  key = jax.random.key(6)
  with precision(dtype):
    location = jnp.asarray(values, dtype)
    upper = jnp.asarray(upper, dtype)
    x = gradest.truncated_gumbel(key, location, upper)
    assert_finite_of(x, dtype, "truncated_gumbel")
    assert bool(jnp.all(x <= upper))


@given(logits_case(), st.sampled_from([1, 2, 3]))
def test_gumbel_max_and_top_k_in_range(case, k):
  dtype, values = case
  key = jax.random.key(7)
  k = min(k, values.shape[-1])
  with precision(dtype):
    logits = jnp.asarray(values, dtype)
    idx = gradest.gumbel_max(key, logits)
    assert idx.shape == values.shape[:-1]
    assert bool(jnp.all((idx >= 0) & (idx < values.shape[-1])))
    top = gradest.gumbel_top_k(key, logits, k)
    assert top.shape == values.shape[:-1] + (k,)
    # Distinct classes, and the first of the top k is the Gumbel-max sample.
    assert np.all(np.sort(np.asarray(top), -1)[..., 1:] != np.sort(np.asarray(top), -1)[..., :-1])
    np.testing.assert_array_equal(np.asarray(top[..., 0]), np.asarray(idx))


# --------------------------------------------------------------------------------------
# Shift invariance: logits and shifts chosen so that the shifted logits are exact in the
# dtype, so any difference comes from the computation, not from rounding the input.
# --------------------------------------------------------------------------------------

# Largest |integer shift + logit| that each dtype represents exactly.
EXACT_INTEGERS = {"float16": 2048, "bfloat16": 256, "float32": 2**24, "float64": 2**53}


@st.composite
def shifted_case(draw):
  dtype = draw(st.sampled_from(DTYPES))
  shape = draw(st.sampled_from([s for s in SHAPES if s[-1] >= 2]))
  values = draw(hnp.arrays(np.int64, shape, elements=st.integers(-20, 20))).astype(np.float64)
  bound = min(EXACT_INTEGERS[dtype] - 20, 10_000)
  shift = float(draw(st.integers(-bound, bound)))
  return dtype, values, shift


@given(shifted_case(), TEMPERATURE)
def test_gumbel_softmax_is_shift_invariant(case, temperature):
  dtype, values, shift = case
  key = jax.random.key(8)
  with precision(dtype):
    y = gradest.gumbel_softmax(key, jnp.asarray(values, dtype), temperature)
    y_shift = gradest.gumbel_softmax(key, jnp.asarray(values + shift, dtype), temperature)
    np.testing.assert_array_equal(np.asarray(y, np.float64), np.asarray(y_shift, np.float64))


@given(shifted_case(), TEMPERATURE)
def test_relaxed_categorical_log_prob_is_shift_invariant(case, temperature):
  dtype, values, shift = case
  key = jax.random.key(9)
  with precision(dtype):
    d = RelaxedCategorical(jnp.asarray(values, dtype), temperature)
    d_shift = RelaxedCategorical(jnp.asarray(values + shift, dtype), temperature)
    y = d.sample(key)
    lp, lp_shift = d.log_prob(y), d_shift.log_prob(y)
    assert_finite_of(lp, dtype, "RelaxedCategorical.log_prob")
    np.testing.assert_array_equal(np.asarray(lp, np.float64), np.asarray(lp_shift, np.float64))


def test_relaxed_categorical_log_prob_shift_regressions():
  """The reported cases: float32 logits shifted by 1e4; a half-precision row at -1e4."""
  logits = jnp.array([0.5, -1.0, 2.0, 0.25])
  y = jnp.array([0.1, 0.2, 0.3, 0.4])
  d, d_shift = RelaxedCategorical(logits, 0.7), RelaxedCategorical(logits + 1e4, 0.7)
  assert float(d.log_prob(y)) == float(d_shift.log_prob(y))
  with jax.enable_x64(True):
    reference = float(
      RelaxedCategorical(jnp.zeros(4, jnp.float64), 0.7).log_prob(jnp.asarray(y, jnp.float64))
    )
  for dtype in (jnp.float16, jnp.bfloat16):
    lp = RelaxedCategorical(jnp.full(4, -1e4, dtype), 0.7).log_prob(y.astype(dtype))
    assert lp.dtype == dtype
    # The density at y rounded to the dtype, within the dtype's rounding of the result.
    np.testing.assert_allclose(float(lp), reference, rtol=0, atol=0.05)


# --------------------------------------------------------------------------------------
# The relaxed distributions.
# --------------------------------------------------------------------------------------


def assert_log_prob_in_dtype(lp, dist, y, dtype):
  """A half-precision log-density is the float32 one rounded to its dtype.

  It is finite whenever that value fits in the dtype (the joint density of many
  coordinates at the boundary of the support can be below float16's range).
  """
  assert lp.dtype == jnp.dtype(dtype)
  work = jnp.promote_types(dtype, jnp.float32)
  reference = type(dist)(dist.logits.astype(work), dist.temperature.astype(work)).log_prob(
    y.astype(work)
  )
  assert bool(jnp.all(jnp.isfinite(reference)))
  np.testing.assert_array_equal(
    np.asarray(lp, np.float64), np.asarray(reference.astype(dtype), np.float64)
  )
  fits = np.abs(np.asarray(reference, np.float64)) <= float(jnp.finfo(dtype).max)
  assert np.all(np.isfinite(np.asarray(lp, np.float64))[fits])


def log_prob_rounding(dist, y, lp, dtype):
  """The difference allowed between two roundings of a relaxed categorical's log-density.

  The density adds up terms l_i - (tau + 1) log y_i and a log-sum-exp of l_i - tau log y_i
  (logits centred), one per entry of y; their rounding, and the density's sensitivity to
  the rounding of y itself (tau per unit of relative error), scale with the size of those
  terms, which can be far above the density's: at tau = 1000 and y_2 = 4.5e-5, terms near
  1e4 cancel to a density near 15, and eager and jitted evaluations (ordered and fused
  differently by XLA) differ by a few 1e-4. The terms are computed in at least float32;
  the result is then rounded to ``dtype``.
  """
  logits = np.asarray(dist.logits, np.float64)
  logits = logits - logits.mean(-1, keepdims=True)
  tau = float(np.max(np.asarray(dist.temperature, np.float64)))
  tiny = float(jnp.finfo(dtype).tiny)
  log_y = np.log(np.maximum(np.asarray(y, np.float64), tiny))
  terms = 1.0 + np.abs(logits) + (tau + 1.0) * np.abs(log_y)  # each entry's rounding
  per_sample = terms.reshape(terms.shape[0], -1).sum(-1)
  work = jnp.promote_types(dtype, jnp.float32)  # computed in work, rounded to dtype
  lp_max = float(np.max(np.abs(np.asarray(lp, np.float64))))
  return 8 * (eps(work) * float(np.max(per_sample)) + eps(dtype) * lp_max)


@given(logits_case(), TEMPERATURE)
@example(("float32", np.array([0.0, -1e4])), 1000.0)  # terms of 1e4 cancel to a density of 15
def test_relaxed_categorical_sample_and_log_prob(case, temperature):
  dtype, values = case
  key = jax.random.key(10)
  with precision(dtype):
    d = RelaxedCategorical(jnp.asarray(values, dtype), temperature)
    y = d.sample(key, (2,))
    assert y.shape == (2,) + values.shape
    assert_finite_of(y, dtype, "RelaxedCategorical.sample")
    assert_simplex(y, dtype)
    lp = d.log_prob(y)
    assert lp.shape == (2,)
    assert_log_prob_in_dtype(lp, d, y, dtype)
    jitted = jax.jit(lambda dist, x: dist.log_prob(x))(d, y)
    np.testing.assert_allclose(
      np.asarray(lp, np.float64),
      np.asarray(jitted, np.float64),
      rtol=0,
      atol=log_prob_rounding(d, y, lp, dtype),
    )


@given(logits_case(), TEMPERATURE)
def test_relaxed_bernoulli_sample_and_log_prob(case, temperature):
  dtype, values = case
  key = jax.random.key(11)
  with precision(dtype):
    d = RelaxedBernoulli(jnp.asarray(values, dtype), temperature)
    y = d.sample(key, (2,))
    assert_finite_of(y, dtype, "RelaxedBernoulli.sample")
    assert bool(jnp.all((y >= 0) & (y <= 1)))
    lp = d.log_prob(y)
    assert lp.shape == (2,)
    assert_log_prob_in_dtype(lp, d, y, dtype)


# --------------------------------------------------------------------------------------
# NCE and sampled losses.
# --------------------------------------------------------------------------------------

LOSS_CASES = {
  "nce": lambda t, s, lt, ls: gradest.nce_loss(t, s, lt, ls),
  "negative_sampling": lambda t, s, lt, ls: gradest.negative_sampling_loss(t, s),
  "sampled_softmax": lambda t, s, lt, ls: gradest.sampled_softmax_loss(t, s, lt, ls),
  "ranking_nce": lambda t, s, lt, ls: gradest.ranking_nce_loss(t, s, lt, ls),
}


@pytest.mark.parametrize("name", sorted(LOSS_CASES))
@given(
  dtype=st.sampled_from(DTYPES),
  batch=st.sampled_from([(), (1,), (3,)]),
  num_true=st.sampled_from([1, 2]),
  num_sampled=st.sampled_from([1, 4]),
  data=st.data(),
)
def test_sampled_losses_finite_dtype_jit(name, dtype, batch, num_true, num_sampled, data):
  t = data.draw(hnp.arrays(np.float64, batch + (num_true,), elements=LOGIT))
  s = data.draw(hnp.arrays(np.float64, batch + (num_sampled,), elements=LOGIT))
  log_ec = data.draw(st.floats(-30.0, 5.0))
  fn = LOSS_CASES[name]
  with precision(dtype):
    t, s = jnp.asarray(t, dtype), jnp.asarray(s, dtype)
    lt, ls = jnp.full(t.shape, log_ec, dtype), jnp.full(s.shape, log_ec, dtype)
    loss = fn(t, s, lt, ls)
    assert loss.shape == batch
    assert_finite_of(loss, dtype, name)
    assert bool(jnp.all(loss >= 0))
    assert_same(loss, jax.jit(fn)(t, s, lt, ls), dtype)
    grads = jax.jit(jax.grad(lambda a, b: jnp.sum(fn(a, b, lt, ls).astype(jnp.float32)), (0, 1)))(
      t, s
    )
    for g in grads:
      assert_finite_of(g, dtype, f"{name} gradient")


@given(
  dtype=st.sampled_from(DTYPES),
  temperature=st.floats(-1.0, 1.0).map(lambda e: float(10.0**e)),
  scale=st.sampled_from([1e-3, 1.0, 10.0]),
  normalize=st.booleans(),
)
def test_infonce_finite_dtype(dtype, temperature, scale, normalize):
  key = jax.random.key(12)
  with precision(dtype):
    a = (jax.random.normal(key, (4, 3)) * scale).astype(dtype)
    p = (jax.random.normal(jax.random.key(13), (4, 3)) * scale).astype(dtype)
    loss = gradest.infonce_loss(a, p, temperature=temperature, normalize=normalize)
    assert loss.shape == (4,)
    assert_finite_of(loss, dtype, "infonce_loss")
