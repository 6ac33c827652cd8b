r"""Sampled losses against the full softmax, and candidate samplers, at large vocabularies.

Run with ``python -m benchmarks.nce`` (``--help`` lists the flags).

**(a) Loss and gradient time** of a linear output layer ``(V, d)`` over a batch of
``B`` hidden vectors, for ``V`` in ``--vocab`` (default 10^4, 10^5, 10^6), ``d = 128``,
``B = 1024``, ``k = 64`` negatives:

* ``full_softmax``: :func:`gradest.full_softmax_loss` and its gradient with respect to
  the hidden vectors, the weights and the biases (a ``B x V`` product each way);
* ``<loss>/dense``: :func:`gradest.sampled_logits_loss` (one set of ``k`` negatives
  shared by the batch, TensorFlow's defaults: unique candidates from the log-uniform
  sampler) and ``jax.grad`` with respect to the same three arrays — JAX's gradient of
  the table is a dense ``(V, d)`` array, so this still grows with ``V``;
* ``<loss>/sparse``: the whole SGD step as large-vocabulary training runs it — the
  candidates, the loss, the gradient with respect to the *gathered rows* only, and the
  update ``W.at[ids].add(-lr g)`` in a jitted step with the tables donated (updated in
  place): its cost does not depend on ``V``.

Times are seconds per call measured interleaved (the functions take turns, so drift in
the machine's load hits all of them alike); the table reports the median and the ratio
of the full softmax's time to each.

**(b) Sampler throughput** at ``V = --sampler-vocab`` (default 10^6): draws per second
of the alias-method unigram sampler, the log-uniform sampler and the uniform one against
``jax.random.categorical`` (which perturbs all ``V`` logits for every draw, so it can
only be run for small draw counts) and ``jax.random.choice(p=...)`` (an ``O(V)``
cumulative sum per call, then a binary search per draw), each at the draw counts in
``--draws`` that fit in memory.

The alias sampler's rate is also given as a fraction of the uniform sampler's, measured
in the same interleaved run.

**(c) Alias-table build** for ``V`` in ``--table-vocab`` (default 10^5, 10^6, 10^7), from
word-count-like counts ``1e9 / i^1.05`` with word2vec's power 0.75, with concrete counts
(NumPy) and traced ones (inside ``jax.jit``), each in a fresh process: the time of the
first build (compilation included: what a user waits for), the minimum and median of
``--table-repeats`` more, the peak extra memory of the first build (the peak resident
memory during it minus the resident memory before it, compilation included, after a
small build has started the compiler up) against the
table's own size (``log_probs``, ``threshold``, ``alias``), and the largest relative
error of the distribution the table samples, over the classes of probability at least
1e-9, against the counts' float64 distribution, and between the traced and the concrete
tables.

Outputs (in ``--out``): ``nce_time.csv``, ``nce_samplers.csv``, ``nce_tables.csv``,
``nce.json`` and ``nce.png``.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import gradest
from benchmarks.common import (
  Column,
  Stopwatch,
  format_table,
  integer,
  integer_list,
  jit,
  plot_series,
  pyplot,
  save_figure,
  series_styles,
  time_call,
  time_interleaved,
  write_csv,
  write_json,
)
from gradest.samplers import (
  LogUniformSampler,
  UniformSampler,
  sample_candidates,
  unigram_sampler,
)

LOSSES = ("sampled_softmax", "nce", "negative_sampling", "ranking_nce")


def make_layer(num_classes: int, dim: int, batch: int, seed: int = 0):
  k = jax.random.split(jax.random.key(seed), 4)
  weights = 0.05 * jax.random.normal(k[0], (num_classes, dim))
  biases = jnp.zeros((num_classes,))
  hidden = jax.random.normal(k[1], (batch, dim))
  # Zipf-like labels: ids sorted by decreasing frequency, as the log-uniform sampler assumes.
  labels = LogUniformSampler(num_classes).sample(k[2], (batch,))
  return hidden, weights, biases, labels


def full_softmax_step(fast: bool = False):
  def loss(hidden, weights, biases, labels):
    return gradest.full_softmax_loss(hidden, weights, biases, labels).mean()

  return jit(jax.value_and_grad(loss, argnums=(0, 1, 2)), fast=fast)


def dense_step(loss_name: str, sampler, num_sampled: int, fast: bool = False):
  def loss(hidden, weights, biases, labels, key):
    return gradest.sampled_logits_loss(
      hidden,
      weights,
      biases,
      labels,
      key,
      sampler=sampler,
      num_sampled=num_sampled,
      loss=loss_name,
    ).mean()

  return jit(jax.value_and_grad(loss, argnums=(0, 1, 2)), fast=fast)


def sparse_step(
  loss_name: str, sampler, num_sampled: int, learning_rate: float = 0.1, fast: bool = False
):
  """One SGD step that touches only the true and sampled rows (tables donated).

  The rows of the batch's ids are gathered once; the logits come from slices of that
  block (slices, not a second gather, whose transpose would add a scatter to the
  backward pass), the loss from :func:`gradest.candidate_sampling_loss`, and the
  gradient with respect to the rows is added back in place.
  """

  def step(weights, biases, hidden, labels, key):
    c = sample_candidates(sampler, key, labels[:, None], num_sampled, unique=True)
    ids = jnp.concatenate([labels, c.sampled])
    b = labels.shape[0]

    def loss(hidden, rows, row_biases):
      true = jnp.sum(hidden * rows[:b], axis=-1, keepdims=True) + row_biases[:b, None]
      sampled = hidden @ rows[b:].T + row_biases[b:]
      per_example = gradest.candidate_sampling_loss(true, sampled, labels, c, loss=loss_name)
      return per_example.mean()

    value, (g_hidden, g_rows, g_biases) = jax.value_and_grad(loss, argnums=(0, 1, 2))(
      hidden, weights[ids], biases[ids]
    )
    weights = weights.at[ids].add(-learning_rate * g_rows)
    biases = biases.at[ids].add(-learning_rate * g_biases)
    return weights, biases, value, g_hidden

  return jit(step, fast=fast, donate_argnums=(0, 1))


class Stateful:
  """Calls a donating step, feeding the updated tables back in (a training loop)."""

  def __init__(self, step, weights, biases, *args):
    self.step, self.weights, self.biases, self.args = step, weights.copy(), biases.copy(), args

  def __call__(self):
    self.weights, self.biases, value, g_hidden = self.step(self.weights, self.biases, *self.args)
    return value, g_hidden


def time_vocab(num_classes: int, args, progress) -> list[dict[str, Any]]:
  hidden, weights, biases, labels = make_layer(num_classes, args.dim, args.batch)
  sampler = LogUniformSampler(num_classes)
  key = jax.random.key(1)
  fast = args.quick
  fns = {
    "full_softmax": functools.partial(full_softmax_step(fast), hidden, weights, biases, labels)
  }
  for name in args.losses:
    fns[f"{name}/dense"] = functools.partial(
      dense_step(name, sampler, args.num_sampled, fast=fast), hidden, weights, biases, labels, key
    )
    fns[f"{name}/sparse"] = Stateful(
      sparse_step(name, sampler, args.num_sampled, fast=fast), weights, biases, hidden, labels, key
    )
  first = {}
  for name, fn in fns.items():
    time_call(fn)  # compile
    first[name] = time_call(fn)
  wrapped = {name: (lambda fn=fn: fn()) for name, fn in fns.items()}
  times = time_interleaved(
    wrapped, (), args.repeats, args.min_time, first, budget=args.budget, same_number=False
  )
  full = times["full_softmax"].median
  rows = []
  for name, t in times.items():
    median = t.median
    loss, _, mode = name.partition("/")
    rows.append(
      dict(
        vocab=num_classes,
        method=name,
        loss=loss,
        mode=mode or "full",
        median_s=median,
        min_s=t.min,
        repeats=t.repeats,
        full_over_this=full / median,
      )
    )
  progress(f"V={num_classes}: full softmax {full * 1e3:.1f} ms")
  return rows


def sampler_rows(args, progress) -> list[dict[str, Any]]:
  v = args.sampler_vocab
  counts = 1e6 / np.arange(1, v + 1) ** 1.07  # Zipf-like counts
  alias = unigram_sampler(counts, 0.75)
  probs = alias.probs()
  logits = jnp.log(jnp.maximum(probs, 1e-30))
  # Everything a draw reads is an argument of the jitted function, not a closed-over
  # constant: XLA would otherwise precompute choice's cumulative sum at compile time.
  methods = {
    "unigram (alias)": (lambda key, s, n: s.sample(key, (n,)), alias),
    "log_uniform": (lambda key, s, n: s.sample(key, (n,)), LogUniformSampler(v)),
    "uniform": (lambda key, s, n: s.sample(key, (n,)), UniformSampler(v)),
    "jax.random.choice(p=)": (lambda key, p, n: jax.random.choice(key, v, (n,), p=p), probs),
    "jax.random.categorical": (
      lambda key, lg, n: jax.random.categorical(key, lg, shape=(n,)),
      logits,
    ),
  }
  rows = []
  key = jax.random.key(2)
  for n in args.draws:
    fns, first = {}, {}
    for name, (draw, data) in methods.items():
      if name == "jax.random.categorical" and n * v > args.categorical_max:
        continue
      fn = functools.partial(jit(draw, fast=args.quick, static_argnums=2), key, data, n)
      time_call(fn)
      first[name] = time_call(fn)
      fns[name] = fn
    times = time_interleaved(
      fns,
      (),
      args.repeats,
      args.min_time,
      first,
      budget=args.budget / len(args.draws),
      same_number=False,
    )
    for name, t in times.items():
      median = t.median
      rows.append(dict(vocab=v, method=name, draws=n, median_s=median, draws_per_s=n / median))
    progress(f"sampler draws={n}: done")
  # Ratios against the baselines at each draw count.
  for row in rows:
    same = {r["method"]: r for r in rows if r["draws"] == row["draws"]}
    for base, key_name in (
      ("jax.random.choice(p=)", "over_choice"),
      ("jax.random.categorical", "over_categorical"),
      ("uniform", "over_uniform"),
    ):
      if base in same:
        row[key_name] = row["draws_per_s"] / same[base]["draws_per_s"]
  return rows


TABLE_POWER = 0.75


def zipf_counts(num_classes: int) -> np.ndarray:
  """Word-count-like counts, ``1e9 / i^1.05`` for the i-th most frequent word."""
  return 1e9 / np.arange(1, num_classes + 1, dtype=np.float64) ** 1.05


def implied_probs(sampler) -> np.ndarray:
  """The distribution an alias table samples (bucket b: b w.p. threshold/2^32, else alias)."""
  keep = np.asarray(sampler.threshold, np.float64) / 2**32
  mass = keep + np.bincount(np.asarray(sampler.alias), 1.0 - keep, minlength=keep.shape[0])
  return mass / keep.shape[0]


def max_relative_error(p: np.ndarray, q: np.ndarray, floor: float = 1e-9) -> float:
  keep = q >= floor
  return float(np.max(np.abs(p[keep] - q[keep]) / q[keep]))


def table_child(mode: str, num_classes: int, repeats: int, path: str) -> dict[str, Any]:
  """One table build, measured in this (fresh) process; writes its distribution to ``path``."""
  counts = zipf_counts(num_classes)
  if mode == "traced":
    build = jax.jit(unigram_sampler, static_argnums=1)
    counts = jax.block_until_ready(jnp.asarray(counts, jnp.float32))
  else:
    build = unigram_sampler
  # One small build first: the compiler's one-time start-up is not the table's cost (the
  # build's own compilation, for this V, is still measured).
  jax.block_until_ready(build(counts[:10], TABLE_POWER))
  before = _resident_bytes(reset_peak=True)
  clock = Stopwatch()
  sampler = jax.block_until_ready(build(counts, TABLE_POWER))
  first = clock()
  peak = _resident_bytes(peak=True) - before
  table_bytes = sum(x.nbytes for x in jax.tree.leaves(sampler))
  implied = implied_probs(sampler)
  del sampler
  warm = [time_call(build, (counts, TABLE_POWER)) for _ in range(repeats)]
  np.save(path, implied)
  return dict(
    vocab=num_classes,
    mode=mode,
    first_s=first,
    min_s=float(np.min(warm)),
    median_s=float(np.median(warm)),
    repeats=repeats,
    peak_extra_mb=peak / 1e6,
    table_mb=table_bytes / 1e6,
    memory_over_table=peak / table_bytes,
  )


def _resident_bytes(*, peak: bool = False, reset_peak: bool = False) -> int:
  """This process's resident memory now, or its peak since the last reset.

  On Linux the peak (``VmHWM``) is reset through ``/proc/self/clear_refs``, so that the
  peak of one build is not hidden by an earlier one (making the counts, say); elsewhere
  it falls back to ``ru_maxrss``, which is never reset.
  """
  try:
    if reset_peak:
      with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
    with open("/proc/self/status") as fh:
      fields = dict(line.split(":", 1) for line in fh if ":" in line)
    return int(fields["VmHWM" if peak else "VmRSS"].split()[0]) * 1024
  except (OSError, KeyError, ValueError):
    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, kB elsewhere
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def table_rows(args, progress) -> list[dict[str, Any]]:
  """Build time, memory and exactness of the alias table; each build in a fresh process."""
  rows = []
  with tempfile.TemporaryDirectory() as tmp:
    for v in args.table_vocab:
      q = None
      implied = {}
      for mode in ("concrete", "traced"):
        path = os.path.join(tmp, f"{mode}_{v}.npy")
        command = [
          sys.executable,
          "-m",
          "benchmarks.nce",
          "--table-child",
          mode,
          str(v),
          str(args.table_repeats),
          path,
        ]
        out = subprocess.run(command, capture_output=True, text=True, check=True)
        row = json.loads(out.stdout.strip().splitlines()[-1])
        implied[mode] = np.load(path)
        if q is None:
          w = zipf_counts(v) ** TABLE_POWER
          q = w / w.sum()
        row["max_rel_error"] = max_relative_error(implied[mode], q)
        rows.append(row)
      traced_vs_concrete = max_relative_error(implied["traced"], implied["concrete"])
      for row in rows[-2:]:
        row["traced_vs_concrete"] = traced_vs_concrete
      progress(f"alias table V={v}: done")
  return rows


def format_time_table(rows) -> str:
  """Milliseconds per loss and gradient, one column per vocabulary size (and in brackets
  how many times faster than the full softmax)."""
  vocabs = sorted({r["vocab"] for r in rows})
  by = {(r["vocab"], r["method"]): r for r in rows}

  def cell(vocab):
    def value(method):
      r = by.get((vocab, method["method"]))
      return None if r is None else f"{r['median_s'] * 1e3:.2f} ({r['full_over_this']:.1f}x)"

    return value

  columns = [Column("method", "method")]
  columns += [Column(f"V={v:.0e} ms (full/this)", cell(v), align=">") for v in vocabs]
  methods = [{"method": m} for m in dict.fromkeys(r["method"] for r in rows)]
  return format_table(methods, columns, markdown=True, missing="")


SAMPLER_TABLE = (
  Column("sampler", "method"),
  Column("draws", "draws", "d"),
  Column("ms per call", lambda r: r["median_s"] * 1e3, ".3f"),
  Column("draws/s", "draws_per_s", ".3g"),
  Column("vs uniform", lambda r: _times(r, "over_uniform", ".2f")),
  Column("vs choice(p=)", lambda r: _times(r, "over_choice", ".1f")),
  Column("vs categorical", lambda r: _times(r, "over_categorical", ".0f")),
)
BUILD_TABLE = (
  Column("V", "vocab", ".0e"),
  Column("counts", "mode"),
  Column("first build s", "first_s", ".2f"),
  Column("warm s (min / median)", lambda r: f"{r['min_s']:.3f} / {r['median_s']:.3f}"),
  Column("peak extra MB", "peak_extra_mb", ".0f"),
  Column("x table", "memory_over_table", ".2f"),
  Column("max rel. error (q >= 1e-9)", "max_rel_error", ".1e"),
  Column("traced vs concrete", "traced_vs_concrete", ".1e"),
)


def _times(row, key, spec):
  return f"{row[key]:{spec}}x" if key in row else None


def format_sampler_table(rows) -> str:
  return format_table(rows, SAMPLER_TABLE, markdown=True, missing="")


def format_build_table(rows) -> str:
  return format_table(rows, BUILD_TABLE, markdown=True)


def plot(time_rows, sampler_rows_, path):
  plt = pyplot()
  fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.8))
  methods = list(dict.fromkeys(r["method"] for r in time_rows))
  styles = series_styles(methods)
  for m in methods:
    rs = sorted((r for r in time_rows if r["method"] == m), key=lambda r: r["vocab"])
    plot_series(
      ax1, [r["vocab"] for r in rs], [r["median_s"] * 1e3 for r in rs], styles[m], label=m
    )
  ax1.set(
    xscale="log",
    yscale="log",
    xlabel="vocabulary size V (classes)",
    ylabel="ms per loss + gradient (median)",
    title="Output layer: full softmax vs sampled losses",
  )
  if methods:
    ax1.legend(fontsize=7)
  samplers = list(dict.fromkeys(r["method"] for r in sampler_rows_))
  styles = series_styles(samplers)
  for name in samplers:
    rs = sorted((r for r in sampler_rows_ if r["method"] == name), key=lambda r: r["draws"])
    plot_series(
      ax2, [r["draws"] for r in rs], [r["draws_per_s"] for r in rs], styles[name], label=name
    )
  v = sampler_rows_[0]["vocab"] if sampler_rows_ else 0
  ax2.set(
    xscale="log",
    yscale="log",
    xlabel="draws per call",
    ylabel="draws per second",
    title=f"Samplers at V={v:.0e}",
  )
  if samplers:
    ax2.legend(fontsize=7)
  save_figure(fig, path, dpi=120)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument(
    "--vocab",
    type=integer_list,
    default=(10_000, 100_000, 1_000_000),
    help="vocabulary sizes, comma-separated (default 1e4,1e5,1e6)",
  )
  p.add_argument("--dim", type=integer, default=128)
  p.add_argument("--batch", type=integer, default=1024)
  p.add_argument("--num-sampled", type=integer, default=64)
  p.add_argument("--losses", nargs="+", choices=LOSSES, default=list(LOSSES))
  p.add_argument("--sampler-vocab", type=integer, default=1_000_000)
  p.add_argument(
    "--draws",
    type=integer_list,
    default=(256, 65_536, 1_048_576),
    help="draw counts per call for the sampler benchmark",
  )
  p.add_argument(
    "--categorical-max",
    type=float,
    default=2**28,
    help="largest draws x V for jax.random.categorical (it builds that many "
    "Gumbel perturbations per call)",
  )
  p.add_argument("--repeats", type=integer, default=7, help="interleaved measurements per function")
  p.add_argument(
    "--min-time",
    type=float,
    default=0.05,
    help="seconds a measurement of the fastest function lasts at least",
  )
  p.add_argument(
    "--budget",
    type=float,
    default=60.0,
    help="seconds of timing per vocabulary size (slow cells repeat less)",
  )
  p.add_argument(
    "--table-vocab",
    type=integer_list,
    default=(100_000, 1_000_000, 10_000_000),
    help="vocabulary sizes of the alias-table build benchmark",
  )
  p.add_argument(
    "--table-repeats",
    type=integer,
    default=3,
    help="warm builds measured after the first, per size and kind of counts",
  )
  p.add_argument("--table-child", nargs=4, help=argparse.SUPPRESS)
  p.add_argument(
    "--parts",
    nargs="+",
    choices=("time", "samplers", "tables"),
    default=["time", "samplers", "tables"],
    help="which parts to run: (a) loss + gradient time, (b) samplers, (c) alias-table build",
  )
  p.add_argument(
    "--quick", action="store_true", help="tiny sizes, XLA backend optimizations off (for the tests)"
  )
  p.add_argument("--quiet", action="store_true")
  p.add_argument("--out", default=os.path.join("bench_out", "nce"))
  args = p.parse_args(argv)
  if args.quick:
    args.vocab, args.dim, args.batch, args.num_sampled = (1_000, 10_000), 16, 64, 8
    args.losses = ["sampled_softmax"]
    args.sampler_vocab, args.draws, args.categorical_max = 2_000, (64, 4096), 2**18
    args.repeats, args.min_time, args.budget = 3, 0.002, 0.5
    args.table_vocab, args.table_repeats = (1_000,), 1
  return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  args = parse_args(argv)
  if args.table_child:
    mode, vocab, repeats, path = args.table_child
    row = table_child(mode, int(vocab), int(repeats), path)
    print(json.dumps(row))
    return row
  os.makedirs(args.out, exist_ok=True)

  def progress(msg):
    if not args.quiet:
      print(msg, file=sys.stderr, flush=True)

  clock = Stopwatch()
  time_rows = []
  if "time" in args.parts:
    for v in args.vocab:
      time_rows += time_vocab(v, args, progress)
  samplers_ = sampler_rows(args, progress) if "samplers" in args.parts else []
  tables = table_rows(args, progress) if "tables" in args.parts else []
  write_csv(time_rows, os.path.join(args.out, "nce_time.csv"))
  write_csv(samplers_, os.path.join(args.out, "nce_samplers.csv"))
  write_csv(tables, os.path.join(args.out, "nce_tables.csv"))
  config = {k: v for k, v in vars(args).items()}
  result = dict(
    config=config,
    time=time_rows,
    samplers=samplers_,
    tables=tables,
    seconds=clock(),
    device=str(jax.devices()[0]),
  )
  write_json(result, os.path.join(args.out, "nce.json"))
  plot(time_rows, samplers_, os.path.join(args.out, "nce.png"))
  if not args.quiet:
    if time_rows:
      print(
        f"Loss + gradient, d={args.dim}, B={args.batch}, k={args.num_sampled} "
        f"(median ms; full-softmax time over this):"
      )
      print(format_time_table(time_rows) + "\n")
    if samplers_:
      print(f"Samplers at V={args.sampler_vocab}:")
      print(format_sampler_table(samplers_) + "\n")
    if tables:
      print(f"Alias-table build, counts 1e9 / i^1.05, power {TABLE_POWER}:")
      print(format_build_table(tables))
    print(f"\n{result['seconds']:.0f} s; results in {args.out}")
  return result


if __name__ == "__main__":
  main()
