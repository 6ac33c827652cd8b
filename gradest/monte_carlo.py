r"""Drop-in replacement for ``optax.monte_carlo`` (removed in optax 0.2.7).

optax 0.2.6 was the last release with ``optax.monte_carlo``: score-function, pathwise
and measure-valued jacobians, the delta-method and moving-average control variates,
and ``control_variates_jacobians``. This module keeps that API (the names, argument
names and order, defaults, return structures and control-variate state layout) on top
of gradest's estimators, so that migrating is changing the import:

.. code-block:: python

  # Before (optax <= 0.2.6)
  from optax import monte_carlo
  from optax._src.utils import multi_normal

  # After
  from gradest import monte_carlo
  from gradest.monte_carlo import multi_normal

  params = [jnp.zeros(3), jnp.zeros(3)]             # [loc, log_scale]
  jacobians = monte_carlo.score_function_jacobians(
      lambda x: jnp.sum(x**2), params, multi_normal, jax.random.PRNGKey(0), 1000)
  grads = [j.mean(axis=0) for j in jacobians]       # one (3,) array per param

It is the only gradest module that keeps optax's argument names (``function``,
``dist_builder``, ``rng``); the rest of gradest uses ``f``, ``dist_fn`` and ``key``.

Conventions kept from optax:

* ``params`` is a sequence (tuple or list) and the distribution is
  ``dist_builder(*params)``.
* The estimators return one ``(num_samples,) + param.shape`` array per parameter:
  in the container of ``params`` for the score-function and pathwise estimators, in a
  list for the measure-valued estimator and for ``control_variates_jacobians``. The
  mean over the first axis is the gradient; the spread across it measures the
  estimator's variance.
* A control variate is the triple ``(control_variate(params, sample, state),
  expected_value(params, state), update_state(params, samples, state))``; user-defined
  triples work unchanged.
* ``dist_builder`` may return any object with optax's distribution protocol,
  ``sample(shape, key=key)`` and ``log_prob(x)`` (joint over one event), as well as
  gradest, distrax and numpyro distributions.

Differences from optax:

* **Sample streams.** Like every gradest estimator, sample ``i`` is drawn from the key
  ``jax.random.split(rng, num_samples)[i]``, where optax drew all samples with one
  ``dist.sample((num_samples,), key=rng)``. The same ``rng`` therefore gives different
  samples: results agree with optax in distribution (same means and variances), not
  bit for bit.
* **Reverse-mode per-sample gradients.** Jacobians are ``vmap`` of ``grad`` over
  samples instead of ``jax.jacfwd`` over the parameters, so the cost no longer grows
  with the number of parameter coordinates times the number of samples.
* **measure_valued_jacobians** accepts any builder that returns a Gaussian (this
  module's :func:`multi_normal`, optax's ``multi_normal``, gradest's ``Normal``,
  distrax / numpyro normals); the jacobians are with respect to the builder's own
  arguments (the chain rule runs through the builder), which for ``multi_normal`` are
  optax's ``[d/d loc, d/d log_scale]``. Other families raise a ``ValueError``.
* **control_delta_method** evaluates the Taylor expansion with Hessian-vector
  products (no ``D x D`` Hessian per sample; one Hessian diagonal for the expected
  value) and works for a location of any shape, not only 1-D.
* **control_variates_jacobians** accepts parameters of any shapes (optax asserted
  ``(D,)`` for every parameter) and returns one array per leaf of ``params``. The
  coefficients of ``estimate_cv_coeffs=True`` come from samples drawn with a key
  derived by ``jax.random.fold_in`` (optax used ``jax.random.split(rng)[0]``, which in
  gradest's stream is the key of sample 0), so they stay independent of the samples
  they are applied to.
* **Errors.** ``num_samples < 1``, a non-scalar ``function``, ``params`` that is not
  a sequence, or a non-reparameterized distribution in the pathwise estimator raise a
  ``ValueError``/``TypeError`` at trace time. Nothing emits deprecation warnings.
* :func:`multi_normal` returns a :class:`MultiNormalDiagFromLogScale` that is a JAX
  pytree (it can cross ``jax.jit`` / ``jax.vmap`` boundaries).

Everything here runs under ``jax.jit`` (with ``function``, ``dist_builder``,
``num_samples`` and the control-variate factories static) and ``jax.vmap`` over ``rng``.

References:
  Mohamed, Rosca, Figurnov & Mnih, *Monte Carlo Gradient Estimation in Machine
  Learning*, JMLR 2020.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from gradest._src.base import Array, check_num_samples, check_positive_int, draw_samples
from gradest._src.control_variates import hessian_diagonal, optimal_coefficient
from gradest._src.distributions import Distribution, Normal, as_distribution, converts_to_normal
from gradest._src.measure_valued import measure_valued_grad
from gradest._src.pathwise import pathwise_grad
from gradest._src.score_function import score_function_grad

__all__ = [
  "ControlVariate",
  "MultiNormalDiagFromLogScale",
  "control_delta_method",
  "control_variates_jacobians",
  "estimate_control_variate_coefficients",
  "measure_valued_jacobians",
  "moving_avg_baseline",
  "multi_normal",
  "pathwise_jacobians",
  "score_function_jacobians",
]

Params = Sequence[Any]
CvState = Any
ComputeCv = Callable[[Params, Array, CvState], Array]
CvExpectedValue = Callable[[Params, CvState], Array]
UpdateCvState = Callable[[Params, Array, CvState], CvState]
ControlVariate = tuple[ComputeCv, CvExpectedValue, UpdateCvState]

# fold_in data of the key for the coefficient-estimation samples. It is far above any
# sample index, so the key is never one of jax.random.split(rng, num_samples).
_COEFFICIENT_STREAM = 0x7FFFFFFF
_FOREIGN_ROOTS = frozenset({"distrax", "numpyro", "tensorflow_probability", "tfp"})


# --------------------------------------------------------------------------------------
# The diagonal Gaussian of optax's utils.multi_normal.
# --------------------------------------------------------------------------------------


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class MultiNormalDiagFromLogScale:
  r"""Diagonal Gaussian :math:`\mathcal N(\mathrm{loc}, \mathrm{diag}(e^{2\,\mathrm{log\_scale}}))`.

  The interface of optax 0.2.6's ``utils.MultiNormalDiagFromLogScale``: ``sample(shape,
  key)`` (shape first), ``log_prob(x)`` summed over the parameter axes, and the
  ``params`` / ``log_scale`` properties. The whole parameter array is one event.
  Every estimator converts it to :class:`gradest.distributions.Normal`.

  Attributes:
    loc: the mean, any shape.
    log_scale: the log standard deviation, broadcastable with ``loc``.
  """

  loc: Array
  log_scale: Array

  @property
  def params(self) -> list[Array]:
    """``[loc, log_scale]``, the arguments of :func:`multi_normal`."""
    return [self.loc, self.log_scale]

  @property
  def scale(self) -> Array:
    """The standard deviation ``exp(log_scale)``."""
    return jnp.exp(self.log_scale)

  @property
  def param_shape(self) -> tuple[int, ...]:
    """The shape of one sample, the broadcast shape of ``loc`` and ``log_scale``."""
    return jnp.broadcast_shapes(jnp.shape(self.loc), jnp.shape(self.log_scale))

  def as_normal(self) -> Normal:
    """The same distribution as a :class:`gradest.distributions.Normal`."""
    return Normal(self.loc, self.scale)

  def sample(self, shape: int | Sequence[int], key: Array) -> Array:
    """Draws an array of shape ``tuple(shape) + param_shape``.

    Args:
      shape: the sample shape (an int or a sequence of ints).
      key: a PRNG key.

    Returns:
      ``loc + scale * eps`` with ``eps ~ N(0, I)`` drawn by ``jax.random.normal(key,
      ...)``.
    """
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    loc, scale = jnp.asarray(self.loc), self.scale
    dtype = jnp.result_type(loc, scale)
    if not jnp.issubdtype(dtype, jnp.floating):
      dtype = jnp.result_type(float)
    eps = jax.random.normal(key, shape + self.param_shape, dtype)
    return eps * scale + loc

  def log_prob(self, x: Array) -> Array:
    """Log-density of each event in ``x`` (shape ``x.shape[:-len(param_shape)]``)."""
    return self.as_normal().log_prob(x)

  def entropy(self) -> Array:
    """The joint entropy (a scalar)."""
    return self.as_normal().entropy()

  def mean(self) -> Array:
    """The mean ``loc``, broadcast to ``param_shape``."""
    return jnp.broadcast_to(self.loc, self.param_shape)


def multi_normal(loc: Array, log_scale: Array) -> MultiNormalDiagFromLogScale:
  """A diagonal Gaussian from its mean and log standard deviation.

  The replacement of ``optax._src.utils.multi_normal``: use it as ``dist_builder``
  with ``params = [loc, log_scale]``.

  Args:
    loc: the mean, any shape.
    log_scale: the log standard deviation, broadcastable with ``loc``.

  Returns:
    A :class:`MultiNormalDiagFromLogScale`.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> d = multi_normal(jnp.zeros(3), jnp.zeros(3))
    >>> d.sample((5,), key=jax.random.PRNGKey(0)).shape
    (5, 3)
  """
  return MultiNormalDiagFromLogScale(loc=loc, log_scale=log_scale)


# --------------------------------------------------------------------------------------
# Adapting optax-style arguments to gradest's core.
# --------------------------------------------------------------------------------------


class _OptaxProtocolDistribution(Distribution):
  """Wraps an object with optax's protocol, ``sample(shape, key=key)`` and ``log_prob``."""

  reparameterized = True  # optax's pathwise estimator differentiated through sample.

  def __init__(self, dist: Any):
    self._dist = dist

  @property
  def event_shape(self) -> tuple[int, ...]:
    one = jax.eval_shape(lambda k: self._dist.sample((), key=k), jax.random.PRNGKey(0))
    return tuple(one.shape)

  def sample(self, key: Array, sample_shape: int | Sequence[int] = ()) -> Array:
    shape = (sample_shape,) if isinstance(sample_shape, int) else tuple(sample_shape)
    return self._dist.sample(shape, key=key)

  def log_prob(self, x: Array) -> Array:
    return self._dist.log_prob(x)


