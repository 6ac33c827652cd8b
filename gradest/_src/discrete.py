r"""Gradient estimators for Bernoulli and categorical latent variables.

Every estimator here estimates :math:`\nabla_\ell \mathbb E_{b \sim p_\ell}[f(b)]`, the
gradient with respect to the **logits** :math:`\ell`, and has the signature

.. code-block:: python

  <name>_grad(f, logits, key, num_samples, *, family="bernoulli", ...) -> GradEstimate

* ``family="bernoulli"``: independent :math:`b_i \sim \mathrm{Bernoulli}(\sigma(\ell_i))`
  for ``logits`` of any shape; ``f`` receives a float 0/1 array of that shape.
* ``family="categorical"``: independent categorical variables over the last axis of
  ``logits`` (shape ``batch + (K,)``); ``f`` receives **one-hot** float arrays of the
  shape of ``logits`` (so the relaxed estimators can feed it points of the simplex).

To train the parameters :math:`\phi` of a network that outputs the logits, pull the
gradient back: ``jax.vjp(encoder, phi)[1](estimate.grad)``.

Sample ``i`` uses the key ``jax.random.split(key, num_samples)[i]`` and, within it, the
same noise for every estimator, so the same key gives the same discrete samples to
REINFORCE, straight-through, Gumbel-Rao, REBAR and RELAX (common random numbers when
comparing them).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

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
)
from gradest._src.distributions import Bernoulli
from gradest._src.gumbel import (
  check_temperature,
  conditional_gumbel,
  conditional_logistic,
  gumbel_noise,
  logistic_noise,
  straight_through,
)
from gradest._src.score_function import baselined, check_baseline

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


def prepare_discrete(f, logits, key, num_samples, family, minimum=1, why=""):
  """Checks a logits-level estimator's arguments: ``(family, float logits, num_samples)``."""
  fam = get_family(family)
  logits = check_logits(logits, fam)
  n = check_num_samples(num_samples, minimum, why)
  check_key(key)
  check_scalar_output(f, jax.ShapeDtypeStruct(logits.shape, logits.dtype))
  return fam, logits, n


def perturb(fam: Family, key: Array, logits: Array) -> tuple[Array, Array]:
  """The noise keys every estimator uses for one sample: ``(z, conditional key)``.

  ``z = logits + noise`` is the pre-threshold relaxed variable (``hard(z)`` is the
  discrete sample); the second key drives the conditional samples.
  """
  k_noise, k_cond = jax.random.split(key)
  return fam.noise(k_noise, logits.shape, logits.dtype), k_cond


def _estimate(per_sample: Array, values: Array, return_per_sample: bool) -> GradEstimate:
  grad = jnp.mean(per_sample, axis=0)
  return GradEstimate(grad, per_sample if return_per_sample else None, values)


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
    "that only evaluates f (reinforce_grad, arm_grad, disarm_grad)."
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
        f"{MAX_ENUMERATED_STATES}; logits must have at most 20 entries (use a Monte "
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


def exact_expectation(f: Callable[[Array], Array], logits: Array, *, family: str = "bernoulli"):
  r""":math:`\mathbb E_{b \sim p_\ell}[f(b)] = \sum_b p_\ell(b) f(b)` by enumerating every state.

  Differentiable in ``logits`` (``jax.grad`` of it is the exact gradient). Feasible
  for at most :math:`2^{20}` joint states (20 Bernoulli variables).

  Examples:
    >>> import jax.numpy as jnp
    >>> round(float(exact_expectation(jnp.sum, jnp.zeros(3))), 6)
    1.5
  """
  fam = get_family(family)
  logits = check_logits(logits, fam)
  states = _all_states(logits, fam)
  values = jax.vmap(f)(states)
  log_p = jax.vmap(lambda b: fam.log_prob(logits, b))(states)
  return jnp.sum(jnp.exp(log_p) * values)


