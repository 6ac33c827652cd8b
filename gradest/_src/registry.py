"""The registry of gradient estimators: one entry per estimator, at both levels.

Tests and benchmarks select estimators from :data:`ESTIMATORS` by name and read what
each needs (which distributions it accepts, whether it differentiates ``f``, its cost)
from its :class:`Estimator` entry, so adding an entry gets an estimator tested and
benchmarked.
"""

from __future__ import annotations

import functools
import types
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax.numpy as jnp

from gradest._src.discrete import (
  arm_grad,
  arm_objective,
  disarm_grad,
  disarm_objective,
  gumbel_rao_grad,
  gumbel_rao_objective,
  straight_through_grad,
  straight_through_objective,
)
from gradest._src.measure_valued import measure_valued_grad
from gradest._src.pathwise import pathwise_grad, pathwise_objective
from gradest._src.relax import (
  init_rebar_params,
  rebar_grad,
  rebar_objective,
  relax_control_variate,
  relax_grad,
  relax_objective,
)
from gradest._src.score_function import score_function_grad, score_function_objective
from gradest._src.vimco import vimco_grad, vimco_objective

ANY = "any"
REPARAMETERIZED = "reparameterized"
GAUSSIAN = "gaussian"
BERNOULLI = "bernoulli"
CATEGORICAL = "categorical"


class Estimator(NamedTuple):
  """One gradient estimator.

  Attributes:
    name: the registry key.
    grad: the gradient level, ``grad(f, dist_fn, params, key, num_samples, **options)``
      returning a :class:`GradEstimate`.
    objective: the objective level, ``objective(f, dist, key, num_samples, **options)``
      returning a scalar whose ``jax.grad`` is the estimator (``None`` if it has none).
    distributions: what ``dist_fn(params)`` may be: ``"any"`` distribution with a
      ``log_prob``, ``"reparameterized"``, ``"gaussian"`` (a diagonal Normal),
      ``"bernoulli"``, ``"categorical"`` (``OneHotCategorical``).
    unbiased: whether the mean of ``grad`` is the exact gradient of the objective.
    differentiates_f: whether ``f`` must be differentiable in its input.
    min_samples: the smallest ``num_samples``.
    evaluations_per_row: evaluations of ``f`` per row of ``per_sample`` (2 for
      antithetic pairs).
    independent_rows: whether the rows of ``per_sample`` are independent (False for
      VIMCO's terms of one multi-sample objective).
    multi_sample: the objective is :math:`\\mathbb E\\log\\frac1K\\sum_k e^{f(b_k)}`
      (VIMCO), not :math:`\\mathbb E f`.
    higher_order: repeated ``jax.grad`` of ``objective`` gives unbiased higher
      derivatives (DiCE).
    cost: the cost of one sample, in words.
    options: fixed keyword arguments this entry passes to ``grad`` and ``objective``.
    setup: ``setup(f, family, logits_shape) -> dict`` of keyword arguments that depend
      on the problem (RELAX's control variate), or ``None``.
  """

  name: str
  grad: Callable[..., Any]
  objective: Callable[..., Any] | None
  distributions: tuple[str, ...]
  unbiased: bool
  differentiates_f: bool = False
  min_samples: int = 1
  evaluations_per_row: int = 1
  independent_rows: bool = True
  multi_sample: bool = False
  higher_order: bool = False
  cost: str = "one evaluation of f"
  options: Mapping[str, Any] = types.MappingProxyType({})
  setup: Callable[..., dict[str, Any]] | None = None

  def accepts(self, kind: str) -> bool:
    """Whether a distribution of ``kind`` (one of the ``distributions`` names) fits."""
    if ANY in self.distributions:
      return True
    if kind == GAUSSIAN:
      return REPARAMETERIZED in self.distributions or GAUSSIAN in self.distributions
    return kind in self.distributions

  def kwargs(
    self,
    f: Callable[..., Any] | None = None,
    family: str | None = None,
    logits_shape: tuple[int, ...] = (),
  ) -> dict[str, Any]:
    """The keyword arguments for a call: ``options`` and what ``setup`` gives."""
    out = dict(self.options)
    if self.setup is not None:
      out.update(self.setup(f, family, logits_shape))
    return out

  def estimate(self, f, dist_fn, params, key, num_samples, **overrides):
    """Calls ``grad`` with this entry's options (``overrides`` win)."""
    return self.grad(f, dist_fn, params, key, num_samples, **{**self.options, **overrides})


