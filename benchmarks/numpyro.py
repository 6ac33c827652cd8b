r"""gradest.numpyro.ELBO against NumPyro's ELBOs: gradient variance per site and SVI.

Run with ``python -m benchmarks.numpyro`` (``--help`` lists the flags).

Three NumPyro models with Bernoulli latents, each with a mean-field (or amortized) guide:

* ``gmm``: a two-component Gaussian mixture on ``--gmm-points`` synthetic points (means
  :math:`\pm 1.5`, unit variance). Model: :math:`\mu \sim \mathcal N(0, 3^2 I_2)`,
  :math:`z_i \sim \mathrm{Bernoulli}(\frac12)`, :math:`x_i \sim \mathcal N(\mu_{z_i}, 1)`;
  guide: :math:`q(\mu) = \mathcal N(m, \mathrm{diag}(s^2))` (pathwise) and one free logit
  per point for :math:`q(z_i)` (site ``z``, parameter ``l``).
* ``vae``: a discrete-latent VAE on scikit-learn's binarized 8x8 digits (pixel / 16 > 0.5;
  1438 training and 359 test images), ``--vae-latents`` Bernoulli latents (site ``z``)
  with a learned factorized prior, a tanh MLP decoder and a tanh MLP encoder (``numpyro.param``
  weights), trained on minibatches of ``--batch-size`` digits (``plate`` with
  ``subsample_size``).
* ``sbn``: a two-layer sigmoid belief net on the same digits, ``--sbn-latents H1 H2``
  units: :math:`z_2 \sim \mathrm{Bern}(\sigma(p))`, :math:`z_1 \mid z_2`,
  :math:`x \mid z_1` with linear logits; guide :math:`q(z_1 \mid x)\, q(z_2 \mid z_1)`
  (sites ``z1``, ``z2``).

The gradient estimators (``--estimators``): NumPyro's ``Trace_ELBO`` (no score term for
the Bernoulli sites: biased) and ``TraceGraph_ELBO`` (the score function with its
plate-aware downstream costs), and :class:`gradest.numpyro.ELBO` with the estimator
named for every Bernoulli site (``score_function``, ``reinforce_loo``,
``learned_baseline``, ``disarm``, ``arm``, ``rebar``, ``relax``, ``straight_through``,
``gumbel_rao``, ``vimco``); the Normal site of ``gmm`` stays pathwise. The estimators with
parameters of their own (the learned baseline, REBAR's and RELAX's control variates) train
them alongside in SVI; in the variance table they are at their initial values.
Every one uses ``--particles`` ``K`` particles (equal particles, not equal model
evaluations: ``disarm`` and ``arm`` run guide and model once more per particle and
antithetic site, ``rebar`` and ``relax`` twice (differentiated); the ``runs`` column
counts guide-and-model runs per step).

Where enumeration is feasible, the exact reference (row ``marginalized``) is the model
with its discrete sites summed out, trained with ``Trace_ELBO`` (the objective that
``TraceEnum_ELBO`` computes for the variant marked ``infer={"enumerate": "parallel"}``;
``TraceEnum_ELBO`` needs ``funsor``, which gradest's extras do not install): in ``gmm``
the assignments are summed out (``MixtureSameFamily``; the guide keeps :math:`q(\mu)`: a
collapsed, tighter ELBO); in ``sbn`` both layers' :math:`2^{H_1 + H_2}` joint states are
summed out (a ``logsumexp`` factor) and the guide is empty, so the objective is the exact
log-likelihood :math:`\log p(x)` (maximum likelihood). The ``vae``'s :math:`2^{16}`
states per digit are not enumerated.

**(a) Variance.** At fixed parameters (the initial ones, and TraceGraph_ELBO's parameters
after training), ``--repeats`` gradients of each estimator's loss are drawn at the same
keys for every estimator (on the fixed first ``--batch-size`` points for the digits).
For each guide site, the variance of the gradient of the guide parameters feeding that
site (summed over their coordinates) is reported, and the ratio
``TraceGraph_ELBO / estimator`` (above 1: less variance than TraceGraph_ELBO). The
first batch is the whole data set here (no subsampling): ``TraceGraph_ELBO`` multiplies
both the downstream cost and :math:`\log q` of a subsampled site by the plate's scale
:math:`n / B`, so its score term is :math:`n / B` times the full-data estimate, while
:class:`gradest.numpyro.ELBO` scales the cost only. The ``trace_elbo`` and
``straight_through`` rows are biased for the ELBO gradient and
``vimco`` estimates the gradient of the multi-sample bound.

**(b) SVI convergence.** Every estimator trains the same initial parameters with
``numpyro.optim.Adam(--lr)`` for ``--steps`` steps, the same minibatches and the same
sequence of PRNG keys (``SVI.update`` splits a fresh key per step). Each ``SVI.update`` is
jitted and compiled ahead of time; one Python loop makes step ``t`` of every estimator in a
rotating order, timing each call (blocking on its result). Every ``--eval-every`` steps
the ELBO per data point is evaluated with ``--eval-particles`` particles of
``Trace_ELBO`` (value only) and the same key for every estimator (``gmm``: the training
points; ``vae``, ``sbn``: the test digits); ``marginalized`` rows report their own
exact objective. ``steps_to_target`` and ``seconds_to_target`` (timed seconds of
the training steps) are those of the first evaluation at or above the target: the final
ELBO of ``TraceGraph_ELBO``.

Outputs (in ``--out``): ``variance.csv``, ``convergence.csv``, ``numpyro.json``
(everything, curves included), ``variance.png``, ``elbo_steps.png`` and
``elbo_seconds.png``. ``--quick`` (for the test) shrinks everything and turns XLA's
backend optimizations off, so its timings mean nothing.

References:
  Schulman et al., *Gradient Estimation Using Stochastic Computation Graphs*, NeurIPS
  2015. Kool, van Hoof & Welling, *Buy 4 REINFORCE samples, get a baseline for free!*,
  2019. Dong, Mnih & Tucker, *DisARM*, NeurIPS 2020. Mnih & Rezende, *VIMCO*, ICML 2016.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro.distributions import constraints
from numpyro.infer import SVI, Trace_ELBO, TraceGraph_ELBO

from benchmarks.common import (
  Column,
  Stopwatch,
  compile_ahead,
  format_table,
  integer,
  plot_series,
  pyplot,
  save_figure,
  series_styles,
  write_csv,
  write_json,
)
from benchmarks.datasets import load_binarized_digits
from gradest.numpyro import ELBO, SITE_ESTIMATORS

PROBLEMS = ("gmm", "vae", "sbn")
REFERENCE = "tracegraph_elbo"
ENUM = "marginalized"
GRADEST = (
  "score_function",
  "reinforce_loo",
  "learned_baseline",
  "disarm",
  "arm",
  "rebar",
  "relax",
  "straight_through",
  "gumbel_rao",
  "vimco",
)
ESTIMATORS = ("trace_elbo", REFERENCE, *GRADEST)
# Not unbiased for the ELBO gradient: no score term, a relaxation, another objective.
BIASED = {
  "trace_elbo": "biased",
  "straight_through": "biased",
  "gumbel_rao": "biased",
  "vimco": "IW bound",
}


# --------------------------------------------------------------------------------------
# Models.
# --------------------------------------------------------------------------------------


@dataclasses.dataclass
class Problem:
  """A model, its guide, data, and the guide parameters feeding each latent site.

  ``model(x, n)`` and ``guide(x, n)`` take a batch ``x`` and the number of data points
  ``n`` the batch stands for (the ``plate`` size). ``marginal_model`` /
  ``marginal_guide`` is the variant with the discrete sites summed out (``None`` where
  enumeration is not feasible).
  """

  name: str
  model: Callable[..., Any]
  guide: Callable[..., Any]
  train_x: np.ndarray
  eval_x: np.ndarray
  batch_size: int | None  # None: full batch
  site_params: dict[str, tuple[str, ...]]
  sites: tuple[str, ...]  # the Bernoulli sites
  marginal_model: Callable[..., Any] | None = None
  marginal_guide: Callable[..., Any] | None = None
  exact_objective: str = ""
  marginal_particles: int | None = None  # None: --particles


def _dense_init(rng, fan_in, fan_out):
  return (rng.normal(size=(fan_in, fan_out)) / math.sqrt(fan_in)).astype(np.float32)


def _logit_init(rng, *shape):
  """Logits near 0 but not 0: ``jax.grad`` of NumPyro's ``Bernoulli(logits=l).log_prob(z)``
  is ``z`` instead of ``z - 1/2`` at ``l == 0`` exactly (the kinks of ``|l|`` and
  ``max(l, 0)`` in its log-probability), which would bias every score-function estimate
  at the initial parameters."""
  return (0.01 * rng.normal(size=shape)).astype(np.float32)


def make_gmm(num_points: int, seed: int) -> Problem:
  rng = np.random.default_rng(seed)
  labels = rng.random(num_points) < 0.5
  x = (np.where(labels, 1.5, -1.5) + rng.normal(size=num_points)).astype(np.float32)
  logits_init = _logit_init(rng, num_points)

  def model(x, n):
    mu = numpyro.sample("mu", dist.Normal(0.0, 3.0).expand([2]).to_event(1))
    with numpyro.plate("data", n, subsample_size=x.shape[0]):
      z = numpyro.sample("z", dist.Bernoulli(logits=0.0))
      numpyro.sample("x", dist.Normal(mu[0] + z * (mu[1] - mu[0]), 1.0), obs=x)

  def marginal_model(x, n):
    # `model` with z summed out.
    mu = numpyro.sample("mu", dist.Normal(0.0, 3.0).expand([2]).to_event(1))
    mixing = dist.Categorical(logits=jnp.zeros(2))
    with numpyro.plate("data", n, subsample_size=x.shape[0]):
      numpyro.sample("x", dist.MixtureSameFamily(mixing, dist.Normal(mu, 1.0)), obs=x)

  def guide_mu():
    m = numpyro.param("m", jnp.array([-0.5, 0.5]))
    s = numpyro.param("s", jnp.array([0.5, 0.5]), constraint=constraints.positive)
    numpyro.sample("mu", dist.Normal(m, s).to_event(1))

  def guide(x, n):
    guide_mu()
    logits = numpyro.param("l", logits_init)
    with numpyro.plate("data", n, subsample_size=x.shape[0]):
      numpyro.sample("z", dist.Bernoulli(logits=logits))

  return Problem(
    name="gmm",
    model=model,
    guide=guide,
    train_x=x,
    eval_x=x,
    batch_size=None,
    site_params={"mu": ("m", "s"), "z": ("l",)},
    sites=("z",),
    marginal_model=marginal_model,
    marginal_guide=lambda x, n: guide_mu(),
    exact_objective="ELBO, z summed out",
  )


def _mlp(params, x):
  w1, b1, w2, b2 = params
  return jnp.tanh(x @ w1 + b1) @ w2 + b2


def _mlp_params(prefix, rng, sizes):
  d_in, hidden, d_out = sizes
  init = {
    f"{prefix}_w1": _dense_init(rng, d_in, hidden),
    f"{prefix}_b1": np.zeros(hidden, np.float32),
    f"{prefix}_w2": _dense_init(rng, hidden, d_out),
    f"{prefix}_b2": _logit_init(rng, d_out),
  }
  return init, lambda: [numpyro.param(k, v) for k, v in init.items()]


def make_vae(train, test, latents, hidden, batch_size, seed) -> Problem:
  rng = np.random.default_rng(seed)
  pixels = train.shape[1]
  enc_init, encoder = _mlp_params("enc", rng, (pixels, hidden, latents))
  _, decoder = _mlp_params("dec", rng, (latents, hidden, pixels))
  prior_init = _logit_init(rng, latents)

  def model(x, n):
    prior = numpyro.param("prior_logits", prior_init)
    dec = decoder()
    with numpyro.plate("data", n, subsample_size=x.shape[0]):
      z = numpyro.sample("z", dist.Bernoulli(logits=prior).to_event(1))
      numpyro.sample("x", dist.Bernoulli(logits=_mlp(dec, z)).to_event(1), obs=x)

  def guide(x, n):
    enc = encoder()
    with numpyro.plate("data", n, subsample_size=x.shape[0]):
      numpyro.sample("z", dist.Bernoulli(logits=_mlp(enc, x)).to_event(1))

  return Problem(
    name="vae",
    model=model,
    guide=guide,
    train_x=train,
    eval_x=test,
    batch_size=batch_size,
    site_params={"z": tuple(enc_init)},
    sites=("z",),
  )


def _bits(h: int) -> jax.Array:
  """The ``2**h`` binary vectors of length ``h``, one per row."""
  return ((jnp.arange(2**h)[:, None] >> jnp.arange(h)) & 1).astype(jnp.float32)


def _bernoulli_log_prob(logits, bits):
  """``sum_j log Bern(bits_j; sigmoid(logits_j))``, broadcast over leading axes."""
  return jnp.sum(bits * jax.nn.log_sigmoid(logits) + (1 - bits) * jax.nn.log_sigmoid(-logits), -1)


def make_sbn(train, test, latents, batch_size, seed, max_states=2**14) -> Problem:
  h1, h2 = latents
  rng = np.random.default_rng(seed)
  pixels = train.shape[1]
  gen_init = {
    "W1": _dense_init(rng, h1, pixels),
    "c1": _logit_init(rng, pixels),
    "W2": _dense_init(rng, h2, h1),
    "c2": _logit_init(rng, h1),
    "p2": _logit_init(rng, h2),
  }
  rec_init = {
    "A": _dense_init(rng, pixels, h1),
    "a": _logit_init(rng, h1),
    "B": _dense_init(rng, h1, h2),
    "e": _logit_init(rng, h2),
  }

  def generative():
    return {k: numpyro.param(k, v) for k, v in gen_init.items()}

  def model(x, n):
    p = generative()
    with numpyro.plate("data", n, subsample_size=x.shape[0]):
      z2 = numpyro.sample("z2", dist.Bernoulli(logits=p["p2"]).to_event(1))
      z1 = numpyro.sample("z1", dist.Bernoulli(logits=z2 @ p["W2"] + p["c2"]).to_event(1))
      numpyro.sample("x", dist.Bernoulli(logits=z1 @ p["W1"] + p["c1"]).to_event(1), obs=x)

  def guide(x, n):
    q = {k: numpyro.param(k, v) for k, v in rec_init.items()}
    with numpyro.plate("data", n, subsample_size=x.shape[0]):
      z1 = numpyro.sample("z1", dist.Bernoulli(logits=x @ q["A"] + q["a"]).to_event(1))
      numpyro.sample("z2", dist.Bernoulli(logits=z1 @ q["B"] + q["e"]).to_event(1))

  def marginal_model(x, n):
    # log p(x) = logsumexp over (z2, z1) of log p(z2) + log p(z1 | z2) + log p(x | z1).
    p = generative()
    bits1, bits2 = _bits(h1), _bits(h2)
    log_p2 = _bernoulli_log_prob(p["p2"], bits2)  # (2**h2,)
    log_p1 = _bernoulli_log_prob((bits2 @ p["W2"] + p["c2"])[:, None, :], bits1)  # (2**h2, 2**h1)
    log_z = jax.nn.logsumexp(log_p2[:, None] + log_p1, axis=0)  # (2**h1,)
    with numpyro.plate("data", n, subsample_size=x.shape[0]):
      log_x = _bernoulli_log_prob((bits1 @ p["W1"] + p["c1"])[:, None, :], x)  # (2**h1, batch)
      numpyro.factor("log_px", jax.nn.logsumexp(log_z[:, None] + log_x, axis=0))

  def empty_guide(x, n):
    pass

  feasible = 2 ** (h1 + h2) <= max_states
  return Problem(
    name="sbn",
    model=model,
    guide=guide,
    train_x=train,
    eval_x=test,
    batch_size=batch_size,
    site_params={"z1": ("A", "a"), "z2": ("B", "e")},
    sites=("z1", "z2"),
    marginal_model=marginal_model if feasible else None,
    marginal_guide=empty_guide,
    exact_objective="log p(x), exact",
    marginal_particles=1,  # nothing is sampled: one particle is exact
  )


def make_problems(args) -> list[Problem]:
  out = []
  digits = None
  for name in args.problems:
    if name == "gmm":
      out.append(make_gmm(args.gmm_points, args.seed))
      continue
    if digits is None:
      train, test = load_binarized_digits()
      digits = (train[: args.train_size], test[: args.test_size])
    if name == "vae":
      out.append(make_vae(*digits, args.vae_latents, args.vae_hidden, args.batch_size, args.seed))
    else:
      out.append(make_sbn(*digits, tuple(args.sbn_latents), args.batch_size, args.seed))
  return out


# --------------------------------------------------------------------------------------
# Estimators.
# --------------------------------------------------------------------------------------


def make_loss(name: str, particles: int, problem: Problem):
  """``(elbo, model, guide)`` of estimator ``name`` on ``problem``."""
  if name == ENUM:
    k = problem.marginal_particles or particles
    return Trace_ELBO(num_particles=k), problem.marginal_model, problem.marginal_guide
  if name == "trace_elbo":
    elbo = Trace_ELBO(num_particles=particles)
  elif name == REFERENCE:
    elbo = TraceGraph_ELBO(num_particles=particles)
  else:
    elbo = ELBO(num_particles=particles, estimators={"Bernoulli": name})
    # learned_baseline, rebar, relax: the guide declares the estimator's own parameters.
    return elbo, problem.model, elbo.wrap_guide(problem.guide)
  return elbo, problem.model, problem.guide


def with_estimator_params(name, particles, problem, params, x, n):
  """``params`` plus the initial values of estimator ``name``'s own parameters, if missing."""
  elbo, _, guide = make_loss(name, particles, problem)
  tr = numpyro.handlers.trace(numpyro.handlers.seed(guide, 0)).get_trace(x, n)
  extra = {k: s["value"] for k, s in tr.items() if s["type"] == "param" and k not in params}
  return {**params, **extra}


