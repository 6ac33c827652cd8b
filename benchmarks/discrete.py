r"""Discrete-latent gradient estimators: bias, variance and training curves.

Run with ``python -m benchmarks.discrete`` (``--help`` lists the flags).

**(a) The toy** of Tucker et al. (2017) and Grathwohl et al. (2018):
:math:`\min_\theta \mathbb E_{b \sim \mathrm{Bern}(\sigma(\theta))}[(b - t)^2]` with
``t = 0.45`` (``toy_0.45``) and ``t = 0.499`` (``toy_0.499``), and the 100-dimensional
version :math:`\sum_i (b_i - t_i)^2` with ``t = linspace(0, 1, 100)`` (``toy_100``,
every logit equal to :math:`\theta`). The exact gradient is
:math:`\sigma'(\theta_i)(1 - 2t_i)` per coordinate. For each ``theta`` in the grid and
each estimator, ``R`` independent estimates of ``N`` function evaluations each (``N``
samples; ``N / evaluations_per_row`` antithetic pairs for ARM and DisARM) give

* ``bias/se``: the error of the mean of the ``R`` estimates in standard errors (for
  ``toy_100`` the largest over the 100 coordinates),
* ``rel_bias``: :math:`\|\bar g - g\| / \|g\|` (significant only for the biased
  straight-through and Gumbel-Rao estimators),
* ``variance``: the variance of one ``N``-evaluation estimate (summed over coordinates
  for ``toy_100``).

REBAR and RELAX first train their control variate at that ``theta`` for ``--cv-steps``
Adam steps on ``cv_grad`` (then fresh keys measure them). Then every estimator
minimizes each toy with Adam from :math:`\theta = 0` (the control variates learn at the
same time) and the exact loss is recorded at every step.

**(b) A variational sigmoid belief net on binarized 8x8 digits** (scikit-learn's
bundled copy): one layer of ``--latents`` Bernoulli latents, a linear recognition
network :math:`q(h \mid x)`, trained with Adam on the ELBO whose recognition-network
gradient comes from each estimator (``N`` evaluations of :math:`\log p(x, h)` per data
point; the entropy term is analytic). VIMCO trains the ``N``-sample importance-weighted
bound instead, and wake-sleep, the classical baseline, its own two objectives. Every
``--eval-every`` steps the training ELBO (fixed key) and the variance of the
recognition-weight gradient (``--var-repeats`` estimates on a fixed batch) are
recorded; at the end, the test ELBO and the test importance-weighted bound with
``--iw-samples`` samples.

Outputs (in ``--out``): ``toy.csv``, ``sbn.csv``, ``discrete.json`` (everything,
curves included) and the plots ``toy_variance.png``, ``toy_curves.png``,
``sbn_elbo.png``, ``sbn_variance.png``. ``--quick`` (for the tests) shrinks every size and
turns XLA's backend optimizations off (``--fast-compile``: compilation, most of a quick
run, is about three times faster).

References:
  Tucker et al., *REBAR*, NeurIPS 2017. Grathwohl et al., *Backpropagation through the
  Void*, ICLR 2018. Yin & Zhou, *ARM*, ICLR 2019. Dong, Mnih & Tucker, *DisARM*,
  NeurIPS 2020. Paulus, Maddison & Krause, *Rao-Blackwellizing the Straight-Through
  Gumbel-Softmax Gradient Estimator*, ICLR 2021. Mnih & Rezende, *VIMCO*, ICML 2016.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import inspect
import math
import os
import sys
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm import tqdm

import gradest
from benchmarks.common import (
  Column,
  JitBoth,
  Stopwatch,
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
from gradest.distributions import Bernoulli
from gradest.models import apply_mlp, init_mlp, sbn

# Every registry estimator of E[f] for Bernoulli distributions, in the registry's order.
ESTIMATORS = tuple(
  name for name in gradest.estimator_names("bernoulli") if not gradest.ESTIMATORS[name].multi_sample
)
BIASED = tuple(name for name in ESTIMATORS if not gradest.ESTIMATORS[name].unbiased)
MULTI_SAMPLE = tuple(
  name for name in gradest.estimator_names("bernoulli") if gradest.ESTIMATORS[name].multi_sample
)
SBN_METHODS = ESTIMATORS + MULTI_SAMPLE + ("wake_sleep",)


def _keywords(name: str) -> frozenset[str]:
  """The keyword arguments of estimator ``name``'s gradient level."""
  return frozenset(inspect.signature(gradest.ESTIMATORS[name].grad).parameters)