def _relax_setup(f, family, logits_shape):
  def network(w, z):
    return jnp.sum(w * jnp.tanh(z))

  cv_params = dict(init_rebar_params(), network=jnp.zeros(logits_shape, jnp.float32))
  return dict(cv_fn=relax_control_variate(f, network, family=family), cv_params=cv_params)


_LOO = types.MappingProxyType({"baseline": "leave_one_out"})
_DISCRETE = (BERNOULLI, CATEGORICAL)

ESTIMATORS: Mapping[str, Estimator] = types.MappingProxyType(
  {
    e.name: e
    for e in (
      Estimator(
        "score_function",
        score_function_grad,
        score_function_objective,
        (ANY,),
        True,
        higher_order=True,
      ),
      Estimator(
        "reinforce_loo",
        score_function_grad,
        score_function_objective,
        (ANY,),
        True,
        min_samples=2,
        higher_order=True,
        options=_LOO,
      ),
      Estimator(
        "pathwise",
        pathwise_grad,
        pathwise_objective,
        (REPARAMETERIZED,),
        True,
        differentiates_f=True,
        cost="one gradient of f",
      ),
      Estimator(
        "measure_valued",
        measure_valued_grad,
        None,
        (GAUSSIAN,),
        True,
        cost="4 D evaluations of f (D the dimension)",
      ),
      Estimator(
        "arm",
        arm_grad,
        arm_objective,
        (BERNOULLI,),
        True,
        min_samples=2,
        evaluations_per_row=2,
      ),
      Estimator(
        "disarm",
        disarm_grad,
        disarm_objective,
        (BERNOULLI,),
        True,
        min_samples=2,
        evaluations_per_row=2,
      ),
      Estimator(
        "straight_through",
        straight_through_grad,
        straight_through_objective,
        _DISCRETE,
        False,
        differentiates_f=True,
        cost="one gradient of f",
      ),
      Estimator(
        "gumbel_rao",
        gumbel_rao_grad,
        gumbel_rao_objective,
        _DISCRETE,
        False,
        differentiates_f=True,
        cost="one gradient of f, 10 conditional relaxations",
      ),
      Estimator(
        "rebar",
        rebar_grad,
        rebar_objective,
        _DISCRETE,
        True,
        differentiates_f=True,
        cost="one evaluation of f and two gradients of f at relaxed points",
      ),
      Estimator(
        "relax",
        relax_grad,
        relax_objective,
        _DISCRETE,
        True,
        differentiates_f=True,
        setup=_relax_setup,
        cost="one evaluation of f, two gradients of the control variate (which uses f's)",
      ),
      Estimator(
        "vimco",
        vimco_grad,
        vimco_objective,
        _DISCRETE,
        True,
        min_samples=2,
        independent_rows=False,
        multi_sample=True,
      ),
    )
  }
)
"""Every gradient estimator, by name (an immutable mapping)."""


@functools.cache
def estimator_names(kind: str | None = None) -> tuple[str, ...]:
  """The names of the estimators that accept distributions of ``kind`` (all if ``None``)."""
  return tuple(n for n, e in ESTIMATORS.items() if kind is None or e.accepts(kind))


def get_estimator(name: str) -> Estimator:
  """The registry entry ``name``; a clear error lists the names.

  Examples:
    >>> get_estimator("disarm").unbiased
    True
  """
  if name not in ESTIMATORS:
    raise ValueError(f"unknown estimator {name!r}; the estimators are {sorted(ESTIMATORS)}.")
  return ESTIMATORS[name]
