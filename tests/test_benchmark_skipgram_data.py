"""The planted corpus of the skip-gram benchmark: corpus, subsampling, pairs, metrics.

Shapes are shared between tests where possible (the tiny vocabulary ``SMALL`` of the
docstring examples), so each jitted function compiles few times.
"""

from __future__ import annotations

import functools
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import skipgram_data as data

from .helpers import z_value

# 3 topics x 2 roles x 4 synonyms + 4 function words = 28 words.
SMALL = dict(num_topics=3, num_roles=2, words_per_cell=4, num_function_words=4)
MIXTURE = (0.5, 0.25, 0.15, 0.1)


def small_corpus(key, num_sentences):
  return data.planted_corpus(key, num_sentences, mixture=MIXTURE, **SMALL)


# --------------------------------------------------------------------------------------
# The planted corpus.
# --------------------------------------------------------------------------------------


def cell_distribution(num_topics, num_roles, mixture):
  """Exact distribution of a content token's (topic, role) in a sentence of cell (0, 0)."""
  p = np.full((num_topics, num_roles), mixture[3] / (num_topics * num_roles))
  p[0, :] += mixture[1] / num_roles
  p[:, 0] += mixture[2] / num_topics
  p[0, 0] += mixture[0]
  return p


def test_planted_corpus_has_the_planted_statistics(key):
  # Two corpora by vmap over keys (the first equals a direct call), pooled.
  keys = jax.random.split(key, 2)
  stacked = jax.jit(jax.vmap(lambda k: small_corpus(k, 3000)))(keys)
  np.testing.assert_array_equal(stacked.tokens[0], small_corpus(keys[0], 3000).tokens)
  np.testing.assert_array_equal(
    stacked.counts[1], np.bincount(stacked.tokens[1].ravel(), minlength=28)
  )
  num_sentences = 6000
  corpus = data.PlantedCorpus(
    stacked.tokens.reshape(num_sentences, -1),
    stacked.counts.sum(0),
    stacked.topic[0],
    stacked.role[0],
    **{n: v for n, v in SMALL.items()},
  )
  f, t, r, m = (
    SMALL[n] for n in ("num_function_words", "num_topics", "num_roles", "words_per_cell")
  )
  v = f + t * r * m
  tokens = np.asarray(corpus.tokens)
  assert tokens.shape == (num_sentences, 20) and corpus.tokens.dtype == jnp.int32
  assert corpus.vocab_size == v and tokens.min() >= 0 and tokens.max() < v
  np.testing.assert_array_equal(corpus.counts, np.bincount(tokens.ravel(), minlength=v))
  topic, role = data.corpus_structure(t, r, m, f)
  np.testing.assert_array_equal(corpus.topic, topic)
  np.testing.assert_array_equal(corpus.role, role)
  assert topic.tolist()[: f + 2] == [-1] * f + [0, 0] and role.tolist()[: f + 2] == [-1] * f + [
    0,
    1,
  ]

  # Function words follow the Zipf law of their ranks: a binomial z-test per word.
  zipf = 1.0 / np.arange(1, v + 1)
  expected = zipf[:f] / zipf.sum()
  n = tokens.size
  freq = np.asarray(corpus.counts[:f]) / n
  se = np.sqrt(expected * (1 - expected) / n)
  z = z_value(f + 2)
  assert np.all(np.abs(freq - expected) <= z * se), (freq, expected)

  # The first two tokens of a sentence, when both are content words, fall in the same
  # cell (and the same topic) with the probability the mixture implies.
  cell = np.asarray(corpus.cell)
  both = (tokens[:, 0] >= f) & (tokens[:, 1] >= f)
  first, second = tokens[both, 0], tokens[both, 1]
  p = cell_distribution(t, r, MIXTURE)
  for name, same, exact in [
    ("cell", cell[first] == cell[second], np.sum(p**2)),
    ("topic", topic[first] == topic[second], np.sum(p.sum(1) ** 2)),
  ]:
    se = math.sqrt(exact * (1 - exact) / same.size)
    assert abs(same.mean() - exact) <= z * se, (name, same.mean(), exact, se)


# --------------------------------------------------------------------------------------
# Subsampling.
# --------------------------------------------------------------------------------------

COUNTS = np.array([50_000, 12_000, 3_000, 400, 70, 0, 9])


def reference_keep(counts, t, rule):
  freq = counts / counts.sum()
  ratio = np.divide(t, freq, out=np.full(freq.shape, np.inf), where=freq > 0)
  keep = np.sqrt(ratio) if rule == "paper" else np.sqrt(ratio) + ratio
  return np.minimum(keep, 1.0)


