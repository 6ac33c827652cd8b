"""Small, fully factorized distribution families that the estimators need.

Every family is a pytree (it can cross ``jax.jit`` and ``jax.vmap`` boundaries) with

* ``sample(key, sample_shape=())`` returning an array of shape
  ``sample_shape + event_shape``;
* ``log_prob(x)``: the *joint* log-density of one event, summed over all of the event's
  coordinates, so ``log_prob`` of an array of shape ``sample_shape + event_shape`` has
  shape ``sample_shape``;
* ``entropy()`` (a scalar, the joint entropy) and ``reparameterized`` (whether
  ``sample`` is differentiable with respect to the parameters).

The whole parameter array is one event: a ``Normal(loc, scale)`` with ``loc`` of shape
``(3, 4)`` is a diagonal Gaussian over ``(3, 4)`` arrays. This matches how the cost
function sees a sample: ``f`` maps one sample (one event) to a scalar.

Objects from distrax and numpyro are accepted by every estimator through
:func:`as_distribution` (duck-typed; neither package is imported by gradest).
"""

from __future__ import annotations

import abc
import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax.scipy.special import digamma, gammaln

from gradest._src.base import as_float_array, compute_dtype, open_uniform
from gradest._src.gumbel import (
  centered_logits,
  check_temperature,
  gumbel_softmax,
  logistic_noise,
)

Array = jax.Array

_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


def _shape(sample_shape: int | Sequence[int]) -> tuple[int, ...]:
  if isinstance(sample_shape, int):
    return (sample_shape,)
  return tuple(sample_shape)


def _sum_event(x: Array, event_ndim: int) -> Array:
  if event_ndim == 0:
    return x
  return jnp.sum(x, axis=tuple(range(-event_ndim, 0)))


