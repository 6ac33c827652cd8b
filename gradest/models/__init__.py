"""The seeds' models: VAE objectives, sigmoid belief nets and the skip-gram model.

VAE pieces (:mod:`gradest.models.vae`), a VAE with binary latents trained with any
registry estimator (``discrete_vae``), sigmoid belief nets (``sbn``) and the skip-gram
model with negative sampling (``skipgram``): models and losses only; data sets, trainers
and evaluation loops live in the repository's ``benchmarks/``. ``import gradest`` does not
import this package: import it explicitly.

Examples:
  >>> from gradest.models import discrete_vae, sbn, skipgram
  >>> from gradest.models import elbo, init_mlp
"""

from gradest.models import discrete_vae, sbn, skipgram
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
  "discrete_vae",
  "elbo",
  "gaussian_kl",
  "init_mlp",
  "iwae_bound",
  "sbn",
  "skipgram",
]