# Estimators with a control variate trained on aux["cv_grad"] (REBAR, RELAX).
LEARNED_CV = tuple(name for name in ESTIMATORS if "cv_params" in _keywords(name))


@dataclasses.dataclass(frozen=True)
class Config:
  samples: int = 2
  temperature: float = 0.5
  num_conditional: int = 10
  cv_hidden: int = 16
  cv_learning_rate: float = 0.01


# --------------------------------------------------------------------------------------
# One interface over the estimators.
# --------------------------------------------------------------------------------------


def relax_network(params, z):
  """RELAX's free-form term r(z): a one-hidden-layer tanh MLP."""
  return apply_mlp(params, z)[..., 0]


def init_cv(name: str, key, dim: int, cfg: Config):
  """Control-variate parameters: REBAR's, plus RELAX's network where the estimator takes
  a ``cv_fn`` (an empty dict for estimators without a learned control variate)."""
  keywords = _keywords(name)
  if "cv_fn" in keywords:
    net = init_mlp(key, [dim, cfg.cv_hidden, 1])
    net[-1] = jax.tree.map(jnp.zeros_like, net[-1])  # start at REBAR's control variate
    return dict(gradest.init_rebar_params(), network=net)
  if "cv_params" in keywords:
    return gradest.init_rebar_params()
  return {}


def overrides(name: str, f, cv_params, cfg: Config) -> dict[str, Any]:
  """The benchmark's settings for the keyword arguments estimator ``name`` takes: the
  temperature, Gumbel-Rao's conditional samples, the control variate and its parameters."""
  options = {
    "temperature": cfg.temperature,
    "num_conditional": cfg.num_conditional,
    "cv_fn": gradest.relax_control_variate(f, relax_network, family="bernoulli"),
    "cv_params": cv_params,
  }
  keywords = _keywords(name)
  return {k: v for k, v in options.items() if k in keywords}


def estimate(name: str, f, logits, key, cv_params, cfg: Config):
  """``(grad, per_sample, cv_grad)`` of estimator ``name`` with ``cfg.samples`` f-evaluations.

  ``num_samples`` counts evaluations of ``f`` for every estimator (ARM and DisARM: as
  many antithetic pairs as ``cfg.samples / evaluations_per_row``), so the comparison is
  at an equal cost in evaluations.
  """
  if name not in ESTIMATORS:
    raise ValueError(f"unknown estimator {name!r}; choose from {ESTIMATORS}")
  entry = gradest.ESTIMATORS[name]
  kwargs = {**entry.kwargs(f, "bernoulli", jnp.shape(logits)), **overrides(name, f, cv_params, cfg)}
  est = entry.grad(f, Bernoulli, logits, key, cfg.samples, **kwargs)
  cv_grad = (est.aux or {}).get("cv_grad", {})
  return est.grad, est.per_sample, cv_grad


# --------------------------------------------------------------------------------------
# (a) The toy problem.
# --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Toy:
  name: str
  target: tuple[float, ...]

  @property
  def dim(self) -> int:
    return len(self.target)

  def t(self):
    return jnp.asarray(self.target, jnp.float32)

  def cost(self, b):
    return toy_cost(self.t(), b)

  def expected_cost(self, logits):
    return toy_expected_cost(self.t(), logits)

  def exact_grad(self, logits):
    p = jax.nn.sigmoid(logits)
    return p * (1.0 - p) * (1.0 - 2.0 * self.t())

  def minimum(self) -> float:
    t = np.asarray(self.target, np.float64)
    return float(np.sum(np.minimum((1.0 - t) ** 2, t**2)))