def _as_gradest(dist: Any) -> Distribution:
  """Converts what ``dist_builder`` returned into gradest's distribution protocol."""
  if isinstance(dist, Distribution):
    return dist
  if isinstance(dist, MultiNormalDiagFromLogScale):
    return dist.as_normal()
  root = type(dist).__module__.split(".")[0]
  if type(dist).__name__ == "MultiNormalDiagFromLogScale" or root in _FOREIGN_ROOTS:
    return as_distribution(dist, "dist_builder(*params)")
  if callable(getattr(dist, "sample", None)) and callable(getattr(dist, "log_prob", None)):
    return _OptaxProtocolDistribution(dist)
  raise TypeError(
    "dist_builder(*params) must return a distribution with sample(shape, key=key) and "
    f"log_prob(x) methods (e.g. gradest.monte_carlo.multi_normal), got {type(dist).__name__}."
  )


def _check_params(params: Any, name: str) -> Sequence[Any]:
  if not isinstance(params, (tuple, list)):
    raise TypeError(
      f"{name}: params must be a tuple or list of arrays (the distribution is "
      f"dist_builder(*params), as in optax.monte_carlo), got {type(params).__name__}; "
      "wrap a single array as [array], or use gradest's *_grad functions for other pytrees."
    )
  return params


def _dist_fn(dist_builder: Callable[..., Any]) -> Callable[[Sequence[Any]], Distribution]:
  return lambda p: _as_gradest(dist_builder(*p))


