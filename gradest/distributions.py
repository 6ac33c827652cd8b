"""Distribution families used by the estimators, and adapters for distrax / numpyro."""

from gradest._src.distributions import (
  Bernoulli,
  Categorical,
  Distribution,
  Gamma,
  Normal,
  OneHotCategorical,
  RelaxedBernoulli,
  RelaxedCategorical,
  as_distribution,
  kl_divergence,
)

__all__ = [
  "Bernoulli",
  "Categorical",
  "Distribution",
  "Gamma",
  "Normal",
  "OneHotCategorical",
  "RelaxedBernoulli",
  "RelaxedCategorical",
  "as_distribution",
  "kl_divergence",
]
