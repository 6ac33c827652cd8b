r"""Score-function (REINFORCE, likelihood-ratio) estimators and the DiCE magic box."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from gradest._src import control_variates as cvs
from gradest._src import core
from gradest._src.base import (
  Array,
  GradEstimate,
  PyTree,
  check_baseline,
  draw_samples,
  tree_scale_per_sample,
  tree_weighted_sum,
)
from gradest._src.distributions import Distribution, as_distribution


def leave_one_out_baseline(values: Array) -> Array:
  r"""The mean of the *other* samples' costs, :math:`b_i = \frac{1}{N-1}\sum_{j\ne i} f_j`.

  Computed along axis 0 with no gradient. Needs at least two samples.

  Args:
    values: the costs, shape ``(N, ...)`` with ``N >= 2``.

  Returns:
    The baselines, the shape of ``values``.

  Examples:
    >>> import jax.numpy as jnp
    >>> leave_one_out_baseline(jnp.array([1.0, 2.0, 3.0])).tolist()
    [2.5, 2.0, 1.5]

  References:
    Kool, van Hoof & Welling, *Buy 4 REINFORCE samples, get a baseline for free!*, 2019.
  """
  n = values.shape[0]
  if n < 2:
    raise ValueError(
      "the leave-one-out baseline needs at least 2 samples along axis 0, got "
      f"{n}; draw more samples or use a constant baseline."
    )
  values = jax.lax.stop_gradient(values)
  return (jnp.sum(values, axis=0, keepdims=True) - values) / (n - 1)


def baselined(values: Array, baseline: Any) -> Array:
  """The learning signal ``values - baseline`` (leave-one-out, a constant, or none).

  Args:
    values: the costs, shape ``(N,)``.
    baseline: ``None``, a scalar, or ``'leave_one_out'`` (see :func:`check_baseline`).

  Returns:
    An array of shape ``(N,)``; the baseline is not differentiated.

  Examples:
    >>> import jax.numpy as jnp
    >>> baselined(jnp.array([1.0, 3.0]), "leave_one_out").tolist()
    [-2.0, 2.0]
  """
  if baseline is None:
    return values
  if isinstance(baseline, str):
    return values - leave_one_out_baseline(values)
  return values - jax.lax.stop_gradient(jnp.asarray(baseline, values.dtype))


def score_function_grad(
  f: Callable[[Array], Array],
  dist_fn: Callable[[PyTree], Any],
  params: PyTree,
  key: Array,
  num_samples: int,
  *,
  baseline: None | float | Array | str = None,
  control_variate: cvs.ControlVariate | None = None,
  cv_coefficient: float | str = 1.0,
  return_per_sample: bool = True,
  sample_sharding: Any = None,
) -> GradEstimate:
  r"""Score-function (REINFORCE) estimate of :math:`\nabla_\theta \mathbb E_{p_\theta}[f(x)]`.

  .. math::
    \hat g = \frac1N \sum_{i=1}^N \big(f(x_i) - b_i\big)\,
      \nabla_\theta \log p_\theta(x_i), \qquad x_i \sim p_\theta .

  Works for any distribution with a differentiable ``log_prob`` (discrete ones
  included) and any ``f``, differentiable or not. Per-sample gradients are computed by
  reverse mode (``vmap`` of ``grad``); their cost is that of ``N`` gradients of
  ``log_prob``.

  Args:
    f: the cost, mapping one sample (``event_shape``) to a scalar. Not differentiated.
    dist_fn: ``params -> distribution`` (a gradest family, or distrax / numpyro).
    params: any pytree of arrays.
    key: a PRNG key.
    num_samples: ``N`` (static).
    baseline: ``None``; a scalar :math:`b` (a constant, or the value of a
      :func:`moving_average_baseline` state); or ``'leave_one_out'``, the mean of the
      other samples' costs (needs ``N >= 2``; unbiased).
    control_variate: a :class:`ControlVariate` such as :func:`delta_method`.
    cv_coefficient: the control variate's coefficient, a number or ``'optimal'``
      (estimated per leaf from an independent pilot draw of ``N`` samples, which
      keeps the estimate unbiased and doubles the cost).
    return_per_sample: if False, ``per_sample`` is ``None`` and the mean gradient comes
      from one backward pass (no ``N x |params|`` array).
    sample_sharding: optional ``jax.sharding.Sharding`` for arrays with a leading
      sample axis (e.g. ``NamedSharding(mesh, P('data'))``); under ``jax.jit`` the
      samples and per-sample gradients are laid out with it.

  Returns:
    A :class:`GradEstimate`: ``grad`` like ``params``; ``per_sample`` with a leading
    ``N`` axis; ``values`` of shape ``(N,)``.

  Raises:
    ValueError: ``num_samples < 1`` (``< 2`` for the leave-one-out baseline), ``f``
      not scalar-valued, an unknown baseline, ``cv_coefficient`` neither a number nor
      ``'optimal'``.
    TypeError: ``dist_fn`` does not return a distribution.

  Examples:
    >>> import jax, jax.numpy as jnp, gradest
    >>> dist_fn = lambda theta: gradest.distributions.Normal(2.0 * theta + 3.0, 1.0)
    >>> est = gradest.score_function_grad(jnp.square, dist_fn, 1.0, jax.random.key(0),
    ...                                   1000, baseline="leave_one_out")
    >>> est.per_sample.shape
    (1000,)

  References:
    Williams, *Simple statistical gradient-following algorithms for connectionist
    reinforcement learning*, 1992. Kool, van Hoof & Welling, *Buy 4 REINFORCE samples,
    get a baseline for free!*, 2019 (leave-one-out).
  """
  loo = check_baseline(baseline)
  setup = core.prepare(
    f,
    dist_fn,
    params,
    key,
    num_samples,
    control_variate=control_variate,
    cv_coefficient=cv_coefficient,
    min_samples=2 if loo else 1,
    why="the leave-one-out baseline needs at least two samples",
  )
  dist, n = setup.dist, setup.num_samples

  def log_prob(p, x):
    return as_distribution(dist_fn(p)).log_prob(x)

  def draw(k):
    _, xs = draw_samples(dist, k, n, sample_sharding)
    xs = jax.lax.stop_gradient(xs)
    values = jax.vmap(f)(xs)
    h = None
    if control_variate is not None:
      h = jax.vmap(lambda x: control_variate.value(dist, x))(xs)
    return xs, values, baselined(values, baseline), h

  def per_sample(k):
    xs, values, weights, h = draw(k)
    s = jax.vmap(jax.grad(log_prob), in_axes=(None, 0))(params, xs)
    h_terms = None if h is None else tree_scale_per_sample(h, s)
    return core.Terms(values, tree_scale_per_sample(weights, s), h_terms)

  def mean(k, coefficient):
    """(1/N) sum_i (w_i - c h_i) grad log p(x_i), without per-sample gradients."""
    xs, values, weights, h = draw(k)
    w = weights if coefficient is None else weights - coefficient * h
    if not isinstance(dist, Distribution):
      return values, jax.grad(lambda p: jnp.mean(w * jax.vmap(log_prob, (None, 0))(p, xs)))(params)
    # Per-sample gradients w.r.t. the distribution's own (event-sized) arrays, contracted
    # with the weights as a dot product, then one pull-back through dist_fn.
    per_sample = jax.vmap(jax.grad(lambda d, x: d.log_prob(x)), (None, 0))(dist, xs)
    cotangent = tree_weighted_sum(w / n, per_sample)
    _, pullback = jax.vjp(lambda p: as_distribution(dist_fn(p)), params)
    return values, pullback(cotangent)[0]

  return core.estimate(
    setup,
    dist_fn,
    params,
    per_sample=per_sample,
    mean=mean,
    control_variate=control_variate,
    cv_coefficient=cv_coefficient,
    return_per_sample=return_per_sample,
  )


# --------------------------------------------------------------------------------------
# Surrogate level.
# --------------------------------------------------------------------------------------


def magic_box(x: Array) -> Array:
  r"""The DiCE operator :math:`\square(x) = \exp(x - \bot(x))`.

  Its value is exactly 1 and :math:`\nabla \square(x) = \square(x) \nabla x`, so
  ``magic_box(log_prob) * cost`` has the value ``cost`` and gives unbiased estimates
  of the gradient **and of all higher derivatives** of :math:`\mathbb E[\text{cost}]`
  under repeated differentiation (``jax.grad`` of ``jax.grad``, ``jax.hessian``).

  Args:
    x: the sum of the log-probabilities of the stochastic nodes the cost depends on.

  Examples:
    >>> import jax.numpy as jnp
    >>> float(magic_box(jnp.array(-3.0)))
    1.0

  References:
    Foerster et al., *DiCE: The Infinitely Differentiable Monte Carlo Estimator*,
    ICML 2018.
  """
  return jnp.exp(x - jax.lax.stop_gradient(x))


def score_function_surrogate(
  cost: Array, log_prob: Array, baseline: None | float | Array | str = None
) -> Array:
  r"""A surrogate whose value is ``cost`` and whose derivatives are the estimator's.

  .. math::
    s = \square(\log p)\, c + \big(1 - \square(\log p)\big)\, b

  The value of ``s`` equals ``cost`` exactly; ``jax.grad`` of ``s.mean()`` is the
  score-function estimate :math:`(c - b)\nabla\log p + \nabla c` (the second term
  where the cost also depends on the parameters directly), and second derivatives are
  the DiCE estimates (the baseline term keeps them unbiased; Mao et al., 2019).

  Args:
    cost: per-sample costs, any shape (typically ``(N,)``), possibly differentiable.
    log_prob: ``log p_theta(x)`` of the same samples, same shape as ``cost``,
      differentiable in the parameters.
    baseline: ``None``, a constant broadcastable to ``cost``, or ``'leave_one_out'``
      (the mean of the other entries along axis 0; needs ``cost.shape[0] >= 2``).
      Never differentiated.

  Returns:
    An array of the shape of ``cost``; reduce it (mean/sum) into the loss.

  Examples:
    >>> import jax, jax.numpy as jnp, gradest
    >>> def loss(mu, key):
    ...   d = gradest.distributions.Normal(mu, 1.0)
    ...   x = jax.lax.stop_gradient(d.sample(key, (64,)))
    ...   return gradest.score_function_surrogate(x**2, d.log_prob(x), "leave_one_out").mean()
    >>> g = jax.grad(loss)(0.5, jax.random.key(0))

  References:
    Foerster et al., *DiCE: The Infinitely Differentiable Monte Carlo Estimator*,
    ICML 2018. Mao et al., *A Baseline for Any Order Gradient Estimation in Stochastic
    Computation Graphs*, ICML 2019.
  """
  cost = jnp.asarray(cost)
  log_prob = jnp.asarray(log_prob)
  if cost.shape != log_prob.shape:
    raise ValueError(
      f"cost and log_prob must have the same shape (one log-probability per cost), got "
      f"{cost.shape} and {log_prob.shape}; sum log_prob over the event axes first."
    )
  if baseline is None:
    return magic_box(log_prob) * cost
  if isinstance(baseline, str):
    check_baseline(baseline)
    if cost.ndim == 0:
      raise ValueError(
        "baseline='leave_one_out' needs a leading sample axis in cost, got a scalar."
      )
    b = leave_one_out_baseline(cost)
  else:
    b = jax.lax.stop_gradient(jnp.asarray(baseline, cost.dtype))
  box = magic_box(log_prob)
  return box * cost + (1.0 - box) * b


def score_function_objective(
  f: Callable[[Array], Array],
  dist: Any,
  key: Array,
  num_samples: int,
  *,
  baseline: None | float | Array | str = None,
  sample_sharding: Any = None,
) -> Array:
  r"""The mean cost over ``num_samples`` samples; its derivatives are the score function's.

  .. math::
    \frac1N \sum_{i=1}^N \Big[\square(\log p_\theta(x_i))\, f(x_i)
      + \big(1 - \square(\log p_\theta(x_i))\big)\, b_i\Big],

  the samples of :func:`score_function_grad` from the same key (never differentiated),
  through :func:`score_function_surrogate`. Its value is the mean cost; ``jax.grad`` with
  respect to the parameters of ``dist`` is the score-function estimate (with the
  baseline), with respect to what ``f`` closes over the mean of ``f``'s gradients, and
  repeated derivatives (``jax.hessian``) are the DiCE estimates.

  Args:
    f: the cost of one sample, scalar; may close over parameters (differentiated).
    dist: a distribution (gradest, distrax or numpyro) built from the parameters.
    key: a PRNG key.
    num_samples: ``N`` (static; ``>= 2`` for ``'leave_one_out'``).
    baseline: as in :func:`score_function_grad`.
    sample_sharding: optional sharding of the leading sample axis.

  Returns:
    A scalar.

  Examples:
    >>> import jax, jax.numpy as jnp, gradest
    >>> loss = lambda mu: gradest.score_function_objective(
    ...   jnp.square, gradest.distributions.Normal(mu, 1.0), jax.random.key(0), 1000,
    ...   baseline="leave_one_out")
    >>> bool(abs(jax.grad(loss)(1.0) - 2.0) < 0.3)  # d/dmu E[x^2] = 2 mu
    True

  References:
    Foerster et al., *DiCE: The Infinitely Differentiable Monte Carlo Estimator*, ICML
    2018.
  """
  loo = check_baseline(baseline)
  setup = core.prepare(
    f,
    lambda _: dist,
    None,
    key,
    num_samples,
    min_samples=2 if loo else 1,
    why="the leave-one-out baseline needs at least two samples",
    dist_name="dist",
  )
  dist = setup.dist
  _, xs = draw_samples(dist, key, setup.num_samples, sample_sharding)
  xs = jax.lax.stop_gradient(xs)
  values = jax.vmap(f)(xs)
  return jnp.mean(score_function_surrogate(values, jax.vmap(dist.log_prob)(xs), baseline))