def toy_cost(target, b):
  return jnp.sum(jnp.square(b - target))


def toy_expected_cost(target, logits):
  p = jax.nn.sigmoid(logits)
  return jnp.sum(p * (1.0 - target) ** 2 + (1.0 - p) * target**2)


def make_toys() -> list[Toy]:
  return [
    Toy("toy_0.45", (0.45,)),
    Toy("toy_0.499", (0.499,)),
    Toy("toy_100", tuple(float(x) for x in np.linspace(0.0, 1.0, 100))),
  ]


def _adam_cv(cfg):
  return optax.adam(cfg.cv_learning_rate)


# The target is a traced argument: toys of the same dimension share one compilation.
@functools.partial(JitBoth, static_argnames=("name", "cfg", "steps"))
def tune_cv(name, target, cfg, steps, logits, cv_params, key):
  """Trains the control variate at fixed logits for ``steps`` Adam steps."""
  opt = _adam_cv(cfg)

  def step(carry, k):
    cv, state = carry
    _, _, g = estimate(name, functools.partial(toy_cost, target), logits, k, cv, cfg)
    updates, state = opt.update(g, state, cv)
    return (optax.apply_updates(cv, updates), state), None

  (cv_params, _), _ = jax.lax.scan(
    step, (cv_params, opt.init(cv_params)), jax.random.split(key, steps)
  )
  return cv_params


@functools.partial(JitBoth, static_argnames=("name", "cfg", "repeats"))
def toy_estimates(name, target, cfg, repeats, logits, cv_params, key):
  """``repeats`` independent estimates, shape ``(repeats, dim)``."""
  keys = jax.random.split(key, repeats)
  f = functools.partial(toy_cost, target)
  return jax.vmap(lambda k: estimate(name, f, logits, k, cv_params, cfg)[0])(keys)


@functools.partial(JitBoth, static_argnames=("name", "cfg", "steps"))
def toy_optimize(name, target, cfg, steps, learning_rate, cv_params, key):
  """Adam on the logits from 0; returns the exact expected cost after every step."""
  opt, cv_opt = optax.adam(learning_rate), _adam_cv(cfg)
  logits = jnp.zeros(target.shape, jnp.float32)
  f = functools.partial(toy_cost, target)

  def step(carry, k):
    lg, state, cv, cv_state = carry
    g, _, cvg = estimate(name, f, lg, k, cv, cfg)
    updates, state = opt.update(g, state, lg)
    lg = optax.apply_updates(lg, updates)
    if cvg:
      cv_updates, cv_state = cv_opt.update(cvg, cv_state, cv)
      cv = optax.apply_updates(cv, cv_updates)
    return (lg, state, cv, cv_state), toy_expected_cost(target, lg)

  carry = (logits, opt.init(logits), cv_params, cv_opt.init(cv_params))
  _, losses = jax.lax.scan(step, carry, jax.random.split(key, steps))
  return losses


