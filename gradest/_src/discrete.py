r"""Gradient estimators for Bernoulli and categorical latent variables.

The discrete estimators have the contract of the continuous ones, at two levels:

.. code-block:: python

  <name>_grad(f, dist_fn, params, key, num_samples, *, ...) -> GradEstimate
  <name>_objective(f, dist, key, num_samples, *, ...) -> scalar

The family is read from the distribution that ``dist_fn(params)`` (or ``dist``) is:

* :class:`~gradest.distributions.Bernoulli` (or distrax's / numpyro's, converted by
  :func:`~gradest.distributions.as_distribution`): ``f`` receives a float 0/1 array of
  the logits' shape;
* :class:`~gradest.distributions.OneHotCategorical` (or distrax's): ``f`` receives
  one-hot float arrays of the logits' shape ``batch + (K,)``, so the relaxed estimators
  can feed it points of the simplex.

Each estimator computes per-sample terms :math:`\hat g_i` with respect to the logits
:math:`\ell` and pulls them back to ``params`` through ``dist_fn`` (a vector-Jacobian
product), so an encoder's parameters are trained directly. At the objective level the
value is the Monte Carlo objective (the mean of ``f`` over the evaluations) and the
gradient with respect to the logits is the estimator's; gradients with respect to
anything ``f`` closes over (a decoder) are the mean of ``f``'s gradients at the samples.

Sample ``i`` uses the key ``jax.random.split(key, rows)[i]`` and, within it, the same
noise for every estimator, so the same key gives the same discrete samples to
straight-through, Gumbel-Rao, REBAR and RELAX (common random numbers when comparing
them).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.extend
import jax.numpy as jnp

from gradest._src.base import (
  Array,
  GradEstimate,
  as_float_array,
  check_key,
  check_num_samples,
  check_positive_int,
  check_scalar_output,
  compute_dtype,
  sample_keys,
  tree_mean,
)
from gradest._src.distributions import Bernoulli, Categorical, OneHotCategorical, as_distribution
from gradest._src.gumbel import (
  check_temperature,
  conditional_gumbel,
  conditional_logistic,
  gumbel_noise,
  logistic_noise,
  straight_through,
)

FAMILIES = ("bernoulli", "categorical")
MAX_ENUMERATED_STATES = 2**20


@dataclasses.dataclass(frozen=True)
class Family:
  """How one discrete family is sampled, relaxed and scored (internal)."""

  name: str
  noise: Callable[[Array, tuple[int, ...], Any], Array]
  hard: Callable[[Array], Array]
  soft: Callable[[Array, Array], Array]
  conditional: Callable[[Array, Array, Array], Array]
  score: Callable[[Array, Array], Array]
  log_prob: Callable[[Array, Array], Array]


def _one_hot_argmax(z: Array) -> Array:
  return jax.nn.one_hot(jnp.argmax(z, axis=-1), z.shape[-1], dtype=z.dtype)


BERNOULLI = Family(
  name="bernoulli",
  noise=logistic_noise,
  hard=lambda z: (z > 0).astype(z.dtype),
  soft=lambda z, t: jax.nn.sigmoid(z / t),
  conditional=lambda key, logits, b: conditional_logistic(key, logits, b),
  score=lambda logits, b: b - jax.nn.sigmoid(logits),
  log_prob=lambda logits, b: Bernoulli(logits).log_prob(b),
)

CATEGORICAL = Family(
  name="categorical",
  noise=gumbel_noise,
  hard=_one_hot_argmax,
  soft=lambda z, t: jax.nn.softmax(z / t, axis=-1),
  conditional=lambda key, logits, b: conditional_gumbel(key, logits, jnp.argmax(b, axis=-1)),
  score=lambda logits, b: b - jax.nn.softmax(logits, axis=-1),
  log_prob=lambda logits, b: jnp.sum(b * jax.nn.log_softmax(logits, axis=-1)),
)


def get_family(family: Any) -> Family:
  if family == "bernoulli":
    return BERNOULLI
  if family == "categorical":
    return CATEGORICAL
  raise ValueError(f"family must be one of {FAMILIES}, got {family!r}.")


def check_logits(logits: Any, family: Family) -> Array:
  """Float logits; categorical ones need a class axis with at least two classes."""
  logits = as_float_array(logits)
  if family is CATEGORICAL and (logits.ndim < 1 or logits.shape[-1] < 2):
    raise ValueError(
      "logits for family='categorical' must have shape batch + (num_classes,) with "
      f"num_classes >= 2, got shape {logits.shape}; for binary variables use "
      "family='bernoulli' with one logit per variable."
    )
  return logits


def perturb(fam: Family, key: Array, logits: Array) -> tuple[Array, Array]:
  """The noise keys every estimator uses for one sample: ``(z, conditional key)``.

  ``z = logits + noise`` is the pre-threshold relaxed variable (``hard(z)`` is the
  discrete sample); the second key drives the conditional samples.
  """
  k_noise, k_cond = jax.random.split(key)
  return fam.noise(k_noise, logits.shape, logits.dtype), k_cond


def discrete_family(dist: Any, name: str = "dist_fn(params)") -> tuple[Family, Array]:
  """The family and float logits of a discrete distribution (gradest, distrax or numpyro).

  Raises:
    TypeError: ``dist`` is not a Bernoulli or one-hot categorical distribution.
  """
  dist = as_distribution(dist, name)
  if isinstance(dist, Bernoulli):
    return BERNOULLI, dist.logits
  if isinstance(dist, OneHotCategorical):
    return CATEGORICAL, dist.logits
  if isinstance(dist, Categorical):
    raise TypeError(
      f"{name} is a Categorical (integer samples); the discrete estimators need "
      "OneHotCategorical(logits), whose samples are one-hot vectors (f then also accepts "
      "the relaxed points of the simplex)."
    )
  raise TypeError(
    f"{name} must be a Bernoulli or OneHotCategorical distribution for this estimator, "
    f"got {type(dist).__name__}; use score_function_grad or pathwise_grad for other "
    "families."
  )


class Terms(NamedTuple):
  """What a discrete estimator computes in the space of the logits.

  Attributes:
    per_sample: ``(rows,) + logits.shape``; their mean is the estimate of the gradient
      with respect to the logits.
    values: ``f`` at each of its ``num_samples`` evaluations (differentiable in what ``f``
      closes over), shape ``(num_samples,)``.
    aux: the estimator's extra outputs (a dict) or ``None``.
  """

  per_sample: Array
  values: Array
  aux: Any = None


TermsFn = Callable[..., Terms]


class DiscreteSpec(NamedTuple):
  """How an estimator checks its arguments (internal).

  Attributes:
    name: the public name, for error messages.
    families: the families it accepts.
    differentiable: whether it differentiates ``f`` with respect to its input.
    minimum: the smallest ``num_samples``, and ``why`` it needs that many.
    pairs: whether ``num_samples`` counts the evaluations of antithetic pairs.
  """

  name: str
  families: tuple[Family, ...] = ()
  differentiable: bool = False
  minimum: int = 1
  why: str = ""
  pairs: bool = False


def check_discrete(
  spec: DiscreteSpec, f, dist, key, num_samples, name
) -> tuple[Family, Array, int]:
  """Checks a discrete estimator's arguments: ``(family, logits, num_samples)``."""
  fam, logits = discrete_family(dist, name)
  families = spec.families or (BERNOULLI, CATEGORICAL)
  if fam not in families:
    raise TypeError(
      f"{spec.name} is defined for Bernoulli distributions only, got a categorical one; "
      "for categorical variables use score_function_grad, gumbel_rao_grad or relax_grad."
    )
  n = check_num_samples(num_samples, max(spec.minimum, 2 if spec.pairs else 1), spec.why)
  if spec.pairs and n % 2:
    raise ValueError(
      f"{spec.name} evaluates f at antithetic pairs: num_samples counts the evaluations "
      f"and must be even, got {n}."
    )
  check_key(key)
  aval = jax.ShapeDtypeStruct(logits.shape, logits.dtype)
  check_scalar_output(f, aval)
  if spec.differentiable:
    check_differentiable(f, logits)
  return fam, logits, n


