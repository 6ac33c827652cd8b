"""Candidate samplers for sampled losses over large vocabularies (O(1) per draw)."""

from gradest._src.samplers import (
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
