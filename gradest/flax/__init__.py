"""Flax modules (needs the ``flax`` extra): a large-vocabulary output layer.

``gradest.flax.SampledOutput`` is the ``flax.linen`` module and
``gradest.flax.nnx.SampledOutput`` the ``flax.nnx`` one; both train with a sampled loss
(:func:`gradest.sampled_logits_loss`) and evaluate with the full softmax.
"""

from gradest.flax import nnx
from gradest.flax.linen import SampledOutput

__all__ = ["SampledOutput", "nnx"]
