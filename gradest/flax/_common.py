"""What the linen and nnx output layers share: argument checks and the two losses."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from gradest._src.base import check_positive_int
from gradest._src.nce import LOSSES, full_softmax_loss, sampled_logits_loss
from gradest._src.samplers import LogUniformSampler, Sampler, check_num_classes


def default_kernel_init(key, shape, dtype=jnp.float32):
  """Normal rows with standard deviation ``1 / sqrt(dim)`` (unit-scale logits at start)."""
  return jax.random.normal(key, shape, dtype) / jnp.sqrt(jnp.asarray(shape[-1], dtype))


def check_config(num_classes: Any, num_sampled: Any, sampler: Any, loss: str) -> Sampler:
  """Validates the layer's settings and returns its sampler (log-uniform by default)."""
  num_classes = check_num_classes(num_classes)
  if loss not in LOSSES:
    raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}.")
  check_positive_int(num_sampled, "num_sampled")
  if sampler is None:
    return LogUniformSampler(num_classes)
  if not isinstance(sampler, Sampler):
    raise TypeError(
      f"sampler must be a gradest.samplers sampler or None, got {type(sampler).__name__}."
    )
  if sampler.num_classes != num_classes:
    raise ValueError(
      f"sampler.num_classes={sampler.num_classes} does not match num_classes={num_classes}."
    )
  return sampler


def output_loss(
  hidden,
  kernel,
  bias,
  labels,
  key,
  *,
  deterministic,
  sampler,
  num_sampled,
  loss,
  unique,
  shared_negatives,
  remove_accidental_hits,
  log_partition,
):
  """The exact loss when ``deterministic``, else the sampled one."""
  if deterministic:
    return full_softmax_loss(hidden, kernel, bias, labels)
  if key is None:
    raise ValueError(
      "training (deterministic=False) draws negatives and needs a PRNG key: pass rngs "
      "(nnx) or an rngs={'sampling': key} entry to apply (linen)."
    )
  return sampled_logits_loss(
    hidden,
    kernel,
    bias,
    labels,
    key,
    sampler=sampler,
    num_sampled=num_sampled,
    loss=loss,
    unique=unique,
    shared_negatives=shared_negatives,
    remove_accidental_hits=remove_accidental_hits,
    log_partition=log_partition if loss == "nce" else None,
  )


def full_logits(hidden, kernel, bias):
  logits = hidden @ kernel.T
  return logits if bias is None else logits + bias
