r"""Control variates and baselines.

A control variate is a function :math:`h(x)` whose expectation
:math:`m(\theta) = \mathbb E_{p_\theta}[h(x)]` is known in closed form. For any
coefficient :math:`c`,

.. math::
  \nabla_\theta \mathbb E_{p_\theta}[f] = \mathbb E\big[\hat g_f - c\,(\hat g_h -
  \nabla_\theta m(\theta))\big],

where :math:`\hat g_f, \hat g_h` are the same estimator (score function or pathwise)
applied to :math:`f` and :math:`h`. The estimate stays unbiased for every fixed
:math:`c`, and its variance is smallest at
:math:`c^\star = \mathrm{Cov}(\hat g_f, \hat g_h) / \mathrm{Var}(\hat g_h)`.

References:
  Mohamed, Rosca, Figurnov & Mnih, *Monte Carlo Gradient Estimation in Machine
  Learning*, JMLR 2020, section 7.
  Paisley, Blei & Jordan, *Variational Bayesian Inference with Stochastic Search*,
  ICML 2012 (the delta method).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradest._src.base import (
  Array,
  PyTree,
  check_family,
  check_positive_int,
  check_real,
  check_same_structure,
)
from gradest._src.distributions import Distribution, Normal


class ControlVariate(NamedTuple):
  """A control variate: a fixed function of a sample with a closed-form mean.

  Attributes:
    value: ``value(dist, x) -> scalar``, :math:`h(x)` for one sample ``x``. It may
      read constants from ``dist`` but must treat them as fixed (``stop_gradient``):
      :math:`h` is chosen before sampling.
    expected_value: ``expected_value(dist) -> scalar``, :math:`\\mathbb E_{dist}[h]`,
      differentiable in the distribution's parameters.
  """

  value: Callable[[Distribution, Array], Array]
  expected_value: Callable[[Distribution], Array]


def hessian_diagonal(f: Callable[[Array], Array], x: Array, chunk_size: int = 64) -> Array:
  r"""Exact diagonal :math:`\partial^2 f / \partial x_d^2` of the Hessian of a scalar ``f``.

  Uses one Hessian-vector product :math:`\nabla^2 f(x)\, e_d` per coordinate,
  ``chunk_size`` at a time, so memory stays at ``chunk_size * x.size`` and the
  ``D x D`` Hessian is never formed.

  Args:
    f: a twice-differentiable function of ``x`` to a scalar.
    x: the point, any shape.
    chunk_size: Hessian-vector products evaluated together (``>= 1``).

  Returns:
    An array of the shape of ``x``.

  Examples:
    >>> import jax.numpy as jnp, gradest
    >>> gradest.hessian_diagonal(lambda x: jnp.sum(x**3), jnp.array([1.0, 2.0])).tolist()
    [6.0, 12.0]
  """
  chunk_size = check_positive_int(chunk_size, "chunk_size")
  shape, size = x.shape, x.size
  flat = x.reshape(-1)

  def grad_flat(z):
    return jax.grad(lambda y: f(y.reshape(shape)))(z)

  def diag_entry(i):
    e = jax.nn.one_hot(i, size, dtype=flat.dtype)
    return jax.jvp(grad_flat, (flat,), (e,))[1][i]

  diag = jax.lax.map(diag_entry, jnp.arange(size), batch_size=min(chunk_size, size))
  return diag.reshape(shape)


def delta_method(f: Callable[[Array], Array]) -> ControlVariate:
  r"""The delta-method control variate for Gaussian distributions.

  The second-order Taylor expansion of ``f`` at the mean :math:`\mu_0` of the
  Gaussian (held fixed):

  .. math::
    h(x) = f(\mu_0) + \nabla f(\mu_0)^\top (x - \mu_0)
      + \tfrac12 (x - \mu_0)^\top \nabla^2 f(\mu_0) (x - \mu_0),

  whose mean under :math:`\mathcal N(\mu, \mathrm{diag}(\sigma^2))` is
  :math:`f(\mu_0) + \nabla f(\mu_0)^\top(\mu - \mu_0) + \tfrac12 (\mu-\mu_0)^\top
  \nabla^2 f(\mu_0)(\mu-\mu_0) + \tfrac12 \sum_d \partial_{dd} f(\mu_0)\,\sigma_d^2`.
  ``h`` is evaluated with Hessian-vector products (no ``D x D`` matrix); its mean
  needs the Hessian diagonal, ``D`` Hessian-vector products computed once.

  Args:
    f: the cost, one sample to a scalar.

  Returns:
    A :class:`ControlVariate` for :class:`gradest.distributions.Normal` whose ``value``
    maps one sample (the distribution's ``event_shape``) to a scalar.

  Examples:
    >>> import jax, jax.numpy as jnp, gradest
    >>> f = lambda x: jnp.sum(jnp.cos(x))
    >>> est = gradest.score_function_grad(
    ...     f, lambda p: gradest.distributions.Normal(p, 1.0), jnp.zeros(2),
    ...     jax.random.key(0), 100, control_variate=gradest.delta_method(f),
    ...     cv_coefficient="optimal")

  References:
    Paisley, Blei & Jordan, *Variational Bayesian Inference with Stochastic Search*,
    ICML 2012. Mohamed, Rosca, Figurnov & Mnih, *Monte Carlo Gradient Estimation in
    Machine Learning*, JMLR 2020, section 7.
  """

  def _check(dist):
    check_family(
      dist,
      Normal,
      "delta_method",
      "Gaussian distributions (gradest.distributions.Normal)",
      "use a control variate written for the family (see ControlVariate).",
    )

  def value(dist, x):
    _check(dist)
    mu0 = jax.lax.stop_gradient(dist.loc)
    f0, g0 = jax.value_and_grad(f)(mu0)
    dx = x - mu0
    hv = jax.jvp(jax.grad(f), (mu0,), (dx,))[1]
    return f0 + jnp.vdot(g0, dx) + 0.5 * jnp.vdot(dx, hv)

  def expected_value(dist):
    _check(dist)
    mu0 = jax.lax.stop_gradient(dist.loc)
    f0, g0 = jax.value_and_grad(f)(mu0)
    dmu = dist.loc - mu0
    hdmu = jax.jvp(jax.grad(f), (mu0,), (dmu,))[1]
    hdiag = hessian_diagonal(f, mu0)
    return (
      f0
      + jnp.vdot(g0, dmu)
      + 0.5 * jnp.vdot(dmu, hdmu)
      + 0.5 * jnp.sum(hdiag * jnp.square(dist.scale))
    )

  return ControlVariate(value, expected_value)


def optimal_coefficient(per_sample_f: PyTree, per_sample_h: PyTree, eps: float = 1e-12) -> PyTree:
  r"""Variance-minimizing coefficient, one scalar per leaf.

  .. math:: c = \frac{\sum_j \mathrm{Cov}(g_{f,j}, g_{h,j})}{\sum_j \mathrm{Var}(g_{h,j})}

  over the coordinates ``j`` of each leaf, from per-sample gradients with a leading
  sample axis. To keep an estimate unbiased, compute ``c`` from samples independent of
  those it is applied to (the estimators do this with a separate pilot draw).

  Args:
    per_sample_f: per-sample gradients of the cost, leaves of shape ``(N, ...)``.
    per_sample_h: those of the control variate, with the structure and leaf shapes of
      ``per_sample_f``.
    eps: added to the denominator, so a constant ``h`` gives ``c = 0``.

  Returns:
    A pytree like ``per_sample_f`` with one scalar (shape ``()``) per leaf, not
    differentiated.

  Examples:
    >>> import jax.numpy as jnp, gradest
    >>> h = jnp.array([[1.0], [2.0], [3.0]])
    >>> round(float(gradest.optimal_coefficient({"w": 2.0 * h}, {"w": h})["w"]), 4)
    2.0

  References:
    Mohamed, Rosca, Figurnov & Mnih, *Monte Carlo Gradient Estimation in Machine
    Learning*, JMLR 2020, section 7.
  """
  check_same_structure(per_sample_h, per_sample_f, "per_sample_h", "per_sample_f")

  def coeff(gf, gh):
    gf = gf - jnp.mean(gf, axis=0)
    gh = gh - jnp.mean(gh, axis=0)
    c = jnp.sum(gf * gh) / (jnp.sum(gh * gh) + eps)
    return jax.lax.stop_gradient(c)

  return jax.tree.map(coeff, per_sample_f, per_sample_h)


def combine(per_sample_f: PyTree, per_sample_h: PyTree, grad_mean_h: PyTree, coefficient: Any):
  r"""The per-sample control-variate estimate :math:`g_{f,i} - c\,(g_{h,i} - \nabla m)`.

  Args:
    per_sample_f: per-sample gradients of the cost, leaves of shape ``(N, ...)``.
    per_sample_h: those of the control variate, same structure and shapes.
    grad_mean_h: :math:`\nabla_\theta m(\theta)`, leaves of shape ``(...)``.
    coefficient: :math:`c`, a scalar or one scalar per leaf (a pytree like
      ``grad_mean_h``).

  Returns:
    A pytree like ``per_sample_f``.

  Examples:
    >>> import jax.numpy as jnp
    >>> combine(jnp.array([3.0, 5.0]), jnp.array([1.0, 2.0]), jnp.array(1.5), 2.0).tolist()
    [4.0, 4.0]
  """
  if jax.tree.structure(coefficient) != jax.tree.structure(grad_mean_h):
    coefficient = jax.tree.map(lambda _: coefficient, grad_mean_h)
  return jax.tree.map(
    lambda gf, gh, gm, c: gf - c * (gh - gm),
    per_sample_f,
    per_sample_h,
    grad_mean_h,
    coefficient,
  )


# --------------------------------------------------------------------------------------
# Baselines for the score-function estimator.
# --------------------------------------------------------------------------------------


class MovingAverageState(NamedTuple):
  """State of :func:`moving_average_baseline`.

  Attributes:
    value: ``()`` float32, the baseline to use at the next step (the debiased average
      of past costs; 0 before the first update).
    average: ``()`` float32, the exponential moving average before debiasing.
    count: ``()`` int32, the number of updates so far.
  """

  value: Array
  average: Array
  count: Array


class MovingAverageBaseline(NamedTuple):
  """``init() -> state`` and ``update(state, values) -> state``."""

  init: Callable[[], MovingAverageState]
  update: Callable[[MovingAverageState, Array], MovingAverageState]


def moving_average_baseline(decay: float = 0.99, zero_debias: bool = True) -> MovingAverageBaseline:
  r"""An exponential moving average of past costs, as a score-function baseline.

  The baseline used at a step is built only from earlier steps' samples, so it is
  independent of the current samples and the estimator stays unbiased:

  .. math:: \bar b_t = \rho\, \bar b_{t-1} + (1-\rho)\, \tfrac1N \sum_i f(x_i^{(t)}),
     \qquad b_t = \bar b_t / (1 - \rho^t) \ \text{(zero-debiased)}.

  Args:
    decay: :math:`\rho \in [0, 1)`.
    zero_debias: divide by :math:`1-\rho^t`, as Adam does, so early baselines are not
      pulled towards 0.

  Returns:
    A :class:`MovingAverageBaseline` whose states hold ``()`` scalars.

  Examples:
    >>> import jax, jax.numpy as jnp, gradest
    >>> ma = gradest.moving_average_baseline(decay=0.9)
    >>> state = ma.init()
    >>> dist_fn = lambda p: gradest.distributions.Normal(p, 1.0)
    >>> est = gradest.score_function_grad(jnp.square, dist_fn, 0.5, jax.random.key(0), 16,
    ...                                   baseline=state.value)
    >>> state = ma.update(state, est.values)

  References:
    Williams, *Simple statistical gradient-following algorithms for connectionist
    reinforcement learning*, 1992 (reinforcement baselines). Kingma & Ba, *Adam: A
    Method for Stochastic Optimization*, 2015 (zero-debiasing).
  """
  decay = check_real(decay, "decay", minimum=0.0, below=1.0)

  def init() -> MovingAverageState:
    zero = jnp.zeros((), jnp.float32)
    return MovingAverageState(value=zero, average=zero, count=jnp.zeros((), jnp.int32))

  def update(state: MovingAverageState, values: Array) -> MovingAverageState:
    batch_mean = jnp.mean(jax.lax.stop_gradient(values)).astype(jnp.float32)
    average = decay * state.average + (1.0 - decay) * batch_mean
    count = state.count + 1
    value = average / (1.0 - decay ** count.astype(jnp.float32)) if zero_debias else average
    return MovingAverageState(value=value, average=average, count=count)

  return MovingAverageBaseline(init, update)
