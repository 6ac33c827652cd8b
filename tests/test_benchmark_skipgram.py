"""The skip-gram benchmark: it runs, writes its files, and its numbers are sane.

One quick run, checked by helpers called from a single test (pytest-xdist would run a
module fixture once per worker).
"""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from benchmarks import skipgram as bench

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
