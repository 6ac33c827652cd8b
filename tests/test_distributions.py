import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special, stats

from gradest.distributions import (
  Bernoulli,
  Categorical,
  Gamma,
  Normal,
  OneHotCategorical,
  as_distribution,
  kl_divergence,
)

from .helpers import assert_unbiased


def test_normal_log_prob_entropy_and_shapes(key):
  loc, scale = jnp.array([0.5, -1.0, 2.0]), jnp.array([1.0, 0.3, 2.5])
  d = Normal(loc, scale)
  x = d.sample(key, (7,))
  assert x.shape == (7, 3)
  ref = stats.norm(np.asarray(loc), np.asarray(scale)).logpdf(np.asarray(x)).sum(-1)
  np.testing.assert_allclose(d.log_prob(x), ref, rtol=1e-5)
  np.testing.assert_allclose(d.entropy(), stats.norm(loc, scale).entropy().sum(), rtol=1e-5)
  assert d.reparameterized


def test_normal_broadcasts_scale():
  d = Normal(jnp.zeros((2, 3)), 2.0)
  assert d.scale.shape == (2, 3) and d.event_shape == (2, 3)


def test_bernoulli_log_prob_entropy_and_huge_logits(key):
  logits = jnp.array([-2.0, 0.0, 3.0])
  d = Bernoulli(logits)
  x = d.sample(key, (5,))
  assert x.shape == (5, 3) and x.dtype == logits.dtype
  p = np.asarray(jax.nn.sigmoid(logits))
  ref = stats.bernoulli(p).logpmf(np.asarray(x)).sum(-1)
  np.testing.assert_allclose(d.log_prob(x), ref, rtol=1e-5)
  np.testing.assert_allclose(d.entropy(), stats.bernoulli(p).entropy().sum(), rtol=1e-5)
  big = Bernoulli(jnp.array([1e4, -1e4]))
  assert np.all(np.isfinite(big.log_prob(jnp.array([1.0, 0.0]))))
  np.testing.assert_array_equal(big.sample(key, (100,)), np.tile([1.0, 0.0], (100, 1)))


def test_bernoulli_sample_frequencies(key):
  logits = jnp.array([-1.0, 0.5])
  x = Bernoulli(logits).sample(key, (20000,))
  assert_unbiased(x, jax.nn.sigmoid(logits))


def test_bernoulli_sample_where_the_uniform_is_zero():
  """u = 0 made log u - log1p(-u) = -inf < logits: a 1 for any finite logit."""
  key, shape, index = jax.random.key(4), (1 << 20,), 286683  # an exact zero among the draws
  assert float(jax.random.uniform(key, shape)[index]) == 0.0, "pick another key"
  x = Bernoulli(jnp.float32(-100.0)).sample(key, shape)
  assert not np.any(np.asarray(x))


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16])
@pytest.mark.numerics
def test_bernoulli_half_precision_frequencies(dtype):
  """Half-precision logits draw float32 uniforms: the grid of a float16 (bfloat16)
  uniform, 2**-10 (2**-7), would make P(1) 3/1024 (1/128) for sigmoid(-6) = 0.0025."""
  logits = jnp.asarray(-6.0, dtype)
  x = Bernoulli(logits).sample(jax.random.key(1), (1 << 20,))
  assert x.dtype == dtype
  assert_unbiased(x, jax.nn.sigmoid(jnp.float32(-6.0)))


def test_categorical_log_prob_entropy_and_frequencies(key):
  logits = jnp.array([[0.1, 1.0, -2.0], [0.0, 0.0, 3.0]])
  d = Categorical(logits)
  x = d.sample(key, (20000,))
  assert x.shape == (20000, 2)
  probs = np.asarray(jax.nn.softmax(logits))
  onehot = jax.nn.one_hot(x, 3)
  assert_unbiased(onehot, probs)
  ref = np.log(probs[0, np.asarray(x[:5, 0])]) + np.log(probs[1, np.asarray(x[:5, 1])])
  np.testing.assert_allclose(d.log_prob(x[:5]), ref, rtol=1e-5)
  np.testing.assert_allclose(d.entropy(), -(probs * np.log(probs)).sum(), rtol=1e-5)


