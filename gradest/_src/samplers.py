r"""Candidate (noise) samplers for large vocabularies, and candidate sampling.

A sampler is a fixed distribution :math:`q` over the classes ``0 .. V-1`` that the
sampled losses (:mod:`gradest._src.nce`) draw their negatives from. Every sampler is a
pytree (it crosses ``jax.jit`` and ``jax.vmap`` boundaries; ``num_classes`` is static)
with

* ``sample(key, shape)``: int32 class ids drawn with replacement, **O(1) per draw**
  (no ``N x V`` array of Gumbel noise, no ``O(log V)`` search);
* ``log_prob(ids)``: :math:`\log q(\mathrm{ids})` in float32;
* ``expected_count(ids, num_draws, unique=False)`` and ``log_expected_count``: how
  often ``ids`` are expected among the candidates, the quantity the losses correct by.
  Drawing ``n`` candidates with replacement, it is :math:`n\,q(w)`; drawing until
  ``num_sampled`` distinct candidates are found in ``n`` tries, it is the probability
  of being among them, :math:`1 - (1 - q(w))^n`, computed as
  ``-expm1(n * log1p(-q))`` (TensorFlow's rule).

The three families are

* :class:`UniformSampler`: :math:`q(w) = 1/V`;
* :class:`LogUniformSampler`: the Zipfian :math:`q(w) = \log\frac{w+2}{w+1} / \log(V+1)`
  of TensorFlow's ``log_uniform_candidate_sampler`` (for ids sorted by decreasing
  frequency), sampled by inversion;
* :class:`UnigramSampler`: :math:`q(w) \propto \mathrm{count}(w)^{\alpha}` (word2vec's
  distortion :math:`\alpha = 0.75`), sampled by Walker's alias method from a table built
  exactly, in integer arithmetic, by prefix sums and a merge, concrete or under
  ``jax.jit`` (:func:`unigram_sampler`).

:func:`sample_candidates` draws the negatives for a batch as TensorFlow's candidate
samplers do (one set shared by the batch, or one set per example), with or without
replacement (``unique``), optionally never drawing the batch's true labels, and returns
the log expected counts of the true and the sampled classes.
"""

from __future__ import annotations

import abc
import dataclasses
import functools
import math
import operator
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gradest._src.base import Array, check_key, check_positive_int, is_concrete

Shape = int | Sequence[int]


def _shape(shape: Shape) -> tuple[int, ...]:
  if isinstance(shape, int):
    return (shape,)
  return tuple(operator.index(s) for s in shape)


def check_num_classes(num_classes: Any) -> int:
  n = check_positive_int(num_classes, "num_classes")
  if n >= 2**31:
    raise ValueError(f"num_classes must be < 2**31 (int32 class ids), got {n}.")
  return n


class Sampler(abc.ABC):
  """Base class of the candidate samplers: a fixed distribution over ``num_classes`` ids."""

  num_classes: int

  @abc.abstractmethod
  def sample(self, key: Array, shape: Shape = ()) -> Array:
    """Draws int32 ids of shape ``shape``, independently, with replacement."""

  @abc.abstractmethod
  def log_prob(self, ids: Array) -> Array:
    r""":math:`\log q(\mathrm{ids})` (float32, the shape of ``ids``)."""

  def probs(self) -> Array:
    """The whole distribution, shape ``(num_classes,)`` (O(V): for checks and plots)."""
    return jnp.exp(self.log_prob(jnp.arange(self.num_classes, dtype=jnp.int32)))

  def log_expected_count(self, ids: Array, num_draws: Any, *, unique: bool = False) -> Array:
    r"""Log of the expected number of times ``ids`` appear among the candidates.

    Args:
      ids: class ids, any shape.
      num_draws: the number of draws: ``num_sampled`` with replacement, or the number
        of tries it took to find ``num_sampled`` distinct candidates (``unique``).
        A scalar, or an array broadcastable to ``ids``.
      unique: whether the candidates were drawn until distinct.

    Returns:
      :math:`\log(n\,q)`, or :math:`\log(1 - (1-q)^n)` when ``unique``; float32.
    """
    return log_expected_count(self.log_prob(ids), num_draws, unique=unique)

  def expected_count(self, ids: Array, num_draws: Any, *, unique: bool = False) -> Array:
    """The expected count itself: ``exp(log_expected_count(...))``."""
    return jnp.exp(self.log_expected_count(ids, num_draws, unique=unique))


class _StaticSampler(Sampler):
  """A sampler with no arrays: its pytree has no leaves and its class in the static data.

  The class name is part of the static data so that two families with the same
  ``num_classes`` never share a tree structure (and so a compiled function).
  """

  def tree_flatten(self):
    return (), (type(self).__name__, self.num_classes)

  @classmethod
  def tree_unflatten(cls, aux, children):
    del children
    return cls(aux[1])


def log_expected_count(log_q: Array, num_draws: Any, *, unique: bool = False) -> Array:
  r""":math:`\log(n q)`, or :math:`\log(1 - (1 - q)^n)` for unique sampling, from :math:`\log q`."""
  log_q = jnp.asarray(log_q, jnp.float32)
  n = jnp.asarray(num_draws, jnp.float32)
  if not unique:
    return jnp.log(n) + log_q
  # 1 - (1 - q)^n = -expm1(n log1p(-q)): no cancellation for q << 1. No draws give an
  # expected count of 0 (log -inf) also where q = 1 (0 * log 0 would be NaN).
  log_none = jnp.where(n > 0, n * jnp.log1p(-jnp.exp(log_q)), 0.0)
  return jnp.log(-jnp.expm1(log_none))


@jax.tree_util.register_pytree_node_class
@dataclasses.dataclass(frozen=True)
class UniformSampler(_StaticSampler):
  r"""Uniform candidates, :math:`q(w) = 1/V`.

  A draw is the integer part of :math:`u V / 2^{64}` for one 64-bit random word
  :math:`u`, so every class has probability :math:`1/V` to within :math:`2^{-64}` for
  any ``V < 2**31`` (reducing one 32-bit word modulo :math:`V` would favour the low ids
  by up to :math:`V / 2^{32}`: 12% at ``V = 1.6e9``).

  Examples:
    >>> import jax
    >>> s = UniformSampler(10)
    >>> s.sample(jax.random.key(0), (3,)).shape, float(s.expected_count(0, 5))
    ((3,), 0.5)
  """

  num_classes: int

  def __post_init__(self):
    object.__setattr__(self, "num_classes", check_num_classes(self.num_classes))

  def sample(self, key: Array, shape: Shape = ()) -> Array:
    check_key(key)
    shape = _shape(shape)
    return _uniform_draw(key, math.prod(shape), self.num_classes)[0].reshape(shape)

  def log_prob(self, ids: Array) -> Array:
    ids = jnp.asarray(ids)
    return jnp.full(ids.shape, -math.log(self.num_classes), jnp.float32)


