"""Tests of gradest.models.vae on a linear-Gaussian model with a closed-form evidence.

Model: z ~ N(0, I_2), x | z ~ N(W z + c, s^2 I_3). W has orthogonal columns, so the
exact posterior is a diagonal Gaussian and an amortized encoder
``loc = A x + m, scale = exp(log_s)`` can represent it exactly.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy.stats import multivariate_normal
from scipy import integrate, stats

from gradest.distributions import Bernoulli, Normal, kl_divergence
from gradest.models import (
  apply_mlp,
  bernoulli_log_likelihood,
  elbo,
  gaussian_kl,
  init_mlp,
  iwae_bound,
)

from .helpers import assert_smaller_variance, assert_unbiased, z_value

# Orthogonal columns: W^T W = diag(2.25, 0.49).
W = jnp.array([[1.5, 0.0], [0.0, 0.56], [0.0, 0.42]])
C = jnp.array([0.2, -0.4, 1.0])
S = 0.9
X = jnp.array([1.3, -0.2, 0.7])

_PRECISION = 1.0 + jnp.diag(W.T @ W) / S**2  # diagonal posterior precision
_A_POST = (W.T / S**2) / _PRECISION[:, None]
POSTERIOR = {"A": _A_POST, "m": -_A_POST @ C, "log_s": -0.5 * jnp.log(_PRECISION)}
# A different (worse) encoder: shifted mean, wider scale.
OFF = {"A": 0.5 * _A_POST, "m": -_A_POST @ C + 0.6, "log_s": POSTERIOR["log_s"] + 0.3}


def make_encode(params):
  return lambda x: (params["A"] @ x + params["m"], jnp.exp(params["log_s"]))


def log_likelihood(x, z, w=W):
  return Normal(w @ z + C, S).log_prob(x)


def log_evidence(x):
  return multivariate_normal.logpdf(x, C, W @ W.T + S**2 * jnp.eye(3))


def exact_elbo(params, x=X):
  """E_q[log p(x | z)] - KL(q || p) in closed form."""
  loc, scale = make_encode(params)(x)
  expected_ll = (
    Normal(W @ loc + C, S).log_prob(x) - 0.5 * jnp.sum(jnp.diag(W.T @ W) * scale**2) / S**2
  )
  return expected_ll - kl_divergence(Normal(loc, scale), Normal(jnp.zeros(2), jnp.ones(2)))


def per_key(fn, key, n):
  return jax.jit(jax.vmap(fn))(jax.random.split(key, n))


# --------------------------------------------------------------------------------------
# Closed-form pieces.
# --------------------------------------------------------------------------------------


def test_gaussian_kl_matches_kl_divergence_and_erratum():
  loc = jnp.array([0.3, -1.2, 2.0])
  scale = jnp.array([0.5, 1.0, 1.7])
  expected = kl_divergence(Normal(loc, scale), Normal(jnp.zeros(3), jnp.ones(3)))
  np.testing.assert_allclose(gaussian_kl(loc, scale), expected, rtol=1e-6)
  # Seed erratum 4: 0.5 (sigma^2 + mu^2 - 1 - log sigma^2), not halved twice.
  np.testing.assert_allclose(gaussian_kl(1.0, 2.0), 0.5 * (4 + 1 - 1 - math.log(4)), rtol=1e-6)


def test_gaussian_kl_numerical_integration():
  loc = np.array([0.3, -1.2, 2.0])
  scale = np.array([0.5, 1.0, 1.7])
  total = 0.0
  for m, s in zip(loc, scale, strict=True):
    q, p = stats.norm(m, s), stats.norm(0.0, 1.0)
    integrand = lambda z, q=q, p=p: q.pdf(z) * (q.logpdf(z) - p.logpdf(z))
    total += integrate.quad(integrand, m - 12 * s, m + 12 * s)[0]
  np.testing.assert_allclose(gaussian_kl(loc, scale), total, rtol=1e-5)


def test_gaussian_kl_batch_axes_and_tiny_scale():
  loc = jax.random.normal(jax.random.key(1), (5, 4))
  scale = jnp.exp(jax.random.normal(jax.random.key(2), (4,)))
  out = gaussian_kl(loc, scale)
  assert out.shape == (5,)
  for i in range(5):
    np.testing.assert_allclose(out[i], gaussian_kl(loc[i], scale), rtol=1e-6)
  # scale**2 underflows in float32; the divergence stays finite (and huge).
  assert np.isfinite(gaussian_kl(jnp.zeros(2), jnp.full(2, 1e-30, jnp.float32)))


def test_bernoulli_log_likelihood():
  logits = jax.random.normal(jax.random.key(0), (4, 6)) * 3
  x = (jax.random.uniform(jax.random.key(1), (6,)) < 0.5).astype(jnp.float32)
  out = bernoulli_log_likelihood(logits, x)
  assert out.shape == (4,)
  p = jax.nn.sigmoid(logits)
  np.testing.assert_allclose(out, jnp.sum(x * jnp.log(p) + (1 - x) * jnp.log1p(-p), -1), rtol=1e-5)
  np.testing.assert_allclose(out[0], Bernoulli(logits[0]).log_prob(x), rtol=1e-6)
  huge = bernoulli_log_likelihood(jnp.array([1e4, -1e4, 1e4]), jnp.array([1, 0, 0]))
  np.testing.assert_allclose(huge, -1e4, rtol=1e-6)


# --------------------------------------------------------------------------------------
# The linear-Gaussian model's closed forms (sanity checks of the test problem itself).
# --------------------------------------------------------------------------------------


def test_closed_form_elbo_is_below_evidence_and_tight_at_posterior():
  np.testing.assert_allclose(exact_elbo(POSTERIOR), log_evidence(X), rtol=1e-5)
  for i in range(5):
    k1, k2 = jax.random.split(jax.random.key(i))
    params = jax.tree.map(lambda v, k=k1: v + 0.3 * jax.random.normal(k, v.shape), POSTERIOR)
    params["log_s"] = params["log_s"] + 0.3 * jax.random.normal(k2, (2,))
    assert exact_elbo(params) < log_evidence(X)


# --------------------------------------------------------------------------------------
# ELBO and IWAE estimates.
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("kl", ["analytic", "monte_carlo"])
@pytest.mark.parametrize("num_samples", [1, 5])
def test_elbo_is_unbiased(kl, num_samples, key):
  encode = make_encode(OFF)
  values = per_key(
    lambda k: elbo(k, X, encode, log_likelihood, num_samples=num_samples, kl=kl), key, 4000
  )
  assert_unbiased(values, exact_elbo(OFF))
  assert exact_elbo(OFF) < log_evidence(X)


def test_monte_carlo_elbo_is_exact_at_posterior(key):
  """log p(x, z) - log q(z | x) = log p(x) for every z when q is the posterior."""
  values = per_key(
    lambda k: elbo(k, X, make_encode(POSTERIOR), log_likelihood, kl="monte_carlo"), key, 100
  )
  np.testing.assert_allclose(values, log_evidence(X), rtol=1e-5)


def test_iwae_increases_with_k_towards_evidence(key):
  """E[IWAE_K] is nondecreasing in K, below log p(x), and approaches it.

  Replicate ``r`` uses the same key for every K (common random numbers), so the
  differences between consecutive K are paired; their standard errors come from the
  differences themselves.
  """
  encode = make_encode(OFF)
  ks, n = [1, 2, 4, 8, 64], 8000
  keys = jax.random.split(key, n)
  values = np.stack(
    [
      np.asarray(
        jax.jit(jax.vmap(lambda kk, k=k: iwae_bound(kk, X, encode, log_likelihood, num_samples=k)))(
          keys
        ),
        np.float64,
      )
      for k in ks
    ]
  )  # (len(ks), n)
  se = lambda v: v.std(axis=-1, ddof=1) / math.sqrt(n)
  means = values.mean(-1)
  z = z_value(2 * len(ks))
  log_px = float(log_evidence(X))
  np.testing.assert_allclose(means[0], exact_elbo(OFF), atol=z * se(values[0]))
  assert np.all(means <= log_px + z * se(values)), (means, log_px)
  steps = np.diff(values, axis=0)
  assert np.all(steps.mean(-1) > z * se(steps)), (means, steps.mean(-1), se(steps))
  assert log_px - means[-1] < 0.05 * (log_px - means[0]), (means, log_px)


def test_iwae_with_one_sample_is_the_monte_carlo_elbo(key):
  encode = make_encode(OFF)
  a = iwae_bound(key, X, encode, log_likelihood, num_samples=1)
  b = elbo(key, X, encode, log_likelihood, kl="monte_carlo")
  np.testing.assert_allclose(a, b, rtol=1e-6)


# --------------------------------------------------------------------------------------
# Sticking the landing.
# --------------------------------------------------------------------------------------


def _grads(params, key, n, **kwargs):
  def one(k):
    return jax.grad(lambda p: elbo(k, X, make_encode(p), log_likelihood, **kwargs))(params)

  return per_key(one, key, n)


def test_stl_value_equals_monte_carlo_elbo_and_decoder_grad_is_unchanged(key):
  encode = make_encode(OFF)
  kwargs = dict(num_samples=3, kl="monte_carlo")
  a = elbo(key, X, encode, log_likelihood, **kwargs)
  b = elbo(key, X, encode, log_likelihood, stick_the_landing=True, **kwargs)
  assert a == b

  def dec_grad(stl):
    ll = lambda w: elbo(
      key, X, encode, lambda x, z: log_likelihood(x, z, w), stick_the_landing=stl, **kwargs
    )
    return jax.grad(ll)(W)

  np.testing.assert_allclose(dec_grad(True), dec_grad(False), rtol=1e-6)


@pytest.mark.parametrize(
  "kwargs",
  [
    dict(kl="monte_carlo", stick_the_landing=True),
    dict(kl="monte_carlo"),
    dict(kl="analytic"),
    dict(kl="monte_carlo", stick_the_landing=True, num_samples=4),
  ],
)
def test_encoder_gradients_are_unbiased(kwargs, key):
  grads = _grads(OFF, key, 4000, **kwargs)
  assert_unbiased(grads, jax.grad(exact_elbo)(OFF))


def test_stl_has_zero_variance_at_the_posterior(key):
  stl = _grads(POSTERIOR, key, 2000, kl="monte_carlo", stick_the_landing=True)
  plain = _grads(POSTERIOR, key, 2000, kl="monte_carlo")
  for leaf in jax.tree.leaves(stl):
    np.testing.assert_allclose(leaf, 0.0, atol=1e-4)
  assert all(float(jnp.var(leaf)) > 1e-2 for leaf in jax.tree.leaves(plain))
  assert_smaller_variance(stl, plain)


def test_stl_has_lower_variance_near_the_posterior(key):
  near = jax.tree.map(lambda v: v + 0.05, POSTERIOR)
  stl = _grads(near, key, 4000, kl="monte_carlo", stick_the_landing=True)
  plain = _grads(near, key, 4000, kl="monte_carlo")
  assert_smaller_variance(stl, plain)


# --------------------------------------------------------------------------------------
# jit, vmap, grad.
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
  "objective",
  [
    lambda k, x, e, ll: elbo(k, x, e, ll, num_samples=3),
    lambda k, x, e, ll: elbo(k, x, e, ll, num_samples=3, kl="monte_carlo"),
    lambda k, x, e, ll: elbo(k, x, e, ll, kl="monte_carlo", stick_the_landing=True),
    lambda k, x, e, ll: iwae_bound(k, x, e, ll, num_samples=7),
  ],
)
def test_jit_vmap_and_grad(objective, key):
  def loss(params, k, x):
    return objective(k, x, make_encode(params), log_likelihood)

  eager = loss(OFF, key, X)
  np.testing.assert_allclose(jax.jit(loss)(OFF, key, X), eager, rtol=1e-5)
  xs = X + jax.random.normal(jax.random.key(3), (4, 3))
  keys = jax.random.split(key, 4)
  batched = jax.jit(jax.vmap(loss, in_axes=(None, 0, 0)))(OFF, keys, xs)
  assert batched.shape == (4,)
  for i in range(4):
    np.testing.assert_allclose(batched[i], loss(OFF, keys[i], xs[i]), rtol=1e-5)
  g = jax.jit(jax.grad(lambda p: jnp.mean(jax.vmap(loss, (None, 0, 0))(p, keys, xs))))(OFF)
  assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(g))


def test_same_key_same_result(key):
  encode = make_encode(OFF)
  a = iwae_bound(key, X, encode, log_likelihood, num_samples=5)
  b = iwae_bound(key, X, encode, log_likelihood, num_samples=5)
  assert a == b


def test_helpers_under_jit_and_vmap():
  loc = jax.random.normal(jax.random.key(0), (3, 4))
  scale = jnp.full((3, 4), 0.7)
  np.testing.assert_allclose(jax.jit(gaussian_kl)(loc, scale), gaussian_kl(loc, scale), rtol=1e-6)
  np.testing.assert_allclose(jax.vmap(gaussian_kl)(loc, scale), gaussian_kl(loc, scale), rtol=1e-6)
  x = jnp.array([[0.0, 1.0, 1.0, 0.0]] * 3)
  np.testing.assert_allclose(
    jax.vmap(bernoulli_log_likelihood)(loc, x),
    jax.jit(bernoulli_log_likelihood)(loc, x),
    rtol=1e-6,
  )
  params = init_mlp(jax.random.key(0), [4, 8, 2])
  out = jax.jit(apply_mlp)(params, loc)
  assert out.shape == (3, 2)
  np.testing.assert_allclose(jax.vmap(apply_mlp, (None, 0))(params, loc), out, rtol=1e-5)


def test_mlp_shapes_and_init_scale():
  params = init_mlp(jax.random.key(0), [400, 300, 5])
  assert [p["w"].shape for p in params] == [(400, 300), (300, 5)]
  assert [p["b"].shape for p in params] == [(300,), (5,)]
  np.testing.assert_allclose(jnp.std(params[0]["w"]), 1 / math.sqrt(400), rtol=0.05)
  out = apply_mlp(params, jnp.ones((2, 7, 400)), activation=jax.nn.relu)
  assert out.shape == (2, 7, 5)
  ensemble = jax.jit(jax.vmap(lambda k: init_mlp(k, [3, 4, 2])))(
    jax.random.split(jax.random.key(1), 5)
  )
  assert ensemble[0]["w"].shape == (5, 3, 4)


# --------------------------------------------------------------------------------------
# Bad input.
# --------------------------------------------------------------------------------------


def test_rejects_bad_options(key):
  encode = make_encode(OFF)
  with pytest.raises(ValueError, match="num_samples"):
    elbo(key, X, encode, log_likelihood, num_samples=0)
  with pytest.raises(ValueError, match="num_samples"):
    iwae_bound(key, X, encode, log_likelihood, num_samples=0)
  with pytest.raises(TypeError, match="num_samples"):
    elbo(key, X, encode, log_likelihood, num_samples=2.5)
  with pytest.raises(ValueError, match="kl must be one of"):
    elbo(key, X, encode, log_likelihood, kl="exact")
  with pytest.raises(ValueError, match="kl='monte_carlo'"):
    elbo(key, X, encode, log_likelihood, stick_the_landing=True)
  with pytest.raises(ValueError, match="key"):
    elbo(jax.random.split(key, 2), X, encode, log_likelihood)


def test_rejects_bad_model_functions(key):
  with pytest.raises(ValueError, match="same shape"):
    elbo(key, X, lambda x: (jnp.zeros(2), jnp.ones(3)), log_likelihood)
  with pytest.raises(ValueError, match="vmap"):
    elbo(key, X, lambda x: (jnp.zeros((4, 2)), jnp.ones((4, 2))), log_likelihood)
  with pytest.raises(TypeError, match="pair"):
    elbo(key, X, lambda x: jnp.zeros(2), log_likelihood)
  with pytest.raises(ValueError, match="log_likelihood"):
    elbo(key, X, make_encode(OFF), lambda x, z: W @ z + C)
  with pytest.raises(ValueError, match="last"):
    bernoulli_log_likelihood(jnp.zeros(4), jnp.zeros(5))
  with pytest.raises(ValueError, match="layer_sizes"):
    init_mlp(key, [3])
