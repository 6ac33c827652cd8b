"""Fisher-vector products, GGN products, diagonal Fishers and K-FAC's layers and factors."""

from gradest._src.fisher import (
  LIKELIHOODS,
  Likelihood,
  distribution_fisher_vector_product,
  fisher_diagonal,
  fisher_quadratic_form,
  fisher_vector_product,
  gaussian_likelihood,
  get_likelihood,
  ggn_vector_product,
  likelihood_from_distribution,
)
from gradest._src.kfac import kfac_factors
from gradest._src.layers import (
  ConvGeometry,
  Layer,
  LayerSummary,
  find_layers,
  register_conv2d,
  register_dense,
  register_embed,
)

__all__ = [
  "LIKELIHOODS",
  "ConvGeometry",
  "Layer",
  "LayerSummary",
  "Likelihood",
  "distribution_fisher_vector_product",
  "find_layers",
  "fisher_diagonal",
  "fisher_quadratic_form",
  "fisher_vector_product",
  "kfac_factors",
  "gaussian_likelihood",
  "get_likelihood",
  "ggn_vector_product",
  "likelihood_from_distribution",
  "register_conv2d",
  "register_dense",
  "register_embed",
]
