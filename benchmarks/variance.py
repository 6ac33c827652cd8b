r"""Variance of gradest's gradient estimators against exact values from quadrature.

Run with ``python -m benchmarks.variance`` (``--help`` lists the flags).

Every problem is a one-dimensional Gaussian, :math:`x \sim \mathcal N(\mu, \sigma^2)`, so the
mean and the variance of each estimator's per-sample gradient are one- (or two-)
dimensional integrals, computed here in float64 by composite Simpson quadrature and
compared with what the estimators produce in float32 under ``jax.jit``/``jax.vmap``.

Problems:

* ``seed``: the worked example :math:`\nabla_\theta \mathbb E_{z\sim\mathcal N(a\theta+b,
  1)}[z^2]` with ``a=2, b=3, theta=1``; the exact gradient is :math:`2a(a\theta+b) = 20`.
* ``square``, ``gauss``, ``cos``: the costs :math:`(x-k)^2`, :math:`e^{-kx^2}` and
  :math:`\cos(kx)` of Mohamed et al. (2020), figures 2 and 3, under
  :math:`\mathcal N(\mu=1, \sigma=1)`, differentiated with respect to ``mu`` and
  ``sigma``, over a range of ``k`` (see :data:`COSTS` for the ranges and why they
  were chosen).

Estimators (all through gradest's public API, on common random numbers: every
estimator gets the same key in a repetition, and the same repetition keys are used
for every ``k``): the score function plain, with the oracle constant baseline
:math:`b = \mathbb E[f]` (exact, so not available in practice), with the
leave-one-out baseline and with :func:`gradest.moving_average_baseline` (its state is
carried across the repetitions by ``lax.scan``, after a burn-in); the pathwise
estimator; the measure-valued estimator with and without coupling.

Method: ``R`` repetitions of an ``N``-sample estimate. For each estimator, problem,
``k`` and parameter the report gives the empirical mean against the exact gradient
(``bias/se`` is the error in standard errors of the mean) and the
*single-sample-equivalent variance* :math:`N\,\mathrm{Var}(\hat g_N)` against its
exact value. For estimators whose per-sample terms :math:`g(x)` are i.i.d. that is
:math:`\mathbb E[g^2] - \mathbb E[g]^2`. The leave-one-out estimator is a U-statistic
(see :func:`_leave_one_out_variance`); for the moving-average baseline the exact
column is the stationary approximation

.. math::
  N\,\mathrm{Var} \approx \mathrm{Var}\big((f - \mathbb E f)\,s\big)
    + \frac{1-\rho}{1+\rho}\,\frac{\mathrm{Var}(f)}{N}\,\mathbb E[s^2],

where :math:`s` is the score and :math:`\rho` the decay (``--decay``, 0.9): the
baseline is independent of the current samples and, once the average has forgotten
its start, has mean :math:`\mathbb E f` and variance
:math:`\frac{1-\rho}{1+\rho}\mathrm{Var}(f)/N`. The zero-debiased average is
unbiased from the first step, and after ``t`` updates its variance is that times
:math:`(1+\rho^t)/(1-\rho^t)`; the first :func:`burn_in_steps` estimates (until
:math:`\rho^t < 10^{-4}`) are dropped, so the approximation is off by less than
:math:`2\cdot 10^{-4}` of the (already small) second term. The estimates of successive
repetitions are uncorrelated (the current scores have mean zero given the past), so
their sample variance estimates this marginal variance.

Exact zeros (the coupled measure-valued mean arm for :math:`(x-k)^2` at :math:`k=\mu`)
have no ratio and are drawn as triangles on the plots' bottom edge. Because of the
common random numbers, rows are correlated with each other (the tests' Bonferroni
correction does not need independence).

Outputs (in ``--out``): ``variance.csv``, ``variance.json``, one PNG per cost
(variance against ``k`` for ``mu`` and ``sigma``, one line per estimator, log scale)
and ``seed.png``.

References:
  Mohamed, Rosca, Figurnov & Mnih, *Monte Carlo Gradient Estimation in Machine
  Learning*, JMLR 2020.
  Hoeffding, *A Class of Statistics with Asymptotically Normal Distribution*, 1948
  (variance of U-statistics).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import functools
import math
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

import gradest
from benchmarks.common import (
  Column,
  Stopwatch,
  annotate_bars,
  integer,
  plot_series,
  pyplot,
  save_figure,
  series_styles,
  write_csv,
  write_json,
)
from benchmarks.common import format_table as format_table_of
from gradest.distributions import Normal

# --------------------------------------------------------------------------------------
# Costs and problems.
# --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Cost:
  """A family of costs ``f(x; k)`` with closed-form Gaussian expectations.

  Attributes:
    name: short name used in file names and tables.
    label: the formula, for plots.
    fn: ``fn(x, k, xp)``, the cost; ``xp`` is ``numpy`` or ``jax.numpy``.
    dfn: ``dfn(x, k, xp)``, its derivative in ``x`` (for the exact pathwise moments).
    value: ``value(mu, sigma, k)``, :math:`\\mathbb E_{\\mathcal N(\\mu,\\sigma^2)}[f]`.
    grad: ``grad(mu, sigma, k) -> (d/dmu, d/dsigma)`` of ``value``.
    ks: the ``k`` values of the default run.
    quick_ks: the ``k`` values of ``--quick``.
  """

  name: str
  label: str
  fn: Callable[..., Any]
  dfn: Callable[..., Any]
  value: Callable[..., Any]
  grad: Callable[..., Any]
  ks: tuple[float, ...]
  quick_ks: tuple[float, ...]


def _gauss_value(mu, sigma, k):
  d = 1.0 + 2.0 * k * sigma**2
  return np.exp(-k * mu**2 / d) / np.sqrt(d)


def _gauss_grad(mu, sigma, k):
  d = 1.0 + 2.0 * k * sigma**2
  e = _gauss_value(mu, sigma, k)
  return -2.0 * k * mu / d * e, e * (-2.0 * k * sigma / d + 4.0 * k**2 * sigma * mu**2 / d**2)


def _cos_grad(mu, sigma, k):
  damp = np.exp(-0.5 * (k * sigma) ** 2)
  return -k * np.sin(k * mu) * damp, -(k**2) * sigma * np.cos(k * mu) * damp


# The k ranges (mu = sigma = 1) cover the regimes in which the ordering changes:
# * (x - k)^2: k in [-3, 5] in steps of 0.5, symmetric about k = mu. The score
#   function grows like (mu - k)^4 and the pathwise mu-variance is flat (4 sigma^2),
#   while the coupled measure-valued mu-arm is 16 (mu - k)^2 Var(W) / (2 pi): it beats
#   pathwise for |k - mu| < 1.9 (and is exactly 0 at k = mu) and loses to it, and to
#   the uncoupled version, farther out.
# * exp(-k x^2): k log-spaced over [0.01, 30]. For small k the cost is nearly
#   1 - k x^2: pathwise and measure-valued beat the score function by orders of
#   magnitude. For large k it is a narrow bump with slopes of order sqrt(k): the
#   pathwise variance grows and falls behind the score function (with or without
#   baseline) from k of order 1 on, and for sigma the plain score function overtakes
#   the oracle baseline (b = E[f] is not the variance-minimizing constant).
# * cos(k x): k in [0.25, 5] in steps of about 0.4: the pathwise variance grows like
#   k^2 and crosses the (bounded) score-function ones near k = 1; coupled and
#   uncoupled measure-valued estimators swap places several times.
#   k = 0 (a constant cost, zero gradient and zero variance for all) is left out.
COSTS = {
  "square": Cost(
    "square",
    "(x-k)^2",
    lambda x, k, xp: (x - k) ** 2,
    lambda x, k, xp: 2.0 * (x - k),
    lambda mu, sigma, k: (mu - k) ** 2 + sigma**2,
    lambda mu, sigma, k: (2.0 * (mu - k), 2.0 * sigma + 0.0 * k),
    tuple(float(k) for k in np.arange(-3.0, 5.01, 0.5)),
    (-1.0, 1.0, 3.0),
  ),
  "gauss": Cost(
    "gauss",
    "exp(-k x^2)",
    lambda x, k, xp: xp.exp(-k * x**2),
    lambda x, k, xp: -2.0 * k * x * xp.exp(-k * x**2),
    _gauss_value,
    _gauss_grad,
    tuple(float(k) for k in np.geomspace(0.01, 30.0, 13).round(4)),
    (0.1, 3.0),
  ),
  "cos": Cost(
    "cos",
    "cos(k x)",
    lambda x, k, xp: xp.cos(k * x),
    lambda x, k, xp: -k * xp.sin(k * x),
    lambda mu, sigma, k: np.cos(k * mu) * np.exp(-0.5 * (k * sigma) ** 2),
    _cos_grad,
    tuple(float(k) for k in np.linspace(0.25, 5.0, 13).round(4)),
    (0.5, 3.0),
  ),
}

SEED_A, SEED_B, SEED_THETA = 2.0, 3.0, 1.0
MOHAMED_MU, MOHAMED_SIGMA = 1.0, 1.0


def seed_dist_fn(theta):
  """The seed example's ``theta -> N(a theta + b, 1)``."""
  return Normal(SEED_A * theta + SEED_B, 1.0)