def test_categorical_rejects_scalar_logits():
  with pytest.raises(ValueError, match="logits"):
    Categorical(jnp.array(1.0))


def test_gamma_log_prob_entropy_and_implicit_gradient(key):
  a, b = jnp.array([0.7, 2.0]), jnp.array([1.5, 0.5])
  d = Gamma(a, b)
  x = d.sample(key, (4,))
  ref = stats.gamma(np.asarray(a), scale=1 / np.asarray(b)).logpdf(np.asarray(x)).sum(-1)
  np.testing.assert_allclose(d.log_prob(x), ref, rtol=1e-4)
  np.testing.assert_allclose(
    d.entropy(), stats.gamma(np.asarray(a), scale=1 / np.asarray(b)).entropy().sum(), rtol=1e-5
  )
  # d/da E[x] = 1/b: per-sample implicit gradients of a single draw are unbiased.
  keys = jax.random.split(key, 20000)
  g = jax.vmap(jax.grad(lambda a_, k: jnp.sum(Gamma(a_, b).sample(k))), (None, 0))(a, keys)
  assert_unbiased(g, 1.0 / b)


@pytest.mark.parametrize(
  "p, q",
  [
    (Normal(jnp.array([0.3, -1.0]), jnp.array([0.5, 2.0])), Normal(0.0, jnp.ones(2))),
    (Bernoulli(jnp.array([0.3, -2.0])), Bernoulli(jnp.array([1.0, 0.5]))),
    (Categorical(jnp.array([0.3, -2.0, 1.0])), Categorical(jnp.array([1.0, 0.5, 0.0]))),
    (Gamma(jnp.array([2.0, 0.8]), jnp.array([1.0, 3.0])), Gamma(1.5, jnp.array([0.5, 2.0]))),
  ],
)
def test_kl_matches_monte_carlo(p, q, key):
  x = p.sample(key, (40000,))
  per_sample = p.log_prob(x) - q.log_prob(x)
  assert_unbiased(per_sample, kl_divergence(p, q))


def test_kl_of_normal_to_standard_is_seed_erratum_4():
  mu, sigma = 0.7, 1.8
  expected = 0.5 * (sigma**2 + mu**2 - 1 - np.log(sigma**2))
  np.testing.assert_allclose(
    kl_divergence(Normal(mu, sigma), Normal(0.0, 1.0)), expected, rtol=1e-6
  )


def test_kl_rejects_mixed_families():
  with pytest.raises(TypeError, match="same family"):
    kl_divergence(Normal(0.0, 1.0), Bernoulli(0.0))


def test_distributions_are_pytrees_under_jit_and_vmap(key):
  @jax.jit
  def sample_mean(d, k):
    return d.sample(k, (10,)).mean(0)

  assert sample_mean(Normal(jnp.zeros(2), 1.0), key).shape == (2,)
  locs = jnp.arange(4.0)
  lp = jax.vmap(lambda m: Normal(m, 1.0).log_prob(jnp.array(0.0)))(locs)
  np.testing.assert_allclose(lp, stats.norm(np.asarray(locs), 1).logpdf(0.0), rtol=1e-5)


def test_as_distribution_rejects_non_distribution():
  with pytest.raises(TypeError, match="sample"):
    as_distribution(object())


