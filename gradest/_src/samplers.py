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
  in :math:`O(V \log V)` by prefix sums (:func:`unigram_sampler`).

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
  # 1 - (1 - q)^n = -expm1(n log1p(-q)): no cancellation for q << 1.
  return jnp.log(-jnp.expm1(n * jnp.log1p(-jnp.exp(log_q))))


@jax.tree_util.register_pytree_node_class
@dataclasses.dataclass(frozen=True)
class UniformSampler(_StaticSampler):
  r"""Uniform candidates, :math:`q(w) = 1/V`.

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
    return jax.random.randint(key, _shape(shape), 0, self.num_classes, jnp.int32)

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

  Build it with :func:`unigram_sampler` (from counts and a distortion power). A draw
  takes a uniform bucket :math:`b` and one uniform coin: it is :math:`b` if the coin is
  below ``threshold[b]``, else ``alias[b]`` — two gathers, O(1) whatever ``V``.

  Attributes:
    log_probs: :math:`\log q`, float32 ``(V,)`` (``-inf`` for classes of zero weight).
    threshold: the alias table's acceptance probabilities, float32 ``(V,)``.
    alias: the alias table's second class of each bucket, int32 ``(V,)``.
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
  bucket_key, coin_key = jax.random.split(key)
  bucket = jax.random.randint(bucket_key, shape, 0, threshold.shape[0], jnp.int32)
  coin = jax.random.uniform(coin_key, shape, jnp.float32)
  return jnp.where(coin < threshold[bucket], bucket, alias[bucket])


def unigram_sampler(counts: Array, power: float = 0.75) -> UnigramSampler:
  r"""The unigram sampler :math:`q(w) \propto \mathrm{count}(w)^{\alpha}` (alias method).

  The alias table is built without a sequential work list: with the scaled weights
  :math:`p_w = V q(w)`, the light classes (:math:`p < 1`) are filled in order from the
  heavy ones (:math:`p \ge 1`) in order, and which heavy class fills which light one
  (and when a heavy class, once drained below 1, is itself filled by the next) follows
  from the prefix sums of the lights' deficits :math:`1 - p` and of the heavies'
  surpluses :math:`p - 1` by two ``searchsorted`` calls. This is exact, takes
  :math:`O(V \log V)` vectorized work, and runs under ``jax.jit`` (traced counts); with
  concrete counts it runs in float64 NumPy, so the table is exact to float32 rounding
  even for :math:`V = 10^7`.

  Args:
    counts: nonnegative weights of shape ``(V,)`` (word counts, or probabilities with
      ``power=1``). Classes of zero weight are never drawn; as true labels their
      correction is infinite, so give them a pseudo-count if they can occur.
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

  References:
    Walker, *An efficient method for generating discrete random variables with general
    distributions*, ACM TOMS 1977. Vose, *A linear algorithm for generating random
    numbers with a given distribution*, IEEE TSE 1991. Hübschle-Schneider & Sanders,
    *Parallel weighted random sampling*, ESA 2019 (the sweeping construction).
    Mikolov et al., *Distributed representations of words and phrases*, NeurIPS 2013.
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
  concrete = is_concrete(counts)
  if concrete:
    xp = np
    weights = np.asarray(counts, np.float64)
  else:
    xp = jnp
    weights = jnp.asarray(counts, jnp.promote_types(jnp.asarray(counts).dtype, jnp.float32))
  if weights.ndim != 1 or weights.shape[0] < 1:
    raise ValueError(
      f"counts must have shape (num_classes,), got shape {tuple(weights.shape)}."
    )
  check_num_classes(weights.shape[0])
  if concrete:
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
  positive = weights > 0
  exponent = power if power_value is None else power_value
  # Zero counts stay at probability 0 for every power (0 ** 0 counts as 0).
  log_w = xp.where(positive, xp.log(xp.where(positive, weights, 1.0)) * exponent, -np.inf)
  log_probs = log_w - _logsumexp(xp, log_w)
  threshold, alias = _alias_table(xp, xp.exp(log_probs))
  return UnigramSampler(
    log_probs=jnp.asarray(log_probs, jnp.float32),
    threshold=jnp.asarray(threshold, jnp.float32),
    alias=jnp.asarray(alias, jnp.int32),
  )


def _logsumexp(xp, x):
  m = xp.max(x)
  return m + xp.log(xp.sum(xp.exp(x - m)))


def _argsort_stable(xp, x):
  if xp is np:
    return np.argsort(x, kind="stable")
  return jnp.argsort(x, stable=True)


