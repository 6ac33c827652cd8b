r"""REBAR and RELAX: unbiased estimators with a learned, reparameterized control variate.

For a discrete sample :math:`b = H(z)` of a relaxed variable :math:`z = \ell + \text{noise}`
(``H`` the threshold at 0 for Bernoulli, the one-hot argmax for categorical), and
:math:`\tilde z \sim p(z \mid b)` drawn conditionally and reparameterized in
:math:`\ell`, any differentiable control variate :math:`c_\phi` gives the unbiased

.. math::
  \hat g = \big(f(b) - c_\phi(\tilde z)\big)\,\nabla_\ell \log p_\ell(b)
    + \nabla_\ell c_\phi(z) - \nabla_\ell c_\phi(\tilde z).

Its mean does not depend on :math:`\phi`, so :math:`\phi` is trained to minimize the
variance: :math:`\nabla_\phi \mathrm{Var}(\hat g) = \nabla_\phi \mathbb E\|\hat g\|^2`,
estimated by :math:`\nabla_\phi \frac1N \sum_i \|\hat g_i\|^2` and returned as
``cv_grad``, ready for an optax optimizer (minimize).

* **REBAR** uses :math:`c_\phi(z) = \eta\, f(\mathrm{soft}(z / \lambda))`, with
  :math:`\phi = (\eta, \log\lambda)`: :func:`rebar_control_variate`.
* **RELAX** adds a free-form network: :math:`c_\phi(z) = \eta\, f(\mathrm{soft}(z /
  \lambda)) + r_\rho(z)`: :func:`relax_control_variate`, or any function you write.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradest._src.base import Array, PyTree, as_jax_callable, per_sample_variance, sample_keys
from gradest._src.discrete import (
  check_differentiable,
  get_family,
  perturb,
  prepare_discrete,
)


class RelaxEstimate(NamedTuple):
  """A REBAR / RELAX gradient estimate and the gradient for its control variate.

  Attributes:
    grad: the estimate of the gradient with respect to the logits.
    per_sample: the per-sample estimates, leading axis ``num_samples`` (or ``None``).
    values: ``f`` at each discrete sample, shape ``(num_samples,)``.
    cv_grad: the gradient, with respect to the control variate's parameters, of the
      mean squared norm of the per-sample estimates (the variance up to a constant):
      pass it to an optax optimizer to learn the control variate.
  """

  grad: Array
  per_sample: Array | None
  values: Array
  cv_grad: PyTree

  def variance(self) -> Array:
    """Per-coordinate variance of a single-sample estimate (``ddof=1``)."""
    return per_sample_variance(self.per_sample)


def init_rebar_params(eta: float = 1.0, temperature: float = 0.5) -> dict[str, Array]:
  r"""Initial REBAR control-variate parameters ``{"eta", "log_temperature"}``.

  Examples:
    >>> sorted(init_rebar_params())
    ['eta', 'log_temperature']
  """
  if not temperature > 0:
    raise ValueError(f"temperature must be > 0, got {temperature}.")
  return {
    "eta": jnp.asarray(eta, jnp.float32),
    "log_temperature": jnp.asarray(math.log(temperature), jnp.float32),
  }


def rebar_control_variate(
  f: Callable[[Array], Array], *, family: str = "bernoulli"
) -> Callable[[PyTree, Array], Array]:
  r"""REBAR's control variate :math:`c_\phi(z) = \eta\, f(\mathrm{soft}(z / \lambda))`.

  ``params`` is ``{"eta": scalar, "log_temperature": scalar}`` (see
  :func:`init_rebar_params`); ``soft`` is the sigmoid (Bernoulli) or the softmax over
  the last axis (categorical).
  """
  fam = get_family(family)

  def control_variate(params, z):
    return params["eta"] * f(fam.soft(z, jnp.exp(params["log_temperature"])))

  return control_variate


def relax_control_variate(
  f: Callable[[Array], Array],
  network: Callable[[PyTree, Array], Array],
  *,
  family: str = "bernoulli",
) -> Callable[[PyTree, Array], Array]:
  r"""RELAX's control variate :math:`\eta f(\mathrm{soft}(z/\lambda)) + r_\rho(z)`.

  Args:
    f: the cost (differentiable in its relaxed input).
    network: ``network(rho, z) -> scalar``, any differentiable function of the
      relaxed variable ``z`` (shape of the logits), e.g. a small MLP.
    family: ``"bernoulli"`` or ``"categorical"``.

  Returns:
    ``control_variate(params, z)`` with ``params = {"eta", "log_temperature",
    "network"}`` (``init_rebar_params()`` plus ``"network": rho``).
  """
  rebar = rebar_control_variate(f, family=family)

  def control_variate(params, z):
    return rebar(params, z) + network(params["network"], z)

  return control_variate


def relax_grad(
  f: Callable[[Array], Array],
  logits: Array,
  key: Array,
  num_samples: int,
  *,
  control_variate: Callable[[PyTree, Array], Array],
  cv_params: PyTree,
  family: str = "bernoulli",
  return_per_sample: bool = True,
  sample_sharding: Any = None,
) -> RelaxEstimate:
  r"""The RELAX estimator with a learned control variate ``control_variate(cv_params, z)``.

  See the module docstring for the estimator. It is unbiased for any ``cv_params``;
  ``cv_grad`` trains them to reduce the variance. Each sample costs one evaluation of
  ``f`` and the gradients of the control variate at ``z`` and :math:`\tilde z`
  (and second-order terms for ``cv_grad``).

  Args:
    f: the cost of one discrete sample (only evaluated).
    logits: the logits :math:`\ell`.
    key: a PRNG key.
    num_samples: ``N`` (static).
    control_variate: ``(cv_params, z) -> scalar``, differentiable in both; ``z`` has
      the shape of ``logits`` (pre-threshold logistic / Gumbel-perturbed logits).
    cv_params: its parameters, any pytree of float arrays.
    family: ``"bernoulli"`` or ``"categorical"``.
    return_per_sample: keep the per-sample estimates.
    sample_sharding: optional sharding of the leading sample axis.

  Returns:
    A :class:`RelaxEstimate` ``(grad, per_sample, values, cv_grad)``.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> f = lambda b: jnp.sum((b - 0.45) ** 2)
    >>> cv = relax_control_variate(f, lambda w, z: jnp.dot(w, jnp.tanh(z)))
    >>> params = dict(init_rebar_params(), network=jnp.zeros(3))
    >>> est = relax_grad(f, jnp.zeros(3), jax.random.key(0), 8, control_variate=cv,
    ...                  cv_params=params)
    >>> est.grad.shape, sorted(est.cv_grad)
    ((3,), ['eta', 'log_temperature', 'network'])

  References:
    Grathwohl, Choi, Wu, Roeder & Duvenaud, *Backpropagation through the Void:
    Optimizing Control Variates for Black-Box Gradient Estimation*, ICLR 2018.
  """
  fam, logits, n = prepare_discrete(f, logits, key, num_samples, family)
  try:
    out = jax.eval_shape(
      as_jax_callable(control_variate), cv_params, jax.ShapeDtypeStruct(logits.shape, logits.dtype)
    )
  except Exception as e:
    raise TypeError(
      f"control_variate(cv_params, z) failed for z of the logits' shape {logits.shape}: {e}"
    ) from None
  if getattr(out, "shape", None) != ():
    raise ValueError(
      "control_variate(cv_params, z) must return a scalar, got shape "
      f"{getattr(out, 'shape', None)}."
    )
  keys = sample_keys(key, n, sample_sharding)

  def noise_and_samples(k):
    noise, key_c = perturb(fam, k, logits)
    b = jax.lax.stop_gradient(fam.hard(logits + noise))
    return noise, key_c, b

  noise, key_c, b = jax.vmap(noise_and_samples)(keys)
  values = jax.vmap(f)(b)

  def one(phi, noise, key_c, b, fb):
    z_fn = lambda lg: lg + noise
    zt_fn = lambda lg: fam.conditional(key_c, lg, b)
    c_tilde = control_variate(phi, zt_fn(logits))
    reparam = jax.grad(lambda lg: control_variate(phi, z_fn(lg)) - control_variate(phi, zt_fn(lg)))
    return (fb - c_tilde) * fam.score(logits, b) + reparam(logits)

  def per_sample_fn(phi):
    return jax.vmap(one, (None, 0, 0, 0, 0))(phi, noise, key_c, b, values)

  def mean_square(phi):
    g = per_sample_fn(phi)
    return jnp.mean(jnp.sum(jnp.square(g.reshape(n, -1)), axis=1)), g

  cv_grad, per_sample = jax.grad(mean_square, has_aux=True)(cv_params)
  grad = jnp.mean(per_sample, axis=0)
  return RelaxEstimate(grad, per_sample if return_per_sample else None, values, cv_grad)


def rebar_grad(
  f: Callable[[Array], Array],
  logits: Array,
  key: Array,
  num_samples: int,
  *,
  cv_params: PyTree | None = None,
  family: str = "bernoulli",
  return_per_sample: bool = True,
  sample_sharding: Any = None,
) -> RelaxEstimate:
  r"""The REBAR estimator: RELAX with the control variate :math:`\eta f(\mathrm{soft}(z/\lambda))`.

  ``f`` must be differentiable in its relaxed input (it is called with points in
  :math:`[0, 1]` or on the simplex). ``cv_params`` defaults to
  :func:`init_rebar_params` (:math:`\eta = 1`, :math:`\lambda = 0.5`); learn them with
  ``cv_grad`` (the temperature through ``log_temperature``).

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> f = lambda b: jnp.sum((b - 0.45) ** 2)
    >>> est = rebar_grad(f, jnp.zeros(3), jax.random.key(0), 8)
    >>> est.grad.shape
    (3,)

  References:
    Tucker, Mnih, Maddison, Lawson & Sohl-Dickstein, *REBAR: Low-variance, unbiased
    gradient estimates for discrete latent variable models*, NeurIPS 2017.
  """
  fam, logits, _ = prepare_discrete(f, logits, key, num_samples, family)
  if cv_params is None:
    cv_params = init_rebar_params()
  check_differentiable(f, logits)
  return relax_grad(
    f,
    logits,
    key,
    num_samples,
    control_variate=rebar_control_variate(f, family=fam.name),
    cv_params=cv_params,
    family=family,
    return_per_sample=return_per_sample,
    sample_sharding=sample_sharding,
  )