def toy_rows(toy: Toy, name: str, thetas, cfg, args, key) -> list[dict]:
  rows = []
  for i, theta in enumerate(thetas):
    logits = jnp.full((toy.dim,), theta, jnp.float32)
    k_init, k_tune, k_est = jax.random.split(jax.random.fold_in(key, i), 3)
    cv = init_cv(name, k_init, toy.dim, cfg)
    if name in LEARNED_CV and args.cv_steps > 0:
      cv = tune_cv.pick(args.fast_compile)(name, toy.t(), cfg, args.cv_steps, logits, cv, k_tune)
    estimates = toy_estimates.pick(args.fast_compile)
    g = estimates(name, toy.t(), cfg, args.repeats, logits, cv, k_est)
    g = np.asarray(g, np.float64)
    exact = np.asarray(toy.exact_grad(logits), np.float64)
    mean = g.mean(0)
    se = g.std(0, ddof=1) / math.sqrt(args.repeats)
    # An exact estimator (DisARM at theta = 0 in one dimension) has a zero standard
    # error; float32 rounding of its mean is not bias.
    se = np.maximum(se, 8 * np.finfo(np.float32).eps * (np.abs(exact) + 1e-12))
    z = (mean - exact) / se
    rows.append(
      {
        "problem": toy.name,
        "theta": float(theta),
        "estimator": name,
        "biased": name in BIASED,
        "f_evals": cfg.samples,
        "exact_grad": float(exact[0]) if toy.dim == 1 else float(np.linalg.norm(exact)),
        "mean_grad": float(mean[0]) if toy.dim == 1 else float(np.linalg.norm(mean)),
        "bias_se": float(z[np.argmax(np.abs(z))]),
        "rel_bias": float(np.linalg.norm(mean - exact) / max(np.linalg.norm(exact), 1e-30)),
        "variance": float(g.var(0, ddof=1).sum()),
      }
    )
  return rows


# --------------------------------------------------------------------------------------
# (b) The variational sigmoid belief net.
# --------------------------------------------------------------------------------------


def _log_q(logits, h):
  return jnp.sum(h * jax.nn.log_sigmoid(logits) + (1.0 - h) * jax.nn.log_sigmoid(-logits), -1)


def sbn_loss_grads(name, params, cv_params, x, key, cfg):
  """Gradients of the negative objective for the model and ``cv_grad`` for REBAR/RELAX."""
  if name == "wake_sleep":
    return sbn.wake_sleep_grads(params, x, key), {}
  gen, rec = params["generative"], params["recognition"]
  batch = x.shape[0]
  if name == "vimco":

    def loss(p):
      logits = sbn.recognition_logits(p["recognition"], x)
      h = jax.lax.stop_gradient(Bernoulli(logits).sample(key, (cfg.samples,)))
      log_q = _log_q(logits, h)
      log_w = sbn.log_joint(p["generative"], h, x) - log_q
      return -jnp.mean(gradest.vimco_surrogate(log_w, log_q))

    return jax.grad(loss)(params), {}

  k_est, k_gen = jax.random.split(key)
  logits, pullback = jax.vjp(lambda r: sbn.recognition_logits(r, x), rec)

  def per_example(xi, li, ki):
    f = lambda h: sbn.log_joint(gen, h, xi)  # noqa: E731
    g, _, cvg = estimate(name, f, li, ki, cv_params, cfg)
    return g, cvg

  g_logits, cv_grads = jax.vmap(per_example)(x, logits, jax.random.split(k_est, batch))
  g_logits = g_logits + jax.grad(lambda lg: Bernoulli(lg).entropy())(logits)
  rec_grad = pullback(-g_logits / batch)[0]
  h = jax.lax.stop_gradient(Bernoulli(logits).sample(k_gen, (cfg.samples,)))
  xs = jnp.broadcast_to(x, (cfg.samples,) + x.shape)
  gen_grad = jax.tree.map(lambda v: -v / (cfg.samples * batch), sbn.log_prob_grad(gen, [h, xs]))
  cv_grad = jax.tree.map(lambda v: jnp.mean(v, 0), cv_grads)
  return {"generative": gen_grad, "recognition": rec_grad}, cv_grad


def _recognition_grad_variance(name, params, cv_params, x, key, cfg, repeats):
  """Mean over coordinates of the variance of the recognition-weight gradient."""
  keys = jax.random.split(key, repeats)
  grads = jax.vmap(lambda k: sbn_loss_grads(name, params, cv_params, x, k, cfg)[0])(keys)
  return jnp.mean(jnp.var(grads["recognition"]["w"], axis=0, ddof=1))


