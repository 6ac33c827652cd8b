r"""Pathwise (reparameterization) estimator."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from gradest._src import control_variates as cvs
from gradest._src.base import (
  Array,
  GradEstimate,
  PyTree,
  check_key,
  check_num_samples,
  check_scalar_output,
  sample_keys,
  tree_mean,
)
from gradest._src.distributions import as_distribution


def check_reparameterized(dist: Any, key: Array, name: str = "pathwise_grad") -> None:
  sample = jax.eval_shape(dist.sample, key)
  if not getattr(dist, "reparameterized", False) or not jnp.issubdtype(sample.dtype, jnp.floating):
    raise TypeError(
      f"{name} needs a reparameterized distribution (samples differentiable in the "
      f"parameters, e.g. Normal or Gamma), got {type(dist).__name__}; use "
      "score_function_grad for it, or a relaxation for discrete variables."
    )


def pathwise_grad(
  f: Callable[[Array], Array],
  dist_fn: Callable[[PyTree], Any],
  params: PyTree,
  key: Array,
  num_samples: int,
  *,
  control_variate: cvs.ControlVariate | None = None,
  cv_coefficient: float | str = 1.0,
  return_per_sample: bool = True,
  sample_sharding: Any = None,
) -> GradEstimate:
  r"""Pathwise (reparameterization) estimate of :math:`\nabla_\theta \mathbb E_{p_\theta}[f(x)]`.

  .. math::
    \hat g = \frac1N \sum_{i=1}^N \nabla_\theta f\big(x(\varepsilon_i; \theta)\big),
    \qquad \varepsilon_i \sim p(\varepsilon),

  where :math:`x(\varepsilon; \theta)` is the distribution's sampling path: explicit
  for location-scale families (``Normal``: :math:`\mu + \sigma\varepsilon`), implicit
  for others (``Gamma``: ``jax.random.gamma``'s implicit gradient). ``f`` must be
  differentiable. Per-sample gradients come from reverse mode (``vmap`` of ``grad``
  over the per-sample keys).

  Args:
    f: differentiable cost, mapping one sample to a scalar.
    dist_fn: ``params -> distribution`` with ``reparameterized`` samples.
    params: any pytree of arrays.
    key: a PRNG key.
    num_samples: ``N`` (static).
    control_variate: a :class:`ControlVariate` (e.g. :func:`delta_method`).
    cv_coefficient: a number or ``'optimal'`` (estimated from an independent pilot
      draw; see :func:`optimal_coefficient`).
    return_per_sample: if False, one backward pass gives the mean gradient and
      ``per_sample`` is ``None``.
    sample_sharding: optional sharding for arrays with a leading sample axis.

  Returns:
    A :class:`GradEstimate`.

  Raises:
    TypeError: the distribution is not reparameterized (e.g. Bernoulli).
    ValueError: ``num_samples < 1``; ``f`` not scalar-valued.

  Examples:
    >>> import jax, jax.numpy as jnp, gradest
    >>> dist_fn = lambda theta: gradest.distributions.Normal(2.0 * theta + 3.0, 1.0)
    >>> est = gradest.pathwise_grad(jnp.square, dist_fn, 1.0, jax.random.key(0), 1000)
    >>> bool(abs(est.grad - 20.0) < 1.0)   # exact: 2 a (a theta + b) = 20
    True

  References:
    Kingma & Welling, *Auto-Encoding Variational Bayes*, 2014. Rezende, Mohamed &
    Wierstra, *Stochastic Backpropagation*, 2014. Figurnov, Mohamed & Mnih, *Implicit
    Reparameterization Gradients*, 2018.
  """
  n = check_num_samples(num_samples)
  check_key(key)
  cvs.check_coefficient(cv_coefficient)
  dist = as_distribution(dist_fn(params))
  check_reparameterized(dist, key)
  check_scalar_output(f, jax.eval_shape(dist.sample, key))
  optimal = control_variate is not None and isinstance(cv_coefficient, str)
  if optimal:
    key, pilot_key = jax.random.split(key)

  def sample(p, k):
    return as_distribution(dist_fn(p)).sample(k)

  def cost(p, k):
    return f(sample(p, k))

  def cv_value(p, k):
    # The control variate is a fixed function: its constants come from the
    # (non-differentiated) distribution at params.
    return control_variate.value(dist, sample(p, k))

  def per_sample_grads(fn, keys):
    return jax.vmap(jax.value_and_grad(fn), in_axes=(None, 0))(params, keys)

  keys = sample_keys(key, n, sample_sharding)
  if control_variate is None:
    if not return_per_sample:
      values, vjp = jax.vjp(lambda p: jax.vmap(cost, (None, 0))(p, keys), params)
      (grad,) = vjp(jnp.full_like(values, 1.0 / n))
      return GradEstimate(grad, None, values)
    values, per_sample = per_sample_grads(cost, keys)
    return GradEstimate(tree_mean(per_sample), per_sample, values)

  grad_m = jax.grad(lambda p: control_variate.expected_value(as_distribution(dist_fn(p))))(params)
  if not return_per_sample and not optimal:
    # One backward pass through mean_i [f - c h](x_i), plus c grad m.
    def mean_combined(p):
      values = jax.vmap(cost, (None, 0))(p, keys)
      return jnp.mean(values - cv_coefficient * jax.vmap(cv_value, (None, 0))(p, keys)), values

    grad, values = jax.grad(mean_combined, has_aux=True)(params)
    grad = jax.tree.map(lambda a, b: a + cv_coefficient * b, grad, grad_m)
    return GradEstimate(grad, None, values)
  if optimal:
    pkeys = sample_keys(pilot_key, n, sample_sharding)
    coefficient = cvs.optimal_coefficient(
      per_sample_grads(cost, pkeys)[1], per_sample_grads(cv_value, pkeys)[1]
    )
  else:
    coefficient = cv_coefficient
  values, gf = per_sample_grads(cost, keys)
  _, gh = per_sample_grads(cv_value, keys)
  per_sample = cvs.combine(gf, gh, grad_m, coefficient)
  return GradEstimate(tree_mean(per_sample), per_sample if return_per_sample else None, values)


def pathwise_objective(
  f: Callable[[Array], Array],
  dist: Any,
  key: Array,
  num_samples: int,
  *,
  sample_sharding: Any = None,
) -> Array:
  r"""The mean cost :math:`\frac1N\sum_i f(x(\varepsilon_i; \theta))` at reparameterized samples.

  The samples of :func:`pathwise_grad` from the same key; ``jax.grad`` with respect to
  the parameters of ``dist`` is the pathwise estimate, and with respect to what ``f``
  closes over the mean of ``f``'s gradients.

  Examples:
    >>> import jax, jax.numpy as jnp, gradest
    >>> loss = lambda mu: gradest.pathwise_objective(
    ...   jnp.square, gradest.distributions.Normal(mu, 1.0), jax.random.key(0), 1000)
    >>> bool(abs(jax.grad(loss)(1.0) - 2.0) < 0.2)  # d/dmu E[x^2] = 2 mu
    True
  """
  n = check_num_samples(num_samples)
  check_key(key)
  dist = as_distribution(dist, "dist")
  check_reparameterized(dist, key, "pathwise_objective")
  check_scalar_output(f, jax.eval_shape(dist.sample, key))
  keys = sample_keys(key, n, sample_sharding)
  return jnp.mean(jax.vmap(lambda k: f(dist.sample(k)))(keys))
