"""Tests of the Gumbel toolkit (gradest._src.gumbel).

Distributional claims are checked against exact laws: chi-square tests of categorical
frequencies against softmax(logits) and against the exact probabilities of sampling
without replacement, one- and two-sample Kolmogorov-Smirnov tests of continuous laws,
and z-tests with standard errors. Every p-value threshold is the suite's false-failure
rate FALSE_FAILURE (1e-6) divided by the number of tests in the check (Bonferroni).

Compilation dominates the run time on CPU, so the draws share a few shapes: (N, 5),
(N,), (5, N) and NUM_KEYS keys for the vmap tests.
"""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import gradest

from .helpers import FALSE_FAILURE, assert_unbiased, assert_variance, z_value

N = 100_000
NUM_KEYS = 1000
EULER_GAMMA = 0.5772156649015329
LOGITS5 = np.array([0.3, -1.2, 1.5, 0.0, -0.4])  # softmax >= 0.04: every cell well filled
BINARY_LOGITS = np.array([-2.5, -0.5, 0.0, 1.0, 3.0])
SMALL_DTYPES = [jnp.float32, jnp.float16, jnp.bfloat16]


def _batch(logits, n=N, dtype=np.float32):
  """``n`` copies of ``logits`` along a new leading axis."""
  return jnp.asarray(np.broadcast_to(np.asarray(logits, dtype), (n, *np.shape(logits))))


def _softmax(logits, axis=-1):
  logits = np.asarray(logits, np.float64)
  e = np.exp(logits - logits.max(axis=axis, keepdims=True))
  return e / e.sum(axis=axis, keepdims=True)


def _sigmoid(x):
  return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, np.float64)))


def _np(x):
  return np.asarray(x, np.float64)


def _assert_chisquare(samples, probs, num_tests=1):
  """Chi-square goodness of fit of integer ``samples`` to ``probs`` (Bonferroni over tests)."""
  samples = np.asarray(samples).ravel()
  probs = np.asarray(probs, np.float64)
  counts = np.bincount(samples, minlength=probs.size)
  assert counts.size == probs.size, f"sample out of range: max {samples.max()}"
  result = stats.chisquare(counts, samples.size * probs)
  assert result.pvalue > FALSE_FAILURE / num_tests, (
    f"frequencies {counts / samples.size} do not match {probs} (p = {result.pvalue:.3g})"
  )


def _assert_ks(samples, cdf, num_tests=1):
  result = stats.kstest(_np(samples).ravel(), cdf)
  assert result.pvalue > FALSE_FAILURE / num_tests, f"KS p-value {result.pvalue:.3g}"


def _assert_ks_2samp(a, b, num_tests=1):
  a, b = _np(a).ravel(), _np(b).ravel()
  result = stats.ks_2samp(a, b)
  assert result.pvalue > FALSE_FAILURE / num_tests, (
    f"two-sample KS p-value {result.pvalue:.3g} (sizes {a.size}, {b.size})"
  )


def _gumbel_cdf(loc):
  return lambda x: np.exp(-np.exp(-(x - loc)))


def _logistic_cdf(loc):
  return lambda x: _sigmoid(x - loc)


# --------------------------------------------------------------------------------------
# gumbel_noise / logistic_noise
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("noise_fn", [gradest.gumbel_noise, gradest.logistic_noise])
@pytest.mark.parametrize("dtype", [None, *SMALL_DTYPES])
@pytest.mark.numerics
def test_noise_finite_and_dtype(noise_fn, dtype, key):
  """A million draws (two of shape (N, 5)) are finite in every floating dtype."""
  draws = []
  for j in range(2):
    k = jax.random.fold_in(key, j)
    x = noise_fn(k, (N, 5)) if dtype is None else noise_fn(k, (N, 5), dtype)
    # None: the default dtype, float32 (x64 is off).
    assert x.dtype == jnp.dtype(dtype or jnp.float32) and x.shape == (N, 5)
    draws.append(_np(x))
  x = np.concatenate(draws)
  assert np.isfinite(x).all()
  # Not degenerate: a million draws spread over several units.
  assert x.std() > 1.0 and np.unique(x).size > 100


