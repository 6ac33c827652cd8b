"""The ``flax.linen`` large-vocabulary output layer."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from gradest._src.samplers import Sampler
from gradest.flax._common import check_config, default_kernel_init, full_logits, output_loss


class SampledOutput(nn.Module):
  r"""A linear output layer over ``num_classes`` classes trained with a sampled loss.

  Class :math:`w` scores :math:`s(w) = h^\top W_w + b_w`. With ``deterministic=False``
  (training) the layer returns :func:`gradest.sampled_logits_loss` per example — only
  the true and the ``num_sampled`` sampled rows of :math:`W` are touched, the
  negatives drawn from the ``"sampling"`` rng collection; with ``deterministic=True``
  (evaluation) the exact :func:`gradest.full_softmax_loss`. ``log_probs`` gives the full
  log-softmax and ``logits`` the full logits, ``batch + (num_classes,)``.

  The kernel is stored as ``(num_classes, dim)`` (one row per class, as an embedding
  table), so that rows can be gathered. With ``loss="nce"`` and
  ``learn_log_partition=True`` a scalar ``log_partition`` parameter is learned with the
  model (otherwise the model is taken to be self-normalized).

  Attributes:
    num_classes: ``V``.
    features: ``dim``, the size of the hidden vectors (as ``nn.Embed``'s ``features``).
    num_sampled: negatives per step.
    sampler: a :mod:`gradest.samplers` sampler over ``V`` classes; ``None`` for
      TensorFlow's default, the log-uniform sampler (ids by decreasing frequency).
    loss: ``"sampled_softmax"``, ``"nce"``, ``"negative_sampling"`` or ``"ranking_nce"``.
    use_bias: whether the layer has a bias per class.
    unique: draw distinct negatives (TensorFlow's default).
    shared_negatives: one set of negatives for the whole batch.
    remove_accidental_hits: ``None`` for TensorFlow's defaults (see
      :func:`gradest.sampled_logits_loss`).
    learn_log_partition: learn :math:`\log Z` for NCE.
    kernel_init: the kernel's initializer; the default gives rows of norm ~1.
    bias_init: the bias's initializer.
    param_dtype: the parameters' dtype.
    rng_collection: the rng collection the negatives are drawn from.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> layer = SampledOutput(num_classes=1000, features=16, num_sampled=32)
    >>> h, labels = jnp.ones((4, 16)), jnp.array([1, 2, 3, 4])
    >>> params = layer.init(jax.random.key(0), h, labels, deterministic=True)
    >>> train = layer.apply(params, h, labels, deterministic=False,
    ...                     rngs={"sampling": jax.random.key(1)})
    >>> exact = layer.apply(params, h, labels, deterministic=True)
    >>> train.shape, exact.shape, layer.apply(params, h, method="log_probs").shape
    ((4,), (4,), (4, 1000))
  """

  num_classes: int
  features: int
  num_sampled: int = 64
  sampler: Sampler | None = None
  loss: str = "sampled_softmax"
  use_bias: bool = True
  unique: bool = True
  shared_negatives: bool = True
  remove_accidental_hits: bool | None = None
  learn_log_partition: bool = False
  kernel_init: Callable[..., Any] = default_kernel_init
  bias_init: Callable[..., Any] = nn.initializers.zeros_init()
  param_dtype: Any = jnp.float32
  rng_collection: str = "sampling"

  def setup(self):
    self._sampler = check_config(self.num_classes, self.num_sampled, self.sampler, self.loss)
    shape = (self.num_classes, self.features)
    self.kernel = self.param("kernel", self.kernel_init, shape, self.param_dtype)
    self.bias = (
      self.param("bias", self.bias_init, (self.num_classes,), self.param_dtype)
      if self.use_bias
      else None
    )
    self.log_partition = (
      self.param("log_partition", nn.initializers.zeros_init(), (), self.param_dtype)
      if self.learn_log_partition and self.loss == "nce"
      else None
    )

  def _check(self, hidden):
    if hidden.shape[-1:] != (self.features,):
      raise ValueError(
        f"hidden must have shape batch + (features,) = batch + ({self.features},), got "
        f"{hidden.shape}."
      )

  def __call__(self, hidden: jax.Array, labels: jax.Array, *, deterministic: bool):
    """The loss of each example, shape ``batch`` (sampled in training, exact in evaluation)."""
    self._check(hidden)
    key = None if deterministic else self.make_rng(self.rng_collection)
    return output_loss(
      hidden,
      self.kernel,
      self.bias,
      labels,
      key,
      deterministic=deterministic,
      sampler=self._sampler,
      num_sampled=self.num_sampled,
      loss=self.loss,
      unique=self.unique,
      shared_negatives=self.shared_negatives,
      remove_accidental_hits=self.remove_accidental_hits,
      log_partition=self.log_partition,
    )

  def logits(self, hidden: jax.Array) -> jax.Array:
    """The full logits, ``batch + (num_classes,)`` (a ``batch x V`` product)."""
    self._check(hidden)
    return full_logits(hidden, self.kernel, self.bias)

  def log_probs(self, hidden: jax.Array) -> jax.Array:
    """The full log-softmax, ``batch + (num_classes,)``."""
    return jax.nn.log_softmax(self.logits(hidden), axis=-1)