def _alias_table(xp, probs):
  """Walker's alias table of ``probs`` (summing to 1) by the sweeping construction.

  Returns ``(threshold, alias)``: bucket ``b`` keeps class ``b`` with probability
  ``threshold[b]`` and gives ``alias[b]`` otherwise.
  """
  v = probs.shape[0]
  p = probs * v
  light = p < 1.0
  num_light = xp.sum(light)
  order = _argsort_stable(xp, ~light)  # lights first, each group in index order
  ps = p[order]
  is_light = xp.arange(v) < num_light
  deficit = xp.cumsum(xp.where(is_light, 1.0 - ps, 0.0))  # D_i over the lights
  surplus = xp.cumsum(xp.where(is_light, 0.0, ps - 1.0))  # E_j over the heavies
  last = v - 1
  # Light i is filled by the heavy that is current when it arrives: the first heavy j
  # whose cumulative surplus E_j reaches the lights' deficit before i, D_{i-1}.
  before = deficit - xp.where(is_light, 1.0 - ps, 0.0)
  donor = xp.maximum(xp.searchsorted(surplus, before, side="left"), num_light)
  donor = xp.minimum(donor, last)
  # Heavy j is drained below 1 by the first light i with D_i > E_j; it keeps
  # 1 - (D_i - E_j) and the next heavy fills the rest. Without such a light it keeps all.
  first = xp.searchsorted(deficit, surplus, side="right")
  drained = first < num_light
  overshoot = deficit[xp.minimum(first, last)] - surplus
  position = xp.arange(v)
  has_next = position + 1 < v
  heavy_threshold = xp.where(drained & has_next, 1.0 - overshoot, 1.0)
  heavy_alias = xp.where(drained & has_next, position + 1, position)
  threshold_s = xp.where(is_light, ps, xp.clip(heavy_threshold, 0.0, 1.0))
  alias_s = order[xp.where(is_light, donor, heavy_alias)]
  inverse = _argsort_stable(xp, order)
  return threshold_s[inverse], alias_s[inverse]


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
        f"{name} must lie in [0, num_classes) = [0, {num_classes}), got values in "
        f"[{low}, {high}]."
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


def _draw_set(sampler: Sampler, key: Array, num_sampled: int, unique: bool, excluded):
  """One set of candidates: ``(ids, num_tries, log_q_shift)``.

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
      return jnp.any(hits(state[1]))

    def body(state):
      key, ids = state
      key, sub = jax.random.split(key)
      return key, jnp.where(hits(ids), sampler.sample(sub, (num_sampled,)), ids)

    if excluded is not None:
      _, ids = jax.lax.while_loop(cond, body, (key, ids))
    return ids, jnp.asarray(num_sampled, jnp.int32), shift

  # Unique: draw chunks of num_sampled with replacement until num_sampled distinct ids
  # are found; the distinct ids in order of first appearance are a sample without
  # replacement (each new one is q-distributed over the classes not yet drawn).
  empty = jnp.full((num_sampled,), -1, jnp.int32)

  def cond(state):
    return state[2] < num_sampled

  def body(state):
    key, ids, count, tries = state
    key, sub = jax.random.split(key)
    chunk = sampler.sample(sub, (num_sampled,))
    valid = ~hits(chunk)
    order = jnp.argsort(chunk, stable=True)
    first_in_chunk = jnp.zeros((num_sampled,), bool).at[order].set(
      _sorted_unique_mask(chunk[order])
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
    return key, ids, jnp.minimum(count + jnp.sum(new), num_sampled), tries

  zero = jnp.zeros((), jnp.int32)
  _, ids, _, tries = jax.lax.while_loop(cond, body, (key, empty, zero, zero))
  return ids, tries, shift


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
    sampler, key, check_labels(labels, sampler.num_classes), num_sampled, unique=unique,
    shared_negatives=shared_negatives, exclude_true=exclude_true,
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

  return _sample_candidates(sampler, key, labels, k, unique, shared_negatives, exclude_true)


@functools.partial(jax.jit, static_argnums=(3, 4, 5, 6))
def _sample_candidates(sampler, key, labels, k, unique, shared_negatives, exclude_true):
  batch_shape = labels.shape[:-1]

  def one_set(key, excluded):
    excluded = jnp.sort(excluded.reshape(-1)) if exclude_true else None
    ids, tries, shift = _draw_set(sampler, key, k, unique, excluded)
    log_ec = log_expected_count(sampler.log_prob(ids) + shift, tries, unique=unique)
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