# --------------------------------------------------------------------------------------
# Estimators.
# --------------------------------------------------------------------------------------


def score_function_jacobians(
  function: Callable[[Array], Array],
  params: Params,
  dist_builder: Callable[..., Any],
  rng: Array,
  num_samples: int,
) -> Sequence[Array]:
  r"""Per-sample score-function (REINFORCE) estimates of :math:`\nabla_\theta \mathbb E[f(x)]`.

  .. math::
    J_i = f(x_i)\, \nabla_\theta \log p(x_i; \theta),
    \qquad x_i \sim p(\cdot\,; \theta) = \texttt{dist\_builder}(*\theta).

  Any distribution with a differentiable ``log_prob`` (discrete ones included) and any
  ``function``, differentiable or not. Built on :func:`gradest.score_function_grad`.

  Args:
    function: ``f``, mapping one sample to a scalar.
    params: a tuple or list of arrays, the arguments of ``dist_builder``.
    dist_builder: ``dist_builder(*params)`` returns the distribution (e.g.
      :func:`multi_normal`).
    rng: a PRNG key; sample ``i`` uses ``jax.random.split(rng, num_samples)[i]``.
    num_samples: ``N >= 1`` (static under ``jax.jit``).

  Returns:
    The jacobians in the container of ``params`` (tuple or list), each of shape
    ``(num_samples,) + param.shape``; their mean over axis 0 is the gradient.

  Raises:
    ValueError: ``num_samples < 1``; ``function`` does not return a scalar.
    TypeError: ``params`` is not a tuple/list; ``dist_builder`` does not return a
      distribution.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> params = [jnp.zeros(3), jnp.zeros(3)]
    >>> jac = score_function_jacobians(lambda x: jnp.sum(x**2), params, multi_normal,
    ...                                jax.random.PRNGKey(0), 100)
    >>> [j.shape for j in jac]
    [(100, 3), (100, 3)]

  References:
    Williams, *Simple statistical gradient-following algorithms for connectionist
    reinforcement learning*, 1992.
  """
  params = _check_params(params, "score_function_jacobians")
  estimate = score_function_grad(function, _dist_fn(dist_builder), params, rng, num_samples)
  return estimate.per_sample