def estimate_grad(
  spec: DiscreteSpec,
  terms_fn: TermsFn,
  f: Callable[[Array], Array],
  dist_fn: Callable[[Any], Any],
  params: Any,
  key: Array,
  num_samples: int,
  *,
  return_per_sample: bool,
  sample_sharding: Any,
  **options: Any,
) -> GradEstimate:
  """The gradient level: terms in the logits' space, pulled back to ``params``."""
  checked = {}

  def logits_fn(p):
    # One forward pass of dist_fn: checked here, and linearized for the pull-back.
    fam, logits, n = check_discrete(spec, f, dist_fn(p), key, num_samples, "dist_fn(params)")
    checked.update(fam=fam, n=n)
    return logits

  logits, pullback = jax.vjp(logits_fn, params)
  fam, n = checked["fam"], checked["n"]
  terms = terms_fn(fam, logits, f, key, n, sample_sharding, **options)
  # Terms computed in float32 for half-precision logits go back in the logits' dtype.
  terms_per_sample = terms.per_sample.astype(logits.dtype)
  if return_per_sample:
    per_sample = jax.vmap(lambda g: pullback(g)[0])(terms_per_sample)
    return GradEstimate(tree_mean(per_sample), per_sample, terms.values, terms.aux)
  (grad,) = pullback(tree_mean(terms_per_sample))
  return GradEstimate(grad, None, terms.values, terms.aux)


