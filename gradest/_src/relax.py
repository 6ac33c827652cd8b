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
estimated by :math:`\nabla_\phi \frac1N \sum_i \|\hat g_i\|^2` (with :math:`\hat g_i`
the per-sample estimates with respect to the logits) and returned as
``aux["cv_grad"]``, ready for an optax optimizer (minimize). At the objective level
(:func:`relax_objective`) the same gradient is what ``jax.grad`` gives with respect to
``cv_params``, so the control variate trains alongside the model in one loss.

* **REBAR** uses :math:`c_\phi(z) = \eta\, f(\mathrm{soft}(z / \lambda))`, with
  :math:`\phi = (\eta, \log\lambda)`: :func:`rebar_control_variate`.
* **RELAX** adds a free-form network: :math:`c_\phi(z) = \eta\, f(\mathrm{soft}(z /
  \lambda)) + r_\rho(z)`: :func:`relax_control_variate`, or any function you write.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from gradest._src.base import Array, GradEstimate, PyTree, as_jax_callable, sample_keys
from gradest._src.discrete import (
  DiscreteSpec,
  Family,
  Terms,
  estimate_grad,
  estimate_objective,
  get_family,
  hard_samples,
)


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
  f: Callable[[Array], Array], *, family: str
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
  family: str,
) -> Callable[[PyTree, Array], Array]:
  r"""RELAX's control variate :math:`\eta f(\mathrm{soft}(z/\lambda)) + r_\rho(z)`.

  Args:
    f: the cost (differentiable in its relaxed input).
    network: ``network(rho, z) -> scalar``, any differentiable function of the
      relaxed variable ``z`` (shape of the logits), e.g. a small MLP.
    family: ``"bernoulli"`` or ``"categorical"`` (that of the distribution it is used
      with: the relaxation is the sigmoid or the softmax).

  Returns:
    ``control_variate(params, z)`` with ``params = {"eta", "log_temperature",
    "network"}`` (``init_rebar_params()`` plus ``"network": rho``).
  """
  rebar = rebar_control_variate(f, family=family)

  def control_variate(params, z):
    return rebar(params, z) + network(params["network"], z)

  return control_variate


def _check_control_variate(cv_fn: Any, cv_params: PyTree, logits: Array) -> None:
  if not callable(cv_fn):
    raise TypeError(f"cv_fn must be a function (cv_params, z) -> scalar, got {type(cv_fn)}.")
  try:
    out = jax.eval_shape(
      as_jax_callable(cv_fn), cv_params, jax.ShapeDtypeStruct(logits.shape, logits.dtype)
    )
  except Exception as e:  # noqa: BLE001 - any failure of the user's function
    raise TypeError(
      f"cv_fn(cv_params, z) failed for z of the logits' shape {logits.shape}: {e}"
    ) from None
  if getattr(out, "shape", None) != ():
    raise ValueError(
      f"cv_fn(cv_params, z) must return a scalar, got shape {getattr(out, 'shape', None)}."
    )


def relax_logit_grad(
  fam: Family,
  cv_fn: Callable[[PyTree, Array], Array],
  cv_params: PyTree,
  logits: Array,
  noise: Array,
  key_c: Array,
  b: Array,
  fb: Array,
) -> Array:
  r"""One sample's RELAX estimate with respect to the logits (the shared core).

  .. math::
    \hat g = \big(f(b) - c_\phi(\tilde z)\big)\,\nabla_\ell \log p_\ell(b)
      + \nabla_\ell \textstyle\sum c_\phi(z) - \nabla_\ell \sum c_\phi(\tilde z),

  with :math:`z = \ell + \text{noise}` and :math:`\tilde z` drawn from ``key_c`` given
  ``b``, both reparameterized in :math:`\ell`. ``fb`` (the cost at ``b``, not
  differentiated) and ``cv_fn``'s output are a scalar, or one value per leading entry of
  the logits (shape ``logits.shape[:m]``): each entry then weights the score of its own
  variables (Rao-Blackwellization over independent entries, as in a plate). Differentiable
  in ``cv_params``.

  Returns:
    An array of the logits' shape.
  """
  z_fn = lambda lg: lg + noise  # noqa: E731
  zt_fn = lambda lg: fam.conditional(key_c, lg, b)  # noqa: E731

  def difference(lg):
    c_tilde = cv_fn(cv_params, zt_fn(lg))
    return jnp.sum(cv_fn(cv_params, z_fn(lg)) - c_tilde), c_tilde

  reparam, c_tilde = jax.grad(difference, has_aux=True)(logits)
  weight = fb - c_tilde
  weight = jnp.reshape(weight, jnp.shape(weight) + (1,) * (logits.ndim - jnp.ndim(weight)))
  return weight * fam.score(logits, b) + reparam