def runs_per_step(name: str, particles: int, problem: Problem) -> int:
  """Runs of guide and model per step (antithetic estimators rerun once per site, REBAR and
  RELAX twice, differentiated)."""
  if name == ENUM:
    return problem.marginal_particles or particles
  est = SITE_ESTIMATORS.get(name)
  return particles * (1 + (len(problem.sites) * est.reruns if est is not None else 0))


def configurations(problem: Problem, estimators: Sequence[str]) -> list[str]:
  names = list(estimators)
  if problem.marginal_model is not None:
    names.append(ENUM)
  return names


# --------------------------------------------------------------------------------------
# (a) Variance.
# --------------------------------------------------------------------------------------


def variance_fn(name, particles, problem, x, n):
  """A function ``(params, keys) -> {site: summed gradient variance over the keys}``."""
  elbo, model, guide = make_loss(name, particles, problem)

  def fn(params, keys):
    def grad(k):
      return jax.grad(lambda p: elbo.loss(k, p, model, guide, x, n))(params)

    grads = jax.vmap(grad)(keys)
    return {
      site: sum(jnp.sum(jnp.var(grads[p], axis=0, ddof=1)) for p in names)
      for site, names in problem.site_params.items()
    }

  return fn


def run_variance(problem, names, params_at, args, key) -> list[dict[str, Any]]:
  # The first batch as the whole data set (no subsampling scale: see the module docstring).
  x = problem.train_x if problem.batch_size is None else problem.train_x[: problem.batch_size]
  n = x.shape[0]
  keys = jax.random.split(key, args.repeats)  # the same keys for every estimator
  names = [nm for nm in names if nm != ENUM]
  results: dict[tuple[str, str], dict[str, float]] = {}
  for name in names:
    fn = variance_fn(name, args.particles, problem, x, n)
    # The estimator's own parameters (baseline, control variate) at their initial values.
    at = {
      point: with_estimator_params(name, args.particles, problem, p, jnp.asarray(x), n)
      for point, p in params_at.items()
    }
    some_params = next(iter(at.values()))
    compiled = compile_ahead(fn, (some_params, keys), fast=True).executable  # not timed
    for point, params in at.items():
      out = compiled(params, keys)
      results[(name, point)] = {s: float(v) for s, v in out.items()}
  rows = []
  for point in params_at:
    for site in problem.site_params:
      ref = results[(REFERENCE, point)][site] if REFERENCE in names else math.nan
      for name in names:
        var = results[(name, point)][site]
        rows.append(
          {
            "problem": problem.name,
            "site": site,
            "params": "+".join(problem.site_params[site]),
            "point": point,
            "estimator": name,
            "note": BIASED.get(name, ""),
            "particles": args.particles,
            "runs": runs_per_step(name, args.particles, problem),
            "variance": var,
            "ratio": ref / var if var > 0 else math.inf,
          }
        )
  return rows