def mohamed_dist_fn(params):
  """``{'mu', 'sigma'} -> N(mu, sigma^2)``."""
  return Normal(params["mu"], params["sigma"])


@dataclasses.dataclass(frozen=True)
class Problem:
  """A benchmark problem: a cost family under one Gaussian, with named parameters.

  Attributes:
    name: problem name.
    cost: the cost family.
    ks: the ``k`` values.
    mu, sigma: the Gaussian's moments at ``params``.
    params: ``(name, value)`` pairs; a single pair named ``theta`` is passed to
      ``dist_fn`` as a bare scalar, otherwise as a dict.
    dist_fn: ``params -> Normal``.
    chain: ``(name, moment, factor)`` per parameter: its gradient is ``factor`` times
      the gradient with respect to the moment (``'mu'`` or ``'sigma'``).
    family: the costs compiled into one program with this one (see :func:`_simulate`).
  """

  name: str
  cost: Cost
  ks: tuple[float, ...]
  mu: float
  sigma: float
  params: tuple[tuple[str, float], ...]
  dist_fn: Callable[[Any], Normal]
  chain: tuple[tuple[str, str, float], ...]
  family: tuple[Cost, ...]

  @property
  def param_names(self) -> tuple[str, ...]:
    return tuple(name for name, _ in self.params)

  def jax_params(self):
    if self.param_names == ("theta",):
      return jnp.float32(self.params[0][1])
    return {name: jnp.float32(v) for name, v in self.params}

  def named(self, grad) -> dict[str, Any]:
    """The estimator's gradient pytree as ``{param name: array}``."""
    if self.param_names == ("theta",):
      return {"theta": grad}
    return dict(grad)


