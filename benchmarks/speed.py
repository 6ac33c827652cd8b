r"""Wall-clock speed of gradest's estimators against hand-written references and optax.

Run with ``python -m benchmarks.speed`` (``--help`` lists the flags).

Problems (:data:`COSTS`, chosen with ``--costs`` and ``--families``; ``cos``,
``squares`` and ``bits`` run by default) of two families.

**Continuous**: a ``D``-dimensional diagonal Gaussian, ``dist_fn = lambda p:
gradest.distributions.Normal(p["mu"], sigma)``, and a cost applied to one sample:

* ``cos``: :math:`f(x) = \sum_d \cos x_d`, parameters ``{"mu": (D,), "log_sigma":
  (D,)}`` and ``sigma = exp(log_sigma)``;
* ``squares``: :math:`f(x) = \sum_d x_d^2`, the mean only, ``{"mu": (D,)}``, with
  ``sigma`` fixed at 0.5 (:data:`FIXED_SIGMA`).

Both costs are sums over coordinates; they differ in what optax's forward-mode
jacobians pay for (see "Known results"). The cells are ``D`` in ``{10, 1000,
100000}`` with ``N`` in ``{100, 10000}`` samples, and ``D = N = 1000`` (``--cells``,
or ``--dims`` with ``--samples``, choose others).

Estimators: the score function (plain, and with the leave-one-out baseline), the
pathwise estimator and (``cos`` only) the coupled measure-valued estimator, each in
both gradest modes: ``return_per_sample=True`` (``N x D`` per-sample gradients per
leaf) and ``return_per_sample=False`` (the mean only).

**Discrete**: ``dist_fn = gradest.distributions.Bernoulli`` and ``params`` the ``(D,)``
logits (the gradient is with respect to the logits), with a cost of one 0/1 sample:

* ``bits``: :math:`f(b) = \sum_d (b_d - t)^2` with :math:`t = 0.45`
  (:data:`BIT_TARGET`);
* ``bits_coupled`` (not run by default): :math:`f(b) = (\sum_d (b_d - t))^2 / D`,
  not separable, so ``f'(b)`` couples every coordinate.

Cells: ``D`` in ``{10, 1000, 100000}`` with ``N`` in ``{100, 1000}``
(:data:`DISCRETE_CELLS`; ``--cells``, ``--dims`` and ``--samples`` set both families'
cells). Estimators, from ``gradest.ESTIMATORS`` with their entries' options, in both
modes: ``disarm`` and ``arm`` (``N`` evaluations of ``f`` in ``N/2`` antithetic pairs,
``N/2`` per-sample rows), ``reinforce_loo`` (``score_function_grad`` with
``baseline="leave_one_out"``) and ``straight_through`` (temperature 0.5,
:data:`ST_TEMPERATURE`). optax has no discrete estimators, so only the reference is timed.

Each gradest call is timed against

1. **a hand-written reference**: the same estimator written directly in
   ``jax.numpy`` with its closed-form per-sample terms (score:
   :math:`(f-b)(x-\mu)/\sigma^2` for ``mu`` and :math:`(f-b)((x-\mu)^2/\sigma^2-1)` for
   ``log_sigma``; pathwise: :math:`f'(x)` and :math:`f'(x)\,\varepsilon\sigma`;
   measure-valued: the same ``4 N D`` evaluations of ``f``, on inputs built with a
   mask; DisARM: :math:`\tfrac12(f(b) - f(\tilde b))(b - \tilde b)\,\sigma(|\ell|)`; ARM:
   :math:`(f(b) - f(\tilde b))(\sigma(L) - \tfrac12)`; REINFORCE-LOO:
   :math:`(f - \bar f_{-i})(b - \sigma(\ell))`; straight-through: :math:`f'(b)` times
   the derivative of :math:`\sigma((\ell + L)/\tau)`), drawing the **same samples from
   the same keys** as gradest (``jax.random.split(key, rows)``, one key per sample or
   pair; the discrete ones split each into a noise key and a conditional key and draw
   logistic noise ``L`` from the first with ``gradest.logistic_noise``, the score
   function draws ``Bernoulli(logits).sample`` from each). Its sums over samples are
   contractions (see :func:`sample_mean`). It returns the same outputs (mean
   gradient, per-sample gradients when asked, the ``N`` costs), so the two must agree
   to float32 rounding: every cell checks this and reports the largest relative
   difference (``max_rel_err``); a cell above ``--check-rtol`` is marked ``MISMATCH``
   and makes the command exit with status 1;
2. **optax 0.2.6's** ``optax.monte_carlo`` (``score_function_jacobians``,
   ``pathwise_jacobians``, ``measure_valued_jacobians`` with
   ``optax._src.utils.multi_normal``; for ``squares`` a builder with the fixed
   log-scale), when it is importable, in the per-sample rows only: optax always forms
   the ``N x D`` jacobians and has no leave-one-out baseline. It draws its own samples
   (one ``normal`` call), so its values are not compared.

Timing (:mod:`benchmarks.common`): every function is jitted and compiled once, ahead
of time (compilation is not timed); the compiled executables are then run
``--repeats`` times each (fewer, but at least 3, when a cell would take more than
``--cell-budget`` seconds), interleaved in a rotating order so that machine noise hits
all implementations alike. Each measurement calls the function enough times (chosen
for each function from its first call) to last at least ``--min-time`` seconds and
blocks on the result (``jax.block_until_ready``). The time per call is the minimum
over the repeats (``--statistic``; noise from other processes only adds time, so the
minimum is the most repeatable figure on a shared machine); medians are written too.
Ratios (``gradest/reference``, target at most 1.1, and ``optax/gradest``, target
above 1) compare times measured in the same run. At ``D = 10`` a call takes about
0.1 ms and is dominated by dispatch, so ratios there move by +-20% between runs.

Skipped cells (each with its reason in the table and the outputs):

* per-sample cells whose output has more than ``--per-sample-max-elements``
  (default ``1e8``) elements per leaf (``N = 10000, D = 100000``);
* measure-valued cells with ``N D^2 > --mvd-max-work`` (default ``1e7``): the estimator
  evaluates an ``O(D)`` cost ``4 N D`` times, so its work is ``O(N D^2)`` for every
  implementation. Only ``D = 10`` runs by default; ``--mvd-max-work 1e8`` adds
  ``D = 1000, N = 100`` (about 3 s per call on 2 cores, 1.5 minutes more);
* optax in cells with ``N D^2 > --optax-max-work`` (default ``1e9``, so optax runs up
  to ``D = N = 1000``): ``jax.jacfwd`` pushes one tangent per parameter coordinate
  through the ``N x D`` samples, ``O(N D^2)`` work (a single call at ``D = 1000,
  N = 10000`` would take more than a minute);
* programs that need more than ``--max-gb`` (default 6) GB: checked before compiling
  from the ``N x D`` samples and noise (so the mean-mode cells with ``N = 10000,
  D = 100000``, 4 GB per array, are skipped; ``--max-gb 20`` runs them on a machine
  with the memory, at several seconds per call), then after compiling from XLA's
  ``memory_analysis()``.

Outputs (in ``--out``, default ``bench_out/speed``): ``speed.csv``, ``speed.json``
(results and the run's settings, versions and runtime) and ``speed.png`` (both
ratios per cell, log scale, with the targets).

The continuous part of the default run (``--families continuous``: 98 cells of which 76
are timed) does about 450 CPU-seconds of work, more than half of it compiling: about 4 to
8 minutes of wall time on 2 idle cores, 12.6 and 17.5 minutes on 2 cores shared with other
jobs (load average 8-14); its peak memory is about 1.6 GB. The discrete part (``bits``:
48 cells, all timed) took 7.8 minutes of wall time on 2 cores shared with other jobs
(load average 4-7), 250 s of it compiling (the ``D = 10`` programs take 3-4 s each to
compile, the larger ones about 1 s); its peak memory is about 4.2 GB (the per-sample
cells at ``D = 100000, N = 1000``, whose outputs have ``1e8`` elements). ``--quick`` (one
tiny configuration, compiled with XLA's backend optimizations off) does about 28
CPU-seconds of work (20 without the discrete cells) and is what the test-suite runs;
its times mean nothing, its correctness checks do.

Known results (jaxlib 0.10 on CPU): optax's forward-mode jacobians do ``O(N D^2)`` work
against gradest's ``O(N D)``, so ``optax/gradest`` grows with ``D``, but by how much
depends on the cost. With ``cos`` the ``D`` (or ``2D``) tangents pushed through the ``N
x D`` samples are expensive per element (the fused loops appear to recompute the sine
for every tangent); with ``squares`` a tangent is a multiply-add, and for the pathwise
estimator XLA fuses it well, so optax is only a few times slower there (2.7-4.1x at ``D
= N = 1000``, against 29-53x for the score function, and 79-122x and 184-216x for the
score function and the pathwise estimator on ``cos``; minimum times from several runs on
a 2-core machine shared with other jobs). At ``D = 100000, N = 100`` gradest's
score-function and pathwise estimators have taken 1.2-1.8x the reference's time. XLA
lowers a sum over the short leading (sample) axis of a wide array to a YNNPACK reduce
fusion that is slow for that shape; gradest's sums over samples (``jnp.mean(per_sample,
0)`` and the transposes of ``vmap``'s broadcasts under ``jax.grad``) take that path
while the reference's contractions do not. With
``XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=-reduce`` both run at the same
speed.

Discrete cells (one run on 2 shared cores, re-measured): gradest is within 1.1x of the
references from ``D = 1000`` on, and at ``D = 10`` except for the mean-only DisARM
and REINFORCE-LOO at ``N = 100``, about 3x (0.12 against 0.04 ms per call, stable over
re-measurements), about 1.1x at ``N = 1000``. Both are program-order effects of XLA's CPU
runtime, not extra work: the programs contain small ``(D,)`` computations on the logits
alone (``sigmoid(|logits|)`` multiplied into every per-sample DisARM term before the
mean; the two ``exp`` terms of the derivative of ``Bernoulli.log_prob``, written with
``log_sigmoid``) that do not depend on the samples, and the concurrency-optimized
scheduler runs them as separate concurrent tasks; with
``XLA_FLAGS=--xla_cpu_enable_concurrency_optimized_scheduler=false`` the ratios are
0.8-1.0. A reference that multiplies the mean of the DisARM terms by
``sigmoid(|logits|)`` after the sum over pairs, and a score ``b - sigmoid(logits)`` (or the
derivative of ``b * logits - softplus(logits)``), do not pay it.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import platform
import sys
import warnings
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
  compile_ahead,
  integer,
  pyplot,
  save_figure,
  time_interleaved,
  write_csv,
  write_json,
)
from benchmarks.common import format_table as format_table_of
from gradest.distributions import Bernoulli, Normal

CONTINUOUS_ESTIMATORS = ("score", "score_loo", "pathwise", "measure_valued")
# Registry names (gradest.ESTIMATORS): ARM and DisARM use N/2 antithetic pairs,
# reinforce_loo is score_function_grad with baseline="leave_one_out".
DISCRETE_ESTIMATORS = ("disarm", "arm", "reinforce_loo", "straight_through")
ESTIMATORS = CONTINUOUS_ESTIMATORS + DISCRETE_ESTIMATORS
FAMILIES = ("continuous", "discrete")
MODES = ("per_sample", "mean")
IMPLS = ("gradest", "reference", "optax")
RATIOS = ("gradest_over_reference", "optax_over_gradest")

FULL_DIMS = (10, 1000, 100_000)
FULL_SAMPLES = (100, 10_000)
# Every D with every N, and D = N = 1000 (where optax's N D^2 jacobians still fit in time).
FULL_CELLS = (*((d, n) for d in FULL_DIMS for n in FULL_SAMPLES), (1000, 1000))
# The Bernoulli problems: N x D per-sample terms stay within --per-sample-max-elements.
DISCRETE_SAMPLES = (100, 1000)
DISCRETE_CELLS = tuple((d, n) for d in FULL_DIMS for n in DISCRETE_SAMPLES)
QUICK_DIMS = (5,)
QUICK_SAMPLES = (16,)

TARGET_REFERENCE_RATIO = 1.1  # gradest / reference should be at most this.
TARGET_OPTAX_RATIO = 1.0  # optax / gradest should be above this.

# The straight-through estimator's temperature (its relaxation is sigmoid((l + L) / tau)).
ST_TEMPERATURE = 0.5
# The target of the Bernoulli costs, f(b) = sum_d (b_d - t)^2 and its coupled variant.
BIT_TARGET = 0.45

# Elements of measure-valued inputs materialized at once by the reference; the same
# budget as gradest's automatic ``coordinate_chunk_size``, so both hold the same memory.
_MVD_ELEMENT_BUDGET = 1 << 20

Array = jax.Array
Outputs = tuple[Any, Any, Any]  # (grad, per_sample or None, values or None)


# --------------------------------------------------------------------------------------
# Costs and the problem.
# --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Cost:
  """A cost of one sample, its distribution family and the parameters of its gradient.

  Attributes:
    name: its name on the command line.
    f: one sample ``(D,)`` to a scalar (what gradest and optax are given).
    batched: ``(..., D)`` to ``(...)``, ``f`` over the last axis (for the references).
    derivative: the gradient of ``f`` at each sample, ``(..., D)`` to ``(..., D)``
      (the elementwise :math:`c'(x)` for a separable :math:`f(x) = \\sum_d c(x_d)`; for
      the pathwise and straight-through references).
    params: ``("mu", "log_sigma")`` (the mean and the log-scale are parameters) or
      ``("mu",)`` (the mean only; the scale is fixed at :data:`FIXED_SIGMA`); for the
      ``discrete`` family ``("logits",)``: ``params`` is the ``(D,)`` array of logits.
    estimators: the estimators timed on it.
    label: a short description for the table.
    family: ``"continuous"`` (``dist_fn`` a diagonal :class:`Normal`) or ``"discrete"``
      (``dist_fn = Bernoulli``, ``f`` applied to a 0/1 sample).
  """

  name: str
  f: Callable[[Array], Array]
  batched: Callable[[Array], Array]
  derivative: Callable[[Array], Array]
  params: tuple[str, ...] = ("mu", "log_sigma")
  estimators: tuple[str, ...] = CONTINUOUS_ESTIMATORS
  label: str = ""
  family: str = "continuous"


def _coupled_bits_derivative(b: Array) -> Array:
  """The gradient of ``(sum_d (b_d - t))^2 / D``: the same ``2 s / D`` for every ``d``."""
  s = jnp.sum(b - BIT_TARGET, axis=-1, keepdims=True)
  return jnp.broadcast_to(2.0 * s / b.shape[-1], b.shape)


COSTS = {
  "cos": Cost(
    "cos",
    f=lambda x: jnp.sum(jnp.cos(x)),
    batched=lambda x: jnp.sum(jnp.cos(x), axis=-1),
    derivative=lambda x: -jnp.sin(x),
    label="f(x) = sum_d cos x_d, parameters mu and log_sigma",
  ),
  "squares": Cost(
    "squares",
    f=lambda x: jnp.sum(jnp.square(x)),
    batched=lambda x: jnp.sum(jnp.square(x), axis=-1),
    derivative=lambda x: 2.0 * x,
    params=("mu",),
    estimators=("score", "score_loo", "pathwise"),
    label="f(x) = sum_d x_d^2, parameter mu (sigma fixed at 0.5)",
  ),
  "quadratic": Cost(
    "quadratic",
    f=lambda x: 0.5 * jnp.sum(jnp.square(x)),
    batched=lambda x: 0.5 * jnp.sum(jnp.square(x), axis=-1),
    derivative=lambda x: x,
    label="f(x) = sum_d x_d^2 / 2, parameters mu and log_sigma",
  ),
  "bits": Cost(
    "bits",
    f=lambda b: jnp.sum(jnp.square(b - BIT_TARGET)),
    batched=lambda b: jnp.sum(jnp.square(b - BIT_TARGET), axis=-1),
    derivative=lambda b: 2.0 * (b - BIT_TARGET),
    params=("logits",),
    estimators=DISCRETE_ESTIMATORS,
    label=f"b ~ Bernoulli(sigmoid(logits)), f(b) = sum_d (b_d - {BIT_TARGET})^2, parameter logits",
    family="discrete",
  ),
  "bits_coupled": Cost(
    "bits_coupled",
    f=lambda b: jnp.square(jnp.sum(b - BIT_TARGET)) / b.shape[-1],
    batched=lambda b: jnp.square(jnp.sum(b - BIT_TARGET, axis=-1)) / b.shape[-1],
    derivative=_coupled_bits_derivative,
    params=("logits",),
    estimators=DISCRETE_ESTIMATORS,
    label=f"b ~ Bernoulli(sigmoid(logits)), f(b) = (sum_d (b_d - {BIT_TARGET}))^2 / D "
    "(not separable), parameter logits",
    family="discrete",
  ),
}
DEFAULT_COSTS = ("cos", "squares", "bits")

# The scale of the mean-only parameterization.
FIXED_SIGMA = 0.5


def _sigma(params: dict[str, Array]) -> Array:
  if "log_sigma" in params:
    return jnp.exp(params["log_sigma"])
  return jnp.full_like(params["mu"], FIXED_SIGMA)


def dist_fn(params: dict[str, Array]) -> Normal:
  """``params -> Normal(mu, sigma)``, the distribution every estimator gets.

  ``sigma = exp(log_sigma)`` when ``log_sigma`` is a parameter, else :data:`FIXED_SIGMA`.
  """
  return Normal(params["mu"], _sigma(params))


def make_params(dim: int, seed: int, names: Sequence[str] = ("mu", "log_sigma")) -> dict:
  """Deterministic parameters ``names``: ``mu ~ 0.5 N(0, 1)``, ``sigma`` around 0.5."""
  k_mu, k_sigma = jax.random.split(jax.random.key(seed + 1))
  params = {
    "mu": 0.5 * jax.random.normal(k_mu, (dim,), jnp.float32),
    "log_sigma": math.log(0.5) + 0.1 * jax.random.normal(k_sigma, (dim,), jnp.float32),
  }
  return {name: params[name] for name in names}


def make_logits(dim: int, seed: int) -> Array:
  """Deterministic Bernoulli logits ``~ N(0, 1)``, shape ``(D,)`` (the discrete ``params``)."""
  return jax.random.normal(jax.random.key(seed + 2), (dim,), jnp.float32)


def make_problem_params(cost: Cost, dim: int, seed: int) -> Any:
  """The parameters of ``cost``'s problem: a dict for a Normal, the logits for a Bernoulli."""
  if cost.family == "discrete":
    return make_logits(dim, seed)
  return make_params(dim, seed, cost.params)


