r"""VIMCO: score-function gradients of multi-sample objectives with per-sample baselines.

For ``K`` samples :math:`b_k \sim q_\ell` and log-weights :math:`w_k` (for the
importance-weighted bound, :math:`w_k = \log p(x, b_k) - \log q_\ell(b_k)`), the
objective is :math:`\hat L = \log \frac1K \sum_k e^{w_k}` and the VIMCO estimate of
:math:`\nabla_\ell \mathbb E[\hat L]` is

.. math::
  \sum_k \big(\hat L - \hat L_{-k}\big)\,\nabla_\ell \log q_\ell(b_k)
    + \sum_k \tilde\omega_k \nabla_\ell w_k, \qquad
  \hat L_{-k} = \log \frac1K \Big(\sum_{j \ne k} e^{w_j} + e^{\frac{1}{K-1}
  \sum_{j\ne k} w_j}\Big),

with :math:`\tilde\omega_k = e^{w_k} / \sum_j e^{w_j}`. The baseline
:math:`\hat L_{-k}` replaces sample ``k`` by the geometric mean of the others; it does
not depend on :math:`b_k`, so the estimate is unbiased.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from gradest._src.base import Array, GradEstimate, sample_keys
from gradest._src.discrete import perturb, prepare_discrete

_WHY = "VIMCO's leave-one-out baselines need at least two samples"


def _local_baselines(log_weights: Array) -> Array:
  r""":math:`\hat L_{-k}` for every ``k`` (no gradient), shape of ``log_weights``."""
  k = log_weights.shape[0]
  lw = jax.lax.stop_gradient(log_weights)
  mean_others = (jnp.sum(lw, axis=0, keepdims=True) - lw) / (k - 1)
  eye = jnp.eye(k, dtype=bool).reshape((k, k) + (1,) * (lw.ndim - 1))
  # replaced[k, j] = w_j for j != k, and the geometric-mean stand-in for j == k.
  replaced = jnp.where(eye, mean_others[:, None], lw[None, :])
  return jax.nn.logsumexp(replaced, axis=1) - math.log(k)


def vimco_surrogate(log_weights: Array, log_probs: Array) -> Array:
  r"""A surrogate whose value is :math:`\log\frac1K\sum_k e^{w_k}` and whose gradient is VIMCO.

  Args:
    log_weights: :math:`w_k`, shape ``(K,) + batch`` with ``K >= 2`` samples along axis
      0. Keep any differentiable dependence on the parameters (for the importance
      weighted bound, :math:`w_k = \log p(x, b_k) - \log q(b_k)` with its gradient).
    log_probs: :math:`\log q(b_k)` of the same samples, same shape, differentiable.

  Returns:
    The objective, shape ``batch``; ``jax.grad`` of its sum is the VIMCO estimate.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> float(vimco_surrogate(jnp.zeros(4), jnp.zeros(4)))
    0.0

  References:
    Mnih & Rezende, *Variational Inference for Monte Carlo Objectives*, ICML 2016.
  """
  log_weights = jnp.asarray(log_weights)
  log_probs = jnp.asarray(log_probs)
  if log_weights.shape != log_probs.shape:
    raise ValueError(
      f"log_weights and log_probs must have the same shape, got {log_weights.shape} and "
      f"{log_probs.shape}."
    )
  if log_weights.ndim < 1 or log_weights.shape[0] < 2:
    raise ValueError(
      f"log_weights needs a leading sample axis of size K >= 2 ({_WHY}), got shape "
      f"{log_weights.shape}."
    )
  k = log_weights.shape[0]
  objective = jax.nn.logsumexp(log_weights, axis=0) - math.log(k)
  signal = jax.lax.stop_gradient(objective)[None] - _local_baselines(log_weights)
  centered = log_probs - jax.lax.stop_gradient(log_probs)  # value 0, gradient d log q
  return objective + jnp.sum(jax.lax.stop_gradient(signal) * centered, axis=0)


def vimco_grad(
  f: Callable[[Array], Array],
  logits: Array,
  key: Array,
  num_samples: int,
  *,
  family: str = "bernoulli",
  importance_weighted: bool = False,
  sample_sharding: Any = None,
) -> GradEstimate:
  r"""VIMCO estimate of :math:`\nabla_\ell \mathbb E\big[\log\frac1K\sum_k e^{w_k}\big]`.

  ``K = num_samples`` samples :math:`b_k \sim p_\ell` enter **one** multi-sample
  objective, with log-weights :math:`w_k = f(b_k)`, or
  :math:`w_k = f(b_k) - \log p_\ell(b_k)` when ``importance_weighted=True`` (then
  ``f(b) = log p(x, b)`` gives the importance-weighted bound of Burda et al.).

  Args:
    f: the log-weight of one sample (only evaluated).
    logits: the logits :math:`\ell` of the sampling distribution.
    key: a PRNG key.
    num_samples: ``K >= 2`` (static).
    family: ``"bernoulli"`` or ``"categorical"``.
    importance_weighted: subtract :math:`\log p_\ell(b_k)` from the log-weights.
    sample_sharding: optional sharding of the leading sample axis.

  Returns:
    A :class:`GradEstimate` with ``per_sample=None`` (the ``K`` terms are not
    independent: for the variance, ``jax.vmap`` the estimator over keys) and ``values``
    the ``K`` log-weights (the objective is their ``logsumexp - log K``).

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> f = lambda b: -jnp.sum((b - 0.45) ** 2)
    >>> vimco_grad(f, jnp.zeros(3), jax.random.key(0), 5).grad.shape
    (3,)

  References:
    Mnih & Rezende, *Variational Inference for Monte Carlo Objectives*, ICML 2016.
  """
  fam, logits, k = prepare_discrete(f, logits, key, num_samples, family, 2, _WHY)
  keys = sample_keys(key, k, sample_sharding)
  b = jax.vmap(lambda kk: fam.hard(logits + perturb(fam, kk, logits)[0]))(keys)
  values = jax.vmap(f)(b)

  def surrogate(lg):
    log_q = jax.vmap(fam.log_prob, (None, 0))(lg, b)
    log_w = values - log_q if importance_weighted else values
    return vimco_surrogate(log_w, log_q), log_w

  grad, log_w = jax.grad(surrogate, has_aux=True)(logits)
  return GradEstimate(grad, None, jax.lax.stop_gradient(log_w))