class Distribution(abc.ABC):
  """Base class of gradest's families (the protocol the estimators use)."""

  reparameterized: bool = False

  @property
  @abc.abstractmethod
  def event_shape(self) -> tuple[int, ...]:
    """Shape of one sample."""

  @abc.abstractmethod
  def sample(self, key: Array, sample_shape: int | Sequence[int] = ()) -> Array:
    """Draws an array of shape ``sample_shape + event_shape``."""

  @abc.abstractmethod
  def log_prob(self, x: Array) -> Array:
    """Joint log-density of each event in ``x`` (shape ``sample_shape``)."""


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Normal(Distribution):
  r"""Diagonal Gaussian :math:`\mathcal N(\mathrm{loc}, \mathrm{diag}(\mathrm{scale}^2))`.

  Samples are reparameterized: ``loc + scale * eps`` with ``eps ~ N(0, I)``.

  Args:
    loc: mean, any shape (the event shape).
    scale: standard deviation, broadcastable to ``loc``; must be positive.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> d = Normal(jnp.zeros(3), jnp.ones(3))
    >>> d.sample(jax.random.key(0), (5,)).shape
    (5, 3)
  """

  loc: Array
  scale: Array
  reparameterized = True

  def __post_init__(self):
    loc, scale = as_float_array(self.loc), as_float_array(self.scale)
    shape = jnp.broadcast_shapes(jnp.shape(loc), jnp.shape(scale))
    dtype = jnp.result_type(loc, scale)
    object.__setattr__(self, "loc", jnp.broadcast_to(loc, shape).astype(dtype))
    object.__setattr__(self, "scale", jnp.broadcast_to(scale, shape).astype(dtype))

  @property
  def event_shape(self) -> tuple[int, ...]:
    return self.loc.shape

  def sample(self, key: Array, sample_shape: int | Sequence[int] = ()) -> Array:
    shape = _shape(sample_shape) + self.event_shape
    eps = jax.random.normal(key, shape, self.loc.dtype)
    return self.loc + self.scale * eps

  def log_prob(self, x: Array) -> Array:
    z = (x - self.loc) / self.scale
    lp = -0.5 * z * z - jnp.log(self.scale) - _LOG_SQRT_2PI
    return _sum_event(lp, len(self.event_shape))

  def entropy(self) -> Array:
    return jnp.sum(0.5 + _LOG_SQRT_2PI + jnp.log(self.scale))

  def mean(self) -> Array:
    return self.loc

  def variance(self) -> Array:
    return jnp.square(self.scale)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Bernoulli(Distribution):
  r"""Independent Bernoulli variables with :math:`p = \sigma(\mathrm{logits})`.

  Samples are floating-point 0/1 arrays of the logits' shape and dtype (so a cost
  function can use them directly). Not reparameterized: use the score function or the
  discrete estimators.
  """

  logits: Array

  def __post_init__(self):
    object.__setattr__(self, "logits", as_float_array(self.logits))

  @property
  def event_shape(self) -> tuple[int, ...]:
    return self.logits.shape

  @property
  def probs(self) -> Array:
    return jax.nn.sigmoid(self.logits)

  def sample(self, key: Array, sample_shape: int | Sequence[int] = ()) -> Array:
    shape = _shape(sample_shape) + self.event_shape
    # u < sigmoid(l)  <=>  log u - log1p(-u) < l, with no overflow for huge |logits|. u is
    # in the open interval (u = 0 gave 1 for any finite logit; now logits below -87 never
    # give 1) and on float32's grid of 2**-23, the smallest P(1) it resolves.
    u = open_uniform(key, shape, self.logits.dtype)
    return (jnp.log(u) - jnp.log1p(-u) < self.logits).astype(self.logits.dtype)

  def log_prob(self, x: Array) -> Array:
    x = jnp.asarray(x, self.logits.dtype)
    # x log sigmoid(l) + (1 - x) log sigmoid(-l) = x l - softplus(l): one softplus, and
    # the gradient x - sigmoid(l) without extra exponentials.
    lp = x * self.logits - jax.nn.softplus(self.logits)
    return _sum_event(lp, len(self.event_shape))

  def entropy(self) -> Array:
    p = jax.nn.sigmoid(self.logits)
    return jnp.sum(jax.nn.softplus(self.logits) - self.logits * p)

  def mean(self) -> Array:
    return self.probs


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Categorical(Distribution):
  r"""Independent categorical variables over the last axis of ``logits``.

  ``logits`` of shape ``batch + (num_classes,)`` give an event of shape ``batch``:
  samples are integer class indices, and ``log_prob`` sums over ``batch``.
  """

  logits: Array

  def __post_init__(self):
    logits = as_float_array(self.logits)
    if logits.ndim < 1:
      raise ValueError(
        "Categorical logits must have at least one axis (the classes), got a scalar."
      )
    object.__setattr__(self, "logits", logits)

  @property
  def event_shape(self) -> tuple[int, ...]:
    return self.logits.shape[:-1]

  @property
  def num_classes(self) -> int:
    return self.logits.shape[-1]

  @property
  def probs(self) -> Array:
    return jax.nn.softmax(self.logits, axis=-1)

  def sample(self, key: Array, sample_shape: int | Sequence[int] = ()) -> Array:
    shape = _shape(sample_shape) + self.event_shape
    return jax.random.categorical(key, self.logits, axis=-1, shape=shape)

  def log_prob(self, x: Array) -> Array:
    x = jnp.asarray(x)
    logp = jax.nn.log_softmax(self.logits, axis=-1)
    logp = jnp.broadcast_to(logp, x.shape + (self.num_classes,))
    lp = jnp.take_along_axis(logp, x[..., None].astype(jnp.int32), axis=-1)[..., 0]
    return _sum_event(lp, len(self.event_shape))

  def entropy(self) -> Array:
    logp = jax.nn.log_softmax(self.logits, axis=-1)
    return -jnp.sum(jnp.exp(logp) * logp)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class OneHotCategorical(Distribution):
  r"""Independent categorical variables over the last axis of ``logits``, as one-hot vectors.

  .. math::
    p_\ell(b) = \prod_j \prod_k \mathrm{softmax}(\ell_j)_k^{\,b_{jk}}, \qquad
    b_j \in \{e_1, \dots, e_K\}.

  Samples are floating-point one-hot arrays of the shape and dtype of ``logits``
  (``batch + (num_classes,)``), so a cost written for them also accepts points of the
  simplex: the form the discrete estimators need (straight-through, Gumbel-Rao, REBAR,
  RELAX feed ``f`` relaxed samples). ``log_prob`` sums over the whole array.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> d = OneHotCategorical(jnp.zeros((2, 3)))
    >>> b = d.sample(jax.random.key(0))
    >>> b.shape, b.sum(axis=-1).tolist()
    ((2, 3), [1.0, 1.0])
  """

  logits: Array

  def __post_init__(self):
    logits = as_float_array(self.logits)
    if logits.ndim < 1 or logits.shape[-1] < 2:
      raise ValueError(
        "OneHotCategorical logits must have shape batch + (num_classes,) with "
        f"num_classes >= 2, got shape {logits.shape}; for binary variables use Bernoulli."
      )
    object.__setattr__(self, "logits", logits)

  @property
  def event_shape(self) -> tuple[int, ...]:
    return self.logits.shape

  @property
  def num_classes(self) -> int:
    return self.logits.shape[-1]

  @property
  def probs(self) -> Array:
    return jax.nn.softmax(self.logits, axis=-1)

  def sample(self, key: Array, sample_shape: int | Sequence[int] = ()) -> Array:
    shape = _shape(sample_shape) + self.logits.shape[:-1]
    index = jax.random.categorical(key, self.logits, axis=-1, shape=shape)
    return jax.nn.one_hot(index, self.num_classes, dtype=self.logits.dtype)

  def log_prob(self, x: Array) -> Array:
    x = jnp.asarray(x, self.logits.dtype)
    return _sum_event(x * jax.nn.log_softmax(self.logits, axis=-1), self.logits.ndim)

  def entropy(self) -> Array:
    logp = jax.nn.log_softmax(self.logits, axis=-1)
    return -jnp.sum(jnp.exp(logp) * logp)

  def mean(self) -> Array:
    return self.probs


