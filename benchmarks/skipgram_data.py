r"""A planted corpus for skip-gram: synthesis, subsampling, pairs, batches, quality.

The data side of ``python -m benchmarks.skipgram`` (the model and its loss are
:mod:`gradest.models.skipgram`), vectorized (no Python loop over words or pairs):

* :func:`planted_corpus`: a synthetic corpus whose structure is known, so that its
  recovery can be measured (Zipfian word frequencies, frequent function words shared by
  all topics, content words indexed by a topic and a role so that analogies are planted);
* :func:`keep_probabilities` and :func:`subsample`: frequent-word subsampling;
* :func:`skipgram_pairs` (jittable) and :func:`make_batches` (host side, shuffled
  fixed-size batches): the (center, context) pairs of a dynamic window;
* :func:`neighbour_precision`, :func:`analogy_accuracy` and :func:`evaluate`: quality
  measures by cosine similarity, with their chance levels.

Examples:
  >>> import jax
  >>> from benchmarks import skipgram_data as data
  >>> corpus = data.planted_corpus(jax.random.key(0), 300, num_topics=3, num_roles=2,
  ...                              words_per_cell=4, num_function_words=4)
  >>> corpus.tokens.shape, corpus.vocab_size
  ((300, 20), 28)
  >>> batches = data.make_batches(jax.random.key(1), corpus.tokens, corpus.counts,
  ...                             window=3, batch_size=32, threshold=0.0)
  >>> batches.centers.shape[1]
  32

References:
  Mikolov, Chen, Corrado & Dean, *Efficient estimation of word representations in
  vector space*, ICLR workshop 2013 (2013a). Mikolov, Sutskever, Chen, Corrado & Dean,
  *Distributed representations of words and phrases and their compositionality*,
  NeurIPS 2013 (2013b). Levy, Goldberg & Dagan, *Improving distributional similarity
  with lessons learned from word embeddings*, TACL 2015.
"""

from __future__ import annotations

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
from gradest.models.skipgram import check_ids

SUBSAMPLING_RULES = ("paper", "word2vec")
# The components of a content token: (same cell, same topic, same role, anywhere).
_NUM_COMPONENTS = 4


# --------------------------------------------------------------------------------------
# Argument checks.
# --------------------------------------------------------------------------------------


def _int_array(x: Any, name: str) -> Array:
  x = jnp.asarray(x)
  if not jnp.issubdtype(x.dtype, jnp.integer):
    raise TypeError(f"{name} must be integer word ids, got dtype {x.dtype}.")
  return x.astype(jnp.int32)


def _check_counts(counts: Any) -> Array:
  counts = jnp.asarray(counts)
  if counts.ndim != 1 or counts.shape[0] < 1:
    raise ValueError(
      f"counts must have shape (vocab_size,), one count per word, got shape {counts.shape}."
    )
  if is_concrete(counts) and np.any(np.asarray(counts) < 0):
    raise ValueError("counts must be nonnegative (the number of occurrences of each word).")
  return counts


def _check_threshold(threshold: Any, name: str = "threshold") -> None:
  if is_concrete(threshold):
    value = np.asarray(threshold, np.float64)
    if value.shape != () or not (math.isfinite(float(value)) and float(value) >= 0.0):
      raise ValueError(
        f"{name} must be a finite number >= 0 (word2vec's -sample: 1e-3 to 1e-5; 0 turns "
        f"subsampling off), got {threshold}."
      )


def _check_rule(rule: Any) -> str:
  if rule not in SUBSAMPLING_RULES:
    raise ValueError(
      f"rule must be one of {SUBSAMPLING_RULES} (the paper's sqrt(t/f) or word2vec's "
      f"sqrt(t/f) + t/f), got {rule!r}."
    )
  return rule


def _check_window(window: Any) -> int:
  try:
    w = operator.index(window)
  except TypeError:
    raise TypeError(f"window must be a Python int, got {type(window).__name__}.") from None
  if w < 1:
    raise ValueError(
      f"window must be >= 1 (the largest distance between a center and a context word), got {w}."
    )
  return w


def _check_tokens(tokens: Any) -> Array:
  tokens = _int_array(tokens, "tokens")
  if tokens.ndim < 1:
    raise ValueError(
      "tokens must have shape batch + (sentence_length,), got a scalar; pass tokens[None] "
      "for one word."
    )
  return tokens


# --------------------------------------------------------------------------------------
# The planted corpus.
# --------------------------------------------------------------------------------------


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class PlantedCorpus:
  """A synthetic corpus with known structure (built by :func:`planted_corpus`).

  Attributes:
    tokens: int32 word ids, ``(num_sentences, sentence_length)``.
    counts: int32 occurrences of each word in ``tokens``, ``(vocab_size,)``.
    topic: int32 topic of each word, ``(vocab_size,)``; ``-1`` for function words.
    role: int32 role of each word, ``(vocab_size,)``; ``-1`` for function words.
    num_topics, num_roles, words_per_cell, num_function_words: the sizes (static).
  """

  tokens: Array
  counts: Array
  topic: Array
  role: Array
  num_topics: int = dataclasses.field(metadata=dict(static=True))
  num_roles: int = dataclasses.field(metadata=dict(static=True))
  words_per_cell: int = dataclasses.field(metadata=dict(static=True))
  num_function_words: int = dataclasses.field(metadata=dict(static=True))

  @property
  def vocab_size(self) -> int:
    return self.num_function_words + self.num_topics * self.num_roles * self.words_per_cell

  @property
  def num_tokens(self) -> int:
    return int(np.prod(self.tokens.shape))

  @property
  def cell(self) -> Array:
    """``topic * num_roles + role`` of each word (``-1`` for function words), ``(V,)``."""
    return jnp.where(self.topic >= 0, self.topic * self.num_roles + self.role, -1)