def pathwise_jacobians(
  function: Callable[[Array], Array],
  params: Params,
  dist_builder: Callable[..., Any],
  rng: Array,
  num_samples: int,
) -> Sequence[Array]:
  r"""Per-sample pathwise (reparameterization) estimates of :math:`\nabla_\theta \mathbb E[f]`.

  .. math::
    J_i = \nabla_\theta f\big(g(\varepsilon_i; \theta)\big),
    \qquad x = g(\varepsilon; \theta) \sim \texttt{dist\_builder}(*\theta).

  Needs a reparameterized distribution (samples differentiable in ``params``) and a
  differentiable ``function``. Built on :func:`gradest.pathwise_grad`.

  Args:
    function: differentiable ``f``, one sample to a scalar.
    params: a tuple or list of arrays, the arguments of ``dist_builder``.
    dist_builder: ``dist_builder(*params)`` returns the distribution.
    rng: a PRNG key; sample ``i`` uses ``jax.random.split(rng, num_samples)[i]``.
    num_samples: ``N >= 1`` (static).

  Returns:
    The jacobians in the container of ``params``, each ``(num_samples,) + param.shape``.

  Raises:
    ValueError: ``num_samples < 1``; ``function`` does not return a scalar.
    TypeError: ``params`` is not a tuple/list; the distribution is not
      reparameterized (e.g. a gradest ``Bernoulli``).

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> params = [jnp.zeros(3), jnp.zeros(3)]
    >>> jac = pathwise_jacobians(lambda x: jnp.sum(x**2), params, multi_normal,
    ...                          jax.random.PRNGKey(0), 100)
    >>> [j.shape for j in jac]
    [(100, 3), (100, 3)]

  References:
    Kingma & Welling, *Auto-Encoding Variational Bayes*, 2014. Rezende, Mohamed &
    Wierstra, *Stochastic Backpropagation*, 2014.
  """
  params = _check_params(params, "pathwise_jacobians")
  estimate = pathwise_grad(function, _dist_fn(dist_builder), params, rng, num_samples)
  return estimate.per_sample


def measure_valued_jacobians(
  function: Callable[[Array], Array],
  params: Params,
  dist_builder: Callable[..., Any],
  rng: Array,
  num_samples: int,
  coupling: bool = True,
) -> list[Array]:
  r"""Per-sample measure-valued (weak-derivative) estimates for Gaussian distributions.

  For each coordinate :math:`d`, with the other coordinates held at the sample
  :math:`x_i`,

  .. math::
    J^{\mu_d}_i = \tfrac{1}{\sigma_d\sqrt{2\pi}}\big(f(x_{i, d \leftarrow \mu_d +
      \sigma_d W}) - f(x_{i, d \leftarrow \mu_d - \sigma_d W'})\big), \quad
    J^{\sigma_d}_i = \tfrac{1}{\sigma_d}\big(f(x_{i, d \leftarrow \mu_d + \sigma_d M})
      - f(x_{i, d \leftarrow \mu_d + \sigma_d Z})\big),

  with :math:`W, W'` Rayleigh, :math:`M` double-sided Maxwell and :math:`Z` standard
  normal (``coupling=True``: :math:`W' = W` and :math:`Z = U M`, :math:`U` uniform).
  The :math:`(\mu, \sigma)` jacobians are pulled back through ``dist_builder`` to
  ``params``: for :func:`multi_normal` they are ``[d/d loc, d/d log_scale]`` as in
  optax. ``function`` need not be differentiable; it is evaluated ``4 N D`` times.
  Built on :func:`gradest.measure_valued_grad`.

  Args:
    function: ``f``, one sample to a scalar.
    params: a tuple or list of arrays, the arguments of ``dist_builder``.
    dist_builder: a builder returning a Gaussian: this module's :func:`multi_normal`,
      optax's ``utils.multi_normal``, :class:`gradest.distributions.Normal`, or a
      distrax / numpyro normal.
    rng: a PRNG key; sample ``i`` and its replacement values use
      ``jax.random.split(rng, num_samples)[i]``.
    num_samples: ``N >= 1`` (static).
    coupling: couple the positive and negative parts (lower variance).

  Returns:
    A list with one ``(num_samples,) + param.shape`` array per entry of ``params``.

  Raises:
    ValueError: ``dist_builder`` does not build a Gaussian (a distribution class is
      rejected before it is called, whatever its signature, as in optax);
      ``num_samples < 1``; ``function`` does not return a scalar.
    TypeError: ``params`` is not a tuple/list.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> params = [jnp.zeros(3), jnp.zeros(3)]
    >>> # function, dist_builder and num_samples are static under jax.jit.
    >>> mvd = jax.jit(measure_valued_jacobians, static_argnums=(0, 2, 4))
    >>> jac = mvd(lambda x: jnp.sum(x**2), params, multi_normal, jax.random.PRNGKey(0), 100)
    >>> [j.shape for j in jac]
    [(100, 3), (100, 3)]

  References:
    Pflug, *Optimization of Stochastic Models*, 1996. Mohamed et al., JMLR 2020,
    section 6.
  """
  params = _check_params(params, "measure_valued_jacobians")
  # A class is checked before it is constructed (optax raised ValueError for any
  # builder other than multi_normal, whatever its signature); a function is called.
  if isinstance(dist_builder, type) and not converts_to_normal(dist_builder):
    raise ValueError(_not_gaussian_message(f"dist_builder is the class {dist_builder.__name__}"))
  built = dist_builder(*params)
  if not (converts_to_normal(type(built)) and isinstance(_as_gradest(built), Normal)):
    raise ValueError(
      _not_gaussian_message(f"dist_builder(*params) returned {type(built).__name__}")
    )
  estimate = measure_valued_grad(
    function, _dist_fn(dist_builder), params, rng, num_samples, coupling=coupling
  )
  return list(estimate.per_sample)