def _relax_terms(fam: Family, logits, f, key, n, sharding, *, cv_fn, cv_params) -> Terms:
  _check_control_variate(cv_fn, cv_params, logits)
  noise, key_c, b = hard_samples(fam, logits, sample_keys(key, n, sharding))
  values = jax.vmap(f)(b)
  fb = jax.lax.stop_gradient(values)

  def one(phi, noise, key_c, b, fb):
    return relax_logit_grad(fam, cv_fn, phi, logits, noise, key_c, b, fb)

  def mean_square(phi):
    g = jax.vmap(one, (None, 0, 0, 0, 0))(phi, noise, key_c, b, fb)
    return jnp.mean(jnp.sum(jnp.square(g.reshape(n, -1)), axis=1)), g

  cv_grad, per_sample = jax.grad(mean_square, has_aux=True)(cv_params)
  return Terms(per_sample, values, {"cv_grad": cv_grad})


_RELAX = DiscreteSpec("relax_grad")
_REBAR = DiscreteSpec("rebar_grad", differentiable=True)


def relax_grad(
  f: Callable[[Array], Array],
  dist_fn: Callable[[Any], Any],
  params: Any,
  key: Array,
  num_samples: int,
  *,
  cv_fn: Callable[[PyTree, Array], Array],
  cv_params: PyTree,
  return_per_sample: bool = True,
  sample_sharding: Any = None,
) -> GradEstimate:
  r"""The RELAX estimator with a learned control variate ``cv_fn(cv_params, z)``.

  With respect to the logits :math:`\ell`, for :math:`b = H(z)`, :math:`z = \ell +
  \text{noise}` and :math:`\tilde z \sim p(z \mid b)`:

  .. math::
    \hat g = \big(f(b) - c_\phi(\tilde z)\big)\,\nabla_\ell \log p_\ell(b)
      + \nabla_\ell c_\phi(z) - \nabla_\ell c_\phi(\tilde z),

  pulled back to ``params``. Unbiased for any ``cv_params``;
  ``aux["cv_grad"]`` :math:`= \nabla_\phi \frac1N\sum_i \|\hat g_i\|^2` trains them to
  reduce the variance. Each sample costs one evaluation of ``f`` and the gradients of
  the control variate at :math:`z` and :math:`\tilde z` (and second-order terms for
  ``cv_grad``).

  Args:
    f: the cost of one discrete sample (only evaluated).
    dist_fn: ``params -> Bernoulli`` or ``OneHotCategorical``.
    params: any pytree of arrays.
    key: a PRNG key.
    num_samples: ``N`` evaluations of ``f`` (static).
    cv_fn: ``(cv_params, z) -> scalar``, differentiable in both; ``z`` has the shape of
      the logits (logistic- or Gumbel-perturbed logits), e.g.
      :func:`relax_control_variate`.
    cv_params: its parameters, any pytree of float arrays.
    return_per_sample: keep the per-sample estimates.
    sample_sharding: optional sharding of the leading sample axis.

  Returns:
    A :class:`GradEstimate` with ``aux = {"cv_grad": ...}`` (the structure of
    ``cv_params``).

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> from gradest.distributions import Bernoulli
    >>> f = lambda b: jnp.sum((b - 0.45) ** 2)
    >>> cv = relax_control_variate(f, lambda w, z: jnp.dot(w, jnp.tanh(z)), family="bernoulli")
    >>> phi = dict(init_rebar_params(), network=jnp.zeros(3))
    >>> est = relax_grad(f, Bernoulli, jnp.zeros(3), jax.random.key(0), 8, cv_fn=cv,
    ...                  cv_params=phi)
    >>> est.grad.shape, sorted(est.aux["cv_grad"])
    ((3,), ['eta', 'log_temperature', 'network'])

  References:
    Grathwohl, Choi, Wu, Roeder & Duvenaud, *Backpropagation through the Void:
    Optimizing Control Variates for Black-Box Gradient Estimation*, ICLR 2018.
  """
  return estimate_grad(
    _RELAX,
    _relax_terms,
    f,
    dist_fn,
    params,
    key,
    num_samples,
    return_per_sample=return_per_sample,
    sample_sharding=sample_sharding,
    cv_fn=cv_fn,
    cv_params=cv_params,
  )


def _with_cv_training(value: Array, terms: Terms, cv_params: PyTree) -> Array:
  """``value`` plus a term of value 0 whose gradient in ``cv_params`` is ``cv_grad``."""
  cv_grad = jax.lax.stop_gradient(terms.aux["cv_grad"])
  leaves = jax.tree.leaves(
    jax.tree.map(lambda g, p: jnp.sum(g * (p - jax.lax.stop_gradient(p))), cv_grad, cv_params)
  )
  return value + sum(leaves, jnp.zeros((), value.dtype))