@functools.partial(JitBoth, static_argnames=("name", "cfg", "steps", "batch_size", "lr", "repeats"))
def sbn_chunk(name, cfg, steps, batch_size, lr, repeats, carry, data, eval_x, var_x, key):
  """``steps`` training steps, then the training ELBO and the gradient variance."""
  opt, cv_opt = optax.adam(lr), _adam_cv(cfg)
  k_steps, k_var = jax.random.split(key)

  def step(c, k):
    params, state, cv, cv_state = c
    k_batch, k_grad = jax.random.split(k)
    idx = jax.random.choice(k_batch, data.shape[0], (batch_size,), replace=False)
    grads, cvg = sbn_loss_grads(name, params, cv, data[idx], k_grad, cfg)
    updates, state = opt.update(grads, state, params)
    params = optax.apply_updates(params, updates)
    if cvg:
      cv_updates, cv_state = cv_opt.update(cvg, cv_state, cv)
      cv = optax.apply_updates(cv, cv_updates)
    return (params, state, cv, cv_state), None

  carry, _ = jax.lax.scan(step, carry, jax.random.split(k_steps, steps))
  params, _, cv, _ = carry
  train_elbo = jnp.mean(sbn.elbo(params, eval_x, jax.random.key(12345), num_samples=10))
  variance = _recognition_grad_variance(name, params, cv, var_x, k_var, cfg, repeats)
  return carry, train_elbo, variance


@functools.partial(JitBoth, static_argnames=("iw_samples",))
def sbn_final(params, test_x, key, iw_samples):
  k1, k2 = jax.random.split(key)
  test_elbo = jnp.mean(sbn.elbo(params, test_x, k1, num_samples=10))
  test_iw = jnp.mean(sbn.importance_weighted_bound(params, test_x, k2, iw_samples))
  return test_elbo, test_iw


