r"""A variational auto-encoder with Bernoulli latent variables, trained with any estimator.

Binary latents :math:`h \in \{0, 1\}^H`, a factorized Bernoulli prior with learned logits
:math:`\pi`, a linear-logit decoder and encoder (one-layer sigmoid belief nets):

.. math::
  p_\theta(h) = \prod_j \sigma(\pi_j)^{h_j} \sigma(-\pi_j)^{1 - h_j}, \qquad
  p_\theta(x \mid h) = \mathrm{Bernoulli}(x;\ \sigma(h V + c)), \qquad
  q_\phi(h \mid x) = \mathrm{Bernoulli}(h;\ \sigma(x W + b)).

The negative ELBO of a data point is :math:`\mathbb E_{q_\phi}[f_x(h)]` with the cost
:math:`f_x(h) = \log q_\phi(h \mid x) - \log p_\theta(x, h)`, whose gradient with
respect to :math:`\phi` needs a discrete estimator; :func:`loss` takes the estimator by
its name in :data:`gradest.ESTIMATORS` and uses its objective level, so the decoder and
the encoder are trained from one ``jax.grad``. With a multi-sample entry (VIMCO) the
loss is the negative importance-weighted bound :math:`-\mathbb E \log \frac1K \sum_k
p_\theta(x, h_k) / q_\phi(h_k \mid x)` instead.

Examples:
  >>> import jax, jax.numpy as jnp
  >>> from gradest.models import discrete_vae
  >>> params = discrete_vae.init_params(jax.random.key(0), data_dim=6, latent_dim=3)
  >>> x = jnp.array([[1.0, 0, 1, 1, 0, 0], [0, 1, 1, 0, 0, 1]])
  >>> g = jax.grad(discrete_vae.loss)(params, x, jax.random.key(1), 4, "disarm")
  >>> sorted(g)
  ['decoder', 'encoder', 'prior_logits']

References:
  Mnih & Gregor, *Neural Variational Inference and Learning in Belief Networks*, ICML
  2014. Tucker et al., *REBAR*, NeurIPS 2017. Dong, Mnih & Tucker, *DisARM*, NeurIPS
  2020.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from gradest._src.base import Array, PyTree, check_key, check_positive_int
from gradest._src.distributions import Bernoulli
from gradest._src.registry import get_estimator


def init_params(key: Array, data_dim: int, latent_dim: int, scale: float = 0.1) -> PyTree:
  """Small random weights: ``{"encoder": {"w", "b"}, "decoder": {"w", "b"}, "prior_logits"}``.

  Shapes: encoder ``w`` ``(data_dim, latent_dim)``, decoder ``w`` ``(latent_dim,
  data_dim)``, ``prior_logits`` ``(latent_dim,)``.
  """
  data_dim = check_positive_int(data_dim, "data_dim")
  latent_dim = check_positive_int(latent_dim, "latent_dim")
  check_key(key)
  k1, k2 = jax.random.split(key)
  return {
    "encoder": {
      "w": scale * jax.random.normal(k1, (data_dim, latent_dim)),
      "b": jnp.zeros(latent_dim),
    },
    "decoder": {
      "w": scale * jax.random.normal(k2, (latent_dim, data_dim)),
      "b": jnp.zeros(data_dim),
    },
    "prior_logits": jnp.zeros(latent_dim),
  }


def posterior(params: PyTree, x: Array) -> Bernoulli:
  r""":math:`q_\phi(h \mid x)` for one data point ``x`` of shape ``(data_dim,)``."""
  return Bernoulli(x @ params["encoder"]["w"] + params["encoder"]["b"])


def log_joint(params: PyTree, x: Array, h: Array) -> Array:
  r""":math:`\log p_\theta(x, h)` for one data point and one latent sample (a scalar)."""
  decoder = Bernoulli(h @ params["decoder"]["w"] + params["decoder"]["b"])
  return Bernoulli(params["prior_logits"]).log_prob(h) + decoder.log_prob(x)


def cost(params: PyTree, x: Array):
  r"""The cost :math:`f_x(h) = \log q_\phi(h \mid x) - \log p_\theta(x, h)` of one point."""
  q = posterior(params, x)
  return lambda h: q.log_prob(h) - log_joint(params, x, h)


def loss(
  params: PyTree, x: Array, key: Array, num_samples: int, estimator: str, **options: Any
) -> Array:
  r"""The mean over a batch of the negative ELBO, estimated with the named ``estimator``.

  ``jax.grad`` of it is the estimator's gradient for the encoder and the exact gradient
  at the samples for the decoder and the prior. ``estimator`` is any name of
  :data:`gradest.ESTIMATORS` that accepts Bernoulli distributions and has an objective
  level (``"score_function"``, ``"reinforce_loo"``, ``"arm"``, ``"disarm"``,
  ``"straight_through"``, ``"gumbel_rao"``, ``"rebar"``, ``"relax"``, ``"vimco"``);
  ``options`` go to its objective (e.g. ``temperature``; for RELAX, ``cv_params`` of
  the registry's control variate, whose gradient in this loss trains them). Multi-sample
  entries (VIMCO) give the negative importance-weighted bound.

  Args:
    params: from :func:`init_params`.
    x: binary data, ``(batch, data_dim)``.
    key: a PRNG key (one per data point is split from it).
    num_samples: samples per data point (``num_samples`` evaluations of the cost).
    estimator: a registry name.
    **options: keyword arguments of the estimator's objective.

  Returns:
    A scalar.
  """
  e = get_estimator(estimator)
  if e.objective is None or not e.accepts("bernoulli"):
    raise ValueError(
      f"estimator {estimator!r} has no objective level for Bernoulli latents; choose one "
      "of 'score_function', 'reinforce_loo', 'arm', 'disarm', 'straight_through', "
      "'gumbel_rao', 'rebar', 'relax', 'vimco'."
    )
  x = jnp.asarray(x)
  if x.ndim != 2:
    raise ValueError(f"x must have shape (batch, data_dim), got {x.shape}.")
  check_key(key)
  kwargs = {**e.options, **options}

  def one(x_i, k):
    q = posterior(params, x_i)
    if e.multi_sample:
      log_joint_i = lambda h: log_joint(params, x_i, h)  # noqa: E731
      return -e.objective(log_joint_i, q, k, num_samples, importance_weighted=True, **kwargs)
    f = cost(params, x_i)
    # The registry's problem-dependent defaults (RELAX's control variate); options win.
    made = e.kwargs(f, "bernoulli", q.logits.shape) if e.setup is not None else {}
    return e.objective(f, q, k, num_samples, **{**made, **kwargs})

  return jnp.mean(jax.vmap(one)(x, jax.random.split(key, x.shape[0])))