def test_noise_shapes(key):
  assert jax.eval_shape(gradest.gumbel_noise, key).shape == ()
  assert jax.eval_shape(lambda k: gradest.logistic_noise(k, (2, 3)), key).shape == (2, 3)
  # Different keys, different noise; the same key, the same noise.
  a, b = gradest.gumbel_noise(key, (N,)), gradest.gumbel_noise(jax.random.key(1), (N,))
  assert not np.any(np.asarray(a) == np.asarray(b))
  np.testing.assert_array_equal(a, gradest.gumbel_noise(key, (N,)))


def test_gumbel_noise_law(key):
  """Mean Euler-Mascheroni, variance pi^2/6 (standard errors from the sample), KS."""
  g = np.concatenate(
    [_np(gradest.gumbel_noise(jax.random.fold_in(key, j), (N, 5))) for j in (0, 1)]
  )
  g = g.ravel()  # a million draws
  assert_unbiased(g, np.float64(EULER_GAMMA), false_failure=FALSE_FAILURE / 3)
  assert_variance(g, np.float64(math.pi**2 / 6), false_failure=FALSE_FAILURE / 3)
  _assert_ks(g, _gumbel_cdf(0.0), num_tests=3)


def test_logistic_noise_law(key):
  x = np.concatenate(
    [_np(gradest.logistic_noise(jax.random.fold_in(key, j), (N, 5))) for j in (0, 1)]
  )
  x = x.ravel()
  assert_unbiased(x, np.float64(0.0), false_failure=FALSE_FAILURE / 3)
  assert_variance(x, np.float64(math.pi**2 / 3), false_failure=FALSE_FAILURE / 3)
  _assert_ks(x, _logistic_cdf(0.0), num_tests=3)


@pytest.mark.parametrize("noise_fn", [gradest.gumbel_noise, gradest.logistic_noise])
@pytest.mark.parametrize("dtype", [jnp.int32, jnp.bool_])
def test_noise_rejects_non_float_dtype(noise_fn, dtype, key):
  with pytest.raises(TypeError, match="floating"):
    noise_fn(key, (3,), dtype)


# --------------------------------------------------------------------------------------
# gumbel_max
# --------------------------------------------------------------------------------------


def test_gumbel_max_frequencies_match_softmax(key):
  samples = gradest.gumbel_max(key, _batch(LOGITS5))
  assert samples.shape == (N,) and jnp.issubdtype(samples.dtype, jnp.integer)
  _assert_chisquare(samples, _softmax(LOGITS5))


def test_gumbel_max_batched_logits(key):
  """Rows of a batch of logits are sampled from their own softmax."""
  logits = np.stack([LOGITS5, -2.0 * LOGITS5])  # (2, 5)
  assert gradest.gumbel_max(key, jnp.asarray(logits, jnp.float32)).shape == (2,)
  samples = np.asarray(gradest.gumbel_max(key, jnp.asarray(np.resize(logits, (N, 5)), jnp.float32)))
  assert samples.shape == (N,)
  probs = _softmax(logits)
  for row in range(2):
    _assert_chisquare(samples[row::2], probs[row], num_tests=2)


def test_gumbel_max_axis_zero(key):
  logits = jnp.asarray(_batch(LOGITS5).T)  # (5, N): classes on axis 0
  samples = gradest.gumbel_max(key, logits, axis=0)
  assert samples.shape == (N,)
  _assert_chisquare(samples, _softmax(LOGITS5))


def test_gumbel_max_huge_logits_deterministic(key):
  logits = jnp.array([0.0, 1e30, -1e30, 5e29, -3e38], jnp.float32)
  rows = jnp.asarray(np.resize(np.stack([logits, logits[::-1]]), (N, 5)))
  np.testing.assert_array_equal(gradest.gumbel_max(key, rows), np.resize([1, 3], N))


def test_jit_vmap_over_keys(key):
  """gumbel_max and gumbel_top_k under jit(vmap) over keys; one key, one noise."""
  keys = jax.random.split(key, NUM_KEYS)
  logits = jnp.asarray(LOGITS5, jnp.float32)

  @jax.jit
  @jax.vmap
  def sample(k):
    return [gradest.gumbel_max(k, logits)] + [gradest.gumbel_top_k(k, logits, j) for j in (5, 2)]

  out, perm, two = map(np.asarray, sample(keys))
  assert out.shape == (NUM_KEYS,) and np.issubdtype(out.dtype, np.integer)
  assert np.all((out >= 0) & (out < 5)) and np.unique(out).size == 5
  _assert_chisquare(out, _softmax(LOGITS5))
  assert perm.shape == (NUM_KEYS, 5) and two.shape == (NUM_KEYS, 2)
  np.testing.assert_array_equal(np.sort(perm, -1), np.tile(np.arange(5), (NUM_KEYS, 1)))
  np.testing.assert_array_equal(two, perm[:, :2])  # same noise: the top 2 of the order
  np.testing.assert_array_equal(out, perm[:, 0])  # and the first is the Gumbel-max sample