# --------------------------------------------------------------------------------------
# (b) Convergence.
# --------------------------------------------------------------------------------------


def eval_fn(name, problem, args):
  """``(params, x, key) -> ELBO per data point`` (many particles; the enumerated objective
  for the marginalized model)."""
  if name == ENUM:
    k = problem.marginal_particles or args.eval_particles
    elbo = Trace_ELBO(num_particles=k)
    model, guide = problem.marginal_model, problem.marginal_guide
  else:
    elbo, model, guide = Trace_ELBO(num_particles=args.eval_particles), problem.model, problem.guide

  def fn(params, x, key):
    n = x.shape[0]
    return -elbo.loss(key, params, model, guide, x, n) / n

  return fn


def steps_to_target(steps, values, target):
  for s, v in zip(steps, values, strict=True):
    if np.isfinite(v) and v >= target:
      return s
  return None


def run_convergence(problem, names, args, key, fast):
  """Trains every estimator, interleaved; returns ``(rows, final parameters by name)``."""
  k_init, k_train, k_eval, k_batch = jax.random.split(key, 4)
  n = problem.train_x.shape[0]
  bs = problem.batch_size or n
  order = np.random.default_rng(int(jax.random.randint(k_batch, (), 0, 2**31 - 1)))
  batches = [
    order.choice(n, bs, replace=False) if bs < n else np.arange(n) for _ in range(args.steps)
  ]
  x0 = jnp.asarray(problem.train_x[batches[0]])
  eval_x = jnp.asarray(problem.eval_x)
  svis, states, updates, evals, evaluators, compile_seconds = {}, {}, {}, {}, {}, {}
  for name in names:
    elbo, model, guide = make_loss(name, args.particles, problem)
    svi = SVI(model, guide, numpyro.optim.Adam(args.lr), loss=elbo)
    state = svi.init(k_init, x0, n)  # the same key: the same initial parameters
    # The same step keys for all: SVI.update splits the state's key at every step.
    state = state._replace(rng_key=k_train)
    compiled = compile_ahead(_bind_n(svi.update, n), (state, x0), fast=fast)
    svis[name], states[name], updates[name] = svi, state, compiled.executable
    compile_seconds[name] = compiled.seconds
    params = svi.get_params(state)
    # One evaluator for every estimator of the same model, guide and parameters (the
    # learned baseline's and control variates' parameters are passed along, unused).
    kind = (name == ENUM, tuple(sorted(params)))
    if kind not in evaluators:
      ev = eval_fn(name, problem, args)
      evaluators[kind] = compile_ahead(ev, (params, eval_x, k_eval), fast=True).executable
    evals[name] = evaluators[kind]
  curves = {name: {"steps": [], "seconds": [], "elbo": []} for name in names}
  elapsed = dict.fromkeys(names, 0.0)
  diverged = dict.fromkeys(names, False)

  def record(step):
    for name in names:
      value = float(evals[name](svis[name].get_params(states[name]), eval_x, k_eval))
      c = curves[name]
      c["steps"].append(step)
      c["seconds"].append(elapsed[name])
      c["elbo"].append(value)

  record(0)
  for t in range(args.steps):
    xb = jnp.asarray(problem.train_x[batches[t]])
    shift = t % len(names)
    for name in names[shift:] + names[:shift]:
      if diverged[name]:
        continue
      clock = Stopwatch()
      state, loss = updates[name](states[name], xb)
      jax.block_until_ready((state, loss))
      elapsed[name] += clock()
      states[name] = state
      if not np.isfinite(float(loss)):
        diverged[name] = True
    if (t + 1) % args.eval_every == 0 or t + 1 == args.steps:
      record(t + 1)

  target = curves[REFERENCE]["elbo"][-1] if REFERENCE in curves else math.nan
  rows = []
  for name in names:
    c = curves[name]
    s = steps_to_target(c["steps"], c["elbo"], target)
    rows.append(
      {
        "problem": problem.name,
        "estimator": name,
        "note": BIASED.get(name, problem.exact_objective if name == ENUM else ""),
        "particles": runs_per_step(name, args.particles, problem)
        if name == ENUM
        else args.particles,
        "runs": runs_per_step(name, args.particles, problem),
        "steps": args.steps,
        "final_elbo": c["elbo"][-1],
        "best_elbo": max((v for v in c["elbo"] if np.isfinite(v)), default=math.nan),
        "target": target,
        "steps_to_target": s,
        "seconds_to_target": None if s is None else c["seconds"][c["steps"].index(s)],
        "ms_per_step": 1e3 * elapsed[name] / args.steps,
        "compile_seconds": compile_seconds[name],
        "diverged": diverged[name],
        "curve_steps": c["steps"],
        "curve_seconds": c["seconds"],
        "curve_elbo": c["elbo"],
      }
    )
  params = {name: svis[name].get_params(states[name]) for name in names}
  return rows, params


