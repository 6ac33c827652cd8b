"""Model building blocks used by the benchmarks and notebooks.

VAE pieces, sigmoid belief nets (``sbn``) and skip-gram embeddings (``skipgram``).
"""

from gradest.models import sbn, skipgram
from gradest.models.vae import (
  apply_mlp,
  bernoulli_log_likelihood,
  elbo,
  gaussian_kl,
  init_mlp,
  iwae_bound,
)

__all__ = [
  "apply_mlp",
  "bernoulli_log_likelihood",
  "elbo",
  "gaussian_kl",
  "init_mlp",
  "iwae_bound",
  "sbn",
  "skipgram",
]