def test_gumbel_max_rejects_scalar_logits(key):
  with pytest.raises(ValueError, match="axis"):
    gradest.gumbel_max(key, jnp.array(1.0))


# --------------------------------------------------------------------------------------
# gumbel_softmax / straight_through
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", SMALL_DTYPES)
@pytest.mark.numerics
def test_gumbel_softmax_on_simplex(dtype, key):
  logits = _batch(LOGITS5).astype(dtype)
  y = gradest.gumbel_softmax(key, logits, 0.7)
  assert y.shape == (N, 5) and y.dtype == jnp.dtype(dtype)
  y = _np(y)
  assert np.isfinite(y).all() and (y >= 0).all() and (y <= 1).all()
  np.testing.assert_allclose(y.sum(-1), 1.0, atol=5 * float(jnp.finfo(dtype).eps))
  assert np.median(y.max(-1)) < 0.9  # genuinely soft at tau = 0.7
  hard = _np(gradest.gumbel_softmax(key, logits, 0.7, hard=True))
  assert np.all((hard == 0.0) | (hard == 1.0)) and np.all(hard.sum(-1) == 1.0)


def test_gumbel_softmax_hard_is_exact_one_hot_and_categorical(key):
  logits = _batch(LOGITS5)
  soft = np.asarray(gradest.gumbel_softmax(key, logits, 0.5))
  hard = gradest.gumbel_softmax(key, logits, 0.5, hard=True)
  assert hard.shape == logits.shape and hard.dtype == logits.dtype
  hard = np.asarray(hard)
  assert np.all((hard == 0.0) | (hard == 1.0))
  assert np.all(hard.sum(-1) == 1.0)
  # The one-hot is at the argmax of the soft sample drawn with the same key.
  np.testing.assert_array_equal(hard.argmax(-1), soft.argmax(-1))
  _assert_chisquare(hard.argmax(-1), _softmax(LOGITS5))