def make_problems(quick: bool = False) -> list[Problem]:
  """The seed example followed by the three cost families of Mohamed et al."""
  seed = Problem(
    "seed",
    COSTS["square"],
    (0.0,),
    SEED_A * SEED_THETA + SEED_B,
    1.0,
    (("theta", SEED_THETA),),
    seed_dist_fn,
    (("theta", "mu", SEED_A),),
    (COSTS["square"],),
  )
  problems = [seed]
  for cost in COSTS.values():
    problems.append(
      Problem(
        cost.name,
        cost,
        cost.quick_ks if quick else cost.ks,
        MOHAMED_MU,
        MOHAMED_SIGMA,
        (("mu", MOHAMED_MU), ("sigma", MOHAMED_SIGMA)),
        mohamed_dist_fn,
        (("mu", "mu", 1.0), ("sigma", "sigma", 1.0)),
        tuple(COSTS.values()),
      )
    )
  return problems


ORACLE = "oracle"  # a baseline override: the exact E[f] at each k (traced)
MOVING_AVERAGE = "moving_average"  # a baseline override: the moving average's state


@dataclasses.dataclass(frozen=True)
class Variant:
  """A benchmark row: a registry estimator with keyword overrides.

  Attributes:
    entry: the name in :data:`gradest.ESTIMATORS`.
    label: for the plots and the JSON file.
    overrides: keyword arguments passed on top of the entry's options; the baselines
      ``ORACLE`` and ``MOVING_AVERAGE`` are filled in by :func:`_simulate`.
  """

  entry: str
  label: str
  overrides: tuple[tuple[str, Any], ...] = ()


# Every registry estimator for Gaussians (see test_benchmark_variance.py), with the
# score function's baseline and the measure-valued coupling as variants.
VARIANTS = {
  "score": Variant("score_function", "score function"),
  "score_oracle": Variant(
    "score_function", "score fn, oracle constant baseline b=E[f]", (("baseline", ORACLE),)
  ),
  "score_loo": Variant("reinforce_loo", "score fn, leave-one-out baseline"),
  "score_ma": Variant(
    "score_function", "score fn, moving-average baseline", (("baseline", MOVING_AVERAGE),)
  ),
  "pathwise": Variant("pathwise", "pathwise"),
  "mv_coupled": Variant("measure_valued", "measure-valued, coupled"),
  "mv_uncoupled": Variant("measure_valued", "measure-valued, uncoupled", (("coupling", False),)),
}
ESTIMATORS = {name: v.label for name, v in VARIANTS.items()}

# --------------------------------------------------------------------------------------
# Exact moments by quadrature (numpy, float64).
# --------------------------------------------------------------------------------------

_SQRT_2PI = math.sqrt(2.0 * math.pi)


def _simpson(a: float, b: float, n: int) -> tuple[np.ndarray, np.ndarray]:
  """Nodes and weights of composite Simpson's rule with ``n`` (odd) nodes on [a, b]."""
  if n % 2 == 0:
    n += 1
  x = np.linspace(a, b, n)
  w = np.ones(n)
  w[1:-1:2] = 4.0
  w[2:-1:2] = 2.0
  return x, w * (x[1] - x[0]) / 3.0


def _normal_pdf(x):
  return np.exp(-0.5 * x * x) / _SQRT_2PI


@dataclasses.dataclass(frozen=True)
class Quadrature:
  """Grid sizes of the quadrature rules.

  ``tail`` bounds the standardized variable (every density is below ``1e-30`` past
  it, and the costs grow at most polynomially). ``points`` is the number of nodes on
  ``[-tail, tail]`` for the Gaussian and double-sided Maxwell integrals (and on
  ``[0, tail]`` for the Rayleigh ones); the coupled scale estimator needs a
  two-dimensional rule over ``(M, U)``, with ``points_2d`` nodes for ``M`` and
  ``points_u`` for ``U``. The defaults resolve the largest ``k`` of the default run
  (``cos(5x)``, whose squared integrands oscillate at frequency 10 in ``x`` and up to
  ``10 |M|`` in ``U``, and the bump ``exp(-30 x^2)`` of width 0.13) to a relative
  error below 1e-9: the tests compare them with grids twice as fine.
  """

  tail: float = 12.0
  points: int = 12001
  points_2d: int = 2401
  points_u: int = 801


def _moments_iid(g, w, scale=None):
  """``(E[g], E[g^2] - E[g]^2)`` over the last axis with quadrature weights ``w``.

  A variance below ``1e-12 * scale`` (default ``E[g^2]``; for a difference of two
  terms, their second moments) is float64 cancellation of an exact zero, and is 0.
  """
  m1 = g @ w
  m2 = (g * g) @ w
  var = m2 - m1**2
  return m1, np.where(var <= 1e-12 * (m2 if scale is None else scale), 0.0, var)