def _not_gaussian_message(what: str) -> str:
  return (
    "measure_valued_jacobians supports Gaussian distributions only: dist_builder must "
    "build a diagonal Gaussian (gradest.monte_carlo.multi_normal, optax's multi_normal, "
    f"gradest.distributions.Normal, or a distrax / numpyro Normal), but {what}; use "
    "score_function_jacobians or pathwise_jacobians for other distributions."
  )


_GRADEST_ESTIMATORS = (score_function_jacobians, pathwise_jacobians, measure_valued_jacobians)


def _uses_gradest_stream(grad_estimator: Callable[..., Any]) -> bool:
  """Whether ``grad_estimator`` is (a partial or jit of) one of this module's estimators."""
  fn = grad_estimator
  for _ in range(16):
    if any(fn is est for est in _GRADEST_ESTIMATORS):
      return True
    if isinstance(fn, functools.partial):
      fn = fn.func
    elif hasattr(fn, "__wrapped__"):
      fn = fn.__wrapped__
    else:
      return False
  return False


def _draw(grad_estimator, dist_builder, params, rng, num_samples) -> Array:
  """The samples ``grad_estimator(..., rng, num_samples)`` evaluates ``function`` on."""
  dist = dist_builder(*params)
  if _uses_gradest_stream(grad_estimator):
    return draw_samples(_as_gradest(dist), rng, num_samples)[1]
  # Any other estimator: optax's contract, one draw of all samples from rng.
  if isinstance(dist, Distribution):
    return dist.sample(rng, (num_samples,))
  return dist.sample((num_samples,), key=rng)


# --------------------------------------------------------------------------------------
# Control variates.
# --------------------------------------------------------------------------------------


def _as_scalar(x: Any) -> Array:
  x = jnp.asarray(x)
  return x if jnp.issubdtype(x.dtype, jnp.floating) else x.astype(jnp.result_type(float))


