r"""Skip-gram word embeddings with negative sampling on a planted corpus.

Run with ``python -m benchmarks.skipgram`` (``--help`` lists the flags).

**Corpus.** :func:`benchmarks.skipgram_data.planted_corpus`: ``--sentences`` sentences of
20 words (150,000 sentences, 3 million tokens by default) over a vocabulary of
``--function-words`` function words (100) and ``--topics`` x ``--roles`` x
``--words-per-cell`` content words (50 x 4 x 50), 10,100 words in all, with Zipfian
frequencies (function words take about half of the tokens). Every sentence has a topic
and a role; its content words come from its cell (topic and role), its topic, its
role or anywhere with probabilities 0.5, 0.25, 0.15, 0.1. So the ground truth is
known: synonyms (one cell), topics, and the analogies
:math:`(t_1, r_1) - (t_1, r_2) + (t_2, r_2) = (t_2, r_1)`.

**Training.** word2vec's skip-gram with negative sampling (the model and its sparse
SGD step: :mod:`gradest.models.skipgram`; the pairs: :mod:`benchmarks.skipgram_data`):
frequent-word subsampling (``--threshold`` 1e-3, the paper's rule), dynamic windows of
up to ``--window`` (5) words, ``--negatives`` (5) negatives per pair, ``--dim`` (32)
dimensions, SGD on shuffled batches of ``--batch-size`` (1024) pairs with word2vec's
per-pair learning rate 0.025 decaying linearly (``optax.linear_schedule``) to 1e-4 of
it over ``--epochs`` (1) epochs, by sparse row updates
(:func:`gradest.models.skipgram.train_step`) in a jitted ``lax.scan`` (:func:`train`).
Each configuration of ``--configs`` changes one thing:

* ``default``: unigram^0.75 negatives (:func:`gradest.samplers.unigram_sampler`, the
  alias method), one set per pair (:func:`gradest.samplers.sample_candidates` with
  ``shared_negatives=False``), subsampling on;
* ``no_subsampling``: every token kept (about twice the pairs);
* ``uniform_noise``: uniform negatives;
* ``log_uniform_noise``: TensorFlow's log-uniform (Zipfian) negatives, which suit ids
  sorted by frequency, as these are;
* ``shared_negatives``: one set of negatives for the whole batch (TensorFlow's).

All configurations start from the same initial tables and see the same pairs (the two
subsampling settings each draw theirs once).

**Batch size and learning rate.** A sparse step moves a row by the sum of its
per-pair gradients in the batch, so a word drawn as a negative about :math:`B k q(w)`
times per batch takes a step that many times larger. Measured on this corpus: with
unigram^0.75 negatives, ``B = 1024`` and a rate of 0.025 are stable at
:math:`V = 10^4`, while a vocabulary of a few dozen words (``--quick``) needs ``B``
around 32; with ``shared_negatives`` every negative row takes the gradients of all
``B`` pairs at once, and at :math:`V = 10^4` ``B = 1024`` trains while ``B = 4096``
diverges.

**Measures.** Training throughput in *words per second*, as word2vec counts them
(corpus tokens before subsampling, over training time), and pairs per second; the
first jitted call compiles and is left out of both. Quality, from the cosine
similarities of the input vectors: ``topic_P@10`` and ``cell_P@10``, the fraction of
a content word's 10 nearest neighbours that share its topic (its cell), and
``analogy``, the 3CosAdd accuracy on ``--analogies`` planted questions (any word of
the answer cell counts). Each against its exact chance level (random neighbours; the
neighbours of i.i.d. vectors are a uniform subset) and the untrained tables.

Outputs (in ``--out``): ``skipgram.csv`` (one row per configuration),
``skipgram.json`` (everything: configuration, corpus statistics, chance, untrained,
rows) and ``skipgram.png`` (the measures per configuration; the cell means of the
trained vectors of six topics in their first two principal components, where the
planted parallelograms show).

References:
  Mikolov et al., *Efficient estimation of word representations in vector space*,
  2013; *Distributed representations of words and phrases and their
  compositionality*, NeurIPS 2013. Levy & Goldberg, *Neural word embedding as implicit
  matrix factorization*, NeurIPS 2014.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm import tqdm

from benchmarks import skipgram_data as data
from benchmarks.common import (
  Column,
  Stopwatch,
  integer,
  pyplot,
  save_figure,
  write_csv,
  write_json,
)
from benchmarks.common import format_table as format_table_of
from gradest._src.base import check_key, check_positive_int
from gradest.models import skipgram
from gradest.samplers import LogUniformSampler, Sampler, UniformSampler, unigram_sampler

CONFIGS = {
  "default": dict(sampler="unigram^0.75", subsample=True, shared=False),
  "no_subsampling": dict(sampler="unigram^0.75", subsample=False, shared=False),
  "uniform_noise": dict(sampler="uniform", subsample=True, shared=False),
  "log_uniform_noise": dict(sampler="log-uniform", subsample=True, shared=False),
  "shared_negatives": dict(sampler="unigram^0.75", subsample=True, shared=True),
}
MEASURES = ("topic_precision", "cell_precision", "analogy_accuracy")
LABELS = {
  "topic_precision": "topic P@k",
  "cell_precision": "cell P@k",
  "analogy_accuracy": "analogy",
}
COLUMNS = (
  "config",
  "sampler",
  "threshold",
  "negatives",
  "pairs",
  "steps",
  "words_per_second",
  "pairs_per_second",
  "train_seconds",
  "compile_seconds",
  "final_loss",
  "topic_precision",
  "cell_precision",
  "analogy_accuracy",
)


# --------------------------------------------------------------------------------------
# Training: skipgram.train_step in a jitted lax.scan, the rate from an optax schedule.
# --------------------------------------------------------------------------------------


def word2vec_schedule(learning_rate: float, total_steps: int) -> optax.Schedule:
  """word2vec's learning rate: linear decay from ``learning_rate`` to 1e-4 of it."""
  return optax.linear_schedule(learning_rate, 1e-4 * learning_rate, total_steps)