def _log_clamped(x: Array) -> Array:
  """``log x`` with ``x`` clamped to the smallest normal number: finite at 0."""
  return jnp.log(jnp.maximum(x, jnp.finfo(x.dtype).tiny))


def _relaxed_work(dist: Any, x: Array | None = None):
  """The logits, temperature (and ``x``) of a relaxed family in the compute dtype."""
  work = compute_dtype(dist.logits.dtype)
  out = (dist.logits.astype(work), dist.temperature.astype(work))
  if x is None:
    return out
  return (*out, jnp.asarray(x).astype(work))


def _check_relaxed(logits: Any, temperature: Any, min_ndim: int) -> tuple[Array, Array]:
  logits = as_float_array(logits)
  if logits.ndim < min_ndim:
    raise ValueError(
      "RelaxedCategorical logits must have at least one axis (the classes), got a scalar."
    )
  check_temperature(temperature)
  return logits, jnp.asarray(temperature, logits.dtype)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class RelaxedBernoulli(Distribution):
  r"""The binary Concrete distribution on :math:`(0, 1)`: :math:`y = \sigma((\ell + L)/\tau)`.

  ``L`` is standard logistic noise; as :math:`\tau \to 0`, ``y`` approaches a
  :math:`\mathrm{Bernoulli}(\sigma(\ell))` sample. Reparameterized, so
  :func:`gradest.pathwise_grad` gives the (biased for the discrete objective) relaxed
  gradient. The density, with :math:`\alpha = e^{\ell}`, is

  .. math::
    p(y) = \frac{\tau\,\alpha\, y^{-\tau-1} (1-y)^{-\tau-1}}
      {\big(\alpha y^{-\tau} + (1-y)^{-\tau}\big)^2},

  evaluated in log space (``logaddexp``) in at least float32, with ``y`` and ``1 - y``
  clamped to the smallest normal float so that it stays finite at the boundaries.
  Half-precision parameters are upcast to float32 and results cast back to their dtype.

  Args:
    logits: :math:`\ell`, any shape (the event shape).
    temperature: :math:`\tau > 0`, a scalar (may be a learned, traced value).

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> d = RelaxedBernoulli(jnp.zeros(3), 0.5)
    >>> d.sample(jax.random.key(0), (4,)).shape
    (4, 3)

  References:
    Maddison, Mnih & Teh, *The Concrete Distribution*, ICLR 2017.
  """

  logits: Array
  temperature: Array
  reparameterized = True

  def __post_init__(self):
    logits, temperature = _check_relaxed(self.logits, self.temperature, 0)
    object.__setattr__(self, "logits", logits)
    object.__setattr__(self, "temperature", temperature)

  @property
  def event_shape(self) -> tuple[int, ...]:
    return self.logits.shape

  def sample(self, key: Array, sample_shape: int | Sequence[int] = ()) -> Array:
    shape = _shape(sample_shape) + self.event_shape
    logits, t = _relaxed_work(self)
    noise = logistic_noise(key, shape, logits.dtype)
    return jax.nn.sigmoid((logits + noise) / t).astype(self.logits.dtype)

  def log_prob(self, x: Array) -> Array:
    logits, t, x = _relaxed_work(self, x)
    log_y, log_1my = _log_clamped(x), _log_clamped(1.0 - x)
    lp = (
      jnp.log(t)
      + logits
      - (t + 1.0) * (log_y + log_1my)
      - 2.0 * jnp.logaddexp(logits - t * log_y, -t * log_1my)
    )
    return _sum_event(lp, len(self.event_shape)).astype(self.logits.dtype)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class RelaxedCategorical(Distribution):
  r"""The Concrete (Gumbel-softmax) distribution on the simplex.

  :math:`y = \mathrm{softmax}((\ell + G)/\tau)` along the last axis, ``G`` an
  independent standard Gumbel per class. ``logits`` of shape ``batch + (K,)`` give
  independent relaxed one-hot vectors: the event shape is ``logits.shape`` and
  ``log_prob`` sums over ``batch``. The density with respect to the Lebesgue measure
  of the first :math:`K - 1` coordinates is

  .. math::
    p(y) = (K-1)!\,\tau^{K-1} \prod_{k} \frac{\alpha_k y_k^{-\tau-1}}
      {\sum_i \alpha_i y_i^{-\tau}}, \qquad \alpha = e^{\ell},

  evaluated in its shift-invariant log-softmax form

  .. math::
    \log p(y) = \log (K-1)! + (K-1)\log\tau
      + \sum_k \big[\mathrm{log\,softmax}(\ell - \tau \log y)_k - \log y_k\big],

  in at least float32, with the logits shifted by their maximum and ``y`` clamped to
  the smallest normal float: adding a constant to the logits changes nothing, and the
  density is finite at the boundary of the simplex. Half-precision parameters are upcast
  to float32 and results cast back to their dtype. Reparameterized.

  Args:
    logits: :math:`\ell`, shape ``batch + (K,)``.
    temperature: :math:`\tau > 0`, a scalar (may be a learned, traced value).

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> d = RelaxedCategorical(jnp.zeros(3), 0.5)
    >>> y = d.sample(jax.random.key(0))
    >>> y.shape, bool(jnp.isclose(y.sum(), 1.0))
    ((3,), True)

  References:
    Maddison, Mnih & Teh, *The Concrete Distribution*, ICLR 2017. Jang, Gu & Poole,
    *Categorical Reparameterization with Gumbel-Softmax*, ICLR 2017.
  """

  logits: Array
  temperature: Array
  reparameterized = True

  def __post_init__(self):
    logits, temperature = _check_relaxed(self.logits, self.temperature, 1)
    object.__setattr__(self, "logits", logits)
    object.__setattr__(self, "temperature", temperature)

  @property
  def event_shape(self) -> tuple[int, ...]:
    return self.logits.shape

  @property
  def num_classes(self) -> int:
    return self.logits.shape[-1]

  def sample(self, key: Array, sample_shape: int | Sequence[int] = ()) -> Array:
    return gumbel_softmax(
      key,
      jnp.broadcast_to(self.logits, _shape(sample_shape) + self.event_shape),
      self.temperature,
    )

  def log_prob(self, x: Array) -> Array:
    logits, t, x = _relaxed_work(self, x)
    logits = centered_logits(logits, -1)
    log_y = _log_clamped(x)
    lp = (
      gammaln(float(self.num_classes))
      + (self.num_classes - 1) * jnp.log(t)
      + jnp.sum(jax.nn.log_softmax(logits - t * log_y, axis=-1) - log_y, axis=-1)
    )
    return _sum_event(lp, len(self.event_shape) - 1).astype(self.logits.dtype)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Gamma(Distribution):
  r"""Independent Gamma variables with shape ``concentration`` and ``rate``.

  Samples come from ``jax.random.gamma``, whose gradient with respect to the
  concentration is the implicit reparameterization gradient (Figurnov et al., 2018):
  :math:`\partial z / \partial \alpha = -(\partial F / \partial \alpha) / p(z)`, so the
  pathwise estimator works for this family although it has no explicit
  location-scale form.
  """

  concentration: Array
  rate: Array
  reparameterized = True

  def __post_init__(self):
    a, b = as_float_array(self.concentration), as_float_array(self.rate)
    shape = jnp.broadcast_shapes(jnp.shape(a), jnp.shape(b))
    dtype = jnp.result_type(a, b)
    object.__setattr__(self, "concentration", jnp.broadcast_to(a, shape).astype(dtype))
    object.__setattr__(self, "rate", jnp.broadcast_to(b, shape).astype(dtype))

  @property
  def event_shape(self) -> tuple[int, ...]:
    return self.concentration.shape

  def sample(self, key: Array, sample_shape: int | Sequence[int] = ()) -> Array:
    shape = _shape(sample_shape) + self.event_shape
    a = jnp.broadcast_to(self.concentration, shape)
    return jax.random.gamma(key, a, shape, self.concentration.dtype) / self.rate

  def log_prob(self, x: Array) -> Array:
    a, b = self.concentration, self.rate
    lp = a * jnp.log(b) + (a - 1) * jnp.log(x) - b * x - gammaln(a)
    return _sum_event(lp, len(self.event_shape))

  def entropy(self) -> Array:
    a, b = self.concentration, self.rate
    return jnp.sum(a - jnp.log(b) + gammaln(a) + (1 - a) * digamma(a))

  def mean(self) -> Array:
    return self.concentration / self.rate