def exact_grad(
  f: Callable[[Array], Array], logits: Array, *, family: str = "bernoulli"
) -> GradEstimate:
  r"""The exact gradient :math:`\nabla_\ell \sum_b p_\ell(b) f(b)` by enumeration.

  The reference the Monte Carlo estimators are tested against; feasible up to
  :math:`2^{20}` joint states.

  Returns:
    A :class:`GradEstimate` with ``per_sample=None`` and ``values`` of shape ``(1,)``
    holding the exact expectation.

  Raises:
    ValueError: more than :math:`2^{20}` states, or categorical logits without a
      class axis.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> g = exact_grad(jnp.sum, jnp.zeros(2)).grad  # d/dl sigmoid(l) at 0
    >>> [round(float(x), 6) for x in g]
    [0.25, 0.25]
  """
  fam = get_family(family)
  logits = check_logits(logits, fam)
  check_scalar_output(f, jax.ShapeDtypeStruct(logits.shape, logits.dtype))
  value, grad = jax.value_and_grad(lambda lg: exact_expectation(f, lg, family=family))(logits)
  return GradEstimate(grad, None, value[None])


# --------------------------------------------------------------------------------------
# REINFORCE with a baseline.
# --------------------------------------------------------------------------------------


def reinforce_grad(
  f: Callable[[Array], Array],
  logits: Array,
  key: Array,
  num_samples: int,
  *,
  family: str = "bernoulli",
  baseline: None | float | Array | str = "leave_one_out",
  return_per_sample: bool = True,
  sample_sharding: Any = None,
) -> GradEstimate:
  r"""REINFORCE with respect to the logits, by default with the leave-one-out baseline.

  .. math::
    \hat g = \frac1N \sum_i \Big(f(b_i) - \frac{1}{N-1}\sum_{j \ne i} f(b_j)\Big)
      \nabla_\ell \log p_\ell(b_i),

  with :math:`\nabla_\ell \log p_\ell(b) = b - \sigma(\ell)` (Bernoulli) or
  :math:`b - \mathrm{softmax}(\ell)` (categorical, ``b`` one-hot). Unbiased; ``f`` is
  only evaluated, never differentiated.

  Args:
    f: the cost of one sample (see the module docstring for what it receives).
    logits: the logits :math:`\ell`.
    key: a PRNG key.
    num_samples: ``N`` (static); at least 2 with the leave-one-out baseline.
    family: ``"bernoulli"`` or ``"categorical"``.
    baseline: ``"leave_one_out"`` (default), ``None`` or a scalar constant.
    return_per_sample: keep the ``(N,) + logits.shape`` per-sample estimates.
    sample_sharding: optional sharding of the leading sample axis.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> f = lambda b: jnp.sum((b - 0.45) ** 2)
    >>> est = reinforce_grad(f, jnp.zeros(3), jax.random.key(0), 100)
    >>> est.grad.shape, est.per_sample.shape
    ((3,), (100, 3))

  References:
    Williams, 1992. Kool, van Hoof & Welling, *Buy 4 REINFORCE Samples, Get a
    Baseline for Free!*, 2019.
  """
  loo = check_baseline(baseline)
  fam, logits, n = prepare_discrete(
    f, logits, key, num_samples, family, 2 if loo else 1, "the leave-one-out baseline"
  )
  keys = sample_keys(key, n, sample_sharding)
  b = jax.vmap(lambda k: fam.hard(logits + perturb(fam, k, logits)[0]))(keys)
  values = jax.vmap(f)(b)
  weights = baselined(values, baseline)
  scores = jax.vmap(fam.score, (None, 0))(logits, b)
  per_sample = weights.reshape((-1,) + (1,) * logits.ndim) * scores
  return _estimate(per_sample, values, return_per_sample)


# --------------------------------------------------------------------------------------
# ARM and DisARM (Bernoulli).
# --------------------------------------------------------------------------------------


def _antithetic_pairs(f, logits, key, n, sample_sharding):
  """``(u, b, b_tilde, f(b), f(b_tilde))`` for ``n`` antithetic pairs."""
  keys = sample_keys(key, n, sample_sharding)
  noise = jax.vmap(lambda k: perturb(BERNOULLI, k, logits)[0])(keys)
  b = BERNOULLI.hard(logits + noise)
  b_tilde = BERNOULLI.hard(logits - noise)
  fb, fbt = jnp.split(jax.vmap(f)(jnp.concatenate([b, b_tilde])), 2)
  return noise, b, b_tilde, fb, fbt


def _check_bernoulli_only(family: Any, name: str) -> None:
  if family != "bernoulli":
    raise ValueError(
      f"{name} is defined for family='bernoulli' only, got family={family!r}; for "
      "categorical variables use reinforce_grad, gumbel_rao_grad or relax_grad."
    )