def sample_mean(x: Array) -> Array:
  """Mean over the leading (sample) axis, written as a contraction with ``1/N``.

  A dot product rather than ``jnp.mean(x, axis=0)``: with jaxlib 0.10's CPU backend,
  a sum over the short leading axis of a wide array is lowered to a YNNPACK reduce
  fusion that is slow for that shape (``jnp.sum(z, 0)`` of a ``(100, 100000)`` float32
  array: about 100 ms, against 4 ms for the contraction). For tall arrays
  (``N >> D``) the fused reduce avoids materializing its input and can be faster,
  so gradest beats the reference there (``pathwise``, ``mean`` mode).
  """
  n = x.shape[0]
  return jnp.tensordot(jnp.full((n,), 1.0 / n, x.dtype), x, axes=1)


# --------------------------------------------------------------------------------------
# gradest.
# --------------------------------------------------------------------------------------


def gradest_fn(estimator: str, per_sample: bool, num_samples: int, cost: Cost):
  """``(params, key) -> (grad, per_sample, values)`` through gradest's public API.

  The discrete estimators are called through their registry entries
  (``gradest.ESTIMATORS[name].estimate``, with the entry's options, e.g. the
  leave-one-out baseline of ``reinforce_loo``) with ``dist_fn = Bernoulli``;
  straight-through gets ``temperature=ST_TEMPERATURE``.
  """
  if cost.family == "discrete":
    return _gradest_discrete_fn(estimator, per_sample, num_samples, cost)

  def fn(params, key):
    kwargs = dict(return_per_sample=per_sample)
    if estimator == "score":
      est = gradest.score_function_grad(cost.f, dist_fn, params, key, num_samples, **kwargs)
    elif estimator == "score_loo":
      est = gradest.score_function_grad(
        cost.f, dist_fn, params, key, num_samples, baseline="leave_one_out", **kwargs
      )
    elif estimator == "pathwise":
      est = gradest.pathwise_grad(cost.f, dist_fn, params, key, num_samples, **kwargs)
    elif estimator == "measure_valued":
      est = gradest.measure_valued_grad(
        cost.f, dist_fn, params, key, num_samples, coupling=True, **kwargs
      )
    else:
      raise ValueError(f"unknown estimator {estimator!r}; choose from {ESTIMATORS}.")
    return est.grad, est.per_sample, est.values

  return fn