def estimate_objective(
  spec: DiscreteSpec,
  terms_fn: TermsFn,
  f: Callable[[Array], Array],
  dist: Any,
  key: Array,
  num_samples: int,
  *,
  sample_sharding: Any = None,
  **options: Any,
) -> tuple[Array, Terms]:
  r"""The objective level: :math:`\bar f + \langle \bot(\bar g), \ell - \bot(\ell)\rangle`.

  The value is the mean of ``f`` over its evaluations; the gradient with respect to the
  logits is the mean term :math:`\bar g` (never differentiated again), and gradients
  with respect to what ``f`` closes over flow through the values.
  """
  fam, logits, n = check_discrete(spec, f, dist, key, num_samples, "dist")
  fixed = jax.lax.stop_gradient(logits)
  terms = terms_fn(fam, fixed, f, key, n, sample_sharding, **options)
  g = jax.lax.stop_gradient(jnp.mean(terms.per_sample, axis=0)).astype(logits.dtype)
  return jnp.mean(terms.values) + jnp.sum(g * (logits - fixed)), terms


def hard_samples(fam: Family, logits: Array, keys: Array) -> tuple[Array, Array, Array]:
  """``(noise, conditional keys, discrete samples)`` for the per-sample ``keys``."""
  noise, key_c = jax.vmap(lambda k: perturb(fam, k, logits))(keys)
  return noise, key_c, jax.lax.stop_gradient(fam.hard(logits + noise))


def broadcast_rows(weights: Array, logits: Array) -> Array:
  """``(rows,)`` weights shaped to multiply ``(rows,) + logits.shape`` terms."""
  return weights.reshape((-1,) + (1,) * logits.ndim)


def _tangent_reaches_output(f, aval) -> bool:
  """Whether the output tangent of ``jax.jvp(f)`` depends on the input tangent at all.

  A dependency analysis of the linearized program (nested calls are treated as opaque,
  which can only over-approximate the dependency): False means the derivative of ``f``
  is identically zero, e.g. for a cost built from ``argmax``, integer casts or indexing.
  """
  jaxpr = jax.make_jaxpr(lambda x, t: jax.jvp(f, (x,), (t,))[1])(aval, aval).jaxpr
  reached = {jaxpr.invars[1]}
  for eqn in jaxpr.eqns:
    if any(not isinstance(v, jax.extend.core.Literal) and v in reached for v in eqn.invars):
      reached.update(eqn.outvars)
  out = jaxpr.outvars[0]
  return not isinstance(out, jax.extend.core.Literal) and out in reached


def check_differentiable(f, logits):
  """Raises if ``f`` cannot be differentiated at a relaxed input, or has a zero derivative."""
  aval = jax.ShapeDtypeStruct(logits.shape, logits.dtype)
  advice = (
    "Write f with differentiable jax.numpy operations of its input, or use an estimator "
    "that only evaluates f (score_function_grad, arm_grad, disarm_grad, relax_grad)."
  )
  try:
    jax.eval_shape(jax.grad(f), aval)
  except TypeError as e:
    raise TypeError(
      f"this estimator differentiates f with respect to its (relaxed) input, but "
      f"jax.grad(f) failed: {e}. {advice}"
    ) from None
  if not _tangent_reaches_output(f, aval):
    raise TypeError(
      "this estimator differentiates f with respect to its (relaxed) input, but the "
      "derivative of f is identically zero (f goes through argmax, an integer cast or "
      f"indexing by its input), so the estimate would be zero. {advice}"
    )


# --------------------------------------------------------------------------------------
# Exact enumeration.
# --------------------------------------------------------------------------------------