@functools.partial(jax.jit, static_argnames=("num_negatives", "shared", "hits"), donate_argnums=0)
def train_steps(
  params, centers, contexts, weights, learning_rates, key, sampler, num_negatives, shared, hits
):
  """:func:`gradest.models.skipgram.train_step` over ``num_steps`` batches, one ``lax.scan``.

  Step ``i`` uses batch ``i`` of ``centers``, ``contexts`` and ``weights`` (each
  ``(num_steps, B)``), the rate ``learning_rates[i]`` and the key
  ``jax.random.split(key, num_steps)[i]``. Returns ``(params, mean_losses)``.
  """

  def body(p, inputs):
    c, o, w, lr, k = inputs
    return skipgram.train_step(
      p,
      c,
      o,
      k,
      lr,
      sampler=sampler,
      num_negatives=num_negatives,
      weights=w,
      shared_negatives=shared,
      remove_accidental_hits=hits,
    )

  keys = jax.random.split(key, centers.shape[0])
  return jax.lax.scan(body, params, (centers, contexts, weights, learning_rates, keys))


def train(
  params: skipgram.SkipGramParams,
  batches: data.Batches | Sequence[data.Batches],
  key,
  *,
  sampler: Sampler,
  num_negatives: int,
  learning_rate: float = 0.025,
  shared_negatives: bool = False,
  remove_accidental_hits: bool = True,
  steps_per_call: int = 256,
  callback: Callable[[int, int, Any], Any] | None = None,
) -> tuple[skipgram.SkipGramParams, np.ndarray]:
  """Trains on one or more epochs of batches, the rate decaying over all of them.

  Runs :func:`train_steps` on ``steps_per_call`` batches at a time (the step count is
  padded with zero-weight batches to a multiple of it, so everything compiles once),
  the learning rate from :func:`word2vec_schedule` over all epochs' steps.

  Args:
    params: :class:`gradest.models.skipgram.SkipGramParams` (donated).
    batches: :class:`benchmarks.skipgram_data.Batches` of one epoch, or a sequence of
      them (one per epoch, each from ``make_batches`` with its own key).
    key: a PRNG key for the negatives.
    sampler: the noise distribution over the ``V`` words.
    num_negatives: ``k >= 1``.
    learning_rate: the initial per-pair rate.
    shared_negatives: one set of negatives per batch.
    remove_accidental_hits: leave out negatives equal to the pair's context.
    steps_per_call: batches per jitted call.
    callback: called after each call as ``callback(steps_done, total_steps,
      mean_losses)``; ``mean_losses`` holds the call's ``steps_per_call`` losses, 0 for
      padding steps.

  Returns:
    ``(params, mean_losses)`` with one mean loss per (non-padding) step, NumPy.
  """
  check_key(key)
  epochs = [batches] if isinstance(batches, data.Batches) else list(batches)
  if not epochs or not all(isinstance(b, data.Batches) for b in epochs):
    raise TypeError("batches must be a Batches (from make_batches) or a sequence of them.")
  per_call = check_positive_int(steps_per_call, "steps_per_call")
  num_negatives = check_positive_int(num_negatives, "num_negatives")
  if not (isinstance(learning_rate, (int, float)) and learning_rate > 0):
    raise ValueError(f"learning_rate must be a positive number, got {learning_rate}.")
  total = sum(b.num_steps for b in epochs)
  rates = np.asarray(word2vec_schedule(learning_rate, total)(jnp.arange(total)), np.float32)
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
        arrays[2][part],
        lr[part],
        jax.random.fold_in(key, call),
        sampler,
        num_negatives,
        bool(shared_negatives),
        bool(remove_accidental_hits),
      )
      real = max(0, min(per_call, n - start))
      losses.append(np.asarray(step_losses)[:real])
      call += 1
      if callback is not None:
        callback(done + start + real, total, step_losses)
    done += n
  return params, np.concatenate(losses)