def _leave_one_out_variance(f, s, w, n):
  r"""``N Var`` of the leave-one-out score-function estimator (a U-statistic).

  With :math:`b_i = \frac{1}{N-1}\sum_{j\ne i} f_j`,

  .. math::
    \hat g = \frac1N\sum_i (f_i - b_i) s_i = \binom N2^{-1} \sum_{i<j} h(i, j),
    \qquad h(a, b) = \tfrac12 (f_a - f_b)(s_a - s_b),

  and by Hoeffding (1948)
  :math:`\mathrm{Var}\,\hat g = \frac{2}{N(N-1)}\big(2(N-2)\zeta_1 + \zeta_2\big)` with
  :math:`\zeta_1 = \mathrm{Var}\,\mathbb E[h(a,b)\mid a] =
  \mathrm{Var}((f-\mathbb E f)s)/4` and :math:`\zeta_2 = \mathrm{Var}\,h =
  \mathbb E[h^2] - (\mathbb E fs)^2`, where (using :math:`\mathbb E s = 0`)
  :math:`4\,\mathbb E[h^2] = 2\mathbb E[f^2s^2] + 2\mathbb E[f^2]\mathbb E[s^2]
  - 4\mathbb E[f]\mathbb E[fs^2] + 4(\mathbb E fs)^2`.
  """
  ef, ef2, es2 = f @ w, (f * f) @ w, (s * s) @ w
  efs, efs2, ef2s2 = (f * s) @ w, (f * s * s) @ w, (f * f * s * s) @ w
  zeta1 = (((f - ef[..., None]) * s) ** 2 @ w - efs**2) / 4.0
  eh2 = (2.0 * ef2s2 + 2.0 * ef2 * es2 - 4.0 * ef * efs2 + 4.0 * efs**2) / 4.0
  zeta2 = eh2 - efs**2
  return 2.0 * (2.0 * (n - 2) * zeta1 + zeta2) / (n - 1)


def exact_moments(
  cost: Cost,
  mu: float,
  sigma: float,
  ks: Sequence[float],
  num_samples: int,
  decay: float,
  quad: Quadrature = Quadrature(),
) -> dict[tuple[str, str], tuple[np.ndarray, np.ndarray]]:
  """Exact mean and ``N Var`` of every estimator, for the gradients wrt ``mu`` and ``sigma``.

  Args:
    cost: the cost family.
    mu, sigma: the Gaussian.
    ks: the ``k`` values (the results have shape ``(len(ks),)``).
    num_samples: ``N`` (the leave-one-out and moving-average variances depend on it).
    decay: the moving average's decay.
    quad: the quadrature grids.

  Returns:
    ``{(estimator, moment): (mean, n_var)}`` with ``moment`` in ``('mu', 'sigma')``.
  """
  k = np.asarray(ks, np.float64)[:, None]
  f_at = lambda x: cost.fn(x, k, np)  # noqa: E731
  eps, w_simpson = _simpson(-quad.tail, quad.tail, quad.points)
  w_normal = w_simpson * _normal_pdf(eps)
  w_maxwell = w_simpson * eps**2 * _normal_pdf(eps)
  ray, w_simpson_r = _simpson(0.0, quad.tail, quad.points)
  w_rayleigh = w_simpson_r * ray * np.exp(-0.5 * ray**2)

  x = mu + sigma * eps
  f = f_at(x)
  scores = {"mu": eps / sigma, "sigma": (eps**2 - 1.0) / sigma}
  ef, varf = _moments_iid(f, w_normal)
  df = cost.dfn(x, k, np)
  out = {}
  for moment, s in scores.items():
    out[("score", moment)] = _moments_iid(f * s, w_normal)
    mean, var_oracle = _moments_iid((f - ef[:, None]) * s, w_normal)
    out[("score_oracle", moment)] = (mean, var_oracle)
    out[("score_loo", moment)] = (mean, _leave_one_out_variance(f, s, w_normal, num_samples))
    es2 = (s * s) @ w_normal
    ma_extra = (1.0 - decay) / (1.0 + decay) * varf / num_samples * es2
    out[("score_ma", moment)] = (mean, var_oracle + ma_extra)
  out[("pathwise", "mu")] = _moments_iid(df, w_normal)
  out[("pathwise", "sigma")] = _moments_iid(df * eps, w_normal)

  # Measure-valued, mean: (f(mu + sigma W) - f(mu - sigma W')) / (sigma sqrt(2 pi)),
  # W, W' ~ Rayleigh(1); coupled: W' = W.
  f_pos, f_neg = f_at(mu + sigma * ray), f_at(mu - sigma * ray)
  c = 1.0 / (sigma * _SQRT_2PI)
  arms = (c * f_pos) ** 2 @ w_rayleigh + (c * f_neg) ** 2 @ w_rayleigh
  out[("mv_coupled", "mu")] = _moments_iid(c * (f_pos - f_neg), w_rayleigh, arms)
  e_pos, v_pos = _moments_iid(c * f_pos, w_rayleigh)
  e_neg, v_neg = _moments_iid(c * f_neg, w_rayleigh)
  out[("mv_uncoupled", "mu")] = (e_pos - e_neg, v_pos + v_neg)
  # Measure-valued, scale: (f(mu + sigma M) - f(mu + sigma Z)) / sigma with M double-sided
  # Maxwell and Z ~ N(0, 1); coupled: Z = U M, U ~ Uniform(0, 1).
  e_max, v_max = _moments_iid(f / sigma, w_maxwell)
  out[("mv_uncoupled", "sigma")] = (e_max - ef / sigma, v_max + varf / sigma**2)
  m, w_m = _simpson(-quad.tail, quad.tail, quad.points_2d)
  w_m = w_m * m**2 * _normal_pdf(m)
  u, w_u = _simpson(0.0, 1.0, quad.points_u)
  mean_c, second_c, arms = [], [], []
  for kk in k[:, 0]:  # one (M, U) grid at a time keeps memory at points_2d * points_u
    fm = cost.fn(mu + sigma * m, kk, np)
    fum = cost.fn(mu + sigma * np.outer(m, u), kk, np)
    a, b = fum @ w_u, (fum * fum) @ w_u  # E_U f(mu + sigma U m), E_U f(...)^2
    mean_c.append(((fm - a) @ w_m) / sigma)
    second_c.append(((fm * fm - 2.0 * fm * a + b) @ w_m) / sigma**2)
    arms.append(((fm * fm + b) @ w_m) / sigma**2)
  mean_c, var_c = np.array(mean_c), np.array(second_c) - np.array(mean_c) ** 2
  var_c = np.where(var_c <= 1e-12 * np.array(arms), 0.0, var_c)
  out[("mv_coupled", "sigma")] = (mean_c, var_c)
  return out


