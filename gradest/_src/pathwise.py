r"""Pathwise (reparameterization) estimator."""

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
  check_reparameterized,
  sample_keys,
)
from gradest._src.distributions import as_distribution


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
    f: differentiable cost, mapping one sample (``event_shape``) to a scalar.
    dist_fn: ``params -> distribution`` with ``reparameterized`` samples.
    params: any pytree of arrays.
    key: a PRNG key.
    num_samples: ``N`` (static).
    control_variate: a :class:`ControlVariate` (e.g. :func:`delta_method`).
    cv_coefficient: a number or ``'optimal'`` (one per leaf of ``params``, estimated
      from an independent pilot draw of ``N`` samples; see :func:`optimal_coefficient`).
    return_per_sample: if False, one backward pass gives the mean gradient and
      ``per_sample`` is ``None``.
    sample_sharding: optional sharding for arrays with a leading sample axis.

  Returns:
    A :class:`GradEstimate`: ``grad`` like ``params``; ``per_sample`` with a leading
    ``N`` axis; ``values`` of shape ``(N,)``.

  Raises:
    TypeError: the distribution is not reparameterized (e.g. Bernoulli).
    ValueError: ``num_samples < 1``; ``f`` not scalar-valued; ``cv_coefficient``
      neither a number nor ``'optimal'``.

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
  setup = core.prepare(
    f,
    dist_fn,
    params,
    key,
    num_samples,
    control_variate=control_variate,
    cv_coefficient=cv_coefficient,
    check_dist=check_reparameterized,
  )
  dist, n = setup.dist, setup.num_samples

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

  def per_sample(k):
    keys = sample_keys(k, n, sample_sharding)
    values, gf = per_sample_grads(cost, keys)
    gh = None if control_variate is None else per_sample_grads(cv_value, keys)[1]
    return core.Terms(values, gf, gh)

  def mean(k, coefficient):
    """One backward pass through mean_i [f - c h](x_i)."""
    keys = sample_keys(k, n, sample_sharding)
    if coefficient is None:
      values, vjp = jax.vjp(lambda p: jax.vmap(cost, (None, 0))(p, keys), params)
      (grad,) = vjp(jnp.full_like(values, 1.0 / n))
      return values, grad

    def mean_combined(p):
      values = jax.vmap(cost, (None, 0))(p, keys)
      return jnp.mean(values - coefficient * jax.vmap(cv_value, (None, 0))(p, keys)), values

    grad, values = jax.grad(mean_combined, has_aux=True)(params)
    return values, grad

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
  setup = core.prepare(
    f,
    lambda _: dist,
    None,
    key,
    num_samples,
    dist_name="dist",
    check_dist=lambda d, k: check_reparameterized(d, k, "pathwise_objective"),
  )
  dist = setup.dist
  keys = sample_keys(key, setup.num_samples, sample_sharding)
  return jnp.mean(jax.vmap(lambda k: f(dist.sample(k)))(keys))