def _bind_n(update, n):
  def step(state, x):
    return update(state, x, n)

  return step


# --------------------------------------------------------------------------------------
# Reporting.
# --------------------------------------------------------------------------------------

VARIANCE_COLUMNS = (
  "problem",
  "site",
  "params",
  "point",
  "estimator",
  "note",
  "particles",
  "runs",
  "variance",
  "ratio",
)
CONVERGENCE_COLUMNS = (
  "problem",
  "estimator",
  "note",
  "particles",
  "runs",
  "steps",
  "final_elbo",
  "best_elbo",
  "target",
  "steps_to_target",
  "seconds_to_target",
  "ms_per_step",
  "compile_seconds",
  "diverged",
)


VARIANCE_TABLE = (
  Column("problem", "problem"),
  Column("site", "site"),
  Column("point", "point"),
  Column("estimator", "estimator"),
  Column("note", "note"),
  Column("runs", "runs", "d"),
  Column("variance", "variance", ".4g"),
  Column("TG/est", "ratio", ".3g"),
)
CONVERGENCE_TABLE = (
  Column("problem", "problem"),
  Column("estimator", "estimator"),
  Column("note", "note"),
  Column("runs", "runs", "d"),
  Column("final ELBO", "final_elbo", ".4f"),
  Column("target", "target", ".4f"),
  Column("steps", "steps_to_target", "d"),
  Column("seconds", "seconds_to_target", ".2f"),
  Column("ms/step", "ms_per_step", ".2f"),
)