def check_exact_means(problem: Problem, moments, rtol: float = 1e-7) -> None:
  """Raises if a quadrature mean misses the closed-form gradient (an unresolved grid)."""
  g_mu, g_sigma = problem.cost.grad(problem.mu, problem.sigma, np.asarray(problem.ks))
  closed = {"mu": np.asarray(g_mu), "sigma": np.asarray(g_sigma)}
  for (estimator, moment), (mean, _) in moments.items():
    scale = 1.0 + np.abs(closed[moment])
    err = np.max(np.abs(mean - closed[moment]) / scale)
    if not err < rtol:
      raise RuntimeError(
        f"quadrature not resolved for {problem.name}/{estimator}/{moment}: relative error "
        f"{err:.2e} against the closed form; refine Quadrature."
      )


# --------------------------------------------------------------------------------------
# Simulation (JAX).
# --------------------------------------------------------------------------------------


def _simulate(
  dist_fn, params, costs, cost_index, ks, oracle_baselines, keys, burn_keys, *, num_samples, decay
):
  """All estimators, vmapped over ``k`` and the repetitions.

  ``costs`` (static) are compiled into one program and ``cost_index`` (traced) picks
  one with ``lax.switch``, so the cost families, like the ``k`` values, share one
  compilation.

  Returns:
    ``{estimator: gradient pytree}`` with leaves of shape ``(len(ks), len(keys))``.
  """
  n = num_samples

  def estimate(name, f, key, oracle, average=None):
    """Variant ``name`` through its registry entry (``average``: the moving average)."""
    variant = VARIANTS[name]
    kwargs = dict(variant.overrides)
    if kwargs.get("baseline") == ORACLE:
      kwargs["baseline"] = oracle
    elif kwargs.get("baseline") == MOVING_AVERAGE:
      kwargs["baseline"] = average
    entry = gradest.ESTIMATORS[variant.entry]
    return entry.estimate(f, dist_fn, params, key, n, return_per_sample=False, **kwargs)

  averaged = [v for v, spec in VARIANTS.items() if ("baseline", MOVING_AVERAGE) in spec.overrides]
  independent = [v for v in VARIANTS if v not in averaged]

  def per_k(k, oracle):
    branches = [functools.partial(c.fn, k=k, xp=jnp) for c in costs]
    f = lambda x: jax.lax.switch(cost_index, branches, x)  # noqa: E731

    def one(key):
      return {name: estimate(name, f, key, oracle).grad for name in independent}

    out = jax.vmap(one)(keys)
    ma = gradest.moving_average_baseline(decay)

    for name in averaged:

      def step(state, key, name=name):
        est = estimate(name, f, key, oracle, state.value)
        return ma.update(state, est.values), est.grad

      # One scan over the burn-in and the repetitions; the burn-in's estimates are dropped.
      _, grads = jax.lax.scan(step, ma.init(), jnp.concatenate([burn_keys, keys]))
      out[name] = jax.tree.map(lambda g: g[burn_keys.shape[0] :], grads)
    return out

  return jax.vmap(per_k)(ks, oracle_baselines)


# Compilation, not execution, dominates this benchmark on a CPU: XLA's backend
# optimization level 0 halves the compile time for about twice the (sub-second) run time.
_simulate_jit = jax.jit(
  _simulate,
  static_argnames=("dist_fn", "costs", "num_samples", "decay"),
  compiler_options={"xla_backend_optimization_level": 0},
)


def _first_rows(x, num: int) -> np.ndarray:
  return np.asarray(x)[:num]


def _sample_family(indexed, problems, root, num_samples, repeats, decay, burn_in):
  """Runs :func:`_simulate` for problems of one family; ``{name: draws}`` as numpy.

  Problem ``i`` draws from ``fold_in(root, i)``. The ``k`` values are padded to the
  longest range of the family, so that all of its problems share one compilation.
  """
  out = {}
  for index, problem in indexed:
    rep_key, burn_key = jax.random.split(jax.random.fold_in(root, index))
    num_k = len(problem.ks)
    width = max(len(p.ks) for p in problems if p.family == problem.family)
    ks = np.pad(np.asarray(problem.ks, np.float64), (0, width - num_k), mode="edge")
    oracle = np.broadcast_to(problem.cost.value(problem.mu, problem.sigma, ks), ks.shape)
    draws = _simulate_jit(
      problem.dist_fn,
      problem.jax_params(),
      problem.family,
      jnp.int32(problem.family.index(problem.cost)),
      jnp.asarray(ks, jnp.float32),
      jnp.asarray(oracle, jnp.float32),
      jax.random.split(rep_key, repeats),
      jax.random.split(burn_key, burn_in),
      num_samples=num_samples,
      decay=decay,
    )
    out[problem.name] = jax.tree.map(functools.partial(_first_rows, num=num_k), draws)
  return out