def arm_grad(
  f: Callable[[Array], Array],
  logits: Array,
  key: Array,
  num_samples: int,
  *,
  family: str = "bernoulli",
  return_per_sample: bool = True,
  sample_sharding: Any = None,
) -> GradEstimate:
  r"""The augment-REINFORCE-merge (ARM) estimator for Bernoulli logits.

  With :math:`u \sim \mathcal U(0,1)^D`, :math:`L = \mathrm{logit}(u)`, the antithetic
  pair :math:`b = \mathbb 1[\ell + L > 0]`, :math:`\tilde b = \mathbb 1[\ell - L > 0]`:

  .. math::
    \hat g = \big(f(b) - f(\tilde b)\big)\,(u - \tfrac12).

  Unbiased; each of the ``N`` samples is a pair (``2N`` evaluations of ``f``), and
  ``values`` holds :math:`(f(b) + f(\tilde b))/2` per pair.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> est = arm_grad(lambda b: jnp.sum((b - 0.45) ** 2), jnp.zeros(3), jax.random.key(0), 10)
    >>> est.per_sample.shape
    (10, 3)

  References:
    Yin & Zhou, *ARM: Augment-REINFORCE-Merge Gradient for Stochastic Binary
    Networks*, ICLR 2019.
  """
  _check_bernoulli_only(family, "arm_grad")
  _, logits, n = prepare_discrete(f, logits, key, num_samples, family)
  noise, _, _, fb, fbt = _antithetic_pairs(f, logits, key, n, sample_sharding)
  u = jax.nn.sigmoid(noise)
  per_sample = (fb - fbt).reshape((-1,) + (1,) * logits.ndim) * (u - 0.5)
  return _estimate(per_sample, 0.5 * (fb + fbt), return_per_sample)


def disarm_grad(
  f: Callable[[Array], Array],
  logits: Array,
  key: Array,
  num_samples: int,
  *,
  family: str = "bernoulli",
  return_per_sample: bool = True,
  sample_sharding: Any = None,
) -> GradEstimate:
  r"""DisARM: ARM with the augmentation integrated out, for Bernoulli logits.

  With the antithetic pair of :func:`arm_grad`,

  .. math::
    \hat g_i = \tfrac12\big(f(b) - f(\tilde b)\big)\,(b_i - \tilde b_i)\,
      \sigma(|\ell_i|).

  Unbiased, never more variable than ARM for the same pairs, and exactly zero where
  :math:`b = \tilde b`. ``2N`` evaluations of ``f``; ``values`` as in :func:`arm_grad`.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> f = lambda b: jnp.sum((b - 0.45) ** 2)
    >>> disarm_grad(f, jnp.zeros(3), jax.random.key(0), 10).grad.shape
    (3,)

  References:
    Dong, Mnih & Tucker, *DisARM: An Antithetic Gradient Estimator for Binary Latent
    Variables*, NeurIPS 2020.
  """
  _check_bernoulli_only(family, "disarm_grad")
  _, logits, n = prepare_discrete(f, logits, key, num_samples, family)
  _, b, b_tilde, fb, fbt = _antithetic_pairs(f, logits, key, n, sample_sharding)
  weight = 0.5 * (fb - fbt).reshape((-1,) + (1,) * logits.ndim)
  per_sample = weight * (b - b_tilde) * jax.nn.sigmoid(jnp.abs(logits))
  return _estimate(per_sample, 0.5 * (fb + fbt), return_per_sample)


# --------------------------------------------------------------------------------------
# Straight-through Gumbel-softmax and Gumbel-Rao.
# --------------------------------------------------------------------------------------