def test_distrax_and_numpyro_adapters(key):
  distrax = pytest.importorskip("distrax")
  numpyro_dist = pytest.importorskip("numpyro.distributions")
  loc, scale = jnp.array([0.1, 0.2]), jnp.array([1.0, 2.0])
  for foreign in (distrax.Normal(loc, scale), numpyro_dist.Normal(loc, scale)):
    d = as_distribution(foreign)
    assert isinstance(d, Normal)
    np.testing.assert_allclose(d.log_prob(jnp.ones(2)), Normal(loc, scale).log_prob(jnp.ones(2)))
  for foreign in (distrax.Bernoulli(logits=loc), numpyro_dist.BernoulliLogits(loc)):
    d = as_distribution(foreign)
    x = d.sample(key, (3,))
    assert x.shape == (3, 2)
    np.testing.assert_allclose(
      d.log_prob(x), Bernoulli(loc).log_prob(x.astype(jnp.float32)), rtol=1e-5
    )
  assert not as_distribution(numpyro_dist.BernoulliLogits(loc)).reparameterized


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16, jnp.float32])
@pytest.mark.numerics
def test_bernoulli_log_prob_at_extreme_logits(dtype):
  # log_prob is x l - softplus(l): finite, of the logits' dtype, and equal to the
  # log-sigmoid form (computed in float64) to the dtype's resolution, eagerly and jitted.
  logits = jnp.array([-1e4, -100.0, -20.0, -1.0, 0.0, 2.0, 30.0, 100.0, 1e4], dtype)
  for x in (0.0, 1.0):
    b = jnp.full(logits.shape, x, dtype)
    per_coord = jax.vmap(lambda lg, bb: Bernoulli(lg).log_prob(bb))(logits, b)
    jitted = jax.jit(jax.vmap(lambda lg, bb: Bernoulli(lg).log_prob(bb)))(logits, b)
    l64 = np.asarray(logits, np.float64)
    want = x * l64 - np.logaddexp(0.0, l64)
    assert per_coord.dtype == dtype and np.all(np.isfinite(np.asarray(per_coord, np.float32)))
    np.testing.assert_array_equal(np.asarray(per_coord), np.asarray(jitted))
    tol = float(jnp.finfo(dtype).eps) * (1.0 + np.abs(want)) + 1e-6
    assert np.all(np.abs(np.asarray(per_coord, np.float64) - want) <= tol), (x, per_coord, want)
    grad = jax.grad(lambda lg, b=b: Bernoulli(lg).log_prob(b))(logits)
    np.testing.assert_allclose(
      np.asarray(grad, np.float64), x - special.expit(l64), atol=2 * float(jnp.finfo(dtype).eps)
    )


def test_one_hot_categorical_matches_categorical(key):
  logits = jnp.array([[0.5, -1.0, 2.0], [0.0, 0.3, -0.3]])
  one_hot = OneHotCategorical(logits)
  b = one_hot.sample(key, (1000,))
  assert b.shape == (1000, 2, 3) and b.dtype == logits.dtype
  np.testing.assert_array_equal(b.sum(-1), 1.0)
  index = jnp.argmax(b, -1)
  np.testing.assert_allclose(
    one_hot.log_prob(b), Categorical(logits).log_prob(index), rtol=1e-6, atol=1e-6
  )
  np.testing.assert_allclose(one_hot.entropy(), Categorical(logits).entropy(), rtol=1e-6)
  with pytest.raises(ValueError, match="num_classes >= 2"):
    OneHotCategorical(jnp.zeros((3, 1)))


def test_foreign_discrete_distributions_become_gradest_families():
  distrax = pytest.importorskip("distrax")
  numpyro_dist = pytest.importorskip("numpyro.distributions")
  logits = jnp.array([0.5, -1.0, 2.0])
  cases = [
    (distrax.Bernoulli(logits=logits), Bernoulli),
    (numpyro_dist.Bernoulli(logits=logits), Bernoulli),
    (numpyro_dist.Bernoulli(probs=jax.nn.sigmoid(logits)), Bernoulli),
    (distrax.Categorical(logits=logits), Categorical),
    (distrax.OneHotCategorical(logits=logits), OneHotCategorical),
    (numpyro_dist.Categorical(logits=logits), Categorical),
    (numpyro_dist.Categorical(probs=jax.nn.softmax(logits)), Categorical),
  ]
  for foreign, family in cases:
    got = as_distribution(foreign)
    assert type(got) is family, (type(foreign), type(got))
    # The same distribution: equal probabilities (logits may differ by a constant).
    probs = jax.nn.sigmoid(got.logits) if family is Bernoulli else jax.nn.softmax(got.logits)
    want = jax.nn.sigmoid(logits) if family is Bernoulli else jax.nn.softmax(logits)
    np.testing.assert_allclose(probs, want, rtol=1e-5, atol=1e-6)