def kl_divergence(p: Distribution, q: Distribution) -> Array:
  r"""Closed-form :math:`\mathrm{KL}(p \,\|\, q)` (a scalar: summed over the event).

  Defined for two distributions of the same gradest family: ``Normal``, ``Bernoulli``,
  ``Categorical`` and ``Gamma``.

  Examples:
    >>> import jax.numpy as jnp
    >>> float(kl_divergence(Normal(0.0, 1.0), Normal(0.0, 1.0)))
    0.0
  """
  if type(p) is not type(q):
    raise TypeError(
      f"kl_divergence needs two distributions of the same family, got "
      f"{type(p).__name__} and {type(q).__name__}."
    )
  if isinstance(p, Normal):
    log_ratio = jnp.log(p.scale) - jnp.log(q.scale)  # log space: finite for tiny scales
    diff = jnp.square((p.loc - q.loc) / q.scale)
    return jnp.sum(0.5 * (jnp.exp(2.0 * log_ratio) + diff - 1.0) - log_ratio)
  if isinstance(p, Bernoulli):
    pp = jax.nn.sigmoid(p.logits)
    kl = pp * (jax.nn.log_sigmoid(p.logits) - jax.nn.log_sigmoid(q.logits)) + (1 - pp) * (
      jax.nn.log_sigmoid(-p.logits) - jax.nn.log_sigmoid(-q.logits)
    )
    return jnp.sum(kl)
  if isinstance(p, Categorical):
    lp = jax.nn.log_softmax(p.logits, axis=-1)
    lq = jax.nn.log_softmax(q.logits, axis=-1)
    return jnp.sum(jnp.exp(lp) * (lp - lq))
  if isinstance(p, Gamma):
    a1, b1, a2, b2 = p.concentration, p.rate, q.concentration, q.rate
    kl = (
      (a1 - a2) * digamma(a1)
      - gammaln(a1)
      + gammaln(a2)
      + a2 * (jnp.log(b1) - jnp.log(b2))
      + a1 * (b2 - b1) / b1
    )
    return jnp.sum(kl)
  raise TypeError(f"kl_divergence has no closed form for {type(p).__name__}.")


