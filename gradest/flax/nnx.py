"""The ``flax.nnx`` large-vocabulary output layer."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from gradest._src.samplers import Sampler
from gradest.flax._common import check_config, default_kernel_init, full_logits, output_loss


class SampledOutput(nnx.Module):
  r"""The ``flax.nnx`` version of :class:`gradest.flax.SampledOutput`.

  Draws its negatives from ``rngs`` (the ``"sampling"`` stream, else ``"default"``);
  ``deterministic`` follows ``model.train()`` / ``model.eval()`` (or ``nnx.view``) and
  can be overridden per call, as for ``nnx.Dropout``.

  Args:
    in_features: ``dim``, the size of the hidden vectors.
    num_classes: ``V``.
    num_sampled: negatives per step.
    sampler: a sampler over ``V`` classes; ``None`` for the log-uniform one.
    loss: ``"sampled_softmax"``, ``"nce"``, ``"negative_sampling"`` or ``"ranking_nce"``.
    use_bias, unique, shared_negatives, remove_accidental_hits, learn_log_partition:
      as for the linen module.
    deterministic: evaluate with the full softmax.
    kernel_init, bias_init, param_dtype: parameter initialization.
    rngs: an ``nnx.Rngs`` with a ``params`` stream (and ``sampling`` or ``default``).

  Examples:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> layer = SampledOutput(16, 1000, num_sampled=32, rngs=nnx.Rngs(0, sampling=1))
    >>> h, labels = jnp.ones((4, 16)), jnp.array([1, 2, 3, 4])
    >>> layer(h, labels).shape, layer(h, labels, deterministic=True).shape
    ((4,), (4,))
  """

  def __init__(
    self,
    in_features: int,
    num_classes: int,
    *,
    num_sampled: int = 64,
    sampler: Sampler | None = None,
    loss: str = "sampled_softmax",
    use_bias: bool = True,
    unique: bool = True,
    shared_negatives: bool = True,
    remove_accidental_hits: bool | None = None,
    learn_log_partition: bool = False,
    deterministic: bool = False,
    kernel_init: Callable[..., Any] = default_kernel_init,
    bias_init: Callable[..., Any] = jax.nn.initializers.zeros,
    param_dtype: Any = jnp.float32,
    rngs: nnx.Rngs,
  ):
    self.sampler = nnx.static(check_config(num_classes, num_sampled, sampler, loss))
    self.num_classes, self.num_sampled, self.loss = num_classes, num_sampled, loss
    self.unique, self.shared_negatives = unique, shared_negatives
    self.remove_accidental_hits = remove_accidental_hits
    self.deterministic = deterministic
    self.kernel = nnx.Param(kernel_init(rngs.params(), (num_classes, in_features), param_dtype))
    self.bias = (
      nnx.Param(bias_init(rngs.params(), (num_classes,), param_dtype)) if use_bias else None
    )
    self.log_partition = (
      nnx.Param(jnp.zeros((), param_dtype)) if learn_log_partition and loss == "nce" else None
    )
    self.rngs = rngs["sampling"].fork()

  def _values(self):
    bias = None if self.bias is None else self.bias[...]
    log_z = None if self.log_partition is None else self.log_partition[...]
    return self.kernel[...], bias, log_z

  def __call__(
    self, hidden: jax.Array, labels: jax.Array, *, deterministic: bool | None = None
  ) -> jax.Array:
    """The loss of each example, shape ``batch`` (sampled in training, exact in evaluation)."""
    deterministic = self.deterministic if deterministic is None else deterministic
    kernel, bias, log_z = self._values()
    key = None if deterministic else self.rngs()
    return output_loss(
      hidden,
      kernel,
      bias,
      labels,
      key,
      deterministic=deterministic,
      sampler=self.sampler,
      num_sampled=self.num_sampled,
      loss=self.loss,
      unique=self.unique,
      shared_negatives=self.shared_negatives,
      remove_accidental_hits=self.remove_accidental_hits,
      log_partition=log_z,
    )

  def logits(self, hidden: jax.Array) -> jax.Array:
    """The full logits, ``batch + (num_classes,)``."""
    kernel, bias, _ = self._values()
    return full_logits(hidden, kernel, bias)

  def log_probs(self, hidden: jax.Array) -> jax.Array:
    """The full log-softmax, ``batch + (num_classes,)``."""
    return jax.nn.log_softmax(self.logits(hidden), axis=-1)
