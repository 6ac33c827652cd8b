r"""The pipeline shared by the continuous gradient estimators.

Every continuous estimator (score function, pathwise, measure-valued) estimates
:math:`\nabla_\theta \mathbb E_{p_\theta}[f(x)]` in the same four steps:

1. **prepare** (:func:`prepare`): check ``num_samples``, ``key`` and the control-variate
   coefficient, build the distribution at ``params``, check that ``f`` maps one sample
   to a real scalar, and split off a pilot key when the coefficient is ``'optimal'``;
2. **sample and evaluate**: the estimator draws ``N`` samples from ``key`` and
   evaluates ``f`` (and the control variate :math:`h`) on them;
3. **weight**: it turns the evaluations into per-sample gradient terms
   (:class:`Terms`), or, for the mean alone, into one mean gradient;
4. **reduce** (:func:`estimate`, :func:`reduce_terms`): the terms are combined with the
   control variate,

   .. math::
     \hat g_i = g_{f,i} - c\,\big(g_{h,i} - \nabla_\theta \mathbb E_{p_\theta}[h]\big),

   with a fixed :math:`c` or the variance-minimizing one estimated from an independent
   pilot draw (:func:`gradest.optimal_coefficient`), and averaged over the samples.

An estimator supplies step 2 and 3 as two functions of a key (:func:`estimate`'s
``per_sample`` and ``mean``) and this module does the rest, so every estimator checks its
arguments, draws its pilot and combines its control variate in the same way.

References:
  Mohamed, Rosca, Figurnov & Mnih, *Monte Carlo Gradient Estimation in Machine
  Learning*, JMLR 2020, sections 4-7.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax

from gradest._src import control_variates as cvs
from gradest._src.base import (
  Array,
  GradEstimate,
  PyTree,
  check_cv_coefficient,
  check_key,
  check_num_samples,
  check_scalar_output,
  tree_mean,
)
from gradest._src.distributions import as_distribution

__all__ = [
  "Setup",
  "Terms",
  "estimate",
  "expected_value_grad",
  "prepare",
  "reduce_terms",
]


class Setup(NamedTuple):
  """What :func:`prepare` returns.

  Attributes:
    dist: the distribution at ``params`` (``as_distribution(dist_fn(params))``).
    num_samples: ``N``, a Python int.
    key: the key of the estimate's own samples.
    pilot_key: the key of the pilot draw that estimates an ``'optimal'`` control-variate
      coefficient, independent of ``key``; ``None`` otherwise.
  """

  dist: Any
  num_samples: int
  key: Array
  pilot_key: Array | None


class Terms(NamedTuple):
  """The per-sample gradient terms of one draw of ``N`` samples.

  Attributes:
    values: ``(N,)``, the cost at each sample.
    f: the per-sample gradient terms of ``f``, a pytree like ``params`` with a leading
      ``N`` axis on every leaf (their mean is the estimate without control variate).
    h: the same terms for the control variate :math:`h`, or ``None`` without one.
    f_mean: the mean of ``f`` over the samples when the estimator has it more cheaply
      or exactly than an average of ``f`` (e.g. one pull-back of the mean); ``None``
      to average ``f``.
  """

  values: Array
  f: PyTree
  h: PyTree | None = None
  f_mean: PyTree | None = None


def prepare(
  f: Callable[[Array], Array],
  dist_fn: Callable[[PyTree], Any],
  params: PyTree,
  key: Array,
  num_samples: int,
  *,
  control_variate: cvs.ControlVariate | None = None,
  cv_coefficient: Any = 1.0,
  min_samples: int = 1,
  why: str = "",
  check_dist: Callable[[Any, Array], None] | None = None,
  dist_name: str = "dist_fn(params)",
) -> Setup:
  """Checks an estimator's arguments and builds what its pipeline needs.

  Args:
    f: the cost, one sample to a real scalar.
    dist_fn: ``params -> distribution``.
    params: any pytree of arrays.
    key: a PRNG key.
    num_samples: ``N`` (static).
    control_variate: the estimator's control variate, or ``None``.
    cv_coefficient: a number or ``'optimal'``.
    min_samples: the smallest ``num_samples`` the estimator accepts.
    why: why ``min_samples`` is needed, for the error message.
    check_dist: ``check_dist(dist, key)`` raises if the estimator cannot use the
      distribution; it runs before ``f`` is traced on a sample.
    dist_name: how errors name the distribution (``"dist"`` at the objective level).

  Returns:
    A :class:`Setup`.

  Raises:
    ValueError: ``num_samples < min_samples``, a bad ``key`` or ``cv_coefficient``,
      ``f`` not scalar-valued.
    TypeError: ``num_samples`` not an int, ``dist_fn`` not returning a distribution.

  Examples:
    >>> import jax, jax.numpy as jnp, gradest
    >>> from gradest._src import core
    >>> setup = core.prepare(jnp.square, lambda m: gradest.distributions.Normal(m, 1.0),
    ...                      0.5, jax.random.key(0), 8)
    >>> setup.num_samples, setup.pilot_key is None
    (8, True)
  """
  n = check_num_samples(num_samples, min_samples, why)
  check_key(key)
  check_cv_coefficient(cv_coefficient)
  dist = as_distribution(dist_fn(params), dist_name)
  if check_dist is not None:
    check_dist(dist, key)
  check_scalar_output(f, jax.eval_shape(dist.sample, key))
  pilot_key = None
  if control_variate is not None and isinstance(cv_coefficient, str):
    key, pilot_key = jax.random.split(key)
  return Setup(dist, n, key, pilot_key)


def expected_value_grad(
  control_variate: cvs.ControlVariate, dist_fn: Callable[[PyTree], Any], params: PyTree
) -> PyTree:
  r""":math:`\nabla_\theta \mathbb E_{p_\theta}[h]`, the gradient of the control variate's mean.

  Args:
    control_variate: a :class:`gradest.ControlVariate`.
    dist_fn: ``params -> distribution``.
    params: any pytree of arrays.

  Returns:
    A pytree like ``params``.

  Examples:
    >>> import jax.numpy as jnp, gradest
    >>> from gradest._src import core
    >>> cv = gradest.delta_method(jnp.square)
    >>> float(core.expected_value_grad(cv, lambda m: gradest.distributions.Normal(m, 1.0), 2.0))
    4.0
  """
  return jax.grad(lambda p: control_variate.expected_value(as_distribution(dist_fn(p))))(params)


def reduce_terms(terms: Terms, return_per_sample: bool) -> GradEstimate:
  r"""The estimate :math:`\frac1N \sum_i g_{f,i}` of a draw without control variate.

  Args:
    terms: the draw's :class:`Terms` (``terms.h`` is ignored).
    return_per_sample: keep the per-sample terms in the result.

  Returns:
    A :class:`GradEstimate` whose ``per_sample`` is ``terms.f`` or ``None``.

  Examples:
    >>> import jax.numpy as jnp
    >>> from gradest._src import core
    >>> est = core.reduce_terms(core.Terms(jnp.zeros(2), jnp.array([1.0, 3.0])), False)
    >>> float(est.grad), est.per_sample
    (2.0, None)
  """
  grad = tree_mean(terms.f) if terms.f_mean is None else terms.f_mean
  return GradEstimate(grad, terms.f if return_per_sample else None, terms.values)


def _add_scaled(tree: PyTree, coefficient: Any, other: PyTree) -> PyTree:
  return jax.tree.map(lambda a, b: a + coefficient * b, tree, other)


def estimate(
  setup: Setup,
  dist_fn: Callable[[PyTree], Any],
  params: PyTree,
  *,
  per_sample: Callable[[Array], Terms],
  mean: Callable[[Array, Any], tuple[Array, PyTree]] | None = None,
  control_variate: cvs.ControlVariate | None = None,
  cv_coefficient: Any = 1.0,
  return_per_sample: bool = True,
) -> GradEstimate:
  r"""Runs an estimator's draw(s), combines the control variate and reduces.

  .. math::
    \hat g = \frac1N \sum_{i=1}^N g_{f,i} - c\,\Big(\frac1N \sum_{i=1}^N g_{h,i} -
      \nabla_\theta \mathbb E_{p_\theta}[h]\Big)

  (the second term only with a control variate). With ``cv_coefficient='optimal'``,
  :math:`c` is :func:`gradest.optimal_coefficient` of a pilot draw from
  ``setup.pilot_key`` (one scalar per leaf of ``params``), which keeps the estimate
  unbiased and doubles the cost.

  Args:
    setup: from :func:`prepare`.
    dist_fn: ``params -> distribution``.
    params: any pytree of arrays.
    per_sample: ``per_sample(key) -> Terms``: the estimator's draw of ``N`` samples from
      ``key`` and their per-sample gradient terms (``Terms.h`` with a control variate).
    mean: optional fast path for the mean alone: ``mean(key, c) -> (values, grad)``,
      where ``grad`` is :math:`\frac1N\sum_i (g_{f,i} - c\, g_{h,i})` (just
      :math:`g_f` when ``c`` is ``None``), from the same samples as ``per_sample(key)``
      and typically one backward pass. Used when ``return_per_sample`` is False and the
      coefficient is fixed.
    control_variate: a :class:`gradest.ControlVariate`, or ``None``.
    cv_coefficient: a number or ``'optimal'``.
    return_per_sample: keep the per-sample gradients in the result.

  Returns:
    A :class:`GradEstimate`: ``grad`` like ``params``, ``per_sample`` with a leading
    ``N`` axis (or ``None``), ``values`` of shape ``(N,)``.

  Examples:
    >>> import jax, jax.numpy as jnp, gradest
    >>> from gradest._src import core
    >>> dist_fn = lambda m: gradest.distributions.Normal(m, 1.0)
    >>> setup = core.prepare(jnp.square, dist_fn, 0.5, jax.random.key(0), 100)
    >>> def per_sample(key):   # the pathwise estimator of E[x^2]
    ...   eps = jax.random.normal(key, (100,))
    ...   return core.Terms(jnp.square(0.5 + eps), 2.0 * (0.5 + eps))
    >>> est = core.estimate(setup, dist_fn, 0.5, per_sample=per_sample)
    >>> est.per_sample.shape
    (100,)
  """
  if control_variate is None:
    if not return_per_sample and mean is not None:
      values, grad = mean(setup.key, None)
      return GradEstimate(grad, None, values)
    return reduce_terms(per_sample(setup.key), return_per_sample)

  grad_m = expected_value_grad(control_variate, dist_fn, params)
  if setup.pilot_key is None:
    coefficient = cv_coefficient
    if not return_per_sample and mean is not None:
      values, grad = mean(setup.key, coefficient)
      return GradEstimate(_add_scaled(grad, coefficient, grad_m), None, values)
  else:
    pilot = per_sample(setup.pilot_key)
    coefficient = cvs.optimal_coefficient(pilot.f, pilot.h)
  terms = per_sample(setup.key)
  combined = cvs.combine(terms.f, terms.h, grad_m, coefficient)
  return GradEstimate(tree_mean(combined), combined if return_per_sample else None, terms.values)