def _all_states(logits: Array, fam: Family) -> Array:
  """Every joint state, shape ``(S,) + logits.shape``."""
  if fam is BERNOULLI:
    d = logits.size
    num_states = 2**d
    if num_states > MAX_ENUMERATED_STATES:
      raise ValueError(
        f"exact enumeration of {d} Bernoulli variables needs 2**{d} states, more than "
        f"{MAX_ENUMERATED_STATES}; the logits must have at most 20 entries (use a Monte "
        "Carlo estimator for larger problems)."
      )
    bits = (jnp.arange(num_states)[:, None] >> jnp.arange(d)[None, :]) & 1
    return bits.astype(logits.dtype).reshape((num_states,) + logits.shape)
  k = logits.shape[-1]
  m = logits.size // k
  if k**m > MAX_ENUMERATED_STATES:
    raise ValueError(
      f"exact enumeration of {m} categorical variables with {k} classes needs {k}**{m} "
      f"states, more than {MAX_ENUMERATED_STATES}; use smaller logits or a Monte Carlo "
      "estimator."
    )
  index = jnp.arange(k**m)[:, None] // (k ** jnp.arange(m))[None, :] % k
  one_hot = jax.nn.one_hot(index, k, dtype=logits.dtype)
  return one_hot.reshape((k**m,) + logits.shape)


def exact_expectation(f: Callable[[Array], Array], dist: Any) -> Array:
  r""":math:`\mathbb E_{b \sim p}[f(b)] = \sum_b p(b) f(b)` by enumerating every state.

  Differentiable in the parameters of ``dist`` (a Bernoulli or OneHotCategorical;
  ``jax.grad`` of it is the exact gradient). Feasible for at most :math:`2^{20}` joint
  states (20 Bernoulli variables).

  Examples:
    >>> import jax.numpy as jnp
    >>> from gradest.distributions import Bernoulli
    >>> round(float(exact_expectation(jnp.sum, Bernoulli(jnp.zeros(3)))), 6)
    1.5
  """
  fam, logits = discrete_family(dist, "dist")
  states = _all_states(logits, fam)
  values = jax.vmap(f)(states)
  log_p = jax.vmap(lambda b: fam.log_prob(logits, b))(states)
  return jnp.sum(jnp.exp(log_p) * values)


def exact_grad(
  f: Callable[[Array], Array],
  dist_fn: Callable[[Any], Any],
  params: Any,
  key: Array | None = None,
  num_samples: int = 1,
  *,
  return_per_sample: bool = True,
  sample_sharding: Any = None,
) -> GradEstimate:
  r"""The exact gradient :math:`\nabla_\theta \sum_b p_\theta(b) f(b)` by enumeration.

  The reference the Monte Carlo estimators are tested against, with their signature
  (``key`` and ``sample_sharding`` are accepted and unused); feasible up to
  :math:`2^{20}` joint states.

  Returns:
    A :class:`GradEstimate`: ``per_sample`` repeats the exact gradient ``num_samples``
    times (so ``variance()`` is 0, to float rounding, for ``num_samples >= 2``),
    ``values`` the exact expectation as many times.

  Raises:
    ValueError: more than :math:`2^{20}` states.
    TypeError: ``dist_fn(params)`` is not a Bernoulli or OneHotCategorical.

  Examples:
    >>> import jax.numpy as jnp
    >>> from gradest.distributions import Bernoulli
    >>> g = exact_grad(jnp.sum, Bernoulli, jnp.zeros(2)).grad  # d/dl sigmoid(l) at 0
    >>> [round(float(x), 6) for x in g]
    [0.25, 0.25]
  """
  del sample_sharding
  n = check_num_samples(num_samples)
  if key is not None:
    check_key(key)
  _, logits = discrete_family(dist_fn(params))
  check_scalar_output(f, jax.ShapeDtypeStruct(logits.shape, logits.dtype))
  value, grad = jax.value_and_grad(lambda p: exact_expectation(f, dist_fn(p)))(params)
  per_sample = None
  if return_per_sample:
    per_sample = jax.tree.map(lambda g: jnp.broadcast_to(g, (n,) + jnp.shape(g)), grad)
  return GradEstimate(grad, per_sample, jnp.full((n,), value))


# --------------------------------------------------------------------------------------
# ARM and DisARM (Bernoulli).
# --------------------------------------------------------------------------------------


