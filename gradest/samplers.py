"""Candidate samplers for sampled losses over large vocabularies (O(1) per draw)."""

from gradest._src.samplers import (
  MAX_DRAW_ROUNDS,
  Candidates,
  LogUniformSampler,
  Sampler,
  UniformSampler,
  UnigramSampler,
  accidental_hits,
  log_expected_count,
  sample_candidates,
  unigram_sampler,
)

__all__ = [
  "MAX_DRAW_ROUNDS",
  "Candidates",
  "LogUniformSampler",
  "Sampler",
  "UniformSampler",
  "UnigramSampler",
  "accidental_hits",
  "log_expected_count",
  "sample_candidates",
  "unigram_sampler",
]