@jax.tree_util.register_pytree_node_class
@dataclasses.dataclass(frozen=True)
class LogUniformSampler(_StaticSampler):
  r"""TensorFlow's log-uniform (Zipfian) sampler.

  .. math::
    q(w) = \frac{\log(w + 2) - \log(w + 1)}{\log(V + 1)}, \qquad w = 0, \dots, V-1,

  which suits ids sorted by decreasing frequency (id 0 the most frequent). A draw is
  :math:`\lfloor e^{u \log(V+1)} \rfloor - 1` for a uniform :math:`u` (inversion), from
  two 32-bit random words, computed so that the rarest ids of a vocabulary of millions
  still get their mass: a plain float32 :math:`u` (24 bits) and ``exp`` would give many
  of them none or double.

  Examples:
    >>> import jax
    >>> s = LogUniformSampler(1000)
    >>> ids = s.sample(jax.random.key(0), (5,))
    >>> ids.dtype, bool((ids >= 0).all() & (ids < 1000).all())
    (dtype('int32'), True)

  References:
    TensorFlow, ``tf.random.log_uniform_candidate_sampler``. Mikolov et al.,
    *Strategies for training large scale neural network language models*, 2011.
  """

  num_classes: int

  def __post_init__(self):
    object.__setattr__(self, "num_classes", check_num_classes(self.num_classes))

  def sample(self, key: Array, shape: Shape = ()) -> Array:
    check_key(key)
    bits = jax.random.bits(key, (2,) + _shape(shape), jnp.uint32)
    return _log_uniform_ids(bits[0], bits[1], self.num_classes)

  def log_prob(self, ids: Array) -> Array:
    w = jnp.asarray(ids).astype(jnp.float32)
    # log((w + 2) / (w + 1)) = log1p(1 / (w + 1)): accurate for large w.
    return jnp.log(jnp.log1p(1.0 / (w + 1.0))) - math.log(math.log(self.num_classes + 1.0))


_LOG_UNIFORM_BLOCKS = 2**14


@functools.partial(jax.jit, static_argnums=2)
def _log_uniform_ids(block: Array, fraction: Array, num_classes: int) -> Array:
  r"""Inversion of the log-uniform law, exact to about 1e-4 of a class in float32.

  A draw is :math:`\lfloor x \rfloor - 1` with :math:`x = (V+1)^u` log-uniform on
  :math:`[1, V+1)`. Splitting :math:`u = (j + v)/M` into one of :math:`M` equal-mass
  blocks and a position in it, :math:`x = T_j + (T_{j+1} - T_j)\,
  \mathrm{expm1}(v s)/\mathrm{expm1}(s)` with :math:`T_j = (V+1)^{j/M}` and
  :math:`s = \log(V+1)/M`. The block starts are split on the host, in float64, into an
  integer part and a fraction, so float32 only ever carries the offset inside a block
  (at most ``V/1000`` ids wide): each class gets its mass to about 0.02% at
  ``V = 10^6`` and 0.4% at ``V = 10^7``, where a float32 ``exp(u log(V+1))`` is off by
  20% on average at the tail.

  Args:
    block: uint32 random bits; the top 14 choose the block.
    fraction: uint32 random bits; the top 24 give :math:`v`.
    num_classes: ``V``.
  """
  m = _LOG_UNIFORM_BLOCKS
  log_range = math.log(num_classes + 1.0)
  starts = np.exp(np.arange(m + 1, dtype=np.float64) * (log_range / m))
  base = np.floor(starts[:-1])
  offset = jnp.asarray(starts[:-1] - base, jnp.float32)
  width = jnp.asarray(np.diff(starts), jnp.float32)
  step = log_range / m
  j = (block >> 18).astype(jnp.int32)
  v = (fraction >> 8).astype(jnp.float32) * (2.0**-24)
  x = v * step  # <= log(2^31) / 2^14 < 1.4e-3: three Taylor terms give expm1 to 1e-13
  inside = offset[j] + width[j] * (x * (1.0 + x * (0.5 + x / 6.0)) / math.expm1(step))
  ids = jnp.asarray(base, jnp.int32)[j] - 1 + jnp.floor(inside).astype(jnp.int32)
  return jnp.clip(ids, 0, num_classes - 1)


@jax.tree_util.register_pytree_node_class
@dataclasses.dataclass(frozen=True)
class UnigramSampler(Sampler):
  r"""Any fixed distribution over the classes, sampled by Walker's alias method.

  Build it with :func:`unigram_sampler` (from counts and a distortion power). The table
  has one bucket per class, each of probability :math:`1/V`: bucket :math:`b` gives
  class :math:`b` with probability ``threshold[b] / 2**32`` and ``alias[b]`` otherwise,
  so the table samples

  .. math::
    \tilde q(c) = \frac{1}{V}\Big(\frac{t_c}{2^{32}}
      + \sum_{b:\ \mathrm{alias}[b] = c} \big(1 - \frac{t_b}{2^{32}}\big)\Big).

  A draw takes one 64-bit random word :math:`u` (the key data of
  ``jax.random.split(key, n)``: with the default Threefry keys, one block per draw where
  ``jax.random.bits`` spends one per 32-bit word) and reads both the bucket and the coin
  from the fixed-point product :math:`u V / 2^{64}`: its integer part is the bucket, the
  32 bits after the point are the coin. Each bucket then has probability :math:`1/V` to
  within :math:`2^{-64}`, and given the bucket the coin is below ``threshold[b]`` with
  probability ``threshold[b] / 2**32`` to within :math:`V 2^{-63}`: the draws follow
  :math:`\tilde q` exactly for any ``V < 2**31``. A draw is O(1): integer arithmetic and
  two gathers.

  Attributes:
    log_probs: :math:`\log q`, float32 ``(V,)`` (``-inf`` for classes of zero weight).
    threshold: the buckets' acceptance thresholds in units of :math:`2^{-32}`, uint32
      ``(V,)``. A full bucket has ``alias[b] == b``.
    alias: each bucket's second class, int32 ``(V,)``.
  """

  log_probs: Array
  threshold: Array
  alias: Array

  @property
  def num_classes(self) -> int:
    return self.log_probs.shape[0]

  def tree_flatten(self):
    return (self.log_probs, self.threshold, self.alias), type(self).__name__

  @classmethod
  def tree_unflatten(cls, aux, children):
    del aux
    return cls(*children)

  def sample(self, key: Array, shape: Shape = ()) -> Array:
    check_key(key)
    return _alias_draw(key, self.threshold, self.alias, _shape(shape))

  def log_prob(self, ids: Array) -> Array:
    return self.log_probs[jnp.asarray(ids)]

  def probs(self) -> Array:
    return jnp.exp(self.log_probs)