def format_variance_table(rows) -> str:
  return format_table(rows, VARIANCE_TABLE)


def format_convergence_table(rows) -> str:
  return format_table(rows, CONVERGENCE_TABLE)


def _linestyles(names):
  """Biased objectives dashed, the marginalized reference dotted."""
  dashed = {n: "--" for n in names if BIASED.get(n)}
  return dashed | ({ENUM: ":"} if ENUM in names else {})


def plot_variance(rows, path):
  plt = pyplot()
  panels = list(dict.fromkeys((r["problem"], r["point"]) for r in rows))
  names = list(dict.fromkeys(r["estimator"] for r in rows))
  styles = series_styles(names)
  cols = max(1, len({p for p, _ in panels}))
  points = list(dict.fromkeys(pt for _, pt in panels))
  fig, axes = plt.subplots(
    len(points), cols, figsize=(4.4 * cols, 0.9 + 2.8 * len(points)), squeeze=False
  )
  problems = list(dict.fromkeys(p for p, _ in panels))
  for i, point in enumerate(points):
    for j, problem in enumerate(problems):
      ax = axes[i][j]
      sel = [r for r in rows if r["problem"] == problem and r["point"] == point]
      sites = list(dict.fromkeys(r["site"] for r in sel))
      for si, site in enumerate(sites):
        for r in sel:
          if r["site"] != site or not np.isfinite(r["ratio"]) or r["ratio"] <= 0:
            continue
          y = names.index(r["estimator"]) + (si - (len(sites) - 1) / 2) * 0.25
          style = styles[r["estimator"]]
          ax.plot(r["ratio"], y, marker=style["marker"], color=style["color"], ls="", ms=6,
                  mfc=style["color"] if si == 0 else "none")  # fmt: skip
      ax.axvline(1.0, color="k", lw=0.8)
      ax.set_xscale("log")
      ax.set_yticks(range(len(names)), names, fontsize=7)
      ax.set_ylim(len(names) - 0.5, -0.5)
      ax.set_title(f"{problem}, {point} (sites: {', '.join(sites)})", fontsize=9)
      ax.set_xlabel("variance of TraceGraph_ELBO / of estimator (> 1: lower)", fontsize=8)
      ax.set_ylabel("estimator", fontsize=8)
      ax.grid(True, axis="x", which="major", alpha=0.3)
  fig.suptitle("Gradient variance against TraceGraph_ELBO (filled: first site, hollow: others)")
  save_figure(fig, path, dpi=100)


