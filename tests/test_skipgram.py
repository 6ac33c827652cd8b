"""Skip-gram with negative sampling: corpus, subsampling, pairs, sparse steps, metrics.

Shapes are shared between tests where possible (the tiny vocabulary ``SMALL`` of the
docstring examples, one batch shape for the steps), so each jitted function compiles
few times.
"""

from __future__ import annotations

import functools
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gradest.models import skipgram
from gradest.samplers import LogUniformSampler, UniformSampler, sample_candidates, unigram_sampler

from .helpers import z_value

# 3 topics x 2 roles x 4 synonyms + 4 function words = 28 words.
SMALL = dict(num_topics=3, num_roles=2, words_per_cell=4, num_function_words=4)
MIXTURE = (0.5, 0.25, 0.15, 0.1)


def small_corpus(key, num_sentences):
  return skipgram.planted_corpus(key, num_sentences, mixture=MIXTURE, **SMALL)


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
  corpus = skipgram.PlantedCorpus(
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
  topic, role = skipgram.corpus_structure(t, r, m, f)
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


@pytest.mark.parametrize("rule", skipgram.SUBSAMPLING_RULES)
def test_keep_probabilities_match_the_formula(rule):
  jitted = jax.jit(functools.partial(skipgram.keep_probabilities, rule=rule))
  for t in (1e-3, 2e-2):
    np.testing.assert_allclose(jitted(COUNTS, t), reference_keep(COUNTS, t, rule), rtol=2e-6)
  np.testing.assert_array_equal(skipgram.keep_probabilities(COUNTS, 0.0, rule=rule), 1.0)
  thresholds = jnp.array([1e-4, 1e-3, 1e-1])
  batched = jax.vmap(lambda t: skipgram.keep_probabilities(COUNTS, t, rule=rule))(thresholds)
  for row, t in zip(batched, thresholds, strict=True):
    np.testing.assert_allclose(row, reference_keep(COUNTS, float(t), rule), rtol=2e-6)
  # word2vec's rule keeps more than the paper's, and both keep rare words.
  if rule == "word2vec":
    paper = skipgram.keep_probabilities(COUNTS, 1e-3)
    assert np.all(np.asarray(jitted(COUNTS, 1e-3)) >= np.asarray(paper))


def test_subsample_keeps_each_word_at_its_rate(key):
  per_word, t = 20_000, 2e-2
  tokens = np.repeat(np.arange(len(COUNTS)), per_word).reshape(-1, 1000)
  expected = reference_keep(COUNTS, t, "paper")
  keep = jax.jit(skipgram.subsample)(key, tokens, COUNTS, t)
  assert keep.shape == tokens.shape and keep.dtype == jnp.bool_
  rate = np.asarray(keep).reshape(len(COUNTS), per_word).mean(axis=1)
  se = np.sqrt(expected * (1 - expected) / per_word)
  z = z_value(len(COUNTS))
  assert np.all(np.abs(rate - expected) <= z * se), (rate, expected, se)
  # vmap over keys: independent draws, each at the same rates.
  many = jax.vmap(lambda k: skipgram.subsample(k, tokens[:7], COUNTS, t))(jax.random.split(key, 4))
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
  pairs_fn = jax.jit(
    functools.partial(skipgram.skipgram_pairs, window=window, dynamic_window=False)
  )
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
  p = jax.jit(skipgram.skipgram_pairs, static_argnums=2)(key, tokens, window)
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
  b = skipgram.make_batches(
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
# The sparse step is the dense SGD step.
# --------------------------------------------------------------------------------------

V, DIM, BATCH, K = 7, 3, 16, 4  # a tiny vocabulary: ids repeat within the batch


def step_inputs(key):
  k1, k2, k3, k4, k5 = jax.random.split(key, 5)
  params = skipgram.SkipGramParams(
    jax.random.normal(k1, (V, DIM)), 0.5 * jax.random.normal(k2, (V, DIM))
  )
  centers = jax.random.randint(k3, (BATCH,), 0, V)
  contexts = jax.random.randint(k4, (BATCH,), 0, V)
  weights = (jax.random.uniform(k5, (BATCH,)) < 0.8).astype(jnp.float32)
  return params, centers, contexts, weights


def dense_reference(params, centers, contexts, weights, negatives, shared, remove_hits):
  """``(sum_b w_b loss_b, loss_b)`` written out on the full tables."""
  v = params.input[centers]
  true = jnp.sum(v * params.output[contexts], axis=-1)
  if shared:
    neg = v @ params.output[negatives].T
    negatives = jnp.broadcast_to(negatives, (BATCH, K))
  else:
    neg = jnp.einsum("bd,bkd->bk", v, params.output[negatives])
  keep = negatives != contexts[:, None] if remove_hits else jnp.ones(neg.shape, bool)
  losses = -jax.nn.log_sigmoid(true) - jnp.sum(jnp.where(keep, jax.nn.log_sigmoid(-neg), 0), -1)
  return jnp.sum(weights * losses), losses


@pytest.mark.parametrize("shared, remove_hits", [(False, True), (True, False)])
def test_sparse_step_equals_the_dense_gradient_step(key, shared, remove_hits):
  params, centers, contexts, weights = step_inputs(key)
  sampler = unigram_sampler(jnp.arange(1, V + 1), 0.75)
  step_key, lr = jax.random.key(7), 0.3
  options = dict(
    sampler=sampler, num_negatives=K, shared_negatives=shared, remove_accidental_hits=remove_hits
  )

  @jax.jit  # one compilation: the reference, pair_losses and train_step under jit
  def run(params):
    if shared:  # one set for the batch
      negatives = sample_candidates(sampler, step_key, contexts[:, None], K).sampled
    else:  # K per pair
      negatives = sampler.sample(step_key, (BATCH, K))
    (total, losses), grads = jax.value_and_grad(dense_reference, has_aux=True)(
      params, centers, contexts, weights, negatives, shared, remove_hits
    )
    expected = jax.tree.map(lambda p, g: p - lr * g, params, grads)
    got_losses = skipgram.pair_losses(params, centers, contexts, step_key, **options)
    new, mean_loss = skipgram.train_step(
      params, centers, contexts, step_key, lr, weights=weights, **options
    )
    return expected, total, losses, got_losses, new, mean_loss

  expected, total, losses, got_losses, new, mean_loss = run(params)
  np.testing.assert_allclose(got_losses, losses, rtol=1e-5)
  np.testing.assert_allclose(new.input, expected.input, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(new.output, expected.output, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(mean_loss, total / jnp.sum(weights), rtol=1e-5)
  # Rows the batch does not touch are unchanged, bit for bit.
  touched_in = np.zeros(V, bool)
  touched_in[np.asarray(centers)[np.asarray(weights) > 0]] = True
  assert not touched_in.all()
  np.testing.assert_array_equal(new.input[~touched_in], params.input[~touched_in])


def test_train_steps_is_a_scan_of_train_steps(key):
  params, centers, contexts, weights = step_inputs(key)
  steps = 2
  c = jnp.stack([jnp.roll(centers, i) for i in range(steps)])
  o = jnp.stack([jnp.roll(contexts, 2 * i) for i in range(steps)])
  w = jnp.stack([weights] * steps)
  rates = skipgram.linear_decay(0.2, steps)
  options = dict(sampler=LogUniformSampler(V), num_negatives=K)
  # The donating train_steps (outside jit), against train_step in a Python loop.
  scanned, losses = skipgram.train_steps(
    jax.tree.map(jnp.copy, params), c, o, rates, key, weights=w, **options
  )

  @jax.jit
  def loop(p):
    out = []
    for i, step_key in enumerate(jax.random.split(key, steps)):
      p, loss = skipgram.train_step(p, c[i], o[i], step_key, rates[i], weights=w[i], **options)
      out.append(loss)
    return p, jnp.stack(out)

  looped, looped_losses = loop(params)
  np.testing.assert_allclose(losses, looped_losses, rtol=1e-5)
  np.testing.assert_allclose(scanned.input, looped.input, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(scanned.output, looped.output, rtol=1e-5, atol=1e-6)


def test_linear_decay_is_word2vecs_schedule():
  np.testing.assert_allclose(
    skipgram.linear_decay(0.025, 5), 0.025 * np.array([1, 0.8, 0.6, 0.4, 0.2]), rtol=1e-6
  )
  np.testing.assert_allclose(
    skipgram.linear_decay(1.0, 3, total_steps=10, start=9, floor=0.05), [0.1, 0.05, 0.05], rtol=1e-6
  )
  assert jax.jit(lambda: skipgram.linear_decay(0.5, 4))().shape == (4,)


# --------------------------------------------------------------------------------------
# Quality measures.
# --------------------------------------------------------------------------------------


def structured_corpus():
  topic, role = skipgram.corpus_structure(
    SMALL["num_topics"], SMALL["num_roles"], SMALL["words_per_cell"], SMALL["num_function_words"]
  )
  counts = jnp.ones(topic.shape, jnp.int32)
  return skipgram.PlantedCorpus(
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
    questions, answers = skipgram.planted_analogies(key, corpus, 300)
    return dict(
      cell_p3=skipgram.neighbour_precision(e, corpus.cell, 3),
      topic_p7=skipgram.neighbour_precision(e, corpus.topic, 7),
      chance=skipgram.neighbour_precision_chance(corpus.topic),
      neighbours=skipgram.nearest_neighbours(e, jnp.arange(4, 28), 3),
      questions=questions,
      answers=answers,
      accuracy=skipgram.analogy_accuracy(e, questions, answers, corpus.cell),
      evaluate=skipgram.evaluate(e, corpus, key),
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
  questions, answers = skipgram.planted_analogies(jax.random.key(1), corpus, 50)

  @jax.jit
  def scores(embeddings):
    return jax.vmap(
      lambda e: (
        skipgram.neighbour_precision(e, topic, 5),
        skipgram.analogy_accuracy(e, questions, answers, cell),
      )
    )(embeddings)

  precision, accuracy = scores(embeddings)
  sizes = np.bincount(np.asarray(topic)[np.asarray(topic) >= 0])
  chance = np.mean([(sizes[g] - 1) / (corpus.vocab_size - 1) for g in np.asarray(topic) if g >= 0])
  assert float(skipgram.neighbour_precision_chance(topic)) == pytest.approx(chance, rel=1e-6)
  analogy_chance = corpus.words_per_cell / (corpus.vocab_size - 3)
  z = z_value(2)
  for values, exact in [(precision, chance), (accuracy, analogy_chance)]:
    values = np.asarray(values, np.float64)
    se = values.std(ddof=1) / math.sqrt(draws)
    assert abs(values.mean() - exact) <= z * se, (values.mean(), exact, se)


def test_training_raises_quality_well_above_chance(key):
  corpus = small_corpus(key, 600)
  batches = skipgram.make_batches(
    jax.random.key(1), corpus.tokens, corpus.counts, window=3, batch_size=32, threshold=0.0
  )
  init = jax.jit(skipgram.init_params, static_argnums=(1, 2))(
    jax.random.key(2), corpus.vocab_size, 8
  )
  before = skipgram.evaluate(init.input, corpus, jax.random.key(4), k=5)
  calls = []
  params, losses = skipgram.train(
    init,
    batches,
    jax.random.key(3),
    sampler=unigram_sampler(corpus.counts, 0.75),
    num_negatives=5,
    learning_rate=0.05,
    callback=lambda done, total, _: calls.append(done),
  )
  after = skipgram.evaluate(params.input, corpus, jax.random.key(4), k=5)
  assert losses.shape == (batches.num_steps,) and np.all(np.isfinite(losses))
  assert calls[-1] == batches.num_steps and len(calls) == -(-batches.num_steps // 256)
  assert losses[-50:].mean() < losses[:50].mean() - 0.5
  chance = float(before["topic_precision_chance"])
  assert float(before["topic_precision"]) < chance + 0.25
  assert float(after["topic_precision"]) > 0.8 > 3 * chance
  assert float(after["cell_precision"]) > 3 * float(after["cell_precision_chance"])


# --------------------------------------------------------------------------------------
# Bad input.
# --------------------------------------------------------------------------------------


def test_bad_input_raises_errors_naming_the_argument(key):
  tokens = jnp.zeros((2, 5), jnp.int32)
  counts = jnp.ones(28)
  params = skipgram.init_params(key, 28, 4)
  sampler = UniformSampler(28)
  ids = jnp.arange(4)
  c = structured_corpus()
  one_role = skipgram.PlantedCorpus(c.tokens, c.counts, c.topic, c.role * 0, 6, 1, 4, 4)
  cases = [
    ("window", lambda: skipgram.skipgram_pairs(key, tokens, 0)),
    ("window", lambda: skipgram.make_batches(key, tokens, counts, window=0, batch_size=4)),
    ("threshold", lambda: skipgram.keep_probabilities(counts, -1e-3)),
    ("threshold", lambda: skipgram.subsample(key, tokens, counts, -1.0)),
    (
      "threshold",
      lambda: skipgram.make_batches(key, tokens, counts, window=2, batch_size=4, threshold=-1e-5),
    ),
    ("rule", lambda: skipgram.keep_probabilities(counts, 1e-3, rule="gensim")),
    ("counts", lambda: skipgram.keep_probabilities(-counts, 1e-3)),
    ("keep", lambda: skipgram.skipgram_pairs(key, tokens, 2, keep=jnp.ones((2, 4), bool))),
    ("key", lambda: skipgram.skipgram_pairs(None, tokens, 2)),
    ("tokens", lambda: skipgram.subsample(key, tokens + 30, counts, 1e-3)),
    (
      "centers and contexts",
      lambda: skipgram.train_step(
        params, ids, jnp.arange(5), key, 0.1, sampler=sampler, num_negatives=2
      ),
    ),
    (
      "centers and contexts",
      lambda: skipgram.train_steps(
        params, ids, ids, jnp.ones(4), key, sampler=sampler, num_negatives=2
      ),
    ),
    (
      "weights",
      lambda: skipgram.train_step(
        params, ids, ids, key, 0.1, sampler=sampler, num_negatives=2, weights=jnp.ones(3)
      ),
    ),
    (
      "learning_rates",
      lambda: skipgram.train_steps(
        params, ids[None], ids[None], jnp.ones(2), key, sampler=sampler, num_negatives=2
      ),
    ),
    (
      "learning_rate",
      lambda: skipgram.train_step(
        params, ids, ids, key, jnp.ones(2), sampler=sampler, num_negatives=2
      ),
    ),
    (
      "sampler.num_classes",
      lambda: skipgram.train_step(
        params, ids, ids, key, 0.1, sampler=UniformSampler(27), num_negatives=2
      ),
    ),
    (
      "num_negatives",
      lambda: skipgram.pair_losses(params, ids, ids, key, sampler=sampler, num_negatives=0),
    ),
    (
      "contexts",
      lambda: skipgram.pair_losses(params, ids, ids + 28, key, sampler=sampler, num_negatives=2),
    ),
    (
      "params.input and params.output",
      lambda: skipgram.train_step(
        skipgram.SkipGramParams(params.input, params.output[:5]),
        ids,
        ids,
        key,
        0.1,
        sampler=sampler,
        num_negatives=2,
      ),
    ),
    ("groups", lambda: skipgram.neighbour_precision(params.input, jnp.zeros(27, jnp.int32))),
    ("k", lambda: skipgram.nearest_neighbours(params.input, ids, 28)),
    (
      "answer_groups",
      lambda: skipgram.analogy_accuracy(
        params.input,
        jnp.zeros((3, 3), jnp.int32),
        jnp.zeros(2, jnp.int32),
        jnp.zeros(28, jnp.int32),
      ),
    ),
    ("mixture", lambda: skipgram.planted_corpus(key, 10, mixture=(1.0, -1.0, 0.0, 0.0))),
    ("mixture", lambda: skipgram.planted_corpus(key, 10, mixture=(1.0, 0.0))),
    ("num_sentences", lambda: skipgram.planted_corpus(key, 0)),
    ("num_roles", lambda: skipgram.planted_analogies(key, one_role, 4)),
    ("embeddings", lambda: skipgram.evaluate(params.input[:20], structured_corpus(), key)),
    ("learning_rate", lambda: skipgram.linear_decay(-0.1, 3)),
  ]
  for name, call in cases:
    with pytest.raises((ValueError, TypeError), match=name):
      call()
