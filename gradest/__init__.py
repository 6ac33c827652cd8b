"""gradest: Monte Carlo gradient estimators for JAX."""

from gradest import distributions, fisher, models, monte_carlo
from gradest._src.base import GradEstimate
from gradest._src.control_variates import (
  ControlVariate,
  MovingAverageBaseline,
  MovingAverageState,
  delta_method,
  hessian_diagonal,
  moving_average_baseline,
  optimal_coefficient,
)
from gradest._src.discrete import (
  arm_grad,
  disarm_grad,
  exact_expectation,
  exact_grad,
  gumbel_rao,
  gumbel_rao_grad,
  reinforce_grad,
  straight_through_grad,
)
from gradest._src.fisher import (
  Likelihood,
  distribution_fisher_vector_product,
  fisher_diagonal,
  fisher_vector_product,
  ggn_vector_product,
)
from gradest._src.gumbel import (
  binary_gumbel_softmax,
  conditional_gumbel,
  conditional_logistic,
  gumbel_max,
  gumbel_noise,
  gumbel_softmax,
  gumbel_top_k,
  logistic_noise,
  straight_through,
  truncated_gumbel,
)
from gradest._src.measure_valued import measure_valued_grad
from gradest._src.natural_gradient import (
  FisherDiagonalState,
  KLTrustRegionState,
  NaturalGradientState,
  kl_trust_region,
  natural_gradient,
  scale_by_fisher_diagonal,
  scale_by_kl_trust_region,
  scale_by_natural_gradient,
)
from gradest._src.pathwise import pathwise_grad
from gradest._src.relax import (
  RelaxEstimate,
  init_rebar_params,
  rebar_control_variate,
  rebar_grad,
  relax_control_variate,
  relax_grad,
)
from gradest._src.score_function import (
  leave_one_out_baseline,
  magic_box,
  score_function_grad,
  score_function_surrogate,
)
from gradest._src.vimco import vimco_grad, vimco_surrogate

__version__ = "0.1.0"

__all__ = [
  "ControlVariate",
  "FisherDiagonalState",
  "GradEstimate",
  "KLTrustRegionState",
  "Likelihood",
  "MovingAverageBaseline",
  "MovingAverageState",
  "NaturalGradientState",
  "RelaxEstimate",
  "arm_grad",
  "binary_gumbel_softmax",
  "conditional_gumbel",
  "conditional_logistic",
  "delta_method",
  "disarm_grad",
  "distribution_fisher_vector_product",
  "distributions",
  "exact_expectation",
  "exact_grad",
  "fisher",
  "fisher_diagonal",
  "fisher_vector_product",
  "ggn_vector_product",
  "gumbel_max",
  "gumbel_noise",
  "gumbel_rao",
  "gumbel_rao_grad",
  "gumbel_softmax",
  "gumbel_top_k",
  "hessian_diagonal",
  "init_rebar_params",
  "kl_trust_region",
  "leave_one_out_baseline",
  "logistic_noise",
  "magic_box",
  "measure_valued_grad",
  "models",
  "monte_carlo",
  "moving_average_baseline",
  "natural_gradient",
  "optimal_coefficient",
  "pathwise_grad",
  "rebar_control_variate",
  "rebar_grad",
  "reinforce_grad",
  "relax_control_variate",
  "relax_grad",
  "scale_by_fisher_diagonal",
  "scale_by_kl_trust_region",
  "scale_by_natural_gradient",
  "score_function_grad",
  "score_function_surrogate",
  "straight_through",
  "straight_through_grad",
  "truncated_gumbel",
  "vimco_grad",
  "vimco_surrogate",
]
