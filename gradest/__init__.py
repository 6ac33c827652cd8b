"""gradest: Monte Carlo gradient estimators for JAX."""

from gradest import distributions, models, monte_carlo
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
from gradest._src.measure_valued import measure_valued_grad
from gradest._src.pathwise import pathwise_grad
from gradest._src.score_function import (
  leave_one_out_baseline,
  magic_box,
  score_function_grad,
  score_function_surrogate,
)

__version__ = "0.1.0"

__all__ = [
  "ControlVariate",
  "GradEstimate",
  "MovingAverageBaseline",
  "MovingAverageState",
  "delta_method",
  "distributions",
  "models",
  "monte_carlo",
  "hessian_diagonal",
  "leave_one_out_baseline",
  "magic_box",
  "measure_valued_grad",
  "moving_average_baseline",
  "optimal_coefficient",
  "pathwise_grad",
  "score_function_grad",
  "score_function_surrogate",
]