def _gradest_discrete_fn(estimator: str, per_sample: bool, num_samples: int, cost: Cost):
  if estimator not in DISCRETE_ESTIMATORS:
    raise ValueError(f"unknown estimator {estimator!r}; choose from {DISCRETE_ESTIMATORS}.")
  entry = gradest.ESTIMATORS[estimator]
  overrides = {"temperature": ST_TEMPERATURE} if estimator == "straight_through" else {}

  def fn(logits, key):
    est = entry.estimate(
      cost.f, Bernoulli, logits, key, num_samples, return_per_sample=per_sample, **overrides
    )
    return est.grad, est.per_sample, est.values

  return fn


# --------------------------------------------------------------------------------------
# Hand-written references: the same estimators, written directly in jax.numpy, drawing
# the same samples from the same keys (one key per sample, from jax.random.split).
# --------------------------------------------------------------------------------------


def _per_sample_normals(key: Array, num_samples: int, dim: int) -> tuple[Array, Array]:
  keys = jax.random.split(key, num_samples)
  eps = jax.vmap(lambda k: jax.random.normal(k, (dim,), jnp.float32))(keys)
  return keys, eps


def _finish(g_mu: Array, g_log_sigma: Array | None, values: Array, per_sample: bool) -> Outputs:
  """Outputs from ``(N, D)`` per-sample terms (``g_log_sigma`` None: the mean only)."""
  ps = {"mu": g_mu} if g_log_sigma is None else {"mu": g_mu, "log_sigma": g_log_sigma}
  return jax.tree.map(sample_mean, ps), (ps if per_sample else None), values


