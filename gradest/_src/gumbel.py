r"""The Gumbel toolkit: noise, Gumbel-max, Gumbel-softmax, top-k and conditional Gumbels.

A Gumbel variable is :math:`G = -\log(-\log U)` with :math:`U \sim \mathcal U(0, 1)`.
With an **independent** :math:`G_i` per class, :math:`\arg\max_i(\ell_i + G_i)` is an
exact sample of :math:`\mathrm{Categorical}(\mathrm{softmax}(\ell))`, the top ``k``
indices of :math:`\ell + G` are a sample without replacement, and
:math:`\mathrm{softmax}((\ell + G)/\tau)` is the Concrete (Gumbel-softmax) relaxation.

The binary case is the logistic variable :math:`L = \log U - \log(1 - U)` (the
difference of two Gumbels): :math:`\mathbb 1[\ell + L > 0] \sim \mathrm{Bernoulli}
(\sigma(\ell))` and :math:`\sigma((\ell + L)/\tau)` is the binary Concrete sample.

Every function draws its uniforms in at least float32, kept inside
:math:`[\mathrm{tiny}, 1 - \varepsilon/2]`, so no logarithm ever sees 0 and the noise
is finite in every floating dtype, float16 and bfloat16 included. Functions of logits
compute in at least float32 (half-precision logits are upcast, perturbed, divided by the
temperature and normalized in float32) and return the logits' dtype, so a tiny
temperature or logits near float16's range give finite results on the simplex. Logits
are shifted by their maximum along the class axis before they are perturbed: every
result is invariant to adding a constant to the logits, as the distribution is.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

from gradest._src.base import Array, as_float_array, check_key, compute_dtype, open_uniform

Shape = Sequence[int]


def _noise_dtype(dtype: Any) -> Any:
  """The dtype the uniforms are drawn in: at least float32."""
  dtype = jnp.dtype(dtype)
  if not jnp.issubdtype(dtype, jnp.floating):
    raise TypeError(f"dtype must be a floating-point dtype, got {dtype}.")
  return compute_dtype(dtype)


def centered_logits(logits: Array, axis: int) -> Array:
  """``logits`` in the compute dtype, shifted so that their maximum along ``axis`` is 0.

  The shift changes no distribution over the classes; it keeps the perturbed logits in
  range whatever their offset, so results do not depend on it.
  """
  work = logits.astype(compute_dtype(logits.dtype))
  top = jnp.max(work, axis=axis, keepdims=True)
  return work - jax.lax.stop_gradient(jnp.where(jnp.isfinite(top), top, 0.0))


def check_temperature(temperature: Any) -> None:
  """Raises unless ``temperature`` is positive (checked when it is a concrete value)."""
  if jnp.ndim(temperature) != 0:
    raise ValueError(f"temperature must be a scalar, got shape {jnp.shape(temperature)}.")
  try:
    value = float(temperature)
  except (TypeError, jax.errors.ConcretizationTypeError):
    return  # a traced temperature (e.g. a learned one) is not checked
  if not value > 0.0:
    raise ValueError(
      f"temperature must be > 0, got {value}; small values (e.g. 0.1) approach the "
      "discrete sample, 1.0 is a common default."
    )


def _check_axis(logits: Array, axis: int) -> int:
  if logits.ndim < 1:
    raise ValueError("logits must have at least one axis (the classes), got a scalar.")
  try:
    return operator.index(axis) % logits.ndim
  except TypeError:
    raise TypeError(f"axis must be an int, got {type(axis).__name__}.") from None


def gumbel_noise(key: Array, shape: Shape = (), dtype: Any = jnp.float32) -> Array:
  r"""Standard Gumbel noise :math:`-\log(-\log U)`, finite in every floating dtype.

  The uniforms are drawn in float32 (or float64 for float64) inside
  :math:`[\mathrm{tiny}, 1)`, so the noise lies in about :math:`[-4.5, 16.6]` in float32
  and is then cast to ``dtype``: no ``log(0)``, no infinities in float16 or bfloat16.

  Args:
    key: a PRNG key.
    shape: the shape of the noise.
    dtype: a floating dtype (float32, float64, float16, bfloat16).

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> g = gumbel_noise(jax.random.key(0), (1000,), jnp.bfloat16)
    >>> bool(jnp.isfinite(g).all()), g.dtype
    (True, dtype(bfloat16))
  """
  check_key(key)
  work = _noise_dtype(dtype)
  u = open_uniform(key, shape, work)
  return (-jnp.log(-jnp.log(u))).astype(dtype)


def logistic_noise(key: Array, shape: Shape = (), dtype: Any = jnp.float32) -> Array:
  r"""Standard logistic noise :math:`\log U - \log(1 - U)`, finite in every floating dtype.

  :math:`\mathbb 1[\ell + L > 0]` is a :math:`\mathrm{Bernoulli}(\sigma(\ell))` sample.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> bool(jnp.isfinite(logistic_noise(jax.random.key(0), (1000,), jnp.float16)).all())
    True
  """
  check_key(key)
  work = _noise_dtype(dtype)
  u = open_uniform(key, shape, work)
  return (jnp.log(u) - jnp.log1p(-u)).astype(dtype)


def gumbel_max(key: Array, logits: Array, axis: int = -1) -> Array:
  r"""An exact categorical sample :math:`\arg\max_i (\ell_i + G_i)`, one Gumbel per class.

  Args:
    key: a PRNG key.
    logits: unnormalized log-probabilities; the classes lie along ``axis``.
    axis: the class axis.

  Returns:
    Integer class indices of shape ``logits.shape`` without ``axis``.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> gumbel_max(jax.random.key(0), jnp.log(jnp.array([[0.2, 0.8], [1.0, 0.0]]))).shape
    (2,)

  References:
    Gumbel, *Statistical theory of extreme values*, 1954. Maddison, Tarlow & Minka,
    *A* Sampling*, NeurIPS 2014.
  """
  logits = as_float_array(logits)
  axis = _check_axis(logits, axis)
  work = centered_logits(logits, axis)
  return jnp.argmax(work + gumbel_noise(key, logits.shape, work.dtype), axis=axis)


def gumbel_softmax(
  key: Array, logits: Array, temperature: float | Array, hard: bool = False, axis: int = -1
) -> Array:
  r"""A Concrete (Gumbel-softmax) sample, or its straight-through hard version.

  .. math::
    y = \mathrm{softmax}\big((\ell + G)/\tau\big), \qquad
    y_{\text{hard}} = \mathrm{onehot}(\arg\max y) + y - \bot(y).

  With ``hard=True`` the forward value is **exactly** one-hot (an exact categorical
  sample) and the backward pass is that of the soft sample ``y``: the straight-through
  Gumbel-softmax estimator, which is **biased** (its bias does not vanish as the number
  of samples grows, only as :math:`\tau \to 0`, where its variance grows).

  Args:
    key: a PRNG key.
    logits: unnormalized log-probabilities, classes along ``axis``.
    temperature: :math:`\tau > 0`, a scalar (may be a traced, learned value).
    hard: return the straight-through one-hot sample.
    axis: the class axis.

  Returns:
    An array of the shape and dtype of ``logits``, on the simplex along ``axis``.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> y = gumbel_softmax(jax.random.key(0), jnp.zeros(4), 0.5, hard=True)
    >>> float(y.sum()), float(y.max())
    (1.0, 1.0)

  References:
    Maddison, Mnih & Teh, *The Concrete Distribution*, ICLR 2017. Jang, Gu & Poole,
    *Categorical Reparameterization with Gumbel-Softmax*, ICLR 2017.
  """
  check_temperature(temperature)
  logits = as_float_array(logits)
  axis = _check_axis(logits, axis)
  work = centered_logits(logits, axis)
  perturbed = work + gumbel_noise(key, logits.shape, work.dtype)
  y = jax.nn.softmax(perturbed / jnp.asarray(temperature, work.dtype), axis=axis)
  y = y.astype(logits.dtype)
  if not hard:
    return y
  index = jnp.argmax(perturbed, axis=axis)
  return straight_through(_one_hot(index, logits.shape[axis], axis, y.dtype), y)


def binary_gumbel_softmax(
  key: Array, logits: Array, temperature: float | Array, hard: bool = False
) -> Array:
  r"""The binary Concrete sample :math:`\sigma((\ell + L)/\tau)`, or its straight-through version.

  The two-class case of :func:`gumbel_softmax` for independent Bernoulli variables
  with :math:`p = \sigma(\ell)` (``L`` logistic noise). With ``hard=True`` the forward
  value is the exact 0/1 sample :math:`\mathbb 1[\ell + L > 0]` and the backward pass is
  that of the soft sample (biased).

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> b = binary_gumbel_softmax(jax.random.key(0), jnp.zeros(5), 0.5, hard=True)
    >>> sorted(set(b.tolist())) <= [0.0, 1.0]
    True
  """
  check_temperature(temperature)
  logits = as_float_array(logits)
  work = logits.astype(compute_dtype(logits.dtype))
  z = work + logistic_noise(key, logits.shape, work.dtype)
  y = jax.nn.sigmoid(z / jnp.asarray(temperature, work.dtype)).astype(logits.dtype)
  if not hard:
    return y
  return straight_through((z > 0).astype(y.dtype), y)


def straight_through(hard: Array, soft: Array) -> Array:
  r"""``hard`` in the forward pass, the gradient of ``soft`` in the backward pass.

  Computed as :math:`h + s - \bot(s)`, which equals ``h`` exactly in floating point.
  """
  return hard + (soft - jax.lax.stop_gradient(soft))


def _one_hot(index: Array, num_classes: int, axis: int, dtype: Any) -> Array:
  return jax.nn.one_hot(index, num_classes, dtype=dtype, axis=axis)


def gumbel_top_k(key: Array, logits: Array, k: int, axis: int = -1) -> Array:
  r"""``k`` classes sampled without replacement: the top ``k`` of :math:`\ell + G`.

  The indices come in sampling order: the first is a categorical sample, the second a
  sample from the remaining classes renormalized, and so on.

  Args:
    key: a PRNG key.
    logits: unnormalized log-probabilities, classes along ``axis``.
    k: the number of distinct classes, ``1 <= k <= num_classes`` (static).
    axis: the class axis.

  Returns:
    Integer indices, with ``axis`` of size ``k``.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> idx = gumbel_top_k(jax.random.key(0), jnp.zeros(10), 3)
    >>> idx.shape, len(set(idx.tolist()))
    ((3,), 3)

  References:
    Kool, van Hoof & Welling, *Stochastic Beams and Where to Find Them: The
    Gumbel-Top-k Trick*, ICML 2019.
  """
  logits = as_float_array(logits)
  axis = _check_axis(logits, axis)
  num_classes = logits.shape[axis]
  try:
    k = operator.index(k)
  except TypeError:
    raise TypeError(f"k must be a Python int (static), got {type(k).__name__}.") from None
  if not 1 <= k <= num_classes:
    raise ValueError(
      f"k must satisfy 1 <= k <= number of classes ({num_classes}), got k={k}; "
      "sampling without replacement cannot return more classes than there are."
    )
  work = centered_logits(logits, axis)
  perturbed = jnp.moveaxis(work + gumbel_noise(key, logits.shape, work.dtype), axis, -1)
  _, index = jax.lax.top_k(perturbed, k)
  return jnp.moveaxis(index, -1, axis)


def truncated_gumbel(key: Array, location: Array, upper: Array) -> Array:
  r"""A Gumbel with location :math:`a` conditioned to lie below ``upper``.

  .. math::
    X = -\log\big(e^{-M} + e^{-a} E\big), \qquad E \sim \mathrm{Exp}(1),

  which has the CDF :math:`\exp(-e^{-(x - a)}) / \exp(-e^{-(M - a)})` for
  :math:`x \le M`. Computed as ``-logaddexp(-M, -a + log E)`` in at least float32:
  finite for any finite inputs, at most ``upper``, and differentiable in ``location``
  and ``upper`` (reparameterized).

  Args:
    key: a PRNG key.
    location: :math:`a`, any shape.
    upper: :math:`M`, broadcastable to ``location``.
  """
  location = as_float_array(location)
  work = compute_dtype(location.dtype)
  upper = jnp.asarray(upper, location.dtype)
  shape = jnp.broadcast_shapes(location.shape, upper.shape)
  log_e = _log_exponential(key, shape, work)
  x = -jnp.logaddexp(-upper.astype(work), -location.astype(work) + log_e)
  return x.astype(location.dtype)


def _log_exponential(key: Array, shape: Shape, dtype: Any) -> Array:
  """``log E`` for ``E ~ Exp(1)``, finite: ``log(-log U)`` with ``U`` in ``[tiny, 1)``."""
  work = _noise_dtype(dtype)
  u = open_uniform(key, shape, work)
  return jnp.log(-jnp.log(u)).astype(dtype)


def conditional_gumbel(key: Array, logits: Array, index: Array, axis: int = -1) -> Array:
  r"""Perturbed logits :math:`\ell + G` conditioned on :math:`\arg\max(\ell + G) = ` ``index``.

  The maximum :math:`M = \log\sum_i e^{\ell_i} - \log E_0` is independent of the
  argmax; given ``M`` the other coordinates are Gumbels with locations :math:`\ell_i`
  truncated below ``M`` (:func:`truncated_gumbel`). The result is a reparameterized
  function of ``logits`` (the noise is held fixed): the conditional sample REBAR,
  RELAX and Gumbel-Rao need.

  Args:
    key: a PRNG key.
    logits: unnormalized log-probabilities, classes along ``axis``.
    index: integer class indices of shape ``logits.shape`` without ``axis``.
    axis: the class axis.

  Returns:
    An array like ``logits`` whose argmax along ``axis`` is ``index``.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> z = conditional_gumbel(jax.random.key(0), jnp.array([3.0, 0.0, 0.0]), jnp.array(2))
    >>> int(jnp.argmax(z))
    2

  References:
    Paulus, Maddison & Krause, *Rao-Blackwellizing the Straight-Through Gumbel-Softmax
    Gradient Estimator*, ICLR 2021 (appendix). Tucker et al., *REBAR*, NeurIPS 2017.
  """
  logits = as_float_array(logits)
  axis = _check_axis(logits, axis)
  index = jnp.asarray(index)
  batch_shape = logits.shape[:axis] + logits.shape[axis + 1 :]
  if index.shape != batch_shape:
    raise ValueError(
      f"index must have the shape of logits without the class axis, {batch_shape}, got "
      f"{index.shape}."
    )
  k_max, k_rest = jax.random.split(key)
  work = logits.astype(compute_dtype(logits.dtype))
  log_z = jax.nn.logsumexp(work, axis=axis, keepdims=True)
  top = log_z - _log_exponential(k_max, log_z.shape, work.dtype)
  rest = truncated_gumbel(k_rest, work, top)
  # Cast to the logits' dtype, keeping every value finite there (the maximum of float16
  # logits near its range can exceed it by the noise).
  top, rest = (_finite_cast(x, logits.dtype) for x in (top, rest))
  # A truncated coordinate far below a huge maximum can round up to it; keep the argmax
  # strict (a measure-zero event, so no gradient is lost).
  below_top = jnp.nextafter(jax.lax.stop_gradient(top), jnp.asarray(-jnp.inf, top.dtype))
  rest = jnp.minimum(rest, below_top)
  chosen = _one_hot(index, logits.shape[axis], axis, jnp.bool_)
  return jnp.where(chosen, top, rest)


def _finite_cast(x: Array, dtype: Any) -> Array:
  """``x`` cast to ``dtype``, clipped to its finite range first."""
  info = jnp.finfo(dtype)
  return jnp.clip(x, float(info.min), float(info.max)).astype(dtype)


def conditional_logistic(key: Array, logits: Array, sample: Array) -> Array:
  r"""Perturbed logits :math:`z = \ell + L` conditioned on :math:`\mathbb 1[z > 0] = ` ``sample``.

  The binary counterpart of :func:`conditional_gumbel`. For ``sample == 1``, with
  :math:`V \sim \mathcal U(0, 1)`, :math:`z = \ell - \log(V\sigma(\ell)) + \log(1 -
  V\sigma(\ell))`, evaluated as
  :math:`\mathrm{softplus}(\ell) - \log V + \mathrm{logaddexp}(\log(1 - V),
  \log V + \log\sigma(-\ell))`, which is finite and on the right side of 0 for any
  logits; ``sample == 0`` is the mirror image. Reparameterized in ``logits``.

  Args:
    key: a PRNG key.
    logits: the Bernoulli logits, any shape.
    sample: 0/1 values of the same shape.
  """
  logits = as_float_array(logits)
  sample = jnp.asarray(sample)
  if sample.shape != logits.shape:
    raise ValueError(f"sample must have the shape of logits {logits.shape}, got {sample.shape}.")
  work = _noise_dtype(logits.dtype)
  u = open_uniform(key, logits.shape, work)
  log_v, log_1mv = jnp.log(u), jnp.log1p(-u)
  positive = sample > 0
  # Mirror the negative case onto the positive one: z | b=0 with logits l is -(z | b=1, -l).
  signed = jnp.where(positive, logits, -logits).astype(work)
  # signed - log sigmoid(signed) = softplus(signed): no cancellation for huge |logits|.
  z = jax.nn.softplus(signed) - log_v + jnp.logaddexp(log_1mv, log_v + jax.nn.log_sigmoid(-signed))
  # z > 0 exactly in the logits' dtype (rounding must not flip or zero it), and finite.
  info = jnp.finfo(logits.dtype)
  z = jnp.clip(z, float(info.tiny), float(info.max)).astype(logits.dtype)
  return jnp.where(positive, z, -z)