def antithetic_logit_grad(
  logits: Array, noise: Array, difference: Array, *, integrated: bool
) -> Array:
  r"""ARM's or DisARM's estimate of the gradient with respect to Bernoulli logits.

  From one antithetic pair :math:`b = \mathbb 1[\ell + \epsilon > 0]`,
  :math:`\tilde b = \mathbb 1[\ell - \epsilon > 0]` (:math:`\epsilon` logistic noise)
  and ``difference`` :math:`= f(b) - f(\tilde b)` broadcast to the logits' shape:
  :math:`(f(b) - f(\tilde b))(\sigma(\epsilon) - \frac12)` (ARM) or, with the
  augmentation integrated out, :math:`\frac12 (f(b) - f(\tilde b))(b - \tilde b)
  \sigma(|\ell|)` (DisARM, ``integrated=True``). Shared by :func:`arm_grad`,
  :func:`disarm_grad` and the per-site estimators of :mod:`gradest.numpyro`.
  """
  if integrated:
    b, b_tilde = BERNOULLI.hard(logits + noise), BERNOULLI.hard(logits - noise)
    return 0.5 * difference * (b - b_tilde) * jax.nn.sigmoid(jnp.abs(logits))
  return difference * (jax.nn.sigmoid(noise) - 0.5)


