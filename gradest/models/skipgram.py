r"""Skip-gram word embeddings trained with negative sampling, on a planted corpus.

The skip-gram model (Mikolov et al. 2013a) gives every word :math:`w` of a vocabulary
of size :math:`V` an input vector :math:`v_w` and an output (context) vector
:math:`u_w`, both in :math:`\mathbb R^d`, and scores a context word :math:`o` near a
center word :math:`c` by :math:`s(o \mid c) = u_o^\top v_c`. Negative sampling
(Mikolov et al. 2013b) trains it on every (center, context) pair of the corpus with
:math:`k` negatives :math:`n_1..n_k` drawn from the unigram distribution raised to the
power 3/4, :math:`q(w) \propto \mathrm{count}(w)^{3/4}`, by minimizing

.. math::
  \ell(c, o) = -\log \sigma(u_o^\top v_c) - \sum_{j=1}^{k} \log \sigma(-u_{n_j}^\top v_c),

which is :func:`gradest.negative_sampling_loss` (NCE without the :math:`\log(kq)`
correction; its optimum is the shifted pointwise mutual information
:math:`u_o^\top v_c = \mathrm{PMI}(o, c) - \log k`, Levy & Goldberg 2014).

This module holds the whole pipeline, vectorized (no Python loop over words or pairs):

* :func:`planted_corpus`: a synthetic corpus whose structure is known, so that its
  recovery can be measured (Zipfian word frequencies, frequent function words shared by
  all topics, content words indexed by a topic and a role so that analogies are planted);
* :func:`keep_probabilities` and :func:`subsample`: frequent-word subsampling;
* :func:`skipgram_pairs` (jittable) and :func:`make_batches` (host side, shuffled
  fixed-size batches): the (center, context) pairs of a dynamic window;
* :func:`init_params`, :func:`train_step`, :func:`train_steps` and :func:`train`: SGD
  with word2vec's linearly decaying learning rate and **sparse row updates** (the
  gradient is taken with respect to the gathered rows and applied with
  ``table.at[ids].add``, so a step costs :math:`O(B (k + 2) d)` whatever :math:`V`);
* :func:`neighbour_precision`, :func:`analogy_accuracy` and :func:`evaluate`: quality
  measures by cosine similarity, with their chance levels.

Examples:
  >>> import jax
  >>> from gradest.models import skipgram
  >>> from gradest.samplers import unigram_sampler
  >>> corpus = skipgram.planted_corpus(jax.random.key(0), 300, num_topics=3, num_roles=2,
  ...                                  words_per_cell=4, num_function_words=4)
  >>> corpus.tokens.shape, corpus.vocab_size
  ((300, 20), 28)
  >>> # A tiny vocabulary: no subsampling, and small batches (see train_step).
  >>> batches = skipgram.make_batches(jax.random.key(1), corpus.tokens, corpus.counts,
  ...                                 window=3, batch_size=32, threshold=0.0)
  >>> params = skipgram.init_params(jax.random.key(2), corpus.vocab_size, 8)
  >>> params, losses = skipgram.train(params, batches, jax.random.key(3), num_negatives=5,
  ...                                 sampler=unigram_sampler(corpus.counts, 0.75),
  ...                                 learning_rate=0.05)
  >>> quality = skipgram.evaluate(params.input, corpus, jax.random.key(4), k=5)
  >>> bool(quality["topic_precision"] > 2 * quality["topic_precision_chance"])
  True

References:
  Mikolov, Chen, Corrado & Dean, *Efficient estimation of word representations in
  vector space*, ICLR workshop 2013 (2013a). Mikolov, Sutskever, Chen, Corrado & Dean,
  *Distributed representations of words and phrases and their compositionality*,
  NeurIPS 2013 (2013b). Levy & Goldberg, *Neural word embedding as implicit matrix
  factorization*, NeurIPS 2014. Levy, Goldberg & Dagan, *Improving distributional
  similarity with lessons learned from word embeddings*, TACL 2015.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import operator
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gradest._src.base import Array, check_key, check_positive_int, is_concrete
from gradest._src.nce import negative_sampling_loss
from gradest._src.samplers import Sampler, accidental_hits, sample_candidates

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
  _check_ids(tokens, probs.shape[0], "tokens")
  return jax.random.uniform(key, tokens.shape) < probs[tokens]


def _check_ids(ids: Array, vocab_size: int, name: str) -> None:
  if is_concrete(ids) and ids.size:
    values = np.asarray(ids)
    low, high = int(values.min()), int(values.max())
    if low < 0 or high >= vocab_size:
      raise ValueError(
        f"{name} must be word ids in [0, {vocab_size}) (vocab_size from counts or the "
        f"embedding tables), got values in [{low}, {high}]."
      )


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
  _check_ids(tokens, counts.shape[0], "tokens")
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
# Parameters, loss, sparse SGD.
# --------------------------------------------------------------------------------------


class SkipGramParams(NamedTuple):
  """The two embedding tables.

  Attributes:
    input: the word (center) vectors :math:`v_w`, ``(V, d)`` (word2vec's ``syn0``: the
      embeddings to use).
    output: the context vectors :math:`u_w`, ``(V, d)`` (word2vec's ``syn1neg``).
  """

  input: Array
  output: Array


def init_params(key: Array, vocab_size: int, dim: int) -> SkipGramParams:
  r"""Embedding tables with word2vec's initialization.

  .. math::
    v_w \sim \mathcal U\big(-\tfrac{1}{2d}, \tfrac{1}{2d}\big)^d, \qquad u_w = 0.

  Args:
    key: a PRNG key.
    vocab_size: ``V >= 1``.
    dim: ``d >= 1``.

  Returns:
    :class:`SkipGramParams` of float32 ``(V, d)`` tables.

  Examples:
    >>> import jax
    >>> p = init_params(jax.random.key(0), 10, 4)
    >>> p.input.shape, float(abs(p.input).max()) <= 0.125, float(abs(p.output).max())
    ((10, 4), True, 0.0)
  """
  check_key(key)
  vocab_size = check_positive_int(vocab_size, "vocab_size")
  dim = check_positive_int(dim, "dim")
  half = 0.5 / dim
  table = jax.random.uniform(key, (vocab_size, dim), jnp.float32, -half, half)
  return SkipGramParams(table, jnp.zeros((vocab_size, dim), jnp.float32))


def _check_params(params: Any) -> SkipGramParams:
  if not isinstance(params, SkipGramParams):
    raise TypeError(
      f"params must be SkipGramParams(input, output) (from init_params), got "
      f"{type(params).__name__}."
    )
  vin, vout = jnp.shape(params.input), jnp.shape(params.output)
  if len(vin) != 2 or vin != vout:
    raise ValueError(
      f"params.input and params.output must both have shape (vocab_size, dim), got {vin} "
      f"and {vout}."
    )
  return params


def _check_step_args(params, centers, contexts, weights, sampler, num_negatives, batch_ndim):
  params = _check_params(params)
  vocab_size = params.input.shape[0]
  centers = _int_array(centers, "centers")
  contexts = _int_array(contexts, "contexts")
  what = "(batch,)" if batch_ndim == 1 else "(num_steps, batch)"
  if centers.ndim != batch_ndim or contexts.shape != centers.shape:
    raise ValueError(
      f"centers and contexts must have the same shape {what}, got {centers.shape} and "
      f"{contexts.shape}."
    )
  if weights is None:
    weights = jnp.ones(centers.shape, jnp.float32)
  else:
    weights = jnp.asarray(weights)
    if weights.shape != centers.shape:
      raise ValueError(
        f"weights must have the shape of centers {centers.shape}, got {weights.shape}."
      )
    weights = weights.astype(jnp.float32)
  if not isinstance(sampler, Sampler):
    raise TypeError(
      "sampler must be a gradest sampler, e.g. gradest.samplers.unigram_sampler(counts, "
      f"0.75), got {type(sampler).__name__}."
    )
  if sampler.num_classes != vocab_size:
    raise ValueError(
      f"sampler.num_classes={sampler.num_classes} does not match the vocabulary size "
      f"{vocab_size} of params."
    )
  num_negatives = check_positive_int(num_negatives, "num_negatives")
  _check_ids(centers, vocab_size, "centers")
  _check_ids(contexts, vocab_size, "contexts")
  return params, centers, contexts, weights, num_negatives


def _negatives(sampler, key, contexts, num_negatives, shared_negatives):
  """``(k,)`` negatives shared by the batch, or ``(B, k)`` drawn independently per pair."""
  return sample_candidates(
    sampler, key, contexts[:, None], num_negatives, shared_negatives=shared_negatives
  ).sampled


def _output_ids(contexts, negatives, shared_negatives):
  """The output rows of a batch: ``(B + k,)`` when shared, else ``(B, 1 + k)``."""
  if shared_negatives:
    return jnp.concatenate([contexts, negatives])
  return jnp.concatenate([contexts[:, None], negatives], axis=1)


def _rows_loss(in_rows, out_rows, weights, mask, shared_negatives):
  """``sum_b weights_b * loss_b`` from gathered rows, and the per-pair losses."""
  if shared_negatives:
    b = in_rows.shape[0]
    true = jnp.sum(in_rows * out_rows[:b], axis=-1)[:, None]
    sampled = in_rows @ out_rows[b:].T
  else:
    logits = jnp.einsum("bd,bjd->bj", in_rows, out_rows)
    true, sampled = logits[:, :1], logits[:, 1:]
  losses = negative_sampling_loss(true, sampled, sampled_mask=mask)
  return jnp.sum(weights * losses), losses


def _hit_mask(contexts, negatives, remove_accidental_hits):
  if not remove_accidental_hits:
    return None
  return ~accidental_hits(contexts[:, None], negatives)


def _pair_losses(params, centers, contexts, key, sampler, num_negatives, shared, remove_hits):
  negatives = _negatives(sampler, key, contexts, num_negatives, shared)
  ids = _output_ids(contexts, negatives, shared)
  mask = _hit_mask(contexts, negatives, remove_hits)
  ones = jnp.ones(centers.shape, jnp.float32)
  return _rows_loss(params.input[centers], params.output[ids], ones, mask, shared)[1]


def pair_losses(
  params: SkipGramParams,
  centers: Array,
  contexts: Array,
  key: Array,
  *,
  sampler: Sampler,
  num_negatives: int,
  shared_negatives: bool = False,
  remove_accidental_hits: bool = True,
) -> Array:
  r"""The negative-sampling loss of each (center, context) pair, from the full tables.

  .. math::
    \ell_b = -\log \sigma(u_{o_b}^\top v_{c_b})
      - \sum_{j=1}^{k} [n_{bj} \ne o_b] \log \sigma(-u_{n_{bj}}^\top v_{c_b}),

  with ``k`` negatives per pair drawn independently with replacement,
  ``n = sample_candidates(sampler, key, contexts[:, None], k, shared_negatives=False)
  .sampled`` of shape ``(B, k)``, or with ``shared_negatives`` one set of shape ``(k,)``
  for the batch; with ``remove_accidental_hits`` a negative equal to the pair's context is
  left out (word2vec skips it). :func:`train_step` draws the same negatives from the
  same key. ``jax.grad`` of a sum of these with respect to ``params`` is a dense ``(V, d)``
  array; :func:`train_step` applies the same gradient sparsely.

  Args:
    params: :class:`SkipGramParams`, tables ``(V, d)``.
    centers: int center words, ``(B,)``.
    contexts: int context words, ``(B,)``.
    key: a PRNG key for the negatives.
    sampler: the noise distribution, a :class:`gradest.samplers.Sampler` over ``V``
      words (word2vec: ``unigram_sampler(counts, 0.75)``).
    num_negatives: ``k >= 1`` (static).
    shared_negatives: one set of negatives for the whole batch.
    remove_accidental_hits: leave out negatives equal to the pair's context.

  Returns:
    float32 ``(B,)``.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> from gradest.samplers import UniformSampler
    >>> p = init_params(jax.random.key(0), 10, 4)
    >>> l = pair_losses(p, jnp.array([1, 2]), jnp.array([3, 4]), jax.random.key(1),
    ...                 sampler=UniformSampler(10), num_negatives=3)
    >>> l.shape, bool(l.max() <= 4 * jnp.log(2.0) + 1e-6)  # u = 0: (1 + k) log 2 at most
    ((2,), True)
  """
  check_key(key)
  params, centers, contexts, _, k = _check_step_args(
    params, centers, contexts, None, sampler, num_negatives, 1
  )
  return _pair_losses_jit(
    params,
    centers,
    contexts,
    key,
    sampler,
    k,
    bool(shared_negatives),
    bool(remove_accidental_hits),
  )


_pair_losses_jit = jax.jit(_pair_losses, static_argnums=(5, 6, 7))


def _sparse_step(params, centers, contexts, weights, key, lr, sampler, k, shared, remove_hits):
  negatives = _negatives(sampler, key, contexts, k, shared)
  ids = _output_ids(contexts, negatives, shared)
  mask = _hit_mask(contexts, negatives, remove_hits)
  in_rows, out_rows = params.input[centers], params.output[ids]
  (total, losses), (g_in, g_out) = jax.value_and_grad(_rows_loss, argnums=(0, 1), has_aux=True)(
    in_rows, out_rows, weights, mask, shared
  )
  del total
  new = SkipGramParams(
    params.input.at[centers].add(-lr * g_in), params.output.at[ids].add(-lr * g_out)
  )
  mean_loss = jnp.sum(weights * losses) / jnp.maximum(jnp.sum(weights), 1.0)
  return new, mean_loss


_train_step_jit = jax.jit(_sparse_step, static_argnums=(7, 8, 9), donate_argnums=(0,))


def train_step(
  params: SkipGramParams,
  centers: Array,
  contexts: Array,
  key: Array,
  learning_rate: float | Array,
  *,
  sampler: Sampler,
  num_negatives: int,
  weights: Array | None = None,
  shared_negatives: bool = False,
  remove_accidental_hits: bool = True,
) -> tuple[SkipGramParams, Array]:
  r"""One SGD step of skip-gram with negative sampling, by sparse row updates.

  With the per-pair losses :math:`\ell_b` of :func:`pair_losses` and the pair weights
  :math:`w_b`, the step is

  .. math::
    \theta \leftarrow \theta - \eta\, \nabla_\theta \sum_b w_b\, \ell_b,

  word2vec's per-pair learning rate :math:`\eta` (the gradient of a sum, so :math:`\eta`
  does not depend on the batch size; word2vec starts at 0.025). Only the rows the batch
  touches change: the gradient is taken with respect to the gathered rows
  ``input[centers]`` and ``output[ids]`` (``ids`` the contexts and the negatives) and
  added back with ``table.at[ids].add(-lr * g)``, which sums the contributions of
  repeated ids — exactly the dense gradient step, at a cost of
  :math:`O(B (k + 2) d)` instead of :math:`O(V d)`.

  A row that occurs ``n`` times in the batch moves by the sum of its ``n`` per-pair
  gradients, as with word2vec's lock-free threads, so a word drawn as a negative
  about :math:`B k q(w)` times per batch takes a step that many times larger: the
  batch must be small enough that words rarely repeat within it. With
  ``unigram^0.75`` negatives, ``B = 1024`` and :math:`\eta = 0.025` are stable for
  :math:`V = 10^4` (``benchmarks.skipgram``); a vocabulary of a few dozen words needs
  ``B`` around 32. With ``shared_negatives`` each negative row takes the gradients of
  all ``B`` pairs at once, so :math:`B \eta` must stay smaller still (at
  :math:`V = 10^4`, ``B = 1024`` trains and ``B = 4096`` diverges).

  The tables of ``params`` are **donated** (updated in place where the backend allows):
  do not use ``params`` after the call, use the returned ones.

  Args:
    params: :class:`SkipGramParams`, tables ``(V, d)``.
    centers: int ``(B,)``.
    contexts: int ``(B,)``.
    key: a PRNG key for the negatives.
    learning_rate: :math:`\eta`, a scalar.
    sampler: the noise distribution over the ``V`` words.
    num_negatives: ``k >= 1``.
    weights: per-pair weights ``(B,)`` (0 for padding); ``None``: all 1.
    shared_negatives: one set of ``k`` negatives for the whole batch (cheaper, noisier).
    remove_accidental_hits: leave out negatives equal to the pair's context (word2vec).

  Returns:
    ``(params, mean_loss)``: the updated tables and the weighted mean of the pair losses
    before the step.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> from gradest.samplers import UniformSampler
    >>> p = init_params(jax.random.key(0), 10, 4)
    >>> p, loss = train_step(p, jnp.array([1, 2]), jnp.array([3, 4]), jax.random.key(1), 0.1,
    ...                      sampler=UniformSampler(10), num_negatives=3)
    >>> p.output.shape, int((p.output != 0).any(axis=1).sum()) <= 8  # rows of 2 + 2 * 3 ids
    ((10, 4), True)
  """
  check_key(key)
  params, centers, contexts, weights, k = _check_step_args(
    params, centers, contexts, weights, sampler, num_negatives, 1
  )
  if jnp.ndim(learning_rate) != 0:
    raise ValueError(f"learning_rate must be a scalar, got shape {jnp.shape(learning_rate)}.")
  lr = jnp.asarray(learning_rate, jnp.float32)
  return _train_step_jit(
    params,
    centers,
    contexts,
    weights,
    key,
    lr,
    sampler,
    k,
    bool(shared_negatives),
    bool(remove_accidental_hits),
  )


def _scan_steps(params, centers, contexts, weights, learning_rates, key, sampler, k, shared, hits):
  keys = jax.random.split(key, centers.shape[0])

  def body(p, inputs):
    c, o, w, lr, sub = inputs
    return _sparse_step(p, c, o, w, sub, lr, sampler, k, shared, hits)

  return jax.lax.scan(body, params, (centers, contexts, weights, learning_rates, keys))


_train_steps_jit = jax.jit(_scan_steps, static_argnums=(7, 8, 9), donate_argnums=(0,))


def train_steps(
  params: SkipGramParams,
  centers: Array,
  contexts: Array,
  learning_rates: Array,
  key: Array,
  *,
  sampler: Sampler,
  num_negatives: int,
  weights: Array | None = None,
  shared_negatives: bool = False,
  remove_accidental_hits: bool = True,
) -> tuple[SkipGramParams, Array]:
  """:func:`train_step` over pre-batched pairs, in one jitted ``lax.scan``.

  Step ``i`` uses batch ``centers[i], contexts[i]``, learning rate ``learning_rates[i]``
  and the key ``jax.random.split(key, num_steps)[i]``. The tables are donated.

  Args:
    params: :class:`SkipGramParams`.
    centers: int ``(num_steps, B)``.
    contexts: int ``(num_steps, B)``.
    learning_rates: ``(num_steps,)`` (e.g. a slice of :func:`linear_decay`).
    key: a PRNG key.
    sampler: the noise distribution over the ``V`` words.
    num_negatives: ``k >= 1``.
    weights: ``(num_steps, B)`` or ``None``.
    shared_negatives: one set of negatives per batch.
    remove_accidental_hits: leave out negatives equal to the pair's context.

  Returns:
    ``(params, mean_losses)`` with ``mean_losses`` of shape ``(num_steps,)``.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> from gradest.samplers import UniformSampler
    >>> p = init_params(jax.random.key(0), 10, 4)
    >>> ids = jnp.arange(12).reshape(3, 4) % 10
    >>> p, losses = train_steps(p, ids, ids[::-1], linear_decay(0.1, 3), jax.random.key(1),
    ...                         sampler=UniformSampler(10), num_negatives=2)
    >>> losses.shape
    (3,)
  """
  check_key(key)
  params, centers, contexts, weights, k = _check_step_args(
    params, centers, contexts, weights, sampler, num_negatives, 2
  )
  learning_rates = jnp.asarray(learning_rates, jnp.float32)
  if learning_rates.shape != centers.shape[:1]:
    raise ValueError(
      f"learning_rates must have shape (num_steps,) = {centers.shape[:1]}, got "
      f"{learning_rates.shape}."
    )
  return _train_steps_jit(
    params,
    centers,
    contexts,
    weights,
    learning_rates,
    key,
    sampler,
    k,
    bool(shared_negatives),
    bool(remove_accidental_hits),
  )


def linear_decay(
  learning_rate: float,
  num_steps: int,
  *,
  total_steps: int | None = None,
  start: int = 0,
  floor: float = 1e-4,
) -> Array:
  r"""word2vec's learning rates, decaying linearly to a floor.

  .. math::
    \eta_i = \eta_0 \max\Big(1 - \frac{i}{N},\; \text{floor}\Big),
    \qquad i = \text{start}, \dots, \text{start} + \text{num\_steps} - 1,

  with :math:`N` = ``total_steps`` (default ``num_steps``); word2vec decays over all
  epochs' words and floors at :math:`10^{-4} \eta_0`.

  Args:
    learning_rate: :math:`\eta_0 > 0`.
    num_steps: how many rates, ``>= 1``.
    total_steps: :math:`N \ge 1`, the length of the whole schedule.
    start: the index of the first rate.
    floor: the smallest rate as a fraction of :math:`\eta_0`, in ``[0, 1]``.

  Returns:
    float32 ``(num_steps,)``.

  Examples:
    >>> [round(float(x), 3) for x in linear_decay(1.0, 4)]
    [1.0, 0.75, 0.5, 0.25]
  """
  num_steps = check_positive_int(num_steps, "num_steps")
  total = num_steps if total_steps is None else check_positive_int(total_steps, "total_steps")
  start = check_positive_int(start, "start", 0)
  if not (isinstance(learning_rate, (int, float)) and learning_rate > 0):
    raise ValueError(f"learning_rate must be a positive number, got {learning_rate}.")
  if not 0.0 <= floor <= 1.0:
    raise ValueError(f"floor must lie in [0, 1], got {floor}.")
  i = jnp.arange(start, start + num_steps, dtype=jnp.float32)
  return (learning_rate * jnp.maximum(1.0 - i / total, floor)).astype(jnp.float32)


def train(
  params: SkipGramParams,
  batches: Batches | Sequence[Batches],
  key: Array,
  *,
  sampler: Sampler,
  num_negatives: int,
  learning_rate: float = 0.025,
  shared_negatives: bool = False,
  remove_accidental_hits: bool = True,
  steps_per_call: int = 256,
  callback: Callable[[int, int, Array], Any] | None = None,
) -> tuple[SkipGramParams, np.ndarray]:
  """Trains on one or more epochs of batches with a linearly decaying learning rate.

  Runs :func:`train_steps` on ``steps_per_call`` batches at a time (the step count is
  padded with zero-weight batches to a multiple of it, so everything compiles once), the
  learning rate decaying over all epochs (:func:`linear_decay`).

  Args:
    params: :class:`SkipGramParams` (donated).
    batches: :class:`Batches` of one epoch, or a sequence of them (one per epoch, each
      from :func:`make_batches` with its own key).
    key: a PRNG key for the negatives.
    sampler: the noise distribution over the ``V`` words.
    num_negatives: ``k >= 1``.
    learning_rate: the initial per-pair rate (word2vec's 0.025).
    shared_negatives: one set of negatives per batch.
    remove_accidental_hits: leave out negatives equal to the pair's context.
    steps_per_call: batches per jitted call.
    callback: called after each call as ``callback(steps_done, total_steps,
      mean_losses)`` (e.g. to update a progress bar); ``mean_losses`` holds the call's
      ``steps_per_call`` losses, 0 for padding steps.

  Returns:
    ``(params, mean_losses)`` with one mean loss per (non-padding) step, NumPy.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> from gradest.samplers import UniformSampler
    >>> b = make_batches(jax.random.key(0), jnp.array([[1, 2, 3, 4]]), jnp.ones(5),
    ...                  window=2, batch_size=4)
    >>> p, losses = train(init_params(jax.random.key(1), 5, 3), b, jax.random.key(2),
    ...                   sampler=UniformSampler(5), num_negatives=2)
    >>> losses.shape == (b.num_steps,)
    True
  """
  check_key(key)
  epochs = [batches] if isinstance(batches, Batches) else list(batches)
  if not epochs or not all(isinstance(b, Batches) for b in epochs):
    raise TypeError("batches must be a Batches (from make_batches) or a sequence of them.")
  per_call = check_positive_int(steps_per_call, "steps_per_call")
  total = sum(b.num_steps for b in epochs)
  rates = np.asarray(linear_decay(learning_rate, total))
  done, call, losses = 0, 0, []
  for batch in epochs:
    n = batch.num_steps
    pad = -n % per_call
    arrays = [batch.centers, batch.contexts, batch.weights]
    if pad:
      arrays = [np.concatenate([a, np.zeros((pad,) + a.shape[1:], a.dtype)]) for a in arrays]
    lr = np.concatenate([rates[done : done + n], np.zeros(pad, np.float32)])
    for start in range(0, n + pad, per_call):
      part = slice(start, start + per_call)
      params, step_losses = train_steps(
        params,
        arrays[0][part],
        arrays[1][part],
        lr[part],
        jax.random.fold_in(key, call),
        sampler=sampler,
        num_negatives=num_negatives,
        weights=arrays[2][part],
        shared_negatives=shared_negatives,
        remove_accidental_hits=remove_accidental_hits,
      )
      real = max(0, min(per_call, n - start))
      losses.append(np.asarray(step_losses)[:real])
      call += 1
      if callback is not None:
        callback(done + start + real, total, step_losses)
    done += n
  return params, np.concatenate(losses)


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
    >>> m = evaluate(init_params(jax.random.key(1), c.vocab_size, 8).input, c, jax.random.key(2))
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
  "SkipGramParams",
  "analogy_accuracy",
  "corpus_structure",
  "evaluate",
  "init_params",
  "keep_probabilities",
  "linear_decay",
  "make_batches",
  "nearest_neighbours",
  "neighbour_precision",
  "neighbour_precision_chance",
  "pair_losses",
  "planted_analogies",
  "planted_corpus",
  "skipgram_pairs",
  "subsample",
  "train",
  "train_step",
  "train_steps",
]