def straight_through_grad(
  f: Callable[[Array], Array],
  logits: Array,
  key: Array,
  num_samples: int,
  *,
  temperature: float | Array = 1.0,
  family: str = "bernoulli",
  return_per_sample: bool = True,
  sample_sharding: Any = None,
) -> GradEstimate:
  r"""The straight-through Gumbel-softmax estimator. **Biased.**

  .. math::
    \hat g = \frac{\partial f}{\partial y}\Big|_{y = b}\,
      \frac{\partial\, \mathrm{soft}\big((\ell + G)/\tau\big)}{\partial \ell},
    \qquad b = \mathrm{hard}(\ell + G),

  where ``soft`` is the softmax (sigmoid for Bernoulli) and ``hard`` the one-hot argmax
  (threshold at 0): ``f`` is evaluated at the exact discrete sample, and differentiated
  as if the sample were the relaxed one. The bias does not vanish with more samples;
  it shrinks as :math:`\tau \to 0`, where the variance grows. ``f`` must be
  differentiable in its input (it is called with exact 0/1 or one-hot values).

  Args:
    f: the cost, differentiable in its (relaxed) input.
    logits: the logits.
    key: a PRNG key.
    num_samples: ``N`` (static).
    temperature: :math:`\tau > 0`.
    family: ``"bernoulli"`` or ``"categorical"``.
    return_per_sample: keep the per-sample estimates.
    sample_sharding: optional sharding of the leading sample axis.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> f = lambda b: jnp.sum((b - 0.45) ** 2)
    >>> straight_through_grad(f, jnp.zeros(3), jax.random.key(0), 10, temperature=0.5).grad.shape
    (3,)

  References:
    Bengio, Léonard & Courville, 2013 (straight-through). Jang, Gu & Poole,
    *Categorical Reparameterization with Gumbel-Softmax*, ICLR 2017.
  """
  check_temperature(temperature)
  fam, logits, n = prepare_discrete(f, logits, key, num_samples, family)
  check_differentiable(f, logits)

  def one(k):
    noise, _ = perturb(fam, k, logits)
    b = fam.hard(logits + noise)
    y_fn = lambda lg: straight_through(b, fam.soft(lg + noise, temperature))
    value, grad = jax.value_and_grad(lambda lg: f(y_fn(lg)))(logits)
    return grad, value

  per_sample, values = jax.vmap(one)(sample_keys(key, n, sample_sharding))
  return _estimate(per_sample, values, return_per_sample)


def gumbel_rao_grad(
  f: Callable[[Array], Array],
  logits: Array,
  key: Array,
  num_samples: int,
  *,
  temperature: float | Array = 1.0,
  num_conditional: int = 10,
  family: str = "bernoulli",
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
  (:func:`~gradest.conditional_gumbel`). As :math:`K \to \infty` this is the
  conditional expectation of :func:`straight_through_grad` given ``b``: the same mean
  (the same bias) with lower variance, for one evaluation of ``f``'s gradient per
  sample. **Biased**, like straight-through.

  Args:
    f: the cost, differentiable in its (relaxed) input.
    logits: the logits.
    key: a PRNG key.
    num_samples: ``N`` (static).
    temperature: :math:`\tau > 0`.
    num_conditional: ``K >= 1`` conditional perturbations per sample (static).
    family: ``"bernoulli"`` or ``"categorical"``.
    return_per_sample: keep the per-sample estimates.
    sample_sharding: optional sharding of the leading sample axis.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> f = lambda b: jnp.sum((b - 0.45) ** 2)
    >>> gumbel_rao_grad(f, jnp.zeros(3), jax.random.key(0), 10, num_conditional=4).grad.shape
    (3,)

  References:
    Paulus, Maddison & Krause, *Rao-Blackwellizing the Straight-Through Gumbel-Softmax
    Gradient Estimator*, ICLR 2021.
  """
  check_temperature(temperature)
  k_cond = check_positive_int(num_conditional, "num_conditional")
  fam, logits, n = prepare_discrete(f, logits, key, num_samples, family)
  check_differentiable(f, logits)

  def one(k):
    cost = lambda lg: f(_gumbel_rao_sample(fam, k, lg, temperature, k_cond))  # noqa: E731
    value, grad = jax.value_and_grad(cost)(logits)
    return grad, value

  per_sample, values = jax.vmap(one)(sample_keys(key, n, sample_sharding))
  return _estimate(per_sample, values, return_per_sample)


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
  return _gumbel_rao_sample(fam, key, work, temperature, k_cond).astype(logits.dtype)


def _gumbel_rao_sample(fam, key, logits, temperature, num_conditional):
  """The exact sample of ``key``, with the mean conditional relaxed sample's gradient."""
  noise, key_c = perturb(fam, key, logits)
  b = jax.lax.stop_gradient(fam.hard(logits + noise))
  cond = jax.vmap(lambda kc: fam.conditional(kc, logits, b) - logits)(
    jax.random.split(key_c, num_conditional)
  )
  cond = jax.lax.stop_gradient(cond)
  soft = jnp.mean(jax.vmap(lambda g: fam.soft(logits + g, temperature))(cond), axis=0)
  return straight_through(b, soft)