def plot_convergence(rows, path, x_key):
  plt = pyplot()
  problems = list(dict.fromkeys(r["problem"] for r in rows))
  names = list(dict.fromkeys(r["estimator"] for r in rows))
  dashed = {r["estimator"] for r in rows if r["note"] in BIASED.values()}
  styles = series_styles(names, _linestyles(names) | {n: "--" for n in dashed})
  fig, axes = plt.subplots(1, len(problems), figsize=(4.6 * len(problems), 4.0), squeeze=False)
  for ax, problem in zip(axes[0], problems, strict=True):
    for r in rows:
      if r["problem"] != problem:
        continue
      x = np.asarray(r[f"curve_{x_key}"], np.float64)
      y = -np.asarray(r["curve_elbo"], np.float64)
      keep = np.isfinite(y) & (y > 0) & ((x > 0) if x_key == "seconds" else True)
      plot_series(ax, x[keep], y[keep], styles[r["estimator"]], label=r["estimator"])
    target = next(r["target"] for r in rows if r["problem"] == problem)
    if np.isfinite(target) and target < 0:
      ax.axhline(-target, color="k", lw=0.6, ls=":")
    ax.set_yscale("log")
    if x_key == "seconds":
      ax.set_xscale("log")
      ax.set_xlabel("seconds of training steps (compilation excluded)")
    else:
      ax.set_xlabel("SVI step")
    ax.set_ylabel("negative ELBO per data point (nats)")
    ax.set_title(f"{problem} (dotted: target)")
    ax.grid(True, which="major", alpha=0.3)
  axes[0][0].legend(fontsize=7)
  fig.suptitle("dashed: biased or another bound; dotted: marginalized reference")
  save_figure(fig, path, dpi=100)