def run_sbn(name, cfg, args, data, key, progress) -> dict:
  train, test = data
  k_init, k_cv, k_run, k_final = jax.random.split(key, 4)
  params = sbn.init_variational_sbn(k_init, train.shape[1], args.latents)
  cv = init_cv(name, k_cv, args.latents, cfg) if name in LEARNED_CV else {}
  opt, cv_opt = optax.adam(args.lr), _adam_cv(cfg)
  carry = (params, opt.init(params), cv, cv_opt.init(cv))
  eval_x, var_x = train[: args.eval_size], train[: args.batch_size]
  steps, elbos, variances = [], [], []
  clock = Stopwatch()
  done = 0
  chunks = max(1, args.sbn_steps // args.eval_every)
  for c in range(chunks):
    n = args.eval_every if c < chunks - 1 else args.sbn_steps - done
    carry, elbo, var = sbn_chunk.pick(args.fast_compile)(
      name,
      cfg,
      n,
      args.batch_size,
      args.lr,
      args.var_repeats,
      carry,
      train,
      eval_x,
      var_x,
      jax.random.fold_in(k_run, c),
    )
    done += n
    steps.append(done)
    elbos.append(float(elbo))
    variances.append(float(var))
    progress()
  seconds = clock()
  final = sbn_final.pick(args.fast_compile)
  test_elbo, test_iw = final(carry[0], test, k_final, args.iw_samples)
  return {
    "estimator": name,
    "steps": steps,
    "train_elbo": elbos,
    "grad_variance": variances,
    "final_train_elbo": elbos[-1],
    "test_elbo": float(test_elbo),
    "test_iw_bound": float(test_iw),
    "mean_log10_variance": float(np.mean(np.log10(np.maximum(variances, 1e-30)))),
    "seconds": round(seconds, 2),
  }


# --------------------------------------------------------------------------------------
# Reporting.
# --------------------------------------------------------------------------------------

TOY_COLUMNS = (
  "problem",
  "theta",
  "estimator",
  "biased",
  "f_evals",
  "exact_grad",
  "mean_grad",
  "bias_se",
  "rel_bias",
  "variance",
)
SBN_COLUMNS = (
  "estimator",
  "final_train_elbo",
  "test_elbo",
  "test_iw_bound",
  "mean_log10_variance",
  "seconds",
)


TOY_TABLE = (
  Column("problem", "problem"),
  Column("theta", "theta", ".2f"),
  Column("estimator", "estimator"),
  Column("bias/se", "bias_se", ".2f"),
  Column("rel_bias", "rel_bias", ".3f"),
  Column("variance", "variance", ".4g"),
)
SBN_TABLE = (
  Column("estimator", "estimator"),
  Column("train ELBO", "final_train_elbo", ".3f"),
  Column("test ELBO", "test_elbo", ".3f"),
  Column("test IW bound", "test_iw_bound", ".3f"),
  Column("log10 var", "mean_log10_variance", ".3f"),
  Column("seconds", "seconds", ".1f"),
)


def format_toy_table(rows) -> str:
  return format_table(rows, TOY_TABLE)


def format_sbn_table(results) -> str:
  return format_table(results, SBN_TABLE)


def _dashed(names) -> dict[str, str]:
  """Biased estimators (and wake-sleep, which follows no unbiased gradient) dashed."""
  return {n: "--" for n in names if n in BIASED or n == "wake_sleep"}


def plot_toy_variance(rows, toys, path):
  plt = pyplot()
  fig, axes = plt.subplots(1, len(toys), figsize=(5 * len(toys), 4), squeeze=False)
  styles = series_styles(ESTIMATORS, _dashed(ESTIMATORS))
  for ax, toy in zip(axes[0], toys, strict=True):
    for name in ESTIMATORS:
      sel = [r for r in rows if r["problem"] == toy.name and r["estimator"] == name]
      if not sel:
        continue
      plot_series(
        ax,
        [r["theta"] for r in sel],
        [max(r["variance"], 1e-12) for r in sel],
        styles[name],
        label=name,
      )
    ax.set_yscale("log")
    ax.set_title(f"{toy.name}: variance at each theta")
    ax.set_xlabel("theta (logit of every coordinate)")
    ax.set_ylabel("variance of one estimate (summed over coordinates)")
  axes[0][0].legend(fontsize=7)
  fig.suptitle("dashed: biased estimators")
  save_figure(fig, path)


def plot_toy_curves(curves, toys, path):
  plt = pyplot()
  fig, axes = plt.subplots(1, len(toys), figsize=(5 * len(toys), 4), squeeze=False)
  names = list(dict.fromkeys(n for toy in toys for n in curves[toy.name]))
  styles = series_styles(names, _dashed(names))
  for ax, toy in zip(axes[0], toys, strict=True):
    for name, losses in curves[toy.name].items():
      gap = np.maximum(np.asarray(losses) - toy.minimum(), 1e-12)
      plot_series(ax, np.arange(1, len(gap) + 1), gap, styles[name], label=name)
    ax.set_yscale("log")
    ax.set_title(f"{toy.name}: exact E[f] - min E[f]")
    ax.set_xlabel("Adam step")
    ax.set_ylabel("E[f] - min (exact, from the logits)")
  axes[0][0].legend(fontsize=7)
  fig.suptitle("dashed: biased estimators")
  save_figure(fig, path)


def plot_sbn(results, key, ylabel, path, log=False):
  plt = pyplot()
  fig, ax = plt.subplots(figsize=(7.5, 4), layout="constrained")
  names = [r["estimator"] for r in results]
  styles = series_styles(names, _dashed(names))
  for r in results:
    plot_series(ax, r["steps"], r[key], styles[r["estimator"]], label=r["estimator"])
  if log:
    ax.set_yscale("log")
  ax.set_xlabel("training step")
  ax.set_ylabel(ylabel)
  ax.set_title("Sigmoid belief net on binarized digits (dashed: biased)", fontsize=10)
  ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))  # beside the curves
  save_figure(fig, path)