@functools.partial(jax.jit, static_argnums=3)
def _alias_draw(key: Array, threshold: Array, alias: Array, shape: tuple[int, ...]) -> Array:
  bucket, coin = _uniform_draw(key, math.prod(shape), threshold.shape[0])
  ids = jnp.where(coin < threshold[bucket], bucket, alias[bucket])
  return ids.reshape(shape)


def _uniform_draw(key: Array, num: int, num_buckets: int) -> tuple[Array, Array]:
  """``num`` uniform buckets in ``[0, num_buckets)`` and 32-bit coins, one 64-bit word each.

  The word is the key data of ``jax.random.split(key, num)``; see :func:`_bucket_and_coin`.
  """
  words = jax.random.key_data(jax.random.split(key, num)).reshape(num, -1)
  return _bucket_and_coin(words[:, 0], words[:, 1], num_buckets)


def _bucket_and_coin(high: Array, low: Array, num_buckets: int) -> tuple[Array, Array]:
  """Integer part and the next 32 bits of ``(high * 2**32 + low) * num_buckets / 2**64``."""
  h0, l0 = _mul_u32(high, num_buckets)
  h1, _ = _mul_u32(low, num_buckets)
  coin = l0 + h1
  return (h0 + (coin < l0).astype(jnp.uint32)).astype(jnp.int32), coin


def unigram_sampler(counts: Array, power: float = 0.75) -> UnigramSampler:
  r"""The unigram sampler :math:`q(w) \propto \mathrm{count}(w)^{\alpha}` (alias method).

  The table is built exactly, in integer arithmetic (64-bit integers as pairs of uint32
  words, without ``jax_enable_x64``), by the same jitted program for concrete counts and
  for traced ones (inside ``jax.jit``, e.g. from running counts in a training step);
  only :math:`\log \mathrm{count}` is taken in float64 when the counts are concrete.
  Each class gets an integer mass :math:`m_w`, in units of :math:`2^{-32}` of a bucket,
  with :math:`\sum_w m_w = V\,2^{32}` exactly:

  1. :math:`m_w = \mathrm{round}(2^{32} V w_w / s)` from the float32 weights
     :math:`w = e^{\log w - \max \log w}` and their float32 sum :math:`s`; the exact
     total :math:`T = \sum m_w` (64-bit) also corrects :math:`\log q` for the error of
     :math:`s`;
  2. twice, each mass is scaled by :math:`V 2^{32} / T` in float32 (each pass leaves a
     total within about :math:`V/2` of :math:`V 2^{32}`);
  3. the rest :math:`\Delta` (:math:`|\Delta| < V`) goes to the classes of mass at
     least :math:`2^{16}` in proportion to their masses: shares rounded down, then the
     few units left evenly by index. No class's part differs from its exact share by
     more than :math:`3 + 2^{-19} V` units.

  The alias table is then Walker's, built without a sequential work list (the sweep of
  Hübschle-Schneider and Sanders): with the light classes (:math:`m_w < 2^{32}`) and the
  heavy ones in index order, the exact 64-bit prefix sums :math:`D` of the lights'
  deficits :math:`2^{32} - m` and :math:`E` of the heavies' surpluses :math:`m - 2^{32}`
  are merged (a merge path: binary searches split the merge into blocks, each merged
  sequentially); light :math:`i` is filled by the first heavy :math:`j` with
  :math:`E_j \ge D_{i-1}`, and heavy :math:`j`, once drained by the first light with
  :math:`D_i > E_j`, keeps :math:`2^{32} - (D_i - E_j)` and is filled by the next
  heavy. Every threshold is an exact integer, so the table samples
  :math:`\tilde q(w) = m_w / (V 2^{32})` exactly. With :math:`\hat q` the float32
  :math:`w / s` that ``log_probs`` holds,

  .. math::
    |\tilde q(w) - \hat q(w)| \le 2^{-21}\, \hat q(w) + \frac{2^{-29}}{V} + 2^{-50},

  and :math:`\hat q` is :math:`q` to float32 rounding of :math:`\alpha \log
  \mathrm{count}` and of the exponential (a relative :math:`2^{-24}(|\log(q/q_{\max})|
  + 2)`). The work is :math:`O(V \log V)` (the merge's searches; :math:`O(V)` otherwise)
  and the memory a few arrays of ``V`` words.

  Args:
    counts: nonnegative weights of shape ``(V,)`` (word counts, or probabilities with
      ``power=1``). Classes of zero weight are never drawn; as true labels their
      correction is infinite, so give them a pseudo-count if they can occur. Traced
      counts are not checked: they must be finite with at least one positive entry.
    power: the distortion :math:`\alpha \ge 0` (word2vec's 0.75; 1 is the unigram
      itself, 0 the uniform distribution over the classes of nonzero count).

  Returns:
    An :class:`UnigramSampler`.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> s = unigram_sampler(jnp.array([100, 10, 1, 0]), power=1.0)
    >>> [round(float(p), 4) for p in s.probs()]
    [0.9009, 0.0901, 0.009, 0.0]
    >>> s.sample(jax.random.key(0), (1000,)).max() < 3
    Array(True, dtype=bool)
    >>> traced = jax.jit(unigram_sampler)(jnp.array([100.0, 10.0, 1.0, 0.0]), 1.0)
    >>> [round(float(p), 4) for p in traced.probs()]
    [0.9009, 0.0901, 0.009, 0.0]

  References:
    Walker, *An efficient method for generating discrete random variables with general
    distributions*, ACM TOMS 1977. Vose, *A linear algorithm for generating random
    numbers with a given distribution*, IEEE TSE 1991. Hübschle-Schneider & Sanders,
    *Parallel weighted random sampling*, ESA 2019 (the sweeping construction). Odeh,
    Green, Mwassi, Shmueli & Birk, *Merge path: parallel merging made simple*, IPDPS
    workshops 2012. Mikolov et al., *Distributed representations of words and phrases*,
    NeurIPS 2013.
  """
  try:
    power_value = float(power)
  except (TypeError, jax.errors.ConcretizationTypeError):
    power_value = None
  if power_value is not None and not (power_value >= 0.0 and math.isfinite(power_value)):
    raise ValueError(
      f"power must be a finite number >= 0, got {power}; word2vec uses 0.75, 1 keeps "
      "the counts' own distribution."
    )
  exponent = power if power_value is None else power_value
  if is_concrete(counts):
    weights = np.asarray(counts, np.float64)
    _check_counts_shape(weights.shape)
    if not np.all(np.isfinite(weights)):
      raise ValueError("counts must be finite.")
    if np.any(weights < 0):
      bad = int(np.argmax(weights < 0))
      raise ValueError(
        f"counts must be nonnegative, got counts[{bad}] = {weights[bad]}; pass the number "
        "of occurrences of each class."
      )
    if not np.any(weights > 0):
      raise ValueError("counts must have at least one positive entry.")
    # alpha log(count / max count) in float64, then float32: exact near the top.
    log_ratio = np.full(weights.shape, -np.inf)
    positive = weights > 0
    np.log(weights, out=log_ratio, where=positive)
    log_ratio -= math.log(weights.max())
    if power_value is not None:
      np.multiply(log_ratio, power_value, out=log_ratio, where=positive)
      log_w = jnp.asarray(log_ratio.astype(np.float32))
    else:
      log_ratio = jnp.asarray(log_ratio.astype(np.float32))
      log_w = jnp.where(log_ratio > -jnp.inf, log_ratio * exponent, -jnp.inf)
    del log_ratio, positive
  else:
    counts = jnp.asarray(counts)
    _check_counts_shape(counts.shape)
    weights = counts.astype(jnp.promote_types(counts.dtype, jnp.float32))
    positive = weights > 0
    log_counts = jnp.log(jnp.where(positive, weights, 1.0))
    # Zero counts stay at probability 0 for every power (0 ** 0 counts as 0).
    top = jnp.max(jnp.where(positive, log_counts, -jnp.inf))
    log_w = jnp.where(positive, (log_counts - top) * exponent, -jnp.inf)
  log_probs, threshold, alias = _alias_build(log_w)
  return UnigramSampler(log_probs=log_probs, threshold=threshold, alias=alias)