# --------------------------------------------------------------------------------------
# Command line.
# --------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(
    prog="python -m benchmarks.numpyro",
    description="gradest.numpyro.ELBO against NumPyro's ELBOs and exact marginalization.",
  )
  parser.add_argument("--problems", nargs="+", default=list(PROBLEMS), choices=PROBLEMS)
  parser.add_argument(
    "--estimators", nargs="+", default=list(ESTIMATORS), choices=ESTIMATORS, metavar="NAME",
    help=f"from {', '.join(ESTIMATORS)} (all)",
  )  # fmt: skip
  parser.add_argument("--no-exact", action="store_true", help="leave the marginalized row out")
  parser.add_argument("--particles", type=integer, default=None, help="K for every estimator (4)")
  parser.add_argument("--repeats", type=integer, default=None, help="gradients per variance (100)")
  parser.add_argument("--steps", type=integer, default=None, help="SVI steps (200)")
  parser.add_argument("--eval-every", type=integer, default=None, help="steps between ELBOs (20)")
  parser.add_argument("--eval-particles", type=integer, default=None, help="ELBO particles (100)")
  parser.add_argument("--lr", type=float, default=0.02, help="Adam step size")
  parser.add_argument("--gmm-points", type=integer, default=None, help="mixture data points (200)")
  parser.add_argument(
    "--vae-latents", type=integer, default=None, help="VAE Bernoulli latents (16)"
  )
  parser.add_argument("--vae-hidden", type=integer, default=None, help="MLP hidden units (64)")
  parser.add_argument(
    "--sbn-latents", type=integer, nargs=2, default=None, metavar=("H1", "H2"), help="(8 4)"
  )
  parser.add_argument("--batch-size", type=integer, default=None, help="digits per step (100)")
  parser.add_argument("--train-size", type=integer, default=None, help="training digits (1438)")
  parser.add_argument("--test-size", type=integer, default=None, help="test digits (359)")
  parser.add_argument("--seed", type=integer, default=0, help="PRNG seed")
  parser.add_argument("--out", default=os.path.join("bench_out", "numpyro"), help="output dir")
  parser.add_argument("--quick", action="store_true", help="tiny settings (for tests)")
  parser.add_argument("--no-plots", action="store_true", help="skip the PNG files")
  parser.add_argument("--quiet", action="store_true", help="no tables")
  args = parser.parse_args(argv)
  if args.quick and args.problems == list(PROBLEMS):
    args.problems = ["gmm", "sbn"]
  if args.quick and args.estimators == list(ESTIMATORS):
    args.estimators = [REFERENCE, "disarm"]
  defaults = {  # (quick, full)
    "particles": (2, 4),
    "repeats": (16, 100),
    "steps": (6, 200),
    "eval_every": (3, 20),
    "eval_particles": (8, 100),
    "gmm_points": (20, 200),
    "vae_latents": (4, 16),
    "vae_hidden": (8, 64),
    "sbn_latents": ([3, 2], [8, 4]),
    "batch_size": (10, 100),
    "train_size": (100, 1438),
    "test_size": (50, 359),
  }
  for name, (small, full) in defaults.items():
    if getattr(args, name) is None:
      setattr(args, name, small if args.quick else full)
  args.estimators = list(dict.fromkeys(args.estimators))
  if args.particles < 2 and any(e in ("reinforce_loo", "vimco") for e in args.estimators):
    parser.error("--particles must be >= 2 for reinforce_loo and vimco")
  if args.particles < 1 or args.repeats < 2 or args.eval_particles < 1:
    parser.error("--particles >= 1, --repeats >= 2 and --eval-particles >= 1 are required")
  if min(args.steps, args.eval_every, args.gmm_points, args.vae_latents, args.vae_hidden) < 1:
    parser.error("--steps, --eval-every, --gmm-points and --vae-* must be >= 1")
  if min(args.sbn_latents) < 1 or args.batch_size < 1 or args.lr <= 0:
    parser.error("--sbn-latents, --batch-size must be >= 1 and --lr > 0")
  if not 1 <= args.train_size <= 1438 or not 1 <= args.test_size <= 359:
    parser.error("--train-size must be in [1, 1438] and --test-size in [1, 359]")
  args.batch_size = min(args.batch_size, args.train_size)
  return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  """Runs the benchmark; returns ``{'config', 'variance', 'convergence'}``."""
  args = parse_args(argv)
  os.makedirs(args.out, exist_ok=True)
  root = jax.random.key(args.seed)
  clock = Stopwatch()
  variance_rows, convergence_rows = [], []
  for pi, problem in enumerate(make_problems(args)):
    names = configurations(problem, args.estimators)
    if args.no_exact:
      names = [n for n in names if n != ENUM]
    if not args.quiet:
      print(f"  {problem.name}: {', '.join(names)}", file=sys.stderr, flush=True)
    key = jax.random.fold_in(root, pi)
    rows, params = run_convergence(problem, names, args, jax.random.fold_in(key, 0), args.quick)
    convergence_rows.extend(rows)
    init = SVI(problem.model, problem.guide, numpyro.optim.Adam(args.lr), loss=TraceGraph_ELBO())
    x0 = jnp.asarray(problem.train_x[: problem.batch_size or problem.train_x.shape[0]])
    state = init.init(jax.random.fold_in(key, 2), x0, problem.train_x.shape[0])
    params_at = {"init": init.get_params(state)}
    if REFERENCE in params:
      params_at["trained"] = params[REFERENCE]
    variance_rows.extend(run_variance(problem, names, params_at, args, jax.random.fold_in(key, 1)))
  config = {k: v for k, v in vars(args).items() if k not in ("out", "quiet", "no_plots")}
  config.update(
    backend=jax.default_backend(),
    jax=jax.__version__,
    numpyro=numpyro.__version__,
    seconds=round(clock(), 1),
  )
  write_csv(variance_rows, os.path.join(args.out, "variance.csv"), VARIANCE_COLUMNS)
  write_csv(convergence_rows, os.path.join(args.out, "convergence.csv"), CONVERGENCE_COLUMNS)
  result = {"config": config, "variance": variance_rows, "convergence": convergence_rows}
  write_json(result, os.path.join(args.out, "numpyro.json"))
  if not args.no_plots:
    plot_variance(variance_rows, os.path.join(args.out, "variance.png"))
    plot_convergence(convergence_rows, os.path.join(args.out, "elbo_steps.png"), "steps")
    plot_convergence(convergence_rows, os.path.join(args.out, "elbo_seconds.png"), "seconds")
  if not args.quiet:
    print(f"(a) gradient variance per site, {args.repeats} keys, K = {args.particles}")
    print(format_variance_table(variance_rows))
    print()
    print(f"(b) SVI, {args.steps} steps, Adam({args.lr}), ELBO per data point")
    print(format_convergence_table(convergence_rows))
    print(f"\n{config['seconds']} s; written to {args.out}")
  return result


if __name__ == "__main__":
  main()