def control_delta_method(function: Callable[[Array], Array]) -> ControlVariate:
  r"""The delta-method control variate for Gaussians, as an optax triple.

  The second-order Taylor expansion of ``function`` at the mean :math:`\mu =`
  ``params[0]`` and its closed-form mean under :math:`\mathcal N(\mu,
  \mathrm{diag}(\sigma^2))`, :math:`\sigma = \exp(\texttt{params[1]})`:

  .. math::
    h(x) = f(\mu) + \nabla f(\mu)^\top (x-\mu) + \tfrac12 (x-\mu)^\top \nabla^2 f(\mu)
      (x-\mu), \qquad
    \mathbb E[h] = f(\mu) + \tfrac12 \sum_d \sigma_d^2\, \partial_{dd} f(\mu).

  The expansion point is ``params[0]`` itself (differentiable), as in optax. The
  quadratic term is one Hessian-vector product per sample (no ``D x D`` Hessian); the
  expected value needs the Hessian diagonal, ``D`` Hessian-vector products computed
  once (:func:`gradest.hessian_diagonal`). The state is unused (``None``).

  Args:
    function: ``f``, one sample to a scalar, twice differentiable.

  Returns:
    ``(control_variate, expected_value, update_state)`` with
    ``control_variate(params, sample, state) -> scalar``,
    ``expected_value(params, state) -> scalar`` and
    ``update_state(params, samples, state) -> state`` (the identity).

  Examples:
    >>> import jax.numpy as jnp
    >>> f = lambda x: jnp.sum(x**2)
    >>> h, expected_h, update = control_delta_method(f)
    >>> params = [jnp.zeros(3), jnp.zeros(3)]         # loc, log_scale
    >>> float(h(params, jnp.array([1.0, 2.0, 3.0]), None))   # exact for a quadratic
    14.0

  References:
    Paisley, Blei & Jordan, *Variational Bayesian Inference with Stochastic Search*,
    ICML 2012.
  """

  def control_variate(params: Params, sample: Array, state: CvState = None) -> Array:
    del state
    mean = params[0]
    dx = sample - mean
    value = function(mean)
    # One forward-over-reverse pass: the gradient at the mean and H (x - mean).
    grad, hess_dx = jax.jvp(jax.grad(function), (mean,), (dx,))
    return value + jnp.sum(grad * dx) + 0.5 * jnp.sum(dx * hess_dx)

  def expected_value(params: Params, state: CvState = None) -> Array:
    del state
    mean = params[0]
    variance = jnp.square(jnp.exp(params[1]))
    return function(mean) + 0.5 * jnp.sum(variance * hessian_diagonal(function, mean))

  def update_state(params: Params, samples: Array, state: CvState = None) -> CvState:
    del params, samples
    return state

  return control_variate, expected_value, update_state


def moving_avg_baseline(
  function: Callable[[Array], Array],
  decay: float = 0.99,
  zero_debias: bool = True,
  use_decay_early_training_heuristic: bool = True,
) -> ControlVariate:
  r"""A moving average of ``function``'s batch means, as an optax control-variate triple.

  The state is the pair ``(value, step)``; start from ``(jnp.array(0.0), 0)``. Each
  update, with :math:`\bar f` the mean of ``function`` over the new samples and
  :math:`i` the step,

  .. math::
    \rho_i = \min\big(\rho, \tfrac{1+i}{10+i}\big) \text{ (the early-training
    heuristic, else } \rho_i = \rho), \qquad
    v \leftarrow \rho_i v + (1-\rho_i) \bar f, \qquad
    v \leftarrow v / (1 - \rho_i^{\,i+1}) \text{ if zero\_debias},

  and returns ``(v, i + 1)`` with ``v`` a constant (``stop_gradient``). As in optax,
  the debiased value is what is stored, and :func:`control_variates_jacobians`
  updates the state with the current samples before using it. The control variate is
  the constant ``v``, with expected value ``v``; it changes only the score-function
  estimator.

  Args:
    function: ``f``, one sample to a scalar.
    decay: the decay :math:`\rho` of the moving average.
    zero_debias: divide by :math:`1 - \rho_i^{\,i+1}` after each update.
    use_decay_early_training_heuristic: use :math:`\min(\rho, (1+i)/(10+i))` as the
      decay, so that early steps follow the recent batches.

  Returns:
    ``(control_variate, expected_value, update_state)``.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> _, _, update = moving_avg_baseline(lambda x: jnp.sum(x**2))
    >>> samples = jnp.ones((10, 3))                   # f = 3 at every sample
    >>> value, step = update(None, samples, (jnp.array(0.0), 0))
    >>> round(float(value), 4), step
    (3.0, 1)
  """

  def control_variate(params: Params, sample: Array, state: CvState = None) -> Array:
    del params, sample
    return state[0]

  def expected_value(params: Params, state: CvState) -> Array:
    del params
    return state[0]

  def update_state(params: Params, samples: Array, state: CvState = None) -> CvState:
    del params
    value, step = state
    if use_decay_early_training_heuristic:
      rho = jnp.minimum(decay, (1.0 + step) / (10.0 + step))
    else:
      rho = decay
    new_value = rho * value + (1.0 - rho) * jnp.mean(jax.vmap(function)(samples))
    if zero_debias:
      new_value = new_value / (1.0 - jnp.power(rho, step + 1))
    return jax.lax.stop_gradient(new_value), step + 1

  return control_variate, expected_value, update_state


def _unpack(control_variate: Any) -> ControlVariate:
  if not (isinstance(control_variate, (tuple, list)) and len(control_variate) == 3):
    raise TypeError(
      "control_variate_from_function(function) must return a triple (control_variate("
      "params, sample, state), expected_value(params, state), update_state(params, "
      f"samples, state)), got {type(control_variate).__name__}."
    )
  return tuple(control_variate)