def burn_in_steps(decay: float, tol: float = 1e-4) -> int:
  """Steps after which the moving average's start weighs less than ``tol``."""
  if decay == 0.0:
    return 1
  return max(1, math.ceil(math.log(tol) / math.log(decay)))


# --------------------------------------------------------------------------------------
# Report.
# --------------------------------------------------------------------------------------

COLUMNS = (
  "problem",
  "cost",
  "k",
  "param",
  "estimator",
  "mean",
  "mean_se",
  "exact_grad",
  "bias_over_se",
  "n_var",
  "n_var_se",
  "exact_n_var",
  "exact_kind",
  "ratio",
)


def _rows(problem, draws, moments, num_samples, repeats):
  """One row per (estimator, k, parameter)."""
  rows = []
  g_mu, g_sigma = problem.cost.grad(problem.mu, problem.sigma, np.asarray(problem.ks))
  num_k = len(problem.ks)
  closed = {"mu": np.broadcast_to(g_mu, num_k), "sigma": np.broadcast_to(g_sigma, num_k)}
  for estimator in ESTIMATORS:
    grads = problem.named(draws[estimator])
    for name, moment, factor in problem.chain:
      est = np.asarray(grads[name], np.float64)  # (K, R)
      _, exact_var = moments[(estimator, moment)]
      exact_grad = factor * closed[moment]
      exact_var = factor**2 * exact_var
      mean = est.mean(axis=1)
      centred = est - mean[:, None]
      var = (centred**2).sum(axis=1) / (repeats - 1)
      m4 = (centred**4).mean(axis=1)
      mean_se = np.sqrt(var / repeats)
      var_se = np.sqrt(np.maximum(m4 - var**2, 0.0) / repeats)
      kind = {"score_loo": "U-statistic", "score_ma": "stationary approx."}.get(
        estimator, "quadrature"
      )
      for i, k in enumerate(problem.ks):
        err = mean[i] - exact_grad[i]
        rows.append(
          {
            "problem": problem.name,
            "cost": problem.cost.label,
            "k": float(k),
            "param": name,
            "estimator": estimator,
            "mean": float(mean[i]),
            "mean_se": float(mean_se[i]),
            "exact_grad": float(exact_grad[i]),
            "bias_over_se": float(err / mean_se[i]) if mean_se[i] > 0 else 0.0,
            "n_var": float(num_samples * var[i]),
            "n_var_se": float(num_samples * var_se[i]),
            "exact_n_var": float(exact_var[i]),
            "exact_kind": kind,
            "ratio": float(num_samples * var[i] / exact_var[i]) if exact_var[i] > 0 else None,
          }
        )
  return rows


ROW_TABLE = (
  Column("estimator", "estimator"),
  Column("cost", "cost"),
  Column("k", "k", ".4g"),
  Column("param", "param"),
  Column("mean", "mean", ".4g"),
  Column("exact", "exact_grad", ".4g"),
  Column("bias/se", "bias_over_se", ".2f"),
  Column("N*var", "n_var", ".4g"),
  Column(
    "exact N*var",
    lambda r: ("~" if r["exact_kind"] == "stationary approx." else "") + f"{r['exact_n_var']:.4g}",
    align=">",
  ),
  Column("ratio", "ratio", ".3f"),
  Column("rank", "rank", "d"),
)


def format_table(rows: Sequence[dict]) -> str:
  """A fixed-width text table, grouped by problem, parameter and ``k``.

  ``rank`` orders the estimators of a group by their exact variance (1 = lowest).
  """
  problems = list(dict.fromkeys(r["problem"] for r in rows))
  estimators = list(ESTIMATORS)
  groups: dict[tuple, list[dict]] = {}
  for r in rows:
    groups.setdefault((problems.index(r["problem"]), r["param"], r["k"]), []).append(r)
  lines: list[dict | str] = []
  for group in sorted(groups):
    members = sorted(groups[group], key=lambda r: estimators.index(r["estimator"]))
    exact = sorted(r["exact_n_var"] for r in members)
    lines.extend(dict(r, rank=exact.index(r["exact_n_var"]) + 1) for r in members)
    lines.append("")
  lines.append("N*var: N times the variance of the N-sample estimate over the repetitions.")
  lines.append("score_oracle: constant baseline b = E[f] (exact, an oracle).")
  lines.append("~: stationary approximation (moving-average baseline).")
  return format_table_of(lines, ROW_TABLE)