# --------------------------------------------------------------------------------------
# Adapters for distributions from other libraries.
# --------------------------------------------------------------------------------------


class _ForeignDistribution(Distribution):
  """Wraps a distrax / numpyro / TFP-like object into gradest's protocol."""

  def __init__(self, dist: Any, seed_keyword: bool, reparameterized: bool):
    self._dist = dist
    self._seed_keyword = seed_keyword
    self.reparameterized = reparameterized
    self._batch_ndim = len(tuple(getattr(dist, "batch_shape", ())))

  @property
  def event_shape(self) -> tuple[int, ...]:
    return tuple(self._dist.batch_shape) + tuple(self._dist.event_shape)

  def sample(self, key: Array, sample_shape: int | Sequence[int] = ()) -> Array:
    if self._seed_keyword:
      return self._dist.sample(seed=key, sample_shape=_shape(sample_shape))
    return self._dist.sample(key, _shape(sample_shape))

  def log_prob(self, x: Array) -> Array:
    # The foreign log_prob returns sample_shape + batch_shape; sum the batch axes so
    # that, as for gradest's families, one event is the whole parameter array.
    return _sum_event(self._dist.log_prob(x), self._batch_ndim)

  def entropy(self) -> Array:
    return jnp.sum(self._dist.entropy())