def estimate_control_variate_coefficients(
  function: Callable[[Array], Array],
  control_variate_from_function: Callable[[Callable[[Array], Array]], ControlVariate],
  grad_estimator: Callable[..., Sequence[Array]],
  params: Params,
  dist_builder: Callable[..., Any],
  rng: Array,
  num_samples: int,
  control_variate_state: CvState = None,
  eps: float = 1e-3,
) -> list[Array]:
  r"""Variance-minimizing control-variate coefficients, one scalar per parameter.

  For each parameter :math:`\theta_k`, from ``num_samples`` fresh jacobians
  :math:`J_f` of ``function`` and :math:`J_h` of the control variate (the same
  samples for both),

  .. math::
    c_k = \frac{\sum_j \mathrm{Cov}(J_{f,kj}, J_{h,kj})}{\sum_j \mathrm{Var}(J_{h,kj})
      + \epsilon},

  summing over the coordinates :math:`j` of :math:`\theta_k` (population moments, as
  in optax). The samples come from ``jax.random.fold_in(rng, 2**31 - 1)``, a key
  independent of the ``jax.random.split(rng, n)`` samples of an estimate with the same
  ``rng``, so applying the coefficients to that estimate keeps it unbiased. The
  control-variate state is not updated.

  Args:
    function: ``f``, one sample to a scalar.
    control_variate_from_function: ``function -> (control_variate, expected_value,
      update_state)``, e.g. :func:`control_delta_method`.
    grad_estimator: an estimator with this module's signature, e.g.
      :func:`score_function_jacobians`.
    params: a tuple or list of arrays.
    dist_builder: ``dist_builder(*params)`` returns the distribution.
    rng: a PRNG key.
    num_samples: samples used for the estimate (static).
    control_variate_state: the control variate's state.
    eps: added to the denominator.

  Returns:
    A list with one scalar coefficient per leaf of ``params`` (no gradient flows
    through it).

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> f = lambda x: jnp.sum(jnp.cos(x))
    >>> coeffs = estimate_control_variate_coefficients(
    ...     f, control_delta_method, score_function_jacobians,
    ...     [jnp.zeros(3), jnp.zeros(3)], multi_normal, jax.random.PRNGKey(0), 100)
    >>> len(coeffs)
    2
  """
  params = _check_params(params, "estimate_control_variate_coefficients")
  n = check_num_samples(num_samples)
  control_variate, _, _ = _unpack(control_variate_from_function(function))
  key = jax.random.fold_in(rng, _COEFFICIENT_STREAM)
  cv_jacobians = grad_estimator(
    lambda x: _as_scalar(control_variate(params, x, control_variate_state)),
    params,
    dist_builder,
    key,
    n,
  )
  function_jacobians = grad_estimator(function, params, dist_builder, key, n)
  # optimal_coefficient sums over samples where optax averages: scale eps to match.
  return [
    optimal_coefficient(jf, jh, eps=n * eps)
    for jf, jh in zip(
      jax.tree.leaves(function_jacobians), jax.tree.leaves(cv_jacobians), strict=True
    )
  ]