def reference_score(num_samples: int, cost: Cost, per_sample: bool, loo: bool):
  n = num_samples

  scale = "log_sigma" in cost.params

  def fn(params, key):
    mu, sigma = params["mu"], _sigma(params)
    _, eps = _per_sample_normals(key, n, mu.shape[0])
    x = mu + sigma * eps
    values = cost.batched(x)
    w = values - (jnp.sum(values) - values) / (n - 1) if loo else values
    z = (x - mu) / sigma
    if per_sample:
      g_scale = w[:, None] * (z * z - 1.0) if scale else None
      return _finish(w[:, None] * z / sigma, g_scale, values, True)
    grad = {"mu": (w @ z) / (n * sigma)}
    if scale:
      grad["log_sigma"] = (w @ (z * z - 1.0)) / n
    return grad, None, values

  return fn


def reference_pathwise(num_samples: int, cost: Cost, per_sample: bool):
  n = num_samples

  scale = "log_sigma" in cost.params

  def fn(params, key):
    mu, sigma = params["mu"], _sigma(params)
    _, eps = _per_sample_normals(key, n, mu.shape[0])
    x = mu + sigma * eps
    values = cost.batched(x)
    df = cost.derivative(x)
    if per_sample:
      return _finish(df, df * eps * sigma if scale else None, values, True)
    grad = {"mu": sample_mean(df)}
    if scale:
      grad["log_sigma"] = sample_mean(df * eps) * sigma
    return grad, None, values

  return fn


