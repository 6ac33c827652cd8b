"""Fisher-vector products, generalized Gauss-Newton products and diagonal Fishers."""

from gradest._src.fisher import (
  LIKELIHOODS,
  Likelihood,
  distribution_fisher_vector_product,
  fisher_diagonal,
  fisher_vector_product,
  gaussian_likelihood,
  get_likelihood,
  ggn_vector_product,
  likelihood_from_distribution,
)

__all__ = [
  "LIKELIHOODS",
  "Likelihood",
  "distribution_fisher_vector_product",
  "fisher_diagonal",
  "fisher_vector_product",
  "gaussian_likelihood",
  "get_likelihood",
  "ggn_vector_product",
  "likelihood_from_distribution",
]