def corpus_structure(
  num_topics: int, num_roles: int, words_per_cell: int, num_function_words: int
) -> tuple[np.ndarray, np.ndarray]:
  """The topic and role of every word id (``-1`` for function words), as int32 arrays.

  Function words have ids ``0 .. F-1``; the content word of topic ``t``, role ``r`` and
  slot ``i`` has id ``F + i * T * R + t * R + r``, so ids sort the vocabulary by
  decreasing expected frequency (slot by slot).
  """
  cells = num_topics * num_roles
  content = np.arange(cells * words_per_cell) % cells
  topic = np.concatenate([np.full(num_function_words, -1), content // num_roles])
  role = np.concatenate([np.full(num_function_words, -1), content % num_roles])
  return topic.astype(np.int32), role.astype(np.int32)


def _zipf_weights(vocab_size: int, exponent: float) -> np.ndarray:
  return (np.arange(vocab_size, dtype=np.float64) + 1.0) ** -exponent


def _cdf(weights: np.ndarray) -> np.ndarray:
  return (np.cumsum(weights) / np.sum(weights)).astype(np.float32)


def _draw(cdf: np.ndarray, u: Array) -> Array:
  """Inverse-CDF draws from a small categorical distribution (``u`` uniform on [0, 1))."""
  return jnp.minimum(jnp.searchsorted(jnp.asarray(cdf), u, side="right"), cdf.shape[0] - 1)


def _uniform_int(u: Array, n: int) -> Array:
  return jnp.minimum(jnp.floor(u * n), n - 1).astype(jnp.int32)


@functools.partial(
  jax.jit,
  static_argnames=(
    "num_sentences",
    "sentence_length",
    "num_topics",
    "num_roles",
    "words_per_cell",
    "num_function_words",
    "zipf_exponent",
    "mixture",
  ),
)
def _planted_corpus_jit(
  key,
  num_sentences,
  sentence_length,
  num_topics,
  num_roles,
  words_per_cell,
  num_function_words,
  zipf_exponent,
  mixture,
):
  f, cells = num_function_words, num_topics * num_roles
  vocab = f + cells * words_per_cell
  zipf = _zipf_weights(vocab, zipf_exponent)
  p_function = zipf[:f].sum() / zipf.sum()
  slot_weights = zipf[f:].reshape(words_per_cell, cells).sum(axis=1)
  shape = (num_sentences, sentence_length)
  sentence_key, token_key = jax.random.split(key)
  # One uniform per decision: the sentence's topic and role, then per token whether it
  # is a function word, which one, the content slot, the component and the free topic
  # and role of the components that do not follow the sentence.
  us = jax.random.uniform(sentence_key, (2, num_sentences, 1))
  u = jax.random.uniform(token_key, (6,) + shape)
  sentence_topic, sentence_role = _uniform_int(us[0], num_topics), _uniform_int(us[1], num_roles)
  is_function = u[0] < p_function
  function_id = _draw(_cdf(zipf[:f]), u[1]) if f else jnp.zeros(shape, jnp.int32)
  slot = _draw(_cdf(slot_weights), u[2])
  component = _draw(_cdf(np.asarray(mixture)), u[3])
  topic = jnp.where(component <= 1, sentence_topic, _uniform_int(u[4], num_topics))
  follows_role = (component == 0) | (component == 2)
  role = jnp.where(follows_role, sentence_role, _uniform_int(u[5], num_roles))
  content_id = f + slot * cells + topic * num_roles + role
  tokens = jnp.where(is_function, function_id, content_id).astype(jnp.int32)
  counts = jnp.bincount(tokens.reshape(-1), length=vocab).astype(jnp.int32)
  word_topic, word_role = corpus_structure(num_topics, num_roles, words_per_cell, f)
  return PlantedCorpus(
    tokens,
    counts,
    jnp.asarray(word_topic),
    jnp.asarray(word_role),
    num_topics,
    num_roles,
    words_per_cell,
    num_function_words,
  )


def planted_corpus(
  key: Array,
  num_sentences: int,
  *,
  sentence_length: int = 20,
  num_topics: int = 50,
  num_roles: int = 4,
  words_per_cell: int = 50,
  num_function_words: int = 100,
  zipf_exponent: float = 1.0,
  mixture: Sequence[float] = (0.5, 0.25, 0.15, 0.1),
) -> PlantedCorpus:
  r"""A synthetic corpus with planted topics, roles and analogies.

  The vocabulary holds :math:`F` function words and :math:`T R m` content words: word
  :math:`(t, r, i)` has topic :math:`t < T`, role :math:`r < R` and slot :math:`i < m`
  (the :math:`m` words of a *cell* :math:`(t, r)` are synonyms). Ids are ranks of a
  Zipf law :math:`\zeta(j) \propto (j + 1)^{-a}` (:func:`corpus_structure`): function
  words first, then content words slot by slot. Every sentence has a topic
  :math:`\tau` and a role :math:`\rho`, uniform; each of its tokens is independently

  * a function word with probability :math:`\sum_{j<F} \zeta(j)`, then word :math:`j`
    with probability :math:`\propto \zeta(j)` (no topic, no role: noise shared by all
    sentences, and the most frequent words, so subsampling matters);
  * otherwise a content word of slot :math:`i \propto \sum_{(t, r)} \zeta(\mathrm{id}(t,
    r, i))` whose cell is :math:`(\tau, \rho)`, :math:`(\tau, \cdot)`,
    :math:`(\cdot, \rho)` or :math:`(\cdot, \cdot)` with the probabilities ``mixture``
    (a dot: uniform).

  Words of one cell share their contexts, words of one topic (or one role) share part
  of them, so the pointwise mutual information of two content words is a function of
  whether their topics and their roles agree, and skip-gram embeddings decompose
  approximately as :math:`v_{t,r,i} \approx a_t + b_r`: the planted analogies
  :math:`(t_1, r_1) - (t_1, r_2) + (t_2, r_2) = (t_2, r_1)` hold in the vector space.
  Word frequencies are Zipfian (exactly for the function words, and slot by slot for
  the content words).

  Args:
    key: a PRNG key.
    num_sentences: ``S >= 1``.
    sentence_length: words per sentence, ``>= 2``.
    num_topics: ``T >= 1``.
    num_roles: ``R >= 1``.
    words_per_cell: ``m >= 1``.
    num_function_words: ``F >= 0``.
    zipf_exponent: :math:`a \ge 0` (1 is Zipf's law).
    mixture: nonnegative weights of the four components (same cell, same topic, same
      role, anywhere); normalized.

  Returns:
    A :class:`PlantedCorpus` with ``tokens`` of shape ``(S, sentence_length)``.

  Examples:
    >>> import jax
    >>> c = planted_corpus(jax.random.key(0), 300, num_topics=3, num_roles=2,
    ...                    words_per_cell=4, num_function_words=4)
    >>> c.vocab_size, int(c.counts.sum()), c.topic.tolist()[:7], c.role.tolist()[:7]
    (28, 6000, [-1, -1, -1, -1, 0, 0, 1], [-1, -1, -1, -1, 0, 1, 0])
  """
  check_key(key)
  num_sentences = check_positive_int(num_sentences, "num_sentences")
  sentence_length = check_positive_int(sentence_length, "sentence_length", 2)
  num_topics = check_positive_int(num_topics, "num_topics")
  num_roles = check_positive_int(num_roles, "num_roles")
  words_per_cell = check_positive_int(words_per_cell, "words_per_cell")
  num_function_words = check_positive_int(num_function_words, "num_function_words", 0)
  try:
    a = float(zipf_exponent)
  except TypeError:
    raise TypeError("zipf_exponent must be a number.") from None
  if not (math.isfinite(a) and a >= 0.0):
    raise ValueError(f"zipf_exponent must be a finite number >= 0, got {zipf_exponent}.")
  weights = np.asarray(mixture, np.float64)
  if weights.shape != (_NUM_COMPONENTS,) or not np.all(np.isfinite(weights)):
    raise ValueError(
      "mixture must be 4 finite weights (same cell, same topic, same role, anywhere), got "
      f"{mixture!r}."
    )
  if np.any(weights < 0) or weights.sum() <= 0:
    raise ValueError(f"mixture must be nonnegative with a positive sum, got {mixture!r}.")
  mixture = tuple(float(w) for w in weights / weights.sum())
  return _planted_corpus_jit(
    key,
    num_sentences,
    sentence_length,
    num_topics,
    num_roles,
    words_per_cell,
    num_function_words,
    a,
    mixture,
  )


# --------------------------------------------------------------------------------------
# Subsampling and pairs.
# --------------------------------------------------------------------------------------


def keep_probabilities(counts: Array, threshold: float | Array, *, rule: str = "paper") -> Array:
  r"""The probability of keeping each word under frequent-word subsampling.

  With :math:`f(w) = \mathrm{count}(w) / \sum_{w'} \mathrm{count}(w')` and threshold
  :math:`t`, ``rule="paper"`` is Mikolov et al. (2013b, eq. 5), which discards a word
  with probability :math:`1 - \sqrt{t / f(w)}`,

  .. math::
    p_{\mathrm{keep}}(w) = \min\Big(1, \sqrt{t / f(w)}\Big),

  and ``rule="word2vec"`` the reference C implementation (and gensim),

  .. math::
    p_{\mathrm{keep}}(w) = \min\Big(1, \sqrt{t / f(w)} + t / f(w)\Big),

  which keeps slightly more. Words with :math:`f(w) \le t` are always kept, and
  ``threshold=0`` keeps every word (word2vec's ``-sample 0``).

  Args:
    counts: nonnegative word counts, ``(V,)``.
    threshold: :math:`t \ge 0`, a scalar (word2vec's default 1e-3; 1e-5 for billions of
      words).
    rule: ``"paper"`` or ``"word2vec"``.

  Returns:
    float32 ``(V,)`` in ``(0, 1]`` (1 for words that never occur).

  Examples:
    >>> import jax.numpy as jnp
    >>> [round(float(p), 4) for p in keep_probabilities(jnp.array([900, 99, 1]), 0.01)]
    [0.1054, 0.3178, 1.0]
  """
  counts = _check_counts(counts)
  _check_threshold(threshold)
  rule = _check_rule(rule)
  counts = counts.astype(jnp.float32)
  t = jnp.asarray(threshold, jnp.float32)
  freq = counts / jnp.maximum(jnp.sum(counts), 1.0)
  ratio = t / jnp.where(freq > 0, freq, 1.0)
  keep = jnp.sqrt(ratio) if rule == "paper" else jnp.sqrt(ratio) + ratio
  return jnp.where((freq > 0) & (t > 0), jnp.minimum(keep, 1.0), 1.0)


def subsample(
  key: Array, tokens: Array, counts: Array, threshold: float | Array, *, rule: str = "paper"
) -> Array:
  r"""Which tokens survive frequent-word subsampling (:func:`keep_probabilities`).

  Each token is kept independently with probability :math:`p_{\mathrm{keep}}(w)` of its
  word; a discarded token is removed from its sentence before the windows are formed
  (:func:`skipgram_pairs` with ``keep=``), which widens the windows around it, as in
  word2vec.

  Args:
    key: a PRNG key.
    tokens: int word ids, any shape, in ``[0, V)``.
    counts: word counts, ``(V,)``.
    threshold: the subsampling threshold :math:`t \ge 0` (0: keep all).
    rule: ``"paper"`` or ``"word2vec"``.

  Returns:
    bool, the shape of ``tokens``: ``True`` where a token is kept.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> keep = subsample(jax.random.key(0), jnp.array([[0, 0, 1, 2]]), jnp.array([900, 99, 1]),
    ...                  0.01)
    >>> keep.shape, keep.dtype
    ((1, 4), dtype('bool'))
  """
  check_key(key)
  tokens = _int_array(tokens, "tokens")
  probs = keep_probabilities(counts, threshold, rule=rule)
  check_ids(tokens, probs.shape[0], "tokens")
  return jax.random.uniform(key, tokens.shape) < probs[tokens]


class Pairs(NamedTuple):
  """The (center, context) pairs of a batch of sentences (:func:`skipgram_pairs`).

  Attributes:
    centers: int32 ``batch + (L, 2 * window)``: the center word of each slot.
    contexts: int32, the same shape: the context word at each offset
      ``-window .. -1, 1 .. window`` of the center (in that order).
    valid: bool, the same shape: ``True`` where the slot is a pair (inside the sentence,
      both words kept, within the center's drawn window).
  """

  centers: Array
  contexts: Array
  valid: Array


@functools.partial(jax.jit, static_argnames=("window", "dynamic_window"))
def _pairs_jit(key, tokens, keep, window, dynamic_window):
  length = tokens.shape[-1]
  if keep is None:
    compact = tokens
    num_kept = jnp.full(tokens.shape[:-1], length, jnp.int32)
  else:
    # Kept tokens move to the front of their sentence, in order.
    order = jnp.argsort(~keep, axis=-1, stable=True)
    compact = jnp.take_along_axis(tokens, order, axis=-1)
    num_kept = jnp.sum(keep, axis=-1, dtype=jnp.int32)
  offsets = jnp.concatenate([jnp.arange(-window, 0), jnp.arange(1, window + 1)])
  position = jnp.arange(length)[:, None]
  target = position + offsets  # (L, 2W)
  inside = (
    (target >= 0) & (target < num_kept[..., None, None]) & (position < num_kept[..., None, None])
  )
  if dynamic_window:
    reach = jax.random.randint(key, tokens.shape, 1, window + 1)
    inside = inside & (jnp.abs(offsets) <= reach[..., None])
  contexts = jnp.take(compact, jnp.clip(target, 0, length - 1), axis=-1)
  centers = jnp.broadcast_to(compact[..., :, None], contexts.shape)
  return Pairs(centers, contexts, inside)


def skipgram_pairs(
  key: Array | None,
  tokens: Array,
  window: int,
  *,
  keep: Array | None = None,
  dynamic_window: bool = True,
) -> Pairs:
  r"""The (center, context) pairs of sentences, with word2vec's dynamic window.

  In each sentence (the last axis of ``tokens``; windows never cross sentences), after
  removing the tokens with ``keep == False``, every token at position :math:`i` is a
  center with the contexts at positions :math:`i \pm 1, \dots, i \pm b_i`. With
  ``dynamic_window`` the reach :math:`b_i` is uniform on :math:`\{1, \dots,
  \mathrm{window}\}` for each center (word2vec's), which weights a context at distance
  :math:`o` by :math:`(\mathrm{window} - o + 1) / \mathrm{window}` in expectation;
  otherwise :math:`b_i = \mathrm{window}`.

  The result has a fixed shape (one slot per center position and offset) and runs under
  ``jax.jit`` and ``jax.vmap``; ``centers[valid]`` and ``contexts[valid]`` are the pairs.

  Args:
    key: a PRNG key for the dynamic window (``None`` only with ``dynamic_window=False``).
    tokens: int word ids, ``batch + (L,)``: sentences of length ``L``.
    window: the largest distance, ``>= 1`` (static).
    keep: bool mask of the shape of ``tokens`` (:func:`subsample`), or ``None``.
    dynamic_window: draw each center's reach (static).

  Returns:
    :class:`Pairs` with arrays of shape ``batch + (L, 2 * window)``.

  Examples:
    >>> import jax.numpy as jnp
    >>> p = skipgram_pairs(None, jnp.array([5, 6, 7]), 1, dynamic_window=False)
    >>> [(int(c), int(o)) for c, o in zip(p.centers[p.valid], p.contexts[p.valid])]
    [(5, 6), (6, 5), (6, 7), (7, 6)]
  """
  tokens = _check_tokens(tokens)
  window = _check_window(window)
  if dynamic_window:
    if key is None:
      raise ValueError("key is needed to draw the dynamic windows (or dynamic_window=False).")
    check_key(key)
  if keep is not None:
    keep = jnp.asarray(keep)
    if keep.dtype != jnp.bool_:
      raise TypeError(f"keep must be a boolean mask (from subsample), got dtype {keep.dtype}.")
    if keep.shape != tokens.shape:
      raise ValueError(f"keep must have the shape of tokens {tokens.shape}, got {keep.shape}.")
  return _pairs_jit(key if dynamic_window else None, tokens, keep, window, bool(dynamic_window))


class Batches(NamedTuple):
  """Shuffled (center, context) pairs in fixed-size batches (:func:`make_batches`).

  Attributes:
    centers: int32 ``(num_steps, batch_size)``.
    contexts: int32 ``(num_steps, batch_size)``.
    weights: float32 ``(num_steps, batch_size)``: 1 for a pair, 0 for the padding that
      fills the last batch.
    num_pairs: the number of pairs (the number of weights equal to 1).
    num_words: the number of corpus tokens they come from (before subsampling), the
      count word2vec's words per second refer to.
  """

  centers: np.ndarray
  contexts: np.ndarray
  weights: np.ndarray
  num_pairs: int
  num_words: int

  @property
  def num_steps(self) -> int:
    return self.centers.shape[0]


@functools.partial(jax.jit, static_argnames=("window", "dynamic_window"))
def _chunk_pairs_jit(keep_key, window_key, tokens, keep_probs, rows, window, dynamic_window):
  keep = jax.random.uniform(keep_key, tokens.shape) < keep_probs[tokens]
  keep = keep & (jnp.arange(tokens.shape[0]) < rows)[:, None]
  return _pairs_jit(window_key, tokens, keep, window, dynamic_window)


def make_batches(
  key: Array,
  tokens: Array,
  counts: Array,
  *,
  window: int,
  batch_size: int,
  threshold: float = 1e-3,
  rule: str = "paper",
  dynamic_window: bool = True,
  sentences_per_chunk: int = 8192,
) -> Batches:
  """One epoch of training pairs: subsampling, dynamic windows, shuffling, batching.

  Runs :func:`subsample` and :func:`skipgram_pairs` (jitted, on fixed-size chunks of
  sentences, so memory stays bounded), keeps the valid pairs, shuffles them and cuts
  them into batches of ``batch_size``; the last batch is padded with zero-weight pairs.
  The number of pairs depends on the draws, so this runs on the host (not under
  ``jax.jit``). Call it once per epoch with a fresh key: word2vec redraws the
  subsampling and the windows every epoch.

  Args:
    key: a PRNG key.
    tokens: int word ids, ``(num_sentences, L)``.
    counts: word counts for subsampling, ``(V,)`` (usually those of ``tokens``).
    window: the largest window, ``>= 1``.
    batch_size: pairs per batch, ``>= 1``.
    threshold: subsampling threshold, ``>= 0`` (0: no subsampling).
    rule: ``"paper"`` or ``"word2vec"`` (:func:`keep_probabilities`).
    dynamic_window: word2vec's random reach per center.
    sentences_per_chunk: sentences processed per jitted call.

  Returns:
    :class:`Batches` (NumPy arrays).

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> b = make_batches(jax.random.key(0), jnp.array([[1, 2, 3, 4]]), jnp.ones(5),
    ...                  window=1, batch_size=4, threshold=0.0, dynamic_window=False)
    >>> b.centers.shape, b.num_pairs, float(b.weights.sum())
    ((2, 4), 6, 6.0)
  """
  check_key(key)
  tokens = _check_tokens(tokens)
  if tokens.ndim != 2:
    raise ValueError(
      f"tokens must have shape (num_sentences, sentence_length), got {tokens.shape}."
    )
  counts = _check_counts(counts)
  window = _check_window(window)
  batch_size = check_positive_int(batch_size, "batch_size")
  chunk = check_positive_int(sentences_per_chunk, "sentences_per_chunk")
  _check_threshold(threshold)
  check_ids(tokens, counts.shape[0], "tokens")
  probs = keep_probabilities(counts, threshold, rule=rule)
  k_keep, k_window, k_shuffle = jax.random.split(key, 3)
  num_sentences = tokens.shape[0]
  chunk = min(chunk, num_sentences)
  centers, contexts = [], []
  for i, start in enumerate(range(0, num_sentences, chunk)):
    part = tokens[start : start + chunk]
    rows = part.shape[0]
    if rows < chunk:  # pad the last chunk with empty sentences: one compilation
      part = jnp.concatenate([part, jnp.zeros((chunk - rows, part.shape[1]), jnp.int32)])
    p = _chunk_pairs_jit(
      jax.random.fold_in(k_keep, i),
      jax.random.fold_in(k_window, i),
      part,
      probs,
      rows,
      window,
      bool(dynamic_window),
    )
    valid = np.asarray(p.valid)
    centers.append(np.asarray(p.centers)[valid])
    contexts.append(np.asarray(p.contexts)[valid])
  centers = np.concatenate(centers).astype(np.int32)
  contexts = np.concatenate(contexts).astype(np.int32)
  num_pairs = centers.shape[0]
  # A uniform shuffle: sort by random 32-bit keys drawn from ``key`` (NumPy's sort is
  # several times faster than jax.random.permutation on a CPU host).
  shuffle_keys = np.asarray(jax.random.bits(k_shuffle, (num_pairs,), jnp.uint32))
  order = np.argsort(shuffle_keys, kind="stable")
  num_steps = max(1, -(-num_pairs // batch_size))
  pad = num_steps * batch_size - num_pairs
  weights = np.concatenate([np.ones(num_pairs, np.float32), np.zeros(pad, np.float32)])
  centers = np.concatenate([centers[order], np.zeros(pad, np.int32)])
  contexts = np.concatenate([contexts[order], np.zeros(pad, np.int32)])
  shape = (num_steps, batch_size)
  return Batches(
    centers.reshape(shape),
    contexts.reshape(shape),
    weights.reshape(shape),
    num_pairs,
    int(np.prod(tokens.shape)),
  )


# --------------------------------------------------------------------------------------
# Quality measures.
# --------------------------------------------------------------------------------------


def _normalize(embeddings: Array) -> Array:
  e = jnp.asarray(embeddings, jnp.float32)
  norm = jnp.sqrt(jnp.sum(e * e, axis=-1, keepdims=True))
  return e / jnp.maximum(norm, 1e-12)


def _check_embeddings(embeddings: Any) -> Array:
  embeddings = jnp.asarray(embeddings)
  if embeddings.ndim != 2:
    raise ValueError(f"embeddings must have shape (vocab_size, dim), got {embeddings.shape}.")
  if not jnp.issubdtype(embeddings.dtype, jnp.floating):
    raise TypeError(f"embeddings must be floating point, got dtype {embeddings.dtype}.")
  return embeddings


def _check_groups(groups: Any, vocab_size: int, name: str = "groups") -> Array:
  groups = _int_array(groups, name)
  if groups.shape != (vocab_size,):
    raise ValueError(
      f"{name} must have shape (vocab_size,) = ({vocab_size},) to match the embeddings, "
      f"got {groups.shape}."
    )
  return groups


def nearest_neighbours(embeddings: Array, query_ids: Array, k: int = 10) -> Array:
  r"""The ``k`` words of highest cosine similarity to each query word, itself excluded.

  .. math::
    \mathrm{cos}(w, w') = \frac{e_w^\top e_{w'}}{\|e_w\|\,\|e_{w'}\|}.

  Args:
    embeddings: ``(V, d)``.
    query_ids: int ``(Q,)``.
    k: neighbours per query, ``1 <= k < V`` (static).

  Returns:
    int32 ``(Q, k)``, most similar first.

  Examples:
    >>> import jax.numpy as jnp
    >>> e = jnp.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    >>> nearest_neighbours(e, jnp.array([0, 2]), 1).tolist()
    [[1], [1]]
  """
  embeddings = _check_embeddings(embeddings)
  query_ids = _int_array(query_ids, "query_ids")
  k = check_positive_int(k, "k")
  if k >= embeddings.shape[0]:
    raise ValueError(f"k must be < vocab_size = {embeddings.shape[0]}, got {k}.")
  return _neighbours_jit(embeddings, query_ids, k)


# Queries per block of the similarity matrix: memory stays O(block x V).
_QUERY_BLOCK = 512


@functools.partial(jax.jit, static_argnames=("k",))
def _neighbours_jit(embeddings, query_ids, k):
  e = _normalize(embeddings)
  q = query_ids.shape[0]
  block = min(_QUERY_BLOCK, q)
  pad = -q % block
  ids = jnp.concatenate([query_ids, jnp.zeros((pad,), query_ids.dtype)]).reshape(-1, block)

  def top(block_ids):
    sims = e[block_ids] @ e.T
    sims = sims.at[jnp.arange(block), block_ids].set(-jnp.inf)
    return jax.lax.top_k(sims, k)[1]

  return jax.lax.map(top, ids).reshape(-1, k)[:q].astype(jnp.int32)


def neighbour_precision(embeddings: Array, groups: Array, k: int = 10) -> Array:
  r"""Mean fraction of each word's ``k`` nearest neighbours that share its group.

  .. math::
    P@k = \frac{1}{|Q|} \sum_{w \in Q} \frac{1}{k}
      \sum_{w' \in \mathrm{NN}_k(w)} [g(w') = g(w)],

  over the words :math:`Q` with a group (``groups >= 0``; words with ``groups < 0``, the
  function words, are neighbours but not queries). Random embeddings score
  :func:`neighbour_precision_chance`.

  Args:
    embeddings: ``(V, d)``.
    groups: int ``(V,)``: the planted topic (or cell) of each word, ``-1`` for none.
    k: neighbours, ``1 <= k < V`` (static).

  Returns:
    A float32 scalar in ``[0, 1]``.

  Examples:
    >>> import jax.numpy as jnp
    >>> e = jnp.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    >>> float(neighbour_precision(e, jnp.array([0, 0, 1, 1]), 1))
    1.0
  """
  embeddings = _check_embeddings(embeddings)
  groups = _check_groups(groups, embeddings.shape[0])
  k = check_positive_int(k, "k")
  if k >= embeddings.shape[0]:
    raise ValueError(f"k must be < vocab_size = {embeddings.shape[0]}, got {k}.")
  return _precision_jit(embeddings, groups, k)


def _precision(neighbours, groups):
  hits = jnp.mean(groups[neighbours] == groups[:, None], axis=-1)
  is_query = groups >= 0
  return jnp.sum(jnp.where(is_query, hits, 0.0)) / jnp.maximum(jnp.sum(is_query), 1)


@functools.partial(jax.jit, static_argnames=("k",))
def _precision_jit(embeddings, groups, k):
  return _precision(_neighbours_jit(embeddings, jnp.arange(embeddings.shape[0]), k), groups)


def neighbour_precision_chance(groups: Array) -> Array:
  r"""The expected :func:`neighbour_precision` of neighbours drawn at random.

  .. math::
    \frac{1}{|Q|} \sum_{w \in Q} \frac{n_{g(w)} - 1}{V - 1},

  with :math:`n_g` the size of group :math:`g`.

  Args:
    groups: int ``(V,)``, ``-1`` for words without a group.

  Returns:
    A float32 scalar.

  Examples:
    >>> import jax.numpy as jnp
    >>> round(float(neighbour_precision_chance(jnp.array([0, 0, 1, 1, -1]))), 4)
    0.25
  """
  groups = _int_array(groups, "groups")
  if groups.ndim != 1 or groups.shape[0] < 2:
    raise ValueError(
      f"groups must have shape (vocab_size,) with vocab_size >= 2, got {groups.shape}."
    )
  return _chance_jit(groups)


@jax.jit
def _chance_jit(groups):
  v = groups.shape[0]
  same = jnp.sum(groups[:, None] == groups[None, :], axis=1) - 1
  is_query = groups >= 0
  return jnp.sum(jnp.where(is_query, same / (v - 1), 0.0)) / jnp.maximum(jnp.sum(is_query), 1)


def planted_analogies(key: Array, corpus: PlantedCorpus, num_questions: int) -> tuple[Array, Array]:
  r"""Random analogy questions :math:`a - b + c \approx d` planted in the corpus.

  Each question draws topics :math:`t_1 \ne t_2`, roles :math:`r_1 \ne r_2` and a slot
  for each word: :math:`a = (t_1, r_1)`, :math:`b = (t_1, r_2)`, :math:`c = (t_2, r_2)`;
  the answer is any word of the cell :math:`(t_2, r_1)`.

  Args:
    key: a PRNG key.
    corpus: a :class:`PlantedCorpus` with at least 2 topics and 2 roles.
    num_questions: ``>= 1`` (static).

  Returns:
    ``(questions, answer_cells)``: int32 ``(num_questions, 3)`` word ids ``(a, b, c)``
    and int32 ``(num_questions,)`` cells (as in :attr:`PlantedCorpus.cell`).

  Examples:
    >>> import jax
    >>> c = planted_corpus(jax.random.key(0), 300, num_topics=3, num_roles=2,
    ...                    words_per_cell=4, num_function_words=4)
    >>> q, cells = planted_analogies(jax.random.key(1), c, 5)
    >>> q.shape, bool((c.cell[q[:, 0]] - c.cell[q[:, 1]] + c.cell[q[:, 2]] == cells).all())
    ((5, 3), True)
  """
  check_key(key)
  if not isinstance(corpus, PlantedCorpus):
    raise TypeError(f"corpus must be a PlantedCorpus, got {type(corpus).__name__}.")
  if corpus.num_topics < 2 or corpus.num_roles < 2:
    raise ValueError(
      "planted analogies need num_topics >= 2 and num_roles >= 2, got "
      f"{corpus.num_topics} and {corpus.num_roles}."
    )
  n = check_positive_int(num_questions, "num_questions")
  return _analogies_jit(
    key, n, corpus.num_topics, corpus.num_roles, corpus.words_per_cell, corpus.num_function_words
  )


@functools.partial(jax.jit, static_argnums=(1, 2, 3, 4, 5))
def _analogies_jit(key, n, num_topics, num_roles, words_per_cell, num_function_words):
  u = jax.random.uniform(key, (7, n))
  t1 = _uniform_int(u[0], num_topics)
  t2 = (t1 + 1 + _uniform_int(u[1], num_topics - 1)) % num_topics
  r1 = _uniform_int(u[2], num_roles)
  r2 = (r1 + 1 + _uniform_int(u[3], num_roles - 1)) % num_roles
  cells = num_topics * num_roles

  def word(t, r, s):
    return num_function_words + _uniform_int(s, words_per_cell) * cells + t * num_roles + r

  questions = jnp.stack([word(t1, r1, u[4]), word(t1, r2, u[5]), word(t2, r2, u[6])], axis=1)
  return questions.astype(jnp.int32), (t2 * num_roles + r1).astype(jnp.int32)


def analogy_accuracy(
  embeddings: Array, questions: Array, answer_groups: Array, groups: Array
) -> Array:
  r"""Accuracy of 3CosAdd on analogy questions, counting any word of the answer group.

  For a question :math:`(a, b, c)`, with unit vectors :math:`\hat e`, the prediction is

  .. math::
    \hat d = \arg\max_{w \notin \{a, b, c\}} \cos\big(e_w,\; \hat e_a - \hat e_b + \hat e_c\big),

  correct when :math:`g(\hat d)` equals the answer group (Mikolov et al. 2013a; Levy &
  Goldberg's 3CosAdd). Random embeddings score about (answer group size) / (V - 3).

  Args:
    embeddings: ``(V, d)``.
    questions: int ``(Q, 3)``.
    answer_groups: int ``(Q,)``.
    groups: int ``(V,)``, the group of each word (the planted cells).

  Returns:
    A float32 scalar in ``[0, 1]``.

  Examples:
    >>> import jax.numpy as jnp
    >>> e = jnp.array([[1.0, 1.0], [1.0, -1.0], [-1.0, -1.0], [-1.0, 1.0]])
    >>> float(analogy_accuracy(e, jnp.array([[0, 1, 2]]), jnp.array([3]), jnp.arange(4)))
    1.0
  """
  embeddings = _check_embeddings(embeddings)
  groups = _check_groups(groups, embeddings.shape[0])
  questions = _int_array(questions, "questions")
  answer_groups = _int_array(answer_groups, "answer_groups")
  if questions.ndim != 2 or questions.shape[1] != 3:
    raise ValueError(f"questions must have shape (num_questions, 3), got {questions.shape}.")
  if answer_groups.shape != questions.shape[:1]:
    raise ValueError(
      f"answer_groups must have shape (num_questions,) = {questions.shape[:1]}, got "
      f"{answer_groups.shape}."
    )
  return _analogy_jit(embeddings, questions, answer_groups, groups)


def _analogy(embeddings, questions, answer_groups, groups):
  e = _normalize(embeddings)
  target = e[questions[:, 0]] - e[questions[:, 1]] + e[questions[:, 2]]
  sims = _normalize(target) @ e.T
  rows = jnp.arange(questions.shape[0])[:, None]
  sims = sims.at[rows, questions].set(-jnp.inf)
  predicted = jnp.argmax(sims, axis=-1)
  return jnp.mean(groups[predicted] == answer_groups)


_analogy_jit = jax.jit(_analogy)


@functools.partial(jax.jit, static_argnames=("k",))
def _evaluate_jit(embeddings, topic, cell, questions, answers, k):
  neighbours = _neighbours_jit(embeddings, jnp.arange(embeddings.shape[0]), k)
  return {
    "topic_precision": _precision(neighbours, topic),
    "topic_precision_chance": _chance_jit(topic),
    "cell_precision": _precision(neighbours, cell),
    "cell_precision_chance": _chance_jit(cell),
    "analogy_accuracy": _analogy(embeddings, questions, answers, cell),
  }


def evaluate(
  embeddings: Array,
  corpus: PlantedCorpus,
  key: Array,
  *,
  k: int = 10,
  num_analogies: int = 2000,
) -> dict[str, Array]:
  """The quality measures of embeddings of a planted corpus, with their chance levels.

  Args:
    embeddings: ``(V, d)`` (usually ``params.input``).
    corpus: the :class:`PlantedCorpus` they were trained on.
    key: a PRNG key for the analogy questions.
    k: neighbours for the precisions.
    num_analogies: analogy questions.

  Returns:
    A dict of float32 scalars: ``topic_precision`` (:func:`neighbour_precision` by topic,
    precision@k), ``cell_precision`` (by cell: same topic and role), ``analogy_accuracy``
    (:func:`analogy_accuracy` on :func:`planted_analogies`), and each one's ``_chance``.

  Examples:
    >>> import jax
    >>> c = planted_corpus(jax.random.key(0), 300, num_topics=3, num_roles=2,
    ...                    words_per_cell=4, num_function_words=4)
    >>> m = evaluate(jax.random.normal(jax.random.key(1), (c.vocab_size, 8)), c, jax.random.key(2))
    >>> sorted(m)[:2], round(float(m["topic_precision_chance"]), 4)  # (8 - 1) / (28 - 1)
    (['analogy_accuracy', 'analogy_accuracy_chance'], 0.2593)
  """
  embeddings = _check_embeddings(embeddings)
  if not isinstance(corpus, PlantedCorpus):
    raise TypeError(f"corpus must be a PlantedCorpus, got {type(corpus).__name__}.")
  if embeddings.shape[0] != corpus.vocab_size:
    raise ValueError(
      f"embeddings have {embeddings.shape[0]} rows but the corpus has {corpus.vocab_size} words."
    )
  k = check_positive_int(k, "k")
  if k >= corpus.vocab_size:
    raise ValueError(f"k must be < vocab_size = {corpus.vocab_size}, got {k}.")
  questions, answers = planted_analogies(key, corpus, num_analogies)
  metrics = _evaluate_jit(embeddings, corpus.topic, corpus.cell, questions, answers, k)
  chance = corpus.words_per_cell / (corpus.vocab_size - 3)
  metrics["analogy_accuracy_chance"] = jnp.asarray(chance, jnp.float32)
  return metrics


__all__ = [
  "Batches",
  "Pairs",
  "PlantedCorpus",
  "SUBSAMPLING_RULES",
  "analogy_accuracy",
  "corpus_structure",
  "evaluate",
  "keep_probabilities",
  "make_batches",
  "nearest_neighbours",
  "neighbour_precision",
  "neighbour_precision_chance",
  "planted_analogies",
  "planted_corpus",
  "skipgram_pairs",
  "subsample",
]