def make_sampler(name: str, counts, vocab_size: int):
  if name == "unigram^0.75":
    return unigram_sampler(counts, 0.75)
  if name == "uniform":
    return UniformSampler(vocab_size)
  if name == "log-uniform":
    return LogUniformSampler(vocab_size)
  raise ValueError(f"unknown sampler {name!r}")


def measures(embeddings, corpus, args, key) -> dict[str, float]:
  m = data.evaluate(embeddings, corpus, key, k=args.k, num_analogies=args.analogies)
  return {name: float(value) for name, value in m.items()}


def run_config(name, corpus, epochs, init, args, keys, progress) -> tuple[dict, Any]:
  """Trains one configuration; returns its row and its trained tables."""
  spec = CONFIGS[name]
  sampler = make_sampler(spec["sampler"], corpus.counts, corpus.vocab_size)
  params = jax.tree.map(lambda x: x.copy(), init)
  stamps = []
  clock = Stopwatch()

  def callback(done, total, losses):
    jax.block_until_ready(losses)
    progress(done - (stamps[-1][1] if stamps else 0))
    stamps.append((clock(), done))

  clock.restart()
  params, losses = train(
    params,
    epochs,
    keys["train"],
    sampler=sampler,
    num_negatives=args.negatives,
    learning_rate=args.lr,
    shared_negatives=spec["shared"],
    steps_per_call=args.steps_per_call,
    callback=callback,
  )
  jax.block_until_ready(params)
  seconds = clock()
  num_words = sum(b.num_words for b in epochs)
  num_pairs = sum(b.num_pairs for b in epochs)
  steps = sum(b.num_steps for b in epochs)
  if len(stamps) > 1:  # leave out the first call, which compiles
    timed = stamps[-1][0] - stamps[0][0]
    fraction = (stamps[-1][1] - stamps[0][1]) / steps
    per_call = timed / (len(stamps) - 1)
    compile_seconds = max(0.0, stamps[0][0] - per_call)
  else:
    timed, fraction, compile_seconds = seconds, 1.0, float("nan")
  tail = losses[-max(1, len(losses) // 10) :]
  row = {
    "config": name,
    "sampler": spec["sampler"],
    "threshold": args.threshold if spec["subsample"] else 0.0,
    "negatives": "shared" if spec["shared"] else "per pair",
    "pairs": num_pairs,
    "steps": steps,
    "words_per_second": num_words * fraction / timed,
    "pairs_per_second": num_pairs * fraction / timed,
    "train_seconds": round(seconds, 2),
    "compile_seconds": round(compile_seconds, 2),
    "final_loss": float(np.mean(tail)),
  }
  row.update(measures(params.input, corpus, args, keys["eval"]))
  row["finite"] = bool(np.all(np.isfinite(np.asarray(params.input))))
  return row, params


# --------------------------------------------------------------------------------------
# Reporting.
# --------------------------------------------------------------------------------------


TABLE = (
  Column("config", "config"),
  Column("sampler", "sampler"),
  Column("subsample", "threshold", ".0e"),
  Column("negatives", "negatives", align=">"),
  Column("pairs", "pairs", "d"),
  Column("words/s", "words_per_second", ".0f"),
  Column("pairs/s", "pairs_per_second", ".0f"),
  Column("loss", "final_loss", ".3f"),
  Column("topic P@k", "topic_precision", ".3f"),
  Column("cell P@k", "cell_precision", ".3f"),
  Column("analogy", "analogy_accuracy", ".3f"),
)


def format_table(result) -> str:
  """One row per configuration, after the chance and untrained levels of each measure."""
  baselines = [dict(result[name], config=name) for name in ("chance", "untrained")]
  return format_table_of(baselines + list(result["rows"]), TABLE, missing="")


def cell_means(embeddings, corpus, topics: int):
  """Mean unit vector of each cell of the first ``topics`` topics: ``(topics, R, d)``."""
  e = np.asarray(embeddings, np.float64)
  e = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
  topic, role = np.asarray(corpus.topic), np.asarray(corpus.role)
  return np.stack(
    [
      np.stack([e[(topic == t) & (role == r)].mean(0) for r in range(corpus.num_roles)])
      for t in range(topics)
    ]
  )


def plot(result, embeddings, corpus, path):
  plt = pyplot()
  fig, (ax, ax2) = plt.subplots(1, 2, figsize=(13, 4.8), gridspec_kw={"width_ratios": [1.5, 1]})
  groups = [("untrained", result["untrained"])] + [(r["config"], r) for r in result["rows"]]
  width = 0.8 / len(MEASURES)
  x = np.arange(len(groups))
  for i, name in enumerate(MEASURES):
    values = [g[1][name] for g in groups]
    bars = ax.bar(x + (i - 1) * width, values, width, label=LABELS[name])
    chance = result["chance"][name]
    ax.hlines(
      chance,
      x[0] - 0.45,
      x[-1] + 0.45,
      colors=bars.patches[0].get_facecolor(),
      linestyles=":",
      linewidth=1,
    )
  ax.set_xticks(x)
  ax.set_xticklabels([g[0] for g in groups], rotation=20, ha="right", fontsize=8)
  ax.set_ylim(0, 1.2)  # room for the legend above the bars
  ax.set_xlabel("configuration")
  ax.set_ylabel("quality (fraction; dotted: chance)")
  ax.set_title(f"V = {corpus.vocab_size}, {result['corpus']['tokens']:,} tokens")
  ax.legend(fontsize=8, loc="upper center", ncol=len(MEASURES))

  # Cell means minus their topic's mean: what is left is the role offset, which the
  # planted analogies say is the same in every topic.
  topics = min(8, corpus.num_topics)
  means = cell_means(embeddings, corpus, topics)  # (T, R, d)
  offsets = (means - means.mean(axis=1, keepdims=True)).reshape(-1, means.shape[-1])
  _, _, vt = np.linalg.svd(offsets - offsets.mean(0), full_matrices=False)
  xy = (offsets @ vt[:2].T).reshape(topics, corpus.num_roles, 2)
  for t in range(topics):
    ax2.plot(*np.vstack([xy[t], xy[t, :1]]).T, "-", color="gray", lw=0.6, alpha=0.5)
  for r in range(corpus.num_roles):
    ax2.scatter(xy[:, r, 0], xy[:, r, 1], color=f"C{r}", s=30, label=f"role {r}")
  ax2.set_title(
    f"cell mean - topic mean, {topics} topics (PCA):\nthe role offsets the analogies need",
    fontsize=9,
  )
  ax2.legend(fontsize=7)
  ax2.set_xticks([])
  ax2.set_yticks([])
  ax2.set_xlabel("first principal direction (arbitrary units)")
  ax2.set_ylabel("second principal direction (arbitrary units)")
  save_figure(fig, path)


# --------------------------------------------------------------------------------------
# Command line.
# --------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(
    prog="python -m benchmarks.skipgram",
    description="Skip-gram with negative sampling on a planted corpus: words/s and quality.",
  )
  parser.add_argument("--sentences", type=integer, default=None, help="sentences (150000)")
  parser.add_argument("--sentence-length", type=integer, default=20, help="words per sentence")
  parser.add_argument("--topics", type=integer, default=None, help="planted topics (50)")
  parser.add_argument("--roles", type=integer, default=None, help="planted roles (4)")
  parser.add_argument("--words-per-cell", type=integer, default=None, help="synonyms (50)")
  parser.add_argument("--function-words", type=integer, default=None, help="function words (100)")
  parser.add_argument("--dim", type=integer, default=None, help="embedding dimension (32)")
  parser.add_argument("--window", type=integer, default=None, help="largest window (5)")
  parser.add_argument("--negatives", type=integer, default=5, help="negatives per pair")
  parser.add_argument("--batch-size", type=integer, default=None, help="pairs per step (1024)")
  parser.add_argument("--threshold", type=float, default=None, help="subsampling t (1e-3)")
  parser.add_argument("--rule", default="paper", choices=data.SUBSAMPLING_RULES)
  parser.add_argument("--lr", type=float, default=None, help="initial per-pair rate (0.025)")
  parser.add_argument("--epochs", type=integer, default=1, help="passes over the corpus")
  parser.add_argument("--steps-per-call", type=integer, default=None, help="steps per jit call")
  parser.add_argument("--k", type=integer, default=10, help="neighbours for the precisions")
  parser.add_argument("--analogies", type=integer, default=None, help="analogy questions (2000)")
  parser.add_argument(
    "--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS), metavar="NAME"
  )
  parser.add_argument("--seed", type=integer, default=0, help="PRNG seed")
  parser.add_argument("--out", default=os.path.join("bench_out", "skipgram"), help="output dir")
  parser.add_argument("--quick", action="store_true", help="tiny settings (for tests)")
  parser.add_argument("--no-plots", action="store_true", help="skip the PNG file")
  parser.add_argument("--quiet", action="store_true", help="no table, no progress bar")
  args = parser.parse_args(argv)
  defaults = {
    "sentences": (1500, 150_000),
    "topics": (4, 50),
    "roles": (2, 4),
    "words_per_cell": (6, 50),
    "function_words": (8, 100),
    "dim": (16, 32),
    "window": (3, 5),
    "batch_size": (32, 1024),
    "threshold": (1e-2, 1e-3),
    "lr": (0.05, 0.025),
    "steps_per_call": (64, 250),
    "analogies": (300, 2000),
  }
  for name, (small, full) in defaults.items():
    if getattr(args, name) is None:
      setattr(args, name, small if args.quick else full)
  positive = ("sentences", "topics", "words_per_cell", "dim", "window", "negatives")
  positive += ("batch_size", "epochs", "steps_per_call", "k", "analogies")
  for name in positive:
    if getattr(args, name) < 1:
      parser.error(f"--{name.replace('_', '-')} must be >= 1")
  if args.roles < 2 or args.topics < 2:
    parser.error("--topics and --roles must be >= 2 (the planted analogies need two of each)")
  if args.function_words < 0 or args.sentence_length < 2:
    parser.error("--function-words must be >= 0 and --sentence-length >= 2")
  if not args.threshold >= 0:
    parser.error("--threshold must be >= 0 (0 turns subsampling off)")
  if not args.lr > 0:
    parser.error("--lr must be > 0")
  return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  """Runs the benchmark; returns ``{'config', 'corpus', 'chance', 'untrained', 'rows'}``."""
  args = parse_args(argv)
  os.makedirs(args.out, exist_ok=True)
  root = jax.random.key(args.seed)
  keys = {
    name: jax.random.fold_in(root, i)
    for i, name in enumerate(("corpus", "batches", "init", "train", "eval"))
  }
  clock = Stopwatch()
  corpus = data.planted_corpus(
    keys["corpus"],
    args.sentences,
    sentence_length=args.sentence_length,
    num_topics=args.topics,
    num_roles=args.roles,
    words_per_cell=args.words_per_cell,
    num_function_words=args.function_words,
  )
  counts = np.asarray(corpus.counts)
  corpus_seconds = clock()

  thresholds = sorted({args.threshold if CONFIGS[c]["subsample"] else 0.0 for c in args.configs})
  epochs_by_threshold, preprocess = {}, {}
  for t in thresholds:
    preprocess_clock = Stopwatch()
    epochs_by_threshold[t] = [
      data.make_batches(
        jax.random.fold_in(keys["batches"], e),
        corpus.tokens,
        corpus.counts,
        window=args.window,
        batch_size=args.batch_size,
        threshold=t,
        rule=args.rule,
      )
      for e in range(args.epochs)
    ]
    preprocess[t] = preprocess_clock()

  init = skipgram.init_params(keys["init"], corpus.vocab_size, args.dim)
  untrained = measures(init.input, corpus, args, keys["eval"])
  chance = {name: untrained.pop(f"{name}_chance") for name in MEASURES}

  def threshold_of(name):
    return args.threshold if CONFIGS[name]["subsample"] else 0.0

  total = sum(sum(b.num_steps for b in epochs_by_threshold[threshold_of(c)]) for c in args.configs)
  bar = tqdm(total=total, desc="skipgram", disable=args.quiet, file=sys.stderr, unit="step")
  rows, trained = [], {}
  for name in args.configs:
    bar.set_postfix_str(name)
    epochs = epochs_by_threshold[threshold_of(name)]
    row, params = run_config(name, corpus, epochs, init, args, keys, bar.update)
    row["preprocess_seconds"] = round(preprocess[threshold_of(name)], 2)
    rows.append(row)
    trained[name] = params
  bar.close()

  kept = {
    str(t): sum(b.num_pairs for b in epochs_by_threshold[t]) / args.epochs for t in thresholds
  }
  config = {k: v for k, v in vars(args).items() if k not in ("out", "quiet", "no_plots")}
  config.update(backend=jax.default_backend(), seconds=round(clock(), 1))
  result = {
    "config": config,
    "corpus": {
      "vocab_size": corpus.vocab_size,
      "tokens": corpus.num_tokens,
      "function_word_fraction": float(counts[: args.function_words].sum() / counts.sum()),
      "rarest_count": int(counts.min()),
      "pairs_per_epoch": kept,
      "seconds": round(corpus_seconds, 2),
    },
    "chance": chance,
    "untrained": untrained,
    "rows": rows,
  }
  write_csv(rows, os.path.join(args.out, "skipgram.csv"), COLUMNS)
  write_json(result, os.path.join(args.out, "skipgram.json"))
  if not args.no_plots:
    shown = "default" if "default" in trained else args.configs[0]
    plot(result, trained[shown].input, corpus, os.path.join(args.out, "skipgram.png"))
  if not args.quiet:
    print(format_table(result))
    print(f"\n{config['seconds']} s; written to {args.out}")
  return result


if __name__ == "__main__":
  main()