def test_gumbel_softmax_hard_gradient_equals_soft_gradient(key):
  """Per-sample gradients (w.r.t. each row of logits and tau) of a linear function."""
  logits = _batch(LOGITS5)
  w = jnp.array([1.0, -2.0, 0.5, 3.0, -1.0])

  def grads(hard):
    f = lambda lg, t: jnp.sum(w * gradest.gumbel_softmax(key, lg, t, hard=hard))
    return jax.grad(f, argnums=(0, 1))(logits, 0.6)

  g_hard, g_soft = grads(True), grads(False)
  for a, b in zip(g_hard, g_soft, strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
  assert float(jnp.abs(g_soft[0]).max()) > 1e-2 and float(jnp.abs(g_soft[1])) > 1e-2


def test_gumbel_softmax_approaches_hard_as_temperature_vanishes(key):
  """1 - max_i y_i <= (K - 1) exp(-gap / tau), gap = top-two difference of l + G."""
  logits = _batch(LOGITS5)
  # At tau = 1 the sample is softmax(l + G): its log recovers l + G up to a constant.
  z = np.sort(np.log(_np(gradest.gumbel_softmax(key, logits, 1.0))), -1)
  gap = z[:, -1] - z[:, -2]
  hard = _np(gradest.gumbel_softmax(key, logits, 1.0, hard=True))
  distances = []
  for tau in [1.0, 0.3, 0.1, 0.03, 0.01]:
    y = _np(gradest.gumbel_softmax(key, logits, tau))
    dist = 0.5 * np.abs(y - hard).sum(-1)  # = 1 - y[argmax]
    assert np.all(dist <= 4 * np.exp(-gap / tau) + 1e-5), f"tau={tau}"
    distances.append(dist.mean())
  assert all(a > b for a, b in itertools.pairwise(distances)), distances
  assert distances[0] > 0.2 and distances[-1] < 0.05 * distances[0]


@pytest.mark.parametrize("temperature", [0.0, -0.5, float("nan")])
def test_rejects_bad_temperature(temperature, key):
  with pytest.raises(ValueError, match="temperature"):
    gradest.gumbel_softmax(key, jnp.zeros(3), temperature)
  with pytest.raises(ValueError, match="temperature"):
    gradest.gumbel_softmax(key, jnp.zeros(3), jnp.asarray(temperature), hard=True)
  with pytest.raises(ValueError, match="temperature"):
    gradest.binary_gumbel_softmax(key, jnp.zeros(3), temperature)


def test_rejects_non_scalar_temperature(key):
  with pytest.raises(ValueError, match="temperature"):
    gradest.gumbel_softmax(key, jnp.zeros(3), jnp.ones(3))


def test_traced_temperature(key):
  """A learned temperature is a tracer: no error, same values, finite gradients."""
  logits = _batch(LOGITS5)
  w = jnp.arange(5.0)

  hard = jax.jit(lambda t: gradest.gumbel_softmax(key, logits, t, hard=True))(0.4)
  np.testing.assert_array_equal(hard, gradest.gumbel_softmax(key, logits, 0.4, hard=True))
  # Under grad the temperature is a tracer too.
  g = jax.grad(lambda t: jnp.sum(w * gradest.gumbel_softmax(key, logits, t)))(0.4)
  gb = jax.grad(lambda t: jnp.sum(gradest.binary_gumbel_softmax(key, logits, t)))(0.4)
  for grad in (g, gb):
    assert bool(jnp.isfinite(grad)) and float(grad) != 0.0


def test_gumbel_softmax_axis(key):
  logits = jnp.asarray(_batch(LOGITS5).T)  # (5, N): classes on axis 0
  soft = gradest.gumbel_softmax(key, logits, 0.5, axis=0)
  assert soft.shape == logits.shape
  soft = np.asarray(soft)
  np.testing.assert_allclose(soft.sum(0), 1.0, atol=1e-5)
  hard = np.asarray(gradest.gumbel_softmax(key, logits, 0.5, hard=True, axis=-2))
  assert np.all(hard.sum(0) == 1.0) and np.all((hard == 0) | (hard == 1))
  np.testing.assert_array_equal(hard.argmax(0), soft.argmax(0))
  _assert_chisquare(hard.argmax(0), _softmax(LOGITS5))


def test_straight_through_forward_exact_backward_soft():
  soft_fn = lambda x: jnp.tanh(x) * jnp.array([1.0, 2.0, -0.5])
  hard = jnp.array([0.25, -3.0, 1e-7])
  x = jnp.array([0.3, -1.1, 2.0])
  w = jnp.array([0.7, -1.3, 2.2])

  @jax.jit
  def run(x):
    out = gradest.straight_through(hard, soft_fn(x))
    g_st = jax.grad(lambda x: jnp.sum(w * gradest.straight_through(hard, soft_fn(x))))(x)
    return out, g_st, jax.grad(lambda x: jnp.sum(w * soft_fn(x)))(x)

  out, g_st, g_soft = run(x)
  np.testing.assert_array_equal(out, hard)  # bitwise
  np.testing.assert_array_equal(gradest.straight_through(hard, soft_fn(x)), hard)  # eager too
  np.testing.assert_allclose(g_st, g_soft, rtol=1e-6)
  assert float(jnp.abs(g_soft).min()) > 0.0


# --------------------------------------------------------------------------------------
# binary_gumbel_softmax
# --------------------------------------------------------------------------------------


def test_binary_gumbel_softmax_soft_and_hard(key):
  logits = _batch(BINARY_LOGITS)
  soft = gradest.binary_gumbel_softmax(key, logits, 0.5)
  hard = gradest.binary_gumbel_softmax(key, logits, 0.5, hard=True)
  assert soft.shape == hard.shape == (N, 5) and soft.dtype == hard.dtype == jnp.float32
  soft, hard = np.asarray(soft), np.asarray(hard)
  assert np.all((soft >= 0) & (soft <= 1)) and np.any((soft > 0.1) & (soft < 0.9))
  assert np.all((hard == 0.0) | (hard == 1.0))
  np.testing.assert_array_equal(hard, soft > 0.5)
  # z-test of the frequencies against sigmoid(logits) with the exact binomial error.
  p = _sigmoid(BINARY_LOGITS)
  freq = hard.mean(0, dtype=np.float64)
  se = np.sqrt(p * (1 - p) / N)
  assert np.all(np.abs(freq - p) <= z_value(p.size) * se), (freq, p)


@pytest.mark.parametrize("dtype", SMALL_DTYPES)
@pytest.mark.numerics
def test_binary_gumbel_softmax_dtypes(dtype, key):
  logits = _batch(BINARY_LOGITS).astype(dtype)
  for hard in (False, True):
    y = gradest.binary_gumbel_softmax(key, logits, 0.3, hard=hard)
    assert y.dtype == jnp.dtype(dtype) and y.shape == logits.shape
    y = _np(y)
    assert np.all(np.isfinite(y) & (y >= 0) & (y <= 1))
  assert np.all((y == 0) | (y == 1))


def test_binary_gumbel_softmax_hard_gradient_equals_soft(key):
  logits = _batch(BINARY_LOGITS)
  w = jnp.array([1.0, -2.0, 0.5, 3.0, -1.0])

  def grads(hard):
    f = lambda lg, t: jnp.sum(w * gradest.binary_gumbel_softmax(key, lg, t, hard=hard))
    return jax.grad(f, argnums=(0, 1))(logits, 0.6)

  g_hard, g_soft = grads(True), grads(False)
  for a, b in zip(g_hard, g_soft, strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
  assert float(jnp.abs(g_soft[0]).max()) > 1e-2 and float(jnp.abs(g_soft[1])) > 1e-2


def test_binary_gumbel_softmax_approaches_hard(key):
  """|y - b| = sigmoid(-|z| / tau) <= exp(-|z| / tau) with z = l + L."""
  logits = _batch(BINARY_LOGITS)
  y1 = _np(gradest.binary_gumbel_softmax(key, logits, 1.0))
  abs_z = np.abs(np.log(y1) - np.log1p(-y1))
  hard = _np(gradest.binary_gumbel_softmax(key, logits, 1.0, hard=True))
  means = []
  for tau in [1.0, 0.1, 0.01]:
    y = _np(gradest.binary_gumbel_softmax(key, logits, tau))
    dist = np.abs(y - hard)
    assert np.all(dist <= np.exp(-abs_z / tau) + 1e-5), f"tau={tau}"
    means.append(dist.mean())
  # The mean distance shrinks about linearly in tau (the density of z is finite at 0).
  assert means[0] > 0.1 and means[1] < 0.2 * means[0] and means[2] < 0.2 * means[1]


# --------------------------------------------------------------------------------------
# gumbel_top_k
# --------------------------------------------------------------------------------------


def _ordered_subset_probs(probs, k):
  """Exact P(i1, ..., ik) of sequential sampling without replacement, by enumeration."""
  tuples = list(itertools.permutations(range(probs.size), k))
  out = []
  for t in tuples:
    p, used = 1.0, 0.0
    for i in t:
      p *= probs[i] / (1.0 - used)
      used += probs[i]
    out.append(p)
  return tuples, np.array(out)


def _assert_distinct(idx, axis=-1):
  srt = np.sort(idx, axis)
  assert np.all(np.diff(srt, axis=axis) != 0), "repeated index in a sample without replacement"


@pytest.mark.parametrize("k", [2, 3])
def test_gumbel_top_k_ordered_subsets_exact(k, key):
  num_classes = 5
  probs = _softmax(LOGITS5)
  tuples, exact = _ordered_subset_probs(probs, k)
  np.testing.assert_allclose(exact.sum(), 1.0, rtol=1e-12)
  idx = gradest.gumbel_top_k(key, _batch(LOGITS5), k)
  assert idx.shape == (N, k) and jnp.issubdtype(idx.dtype, jnp.integer)
  idx = np.asarray(idx)
  _assert_distinct(idx)
  # Chi-square over the ordered tuples (the sampling order is part of the contract).
  powers = num_classes ** np.arange(k - 1, -1, -1)
  cell = np.full(num_classes**k, -1)
  cell[np.array(tuples) @ powers] = np.arange(len(tuples))
  cells = cell[idx @ powers]
  assert np.all(cells >= 0)
  _assert_chisquare(cells, exact, num_tests=3)
  # Unordered inclusion probabilities: z-tests, Bonferroni over the classes.
  incl_exact = np.array([exact[[i in t for t in tuples]].sum() for i in range(num_classes)])
  incl = (idx[:, :, None] == np.arange(num_classes)).any(1).mean(0)
  se = np.sqrt(incl_exact * (1 - incl_exact) / N)
  assert np.all(np.abs(incl - incl_exact) <= z_value(num_classes, FALSE_FAILURE / 3) * se)
  # The first index is a categorical sample.
  _assert_chisquare(idx[:, 0], probs, num_tests=3)


def test_gumbel_top_k_accepts_numpy_int(key):
  idx = gradest.gumbel_top_k(key, _batch(LOGITS5), np.int64(2))  # operator.index
  np.testing.assert_array_equal(idx, gradest.gumbel_top_k(key, _batch(LOGITS5), 2))


def test_gumbel_top_k_axis(key):
  logits = jnp.asarray(_batch(LOGITS5).T)  # (5, N): classes on axis 0
  idx = gradest.gumbel_top_k(key, logits, 3, axis=0)
  assert idx.shape == (3, N)
  idx = np.asarray(idx)
  _assert_distinct(idx, axis=0)
  _assert_chisquare(idx[0], _softmax(LOGITS5))
  # Same noise as gumbel_max along the same axis: the first index is the argmax.
  np.testing.assert_array_equal(idx[0], gradest.gumbel_max(key, logits, axis=0))


@pytest.mark.parametrize("k", [0, -1, 6])
def test_gumbel_top_k_rejects_bad_k(k, key):
  with pytest.raises(ValueError, match="k"):
    gradest.gumbel_top_k(key, jnp.zeros(5), k)


@pytest.mark.parametrize("k", [2.0, "2", None])
def test_gumbel_top_k_rejects_non_int_k(k, key):
  with pytest.raises(TypeError, match="k"):
    gradest.gumbel_top_k(key, jnp.zeros(5), k)


# --------------------------------------------------------------------------------------
# truncated_gumbel
# --------------------------------------------------------------------------------------

TRUNCATED_CASES = [(0.0, 0.5), (1.0, -1.0), (-2.0, 3.0), (0.3, 5.0)]


def test_truncated_gumbel_law(key):
  for j, (a, upper) in enumerate(TRUNCATED_CASES):
    x = _np(gradest.truncated_gumbel(jax.random.fold_in(key, j), jnp.full(N, a), upper))
    assert np.all(x <= upper)

    def cdf(t, a=a, upper=upper):
      return np.where(t >= upper, 1.0, np.exp(-np.exp(-(t - a)) + np.exp(-(upper - a))))

    _assert_ks(x, cdf, num_tests=len(TRUNCATED_CASES))


def test_truncated_gumbel_broadcast_and_bound(key):
  loc = np.resize(np.linspace(-5.0, 5.0, 11), N)
  upper = np.resize(np.linspace(-4.0, 4.0, 9), N)
  x = gradest.truncated_gumbel(key, jnp.asarray(loc, jnp.float32), jnp.asarray(upper))
  assert x.shape == (N,)
  x = _np(x)
  assert np.all(x <= np.float32(upper)) and np.isfinite(x).all()
  # Broadcasting a scalar upper bound against array locations.
  y = gradest.truncated_gumbel(key, jnp.zeros(N), 0.5)
  assert y.shape == (N,) and bool(jnp.all(y <= 0.5))
  shape = jax.eval_shape(gradest.truncated_gumbel, key, jnp.zeros((4, 1)), jnp.zeros(3))
  assert shape.shape == (4, 3)


@pytest.mark.numerics
def test_truncated_gumbel_extreme_inputs(key):
  # Upper bound far below the location: all the mass sits at the bound.
  x = _np(gradest.truncated_gumbel(key, jnp.full(N, 50.0), -50.0))
  assert np.isfinite(x).all() and np.all(x <= -50.0)
  np.testing.assert_allclose(x, -50.0, atol=1e-6)
  # Upper bound far above: an untruncated Gumbel(-50).
  y = _np(gradest.truncated_gumbel(key, jnp.full(N, -50.0), 50.0))
  assert np.isfinite(y).all() and np.all(y <= 50.0)
  _assert_ks(y, _gumbel_cdf(-50.0))
  # Huge magnitudes in float32, and finite reparameterization gradients.
  loc = jnp.asarray(np.resize([1e4, -1e4, 0.0, 30.0, -30.0], N), jnp.float32)
  up = jnp.asarray(np.resize([-1e4, 1e4, 0.0, -30.0, 30.0], N), jnp.float32)
  z = _np(gradest.truncated_gumbel(key, loc, up))
  assert np.isfinite(z).all() and np.all(z <= np.asarray(up))
  ga, gm = jax.grad(lambda a, m: gradest.truncated_gumbel(key, a, m).sum(), (0, 1))(loc, up)
  assert bool(jnp.all(jnp.isfinite(ga))) and bool(jnp.all(jnp.isfinite(gm)))
  # X(a + c, M + c) = X(a, M) + c: the two derivatives sum to 1.
  np.testing.assert_allclose(ga + gm, 1.0, atol=1e-5)


# --------------------------------------------------------------------------------------
# conditional_gumbel
# --------------------------------------------------------------------------------------


def test_conditional_gumbel_argmax_is_index(key):
  rng = np.random.default_rng(0)
  logits = jnp.asarray(3.0 * rng.standard_normal((N, 5)), jnp.float32)
  index = jnp.asarray(rng.integers(0, 5, N), jnp.int32)
  z = gradest.conditional_gumbel(key, logits, index)
  assert z.shape == logits.shape and z.dtype == logits.dtype
  z = np.asarray(z)
  assert np.isfinite(z).all()
  np.testing.assert_array_equal(z.argmax(-1), index)


def test_conditional_gumbel_axis(key):
  rng = np.random.default_rng(1)
  logits = jnp.asarray(2.0 * rng.standard_normal((5, N)), jnp.float32)  # classes on axis 0
  index = rng.integers(0, 5, N)
  z = gradest.conditional_gumbel(key, logits, jnp.asarray(index), axis=0)
  assert z.shape == (5, N)
  np.testing.assert_array_equal(np.asarray(z).argmax(0), index)


def test_conditional_gumbel_argmax_is_index_large_logits(key):
  logits = _batch([1e4, 0.0, -1.0, 2.0, -3.0])
  z = np.asarray(gradest.conditional_gumbel(key, logits, jnp.ones(N, jnp.int32)))
  assert np.isfinite(z).all()
  np.testing.assert_array_equal(z.argmax(-1), 1)


def test_conditional_gumbel_matches_rejection_sampling(key):
  """z | argmax(z) = k, from conditional_gumbel and from filtering unconditional draws."""
  num_classes = LOGITS5.size
  k_uncond, k_cond = jax.random.split(key)
  logits = _batch(LOGITS5)
  # 400000 unconditional draws: at least 15000 for the least likely class (p = 0.04).
  z = np.concatenate(
    [
      np.asarray(logits + gradest.gumbel_noise(jax.random.fold_in(k_uncond, j), (N, 5)))
      for j in range(4)
    ]
  )
  arg = z.argmax(-1)
  for k in range(num_classes):
    kept = z[arg == k]
    index = jnp.full(N, k, jnp.int32)
    cond = np.asarray(gradest.conditional_gumbel(jax.random.fold_in(k_cond, k), logits, index))
    for i in range(num_classes):
      _assert_ks_2samp(kept[:, i], cond[:, i], num_tests=num_classes**2)


def test_conditional_gumbel_mixture_is_unconditional(key):
  """index ~ softmax(l), then z ~ conditional_gumbel(l, index): z = l + G."""
  logits = _batch(LOGITS5)
  index = jnp.asarray(np.random.default_rng(2).choice(5, N, p=_softmax(LOGITS5)), jnp.int32)
  z = _np(gradest.conditional_gumbel(key, logits, index))
  for i in range(5):
    _assert_ks(z[:, i], _gumbel_cdf(LOGITS5[i]), num_tests=6)
  # The maximum is Gumbel(logsumexp(l)), whatever the index.
  lse = float(np.log(np.exp(LOGITS5).sum()))
  _assert_ks(z.max(-1), _gumbel_cdf(lse), num_tests=6)


def test_conditional_gumbel_gradient(key):
  rows = np.array(
    [
      LOGITS5,
      [1e4, 0.0, -1e4, 5.0, -5.0],
      [-30.0, 30.0, 0.0, 1.0, 2.0],
      [80.0, -80.0, 0.0, 3.0, -3.0],
    ]
  )
  logits = jnp.asarray(np.resize(rows, (N, 5)), jnp.float32)
  index = np.resize([1, 2, 0, 4, 0, 3, 2], N)
  chosen = jnp.asarray(np.eye(5)[index], jnp.float32)
  index = jnp.asarray(index, jnp.int32)
  g = np.asarray(jax.grad(lambda lg: gradest.conditional_gumbel(key, lg, index).sum())(logits))
  g_top = jax.grad(lambda lg: jnp.sum(chosen * gradest.conditional_gumbel(key, lg, index)))(logits)
  assert np.isfinite(g).all()
  # The maximum, log Z - log E0, has gradient softmax(logits) w.r.t. the logits.
  np.testing.assert_allclose(g_top, _softmax(np.asarray(logits), -1), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shape", [(4,), (3, 1), (), (1, 3)])
def test_conditional_gumbel_rejects_index_shape(shape, key):
  with pytest.raises(ValueError, match="index"):
    gradest.conditional_gumbel(key, jnp.zeros((3, 4)), jnp.zeros(shape, jnp.int32))


# --------------------------------------------------------------------------------------
# conditional_logistic
# --------------------------------------------------------------------------------------

COND_LOGISTIC_LOGITS = np.array([-1.2, 0.4, 2.0])


def test_conditional_logistic_sign_matches_sample(key):
  rng = np.random.default_rng(3)
  logits = jnp.asarray(4.0 * rng.standard_normal(N), jnp.float32)
  sample = jnp.asarray(rng.integers(0, 2, N), jnp.float32)
  z = gradest.conditional_logistic(key, logits, sample)
  assert z.shape == (N,) and z.dtype == jnp.float32
  np.testing.assert_array_equal(np.asarray(z) > 0, np.asarray(sample) > 0)


def test_conditional_logistic_matches_rejection_sampling(key):
  m = COND_LOGISTIC_LOGITS.size
  for j, lg in enumerate(COND_LOGISTIC_LOGITS):
    k_uncond, k_cond = jax.random.split(jax.random.fold_in(key, j))
    z = np.concatenate(
      [lg + _np(gradest.logistic_noise(jax.random.fold_in(k_uncond, r), (N,))) for r in range(2)]
    )
    for b in (0, 1):
      kept = z[(z > 0) == bool(b)]
      cond = gradest.conditional_logistic(
        jax.random.fold_in(k_cond, b), jnp.full(N, lg, jnp.float32), jnp.full(N, b)
      )
      _assert_ks_2samp(kept, cond, num_tests=2 * m)


def test_conditional_logistic_mixture_is_unconditional(key):
  m = COND_LOGISTIC_LOGITS.size
  rng = np.random.default_rng(4)
  for j, lg in enumerate(COND_LOGISTIC_LOGITS):
    b = jnp.asarray(rng.random(N) < _sigmoid(lg), jnp.float32)
    z = gradest.conditional_logistic(jax.random.fold_in(key, j), jnp.full(N, lg, jnp.float32), b)
    _assert_ks(z, _logistic_cdf(lg), num_tests=m)


EXTREME_LOGITS = [-1e4, -1e3, -100.0, -30.0, -5.0, 0.0, 5.0, 30.0, 100.0, 1e3, 1e4]


@pytest.mark.numerics
def test_conditional_logistic_extreme_logits_finite(key):
  logits = jnp.asarray(np.resize(EXTREME_LOGITS, N), jnp.float32)
  value_and_grad = jax.jit(
    jax.value_and_grad(lambda lg, s: gradest.conditional_logistic(key, lg, s).sum())
  )
  for b in (0, 1):
    z = np.asarray(gradest.conditional_logistic(key, logits, jnp.full(N, b)))
    total, g = value_and_grad(logits, jnp.full(N, b))
    g = np.asarray(g)
    assert np.isfinite(total)
    assert np.isfinite(z).all() and np.isfinite(g).all()
    # The likely side is nearly the unconditional law: z = l + L with L in [-17, 17].
    lg = np.asarray(logits)
    likely = (lg >= 100) if b else (lg <= -100)
    assert np.all(np.abs(z - lg)[likely] < 20.0)


@pytest.mark.parametrize("logit", [-1e4, -1e3])
@pytest.mark.numerics
def test_conditional_logistic_sign_extreme_logits(logit, key):
  for b, lg in ((1, logit), (0, -logit)):
    z = np.asarray(gradest.conditional_logistic(key, jnp.full(N, lg, jnp.float32), jnp.full(N, b)))
    assert np.all((z > 0) == bool(b)), f"logit={lg}, sample={b}: {np.sum((z > 0) != bool(b))}"


@pytest.mark.parametrize("shape", [(4,), (3, 1), ()])
def test_conditional_logistic_rejects_shape_mismatch(shape, key):
  with pytest.raises(ValueError, match="shape"):
    gradest.conditional_logistic(key, jnp.zeros(3), jnp.zeros(shape))