def _module_root(obj: Any) -> str:
  return type(obj).__module__.split(".")[0]


# Foreign Gaussians that as_distribution turns into a Normal, by module root and class name.
_FOREIGN_NORMALS = {"distrax": ("Normal", "MultivariateNormalDiag"), "numpyro": ("Normal",)}


# Foreign discrete families that as_distribution turns into gradest's (from their logits),
# so that the discrete estimators can read the family: by module root and class name.
_FOREIGN_DISCRETE = {
  "distrax": {
    "Bernoulli": Bernoulli,
    "Categorical": Categorical,
    "OneHotCategorical": OneHotCategorical,
  },
  "numpyro": {
    "BernoulliLogits": Bernoulli,
    "BernoulliProbs": Bernoulli,
    "CategoricalLogits": Categorical,
    "CategoricalProbs": Categorical,
  },
}


def converts_to_normal(cls: type) -> bool:
  """Whether :func:`as_distribution` can return a :class:`Normal` for an instance of ``cls``.

  Decided from the class alone, so a caller that needs a Gaussian can reject a
  distribution class before constructing it. True for :class:`Normal` and its
  subclasses, optax 0.2.6's ``MultiNormalDiagFromLogScale`` (and the class of that name
  in :mod:`gradest.monte_carlo`), distrax's ``Normal`` and ``MultivariateNormalDiag``
  (a Normal only without batch axes) and numpyro's ``Normal``.

  Args:
    cls: a class.

  Returns:
    ``False`` if no instance of ``cls`` is converted to a :class:`Normal`.
  """
  if not isinstance(cls, type):
    return False
  if issubclass(cls, Normal) or cls.__name__ == "MultiNormalDiagFromLogScale":
    return True
  return cls.__name__ in _FOREIGN_NORMALS.get(cls.__module__.split(".")[0], ())


def as_distribution(dist: Any, name: str = "dist_fn(params)") -> Distribution:
  """Returns ``dist`` in gradest's distribution protocol.

  gradest families pass through. Gaussians from distrax (``Normal``,
  ``MultivariateNormalDiag``), numpyro (``Normal``) and optax 0.2.6's
  ``multi_normal`` become :class:`Normal` (so the measure-valued estimator applies);
  any other distrax or numpyro distribution is wrapped (samples by ``seed=`` or
  positional key; ``log_prob`` summed over the batch axes). Anything else must have
  ``sample(key, sample_shape)`` and ``log_prob(x)`` methods.

  Raises:
    TypeError: if ``dist`` has no ``sample``/``log_prob`` methods.
  """
  if isinstance(dist, Distribution):
    return dist
  if not (callable(getattr(dist, "sample", None)) and callable(getattr(dist, "log_prob", None))):
    raise TypeError(
      f"{name} must return a distribution with sample(key, sample_shape) and log_prob(x) "
      f"methods (a gradest.distributions family, or a distrax / numpyro distribution), "
      f"got {type(dist).__name__}."
    )
  root, cls = _module_root(dist), type(dist).__name__
  if cls == "MultiNormalDiagFromLogScale":  # optax <= 0.2.6 utils.multi_normal
    loc, log_scale = dist.params
    return Normal(loc, jnp.exp(log_scale))
  discrete = _FOREIGN_DISCRETE.get(root, {}).get(cls)
  if discrete is not None:
    return discrete(dist.logits)
  if root == "distrax":
    if cls == "Normal":
      return Normal(dist.loc, dist.scale)
    if cls == "MultivariateNormalDiag" and dist.batch_shape == ():
      return Normal(dist.loc, dist.scale_diag)
    return _ForeignDistribution(dist, seed_keyword=True, reparameterized=True)
  if root == "numpyro":
    if cls == "Normal":
      return Normal(dist.loc, dist.scale)
    return _ForeignDistribution(
      dist, seed_keyword=False, reparameterized=bool(getattr(dist, "has_rsample", False))
    )
  if root in ("tensorflow_probability", "tfp"):
    return _ForeignDistribution(
      dist,
      seed_keyword=True,
      reparameterized=str(getattr(dist, "reparameterization_type", "")).endswith(
        "FULLY_REPARAMETERIZED"
      ),
    )
  return _ForeignDistribution(
    dist, seed_keyword=False, reparameterized=bool(getattr(dist, "reparameterized", True))
  )