@pytest.mark.parametrize("rule", data.SUBSAMPLING_RULES)
def test_keep_probabilities_match_the_formula(rule):
  jitted = jax.jit(functools.partial(data.keep_probabilities, rule=rule))
  for t in (1e-3, 2e-2):
    np.testing.assert_allclose(jitted(COUNTS, t), reference_keep(COUNTS, t, rule), rtol=2e-6)
  np.testing.assert_array_equal(data.keep_probabilities(COUNTS, 0.0, rule=rule), 1.0)
  thresholds = jnp.array([1e-4, 1e-3, 1e-1])
  batched = jax.vmap(lambda t: data.keep_probabilities(COUNTS, t, rule=rule))(thresholds)
  for row, t in zip(batched, thresholds, strict=True):
    np.testing.assert_allclose(row, reference_keep(COUNTS, float(t), rule), rtol=2e-6)
  # word2vec's rule keeps more than the paper's, and both keep rare words.
  if rule == "word2vec":
    paper = data.keep_probabilities(COUNTS, 1e-3)
    assert np.all(np.asarray(jitted(COUNTS, 1e-3)) >= np.asarray(paper))


def test_subsample_keeps_each_word_at_its_rate(key):
  per_word, t = 20_000, 2e-2
  tokens = np.repeat(np.arange(len(COUNTS)), per_word).reshape(-1, 1000)
  expected = reference_keep(COUNTS, t, "paper")
  keep = jax.jit(data.subsample)(key, tokens, COUNTS, t)
  assert keep.shape == tokens.shape and keep.dtype == jnp.bool_
  rate = np.asarray(keep).reshape(len(COUNTS), per_word).mean(axis=1)
  se = np.sqrt(expected * (1 - expected) / per_word)
  z = z_value(len(COUNTS))
  assert np.all(np.abs(rate - expected) <= z * se), (rate, expected, se)
  # vmap over keys: independent draws, each at the same rates.
  many = jax.vmap(lambda k: data.subsample(k, tokens[:7], COUNTS, t))(jax.random.split(key, 4))
  assert many.shape == (4,) + tokens[:7].shape
  assert not np.array_equal(many[0], many[1])


# --------------------------------------------------------------------------------------
# Pairs.
# --------------------------------------------------------------------------------------


def brute_force_pairs(tokens, keep, window):
  """``{(sentence, position, offset): (center, context)}`` by enumeration."""
  pairs = {}
  for s in range(tokens.shape[0]):
    kept = tokens[s][keep[s]]
    for i, j in itertools.product(range(len(kept)), repeat=2):
      if 0 < abs(i - j) <= window:
        pairs[(s, i, j - i)] = (kept[i], kept[j])
  return pairs


def test_pairs_are_the_pairs_within_the_window():
  rng = np.random.default_rng(0)
  window = 3
  tokens = rng.integers(0, 50, (6, 9)).astype(np.int32)
  keep = rng.random((6, 9)) < 0.7
  pairs_fn = jax.jit(functools.partial(data.skipgram_pairs, window=window, dynamic_window=False))
  p = pairs_fn(None, tokens, keep=keep)
  assert p.centers.shape == p.contexts.shape == p.valid.shape == (6, 9, 2 * window)
  offsets = np.concatenate([np.arange(-window, 0), np.arange(1, window + 1)])
  s, i, j = np.nonzero(np.asarray(p.valid))
  found = {
    (a, b, offsets[c]): (p.centers[a, b, c], p.contexts[a, b, c])
    for a, b, c in zip(s, i, j, strict=True)
  }
  assert found == brute_force_pairs(tokens, keep, window)
  # vmap over sentences gives the batched result.
  one = jax.vmap(lambda t, k: pairs_fn(None, t, keep=k))(tokens, keep)
  for a, b in zip(one, p, strict=True):
    np.testing.assert_array_equal(a, b)


