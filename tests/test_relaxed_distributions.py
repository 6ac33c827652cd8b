"""Tests of the Concrete (relaxed Bernoulli / relaxed categorical) distributions.

The densities are checked against an independent float64 numpy transcription of
Maddison, Mnih & Teh (2017), by numerical integration (they integrate to one) and
against the samplers: exact CDFs and KS tests, and moments of the samples against
moments of the density by quadrature (z-tests with the samples' standard errors).
Quadratures run in float64 (``jax.enable_x64``); everything else in float32.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special, stats

import gradest
from gradest.distributions import RelaxedBernoulli, RelaxedCategorical

from .helpers import FALSE_FAILURE, assert_unbiased

N = 100_000
TEMPERATURES = [0.3, 0.7, 1.5]
BINARY_LOGITS = np.array([-1.5, 0.0, 0.4, 2.0])
LOGITS3_CASES = [np.array([0.0, 0.0, 0.0]), np.array([1.0, -0.5, 0.2])]


def _sigmoid(x):
  return special.expit(np.asarray(x, np.float64))


# log_prob compiled once per family and input shape; logits and temperature are traced.
_LOG_PROB = {
  cls: jax.jit(lambda logits, tau, y, cls=cls: cls(logits, tau).log_prob(y))
  for cls in (RelaxedBernoulli, RelaxedCategorical)
}


def _density64(cls, logits, tau, y):
  """exp(log_prob(y)) evaluated by the library in float64."""
  with jax.enable_x64(True):
    lp = _LOG_PROB[cls](jnp.asarray(logits, jnp.float64), jnp.float64(tau), jnp.asarray(y))
    return np.exp(np.asarray(lp))


def _concrete_density_np(y, logits, tau):
  """Maddison et al. (2017), eq. (3), transcribed directly (no log space), float64.

  p(y) = (K-1)! tau^(K-1) prod_k [alpha_k y_k^(-tau-1) / sum_i alpha_i y_i^(-tau)].
  """
  y = np.asarray(y, np.float64)
  alpha = np.exp(np.asarray(logits, np.float64))
  k = y.shape[-1]
  denominator = np.sum(alpha * y**-tau, axis=-1, keepdims=True)
  return math.factorial(k - 1) * tau ** (k - 1) * np.prod(alpha * y ** (-tau - 1) / denominator, -1)


def _binary_cdf(y, logit, tau):
  """P(Y <= y) for Y = sigmoid((l + L) / tau): Y <= y iff L <= tau logit(y) - l."""
  y = np.asarray(y, np.float64)
  with np.errstate(divide="ignore"):
    return _sigmoid(tau * (np.log(y) - np.log1p(-y)) - logit)


def _trapezoid_2d(f, h):
  return np.trapezoid(np.trapezoid(f, dx=h, axis=-1), dx=h, axis=-1)


# --------------------------------------------------------------------------------------
# Shapes, dtypes, attributes
# --------------------------------------------------------------------------------------


def test_relaxed_bernoulli_shapes(key):
  d = RelaxedBernoulli(jnp.zeros((2, 3)), 0.5)
  assert d.reparameterized is True and RelaxedBernoulli.reparameterized is True
  assert d.event_shape == (2, 3)
  assert jax.eval_shape(d.sample, key).shape == (2, 3)
  assert jax.eval_shape(lambda k: d.sample(k, 4), key).shape == (4, 2, 3)
  y = d.sample(key, (5, 7))
  assert y.shape == (5, 7, 2, 3) and y.dtype == jnp.float32
  assert bool(jnp.all((y > 0) & (y < 1)))
  lp = d.log_prob(y)
  assert lp.shape == (5, 7)
  # log_prob sums over the event: the joint density of independent coordinates.
  per_coordinate = RelaxedBernoulli(0.0, 0.5).log_prob(y)
  assert per_coordinate.shape == (5, 7, 2, 3)
  np.testing.assert_allclose(lp, per_coordinate.sum((-2, -1)), rtol=1e-5, atol=1e-5)


def test_relaxed_categorical_shapes(key):
  logits = jnp.array([[0.5, -0.2, 1.0], [0.0, 2.0, -1.0]])
  d = RelaxedCategorical(logits, 0.5)
  assert d.reparameterized is True and RelaxedCategorical.reparameterized is True
  assert d.event_shape == (2, 3) and d.num_classes == 3
  assert jax.eval_shape(d.sample, key).shape == (2, 3)
  y = d.sample(key, (11,))
  assert y.shape == (11, 2, 3) and y.dtype == jnp.float32
  y = np.asarray(y)
  assert np.all(y > 0) and np.all(y < 1)
  np.testing.assert_allclose(y.sum(-1), 1.0, atol=1e-6)
  lp = d.log_prob(y)
  assert lp.shape == (11,)
  rows = [RelaxedCategorical(logits[i], 0.5).log_prob(y[:, i]) for i in range(2)]
  np.testing.assert_allclose(lp, rows[0] + rows[1], rtol=1e-5)


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16])
@pytest.mark.numerics
def test_samples_finite_in_small_dtypes(dtype, key):
  logits = jnp.asarray([-3.0, -0.5, 0.0, 1.0, 4.0], dtype)
  yb = RelaxedBernoulli(logits, 0.3).sample(key, (N,))
  assert yb.dtype == jnp.dtype(dtype) and yb.shape == (N, 5)
  yb = np.asarray(yb, np.float64)
  assert np.isfinite(yb).all() and np.all((yb >= 0) & (yb <= 1))
  yc = RelaxedCategorical(logits, 0.3).sample(key, (N,))
  assert yc.dtype == jnp.dtype(dtype) and yc.shape == (N, 5)
  yc = np.asarray(yc, np.float64)
  assert np.isfinite(yc).all() and np.all((yc >= 0) & (yc <= 1))
  np.testing.assert_allclose(yc.sum(-1), 1.0, atol=5 * float(jnp.finfo(dtype).eps))


# --------------------------------------------------------------------------------------
# The density: normalization and closed form
# --------------------------------------------------------------------------------------

# y = sigmoid(s) on [-34, 34]: 1 - y, which log_prob forms as 1.0 - y, keeps a relative
# float64 error below 1e-1 at the ends, where the integrand is below 1e-4.
S_GRID = np.linspace(-34.0, 34.0, 40_001)


def test_relaxed_bernoulli_density_integrates_to_one():
  """y = sigmoid(s), dy = y (1 - y) ds, trapezoid rule on a fine grid of s."""
  y = _sigmoid(S_GRID)
  jacobian = y * _sigmoid(-S_GRID)
  for tau in TEMPERATURES:
    for logit in BINARY_LOGITS:
      mass = np.trapezoid(_density64(RelaxedBernoulli, logit, tau, y) * jacobian, S_GRID)
      # The exact mass outside [-34, 34] is below 3e-4 for these logits and temperatures.
      outside = 1.0 - (_binary_cdf(y[-1], logit, tau) - _binary_cdf(y[0], logit, tau))
      assert outside < 5e-4
      assert abs(mass - 1.0) < 1e-3, f"tau={tau}, logit={logit}: mass {mass}"


def test_binary_density_integrates_to_the_exact_cdf():
  """The running integral of the density is sigmoid(tau logit(y) - l) at every y.

  Up to s = 25 (1 - y > 1e-11) the float64 rounding of y, which log_prob only sees
  through 1 - y, is negligible and the agreement is 1e-6; beyond, the tail mass times the
  relative error of 1 - y (up to 1e-2) bounds it by 2e-5.
  """
  y = _sigmoid(S_GRID)
  inner = S_GRID <= 25.0
  for tau in TEMPERATURES:
    for logit in BINARY_LOGITS:
      integrand = _density64(RelaxedBernoulli, logit, tau, y) * y * _sigmoid(-S_GRID)
      steps = 0.5 * (integrand[1:] + integrand[:-1]) * np.diff(S_GRID)
      running = _binary_cdf(y[0], logit, tau) + np.concatenate([[0.0], np.cumsum(steps)])
      exact = _binary_cdf(y, logit, tau)
      np.testing.assert_allclose(running[inner], exact[inner], atol=1e-6)
      np.testing.assert_allclose(running, exact, atol=2e-5)


def test_relaxed_categorical_density_integrates_to_one_k2():
  """y = (t, 1 - t), t = sigmoid(s); the density is w.r.t. the first coordinate."""
  u = np.linspace(-40.0, 40.0, 16_001)
  for tau in TEMPERATURES:
    for logits in ([0.0, 0.0], [1.3, -0.4]):
      s = (u + logits[0] - logits[1]) / tau  # centred on the mode, scaled with tau
      y = np.stack([_sigmoid(s), _sigmoid(-s)], -1)
      density = _density64(RelaxedCategorical, logits, tau, y)
      mass = np.trapezoid(density * y[:, 0] * y[:, 1], s)
      assert abs(mass - 1.0) < 1e-3, f"tau={tau}, logits={logits}: mass {mass}"


def _simplex_grid_3(logits, tau, half_width=30.0, num=1001):
  """y = softmax([s1, s2, 0]) on a grid; |d(y1, y2)/d(s1, s2)| = y1 y2 y3.

  s_i = (u_i + l_i - l_3) / tau, so u = (G_1 - G_3, G_2 - G_3) whatever l and tau: a
  fixed grid in u covers the mass; the Jacobian w.r.t. u is y1 y2 y3 / tau^2.
  """
  u = np.linspace(-half_width, half_width, num)
  h = u[1] - u[0]
  s1 = (u[:, None] + logits[0] - logits[2]) / tau
  s2 = (u[None, :] + logits[1] - logits[2]) / tau
  s = np.stack(np.broadcast_arrays(s1, s2, np.zeros_like(s1 + s2)), -1)
  y = np.exp(s - s.max(-1, keepdims=True))
  y /= y.sum(-1, keepdims=True)
  return y, np.prod(y, -1) / tau**2, h


def test_relaxed_categorical_density_integrates_to_one_k3():
  for tau in TEMPERATURES:
    for logits in LOGITS3_CASES:
      y, jacobian, h = _simplex_grid_3(logits, tau)
      mass = _trapezoid_2d(_density64(RelaxedCategorical, logits, tau, y) * jacobian, h)
      assert abs(mass - 1.0) < 1e-3, f"tau={tau}, logits={logits}: mass {mass}"


@pytest.mark.parametrize("num_classes", [2, 3, 5])
def test_relaxed_categorical_matches_closed_form(num_classes):
  rng = np.random.default_rng(num_classes)
  y = rng.dirichlet(np.ones(num_classes), size=200)
  logits = rng.normal(size=num_classes)
  for tau in TEMPERATURES:
    reference = np.log(_concrete_density_np(y, logits, tau))
    lp64 = np.log(_density64(RelaxedCategorical, logits, tau, y))
    np.testing.assert_allclose(lp64, reference, rtol=1e-10, atol=1e-10)
    lp32 = _LOG_PROB[RelaxedCategorical](
      jnp.asarray(logits, jnp.float32), tau, jnp.asarray(y, jnp.float32)
    )
    # float32: the inputs alone are rounded by 6e-8 relative; the log terms are O(10).
    np.testing.assert_allclose(lp32, reference, rtol=1e-5, atol=2e-5 * num_classes)


def test_relaxed_bernoulli_matches_closed_form_and_categorical():
  """RelaxedBernoulli(l) at y is RelaxedCategorical([l, 0]) at (y, 1 - y)."""
  rng = np.random.default_rng(0)
  y = rng.uniform(1e-4, 1 - 1e-4, 500)
  logits = rng.normal(scale=2.0, size=500)
  pairs = np.stack([y, 1.0 - y], -1)
  pair_logits = np.stack([logits, np.zeros_like(logits)], -1)
  # One Bernoulli coordinate per logit; log_prob of the whole event sums them, so compare
  # elementwise with vmap, and the sums too.
  bern = jax.jit(jax.vmap(lambda lg, t, x: RelaxedBernoulli(lg, t).log_prob(x), (0, None, 0)))
  cat = jax.jit(jax.vmap(lambda lg, t, x: RelaxedCategorical(lg, t).log_prob(x), (0, None, 0)))
  for tau in TEMPERATURES:
    reference = np.log(_concrete_density_np(pairs, pair_logits, tau))
    with jax.enable_x64(True):
      lb = np.asarray(bern(jnp.asarray(logits), jnp.float64(tau), jnp.asarray(y)))
      lc = np.asarray(cat(jnp.asarray(pair_logits), jnp.float64(tau), jnp.asarray(pairs)))
    np.testing.assert_allclose(lb, reference, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(lc, reference, rtol=1e-10, atol=1e-10)
    lb32 = bern(jnp.asarray(logits, jnp.float32), tau, jnp.asarray(y, jnp.float32))
    np.testing.assert_allclose(lb32, reference, rtol=1e-5, atol=1e-4)
    joint = _LOG_PROB[RelaxedBernoulli](
      jnp.asarray(logits, jnp.float32), tau, jnp.asarray(y, jnp.float32)
    )
    np.testing.assert_allclose(joint, reference.sum(), rtol=1e-5)


# --------------------------------------------------------------------------------------
# The samplers follow the density
# --------------------------------------------------------------------------------------


def _assert_ks_below(samples, cdf, upper, num_tests):
  """Kolmogorov-Smirnov test restricted to [0, upper], conservative.

  float32 samples cannot resolve y within ~6e-8 of 1: there they round to 1.0, an atom
  of mass up to 1% at tau = 0.3. The supremum of |ECDF - F| over t <= upper (where the
  rounding moves F by < 1e-4) is at most the full KS statistic, so the KS distribution
  gives a valid (conservative) p-value.
  """
  x = np.sort(np.asarray(samples, np.float64))
  n = x.size
  f = cdf(x)
  i = np.arange(1, n + 1)
  keep = x <= upper
  ecdf_upper = keep.sum() / n
  d = max(
    np.max((i / n - f)[keep]),
    np.max((f - (i - 1) / n)[keep]),
    abs(ecdf_upper - cdf(np.array(upper))),
  )
  pvalue = stats.kstwo.sf(d, n)
  assert pvalue > FALSE_FAILURE / num_tests, f"KS statistic {d:.4g}, p = {pvalue:.3g}"


def test_relaxed_bernoulli_samples_follow_exact_cdf(key):
  num_tests = len(TEMPERATURES) * BINARY_LOGITS.size
  logits = jnp.asarray(BINARY_LOGITS, jnp.float32)
  for j, tau in enumerate(TEMPERATURES):
    y = np.asarray(RelaxedBernoulli(logits, tau).sample(jax.random.fold_in(key, j), (N,)))
    for i, logit in enumerate(BINARY_LOGITS):
      cdf = lambda t, a=logit, b=tau: _binary_cdf(t, a, b)
      _assert_ks_below(y[:, i], cdf, 1.0 - 2.0**-16, num_tests)


def test_relaxed_categorical_samples_follow_density(key):
  """K = 3: E[y] of the samples against E[y] of the density (quadrature), and the exact
  laws tau log(y_i / y_3) - (l_i - l_3) ~ Logistic and argmax(y) ~ softmax(l)."""
  tau = 0.7
  logits = LOGITS3_CASES[1]
  grid, jacobian, h = _simplex_grid_3(logits, tau)
  weights = _density64(RelaxedCategorical, logits, tau, grid) * jacobian
  mean_exact = np.array([_trapezoid_2d(weights * grid[..., i], h) for i in range(3)])
  y = RelaxedCategorical(jnp.asarray(logits, jnp.float32), tau).sample(key, (N,))
  y = np.asarray(y, np.float64)
  assert_unbiased(y, mean_exact, false_failure=FALSE_FAILURE / 3)
  for i in range(2):
    u = tau * (np.log(y[:, i]) - np.log(y[:, 2])) - (logits[i] - logits[2])
    assert stats.kstest(u, stats.logistic.cdf).pvalue > FALSE_FAILURE / 3
  probs = np.exp(logits) / np.exp(logits).sum()
  counts = np.bincount(y.argmax(-1), minlength=3)
  assert stats.chisquare(counts, N * probs).pvalue > FALSE_FAILURE / 3


# --------------------------------------------------------------------------------------
# Boundaries, transformations, gradients
# --------------------------------------------------------------------------------------


@pytest.mark.numerics
def test_log_prob_finite_at_the_boundaries():
  """y = 0, y = 1 and one-hot y in float32: finite values and gradients."""
  logits = jnp.array([-3.0, 0.0, 2.5], jnp.float32)
  boundary = jnp.array([0.0, 1.0, 0.5], jnp.float32)
  one_hots = jnp.eye(3, dtype=jnp.float32)
  tiny = float(jnp.finfo(jnp.float32).tiny)

  def elementwise(lg, t, y):  # (logit i, value j) -> log p
    return jax.vmap(lambda a: RelaxedBernoulli(a, t).log_prob(y))(lg)

  @jax.jit
  def values_and_grads(lg, t):
    def total(lg, t):
      return elementwise(lg, t, boundary).sum() + RelaxedCategorical(lg, t).log_prob(one_hots).sum()

    clamped = elementwise(lg, t, jnp.array([tiny, 1.0 - 2.0**-24, 0.5]))
    return (
      elementwise(lg, t, boundary),
      clamped,
      RelaxedCategorical(lg, t).log_prob(one_hots),
      jax.grad(total, (0, 1))(lg, t),
    )

  for tau in [0.1, *TEMPERATURES, 3.0]:
    lp_b, clamped, lp_c, (g_logits, g_tau) = values_and_grads(logits, jnp.float32(tau))
    assert lp_b.shape == (3, 3) and lp_c.shape == (3,)
    for value in (lp_b, lp_c, g_logits, g_tau):
      assert bool(jnp.all(jnp.isfinite(value))), (tau, value)
    # At 0 the density is evaluated at the smallest normal float (documented clamp).
    np.testing.assert_allclose(lp_b[:, 0], clamped[:, 0], rtol=1e-6)
    np.testing.assert_allclose(lp_b[:, 2], clamped[:, 2], rtol=1e-6)


def test_jit_and_vmap_over_logits(key):
  logits = jnp.array([[0.5, -0.2, 1.0], [0.0, 2.0, -1.0], [3.0, 0.0, 0.0]])
  y = np.random.default_rng(5).dirichlet(np.ones(3), size=4)
  lp = jax.jit(jax.vmap(lambda lg, t: RelaxedCategorical(lg, t).log_prob(y), (0, None)))
  reference = [np.log(_concrete_density_np(y, lg, 0.6)) for lg in np.asarray(logits)]
  np.testing.assert_allclose(lp(logits, 0.6), reference, rtol=1e-5, atol=1e-5)

  # Sampling under vmap over logits and under jit with a traced temperature.
  @jax.jit
  def samples(lg, t):
    cat = jax.vmap(lambda a: RelaxedCategorical(a, t).sample(key))(lg)
    bern = jax.vmap(lambda a: RelaxedBernoulli(a, t).sample(key, (2,)))(lg)
    return cat, bern

  yc, yb = samples(logits, 0.6)
  assert yc.shape == (3, 3) and yb.shape == (3, 2, 3)
  np.testing.assert_allclose(yc.sum(-1), 1.0, atol=1e-6)
  assert bool(jnp.all((yb > 0) & (yb < 1)))
  # The same key (the same noise) for every row: the rows differ through their logits.
  assert not np.allclose(yc[0], yc[1]) and not np.allclose(yb[0], yb[1])


def test_log_prob_gradients_match_finite_differences():
  """d log p / d(logits, tau) against central differences of the numpy closed form."""
  rng = np.random.default_rng(7)
  tau, eps = 0.8, 1e-6
  y3, logits3 = rng.dirichlet(np.ones(3), size=50), np.array([0.4, -0.7, 1.1])
  yb, logitsb = rng.uniform(0.01, 0.99, 3), np.array([-1.0, 0.5, 2.0])
  pairs = np.stack([yb, 1 - yb], -1)

  def reference(lg, t):
    return np.log(_concrete_density_np(y3, lg, t)).sum()

  def reference_b(lg, t):
    return np.log(_concrete_density_np(pairs, np.stack([lg, 0 * lg], -1), t)).sum()

  def central(fn, lg, t):
    d_logits = [(fn(lg + eps * e, t) - fn(lg - eps * e, t)) / (2 * eps) for e in np.eye(3)]
    return np.array(d_logits), (fn(lg, t + eps) - fn(lg, t - eps)) / (2 * eps)

  @jax.jit
  def grads(l3, lb, t):
    g3 = jax.grad(lambda a, t: RelaxedCategorical(a, t).log_prob(y3).sum(), (0, 1))(l3, t)
    gb = jax.grad(lambda a, t: RelaxedBernoulli(a, t).log_prob(yb), (0, 1))(lb, t)
    return g3, gb

  with jax.enable_x64(True):
    (g3, g3t), (gb, gbt) = grads(jnp.asarray(logits3), jnp.asarray(logitsb), jnp.float64(tau))
  fd3, fd3t = central(reference, logits3, tau)
  fdb, fdbt = central(reference_b, logitsb, tau)
  np.testing.assert_allclose(g3, fd3, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(g3t, fd3t, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(gb, fdb, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(gbt, fdbt, rtol=1e-6, atol=1e-6)


def test_pathwise_gradient_through_samples_is_unbiased(key):
  """d/dl E[sum y], y ~ RelaxedBernoulli(l, 0.5), exact by 1-D quadrature."""
  tau = 0.5
  logits = np.array([-1.0, 0.3, 2.0])
  # Independent of the library: E[y] = E_L[sigmoid((l + L) / tau)], L standard logistic,
  # so d/dl E[y] = E_L[sigmoid'((l + L) / tau)] / tau.
  x = np.linspace(-60.0, 60.0, 200_001)
  logistic_pdf = _sigmoid(x) * _sigmoid(-x)
  slope = lambda v: _sigmoid(v) * _sigmoid(-v)
  exact = np.array([np.trapezoid(slope((a + x) / tau) / tau * logistic_pdf, x) for a in logits])
  # The same from the library's density: d/dl of the quadrature of y p_l(y) (float64); the
  # mass outside the grid (below 1e-6 relative) bounds the agreement.
  y = _sigmoid(S_GRID)

  def mean_y(logit):
    density = jnp.exp(RelaxedBernoulli(logit, tau).log_prob(y))
    return jnp.trapezoid(y * y * _sigmoid(-S_GRID) * density, S_GRID)

  with jax.enable_x64(True):
    from_density = np.asarray(jax.jit(jax.vmap(jax.grad(mean_y)))(jnp.asarray(logits)))
  np.testing.assert_allclose(from_density, exact, rtol=1e-5)
  est = gradest.pathwise_grad(
    jnp.sum, lambda a: RelaxedBernoulli(a, tau), jnp.asarray(logits, jnp.float32), key, 20_000
  )
  assert est.per_sample.shape == (20_000, 3)
  assert_unbiased(est.per_sample, exact)
  # A real gradient: the per-sample values vary and their mean is far from zero.
  assert np.all(np.asarray(est.per_sample).std(0) > 0.05) and np.all(exact > 0.05)


# --------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("temperature", [0.0, -1.0, float("nan")])
@pytest.mark.parametrize("cls", [RelaxedBernoulli, RelaxedCategorical])
def test_rejects_bad_temperature(cls, temperature):
  with pytest.raises(ValueError, match="temperature"):
    cls(jnp.zeros(3), temperature)
  with pytest.raises(ValueError, match="temperature"):
    cls(jnp.zeros(3), jnp.asarray(temperature))


def test_rejects_non_scalar_temperature():
  with pytest.raises(ValueError, match="temperature"):
    RelaxedBernoulli(jnp.zeros(3), jnp.ones(3))


def test_relaxed_categorical_rejects_scalar_logits():
  with pytest.raises(ValueError, match="logits"):
    RelaxedCategorical(jnp.array(0.5), 0.5)
  with pytest.raises(ValueError, match="logits"):
    RelaxedCategorical(1.0, 0.5)
  # A scalar is a valid RelaxedBernoulli (event shape ()).
  assert RelaxedBernoulli(0.5, 0.5).event_shape == ()
