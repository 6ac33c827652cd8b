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
from gradest._src.discrete import (
  DiscreteSpec,
  Family,
  Terms,
  check_discrete,
  estimate_grad,
  hard_samples,
)

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


def _log_weights(fam: Family, logits, b, values, importance_weighted):
  log_q = jax.vmap(fam.log_prob, (None, 0))(logits, b)
  return (values - log_q if importance_weighted else values), log_q


def _vimco_terms(fam: Family, logits, f, key, k, sharding, *, importance_weighted) -> Terms:
  _, _, b = hard_samples(fam, logits, sample_keys(key, k, sharding))
  values = jax.vmap(f)(b)
  fixed = jax.lax.stop_gradient(values)
  log_w = _log_weights(fam, logits, b, fixed, importance_weighted)[0]
  weights = jax.nn.softmax(log_w)
  signal = jax.nn.logsumexp(log_w) - math.log(k) - _local_baselines(log_w)

  def term(b_k, w_k, weight_k, signal_k):
    # d/dl [weight_k * w_k(l) + signal_k * log q(b_k; l)]: sample k's share of the gradient.
    def share(lg):
      log_q = fam.log_prob(lg, b_k)
      return weight_k * (w_k - log_q if importance_weighted else 0.0) + signal_k * log_q

    return jax.grad(share)(logits)

  per_sample = k * jax.vmap(term)(b, fixed, weights, signal)
  return Terms(per_sample, log_w if importance_weighted else values)


_VIMCO = DiscreteSpec("vimco_grad", minimum=2, why=_WHY)


def vimco_grad(
  f: Callable[[Array], Array],
  dist_fn: Callable[[Any], Any],
  params: Any,
  key: Array,
  num_samples: int,
  *,
  importance_weighted: bool = False,
  return_per_sample: bool = True,
  sample_sharding: Any = None,
) -> GradEstimate:
  r"""VIMCO estimate of :math:`\nabla_\theta \mathbb E\big[\log\frac1K\sum_k e^{w_k}\big]`.

  ``K = num_samples`` samples :math:`b_k \sim p_\theta` enter **one** multi-sample
  objective, with log-weights :math:`w_k = f(b_k)`, or
  :math:`w_k = f(b_k) - \log p_\theta(b_k)` when ``importance_weighted=True`` (then
  ``f(b) = log p(x, b)`` gives the importance-weighted bound of Burda et al.). With
  :math:`\hat L = \log\frac1K\sum_k e^{w_k}` and the leave-one-out
  :math:`\hat L_{-k}` (:math:`w_k` replaced by the mean of the others),

  .. math::
    \hat g = \sum_k \Big[\big(\hat L - \hat L_{-k}\big)\nabla \log p_\theta(b_k)
      + \tilde w_k \nabla w_k\Big], \qquad \tilde w_k = \mathrm{softmax}(w)_k .

  Args:
    f: the log-weight of one sample (only evaluated).
    dist_fn: ``params -> Bernoulli`` or ``OneHotCategorical``.
    params: any pytree of arrays.
    key: a PRNG key.
    num_samples: ``K >= 2`` (static).
    importance_weighted: subtract :math:`\log p_\theta(b_k)` from the log-weights.
    return_per_sample: keep the ``K`` terms.
    sample_sharding: optional sharding of the leading sample axis.

  Returns:
    A :class:`GradEstimate`: ``per_sample`` holds ``K`` times each sample's term in the
    sum above (their mean is ``grad``; they are not independent, so ``variance()`` is
    theirs, not that of an independent single-sample estimate), ``values`` the ``K``
    log-weights (the objective is their ``logsumexp - log K``).

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> from gradest.distributions import Bernoulli
    >>> f = lambda b: -jnp.sum((b - 0.45) ** 2)
    >>> est = vimco_grad(f, Bernoulli, jnp.zeros(3), jax.random.key(0), 5)
    >>> est.grad.shape, est.per_sample.shape
    ((3,), (5, 3))

  References:
    Mnih & Rezende, *Variational Inference for Monte Carlo Objectives*, ICML 2016.
  """
  return estimate_grad(
    _VIMCO,
    _vimco_terms,
    f,
    dist_fn,
    params,
    key,
    num_samples,
    return_per_sample=return_per_sample,
    sample_sharding=sample_sharding,
    importance_weighted=importance_weighted,
  )


def vimco_objective(
  f: Callable[[Array], Array],
  dist: Any,
  key: Array,
  num_samples: int,
  *,
  importance_weighted: bool = False,
  sample_sharding: Any = None,
) -> Array:
  r"""The multi-sample objective :math:`\log\frac1K\sum_k e^{w_k}`; its gradient is VIMCO's.

  The samples of :func:`vimco_grad` from the same key, through :func:`vimco_surrogate`:
  gradients with respect to the parameters of ``dist`` are the VIMCO estimate, with
  respect to what ``f`` closes over (a decoder) the exact gradient of the objective at
  the samples.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> from gradest.distributions import Bernoulli
    >>> f = lambda b: -jnp.sum(b)
    >>> loss = lambda lg: vimco_objective(f, Bernoulli(lg), jax.random.key(0), 4)
    >>> jax.grad(loss)(jnp.zeros(2)).shape
    (2,)
  """
  fam, logits, k = check_discrete(
    _VIMCO._replace(name="vimco_objective"), f, dist, key, num_samples, "dist"
  )
  _, _, b = hard_samples(fam, jax.lax.stop_gradient(logits), sample_keys(key, k, sample_sharding))
  log_w, log_q = _log_weights(fam, logits, b, jax.vmap(f)(b), importance_weighted)
  return vimco_surrogate(log_w, log_q)
