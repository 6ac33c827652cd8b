"""The skip-gram benchmark: its trainer, and a quick run that writes its files with sane numbers.

One quick run, checked by helpers called from a single test (pytest-xdist would run a
module fixture once per worker).
"""

from __future__ import annotations

import csv
import functools
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import skipgram as bench
from benchmarks import skipgram_data as data
from benchmarks.common import FAST_COMPILE_OPTIONS
from gradest.models import skipgram
from gradest.samplers import LogUniformSampler, UniformSampler, unigram_sampler

# Every figure a run writes meets the plot contract (benchmarks.common.figure_problems):
# save_figure's PlotWarning fails the test.
pytestmark = pytest.mark.filterwarnings("error::benchmarks.common.PlotWarning")

FILES = ("skipgram.csv", "skipgram.json", "skipgram.png")
# The --quick corpus: 4 topics x 2 roles x 6 synonyms + 8 function words.
TOPICS, ROLES, SYNONYMS, FUNCTION = 4, 2, 6, 8
VOCAB = FUNCTION + TOPICS * ROLES * SYNONYMS


def test_quick_run(tmp_path):
  result = bench.main(["--quick", "--quiet", "--out", str(tmp_path)])
  quick_run = (tmp_path, result)
  check_writes_every_file(quick_run)
  check_corpus_and_chance(quick_run)
  check_rows(quick_run)
  check_training_beats_chance_and_the_untrained_tables(quick_run)
  check_format_table(quick_run)


def check_writes_every_file(quick_run):
  out, result = quick_run
  for name in FILES:
    assert (out / name).stat().st_size > 0, name
  with open(out / "skipgram.json") as fh:
    saved = json.load(fh)
  assert saved["config"]["configs"] == list(bench.CONFIGS)
  assert saved["rows"] == json.loads(json.dumps(result["rows"]))
  with open(out / "skipgram.csv", newline="") as fh:
    rows = list(csv.DictReader(fh))
  assert [r["config"] for r in rows] == list(bench.CONFIGS)
  assert list(rows[0]) == list(bench.COLUMNS)


def check_corpus_and_chance(quick_run):
  _, result = quick_run
  corpus = result["corpus"]
  assert corpus["vocab_size"] == VOCAB and corpus["tokens"] == 1500 * 20
  assert 0.2 < corpus["function_word_fraction"] < 0.8 and corpus["rarest_count"] > 0
  # Every topic has R m words and every cell m: the chance levels are exact.
  chance = result["chance"]
  assert chance["topic_precision"] == pytest.approx((ROLES * SYNONYMS - 1) / (VOCAB - 1))
  assert chance["cell_precision"] == pytest.approx((SYNONYMS - 1) / (VOCAB - 1))
  assert chance["analogy_accuracy"] == pytest.approx(SYNONYMS / (VOCAB - 3))
  # Subsampling removes pairs.
  pairs = corpus["pairs_per_epoch"]
  assert pairs["0.01"] < pairs["0.0"]


def check_rows(quick_run):
  _, result = quick_run
  rows = {r["config"]: r for r in result["rows"]}
  assert list(rows) == list(bench.CONFIGS)
  for name, r in rows.items():
    spec = bench.CONFIGS[name]
    assert r["sampler"] == spec["sampler"]
    assert r["negatives"] == ("shared" if spec["shared"] else "per pair")
    assert r["threshold"] == (0.01 if spec["subsample"] else 0.0)
    assert r["pairs"] == result["corpus"]["pairs_per_epoch"][str(r["threshold"])]
    assert r["steps"] == math.ceil(r["pairs"] / 32)
    assert r["finite"] and np.isfinite(r["final_loss"])
    assert r["words_per_second"] > 0 and r["pairs_per_second"] > 0
    # Both rates come from the same timed calls.
    ratio = r["pairs_per_second"] / r["words_per_second"]
    assert ratio == pytest.approx(r["pairs"] / result["corpus"]["tokens"], rel=1e-9)
    # The loss starts at (1 + k) log 2 (zero output vectors) and training lowers it.
    assert r["final_loss"] < 6 * math.log(2.0) - 0.5
    for name in bench.MEASURES:
      assert 0.0 <= r[name] <= 1.0


def check_training_beats_chance_and_the_untrained_tables(quick_run):
  _, result = quick_run
  chance, untrained = result["chance"], result["untrained"]
  for name in bench.MEASURES:
    assert untrained[name] < chance[name] + 0.2, (name, untrained[name], chance[name])
  for r in result["rows"]:
    assert r["topic_precision"] > max(3 * chance["topic_precision"], 0.8), r
    assert r["cell_precision"] > 3 * chance["cell_precision"], r
    assert r["analogy_accuracy"] > 3 * chance["analogy_accuracy"], r
    assert r["topic_precision"] > untrained["topic_precision"] + 0.5