def _antithetic_terms(fam, logits, f, key, n, sharding, *, integrated: bool) -> Terms:
  keys = sample_keys(key, n // 2, sharding)
  noise = jax.vmap(lambda k: perturb(fam, k, logits)[0])(keys)
  b = BERNOULLI.hard(logits + noise)
  b_tilde = BERNOULLI.hard(logits - noise)
  values = jax.vmap(f)(jnp.concatenate([b, b_tilde]))
  fb, fbt = jnp.split(jax.lax.stop_gradient(values), 2)
  difference = broadcast_rows(fb - fbt, logits)
  per_sample = antithetic_logit_grad(logits, noise, difference, integrated=integrated)
  return Terms(per_sample, values)


_ARM = DiscreteSpec("arm_grad", (BERNOULLI,), pairs=True)
_DISARM = DiscreteSpec("disarm_grad", (BERNOULLI,), pairs=True)


def arm_grad(
  f: Callable[[Array], Array],
  dist_fn: Callable[[Any], Any],
  params: Any,
  key: Array,
  num_samples: int,
  *,
  return_per_sample: bool = True,
  sample_sharding: Any = None,
) -> GradEstimate:
  r"""The augment-REINFORCE-merge (ARM) estimator, for Bernoulli distributions.

  With :math:`u \sim \mathcal U(0,1)^D`, :math:`L = \mathrm{logit}(u)` and the
  antithetic pair :math:`b = \mathbb 1[\ell + L > 0]`, :math:`\tilde b = \mathbb 1[\ell
  - L > 0]`, the estimate with respect to the logits :math:`\ell` is

  .. math::
    \hat g = \big(f(b) - f(\tilde b)\big)\,(u - \tfrac12),

  pulled back to ``params`` through ``dist_fn``. Unbiased.

  Args:
    f: the cost of one sample (a float 0/1 array of the logits' shape); only evaluated.
    dist_fn: ``params -> Bernoulli`` (gradest's, distrax's or numpyro's).
    params: any pytree of arrays.
    key: a PRNG key.
    num_samples: evaluations of ``f``, even: ``num_samples // 2`` antithetic pairs.
    return_per_sample: keep the per-pair estimates.
    sample_sharding: optional sharding of the leading (pair) axis.

  Returns:
    A :class:`GradEstimate`: ``per_sample`` has one row per pair (``num_samples // 2``,
    the independent unit), ``values`` the ``num_samples`` costs (the pairs' first
    members, then their second).

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> from gradest.distributions import Bernoulli
    >>> f = lambda b: jnp.sum((b - 0.45) ** 2)
    >>> est = arm_grad(f, Bernoulli, jnp.zeros(3), jax.random.key(0), 20)
    >>> est.grad.shape, est.per_sample.shape, est.values.shape
    ((3,), (10, 3), (20,))

  References:
    Yin & Zhou, *ARM: Augment-REINFORCE-Merge Gradient for Stochastic Binary
    Networks*, ICLR 2019.
  """
  return estimate_grad(
    _ARM,
    _antithetic_terms,
    f,
    dist_fn,
    params,
    key,
    num_samples,
    return_per_sample=return_per_sample,
    sample_sharding=sample_sharding,
    integrated=False,
  )


def arm_objective(
  f: Callable[[Array], Array],
  dist: Any,
  key: Array,
  num_samples: int,
  *,
  sample_sharding: Any = None,
) -> Array:
  r"""The mean cost over ``num_samples // 2`` antithetic pairs; its gradient is ARM's.

  See :func:`arm_grad` (the same samples from the same key). Use it inside a loss:
  ``jax.grad`` with respect to the parameters of ``dist`` is the ARM estimate, with
  respect to what ``f`` closes over the mean of ``f``'s gradients.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> from gradest.distributions import Bernoulli
    >>> loss = lambda lg: arm_objective(lambda b: jnp.sum(b), Bernoulli(lg), jax.random.key(0), 8)
    >>> jax.grad(loss)(jnp.zeros(2)).shape
    (2,)
  """
  return estimate_objective(
    _ARM._replace(name="arm_objective"),
    _antithetic_terms,
    f,
    dist,
    key,
    num_samples,
    sample_sharding=sample_sharding,
    integrated=False,
  )[0]


def disarm_grad(
  f: Callable[[Array], Array],
  dist_fn: Callable[[Any], Any],
  params: Any,
  key: Array,
  num_samples: int,
  *,
  return_per_sample: bool = True,
  sample_sharding: Any = None,
) -> GradEstimate:
  r"""DisARM: ARM with the augmentation integrated out, for Bernoulli distributions.

  With the antithetic pair of :func:`arm_grad`, the estimate with respect to logit
  :math:`\ell_i` is

  .. math::
    \hat g_i = \tfrac12\big(f(b) - f(\tilde b)\big)\,(b_i - \tilde b_i)\,
      \sigma(|\ell_i|),

  pulled back to ``params``. Unbiased, never more variable than ARM for the same pairs,
  and exactly zero where :math:`b = \tilde b`. Arguments and outputs as in
  :func:`arm_grad` (``num_samples`` even, one ``per_sample`` row per pair).

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> from gradest.distributions import Bernoulli
    >>> f = lambda b: jnp.sum((b - 0.45) ** 2)
    >>> disarm_grad(f, Bernoulli, jnp.zeros(3), jax.random.key(0), 20).grad.shape
    (3,)

  References:
    Dong, Mnih & Tucker, *DisARM: An Antithetic Gradient Estimator for Binary Latent
    Variables*, NeurIPS 2020.
  """
  return estimate_grad(
    _DISARM,
    _antithetic_terms,
    f,
    dist_fn,
    params,
    key,
    num_samples,
    return_per_sample=return_per_sample,
    sample_sharding=sample_sharding,
    integrated=True,
  )


def disarm_objective(
  f: Callable[[Array], Array],
  dist: Any,
  key: Array,
  num_samples: int,
  *,
  sample_sharding: Any = None,
) -> Array:
  r"""The mean cost over ``num_samples // 2`` antithetic pairs; its gradient is DisARM's.

  See :func:`disarm_grad` and :func:`arm_objective`.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> from gradest.distributions import Bernoulli
    >>> loss = lambda lg: disarm_objective(jnp.sum, Bernoulli(lg), jax.random.key(0), 8)
    >>> jax.grad(loss)(jnp.zeros(2)).shape
    (2,)
  """
  return estimate_objective(
    _DISARM._replace(name="disarm_objective"),
    _antithetic_terms,
    f,
    dist,
    key,
    num_samples,
    sample_sharding=sample_sharding,
    integrated=True,
  )[0]


# --------------------------------------------------------------------------------------
# Straight-through Gumbel-softmax and Gumbel-Rao.
# --------------------------------------------------------------------------------------


def _relaxed_terms(fam, logits, f, key, n, sharding, *, temperature, num_conditional) -> Terms:
  """Per-sample gradients of ``f`` at the exact sample, through a relaxed sample.

  ``num_conditional = 0``: straight-through (the relaxed sample of the same noise);
  ``K >= 1``: Gumbel-Rao (the mean of ``K`` relaxed samples drawn given the sample).
  """

  def one(k):
    if num_conditional:
      sample = lambda lg: gumbel_rao_sample(fam, k, lg, temperature, num_conditional)  # noqa: E731
    else:
      noise, _ = perturb(fam, k, logits)
      b = jax.lax.stop_gradient(fam.hard(logits + noise))
      sample = lambda lg: straight_through(b, fam.soft(lg + noise, temperature))  # noqa: E731
    value, grad = jax.value_and_grad(lambda lg: f(sample(lg)))(logits)
    return grad, value

  per_sample, values = jax.vmap(one)(sample_keys(key, n, sharding))
  return Terms(per_sample, values)


_STRAIGHT_THROUGH = DiscreteSpec("straight_through_grad", differentiable=True)
_GUMBEL_RAO = DiscreteSpec("gumbel_rao_grad", differentiable=True)


def straight_through_grad(
  f: Callable[[Array], Array],
  dist_fn: Callable[[Any], Any],
  params: Any,
  key: Array,
  num_samples: int,
  *,
  temperature: float | Array = 1.0,
  return_per_sample: bool = True,
  sample_sharding: Any = None,
) -> GradEstimate:
  r"""The straight-through Gumbel-softmax estimator. **Biased.**

  .. math::
    \hat g = \frac{\partial f}{\partial y}\Big|_{y = b}\,
      \frac{\partial\, \mathrm{soft}\big((\ell + G)/\tau\big)}{\partial \ell},
    \qquad b = \mathrm{hard}(\ell + G),

  where ``soft`` is the softmax (sigmoid for Bernoulli) and ``hard`` the one-hot argmax
  (threshold at 0): ``f`` is evaluated at the exact discrete sample and differentiated
  as if the sample were the relaxed one; the result is pulled back to ``params``. The
  bias does not vanish with more samples; it shrinks as :math:`\tau \to 0`, where the
  variance grows.

  Args:
    f: the cost, differentiable in its input (called with exact 0/1 or one-hot values).
    dist_fn: ``params -> Bernoulli`` or ``OneHotCategorical``.
    params: any pytree of arrays.
    key: a PRNG key.
    num_samples: ``N`` evaluations of ``f`` (static).
    temperature: :math:`\tau > 0`.
    return_per_sample: keep the per-sample estimates.
    sample_sharding: optional sharding of the leading sample axis.

  Returns:
    A :class:`GradEstimate`.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> from gradest.distributions import Bernoulli
    >>> f = lambda b: jnp.sum((b - 0.45) ** 2)
    >>> straight_through_grad(f, Bernoulli, jnp.zeros(3), jax.random.key(0), 10).grad.shape
    (3,)

  References:
    Bengio, Léonard & Courville, 2013 (straight-through). Jang, Gu & Poole,
    *Categorical Reparameterization with Gumbel-Softmax*, ICLR 2017.
  """
  check_temperature(temperature)
  return estimate_grad(
    _STRAIGHT_THROUGH,
    _relaxed_terms,
    f,
    dist_fn,
    params,
    key,
    num_samples,
    return_per_sample=return_per_sample,
    sample_sharding=sample_sharding,
    temperature=temperature,
    num_conditional=0,
  )


def straight_through_objective(
  f: Callable[[Array], Array],
  dist: Any,
  key: Array,
  num_samples: int,
  *,
  temperature: float | Array = 1.0,
  sample_sharding: Any = None,
) -> Array:
  r"""The mean cost at exact samples; its gradient is the straight-through estimator's.

  See :func:`straight_through_grad`. **Biased.**

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> from gradest.distributions import OneHotCategorical
    >>> f = lambda y: jnp.sum(y * jnp.arange(3.0))
    >>> loss = lambda lg: straight_through_objective(f, OneHotCategorical(lg), jax.random.key(0), 8)
    >>> jax.grad(loss)(jnp.zeros(3)).shape
    (3,)
  """
  check_temperature(temperature)
  return estimate_objective(
    _STRAIGHT_THROUGH._replace(name="straight_through_objective"),
    _relaxed_terms,
    f,
    dist,
    key,
    num_samples,
    sample_sharding=sample_sharding,
    temperature=temperature,
    num_conditional=0,
  )[0]


def gumbel_rao_grad(
  f: Callable[[Array], Array],
  dist_fn: Callable[[Any], Any],
  params: Any,
  key: Array,
  num_samples: int,
  *,
  temperature: float | Array = 1.0,
  num_conditional: int = 10,
  return_per_sample: bool = True,
  sample_sharding: Any = None,
) -> GradEstimate:
  r"""The Gumbel-Rao estimator: straight-through Gumbel-softmax, Rao-Blackwellized.

  .. math::
    \hat g = \frac{\partial f}{\partial y}\Big|_{y = b}\,
      \frac{1}{K}\sum_{k=1}^K \frac{\partial\, \mathrm{soft}\big((\ell + G_k)/\tau\big)}
      {\partial \ell}, \qquad G_k \sim p(G \mid \mathrm{hard}(\ell + G) = b),

  the straight-through gradient averaged over ``K = num_conditional`` Gumbel (logistic
  for Bernoulli) perturbations drawn conditionally on the discrete sample ``b``
  (:func:`~gradest.conditional_gumbel`), pulled back to ``params``. As
  :math:`K \to \infty` this is the conditional expectation of
  :func:`straight_through_grad` given ``b``: the same mean (the same bias) with lower
  variance, for one gradient of ``f`` per sample. **Biased.**

  Args:
    f: the cost, differentiable in its (relaxed) input.
    dist_fn: ``params -> Bernoulli`` or ``OneHotCategorical``.
    params: any pytree of arrays.
    key: a PRNG key.
    num_samples: ``N`` evaluations of ``f`` (static).
    temperature: :math:`\tau > 0`.
    num_conditional: ``K >= 1`` conditional perturbations per sample (static).
    return_per_sample: keep the per-sample estimates.
    sample_sharding: optional sharding of the leading sample axis.

  Returns:
    A :class:`GradEstimate`.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> from gradest.distributions import Bernoulli
    >>> f = lambda b: jnp.sum((b - 0.45) ** 2)
    >>> gumbel_rao_grad(f, Bernoulli, jnp.zeros(3), jax.random.key(0), 10).grad.shape
    (3,)

  References:
    Paulus, Maddison & Krause, *Rao-Blackwellizing the Straight-Through Gumbel-Softmax
    Gradient Estimator*, ICLR 2021.
  """
  check_temperature(temperature)
  k_cond = check_positive_int(num_conditional, "num_conditional")
  return estimate_grad(
    _GUMBEL_RAO,
    _relaxed_terms,
    f,
    dist_fn,
    params,
    key,
    num_samples,
    return_per_sample=return_per_sample,
    sample_sharding=sample_sharding,
    temperature=temperature,
    num_conditional=k_cond,
  )


def gumbel_rao_objective(
  f: Callable[[Array], Array],
  dist: Any,
  key: Array,
  num_samples: int,
  *,
  temperature: float | Array = 1.0,
  num_conditional: int = 10,
  sample_sharding: Any = None,
) -> Array:
  r"""The mean cost at exact samples; its gradient is the Gumbel-Rao estimator's.

  See :func:`gumbel_rao_grad`. **Biased.** (:func:`gumbel_rao` is the sample-level form:
  one exact sample whose backward pass is Gumbel-Rao's.)

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> from gradest.distributions import Bernoulli
    >>> loss = lambda lg: gumbel_rao_objective(jnp.sum, Bernoulli(lg), jax.random.key(0), 8)
    >>> jax.grad(loss)(jnp.zeros(2)).shape
    (2,)
  """
  check_temperature(temperature)
  k_cond = check_positive_int(num_conditional, "num_conditional")
  return estimate_objective(
    _GUMBEL_RAO._replace(name="gumbel_rao_objective"),
    _relaxed_terms,
    f,
    dist,
    key,
    num_samples,
    sample_sharding=sample_sharding,
    temperature=temperature,
    num_conditional=k_cond,
  )[0]


def gumbel_rao(
  key: Array,
  logits: Array,
  temperature: float | Array,
  num_conditional: int = 10,
  *,
  family: str = "categorical",
) -> Array:
  r"""A discrete sample whose backward pass is the Gumbel-Rao gradient (surrogate level).

  The forward value is an exact sample (one-hot along the last axis for
  ``family="categorical"``, 0/1 for ``"bernoulli"``); its gradient with respect to
  ``logits`` is that of the mean of ``num_conditional`` relaxed samples drawn
  conditionally on it. Use it inside a model's loss in place of
  ``gumbel_softmax(..., hard=True)``: ``jax.grad`` of the loss is then the Gumbel-Rao
  estimate (biased, lower variance than straight-through). Computed in at least
  float32; the result has the dtype of ``logits``.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> y = gumbel_rao(jax.random.key(0), jnp.zeros((2, 4)), 0.5, 8)
    >>> y.sum(axis=-1).tolist()
    [1.0, 1.0]

  References:
    Paulus, Maddison & Krause, ICLR 2021.
  """
  check_temperature(temperature)
  check_key(key)
  k_cond = check_positive_int(num_conditional, "num_conditional")
  fam = get_family(family)
  logits = check_logits(logits, fam)
  work = logits.astype(compute_dtype(logits.dtype))
  return gumbel_rao_sample(fam, key, work, temperature, k_cond).astype(logits.dtype)


def gumbel_rao_sample(fam, key, logits, temperature, num_conditional):
  """The exact sample of ``key``, with the mean conditional relaxed sample's gradient.

  The core of :func:`gumbel_rao` without its argument checks, shared with the NumPyro
  sites (``logits`` already in the compute dtype).
  """
  noise, key_c = perturb(fam, key, logits)
  b = jax.lax.stop_gradient(fam.hard(logits + noise))
  cond = jax.vmap(lambda kc: fam.conditional(kc, logits, b) - logits)(
    jax.random.split(key_c, num_conditional)
  )
  cond = jax.lax.stop_gradient(cond)
  soft = jnp.mean(jax.vmap(lambda g: fam.soft(logits + g, temperature))(cond), axis=0)
  return straight_through(b, soft)