def relax_objective(
  f: Callable[[Array], Array],
  dist: Any,
  key: Array,
  num_samples: int,
  *,
  cv_fn: Callable[[PyTree, Array], Array],
  cv_params: PyTree,
  sample_sharding: Any = None,
) -> Array:
  r"""The mean cost; its gradient is RELAX's, and its gradient in ``cv_params`` is ``cv_grad``.

  See :func:`relax_grad`. Differentiate a loss built on it with respect to the model's
  parameters and ``cv_params`` together: the first get the RELAX estimate, the second
  :math:`\nabla_\phi \frac1N\sum_i\|\hat g_i\|^2` (minimize it, e.g. with a separate
  optax optimizer), so the control variate trains alongside the model.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> from gradest.distributions import Bernoulli
    >>> cv = rebar_control_variate(jnp.sum, family="bernoulli")
    >>> loss = lambda lg, phi: relax_objective(jnp.sum, Bernoulli(lg), jax.random.key(0), 8,
    ...                                        cv_fn=cv, cv_params=phi)
    >>> g_logits, g_phi = jax.grad(loss, argnums=(0, 1))(jnp.zeros(2), init_rebar_params())
    >>> g_logits.shape, sorted(g_phi)
    ((2,), ['eta', 'log_temperature'])
  """
  value, terms = estimate_objective(
    _RELAX._replace(name="relax_objective"),
    _relax_terms,
    f,
    dist,
    key,
    num_samples,
    sample_sharding=sample_sharding,
    cv_fn=cv_fn,
    cv_params=cv_params,
  )
  return _with_cv_training(value, terms, cv_params)


def _rebar_cv(fam: Family, f: Callable[[Array], Array], cv_params: PyTree | None):
  return rebar_control_variate(f, family=fam.name), (
    init_rebar_params() if cv_params is None else cv_params
  )


def _rebar_terms(fam: Family, logits, f, key, n, sharding, *, cv_params) -> Terms:
  cv_fn, cv_params = _rebar_cv(fam, f, cv_params)
  return _relax_terms(fam, logits, f, key, n, sharding, cv_fn=cv_fn, cv_params=cv_params)


def rebar_grad(
  f: Callable[[Array], Array],
  dist_fn: Callable[[Any], Any],
  params: Any,
  key: Array,
  num_samples: int,
  *,
  cv_params: PyTree | None = None,
  return_per_sample: bool = True,
  sample_sharding: Any = None,
) -> GradEstimate:
  r"""The REBAR estimator: RELAX with the control variate :math:`\eta f(\mathrm{soft}(z/\lambda))`.

  ``f`` must be differentiable in its relaxed input (it is called with points in
  :math:`[0, 1]` or on the simplex). ``cv_params`` defaults to
  :func:`init_rebar_params` (:math:`\eta = 1`, :math:`\lambda = 0.5`); learn them with
  ``aux["cv_grad"]`` (the temperature through ``log_temperature``). Arguments and
  outputs otherwise as in :func:`relax_grad`.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> from gradest.distributions import Bernoulli
    >>> f = lambda b: jnp.sum((b - 0.45) ** 2)
    >>> rebar_grad(f, Bernoulli, jnp.zeros(3), jax.random.key(0), 8).grad.shape
    (3,)

  References:
    Tucker, Mnih, Maddison, Lawson & Sohl-Dickstein, *REBAR: Low-variance, unbiased
    gradient estimates for discrete latent variable models*, NeurIPS 2017.
  """
  return estimate_grad(
    _REBAR,
    _rebar_terms,
    f,
    dist_fn,
    params,
    key,
    num_samples,
    return_per_sample=return_per_sample,
    sample_sharding=sample_sharding,
    cv_params=cv_params,
  )


def rebar_objective(
  f: Callable[[Array], Array],
  dist: Any,
  key: Array,
  num_samples: int,
  *,
  cv_params: PyTree | None = None,
  sample_sharding: Any = None,
) -> Array:
  r"""The mean cost; its gradient is REBAR's (and ``cv_grad`` in ``cv_params``).

  See :func:`rebar_grad` and :func:`relax_objective`.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> from gradest.distributions import Bernoulli
    >>> loss = lambda lg: rebar_objective(jnp.sum, Bernoulli(lg), jax.random.key(0), 8)
    >>> jax.grad(loss)(jnp.zeros(2)).shape
    (2,)
  """
  value, terms = estimate_objective(
    _REBAR._replace(name="rebar_objective"),
    _rebar_terms,
    f,
    dist,
    key,
    num_samples,
    sample_sharding=sample_sharding,
    cv_params=cv_params,
  )
  return value if cv_params is None else _with_cv_training(value, terms, cv_params)