def _check_counts_shape(shape: tuple[int, ...]) -> None:
  if len(shape) != 1 or shape[0] < 1:
    raise ValueError(f"counts must have shape (num_classes,), got shape {tuple(shape)}.")
  check_num_classes(shape[0])


# --------------------------------------------------------------------------------------
# Exact unsigned 64-bit arithmetic on (high, low) pairs of uint32 arrays, without
# jax_enable_x64: sums, prefix sums and comparisons of integers below 2**64.
# --------------------------------------------------------------------------------------

_TWO32 = 2.0**32


def _u64_add(a, b):
  low = a[1] + b[1]
  return a[0] + b[0] + (low < a[1]).astype(jnp.uint32), low


def _u64_sub(a, b):
  """``a - b`` modulo ``2**64``."""
  return a[0] - b[0] - (a[1] < b[1]).astype(jnp.uint32), a[1] - b[1]


def _u64_le(a, b):
  return (a[0] < b[0]) | ((a[0] == b[0]) & (a[1] <= b[1]))


def _u64_where(cond, a, b):
  return jnp.where(cond, a[0], b[0]), jnp.where(cond, a[1], b[1])


def _u32_from_float(x):
  """Exact uint32 of an integer-valued float32 ``0 <= x < 2**32`` (via 16-bit halves)."""
  top = jnp.floor(x * 2.0**-16)
  bottom = x - top * 2.0**16
  return (top.astype(jnp.int32).astype(jnp.uint32) << 16) | bottom.astype(jnp.int32).astype(
    jnp.uint32
  )


def _u64_from_float(x):
  """Exact ``(high, low)`` of an integer-valued float32 ``0 <= x < 2**64``."""
  high = jnp.floor(x * (1.0 / _TWO32))
  return _u32_from_float(high), _u32_from_float(x - high * _TWO32)


def _u64_to_float(a):
  return a[0].astype(jnp.float32) * _TWO32 + a[1].astype(jnp.float32)


def _i64_to_float(a):
  """float32 of ``a`` read as a two's complement signed 64-bit integer."""
  negative = a[0] >= jnp.uint32(2**31)
  magnitude = _u64_where(negative, _u64_sub((jnp.uint32(0), jnp.uint32(0)), a), a)
  return jnp.where(negative, -1.0, 1.0) * _u64_to_float(magnitude)


def _u64_sum(a):
  zero = jnp.zeros((), jnp.uint32)
  return jax.lax.reduce(a, (zero, zero), _u64_add, (0,))


