"""Flax modules (needs the ``flax`` extra): a large-vocabulary output layer.

``gradest.flax.SampledOutput`` is the ``flax.linen`` module and
``gradest.flax.nnx.SampledOutput`` the ``flax.nnx`` one; both train with a sampled loss
(:func:`gradest.sampled_logits_loss`) and evaluate with the full softmax.
"""

from gradest._src.base import require_extra

require_extra(["flax"], "flax", "gradest.flax")

from gradest.flax import nnx  # noqa: E402
from gradest.flax.linen import SampledOutput  # noqa: E402

__all__ = ["SampledOutput", "nnx"]
