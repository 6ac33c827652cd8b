r"""Gaussian variational auto-encoder pieces for user-defined encoders and decoders.

The functions here evaluate the objectives of a VAE with a diagonal Gaussian
posterior approximation :math:`q_\phi(z \mid x) = \mathcal N(\mu_\phi(x),
\mathrm{diag}\,\sigma_\phi(x)^2)` and a standard normal prior :math:`p(z) =
\mathcal N(0, I)`, for *one* data point ``x``:

* :func:`elbo`: the evidence lower bound by the reparameterization trick, with the
  KL term analytic or Monte Carlo, optionally with the "sticking the landing"
  gradient;
* :func:`iwae_bound`: the importance-weighted bound with ``K`` samples;
* :func:`gaussian_kl` and :func:`bernoulli_log_likelihood`: the usual closed-form
  pieces;
* :func:`init_mlp` and :func:`apply_mlp`: a plain ``jax.numpy`` multilayer perceptron.

The model is passed in as two pure functions that close over the user's parameters
(any pytree): ``encode(x) -> (loc, scale)`` with ``loc`` and ``scale`` of shape
``(latent_dim,)``, and ``log_likelihood(x, z) -> scalar``, :math:`\log p_\theta(x \mid z)`
for one latent sample ``z``. ``jax.grad`` of a function of the parameters that builds
the closures and calls :func:`elbo` differentiates through both. The objectives take
one data point; ``jax.vmap`` them over a batch of data points and keys.

Examples:
  >>> import jax, jax.numpy as jnp
  >>> from gradest.models import elbo
  >>> def loss(params, key, x):
  ...   encode = lambda x: (params["m"] * x, jnp.exp(params["log_s"]))
  ...   log_lik = lambda x, z: -0.5 * jnp.sum((x - z) ** 2)
  ...   return -elbo(key, x, encode, log_lik, num_samples=4)
  >>> params = {"m": jnp.ones(2), "log_s": jnp.zeros(2)}
  >>> g = jax.grad(loss)(params, jax.random.key(0), jnp.array([0.5, -1.0]))
  >>> sorted(g)
  ['log_s', 'm']

References:
  Kingma & Welling, *Auto-Encoding Variational Bayes*, ICLR 2014. Rezende, Mohamed &
  Wierstra, *Stochastic Backpropagation and Approximate Inference in Deep Generative
  Models*, ICML 2014. Roeder, Wu & Duvenaud, *Sticking the Landing: Simple,
  Lower-Variance Gradient Estimators for Variational Inference*, NeurIPS 2017. Burda,
  Grosse & Salakhutdinov, *Importance Weighted Autoencoders*, ICLR 2016.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from gradest._src.base import (
  Array,
  PyTree,
  check_key,
  check_num_samples,
  check_scalar_output,
  draw_samples,
)
from gradest._src.distributions import Bernoulli, Normal, kl_divergence
from gradest._src.layers import register_dense

Encoder = Callable[[Any], tuple[Array, Array]]
LogLikelihood = Callable[[Any, Array], Array]

_KL_OPTIONS = ("analytic", "monte_carlo")


# --------------------------------------------------------------------------------------
# Closed-form pieces.
# --------------------------------------------------------------------------------------


def gaussian_kl(loc: Array, scale: Array) -> Array:
  r"""KL divergence from a diagonal Gaussian to the standard normal, per latent vector.

  .. math::
    \mathrm{KL}\big(\mathcal N(\mu, \mathrm{diag}\,\sigma^2) \,\|\, \mathcal N(0, I)\big)
      = \frac12 \sum_{d=1}^{D} \big(\sigma_d^2 + \mu_d^2 - 1 - \log \sigma_d^2\big).

  The sum runs over the **last** axis (the latent dimensions); leading axes are batch
  axes, so a batch of encoder outputs of shape ``(B, D)`` gives ``B`` divergences.
  This is :func:`gradest.distributions.kl_divergence` per latent vector (computed in log
  space, so it stays finite for scales whose square underflows). Parameterize ``scale``
  as you like (for a log-variance ``v``, pass ``jnp.exp(0.5 * v)``).

  Args:
    loc: means :math:`\mu`, shape ``(..., D)``.
    scale: standard deviations :math:`\sigma > 0`, broadcastable with ``loc``.

  Returns:
    The divergences, shape ``(...)`` (the broadcast batch shape); a scalar for one
    latent vector. A 0-d ``loc`` and ``scale`` count as one latent dimension.

  Examples:
    >>> import jax.numpy as jnp
    >>> round(float(gaussian_kl(jnp.array([1.0]), jnp.array([2.0]))), 4)
    1.3069
    >>> gaussian_kl(jnp.zeros((5, 3)), jnp.ones(3)).shape
    (5,)

  References:
    Kingma & Welling, *Auto-Encoding Variational Bayes*, ICLR 2014, appendix B.
  """
  loc, scale = jnp.broadcast_arrays(jnp.asarray(loc), jnp.asarray(scale))

  def one(m, s):
    q = Normal(m, s)
    return kl_divergence(q, Normal(jnp.zeros_like(q.loc), jnp.ones_like(q.scale)))

  if loc.ndim == 0:
    return one(loc, scale)
  return jnp.vectorize(one, signature="(d),(d)->()")(loc, scale)


def bernoulli_log_likelihood(logits: Array, x: Array) -> Array:
  r"""Log-likelihood of ``x`` under independent Bernoulli pixels, per data vector.

  .. math::
    \log p(x \mid \ell) = \sum_{d=1}^{D} x_d \log \sigma(\ell_d)
      + (1 - x_d) \log \sigma(-\ell_d),

  in log-sigmoid form, so it is finite for logits of any size. ``x`` is usually 0/1
  but any value in :math:`[0, 1]` is accepted (a cross-entropy). The sum runs over the
  **last** axis; leading axes are batch axes and broadcast (flatten image-shaped data
  to vectors first).

  Args:
    logits: decoder outputs :math:`\ell`, shape ``(..., D)``.
    x: data, shape ``(..., D)``, broadcastable with ``logits`` in the batch axes.

  Returns:
    The log-likelihoods, shape ``(...)``.

  Raises:
    ValueError: ``logits`` and ``x`` disagree in the last axis, or one of them is 0-d.

  Examples:
    >>> import jax.numpy as jnp
    >>> round(float(bernoulli_log_likelihood(jnp.zeros(4), jnp.array([0, 1, 1, 0]))), 4)
    -2.7726

  References:
    Kingma & Welling, *Auto-Encoding Variational Bayes*, ICLR 2014, appendix C.1.
  """
  logits, x = jnp.asarray(logits), jnp.asarray(x)
  if logits.ndim == 0 or x.ndim == 0 or logits.shape[-1] != x.shape[-1]:
    raise ValueError(
      "bernoulli_log_likelihood needs logits and x with the same last (data) axis, got "
      f"shapes {logits.shape} and {x.shape}; flatten images to vectors first."
    )
  one = lambda lg, xs: Bernoulli(lg).log_prob(xs)
  return jnp.vectorize(one, signature="(d),(d)->()")(logits, x)


# --------------------------------------------------------------------------------------
# Objectives.
# --------------------------------------------------------------------------------------


def _posterior(encode: Encoder, x: Any) -> Normal:
  out = encode(x)
  if not (isinstance(out, (tuple, list)) and len(out) == 2):
    raise TypeError(
      f"encode(x) must return a pair (loc, scale), got {type(out).__name__}; for a "
      "log-scale output return (loc, jnp.exp(log_scale))."
    )
  loc, scale = jnp.asarray(out[0]), jnp.asarray(out[1])
  if loc.ndim != 1 or loc.shape != scale.shape:
    raise ValueError(
      "encode(x) must return loc and scale of the same shape (latent_dim,) for one data "
      f"point, got shapes {loc.shape} and {scale.shape}; for a batch of data points, "
      "jax.vmap the objective over x and the keys."
    )
  if not (jnp.issubdtype(loc.dtype, jnp.floating) and jnp.issubdtype(scale.dtype, jnp.floating)):
    raise TypeError(
      f"encode(x) must return floating-point loc and scale, got {loc.dtype} and {scale.dtype}."
    )
  return Normal(loc, scale)


def _check_kl(kl: Any) -> str:
  if not isinstance(kl, str) or kl not in _KL_OPTIONS:
    raise ValueError(f"kl must be one of {_KL_OPTIONS}, got {kl!r}.")
  return kl


def _samples(
  key: Array, x: Any, encode: Encoder, log_likelihood: LogLikelihood, num_samples: int
) -> tuple[Normal, Array, Array]:
  """Draws ``z_k`` from ``q(z|x)`` by reparameterization; returns ``(q, z, log p(x|z))``."""
  n = check_num_samples(num_samples)
  check_key(key)
  q = _posterior(encode, x)
  log_lik = lambda z: log_likelihood(x, z)
  check_scalar_output(
    log_lik, jax.ShapeDtypeStruct(q.loc.shape, q.loc.dtype), name="log_likelihood"
  )
  # One sample per key of split(key, n): the same samples as gradest's estimators
  # draw from the same key (common random numbers across estimators).
  _, z = draw_samples(q, key, n)
  return q, z, jax.vmap(log_lik)(z)


def _log_weights(q: Normal, z: Array, log_lik: Array, stop_q: bool) -> Array:
  r""":math:`\log p(x \mid z_k) + \log p(z_k) - \log q(z_k \mid x)`, shape ``(K,)``."""
  prior = Normal(jnp.zeros_like(q.loc), jnp.ones_like(q.scale))
  if stop_q:
    q = jax.lax.stop_gradient(q)
  return log_lik + prior.log_prob(z) - q.log_prob(z)


def elbo(
  key: Array,
  x: Any,
  encode: Encoder,
  log_likelihood: LogLikelihood,
  *,
  num_samples: int = 1,
  kl: str = "analytic",
  stick_the_landing: bool = False,
) -> Array:
  r"""Reparameterized Monte Carlo estimate of the evidence lower bound for one ``x``.

  With :math:`z_k = \mu_\phi(x) + \sigma_\phi(x) \odot \varepsilon_k`,
  :math:`\varepsilon_k \sim \mathcal N(0, I)`, :math:`k = 1..K`:

  .. math::
    \text{analytic:}\quad \hat{\mathcal L} &= \frac1K \sum_{k=1}^K
      \log p_\theta(x \mid z_k) - \mathrm{KL}\big(q_\phi(z \mid x) \,\|\, p(z)\big), \\
    \text{Monte Carlo:}\quad \hat{\mathcal L} &= \frac1K \sum_{k=1}^K
      \big[\log p_\theta(x \mid z_k) + \log p(z_k) - \log q_\phi(z_k \mid x)\big].

  Both are unbiased for :math:`\mathcal L = \mathbb E_q[\log p_\theta(x, z) - \log
  q_\phi(z \mid x)] \le \log p_\theta(x)`, and ``jax.grad`` of either is the pathwise
  gradient estimate. The analytic KL usually has the lower variance away from the
  optimum.

  **Sticking the landing** (``stick_the_landing=True``, Monte Carlo KL only). The total
  derivative of the Monte Carlo integrand with respect to :math:`\phi` is

  .. math::
    \nabla_\phi \big[\log p_\theta(x, z) - \log q_\phi(z \mid x)\big]
      = \underbrace{\nabla_z \big[\log p_\theta(x, z) - \log q_\phi(z \mid x)\big]
        \nabla_\phi z}_{\text{path derivative}}
      - \underbrace{\nabla_\phi \log q_\phi(z \mid x)\big|_{z}}_{\text{score, mean } 0}.

  The score term has expectation zero, so dropping it keeps the gradient unbiased; it
  is done by evaluating :math:`\log q` with ``stop_gradient`` on
  :math:`(\mu_\phi(x), \sigma_\phi(x))` while :math:`z` stays reparameterized. When
  :math:`q` equals the true posterior the path derivative is zero for every
  :math:`\varepsilon`, so the estimator has zero variance there. The returned value is
  exactly the Monte Carlo ELBO (only gradients change), and the decoder's gradient is
  unchanged.

  Args:
    key: a PRNG key; the ``K`` samples use the keys ``jax.random.split(key, K)``.
    x: one data point (any array or pytree), passed unchanged to ``encode`` and
      ``log_likelihood``.
    encode: ``x -> (loc, scale)``, each of shape ``(latent_dim,)``, ``scale > 0``; a
      closure over the encoder's parameters.
    log_likelihood: ``(x, z) -> scalar``, :math:`\log p_\theta(x \mid z)` for one
      latent sample ``z`` of shape ``(latent_dim,)``; a closure over the decoder's
      parameters (see :func:`bernoulli_log_likelihood`). gradest vmaps it over the
      ``K`` samples.
    num_samples: ``K >= 1`` (static).
    kl: ``'analytic'`` (:func:`gaussian_kl`) or ``'monte_carlo'``.
    stick_the_landing: drop the score term of :math:`q` from the gradient (needs
      ``kl='monte_carlo'``).

  Returns:
    A scalar: the ELBO estimate (maximize it; a loss is its negative mean over a
    batch).

  Raises:
    ValueError: ``num_samples < 1``; an unknown ``kl``; ``stick_the_landing`` with the
      analytic KL; ``loc`` and ``scale`` of different shapes or not 1-d;
      ``log_likelihood`` not scalar-valued.
    TypeError: ``encode`` does not return a pair; a non-integer ``num_samples``.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> encode = lambda x: (0.5 * x, jnp.full_like(x, 0.8))
    >>> log_lik = lambda x, z: -0.5 * jnp.sum((x - z) ** 2)
    >>> key, x = jax.random.key(0), jnp.ones(3)
    >>> a = elbo(key, x, encode, log_lik, num_samples=8, kl="monte_carlo")
    >>> b = elbo(key, x, encode, log_lik, num_samples=8, kl="monte_carlo",
    ...          stick_the_landing=True)
    >>> bool(a == b)
    True

  References:
    Kingma & Welling, *Auto-Encoding Variational Bayes*, ICLR 2014. Roeder, Wu &
    Duvenaud, *Sticking the Landing: Simple, Lower-Variance Gradient Estimators for
    Variational Inference*, NeurIPS 2017.
  """
  kl = _check_kl(kl)
  if stick_the_landing and kl != "monte_carlo":
    raise ValueError(
      "stick_the_landing=True drops the score term of log q, which only appears in the "
      "Monte Carlo KL; pass kl='monte_carlo' with it."
    )
  q, z, log_lik = _samples(key, x, encode, log_likelihood, num_samples)
  if kl == "analytic":
    return jnp.mean(log_lik) - gaussian_kl(q.loc, q.scale)
  return jnp.mean(_log_weights(q, z, log_lik, stop_q=bool(stick_the_landing)))


def iwae_bound(
  key: Array,
  x: Any,
  encode: Encoder,
  log_likelihood: LogLikelihood,
  *,
  num_samples: int,
) -> Array:
  r"""Importance-weighted lower bound on :math:`\log p_\theta(x)` with ``K`` samples.

  .. math::
    \hat{\mathcal L}_K = \log \frac1K \sum_{k=1}^K w_k, \qquad
    \log w_k = \log p_\theta(x \mid z_k) + \log p(z_k) - \log q_\phi(z_k \mid x),

  computed as ``logsumexp(log w) - log K`` with reparameterized
  :math:`z_k \sim q_\phi(z \mid x)`. Its expectation :math:`\mathcal L_K` satisfies
  :math:`\mathcal L_1 = \mathcal L \le \mathcal L_K \le \mathcal L_{K+1} \le \log
  p_\theta(x)` and :math:`\mathcal L_K \to \log p_\theta(x)` as :math:`K \to \infty`.
  With ``K = 1`` it equals the Monte Carlo :func:`elbo` for the same key. ``jax.grad``
  gives the IWAE gradient (self-normalized weights times the per-sample path
  gradients).

  Args:
    key: a PRNG key; the samples use ``jax.random.split(key, K)``.
    x: one data point (any array or pytree).
    encode: ``x -> (loc, scale)`` of shape ``(latent_dim,)``, as for :func:`elbo`.
    log_likelihood: ``(x, z) -> scalar``, as for :func:`elbo`.
    num_samples: ``K >= 1`` (static).

  Returns:
    A scalar, the bound's estimate.

  Raises:
    ValueError: ``num_samples < 1``; bad ``encode`` output shapes; ``log_likelihood``
      not scalar-valued.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> encode = lambda x: (0.5 * x, jnp.full_like(x, 0.8))
    >>> log_lik = lambda x, z: -0.5 * jnp.sum((x - z) ** 2)
    >>> iwae_bound(jax.random.key(0), jnp.ones(3), encode, log_lik, num_samples=64).shape
    ()

  References:
    Burda, Grosse & Salakhutdinov, *Importance Weighted Autoencoders*, ICLR 2016.
  """
  q, z, log_lik = _samples(key, x, encode, log_likelihood, num_samples)
  log_w = _log_weights(q, z, log_lik, stop_q=False)
  return jax.nn.logsumexp(log_w) - math.log(log_w.shape[0])


# --------------------------------------------------------------------------------------
# A small multilayer perceptron (pure jax.numpy).
# --------------------------------------------------------------------------------------


def init_mlp(key: Array, layer_sizes: Sequence[int], dtype: Any = jnp.float32) -> list[PyTree]:
  r"""Parameters of a fully connected network with the given layer widths.

  Weights are drawn from :math:`\mathcal N(0, 1/\text{fan-in})` (LeCun normal) and
  biases are zero.

  Args:
    key: a PRNG key.
    layer_sizes: ``(in, hidden_1, ..., out)``, at least two positive ints.
    dtype: the parameters' floating dtype.

  Returns:
    A list with one ``{'w': (fan_in, fan_out), 'b': (fan_out,)}`` dict per layer.

  Raises:
    ValueError: fewer than two sizes, or a size below 1.

  Examples:
    >>> import jax
    >>> params = init_mlp(jax.random.key(0), [64, 32, 8])
    >>> [p["w"].shape for p in params]
    [(64, 32), (32, 8)]

  References:
    LeCun, Bottou, Orr & Mueller, *Efficient BackProp*, 1998 (the initialization).
  """
  sizes = [int(s) for s in layer_sizes]
  if len(sizes) < 2 or min(sizes) < 1:
    raise ValueError(
      f"layer_sizes must hold at least two positive widths (input and output), got {sizes}."
    )
  keys = jax.random.split(key, len(sizes) - 1)
  return [
    {
      "w": jax.random.normal(k, (m, n), dtype) / math.sqrt(m),
      "b": jnp.zeros((n,), dtype),
    }
    for k, m, n in zip(keys, sizes[:-1], sizes[1:], strict=True)
  ]


def apply_mlp(
  params: Sequence[PyTree], x: Array, activation: Callable[[Array], Array] = jnp.tanh
) -> Array:
  r"""Applies the network of :func:`init_mlp`: affine layers with ``activation`` between.

  .. math::
    h_0 = x, \quad h_l = a(h_{l-1} W_l + b_l)\ (l < L), \quad
    \text{out} = h_{L-1} W_L + b_L .

  The last layer is linear (logits, or the raw loc/scale of a Gaussian). Each affine
  layer is registered with :func:`gradest.fisher.register_dense`, so :func:`gradest.kfac`
  preconditions it.

  Args:
    params: the list returned by :func:`init_mlp` (any compatible list of dicts).
    x: inputs of shape ``(..., in)``; leading axes are batch axes.
    activation: the hidden nonlinearity.

  Returns:
    Outputs of shape ``(..., out)``.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> params = init_mlp(jax.random.key(0), [4, 16, 2])
    >>> apply_mlp(params, jnp.ones((10, 4))).shape
    (10, 2)

  References:
    Rumelhart, Hinton & Williams, *Learning representations by back-propagating
    errors*, 1986.
  """
  h = x
  for i, layer in enumerate(params):
    h = register_dense(h @ layer["w"] + layer["b"], h, layer["w"], layer["b"])
    if i < len(params) - 1:
      h = activation(h)
  return h