def _u64_cumsum(a):
  """Inclusive prefix sums of 64-bit values whose total is below ``2**64``.

  Block by block (in place: the working memory is one block, not the ``V``-long buffers
  of a whole-array ``cumsum``). In a block the low words are summed modulo ``2**32``;
  each term is below ``2**32``, so the running sum wraps at most once per term, exactly
  where it decreases, and the high words add up those wraps.
  """
  v = a[0].shape[0]
  block = min(v, _CUMSUM_BLOCK)

  def add_block(k, state):
    high, low, carry = state
    # The last block is shifted back to end at V; its first positions are already done.
    start = jnp.minimum(k * block, v - block)
    fresh = start + jnp.arange(block) >= k * block
    part_high = jax.lax.dynamic_slice(high, (start,), (block,))
    part_low = jax.lax.dynamic_slice(low, (start,), (block,))
    sum_low = jnp.cumsum(jnp.where(fresh, part_low, 0), dtype=jnp.uint32)
    wrapped = jnp.append(jnp.uint32(0), (sum_low[1:] < sum_low[:-1]).astype(jnp.uint32))
    sum_high = jnp.cumsum(jnp.where(fresh, part_high, 0) + wrapped, dtype=jnp.uint32)
    total = _u64_add((sum_high, sum_low), carry)
    high = jax.lax.dynamic_update_slice(high, jnp.where(fresh, total[0], part_high), (start,))
    low = jax.lax.dynamic_update_slice(low, jnp.where(fresh, total[1], part_low), (start,))
    return high, low, (total[0][-1], total[1][-1])

  zero = jnp.zeros((), jnp.uint32)
  high, low, _ = jax.lax.fori_loop(0, -(-v // block), add_block, (a[0], a[1], (zero, zero)))
  return high, low


_CUMSUM_BLOCK = 2**16


def _cumsum(x: Array) -> Array:
  """Inclusive prefix sums of an integer array, block by block and in place.

  ``jnp.cumsum`` over ``V`` elements keeps partial sums as long as its input; one block
  at a time, the working memory is one block.
  """
  v = x.shape[0]
  block = min(v, _CUMSUM_BLOCK)

  def add_block(k, state):
    x, carry = state
    start = jnp.minimum(k * block, v - block)
    fresh = start + jnp.arange(block) >= k * block
    part = jax.lax.dynamic_slice(x, (start,), (block,))
    total = jnp.cumsum(jnp.where(fresh, part, 0), dtype=x.dtype) + carry
    x = jax.lax.dynamic_update_slice(x, jnp.where(fresh, total, part), (start,))
    return x, total[-1]

  return jax.lax.fori_loop(0, -(-v // block), add_block, (x, jnp.zeros((), x.dtype)))[0]


def _mul_u32(a: Array, b: int) -> tuple[Array, Array]:
  """``(high, low)`` words of ``a * b`` for uint32 ``a`` and a Python int ``0 <= b < 2**32``."""
  b0, b1 = jnp.uint32(b & 0xFFFF), jnp.uint32(b >> 16)
  a0, a1 = a & 0xFFFF, a >> 16
  p00, p01, p10, p11 = a0 * b0, a0 * b1, a1 * b0, a1 * b1
  middle = (p00 >> 16) + (p01 & 0xFFFF) + (p10 & 0xFFFF)
  return p11 + (p01 >> 16) + (p10 >> 16) + (middle >> 16), a * jnp.uint32(b)


# --------------------------------------------------------------------------------------
# The alias table.
# --------------------------------------------------------------------------------------

_FULL_BUCKET = 0xFFFFFFFF  # threshold of a bucket that keeps its class (its alias is itself)


@functools.partial(jax.jit, donate_argnums=0)
def _alias_build(log_w: Array) -> tuple[Array, Array, Array]:
  """``(log_probs, threshold, alias)`` of the distribution ``exp(log_w)`` (normalized)."""
  log_probs, mass = _integer_masses(log_w)
  threshold, alias = _alias_sweep(mass)
  return log_probs, threshold, alias


def _integer_masses(log_w: Array) -> tuple[Array, tuple[Array, Array]]:
  """Normalized ``log_w`` and integer masses summing to ``V * 2**32`` exactly.

  See :func:`unigram_sampler` for the three steps and their error.
  """
  v = log_w.shape[0]
  top = jnp.max(log_w)
  w = jnp.exp(log_w - top)
  s = jnp.sum(w)
  mass = _u64_from_float(jnp.round(w * (v / s) * _TWO32))
  goal = (jnp.uint32(v), jnp.uint32(0))
  total = _u64_sum(mass)
  # sum(mass) = V 2^32 sum(w) / s, up to rounding: the exact total corrects log(s).
  log_norm = top + jnp.log(s) + jnp.log(_u64_to_float(total) / (v * _TWO32))

  def rescale(_, state):
    mass, total = state
    scale = jnp.clip(_i64_to_float(_u64_sub(goal, total)) / _u64_to_float(total), -0.5, 0.5)
    change = jnp.round(_u64_to_float(mass) * scale)
    step = _u64_from_float(jnp.abs(change))
    mass = _u64_where(change >= 0, _u64_add(mass, step), _u64_sub(mass, step))
    return mass, _u64_sum(mass)

  mass, total = jax.lax.fori_loop(0, 2, rescale, (mass, total))
  # The rest, |delta| < V, goes to the classes of mass >= 2^16 in proportion to their
  # masses: a share rounded down (so the shares never exceed |delta|), then what is left,
  # a few units per class at most, evenly by the classes' ranks.
  delta = _u64_sub(goal, total)
  negative = delta[0] >= jnp.uint32(2**31)
  size = jnp.where(negative, -delta[1], delta[1]).astype(jnp.int32)
  eligible = (mass[0] > 0) | (mass[1] >= 2**16)
  zero = jnp.zeros_like(mass[0])
  eligible_total = _u64_sum(_u64_where(eligible, mass, (zero, zero)))
  rate = size.astype(jnp.float32) / _u64_to_float(eligible_total)
  share = jnp.floor(_u64_to_float(mass) * rate * (1.0 - 2.0**-20))
  share = jnp.where(eligible, share, 0.0).astype(jnp.int32)
  left = size - jnp.sum(share)
  num_eligible = jnp.maximum(jnp.sum(eligible, dtype=jnp.int32), 1)
  rank = _cumsum(eligible.astype(jnp.int32)) - 1
  extra = left // num_eligible + (rank < left % num_eligible).astype(jnp.int32)
  part = (zero, (share + jnp.where(eligible, extra, 0)).astype(jnp.uint32))
  mass = _u64_where(negative, _u64_sub(mass, part), _u64_add(mass, part))
  return log_w - log_norm, mass


def _alias_sweep(mass: tuple[Array, Array]) -> tuple[Array, Array]:
  """Walker's table of integer masses summing to ``V * 2**32`` (the sweep, merged)."""
  v = mass[0].shape[0]
  light = mass[0] == 0  # mass < 2^32
  num_light = jnp.sum(light, dtype=jnp.int32)
  light_rank = _cumsum(light.astype(jnp.int32)) - 1
  index = jnp.arange(v, dtype=jnp.int32)
  # Sorted positions: the lights in index order, then the heavies in index order.
  position = jnp.where(light, light_rank, num_light + index - light_rank - 1)
  zeros = _zeros_from(position)
  order = _put(zeros, position, index + zeros)
  high, low = _take(mass[0], order), _take(mass[1], order)
  is_light = index < num_light
  # One prefix sum over the sorted classes: the lights' deficits 2^32 - m, then the
  # heavies' surpluses m - 2^32. For p < L it is D_{p+1}; for p >= L it is D_L + E.
  prefix = _u64_cumsum(
    (jnp.where(is_light, (low == 0).astype(jnp.uint32), high - 1), jnp.where(is_light, -low, low))
  )
  last_light = jnp.maximum(num_light - 1, 0)
  has_light = num_light > 0
  deficit = (
    jnp.where(has_light, prefix[0][last_light], jnp.uint32(0)),
    jnp.where(has_light, prefix[1][last_light], jnp.uint32(0)),
  )
  merged = _merge(prefix, num_light, deficit)
  # Heavies are drained except those whose prefix reaches the total (the last ones); the
  # prefix is nondecreasing, so they start at the number of positions below the total.
  total = (prefix[0][-1], prefix[1][-1])
  first_full = jnp.sum(~_u64_le(total, prefix), dtype=jnp.int32)
  drained = ~is_light & (index < first_full)
  # Thresholds are below 2^32: the low words of the prefix sums give them exactly.
  low = prefix[1]
  previous = jnp.where(index == 0, jnp.uint32(0), low[jnp.maximum(index - 1, 0)])
  threshold = jnp.where(
    is_light,
    previous - low,  # the light's own mass: 2^32 minus its deficit (mod 2^32)
    jnp.where(
      drained,
      low - deficit[1] - low[jnp.maximum(merged - 1, 0)],  # 2^32 - (D_i - E_j)
      jnp.uint32(_FULL_BUCKET),
    ),
  )
  threshold = _put(_zeros_from(merged).astype(jnp.uint32), order, threshold)
  # The aliases only once the thresholds are out: XLA would otherwise hold the arrays of
  # both scatters (four arrays of V words) at once.
  threshold, merged = jax.lax.optimization_barrier((threshold, merged))
  alias = _take(order, jnp.where(is_light, merged, jnp.where(drained, index + 1, index)))
  return threshold, _put(_zeros_from(merged), order, alias)


def _take(x: Array, indices: Array) -> Array:
  """``x[indices]`` for in-range int32 ``indices``, without ``jnp``'s wrap of negatives.

  (The wrap is an elementwise select whose result XLA keeps as a second copy of the
  indices, an array of ``V`` words at the table's peak of memory.)
  """
  dims = jax.lax.GatherDimensionNumbers(
    offset_dims=(), collapsed_slice_dims=(0,), start_index_map=(0,)
  )
  return jax.lax.gather(
    x, indices[:, None], dims, (1,), mode=jax.lax.GatherScatterMode.PROMISE_IN_BOUNDS
  )


def _put(operand: Array, indices: Array, values: Array) -> Array:
  """``operand.at[indices].set(values)`` for distinct in-range int32 ``indices``."""
  dims = jax.lax.ScatterDimensionNumbers(
    update_window_dims=(), inserted_window_dims=(0,), scatter_dims_to_operand_dims=(0,)
  )
  return jax.lax.scatter(
    operand,
    indices[:, None],
    values,
    dims,
    unique_indices=True,
    mode=jax.lax.GatherScatterMode.PROMISE_IN_BOUNDS,
  )


def _zeros_from(nonnegative: Array) -> Array:
  """Zeros shaped like an int32 array of nonnegative values, computed from it.

  A scatter fills an array in place; if that array were a constant (``jnp.zeros``), XLA
  would allocate it at the start of the program and keep it alive beside everything
  computed before the scatter. Computed from ``nonnegative``, it is allocated only then.
  """
  return jnp.minimum(nonnegative, 0)


def _merge(prefix, num_light, deficit) -> Array:
  """The merge of the lights' and the heavies' keys, by merge path.

  Light ``i``'s key is the sum of the deficits before it plus ``D_L`` (the lights'
  total), heavy ``j``'s is ``prefix[L + j] = D_L + E_j``; a light precedes a heavy of
  equal key. Returns, at each sorted position, a light's donor (the sorted position of
  the first heavy after it in the merge) or the number of lights merged before a heavy.
  """
  v = prefix[0].shape[0]
  num_heavy = v - num_light
  block = min(v, 512)
  lanes = -(-v // block)

  def light_key(i):
    previous = jnp.clip(i - 1, 0, v - 1)
    first = i == 0
    exclusive = (
      jnp.where(first, jnp.uint32(0), prefix[0][previous]),
      jnp.where(first, jnp.uint32(0), prefix[1][previous]),
    )
    return _u64_add(exclusive, deficit)

  def heavy_key(j):
    p = jnp.clip(num_light + j, 0, v - 1)
    return prefix[0][p], prefix[1][p]

  # Each lane merges one block of the merged sequence; where it starts (how many lights
  # come before it) is a binary search along its diagonal.
  start = jnp.arange(lanes, dtype=jnp.int32) * block
  end = jnp.minimum(start + block, v)

  def search(_, bounds):
    lo, hi = bounds
    mid = (lo + hi) // 2
    more = (lo < hi) & _u64_le(light_key(mid), heavy_key(start - mid - 1))
    return jnp.where(more, mid + 1, lo), jnp.where(more | (lo >= hi), hi, mid)

  bounds = (jnp.maximum(start - num_heavy, 0), jnp.minimum(start, num_light))
  lights, _ = jax.lax.fori_loop(0, v.bit_length(), search, bounds)

  def step(t, state):
    i, j, merged = state
    take = (i < num_light) & ((j >= num_heavy) | _u64_le(light_key(i), heavy_key(j)))
    # A light's donor is the heavy it meets; a heavy records the lights before it.
    target = jnp.where(start + t < end, jnp.where(take, i, num_light + j), v)
    merged = merged.at[target].set(
      jnp.where(take, num_light + j, i), mode="drop", unique_indices=True
    )
    return i + take, j + (~take), merged

  # Every position is written once; the initial values (the high words of the prefix sums,
  # the last ones computed) only make XLA allocate the array here rather than earlier.
  merged = prefix[0].astype(jnp.int32)
  _, _, merged = jax.lax.fori_loop(0, block, step, (lights, start - lights, merged))
  return merged


# --------------------------------------------------------------------------------------
# Candidate sampling for a batch.
# --------------------------------------------------------------------------------------


class Candidates(NamedTuple):
  """Negatives drawn for a batch, with the corrections the sampled losses need.

  Attributes:
    sampled: int32 ids, ``(num_sampled,)`` when shared by the batch, else
      ``batch + (num_sampled,)``.
    true_log_expected_count: log expected count of each true label,
      ``batch + (num_true,)``, float32.
    sampled_log_expected_count: log expected count of each sampled id, the shape of
      ``sampled``, float32.
    num_tries: the number of draws that produced ``sampled`` (``num_sampled`` unless
      ``unique``), int32, ``()`` when shared, else ``batch``.
  """

  sampled: Array
  true_log_expected_count: Array
  sampled_log_expected_count: Array
  num_tries: Array


def check_labels(labels: Any, num_classes: int | None = None, name: str = "labels") -> Array:
  """Integer labels of shape ``batch + (num_true,)``; range-checked when concrete."""
  labels = jnp.asarray(labels)
  if not jnp.issubdtype(labels.dtype, jnp.integer):
    raise TypeError(f"{name} must be integer class ids, got dtype {labels.dtype}.")
  if labels.ndim < 1:
    raise ValueError(
      f"{name} must have shape batch + (num_true,), got a scalar; use labels[..., None] "
      "for one true class per example."
    )
  if num_classes is not None and is_concrete(labels) and labels.size:
    values = np.asarray(labels)
    low, high = int(values.min()), int(values.max())
    if low < 0 or high >= num_classes:
      raise ValueError(
        f"{name} must lie in [0, num_classes) = [0, {num_classes}), got values in [{low}, {high}]."
      )
  return labels.astype(jnp.int32)


def _sorted_unique_mask(sorted_ids: Array) -> Array:
  """True at the first copy of each value of a sorted array."""
  return jnp.concatenate([jnp.ones((1,), bool), sorted_ids[1:] != sorted_ids[:-1]])


def _member(sorted_set: Array, ids: Array) -> Array:
  """Whether each of ``ids`` is in ``sorted_set`` (a sorted 1-D array)."""
  if sorted_set.shape[0] == 0:
    return jnp.zeros(ids.shape, bool)
  pos = jnp.clip(jnp.searchsorted(sorted_set, ids), 0, sorted_set.shape[0] - 1)
  return sorted_set[pos] == ids


MAX_DRAW_ROUNDS = 2**14
"""Rounds of redrawing after which a set of candidates that is still not full stops."""


def _draw_set(sampler: Sampler, key: Array, num_sampled: int, unique: bool, excluded):
  """One set of candidates: ``(ids, num_tries, log_q_shift, filled)``.

  ``filled`` is False for slots left empty after :data:`MAX_DRAW_ROUNDS` rounds of
  redrawing (only when the classes left to draw carry almost no mass, or are fewer than
  ``num_sampled`` for unique sets: inputs that concrete calls refuse); their ids are 0.

  ``excluded`` is a sorted 1-D array of ids never to draw (or ``None``); draws that hit
  it are redrawn, which samples from ``q`` restricted to the other classes, whose log
  probabilities are ``log q - log(1 - Q_excluded)``; ``log_q_shift`` is that
  ``-log(1 - Q_excluded)`` (0 without exclusion).
  """
  shift = jnp.zeros((), jnp.float32)
  if excluded is not None:
    first = _sorted_unique_mask(excluded)
    mass = jnp.sum(jnp.where(first, jnp.exp(sampler.log_prob(excluded)), 0.0))
    shift = -jnp.log1p(-jnp.minimum(mass, 1.0))

  def hits(ids):
    return _member(excluded, ids) if excluded is not None else jnp.zeros(ids.shape, bool)

  if not unique:
    key, sub = jax.random.split(key)
    ids = sampler.sample(sub, (num_sampled,))

    def cond(state):
      return jnp.any(hits(state[1])) & (state[2] < MAX_DRAW_ROUNDS)

    def body(state):
      key, ids, rounds = state
      key, sub = jax.random.split(key)
      return key, jnp.where(hits(ids), sampler.sample(sub, (num_sampled,)), ids), rounds + 1

    filled = jnp.ones((num_sampled,), bool)
    if excluded is not None:
      _, ids, _ = jax.lax.while_loop(cond, body, (key, ids, jnp.zeros((), jnp.int32)))
      filled = ~hits(ids)
    return ids, jnp.asarray(num_sampled, jnp.int32), shift, filled

  # Unique: draw chunks of num_sampled with replacement until num_sampled distinct ids
  # are found; the distinct ids in order of first appearance are a sample without
  # replacement (each new one is q-distributed over the classes not yet drawn).
  empty = jnp.full((num_sampled,), -1, jnp.int32)

  def cond(state):
    return (state[2] < num_sampled) & (state[4] < MAX_DRAW_ROUNDS)

  def body(state):
    key, ids, count, tries, rounds = state
    key, sub = jax.random.split(key)
    chunk = sampler.sample(sub, (num_sampled,))
    valid = ~hits(chunk)
    order = jnp.argsort(chunk, stable=True)
    first_in_chunk = (
      jnp.zeros((num_sampled,), bool).at[order].set(_sorted_unique_mask(chunk[order]))
    )
    new = valid & first_in_chunk & ~_member(jnp.sort(ids), chunk)
    slot = count + jnp.cumsum(new) - 1
    take = new & (slot < num_sampled)
    ids = ids.at[jnp.where(take, slot, num_sampled)].set(chunk, mode="drop")
    filled = count + jnp.sum(new) >= num_sampled
    # Tries are draws from the restricted q: the valid draws up to the one that filled
    # the last slot (all of this chunk's valid draws if the set is not full yet).
    last = jnp.argmax(take & (slot == num_sampled - 1))
    used = jnp.where(filled, jnp.arange(num_sampled) <= last, True)
    tries = tries + jnp.sum(valid & used)
    return key, ids, jnp.minimum(count + jnp.sum(new), num_sampled), tries, rounds + 1

  zero = jnp.zeros((), jnp.int32)
  _, ids, _, tries, _ = jax.lax.while_loop(cond, body, (key, empty, zero, zero, zero))
  filled = ids >= 0
  return jnp.maximum(ids, 0), tries, shift, filled


def sample_candidates(
  sampler: Sampler,
  key: Array,
  labels: Array,
  num_sampled: int,
  *,
  unique: bool = False,
  shared_negatives: bool = True,
  exclude_true: bool = False,
) -> Candidates:
  r"""Draws negatives for a batch and the log expected counts the losses correct by.

  With ``unique=False`` the ``num_sampled`` candidates are independent draws from
  :math:`q` and a class's expected count is :math:`\mathrm{num\_sampled}\cdot q(w)`.
  With ``unique=True`` candidates are drawn until ``num_sampled`` distinct ones are
  found (a sample without replacement, TensorFlow's ``unique=True``); if that took
  ``n`` tries, the expected count is :math:`1 - (1 - q(w))^n`. That rule (TensorFlow's)
  treats ``n`` as fixed and so over-states the inclusion probability of the few classes
  whose expected count is near 1 (at ``V = 200, k = 16``, log-uniform: the most
  frequent class is included 92.8% of the time against 93.9% predicted); for classes
  with expected counts below 1/2 it agrees with Monte Carlo frequencies (tested).

  With ``exclude_true=True`` no candidate equals a true label (all the batch's labels
  when the negatives are shared, the example's own otherwise): draws that hit one are
  redrawn, so the candidates follow :math:`q` restricted to the other classes,
  :math:`q(w) / (1 - Q)` with :math:`Q` the excluded mass, and their expected counts
  use that. The true labels' expected counts stay those of :math:`q` (their correction
  in NCE needs the unrestricted noise density). Without exclusion, sampled ids that
  equal a true label are *accidental hits*, which the losses can mask
  (:func:`accidental_hits`).

  Concrete inputs are checked: every label must have :math:`q > 0`, and the classes left
  to draw must be enough to fill the set. Inside ``jax.jit`` these cannot be checked;
  there a set that is still not full after :data:`MAX_DRAW_ROUNDS` rounds of redrawing
  stops, and its empty slots get an infinite log expected count, so the losses leave
  them out (their corrected logits are :math:`-\infty`).

  Args:
    sampler: a :class:`Sampler`.
    key: a PRNG key.
    labels: int true labels, ``batch + (num_true,)``.
    num_sampled: negatives per set (static, ``>= 1``; ``<= num_classes`` when unique).
    unique: draw until distinct (static).
    shared_negatives: one set for the whole batch (TensorFlow's semantics, the cheapest:
      ``B x num_sampled`` logits from ``num_sampled`` gathered rows) or one set per
      example (static).
    exclude_true: never draw a true label (static).

  Returns:
    :class:`Candidates`.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> from gradest.samplers import LogUniformSampler
    >>> c = sample_candidates(LogUniformSampler(1000), jax.random.key(0),
    ...                       jnp.array([[3], [7]]), 8, unique=True)
    >>> c.sampled.shape, c.true_log_expected_count.shape, len(set(c.sampled.tolist()))
    ((8,), (2, 1), 8)

  References:
    TensorFlow, ``tf.random.log_uniform_candidate_sampler`` and
    ``tf.nn.compute_accidental_hits``; Jean et al., *On using very large target
    vocabulary for neural machine translation*, ACL 2015.
  """
  if not isinstance(sampler, Sampler):
    raise TypeError(
      "sampler must be a gradest sampler (UniformSampler, LogUniformSampler, "
      f"UnigramSampler), got {type(sampler).__name__}."
    )
  return checked_candidates(
    sampler,
    key,
    check_labels(labels, sampler.num_classes),
    num_sampled,
    unique=unique,
    shared_negatives=shared_negatives,
    exclude_true=exclude_true,
  )


def checked_candidates(
  sampler, key, labels, num_sampled, *, unique, shared_negatives, exclude_true
) -> Candidates:
  """:func:`sample_candidates` for ``labels`` already checked by :func:`check_labels`."""
  check_key(key)
  num_classes = sampler.num_classes
  k = check_positive_int(num_sampled, "num_sampled")
  per_set_excluded = labels.size if shared_negatives else labels.shape[-1]
  available = num_classes - (per_set_excluded if exclude_true else 0)
  if exclude_true and available < 1:
    raise ValueError(
      f"exclude_true=True leaves no class to draw: {per_set_excluded} labels per set "
      f"and num_classes={num_classes}; use exclude_true=False (and mask accidental hits)."
    )
  if unique and k > available:
    raise ValueError(
      f"num_sampled must be <= {available} for unique=True (num_classes={num_classes}"
      + (f" minus {per_set_excluded} excluded labels" if exclude_true else "")
      + f"), got {k}; use unique=False to draw with replacement."
    )

  if is_concrete(labels) and all(is_concrete(x) for x in jax.tree_util.tree_leaves(sampler)):
    _check_drawable(sampler, labels, k, unique, shared_negatives, exclude_true)
  return _sample_candidates(sampler, key, labels, k, unique, shared_negatives, exclude_true)


@functools.partial(jax.jit, static_argnums=(2,))
def _support_counts(log_probs: Array, sets: Array, exclude: bool) -> tuple[Array, Array, Array]:
  """On device: whether every id of ``sets`` has ``q > 0``, the number of classes with
  ``q > 0``, and the most of them one row of ``sets`` holds (distinct ids; 0 if not
  ``exclude``). Only these three scalars leave the device."""
  support = jnp.isfinite(log_probs)
  in_support = support[sets]
  excluded = jnp.zeros((), jnp.int32)
  if exclude:
    rows = jnp.sort(sets, axis=1)
    first = jnp.concatenate([jnp.ones_like(rows[:, :1], bool), rows[:, 1:] != rows[:, :-1]], 1)
    excluded = jnp.max(jnp.sum(support[rows] & first, axis=1))
  return jnp.all(in_support), jnp.sum(support), excluded


def _check_drawable(sampler, labels, k, unique, shared_negatives, exclude_true) -> None:
  """Concrete inputs: every label has ``q > 0`` and every set of candidates can be filled.

  The counts are reduced on the device (no copy of the ``V`` probabilities to the host);
  inside an outer trace, where they cannot be read, nothing is checked.
  """
  if not isinstance(sampler, UnigramSampler):
    return  # the uniform and log-uniform samplers give every class q > 0
  sets = labels.reshape(1, -1) if shared_negatives else labels.reshape(-1, labels.shape[-1])
  try:
    labels_ok, support, excluded = (
      int(x) for x in _support_counts(sampler.log_probs, sets, exclude_true)
    )
  except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
    return
  if not labels_ok:
    flat = np.asarray(labels).reshape(-1)
    bad = [int(i) for i in np.unique(flat) if not np.isfinite(float(sampler.log_probs[i]))][:5]
    raise ValueError(
      f"labels include classes the sampler never draws (q = 0), e.g. {bad}: the sampled "
      "losses correct each logit by log q, which is -inf there. Give every class that "
      "can be a label a nonzero weight (e.g. unigram_sampler(counts + 1))."
    )
  left = support - excluded
  if (unique or exclude_true) and left < (k if unique else 1):
    raise ValueError(
      f"the sampler gives {left} classes nonzero probability"
      + (" outside the excluded labels" if exclude_true else "")
      + f", too few to draw num_sampled={k}"
      + (" distinct candidates" if unique else " candidates")
      + "; use unique=False, a smaller num_sampled, exclude_true=False, or a sampler "
      "with wider support (e.g. unigram_sampler(counts + 1))."
    )


@functools.partial(jax.jit, static_argnums=(3, 4, 5, 6))
def _sample_candidates(sampler, key, labels, k, unique, shared_negatives, exclude_true):
  batch_shape = labels.shape[:-1]

  def one_set(key, excluded):
    excluded = jnp.sort(excluded.reshape(-1)) if exclude_true else None
    ids, tries, shift, filled = _draw_set(sampler, key, k, unique, excluded)
    log_ec = log_expected_count(sampler.log_prob(ids) + shift, tries, unique=unique)
    log_ec = jnp.where(filled, log_ec, jnp.inf)
    return ids, log_ec, tries

  if shared_negatives:
    sampled, sampled_log_ec, tries = one_set(key, labels)
    true_log_ec = log_expected_count(sampler.log_prob(labels), tries, unique=unique)
  elif not unique and not exclude_true:
    # Independent draws for every example: one bulk draw, no key per example.
    sampled = sampler.sample(key, batch_shape + (k,))
    sampled_log_ec = log_expected_count(sampler.log_prob(sampled), k)
    true_log_ec = log_expected_count(sampler.log_prob(labels), k)
    tries = jnp.full(batch_shape, k, jnp.int32)
  else:
    flat = labels.reshape((-1, labels.shape[-1]))
    keys = jax.random.split(key, flat.shape[0])
    sampled, sampled_log_ec, tries = jax.vmap(one_set)(keys, flat)
    true_log_ec = log_expected_count(sampler.log_prob(flat), tries[:, None], unique=unique)
    sampled = sampled.reshape(batch_shape + (k,))
    sampled_log_ec = sampled_log_ec.reshape(batch_shape + (k,))
    true_log_ec = true_log_ec.reshape(labels.shape)
    tries = tries.reshape(batch_shape)
  return Candidates(sampled, true_log_ec, sampled_log_ec, tries)


def accidental_hits(labels: Array, sampled: Array) -> Array:
  """Which sampled ids equal one of the example's true labels.

  Args:
    labels: int ``batch + (num_true,)``.
    sampled: int ``(num_sampled,)`` (shared by the batch) or ``batch + (num_sampled,)``.

  Returns:
    bool ``batch + (num_sampled,)``: ``True`` where a sampled id is an accidental hit.
    Pass ``sampled_mask=~hits`` to the losses to leave those logits out.

  Examples:
    >>> import jax.numpy as jnp
    >>> accidental_hits(jnp.array([[1], [2]]), jnp.array([2, 5, 1])).tolist()
    [[False, False, True], [True, False, False]]
  """
  labels = jnp.asarray(labels)
  sampled = jnp.asarray(sampled)
  if labels.ndim < 1:
    raise ValueError("labels must have shape batch + (num_true,), got a scalar.")
  batch_shape = labels.shape[:-1]
  if sampled.ndim == 1:
    sampled = jnp.broadcast_to(sampled, batch_shape + sampled.shape)
  elif sampled.shape[:-1] != batch_shape:
    raise ValueError(
      f"sampled must have shape (num_sampled,) or batch + (num_sampled,) with batch = "
      f"{batch_shape} (from labels), got {sampled.shape}."
    )
  return jnp.any(labels[..., :, None] == sampled[..., None, :], axis=-2)