SUMMARY_LEGEND = (
  "worst |bias/se|: the largest |mean - exact| / standard error over k (unbiased: below ~3).",
  "exact N*var: N times the variance of the N-sample mean (by quadrature): the variance of",
  "  one sample's estimate. emp/exact: the measured over the exact variance (near 1).",
  "lowest: for how many k the estimator's exact variance is the lowest of all.",
  "score_oracle: baseline b = E[f] (an oracle); score_loo: leave-one-out baseline;",
  "  score_ma: moving-average baseline; mv_*: measure-valued. --full prints every row.",
)
SUMMARY_TABLE = (
  Column("problem", "problem"),
  Column("param", "param"),
  Column("estimator", "estimator"),
  Column("worst |bias/se|", "worst", ".2f"),
  Column("exact N*var (min..max)", "exact", align=">"),
  Column("emp/exact", "ratio", align=">"),
  Column("lowest", "lowest", align=">"),
)


def format_summary(rows: Sequence[dict]) -> str:
  """One line per problem, parameter and estimator, then each problem's lowest variance.

  The columns: the worst ``|bias/se|`` over the problem's ``k`` values (an unbiased
  estimator stays within about 3 at these sample sizes), the range over ``k`` of the
  exact ``N Var`` (the variance of a single-sample estimate), the range of the empirical
  over the exact variance (near 1 when the measurement agrees with quadrature), and for
  how many ``k`` the estimator has the lowest exact variance of all.
  """
  lines: list[dict | str] = []
  problems = list(dict.fromkeys(r["problem"] for r in rows))
  for problem in problems:
    sel = [r for r in rows if r["problem"] == problem]
    best: dict[str, int] = {}
    for param in dict.fromkeys(r["param"] for r in sel):
      group = [r for r in sel if r["param"] == param]
      ks = sorted(set(r["k"] for r in group))
      winners = [
        min((r for r in group if r["k"] == k), key=lambda r: r["exact_n_var"])["estimator"]
        for k in ks
      ]
      for winner in winners:
        best[winner] = best.get(winner, 0) + 1
      for estimator in ESTIMATORS:
        mine = [r for r in group if r["estimator"] == estimator]
        if not mine:
          continue
        exact = [r["exact_n_var"] for r in mine]
        ratios = [r["ratio"] for r in mine if r["ratio"] is not None]
        lines.append(
          {
            "problem": problem,
            "param": param,
            "estimator": estimator,
            "worst": max(abs(r["bias_over_se"]) for r in mine),
            "exact": f"{min(exact):.3g}..{max(exact):.3g}",
            "ratio": f"{min(ratios):.2f}..{max(ratios):.2f}" if ratios else None,
            "lowest": f"{winners.count(estimator)}/{len(ks)}",
          }
        )
    leader = max(best, key=best.get)
    lines.append(
      f"{problem}: lowest variance most often: {leader} ({best[leader]} of "
      f"{sum(best.values())} settings of k and parameter)"
    )
    lines.append("")
  lines.extend(SUMMARY_LEGEND)
  return format_table_of(lines, SUMMARY_TABLE)


def plot_cost(rows: Sequence[dict], problem: Problem, config: dict, path: str) -> None:
  """Variance against ``k``: exact values as lines, empirical ones as hollow markers."""
  plt = pyplot()

  styles = series_styles(list(ESTIMATORS))
  names = problem.param_names
  fig, axes = plt.subplots(
    1, len(names), figsize=(6 * len(names), 5.6), squeeze=False, layout="constrained"
  )
  for ax, name in zip(axes[0], names, strict=True):
    zeros = []
    for estimator, label in ESTIMATORS.items():
      sel = [r for r in rows if r["estimator"] == estimator and r["param"] == name]
      ks = np.array([r["k"] for r in sel])
      exact = np.array([r["exact_n_var"] for r in sel])
      emp = np.array([r["n_var"] for r in sel])
      style = styles[estimator]
      zero = exact <= 0
      plot_series(ax, ks, np.where(zero, np.nan, exact), style, label=label)
      ax.plot(
        ks,
        np.where(zero, np.nan, emp),
        ls="",
        marker=style["marker"],
        color=style["color"],
        ms=3.5,
        mfc="none",
        zorder=style["zorder"],
      )
      zeros.extend((kk, style["color"]) for kk in ks[zero])
    ax.set_yscale("log")
    if problem.cost.name == "gauss":
      ax.set_xscale("log")
    # An exact zero (e.g. the coupled mean arm for (x - k)^2 at k = mu) has no place on
    # a log axis: mark it with a triangle on the bottom edge.
    bottom = ax.get_ylim()[0]
    ax.autoscale(False)
    for kk, color in zeros:
      ax.plot([kk], [bottom], "v", color=color, ms=8, clip_on=False)
    ax.set_xlabel("k (the cost's parameter)")
    ax.set_ylabel("N Var (single-sample-equivalent variance)")
    ax.set_title(f"f(x) = {problem.cost.label}: gradient wrt {name}")
    ax.grid(True, which="both", alpha=0.3)
  handles, labels = axes[0][0].get_legend_handles_labels()
  fig.legend(handles, labels, loc="outside lower center", ncol=4, fontsize=8)
  fig.suptitle(
    f"x ~ N({problem.mu:g}, {problem.sigma:g}^2); lines: exact (thinner lines drawn on top), "
    f"hollow markers: {config['repeats']} repetitions of N={config['samples']}; "
    "triangles: exact zero",
    fontsize=10,
  )
  save_figure(fig, path)