# --------------------------------------------------------------------------------------
# Command line.
# --------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(
    prog="python -m benchmarks.discrete",
    description="Bias, variance and training curves of the discrete gradient estimators.",
  )
  parser.add_argument("--samples", type=integer, default=2, help="f evaluations per estimate (2)")
  parser.add_argument("--repeats", type=integer, default=None, help="estimates per theta (2000)")
  parser.add_argument("--thetas", type=float, nargs="+", default=None, help="logit grid")
  parser.add_argument("--cv-steps", type=integer, default=None, help="CV tuning steps (300)")
  parser.add_argument("--toy-steps", type=integer, default=None, help="optimization steps (2000)")
  parser.add_argument("--toy-lr", type=float, default=0.01, help="Adam step size, toy")
  parser.add_argument("--temperature", type=float, default=0.5, help="ST / Gumbel-Rao tau")
  parser.add_argument("--num-conditional", type=integer, default=10, help="Gumbel-Rao K")
  parser.add_argument("--latents", type=integer, default=None, help="SBN latent units (32)")
  parser.add_argument("--sbn-steps", type=integer, default=None, help="SBN training steps (3000)")
  parser.add_argument("--batch-size", type=integer, default=50, help="SBN batch size")
  parser.add_argument("--lr", type=float, default=3e-3, help="SBN Adam step size")
  parser.add_argument("--eval-every", type=integer, default=None, help="SBN eval period (250)")
  parser.add_argument("--eval-size", type=integer, default=500, help="train points for the ELBO")
  parser.add_argument("--var-repeats", type=integer, default=None, help="estimates per variance")
  parser.add_argument("--iw-samples", type=integer, default=None, help="test IW bound samples")
  parser.add_argument(
    "--estimators", nargs="+", default=list(SBN_METHODS), choices=SBN_METHODS, metavar="NAME"
  )
  parser.add_argument("--skip-toy", action="store_true", help="only the SBN part")
  parser.add_argument("--skip-sbn", action="store_true", help="only the toy part")
  parser.add_argument("--seed", type=integer, default=0, help="PRNG seed")
  parser.add_argument("--out", default=os.path.join("bench_out", "discrete"), help="output dir")
  parser.add_argument("--quick", action="store_true", help="tiny settings (for tests)")
  parser.add_argument(
    "--fast-compile", action="store_true", help="XLA backend optimizations off (implied by --quick)"
  )
  parser.add_argument("--no-plots", action="store_true", help="skip the PNG files")
  parser.add_argument("--quiet", action="store_true", help="no table, no progress bar")
  args = parser.parse_args(argv)
  quick = args.quick
  args.fast_compile = args.fast_compile or quick
  defaults = {
    "repeats": (200, 2000),
    "thetas": ([-1.0, 1.0], [-2.0, -1.0, 0.0, 1.0, 2.0]),
    "cv_steps": (20, 300),
    "toy_steps": (50, 2000),
    "latents": (8, 32),
    "sbn_steps": (40, 3000),
    "eval_every": (20, 250),
    "var_repeats": (4, 20),
    "iw_samples": (10, 200),
  }
  for name, (small, full) in defaults.items():
    if getattr(args, name) is None:
      setattr(args, name, small if quick else full)
  if args.samples < 1:
    parser.error("--samples must be >= 1")
  for name in args.estimators:
    if name not in gradest.ESTIMATORS:
      continue
    entry = gradest.ESTIMATORS[name]
    if args.samples < entry.min_samples or args.samples % entry.evaluations_per_row:
      parser.error(
        f"--samples must be >= {entry.min_samples} and a multiple of "
        f"{entry.evaluations_per_row} for {name} (evaluations of f per row of its estimate)"
      )
  if args.repeats < 2 or args.var_repeats < 2:
    parser.error("--repeats and --var-repeats must be >= 2")
  if args.temperature <= 0:
    parser.error("--temperature must be > 0")
  if min(args.sbn_steps, args.eval_every, args.toy_steps, args.latents) < 1:
    parser.error("--sbn-steps, --eval-every, --toy-steps and --latents must be >= 1")
  return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  """Runs the benchmark; returns ``{'config', 'toy', 'toy_curves', 'sbn'}``."""
  args = parse_args(argv)
  os.makedirs(args.out, exist_ok=True)
  cfg = Config(
    samples=args.samples, temperature=args.temperature, num_conditional=args.num_conditional
  )
  toys = make_toys()
  toy_names = [e for e in args.estimators if e in ESTIMATORS]
  sbn_names = list(args.estimators)
  data = None if args.skip_sbn else load_binarized_digits()
  chunks = max(1, args.sbn_steps // args.eval_every)
  total = (0 if args.skip_toy else 2 * len(toys) * len(toy_names)) + (
    0 if args.skip_sbn else chunks * len(sbn_names)
  )
  bar = tqdm(total=total, desc="discrete", disable=args.quiet, file=sys.stderr)
  root = jax.random.key(args.seed)
  clock = Stopwatch()

  toy_rows_all, curves = [], {}
  if not args.skip_toy:
    for ti, toy in enumerate(toys):
      curves[toy.name] = {}
      for name in toy_names:
        bar.set_postfix_str(f"{toy.name} {name}")
        key = jax.random.fold_in(jax.random.fold_in(root, ti), 0)
        toy_rows_all.extend(toy_rows(toy, name, args.thetas, cfg, args, key))
        bar.update()
        k_cv, k_opt = jax.random.split(jax.random.fold_in(jax.random.fold_in(root, ti), 1))
        cv = init_cv(name, k_cv, toy.dim, cfg)
        optimize = toy_optimize.pick(args.fast_compile)
        losses = optimize(name, toy.t(), cfg, args.toy_steps, args.toy_lr, cv, k_opt)
        curves[toy.name][name] = [float(v) for v in np.asarray(losses)]
        bar.update()

  sbn_results = []
  if not args.skip_sbn:
    for name in sbn_names:
      bar.set_postfix_str(f"sbn {name}")
      key = jax.random.fold_in(root, 1000)  # the same initialization and data for all
      sbn_results.append(run_sbn(name, cfg, args, data, key, bar.update))
  bar.close()

  config = {
    k: v for k, v in vars(args).items() if k not in ("out", "quiet", "no_plots", "estimators")
  }
  config.update(
    estimators=list(args.estimators),
    backend=jax.default_backend(),
    seconds=round(clock(), 1),
  )
  if toy_rows_all:
    write_csv(toy_rows_all, os.path.join(args.out, "toy.csv"), TOY_COLUMNS)
  if sbn_results:
    write_csv(sbn_results, os.path.join(args.out, "sbn.csv"), SBN_COLUMNS)
  result = {"config": config, "toy": toy_rows_all, "toy_curves": curves, "sbn": sbn_results}
  write_json(result, os.path.join(args.out, "discrete.json"))
  if not args.no_plots:
    if toy_rows_all:
      plot_toy_variance(toy_rows_all, toys, os.path.join(args.out, "toy_variance.png"))
      plot_toy_curves(curves, toys, os.path.join(args.out, "toy_curves.png"))
    if sbn_results:
      plot_sbn(
        sbn_results,
        "train_elbo",
        "training ELBO (nats per image)",
        os.path.join(args.out, "sbn_elbo.png"),
      )
      plot_sbn(
        sbn_results,
        "grad_variance",
        "variance of the recognition-weight gradient",
        os.path.join(args.out, "sbn_variance.png"),
        log=True,
      )
  if not args.quiet:
    if toy_rows_all:
      print(format_toy_table(toy_rows_all))
      print()
    if sbn_results:
      print(format_sbn_table(sbn_results))
    print(f"\n{config['seconds']} s; written to {args.out}")
  return result


if __name__ == "__main__":
  main()