def test_dynamic_window_weights_distance_o_by_window_minus_o_plus_one(key):
  window, length = 4, 40
  tokens = jnp.zeros((400, length), jnp.int32)
  p = jax.jit(data.skipgram_pairs, static_argnums=2)(key, tokens, window)
  valid = np.asarray(p.valid)
  offsets = np.concatenate([np.arange(-window, 0), np.arange(1, window + 1)])
  z = z_value(window)
  inner = slice(window, length - window)  # centers whose whole window is inside
  for o in range(1, window + 1):
    plus, minus = valid[:, inner, offsets == o][..., 0], valid[:, inner, offsets == -o][..., 0]
    # One reach per center: the two sides agree.
    np.testing.assert_array_equal(plus, minus)
    exact = (window - o + 1) / window
    se = math.sqrt(exact * (1 - exact) / plus.size)
    assert abs(plus.mean() - exact) <= z * se + 1e-12, (o, plus.mean(), exact)
  # Slots outside the sentence are never pairs.
  assert not valid[:, 0, offsets < 0].any() and not valid[:, -1, offsets > 0].any()


def test_make_batches_shuffles_and_pads_every_pair(key):
  rng = np.random.default_rng(1)
  tokens = rng.integers(0, 28, (7, 6)).astype(np.int32)
  b = data.make_batches(
    key,
    tokens,
    np.ones(28),
    window=2,
    batch_size=8,
    threshold=0.0,
    dynamic_window=False,
    sentences_per_chunk=3,
  )
  per_sentence = 2 * sum(6 - o for o in (1, 2))
  assert b.num_pairs == 7 * per_sentence and b.num_words == tokens.size
  assert b.centers.shape == b.contexts.shape == b.weights.shape == (b.num_steps, 8)
  assert b.num_steps == -(-b.num_pairs // 8)
  flat_w = b.weights.reshape(-1)
  np.testing.assert_array_equal(flat_w, np.arange(flat_w.size) < b.num_pairs)
  n = b.num_pairs
  got = sorted(zip(b.centers.reshape(-1)[:n], b.contexts.reshape(-1)[:n], strict=True))
  want = sorted(brute_force_pairs(tokens, np.ones_like(tokens, bool), 2).values())
  assert got == want
  # Shuffled: not in corpus order.
  assert list(b.centers.reshape(-1)[:per_sentence]) != [c for c, _ in want[:per_sentence]]


# --------------------------------------------------------------------------------------
# Quality measures.
# --------------------------------------------------------------------------------------


def structured_corpus():
  topic, role = data.corpus_structure(
    SMALL["num_topics"], SMALL["num_roles"], SMALL["words_per_cell"], SMALL["num_function_words"]
  )
  counts = jnp.ones(topic.shape, jnp.int32)
  return data.PlantedCorpus(
    jnp.zeros((1, 2), jnp.int32),
    counts,
    jnp.asarray(topic),
    jnp.asarray(role),
    SMALL["num_topics"],
    SMALL["num_roles"],
    SMALL["words_per_cell"],
    SMALL["num_function_words"],
  )


def test_planted_embeddings_score_perfectly(key):
  corpus = structured_corpus()
  t, r = corpus.num_topics, corpus.num_roles
  k1, k2, k3, k4 = jax.random.split(key, 4)
  topic_vecs = 3.0 * jax.random.normal(k1, (t, 16))
  role_vecs = jax.random.normal(k2, (r, 16))
  content = np.asarray(corpus.topic >= 0)[:, None]
  e = topic_vecs[corpus.topic] + role_vecs[corpus.role]  # a_t + b_r: exact analogies
  e = np.where(
    content, e + 1e-3 * jax.random.normal(k3, e.shape), 5.0 * jax.random.normal(k4, e.shape)
  )
  cell, topic = corpus.cell, corpus.topic

  @jax.jit  # every public measure under one jit
  def measures(e, key, corpus):
    questions, answers = data.planted_analogies(key, corpus, 300)
    return dict(
      cell_p3=data.neighbour_precision(e, corpus.cell, 3),
      topic_p7=data.neighbour_precision(e, corpus.topic, 7),
      chance=data.neighbour_precision_chance(corpus.topic),
      neighbours=data.nearest_neighbours(e, jnp.arange(4, 28), 3),
      questions=questions,
      answers=answers,
      accuracy=data.analogy_accuracy(e, questions, answers, corpus.cell),
      evaluate=data.evaluate(e, corpus, key),
    )

  m = measures(e, key, corpus)
  assert float(m["cell_p3"]) == 1.0 and float(m["topic_p7"]) == 1.0
  np.testing.assert_array_equal(
    cell[m["neighbours"]], np.repeat(np.asarray(cell[4:]), 3).reshape(-1, 3)
  )
  q = m["questions"]
  np.testing.assert_array_equal(cell[q[:, 0]] - cell[q[:, 1]] + cell[q[:, 2]], m["answers"])
  assert np.all(topic[q[:, 0]] == topic[q[:, 1]]) and np.all(topic[q[:, 0]] != topic[q[:, 2]])
  assert float(m["accuracy"]) == 1.0
  ev = m["evaluate"]
  assert float(ev["topic_precision"]) >= 0.7 - 1e-6  # 7 same-topic words among 10
  assert float(ev["cell_precision"]) >= 0.3 - 1e-6 and float(ev["analogy_accuracy"]) == 1.0
  assert float(ev["topic_precision_chance"]) == pytest.approx(float(m["chance"]))


def test_random_embeddings_score_chance(key):
  """Neighbours of i.i.d. embeddings are a uniform subset: the chance level is exact."""
  corpus = structured_corpus()
  cell, topic = corpus.cell, corpus.topic
  draws = 200
  embeddings = jax.random.normal(key, (draws, corpus.vocab_size, 8))
  questions, answers = data.planted_analogies(jax.random.key(1), corpus, 50)

  @jax.jit
  def scores(embeddings):
    return jax.vmap(
      lambda e: (
        data.neighbour_precision(e, topic, 5),
        data.analogy_accuracy(e, questions, answers, cell),
      )
    )(embeddings)

  precision, accuracy = scores(embeddings)
  sizes = np.bincount(np.asarray(topic)[np.asarray(topic) >= 0])
  chance = np.mean([(sizes[g] - 1) / (corpus.vocab_size - 1) for g in np.asarray(topic) if g >= 0])
  assert float(data.neighbour_precision_chance(topic)) == pytest.approx(chance, rel=1e-6)
  analogy_chance = corpus.words_per_cell / (corpus.vocab_size - 3)
  z = z_value(2)
  for values, exact in [(precision, chance), (accuracy, analogy_chance)]:
    values = np.asarray(values, np.float64)
    se = values.std(ddof=1) / math.sqrt(draws)
    assert abs(values.mean() - exact) <= z * se, (values.mean(), exact, se)


# --------------------------------------------------------------------------------------
# Bad input.
# --------------------------------------------------------------------------------------


def test_bad_input_raises_errors_naming_the_argument(key):
  tokens = jnp.zeros((2, 5), jnp.int32)
  counts = jnp.ones(28)
  embeddings = jax.random.normal(key, (28, 4))
  ids = jnp.arange(4)
  c = structured_corpus()
  one_role = data.PlantedCorpus(c.tokens, c.counts, c.topic, c.role * 0, 6, 1, 4, 4)
  cases = [
    ("window", lambda: data.skipgram_pairs(key, tokens, 0)),
    ("window", lambda: data.make_batches(key, tokens, counts, window=0, batch_size=4)),
    ("threshold", lambda: data.keep_probabilities(counts, -1e-3)),
    ("threshold", lambda: data.subsample(key, tokens, counts, -1.0)),
    (
      "threshold",
      lambda: data.make_batches(key, tokens, counts, window=2, batch_size=4, threshold=-1e-5),
    ),
    ("rule", lambda: data.keep_probabilities(counts, 1e-3, rule="gensim")),
    ("counts", lambda: data.keep_probabilities(-counts, 1e-3)),
    ("keep", lambda: data.skipgram_pairs(key, tokens, 2, keep=jnp.ones((2, 4), bool))),
    ("key", lambda: data.skipgram_pairs(None, tokens, 2)),
    ("tokens", lambda: data.subsample(key, tokens + 30, counts, 1e-3)),
    ("groups", lambda: data.neighbour_precision(embeddings, jnp.zeros(27, jnp.int32))),
    ("k", lambda: data.nearest_neighbours(embeddings, ids, 28)),
    (
      "answer_groups",
      lambda: data.analogy_accuracy(
        embeddings,
        jnp.zeros((3, 3), jnp.int32),
        jnp.zeros(2, jnp.int32),
        jnp.zeros(28, jnp.int32),
      ),
    ),
    ("mixture", lambda: data.planted_corpus(key, 10, mixture=(1.0, -1.0, 0.0, 0.0))),
    ("mixture", lambda: data.planted_corpus(key, 10, mixture=(1.0, 0.0))),
    ("num_sentences", lambda: data.planted_corpus(key, 0)),
    ("num_roles", lambda: data.planted_analogies(key, one_role, 4)),
    ("embeddings", lambda: data.evaluate(embeddings[:20], structured_corpus(), key)),
  ]
  for name, call in cases:
    with pytest.raises((ValueError, TypeError), match=name):
      call()