def plot_seed(rows: Sequence[dict], config: dict, path: str) -> None:
  """Bar chart of the seed example's variances, empirical against exact, values printed."""
  plt = pyplot()

  sel = [r for r in rows if r["problem"] == "seed"]
  x = np.arange(len(sel))
  fig, ax = plt.subplots(figsize=(9, 4.8))
  exact = ax.bar(x - 0.2, [r["exact_n_var"] for r in sel], 0.4, label="exact (quadrature)")
  emp = ax.bar(x + 0.2, [r["n_var"] for r in sel], 0.4, label="empirical", hatch="//")
  annotate_bars(ax, exact)
  annotate_bars(ax, emp)
  ax.set_xticks(x, [r["estimator"] for r in sel], rotation=30, ha="right")
  ax.set_yscale("log")
  ax.set_xlabel("estimator")
  ax.set_ylabel("N Var (single-sample-equivalent variance)")
  ax.set_title(
    f"grad wrt theta of E[z^2], z ~ N({SEED_A:g} theta + {SEED_B:g}, 1), theta={SEED_THETA:g} "
    f"(exact 20); N={config['samples']}, R={config['repeats']}",
    fontsize=10,
  )
  ax.legend()
  ax.grid(True, axis="y", which="both", alpha=0.3)
  save_figure(fig, path)


# --------------------------------------------------------------------------------------
# Command line.
# --------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(
    prog="python -m benchmarks.variance",
    description="Variance of gradest's gradient estimators against quadrature.",
  )
  parser.add_argument("--samples", type=integer, default=None, help="N per estimate (100)")
  parser.add_argument("--repeats", type=integer, default=None, help="repetitions R (1000)")
  parser.add_argument("--seed", type=integer, default=0, help="PRNG seed")
  parser.add_argument("--decay", type=float, default=0.9, help="moving-average decay")
  parser.add_argument("--out", default=os.path.join("bench_out", "variance"), help="output dir")
  parser.add_argument("--quick", action="store_true", help="few k values, N=20, R=400 (for tests)")
  parser.add_argument("--no-plots", action="store_true", help="skip the PNG files")
  parser.add_argument("--quiet", action="store_true", help="no table, no progress bar")
  parser.add_argument(
    "--full", action="store_true", help="print every row (the CSV always has them all)"
  )
  args = parser.parse_args(argv)
  if args.samples is None:
    args.samples = 20 if args.quick else 100
  if args.repeats is None:
    args.repeats = 400 if args.quick else 1000
  if args.samples < 2:
    parser.error("--samples must be >= 2 (the leave-one-out baseline needs two samples)")
  if args.repeats < 2:
    parser.error("--repeats must be >= 2")
  if not 0.0 <= args.decay < 1.0:
    parser.error("--decay must be in [0, 1)")
  return args


def main(argv: Sequence[str] | None = None) -> dict:
  """Runs the benchmark; returns ``{'config': ..., 'rows': [...]}`` (also written to JSON)."""
  args = parse_args(argv)
  os.makedirs(args.out, exist_ok=True)
  problems = make_problems(args.quick)
  config = {
    "samples": args.samples,
    "repeats": args.repeats,
    "seed": args.seed,
    "decay": args.decay,
    "burn_in": burn_in_steps(args.decay),
    "quick": args.quick,
    "backend": jax.default_backend(),
  }
  root = jax.random.key(args.seed)
  families = list(dict.fromkeys(p.family for p in problems))
  bar = tqdm(
    total=len(problems) + len(families), desc="variance", disable=args.quiet, file=sys.stderr
  )
  clock = Stopwatch()
  # One thread per family of problems (one XLA program each): on a multi-core CPU the
  # compilations overlap with each other and with the quadrature on this thread.
  with concurrent.futures.ThreadPoolExecutor(max_workers=len(families)) as pool:
    futures = [
      pool.submit(
        _sample_family,
        [(i, p) for i, p in enumerate(problems) if p.family == family],
        problems,
        root,
        args.samples,
        args.repeats,
        args.decay,
        config["burn_in"],
      )
      for family in families
    ]
    moments = {}
    for problem in problems:
      bar.set_postfix_str(f"quadrature: {problem.name}")
      moments[problem.name] = exact_moments(
        problem.cost, problem.mu, problem.sigma, problem.ks, args.samples, args.decay
      )
      check_exact_means(problem, moments[problem.name])
      bar.update()
    bar.set_postfix_str("sampling")
    draws = {}
    for future in concurrent.futures.as_completed(futures):
      draws.update(future.result())
      bar.update()
  rows = []
  for problem in problems:
    rows.extend(
      _rows(problem, draws[problem.name], moments[problem.name], args.samples, args.repeats)
    )
  bar.close()
  config["seconds"] = round(clock(), 2)

  write_csv(rows, os.path.join(args.out, "variance.csv"), COLUMNS)
  write_json(
    {"config": config, "estimators": ESTIMATORS, "rows": rows},
    os.path.join(args.out, "variance.json"),
  )
  if not args.no_plots:
    for problem in problems:
      sel = [r for r in rows if r["problem"] == problem.name]
      if problem.name == "seed":
        plot_seed(sel, config, os.path.join(args.out, "seed.png"))
      else:
        plot_cost(sel, problem, config, os.path.join(args.out, f"{problem.name}.png"))
  if not args.quiet:
    print(format_table(rows) if args.full else format_summary(rows))
    print(
      f"\nN={args.samples}, R={args.repeats}, seed={args.seed}, decay={args.decay} "
      f"(burn-in {config['burn_in']}); {config['seconds']} s; written to {args.out}"
    )
  return {"config": config, "rows": rows}


if __name__ == "__main__":
  main()