def control_variates_jacobians(
  function: Callable[[Array], Array],
  control_variate_from_function: Callable[[Callable[[Array], Array]], ControlVariate],
  grad_estimator: Callable[..., Sequence[Array]],
  params: Params,
  dist_builder: Callable[..., Any],
  rng: Array,
  num_samples: int,
  control_variate_state: CvState = None,
  estimate_cv_coeffs: bool = False,
  estimate_cv_coeffs_num_samples: int = 20,
) -> tuple[list[Array], CvState]:
  r"""Per-sample gradient estimates with a control variate.

  With :math:`h(x; \theta)` the control variate, :math:`m(\theta) = \mathbb E_p[h]`
  its closed-form mean, :math:`\hat J` the chosen estimator and :math:`c_k` the
  coefficient of parameter :math:`k`,

  .. math::
    J_{k,i} = \hat J_{k,i}[f] - c_k\Big(\hat J_{k,i}[h(\cdot\,; \bar\theta)]
      + \tfrac1N \sum_{j} \nabla_{\theta_k} h(x_j; \theta)
      - \nabla_{\theta_k} m(\theta)\Big),

  where :math:`\hat J[h(\cdot; \bar\theta)]` treats the control variate's own
  parameter dependence as fixed and the next term adds it back. The estimate is
  unbiased for any fixed :math:`c_k`. Steps, as in optax: estimate the coefficients
  if asked (from independent samples, with the old state), compute the jacobians of
  ``function``, update the state **once** with the samples of this call, then
  evaluate the control variate with the new state.

  ``grad_estimator(function, params, dist_builder, rng, num_samples)`` and the control
  variate term are called with the same ``rng``, so they see the same samples. The
  samples given to ``update_state`` and to :math:`\nabla_\theta h` are those samples:
  drawn as gradest draws them when ``grad_estimator`` is one of this module's
  estimators (or a ``functools.partial`` / ``jax.jit`` of one), and as
  ``dist.sample((num_samples,), key=rng)`` (optax's contract) for any other estimator.

  Args:
    function: ``f``, one sample to a scalar.
    control_variate_from_function: ``function -> (control_variate(params, sample,
      state), expected_value(params, state), update_state(params, samples, state))``,
      e.g. :func:`control_delta_method`, :func:`moving_avg_baseline`, or your own.
    grad_estimator: :func:`score_function_jacobians`, :func:`pathwise_jacobians`,
      :func:`measure_valued_jacobians`, or any function with their signature.
    params: a tuple or list of arrays.
    dist_builder: ``dist_builder(*params)`` returns the distribution.
    rng: a PRNG key.
    num_samples: ``N >= 1`` (static).
    control_variate_state: the control variate's state (e.g. ``(jnp.array(0.0), 0)``
      for :func:`moving_avg_baseline`; ``None`` for the delta method).
    estimate_cv_coeffs: estimate the coefficients with
      :func:`estimate_control_variate_coefficients`; otherwise all are 1.
    estimate_cv_coeffs_num_samples: samples for the coefficient estimate (static).

  Returns:
    ``(jacobians, new_state)``: a list with one ``(num_samples,) + leaf.shape`` array
    per leaf of ``params``, and the updated control-variate state.

  Raises:
    ValueError: ``num_samples < 1`` or ``estimate_cv_coeffs_num_samples < 1``.
    TypeError: ``params`` is not a tuple/list; the control variate is not a triple.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> f = lambda x: jnp.sum(x**2)
    >>> state = (jnp.array(0.0), 0)                   # moving_avg_baseline's state
    >>> for step in range(3):
    ...   jac, state = control_variates_jacobians(
    ...       f, moving_avg_baseline, score_function_jacobians,
    ...       [jnp.zeros(3), jnp.zeros(3)], multi_normal, jax.random.PRNGKey(step), 100,
    ...       control_variate_state=state)
    >>> [j.shape for j in jac], int(state[1])
    ([(100, 3), (100, 3)], 3)

  References:
    Mohamed, Rosca, Figurnov & Mnih, *Monte Carlo Gradient Estimation in Machine
    Learning*, JMLR 2020, section 7.
  """
  params = _check_params(params, "control_variates_jacobians")
  n = check_num_samples(num_samples)
  control_variate, expected_value, update_state = _unpack(control_variate_from_function(function))
  num_leaves = len(jax.tree.leaves(params))
  if estimate_cv_coeffs:
    check_positive_int(estimate_cv_coeffs_num_samples, "estimate_cv_coeffs_num_samples")
    coefficients = estimate_control_variate_coefficients(
      function,
      control_variate_from_function,
      grad_estimator,
      params,
      dist_builder,
      rng,
      estimate_cv_coeffs_num_samples,
      control_variate_state,
    )
  else:
    coefficients = [1.0] * num_leaves

  function_jacobians = grad_estimator(function, params, dist_builder, rng, n)
  samples = jax.lax.stop_gradient(_draw(grad_estimator, dist_builder, params, rng, n))
  state = update_state(params, samples, control_variate_state)

  fixed_params = jax.lax.stop_gradient(params)
  cv_jacobians = grad_estimator(
    lambda x: _as_scalar(control_variate(fixed_params, x, state)), params, dist_builder, rng, n
  )

  def mean_cv(p):
    return jnp.mean(jax.vmap(lambda x: _as_scalar(control_variate(p, x, state)))(samples))

  cv_param_grads = jax.grad(mean_cv)(params)
  expected_value_grads = jax.grad(lambda p: _as_scalar(expected_value(p, state)))(params)

  jacobians = [
    jf - c * jh - c * gh + c * gm
    for jf, jh, gh, gm, c in zip(
      jax.tree.leaves(function_jacobians),
      jax.tree.leaves(cv_jacobians),
      jax.tree.leaves(cv_param_grads),
      jax.tree.leaves(expected_value_grads),
      coefficients,
      strict=True,
    )
  ]
  return jacobians, state