def check_format_table(quick_run):
  _, result = quick_run
  table = bench.format_table(result)
  assert table.count("\n") == len(result["rows"]) + 3
  assert "untrained" in table and "shared_negatives" in table


@pytest.mark.parametrize(
  "argv",
  [["--window", "0"], ["--threshold", "-1e-3"], ["--roles", "1"], ["--lr", "0"], ["--dim", "0"]],
)
def test_bad_flags(argv):
  with pytest.raises(SystemExit):
    bench.parse_args(argv)


# --------------------------------------------------------------------------------------
# The trainer.
# --------------------------------------------------------------------------------------


def test_train_steps_is_a_scan_of_train_step(key):
  v, batch, k, steps = 7, 16, 4, 2
  k1, k2, k3, k4, k5 = jax.random.split(key, 5)
  params = skipgram.SkipGramParams(
    jax.random.normal(k1, (v, 3)), 0.5 * jax.random.normal(k2, (v, 3))
  )
  centers = jax.random.randint(k3, (batch,), 0, v)
  contexts = jax.random.randint(k4, (batch,), 0, v)
  weights = (jax.random.uniform(k5, (batch,)) < 0.8).astype(jnp.float32)
  c = jnp.stack([jnp.roll(centers, i) for i in range(steps)])
  o = jnp.stack([jnp.roll(contexts, 2 * i) for i in range(steps)])
  w = jnp.stack([weights] * steps)
  rates = bench.word2vec_schedule(0.2, steps)(jnp.arange(steps))
  sampler = LogUniformSampler(v)
  # The donating train_steps, against train_step in a Python loop.
  scanned, losses = bench.train_steps(
    jax.tree.map(jnp.copy, params), c, o, w, rates, key, sampler, k, False, True
  )
  looped, looped_losses = params, []
  # One fast-compiled program for the loop's steps (op-by-op execution is slower).
  step = jax.jit(
    functools.partial(skipgram.train_step, sampler=sampler, num_negatives=k),
    compiler_options=FAST_COMPILE_OPTIONS,
  )
  for i, step_key in enumerate(jax.random.split(key, steps)):
    looped, loss = step(looped, c[i], o[i], step_key, rates[i], weights=w[i])
    looped_losses.append(loss)
  np.testing.assert_allclose(losses, np.stack(looped_losses), rtol=1e-5)
  np.testing.assert_allclose(scanned.input, looped.input, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(scanned.output, looped.output, rtol=1e-5, atol=1e-6)


def test_word2vec_schedule_decays_linearly_to_a_floor():
  rates = bench.word2vec_schedule(0.025, 5)(jnp.arange(7))
  want = 0.025 * np.array([1, 0.8, 0.6, 0.4, 0.2, 1e-4, 1e-4])
  np.testing.assert_allclose(rates, want, rtol=1e-3)


def test_training_raises_quality_well_above_chance(key):
  corpus = data.planted_corpus(
    key, 600, num_topics=3, num_roles=2, words_per_cell=4, num_function_words=4
  )
  batches = data.make_batches(
    jax.random.key(1), corpus.tokens, corpus.counts, window=3, batch_size=32, threshold=0.0
  )
  init = skipgram.init_params(jax.random.key(2), corpus.vocab_size, 8)
  before = data.evaluate(init.input, corpus, jax.random.key(4), k=5)
  calls = []
  params, losses = bench.train(
    init,
    batches,
    jax.random.key(3),
    sampler=unigram_sampler(corpus.counts, 0.75),
    num_negatives=5,
    learning_rate=0.05,
    callback=lambda done, total, _: calls.append(done),
  )
  after = data.evaluate(params.input, corpus, jax.random.key(4), k=5)
  assert losses.shape == (batches.num_steps,) and np.all(np.isfinite(losses))
  assert calls[-1] == batches.num_steps and len(calls) == -(-batches.num_steps // 256)
  assert losses[-50:].mean() < losses[:50].mean() - 0.5
  chance = float(before["topic_precision_chance"])
  assert float(before["topic_precision"]) < chance + 0.25
  assert float(after["topic_precision"]) > 0.8 > 3 * chance
  assert float(after["cell_precision"]) > 3 * float(after["cell_precision_chance"])


def test_train_bad_input_names_the_argument(key):
  params = skipgram.init_params(key, 5, 3)
  b = data.make_batches(key, jnp.array([[1, 2, 3, 4]]), jnp.ones(5), window=2, batch_size=4)
  options = dict(sampler=UniformSampler(5), num_negatives=2)
  cases = [
    ("batches", lambda: bench.train(params, [], key, **options)),
    ("steps_per_call", lambda: bench.train(params, b, key, steps_per_call=0, **options)),
    ("learning_rate", lambda: bench.train(params, b, key, learning_rate=-0.1, **options)),
    ("key", lambda: bench.train(params, b, 0, **options)),
  ]
  for name, call in cases:
    with pytest.raises((ValueError, TypeError), match=name):
      call()