def reference_measure_valued(num_samples: int, cost: Cost, per_sample: bool):
  r"""The coupled measure-valued estimator, written directly.

  Per sample ``x`` (from key ``k``) and coordinate ``d``: ``w ~ Rayleigh(1)``,
  ``m ~`` double-sided Maxwell (a random sign times the norm of three standard
  normals), ``u ~ U(0, 1)``, all from ``fold_in(k, 1)`` as gradest draws them (if
  gradest changes how it draws them, the benchmark's check reports a mismatch);
  ``f`` at ``x`` with ``x_d`` replaced by ``mu_d + sigma_d w``,
  ``mu_d - sigma_d w``, ``mu_d + sigma_d m`` and ``mu_d + sigma_d u m``; then
  :math:`g_\mu = (f_1 - f_2)/(\sigma\sqrt{2\pi})`, :math:`g_\sigma = (f_3 - f_4)/\sigma`
  and :math:`g_{\log\sigma} = \sigma g_\sigma`. The replaced inputs are built with a
  ``where`` mask, a chunk of coordinates at a time.
  """
  n = num_samples

  def fn(params, key):
    mu, log_sigma = params["mu"], params["log_sigma"]
    dim = mu.shape[0]
    sigma = jnp.exp(log_sigma)
    keys, eps = _per_sample_normals(key, n, dim)
    x = mu + sigma * eps
    values = cost.batched(x)

    def variates(k):
      k_pos, _, k_max, k_unif = jax.random.split(jax.random.fold_in(k, 1), 4)
      w = jax.random.rayleigh(k_pos, 1.0, (dim,), jnp.float32)
      k_norm, k_sign = jax.random.split(k_max)
      g3 = jax.random.normal(k_norm, (3, dim), jnp.float32)
      sign = jax.random.rademacher(k_sign, (dim,), jnp.float32)
      m = jnp.sqrt(jnp.sum(g3 * g3, axis=0)) * sign  # double-sided Maxwell
      u = jax.random.uniform(k_unif, (dim,), jnp.float32)
      return jnp.stack([w, -w, m, u * m], axis=1)  # (D, 4)

    repl = mu[:, None] + sigma[:, None] * jax.vmap(variates)(keys)  # (N, D, 4)
    coords = jnp.arange(dim)
    chunk = max(1, min(dim, _MVD_ELEMENT_BUDGET // (4 * n * dim)))

    def at_coordinate(d):
      mask = coords == d  # (D,)
      inputs = jnp.where(mask, repl[:, d, :, None], x[:, None, :])  # (N, 4, D)
      return cost.batched(inputs)  # (N, 4)

    evals = jax.lax.map(at_coordinate, coords, batch_size=chunk)  # (D, N, 4)
    g_mu = (evals[..., 0] - evals[..., 1]).T / (sigma * math.sqrt(2.0 * math.pi))
    g_log_sigma = (evals[..., 2] - evals[..., 3]).T  # sigma * (f3 - f4) / sigma
    return _finish(g_mu, g_log_sigma, values, per_sample)

  return fn


# The Bernoulli references. gradest's discrete estimators draw, for row i (a sample, or an
# antithetic pair), the key k_i = jax.random.split(key, rows)[i], split it into (noise
# key, conditional key) and draw logistic noise L_i from the noise key; the sample is
# b_i = 1[l + L_i > 0]. The score function draws b_i = Bernoulli(l).sample(k_i) with
# k_i = jax.random.split(key, N)[i]. The references draw the same, then use closed forms.


def _logistic_rows(key: Array, rows: int, dim: int) -> Array:
  """``(rows, D)`` logistic noise, row ``i`` from ``split(split(key, rows)[i])[0]``."""

  def noise(k):
    return gradest.logistic_noise(jax.random.split(k)[0], (dim,), jnp.float32)

  return jax.vmap(noise)(jax.random.split(key, rows))


def _bits(z: Array) -> Array:
  return (z > 0).astype(z.dtype)


def reference_antithetic(num_samples: int, cost: Cost, per_sample: bool, integrated: bool):
  r"""ARM (``integrated=False``) and DisARM over ``M = N/2`` antithetic pairs.

  With :math:`b = \mathbb 1[\ell + L > 0]` and :math:`\tilde b = \mathbb 1[\ell - L > 0]`,
  DisARM's term is :math:`\tfrac12(f(b) - f(\tilde b))(b - \tilde b)\,\sigma(|\ell|)` and
  ARM's :math:`(f(b) - f(\tilde b))(\sigma(L) - \tfrac12)`; ``values`` are the ``M``
  first members' costs, then the ``M`` second members'.
  """
  m = num_samples // 2

  def fn(logits, key):
    noise = _logistic_rows(key, m, logits.shape[0])
    b, b_tilde = _bits(logits + noise), _bits(logits - noise)
    f_b, f_tilde = cost.batched(b), cost.batched(b_tilde)
    values = jnp.concatenate([f_b, f_tilde])
    if integrated:
      w, z, scale = 0.5 * (f_b - f_tilde), b - b_tilde, jax.nn.sigmoid(jnp.abs(logits))
    else:
      w, z, scale = f_b - f_tilde, jax.nn.sigmoid(noise) - 0.5, None
    if per_sample:
      ps = w[:, None] * z if scale is None else w[:, None] * z * scale
      return sample_mean(ps), ps, values
    grad = (w @ z) / m
    return (grad if scale is None else grad * scale), None, values

  return fn


def reference_reinforce_loo(num_samples: int, cost: Cost, per_sample: bool):
  r"""REINFORCE with the leave-one-out baseline: :math:`(f_i - \bar f_{-i})(b_i - \sigma(\ell))`."""
  n = num_samples

  def fn(logits, key):
    b = jax.vmap(Bernoulli(logits).sample)(jax.random.split(key, n))
    values = cost.batched(b)
    w = values - (jnp.sum(values) - values) / (n - 1)
    z = b - jax.nn.sigmoid(logits)
    if per_sample:
      ps = w[:, None] * z
      return sample_mean(ps), ps, values
    return (w @ z) / n, None, values

  return fn


def reference_straight_through(num_samples: int, cost: Cost, per_sample: bool):
  r"""Straight-through: :math:`f'(b)\, s (1 - s) / \tau` at :math:`b = \mathbb 1[\ell + L > 0]`.

  :math:`s = \sigma((\ell + L)/\tau)`, the relaxed sample, whose derivative in
  :math:`\ell` is :math:`s(1 - s)/\tau`.
  """
  n, tau = num_samples, ST_TEMPERATURE

  def fn(logits, key):
    noise = _logistic_rows(key, n, logits.shape[0])
    z = logits + noise
    b = _bits(z)
    values = cost.batched(b)
    s = jax.nn.sigmoid(z / tau)
    ps = cost.derivative(b) * (s * (1.0 - s) / tau)
    return sample_mean(ps), (ps if per_sample else None), values

  return fn


def reference_fn(estimator: str, per_sample: bool, num_samples: int, cost: Cost):
  """``(params, key) -> (grad, per_sample, values)``, the hand-written reference."""
  if cost.family == "discrete":
    if estimator in ("arm", "disarm"):
      return reference_antithetic(num_samples, cost, per_sample, integrated=estimator == "disarm")
    if estimator == "reinforce_loo":
      return reference_reinforce_loo(num_samples, cost, per_sample)
    if estimator == "straight_through":
      return reference_straight_through(num_samples, cost, per_sample)
    raise ValueError(f"unknown estimator {estimator!r}; choose from {DISCRETE_ESTIMATORS}.")
  if estimator in ("score", "score_loo"):
    return reference_score(num_samples, cost, per_sample, loo=estimator == "score_loo")
  if estimator == "pathwise":
    return reference_pathwise(num_samples, cost, per_sample)
  if estimator == "measure_valued":
    return reference_measure_valued(num_samples, cost, per_sample)
  raise ValueError(f"unknown estimator {estimator!r}; choose from {ESTIMATORS}.")


# --------------------------------------------------------------------------------------
# optax 0.2.6 (optax.monte_carlo was removed in 0.2.7).
# --------------------------------------------------------------------------------------


def _optax_monte_carlo():
  """``(monte_carlo module, multi_normal)``, or ``(None, reason)``."""
  try:
    with warnings.catch_warnings():
      warnings.simplefilter("ignore")
      import optax
      from optax import monte_carlo
      from optax._src.utils import multi_normal
  except (ImportError, AttributeError) as e:
    return None, f"optax.monte_carlo not importable ({type(e).__name__}: {e})"
  return (monte_carlo, multi_normal), f"optax {optax.__version__}"


def optax_fn(estimator: str, num_samples: int, cost: Cost):
  """``(params, key) -> (None, per_sample, None)`` through ``optax.monte_carlo``.

  optax has only one mode: it forms the ``N x D`` per-sample jacobians, so it is
  compared with gradest's ``return_per_sample=True``. The timed function returns the
  jacobians only, what optax returns, and not their mean: in the same jitted program
  the mean can change how XLA fuses the forward-mode tangents, so that it materializes
  all ``N x D x D`` of them (at ``D = N = 1000``, the pathwise jacobians of the
  ``squares`` cost then take 4 GB and about 60 times as long). Leaving the mean out
  favours optax, never gradest (whose per-sample rows return the mean too).

  Returns:
    ``(fn, None)``, or ``(None, reason)`` when optax cannot run this estimator.
  """
  if cost.family == "discrete":
    return None, "optax.monte_carlo has no discrete estimators"
  found, reason = _optax_monte_carlo()
  if found is None:
    return None, reason
  monte_carlo, multi_normal = found
  jacobians = {
    "score": monte_carlo.score_function_jacobians,
    "pathwise": monte_carlo.pathwise_jacobians,
    "measure_valued": monte_carlo.measure_valued_jacobians,
  }.get(estimator)
  if jacobians is None:
    return None, "optax.monte_carlo has no leave-one-out baseline"

  def fn(params, key):
    if "log_sigma" in cost.params:
      args, builder = (params["mu"], params["log_sigma"]), multi_normal
    else:  # the mean only: the log-scale is a constant of the builder.
      log_sigma = jnp.full_like(params["mu"], math.log(FIXED_SIGMA))
      args, builder = (params["mu"],), lambda mu: multi_normal(mu, log_sigma)
    with warnings.catch_warnings():
      warnings.simplefilter("ignore", DeprecationWarning)
      jac = jacobians(cost.f, args, builder, key, num_samples)
    ps = dict(zip(cost.params, jac, strict=True))
    return None, ps, None

  return fn, None


def optax_work(num_samples: int, dim: int) -> float:
  """``N D^2``: optax's work, in multiples of one elementwise operation.

  ``jax.jacfwd`` pushes one tangent per parameter coordinate (``D`` or ``2D``) through
  the ``N x D`` samples (XLA fuses them, so the memory stays small: about 40 MB at
  ``D = N = 1000``), and the measure-valued jacobians evaluate the cost on ``N x D``
  inputs of ``D`` coordinates each.
  """
  return float(num_samples) * dim * dim


# --------------------------------------------------------------------------------------
# Checks and timing.
# --------------------------------------------------------------------------------------


def max_relative_error(result: Outputs, reference: Outputs) -> float:
  """Largest ``max|a - b| / max|b|`` over the leaves of two outputs.

  Leaves are compared to the largest magnitude of the reference leaf, so float32
  rounding in sums over samples (where the mean is a difference of large terms) is
  measured against the size of those terms, not of the small result.
  """
  worst = 0.0
  a_leaves, a_tree = jax.tree.flatten(result)
  b_leaves, b_tree = jax.tree.flatten(reference)
  if a_tree != b_tree:
    raise AssertionError(f"different output structures: {a_tree} and {b_tree}")
  for a, b in zip(a_leaves, b_leaves, strict=True):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
      raise AssertionError(f"different shapes {a.shape} and {b.shape}")
    if not np.all(np.isfinite(a)):
      return math.inf
    scale = max(float(np.max(np.abs(b))), 1e-30)
    worst = max(worst, float(np.max(np.abs(a - b))) / scale)
  return worst


# --------------------------------------------------------------------------------------
# The run.
# --------------------------------------------------------------------------------------


@dataclasses.dataclass
class Settings:
  """What to run and how (see :func:`parse_args` for the meaning of each field)."""

  cells: tuple[tuple[int, int], ...]  # (D, N) pairs of the continuous costs
  estimators: tuple[str, ...]
  modes: tuple[str, ...]
  costs: tuple[str, ...]
  repeats: int
  min_time: float
  cell_budget: float
  statistic: str
  seed: int
  max_gb: float
  per_sample_max_elements: float
  mvd_max_work: float
  check_rtol: float
  use_optax: bool
  optax_max_work: float = 1e9
  fast_compile: bool = False
  discrete_cells: tuple[tuple[int, int], ...] = DISCRETE_CELLS  # (D, N) of the Bernoulli costs


def cells_for(settings: Settings, cost: Cost) -> tuple[tuple[int, int], ...]:
  """The ``(D, N)`` cells run for ``cost`` (its family's)."""
  return settings.discrete_cells if cost.family == "discrete" else settings.cells


def _skip_reason(settings: Settings, estimator: str, mode: str, dim: int, n: int) -> str | None:
  entry = gradest.ESTIMATORS.get(estimator)
  if entry is not None and estimator in DISCRETE_ESTIMATORS:
    if n < entry.min_samples or n % entry.evaluations_per_row:
      return (
        f"{estimator} needs N >= {entry.min_samples} evaluations, a multiple of "
        f"{entry.evaluations_per_row}; got N = {n}"
      )
  if estimator == "measure_valued" and n * dim * dim > settings.mvd_max_work:
    return (
      f"measure-valued: 4 N D = {4 * n * dim:.1e} evaluations of an O(D) cost, "
      f"N D^2 = {n * dim * dim:.1e} > --mvd-max-work {settings.mvd_max_work:.0e} "
      "(O(N D^2) for every implementation)"
    )
  rows = n // entry.evaluations_per_row if estimator in DISCRETE_ESTIMATORS else n
  if mode == "per_sample" and rows * dim > settings.per_sample_max_elements:
    return (
      f"per-sample output {rows} x D = {rows * dim:.1e} elements per leaf > "
      f"--per-sample-max-elements {settings.per_sample_max_elements:.0e}"
    )
  at_least = 2 * 4 * n * dim  # the N x D samples and their noise, float32.
  if at_least > settings.max_gb * 1e9:
    return (
      f"needs at least {at_least / 1e9:.0f} GB (N x D samples and noise) > "
      f"--max-gb {settings.max_gb:g}"
    )
  return None


def _blank_row(cost: str, estimator: str, mode: str, dim: int, n: int) -> dict[str, Any]:
  row: dict[str, Any] = dict(cost=cost, estimator=estimator, mode=mode, dim=dim, num_samples=n)
  for impl in IMPLS:
    row[f"{impl}_ms"] = row[f"{impl}_median_ms"] = math.nan
  for ratio in RATIOS:
    row[ratio] = row[f"{ratio}_median"] = math.nan
  row.update(repeats=0, compile_s=math.nan, max_rel_err=math.nan, check="", note="")
  return row


def run_cell(
  settings: Settings,
  cost: Cost,
  estimator: str,
  mode: str,
  dim: int,
  n: int,
  keep_outputs: bool = False,
) -> dict[str, Any]:
  """Compiles, checks and times one (cost, estimator, mode, D, N) cell.

  Returns:
    A row: milliseconds per call of each implementation (``<impl>_ms`` by
    ``settings.statistic``, ``<impl>_median_ms`` the median), the two ratios (by the
    statistic, and ``<ratio>_median``), the number of repeats, the compilation time,
    the largest relative difference between gradest and the reference
    (``max_rel_err``; ``check`` is ``ok``, ``MISMATCH`` or ``skipped``) and a note (why
    something was skipped). With ``keep_outputs``, also ``outputs``: gradest's and the
    reference's ``(grad, per_sample, values)`` from the same key, as NumPy arrays.
  """
  per_sample = mode == "per_sample"
  row = _blank_row(cost.name, estimator, mode, dim, n)
  notes = []
  reason = _skip_reason(settings, estimator, mode, dim, n)
  if reason is not None:
    row.update(check="skipped", note="skipped: " + reason)
    return row

  max_bytes = settings.max_gb * 1e9
  params = make_problem_params(cost, dim, settings.seed)
  key = jax.random.key(settings.seed)
  args = (params, key)
  candidates = {
    "gradest": gradest_fn(estimator, per_sample, n, cost),
    "reference": reference_fn(estimator, per_sample, n, cost),
  }
  if settings.use_optax and per_sample:
    fn, why = optax_fn(estimator, n, cost)
    if fn is not None and optax_work(n, dim) > settings.optax_max_work:
      fn, why = (
        None,
        f"its forward-mode jacobians do N D^2 = {optax_work(n, dim):.0e} work > "
        f"--optax-max-work {settings.optax_max_work:.0e}",
      )
    if fn is None:
      notes.append(f"optax skipped: {why}")
    else:
      candidates["optax"] = fn

  compiled, compile_s = {}, 0.0
  for impl, fn in candidates.items():
    exe, seconds, needed = compile_ahead(fn, args, fast=settings.fast_compile)
    compile_s += seconds
    if needed > max_bytes:
      notes.append(f"{impl} skipped: needs {needed / 1e9:.1f} GB > --max-gb {settings.max_gb:g}")
      if impl != "optax":
        row.update(check="skipped", note="skipped: " + "; ".join(notes), compile_s=compile_s)
        return row
      continue
    compiled[impl] = exe
  row["compile_s"] = compile_s
  del candidates

  # A first (warm-up) call of each; gradest and the reference must agree.
  first_call, outputs = {}, {}
  for impl, exe in compiled.items():
    clock = Stopwatch()
    out = jax.block_until_ready(exe(*args))
    first_call[impl] = clock()
    if impl != "optax":
      outputs[impl] = jax.device_get(out)
    del out
  err = max_relative_error(outputs["gradest"], outputs["reference"])
  row["max_rel_err"] = err
  row["check"] = "ok" if err <= settings.check_rtol else "MISMATCH"
  if row["check"] == "MISMATCH":
    notes.append(
      f"gradest and the reference disagree: max relative error {err:.1e} > "
      f"--check-rtol {settings.check_rtol:g}"
    )
  if keep_outputs:
    row["outputs"] = outputs
  del outputs

  # Each function makes the number of calls its own time needs: optax can be 1000 times
  # slower than gradest.
  times = time_interleaved(
    compiled, args, settings.repeats, settings.min_time, first_call, settings.cell_budget
  )
  for impl, t in times.items():
    row[f"{impl}_ms"] = 1e3 * t.statistic(settings.statistic)
    row[f"{impl}_median_ms"] = 1e3 * t.median
  row["repeats"] = times["gradest"].repeats
  for suffix in ("", "_median"):
    row["gradest_over_reference" + suffix] = (
      row[f"gradest{suffix}_ms"] / row[f"reference{suffix}_ms"]
    )
    if "optax" in times:
      row["optax_over_gradest" + suffix] = row[f"optax{suffix}_ms"] / row[f"gradest{suffix}_ms"]
  row["note"] = "; ".join(notes)
  return row


def run(
  settings: Settings, progress: bool = True, keep_outputs: bool = False
) -> list[dict[str, Any]]:
  """Runs every (cost, D, N, estimator, mode) cell; see :func:`run_cell` for the rows.

  Each cost runs the estimators of ``settings.estimators`` that it lists
  (:attr:`Cost.estimators`), on its family's cells (:func:`cells_for`).
  """
  cells = [
    (COSTS[name], estimator, mode, dim, n)
    for name in settings.costs
    for dim, n in cells_for(settings, COSTS[name])
    for estimator in settings.estimators
    if estimator in COSTS[name].estimators
    for mode in settings.modes
  ]
  rows = []
  bar = tqdm(cells, desc="speed", disable=not progress, file=sys.stderr)
  for cost, estimator, mode, dim, n in bar:
    bar.set_postfix_str(f"{cost.name} {estimator} {mode} D={dim} N={n}")
    rows.append(run_cell(settings, cost, estimator, mode, dim, n, keep_outputs))
  return rows


# --------------------------------------------------------------------------------------
# Reporting.
# --------------------------------------------------------------------------------------

CSV_FIELDS = (
  "cost",
  "estimator",
  "mode",
  "dim",
  "num_samples",
  "gradest_ms",
  "reference_ms",
  "optax_ms",
  "gradest_over_reference",
  "optax_over_gradest",
  "gradest_median_ms",
  "reference_median_ms",
  "optax_median_ms",
  "gradest_over_reference_median",
  "optax_over_gradest_median",
  "repeats",
  "compile_s",
  "max_rel_err",
  "check",
  "note",
)


def _note(r: dict[str, Any]) -> str:
  ratio = r["gradest_over_reference"]
  flag = (
    f"(> {TARGET_REFERENCE_RATIO})"
    if math.isfinite(ratio) and ratio > TARGET_REFERENCE_RATIO
    else ""
  )
  note = r["note"] if r["check"] in ("ok", "skipped") else f"{r['check']}; {r['note']}"
  return (flag + " " + note).strip()


TABLE = (
  Column("estimator", "estimator"),
  Column("mode", "mode"),
  Column("D", "dim", "d"),
  Column("N", "num_samples", "d"),
  Column("gradest", "gradest_ms", ".3f"),
  Column("reference", "reference_ms", ".3f"),
  Column("optax", "optax_ms", ".3f"),
  Column("g/ref", "gradest_over_reference", ".2f"),
  Column("(med)", "gradest_over_reference_median", ".2f"),
  Column("opt/g", "optax_over_gradest", ".1f"),
  Column("(med)", "optax_over_gradest_median", ".1f"),
  Column("rel err", "max_rel_err", ".1e"),
  Column("note", _note),
)


def format_table(rows: Sequence[dict[str, Any]], statistic: str = "min") -> str:
  """The results as a fixed-width text table (times in ms per call), one part per cost."""
  lines = [
    f"ms per call ({statistic} of the repeats); g/ref = gradest / reference (target <= "
    f"{TARGET_REFERENCE_RATIO}), opt/g = optax / gradest (target > {TARGET_OPTAX_RATIO}); "
    "(med): the same ratio from medians",
  ]
  for cost in dict.fromkeys(r["cost"] for r in rows):
    lines += ["", f"cost {cost}: {COSTS[cost].label}"]
    lines.append(format_table_of([r for r in rows if r["cost"] == cost], TABLE))
  return "\n".join(lines)


def plot(rows: Sequence[dict[str, Any]], path: str, statistic: str = "min") -> None:
  """Both ratios per timed cell: bars from 1 on a log scale, values printed, targets dashed."""
  plt = pyplot()
  from matplotlib.patches import Patch
  from matplotlib.ticker import FuncFormatter

  timed = [r for r in rows if math.isfinite(r["gradest_over_reference"])]
  if not timed:
    return
  labels = [
    f"{r['cost']} {r['estimator']} {r['mode']} D={r['dim']} N={r['num_samples']}" for r in timed
  ]
  x = np.arange(len(timed))
  colors = [f"C{ESTIMATORS.index(r['estimator'])}" for r in timed]
  fig, axes = plt.subplots(2, 1, figsize=(max(8.0, 0.38 * len(timed) + 2.5), 9.0), sharex=True)
  panels = (
    (
      "gradest_over_reference",
      "gradest / reference",
      TARGET_REFERENCE_RATIO,
      f"target <= {TARGET_REFERENCE_RATIO}",
    ),
    ("optax_over_gradest", "optax / gradest", TARGET_OPTAX_RATIO, "target > 1"),
  )
  for ax, (field, title, target, target_label) in zip(axes, panels, strict=True):
    values = np.array([r[field] for r in timed], dtype=float)
    finite = values[np.isfinite(values)]
    ax.bar(x, np.where(np.isfinite(values), values - 1.0, np.nan), bottom=1.0, color=colors)
    for xi, v in zip(x, values, strict=True):
      if math.isfinite(v):
        ax.annotate(
          f"{v:.3g}",
          (xi, v),
          xytext=(0, 2 if v >= 1 else -2),
          textcoords="offset points",
          ha="center",
          va="bottom" if v >= 1 else "top",
          fontsize=6,
        )
    ax.axhline(target, color="k", linestyle="--", linewidth=1, label=target_label)
    ax.axhline(1.0, color="0.5", linewidth=0.8)
    ax.set_yscale("log")
    lo = min([0.5, *(finite / 1.3)])
    hi = max([2.0, *(finite * 1.5)])
    ax.set_ylim(lo, hi)
    ticks = (0.1, 0.25, 0.5, 0.75, 1, 1.1, 1.5, 2, 3, 5, 10, 30, 100, 300, 1000, 3000)
    if hi / lo > 20:  # a wide range: fewer ticks
      ticks = (0.1, 0.5, 1, 3, 10, 30, 100, 300, 1000, 3000)
    ax.set_yticks([t for t in ticks if lo <= t <= hi])
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
    ax.set_ylabel(title + " (time ratio)")
    ax.set_title(f"{title}: {target_label}")
    ax.grid(axis="y", which="both", alpha=0.3)
    shown = {r["estimator"] for r in timed}
    handles = [
      Patch(color=f"C{i}", label=name) for i, name in enumerate(ESTIMATORS) if name in shown
    ]
    ax.legend(  # beside the bars, not over them
      handles=[*ax.get_legend_handles_labels()[0], *handles],
      loc="upper left",
      bbox_to_anchor=(1.005, 1.0),
      fontsize=7,
    )
    if not finite.size:
      ax.text(0.5, 0.5, "no optax timings", transform=ax.transAxes, ha="center")
  axes[-1].set_xticks(x)
  axes[-1].set_xticklabels(labels, rotation=90, fontsize=7)
  axes[-1].set_xlabel("cost, estimator, mode, dimension D and samples N")
  axes[0].set_xlabel("the same cells as below")
  fig.suptitle(f"gradest speed: ratios of the {statistic} time per call, measured in the same run")
  save_figure(fig, path, dpi=120)


# --------------------------------------------------------------------------------------
# Command line.
# --------------------------------------------------------------------------------------


def _int_list(text: str) -> tuple[int, ...]:
  return tuple(int(float(v)) for v in text.split(",") if v)


def _cell_list(text: str) -> tuple[tuple[int, int], ...]:
  cells = []
  for item in (v for v in text.split(",") if v):
    dim, sep, n = item.lower().partition("x")
    if not sep:
      raise argparse.ArgumentTypeError(f"cells are DxN (e.g. 1000x1000), got {item!r}")
    cells.append((int(float(dim)), int(float(n))))
  return tuple(cells)


def _name_list(choices: Sequence[str]) -> Callable[[str], tuple[str, ...]]:
  def parse(text: str) -> tuple[str, ...]:
    names = tuple(v for v in text.split(",") if v)
    unknown = [v for v in names if v not in choices]
    if unknown:
      raise argparse.ArgumentTypeError(f"unknown {unknown}; choose from {list(choices)}")
    return names

  return parse


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
  p = argparse.ArgumentParser(
    prog="python -m benchmarks.speed",
    description="Speed of gradest's estimators against hand-written references and optax.",
  )
  p.add_argument(
    "--quick", action="store_true", help="one tiny configuration, fast compilation (for the tests)"
  )
  p.add_argument(
    "--dims",
    type=_int_list,
    help="comma-separated D values, run with every --samples value (default 10,1000,1e5)",
  )
  p.add_argument("--samples", type=_int_list, help="comma-separated N values (default 100,1e4)")
  p.add_argument(
    "--cells",
    type=_cell_list,
    help="comma-separated DxN cells instead of --dims x --samples (e.g. 1000x1000,10x100); "
    "default: every D with every N, and 1000x1000",
  )
  p.add_argument(
    "--estimators",
    type=_name_list(ESTIMATORS),
    default=ESTIMATORS,
    help=f"comma-separated subset of {','.join(ESTIMATORS)}",
  )
  p.add_argument(
    "--modes", type=_name_list(MODES), default=MODES, help="per_sample, mean or both (default)"
  )
  p.add_argument(
    "--costs",
    type=_name_list(tuple(COSTS)),
    default=DEFAULT_COSTS,
    help=f"comma-separated costs from {','.join(COSTS)} (default {','.join(DEFAULT_COSTS)})",
  )
  p.add_argument(
    "--families",
    type=_name_list(FAMILIES),
    default=FAMILIES,
    help="run the costs of these families only: continuous (Normal), discrete (Bernoulli) "
    "or both (default)",
  )
  p.add_argument("--repeats", type=integer, default=None, help="measurements per function (5)")
  p.add_argument(
    "--min-time", type=float, default=None, help="seconds per measurement, at least (0.02)"
  )
  p.add_argument(
    "--cell-budget",
    type=float,
    default=5.0,
    help="seconds of timed calls per cell; slow cells take fewer repeats (at least 3)",
  )
  p.add_argument(
    "--statistic",
    choices=("min", "median"),
    default="min",
    help="per-call time from the repeats (both are written; default min)",
  )
  p.add_argument("--seed", type=integer, default=0, help="seed of the parameters and the key")
  p.add_argument(
    "--out", default=os.path.join("bench_out", "speed"), help="output folder (bench_out/speed)"
  )
  p.add_argument(
    "--max-gb", type=float, default=6.0, help="skip programs needing more GB of memory (6)"
  )
  p.add_argument(
    "--per-sample-max-elements",
    type=float,
    default=1e8,
    help="skip per-sample cells with more N*D elements per leaf (1e8)",
  )
  p.add_argument(
    "--mvd-max-work",
    type=float,
    default=1e7,
    help="largest N*D^2 timed for the measure-valued estimator (1e8 adds D=1000, N=100)",
  )
  p.add_argument(
    "--check-rtol",
    type=float,
    default=1e-3,
    help="largest relative difference between gradest and the reference (1e-3)",
  )
  p.add_argument("--no-optax", action="store_true", help="do not time optax.monte_carlo")
  p.add_argument(
    "--optax-max-work",
    type=float,
    default=1e9,
    help="largest N*D^2 timed for optax's forward-mode jacobians (1e9: up to D=N=1000)",
  )
  p.add_argument(
    "--fast-compile",
    action="store_true",
    help="compile with XLA's backend optimizations off (implied by --quick; times not meaningful)",
  )
  p.add_argument("--no-plot", action="store_true", help="do not write speed.png")
  p.add_argument("--no-progress", action="store_true", help="no progress bar")
  args = p.parse_args(argv)
  if args.repeats is not None and args.repeats < 1:
    p.error("--repeats must be >= 1")
  args.costs = tuple(c for c in args.costs if COSTS[c].family in args.families)
  if not args.costs:
    p.error("no cost of --costs is in --families")
  return args


def settings_from_args(args: argparse.Namespace) -> Settings:
  if args.cells:
    cells = discrete_cells = args.cells
  elif args.quick or args.dims or args.samples:
    dims = args.dims or (QUICK_DIMS if args.quick else FULL_DIMS)
    samples = args.samples or (QUICK_SAMPLES if args.quick else FULL_SAMPLES)
    cells = tuple((d, n) for d in dims for n in samples)
    samples = args.samples or (QUICK_SAMPLES if args.quick else DISCRETE_SAMPLES)
    discrete_cells = tuple((d, n) for d in dims for n in samples)
  else:
    cells, discrete_cells = FULL_CELLS, DISCRETE_CELLS
  return Settings(
    cells=cells,
    discrete_cells=discrete_cells,
    estimators=tuple(args.estimators),
    modes=tuple(args.modes),
    costs=tuple(args.costs),
    repeats=args.repeats or (3 if args.quick else 5),
    min_time=args.min_time if args.min_time is not None else (0.002 if args.quick else 0.02),
    cell_budget=args.cell_budget,
    statistic=args.statistic,
    seed=args.seed,
    max_gb=args.max_gb,
    per_sample_max_elements=args.per_sample_max_elements,
    mvd_max_work=args.mvd_max_work,
    check_rtol=args.check_rtol,
    use_optax=not args.no_optax,
    optax_max_work=args.optax_max_work,
    fast_compile=args.quick or args.fast_compile,
  )


def run_from_args(args: argparse.Namespace, keep_outputs: bool = False) -> list[dict[str, Any]]:
  """Runs the benchmark for parsed arguments, prints the table and writes the outputs."""
  settings = settings_from_args(args)
  os.makedirs(args.out, exist_ok=True)
  clock = Stopwatch()
  rows = run(settings, progress=not args.no_progress, keep_outputs=keep_outputs)
  runtime = clock()

  print(format_table(rows, settings.statistic))
  print(f"\nruntime {runtime:.1f} s on {jax.devices()[0].device_kind} ({os.cpu_count()} CPUs)")
  meta = dict(
    settings=dataclasses.asdict(settings),
    runtime_s=runtime,
    jax=jax.__version__,
    gradest=gradest.__version__,
    optax=_optax_monte_carlo()[1],
    device=str(jax.devices()[0]),
    cpu_count=os.cpu_count(),
    platform=platform.platform(),
    targets=dict(
      gradest_over_reference=f"<= {TARGET_REFERENCE_RATIO}",
      optax_over_gradest=f"> {TARGET_OPTAX_RATIO}",
    ),
  )
  write_csv(rows, os.path.join(args.out, "speed.csv"), CSV_FIELDS)
  results = [{k: v for k, v in r.items() if k != "outputs"} for r in rows]
  write_json(dict(meta=meta, results=results), os.path.join(args.out, "speed.json"), indent=2)
  if not args.no_plot:
    plot(rows, os.path.join(args.out, "speed.png"), settings.statistic)
  written = "speed.csv, speed.json" + ("" if args.no_plot else ", speed.png")
  print(f"wrote {written} to {args.out}")
  return rows


def main(argv: Sequence[str] | None = None) -> int:
  """Command-line entry point; returns 1 if gradest and a reference disagree."""
  rows = run_from_args(parse_args(argv))
  mismatches = [r for r in rows if r["check"] == "MISMATCH"]
  for r in mismatches:
    print(
      f"MISMATCH: gradest and the reference disagree for {r['cost']} {r['estimator']} {r['mode']} "
      f"D={r['dim']} N={r['num_samples']} (max relative error {r['max_rel_err']:.2e})",
      file=sys.stderr,
    )
  return 1 if mismatches else 0


if __name__ == "__main__":
  sys.exit(main())
