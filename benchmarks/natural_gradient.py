r"""Natural gradients: the cost of a Fisher-vector product, and convergence on digits.

Run with ``python -m benchmarks.natural_gradient`` (``--help`` lists the flags).

**(a) Cost.** For an MLP (``--cost-sizes``, tanh, softmax outputs) on a batch of
``--cost-batch`` inputs, every function below is jitted, compiled ahead of time, and
timed interleaved with the jitted gradient of the same mean cross-entropy
(``jax.grad``), with :func:`benchmarks.common.time_interleaved`. Each cost is reported in
*gradient-equivalents*: its time divided by the gradient's time in the same run
(minimum over the repeats; medians are written too).

* ``fvp_exact`` / ``fvp_empirical`` / ``fvp_monte_carlo``: one
  :func:`gradest.fisher.fisher_vector_product` call, linearization included (one
  forward pass, one ``jvp``, one ``vjp``); target at most 2 for the exact (GGN)
  product.
* ``ggn``: :func:`gradest.fisher.ggn_vector_product` with the cross-entropy as the
  loss (forward-over-reverse in output space).
* ``cg_iteration``: the marginal cost of one more conjugate-gradient iteration (one
  product with the linearization reused): the difference between natural-gradient
  steps with ``2 k`` and ``k`` iterations, divided by ``k`` (CG's tolerance set so
  that it never stops early).
* ``step_natural_gradient``: a whole training step, ``value_and_grad`` plus
  :func:`gradest.natural_gradient` with ``--cost-cg`` iterations (warm start and
  Levenberg-Marquardt damping, so one more evaluation of the loss), plus the update;
  ``step_fisher_diagonal`` and ``step_adam`` for comparison.

The ``products`` column counts the Fisher-vector products each function makes
(``--cost-cg`` + 1 for the step: one per CG iteration and one for the warm start).
``--skip-convergence`` runs this part alone.

**(b) Convergence on the scikit-learn digits** (1797 8x8 images, bundled with
scikit-learn, inputs scaled to [0, 1]), full batch:

* ``logreg``: multinomial logistic regression (64 -> 10);
* ``mlp``: a classifier with one tanh hidden layer (64 -> 64 -> 10);
* ``autoencoder``: the deep autoencoder of the K-FAC paper's MNIST experiment
  (kfac-jax's example: 784-1000-500-250-30-250-500-1000-784, tanh, sigmoid
  cross-entropy), scaled down to 64-48-32-16-8-16-32-48-64;
* ``autoencoder_large``: a wider and deeper one on the same data (without
  ``ng_empirical`` and ``diagonal``, which are slow there and poor on the others),
  64-256-128-64-32-8-32-64-128-256-64 (ten layers, about 120k parameters): deep
  autoencoders with a narrow code are the classic case where curvature matters
  (Hinton & Salakhutdinov 2006; Martens 2010; Martens & Grosse 2015).

The optimizers: SGD with momentum 0.9, Adam, :func:`gradest.natural_gradient` with the
exact Fisher (``ng_exact``) and with the empirical Fisher (``ng_empirical``), both with
Levenberg-Marquardt damping and ``--cg-maxiter`` CG iterations,
:func:`gradest.scale_by_fisher_diagonal` with sampled labels (``diagonal``),
:func:`gradest.kfac` with a fixed learning rate (``kfac_gradest``: momentum, KL clipping,
factors every ``--kfac-curvature-period`` steps and inverses every
``--kfac-inverse-period`` steps, for cost), :func:`gradest.kfac` with the learning rate and
momentum of the quadratic model and adapted damping (``kfac_gradest_adaptive``, kfac-jax's
defaults: factors every step, inverses and damping every 5), and kfac-jax's optimizer
(``kfac_jax``, adaptive learning rate, momentum and damping) when it is installed and
works with the installed JAX; otherwise its row says why it did not run. kfac-jax 0.0.8
needs jax <= 0.9.1; the whole comparison runs from one environment with::

  pip install -e ".[bench,flax,kfac]"  # kfac-jax 0.0.8, jax 0.9.1
  OPENBLAS_NUM_THREADS=1 python -m benchmarks.natural_gradient

(one BLAS thread avoids stalls of the eigendecompositions on a small shared CPU; it
applies to every optimizer alike).

**Timing.** Every optimizer is one step function ``(params, state, key) -> (params,
state, loss)``: gradest's and optax's jitted and compiled ahead of time (the learning
rate is an argument, so one compilation serves the grid), kfac-jax's its own
``Optimizer.step``, whose variants (the damping update first runs at step 4) are compiled
by taking its first steps on a throwaway copy. Each step gets a fresh key,
``jax.random.fold_in(key, step)``. Every run (each optimizer, each learning rate of its
grid) is driven by the same Python loop, which blocks on every step's outputs, and the
runs of a problem are interleaved one step each in turn (the order rotating every round)
so that the machine's noise hits all of them alike. Reported for each optimizer's best
learning rate (fewest steps to the problem's target training loss, then the lowest final
loss): the steps to the target and the seconds they took after compilation, the compile
seconds, the final loss, the median and minimum milliseconds per step, the per-step cost
relative to Adam's run (median, minimum and amortized over the whole run: total seconds
over total seconds), and the steps and seconds to reach kfac-jax's final loss.

Outputs (in ``--out``): ``cost.csv``, ``convergence.csv``, ``natural_gradient.json``
(everything, curves included, and every learning rate's result), ``cost.png`` and
``convergence.png`` (training loss against steps and against seconds after compilation).
``--quick`` (for the test) shrinks everything: a 64-64-10 MLP for the cost, 256
examples, a 64-16-8-16-64 autoencoder, two problems, 10 steps, one learning rate, and
XLA's backend optimizations off (``--fast-compile``), so its timings mean nothing.

References:
  Martens, *Deep learning via Hessian-free optimization*, ICML 2010. Martens & Grosse,
  *Optimizing Neural Networks with Kronecker-factored Approximate Curvature*, ICML 2015.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import math
import os
import sys
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import gradest
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
  time_call,
  time_interleaved,
  write_csv,
  write_json,
)
from gradest import fisher
from gradest.models import apply_mlp, init_mlp

OPTIMIZERS = (
  "sgd",
  "adam",
  "ng_exact",
  "ng_empirical",
  "diagonal",
  "kfac_gradest",
  "kfac_gradest_adaptive",
  "kfac_jax",
)
PROBLEMS = ("logreg", "mlp", "autoencoder", "autoencoder_large")
# The learning-rate grids (``--grid`` of each, in order); None: chosen by the optimizer.
LEARNING_RATES = {
  "sgd": (0.1, 0.3, 1.0),
  "adam": (0.003, 0.01, 0.03),
  "ng_exact": (0.3, 1.0),
  "ng_empirical": (0.1, 0.3, 1.0),
  "diagonal": (0.01, 0.03, 0.1),
  "kfac_gradest": (0.03, 0.1, 0.3),
  "kfac_gradest_adaptive": (None,),
  "kfac_jax": (None,),
}


@dataclasses.dataclass(frozen=True)
class TrainSettings:
  """The settings of the second-order optimizers (hashable: a static jit argument).

  Attributes:
    damping: initial damping of ``ng_exact`` and ``ng_empirical`` (adapted).
    cg_maxiter: their conjugate-gradient iterations per step.
    kfac_damping: the damping of ``kfac_gradest`` (fixed).
    kfac_momentum: the momentum of ``kfac_gradest``.
    kfac_curvature_period: steps between factor updates of ``kfac_gradest``.
    kfac_inverse_period: steps between inverse refreshes of ``kfac_gradest``.
    kfac_kl_clip: the KL clipping of ``kfac_gradest`` (None: none).
    kfac_adaptive_damping: the initial damping of ``kfac_gradest_adaptive`` and
      ``kfac_jax`` (both adapt it).
    kfac_adaptive_curvature_period: steps between factor updates of
      ``kfac_gradest_adaptive``.
    kfac_damping_factor: the factor by which ``kfac_gradest_adaptive`` moves its damping
      every 5 steps; the default is kfac-jax's (decay 0.9 per step).
  """

  damping: float = 1e-2
  cg_maxiter: int = 10
  kfac_damping: float = 1e-2
  kfac_momentum: float = 0.9
  kfac_curvature_period: int = 2
  kfac_inverse_period: int = 10
  kfac_kl_clip: float | None = 1e-2
  kfac_adaptive_damping: float = 1.0
  kfac_damping_factor: float = (1 / 0.9) ** 5
  kfac_adaptive_curvature_period: int = 1


# Target training losses: reached by the better optimizers well within the default steps.
# Optimizers left out of a problem: on the large autoencoder the empirical Fisher and the
# diagonal (per-example gradients) take about 0.45 s per step and are not competitive on
# the smaller ones; they would double the benchmark's time.
EXCLUDED = {"autoencoder_large": ("ng_empirical", "diagonal")}
TARGETS = {"logreg": 0.05, "mlp": 0.01, "autoencoder": 20.0, "autoencoder_large": 20.0}


# --------------------------------------------------------------------------------------
# Problems.
# --------------------------------------------------------------------------------------


def load_digits_data():
  from sklearn.datasets import load_digits

  digits = load_digits()
  x = jnp.asarray(digits.data / 16.0, jnp.float32)
  return x, jnp.asarray(digits.target, jnp.int32)


SPECS = {  # layer widths, likelihood, whether the targets are the labels (else the inputs)
  "logreg": ([64, 10], "categorical", True),
  "mlp": ([64, 64, 10], "categorical", True),
  "autoencoder": ([64, 48, 32, 16, 8, 16, 32, 48, 64], "bernoulli", False),
  "autoencoder_large": ([64, 256, 128, 64, 32, 8, 32, 64, 128, 256, 64], "bernoulli", False),
}


def loss_function(likelihood: str):
  """The mean negative log-likelihood of the MLP on a batch ``(inputs, targets)``."""
  lik = fisher.get_likelihood(likelihood)

  def loss_fn(p, batch):
    inputs, targets = batch
    return -jnp.mean(jax.vmap(lik.log_likelihood)(apply_mlp(p, inputs), targets))

  return loss_fn


def make_problem(name: str, key, data=None, sizes=None):
  """``(likelihood, params, batch)`` of a problem; ``data`` is ``(inputs, labels)``."""
  if name not in SPECS:
    raise ValueError(f"unknown problem {name!r}; choose from {PROBLEMS}")
  x, labels = load_digits_data() if data is None else data
  default_sizes, likelihood, uses_labels = SPECS[name]
  params = init_mlp(key, default_sizes if sizes is None else sizes)
  return likelihood, params, (x, labels if uses_labels else x)


def make_optimizer(
  name: str, learning_rate, likelihood, settings: TrainSettings, example_inputs=None
):
  """The optax transformation of a gradest or optax optimizer (not ``kfac_jax``).

  ``learning_rate`` may be a traced scalar (one compilation serves the whole grid);
  ``example_inputs`` (a batch of inputs, or its shape) is needed by the K-FAC ones.
  """
  apply_fn = apply_mlp
  if name == "sgd":
    return optax.sgd(learning_rate, momentum=0.9)
  if name == "adam":
    return optax.adam(learning_rate)
  if name in ("ng_exact", "ng_empirical"):
    return gradest.natural_gradient(
      learning_rate,
      apply_fn,
      likelihood,
      kind="exact" if name == "ng_exact" else "empirical",
      damping=settings.damping,
      adapt_damping=True,
      cg_maxiter=settings.cg_maxiter,
      cg_tol=1e-4,
    )
  if name == "diagonal":
    return optax.chain(
      gradest.scale_by_fisher_diagonal(apply_fn, likelihood, decay=0.95, damping=1e-4),
      optax.scale_by_learning_rate(learning_rate),
    )
  if name == "kfac_gradest":
    return gradest.kfac(
      learning_rate,
      apply_fn,
      likelihood,
      example_inputs=example_inputs,
      momentum=settings.kfac_momentum,
      damping=settings.kfac_damping,
      curvature_update_period=settings.kfac_curvature_period,
      inverse_update_period=settings.kfac_inverse_period,
      kl_clip=settings.kfac_kl_clip,
    )
  if name == "kfac_gradest_adaptive":
    # kfac-jax's defaults: factors every step, inverses every 5, damping adapted every 5.
    return gradest.kfac(
      None,
      apply_fn,
      likelihood,
      example_inputs=example_inputs,
      damping=settings.kfac_adaptive_damping,
      adapt_damping=True,
      damping_factor=settings.kfac_damping_factor,
      curvature_update_period=settings.kfac_adaptive_curvature_period,
      inverse_update_period=5,
      damping_adaptation_period=5,
    )
  raise ValueError(f"unknown optimizer {name!r}")


def optimizer_settings(name: str, settings: TrainSettings) -> str:
  """The settings of an optimizer other than its learning rate, in words (for the table)."""
  s = settings
  return {
    "sgd": "momentum 0.9",
    "adam": "b1 0.9, b2 0.999",
    "ng_exact": f"CG {s.cg_maxiter}, damping {s.damping:g} adapted",
    "ng_empirical": f"CG {s.cg_maxiter}, damping {s.damping:g} adapted",
    "diagonal": "decay 0.95, damping 1e-4",
    "kfac_gradest": (
      f"momentum {s.kfac_momentum:g}, damping {s.kfac_damping:g}, kl_clip {s.kfac_kl_clip}, "
      f"factors/{s.kfac_curvature_period}, inverses/{s.kfac_inverse_period}"
    ),
    "kfac_gradest_adaptive": (
      f"lr+momentum by quadratic model, damping {s.kfac_adaptive_damping:g} adapted/5 "
      f"(x{s.kfac_damping_factor:.3g}), factors/{s.kfac_adaptive_curvature_period}, "
      "inverses/5"
    ),
    "kfac_jax": (
      f"lr+momentum by quadratic model, damping {s.kfac_adaptive_damping:g} adapted/5, "
      "factors/1, inverses/5"
    ),
  }[name]


# Training runs: one jitted step per optimizer, timed alike ------------------------------


@dataclasses.dataclass
class Run:
  """One training run of one optimizer (and learning rate), advanced a step at a time.

  ``step(params, state, key) -> (params, state, loss)`` (the loss before the step) is
  compiled before the timed steps; ``keys`` holds one fresh key per step
  (``jax.random.fold_in(key, step)``), drawn before the timing.
  """

  optimizer: str
  learning_rate: float | None
  step: Any
  params: Any
  state: Any
  keys: list
  compile_seconds: float
  warmup_steps: int = 0
  losses: list = dataclasses.field(default_factory=list)
  times: list = dataclasses.field(default_factory=list)

  def advance(self, i: int) -> None:
    """Takes step ``i``, timing it from the call until its outputs are ready."""
    clock = Stopwatch()
    out = jax.block_until_ready(self.step(self.params, self.state, self.keys[i]))
    self.times.append(clock())
    self.params, self.state, loss = out
    self.losses.append(loss)


def step_keys(key, steps: int) -> list:
  """``[jax.random.fold_in(key, i) for i < steps]``, drawn in one call."""
  keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(steps))
  return list(keys)


@functools.partial(jax.jit, static_argnames=("problem", "optimizer", "settings"))
def init_state(problem, optimizer, settings, learning_rate, params, batch):
  opt = make_optimizer(optimizer, learning_rate, SPECS[problem][1], settings, batch[0])
  return opt.init(params)


@functools.partial(jax.jit, static_argnames=("problem", "optimizer", "settings"))
def train_step(problem, optimizer, settings, learning_rate, params, state, batch, key):
  """One full-batch step of a gradest or optax optimizer: ``(params, state, loss)``."""
  likelihood = SPECS[problem][1]
  opt = make_optimizer(optimizer, learning_rate, likelihood, settings, batch[0])
  objective = functools.partial(loss_function(likelihood), batch=batch)
  value, grads = jax.value_and_grad(objective)(params)
  updates, state = opt.update(
    grads, state, params, batch=batch, key=key, value=value, value_fn=objective
  )
  return optax.apply_updates(params, updates), state, value


def gradest_runs(problem, optimizer, grid, settings, params, batch, key, fast_compile=False):
  """A :class:`Run` per learning rate of the grid (one compilation serves them all)."""
  lrs = LEARNING_RATES[optimizer][:grid]
  lr0 = jnp.float32(lrs[0] if lrs[0] is not None else 0.0)
  state = init_state(problem, optimizer, settings, lr0, params, batch)
  compiled = compile_ahead(
    train_step,
    (problem, optimizer, settings, lr0, params, state, batch, key),
    fast=fast_compile,
  )
  runs = []
  for lr in lrs:
    lr_arr = jnp.float32(0.0 if lr is None else lr)
    fn = functools.partial(_call_step, compiled.executable, lr_arr, batch)
    state = init_state(problem, optimizer, settings, lr_arr, params, batch)
    runs.append(Run(optimizer, lr, fn, params, state, [], compiled.seconds))
  return runs


def _call_step(executable, lr, batch, params, state, key):
  return executable(lr, params, state, batch, key)


# kfac-jax ------------------------------------------------------------------------------


def kfac_jax_status() -> tuple[bool, str, str | None]:
  """``(available, status, version)``: whether kfac-jax imports and steps with this JAX."""
  try:
    import kfac_jax
  except ImportError:
    return False, "not installed (pip install 'gradest[kfac]')", None
  version = getattr(kfac_jax, "__version__", "?")
  try:
    _, params, batch = make_problem("logreg", jax.random.key(0), _tiny_data())
    kfac_jax_run("logreg", TrainSettings(), params, batch, warmup_steps=1)
  except Exception as err:  # report any failure in the table instead of crashing
    message = f"{type(err).__name__}: {err}".splitlines()[0][:120]
    return False, f"kfac-jax {version} fails with jax {jax.__version__} ({message})", version
  return True, "ok", version


def _tiny_data():
  x = jax.random.uniform(jax.random.key(0), (16, 64))
  return x, jnp.arange(16, dtype=jnp.int32) % 10


def kfac_jax_run(problem, settings, params, batch, warmup_steps=6) -> Run:
  """kfac-jax's optimizer (adaptive learning rate, momentum and damping) as a :class:`Run`.

  kfac-jax compiles a variant of its step for each combination of its per-step
  switches (curvature update, damping update: the latter first at step 4); the first
  ``warmup_steps`` steps are taken on a throwaway copy to compile them all, and their
  seconds, less the steps' own cost measured later, are its compile seconds.
  """
  import kfac_jax

  likelihood = SPECS[problem][1]
  loss_fn = loss_function(likelihood)

  def registered_loss(p, b):
    inputs, targets = b
    outputs = apply_mlp(p, inputs)
    if likelihood == "categorical":
      kfac_jax.register_softmax_cross_entropy_loss(outputs, targets)
    else:
      kfac_jax.register_sigmoid_cross_entropy_loss(outputs, targets)
    return loss_fn(p, b)

  opt = kfac_jax.Optimizer(
    value_and_grad_func=jax.value_and_grad(registered_loss),
    l2_reg=0.0,
    use_adaptive_learning_rate=True,
    use_adaptive_momentum=True,
    use_adaptive_damping=True,
    initial_damping=settings.kfac_adaptive_damping,
    multi_device=False,
    num_burnin_steps=0,
  )
  counter = {"step": 0}

  def step(p, state, rng):
    i = counter["step"]
    counter["step"] += 1
    p, state, stats = opt.step(p, state, rng, batch=batch, global_step_int=i)
    return p, state, stats["loss"]

  copy = lambda tree: jax.tree.map(jnp.copy, tree)  # kfac-jax donates its arguments
  rng = jax.random.PRNGKey(0)
  clock = Stopwatch()
  p, state = copy(params), opt.init(copy(params), rng, batch)
  for k in step_keys(jax.random.fold_in(rng, 1), warmup_steps):
    p, state, _ = jax.block_until_ready(step(p, state, k))
  compile_seconds = clock()
  counter["step"] = 0
  params = copy(params)
  state = opt.init(params, jax.random.fold_in(rng, 2), batch)
  return Run("kfac_jax", None, step, params, state, [], compile_seconds, warmup_steps)


# --------------------------------------------------------------------------------------
# (a) Cost in gradient-equivalents.
# --------------------------------------------------------------------------------------


def cost_functions(args, key):
  sizes = args.cost_sizes
  k1, k2, k3, k4 = jax.random.split(key, 4)
  params = init_mlp(k1, sizes)
  x = jax.random.normal(k2, (args.cost_batch, sizes[0]))
  y = jax.random.randint(k3, (args.cost_batch,), 0, sizes[-1])
  v = jax.tree.map(lambda p: jnp.ones_like(p) / p.size, params)
  batch = (x, y)
  lik = fisher.get_likelihood("categorical")

  def loss(p, b):
    return -jnp.mean(jax.vmap(lik.log_likelihood)(apply_mlp(p, b[0]), b[1]))

  def fvp(kind):
    def fn(p, b, v, k):
      return fisher.fisher_vector_product(
        apply_mlp, p, b, likelihood="categorical", kind=kind, key=k
      )(v)

    return fn

  def ggn(p, b, v, k):
    return fisher.ggn_vector_product(apply_mlp, lambda f, t: -lik.log_likelihood(f, t), p, b)(v)

  def stepper(opt):
    def fn(p, b, v, k):
      state = opt.init(p)
      value, grads = jax.value_and_grad(loss)(p, b)
      updates, state = opt.update(
        grads, state, p, batch=b, key=k, value=value, value_fn=lambda q: loss(q, b)
      )
      return optax.apply_updates(p, updates)

    return fn

  def ng(iters, tol=1e-4, adapt=True):
    return gradest.natural_gradient(
      1.0,
      apply_mlp,
      "categorical",
      damping=1e-3,
      cg_maxiter=iters,
      cg_tol=tol,
      adapt_damping=adapt,
    )

  k = args.cost_cg
  fns = {
    "gradient": lambda p, b, v, key: jax.grad(loss)(p, b),
    "fvp_exact": fvp("exact"),
    "fvp_empirical": fvp("empirical"),
    "fvp_monte_carlo": fvp("monte_carlo"),
    "ggn": ggn,
    "cg_k": stepper(ng(k, tol=1e-30, adapt=False)),
    "cg_2k": stepper(ng(2 * k, tol=1e-30, adapt=False)),
    "step_natural_gradient": stepper(ng(k)),
    "step_fisher_diagonal": stepper(
      optax.chain(gradest.scale_by_fisher_diagonal(apply_mlp, "categorical"), optax.scale(-0.1))
    ),
    "step_adam": stepper(optax.adam(1e-3)),
  }
  return fns, (params, batch, v, k4)


def run_cost(args, key) -> list[dict[str, Any]]:
  fns, fargs = cost_functions(args, key)
  compiled, first_call, compile_seconds = {}, {}, {}
  for name, fn in fns.items():
    compiled[name], compile_seconds[name], _ = compile_ahead(fn, fargs, fast=args.fast_compile)
    first_call[name] = time_call(compiled[name], fargs)
  times = time_interleaved(
    compiled, fargs, args.cost_repeats, args.min_time, first_call, same_number=True
  )
  best = {name: t.min for name, t in times.items()}
  med = {name: t.median for name, t in times.items()}
  k = args.cost_cg
  rows = []
  for name in fns:
    if name in ("cg_k", "cg_2k"):
      continue
    rows.append(_cost_row(name, best[name], med[name], best["gradient"], med["gradient"]))
  rows.append(
    _cost_row(
      "cg_iteration",
      (best["cg_2k"] - best["cg_k"]) / k,
      (med["cg_2k"] - med["cg_k"]) / k,
      best["gradient"],
      med["gradient"],
    )
  )
  products = cost_products(args)
  for r in rows:
    r["compile_seconds"] = round(compile_seconds.get(r["function"], math.nan), 2)
    r["products"] = products.get(r["function"], 0)
  return rows


def cost_products(args) -> dict[str, int]:
  """Fisher-vector products per call of each cost function (others make none)."""
  single = ("fvp_exact", "fvp_empirical", "fvp_monte_carlo", "ggn", "cg_iteration")
  # CG iterations, plus the product that scales the warm start.
  return {**dict.fromkeys(single, 1), "step_natural_gradient": args.cost_cg + 1}


def _cost_row(name, t, t_med, grad, grad_med):
  return {
    "function": name,
    "ms": 1e3 * t,
    "median_ms": 1e3 * t_med,
    "gradients": t / grad,
    "gradients_median": t_med / grad_med,
  }


# --------------------------------------------------------------------------------------
# (b) Convergence.
# --------------------------------------------------------------------------------------


def steps_to_target(losses: Sequence[float], target: float) -> int | None:
  for i, value in enumerate(losses):
    if value <= target:
      return i
  return None


def interleave(runs: Sequence[Run], steps: int) -> None:
  """Advances every run ``steps`` steps, one step each in turn (the order rotating
  every round), so that the machine's noise is shared out alike."""
  for i in range(steps):
    shift = i % len(runs)
    for run in list(runs[shift:]) + list(runs[:shift]):
      run.advance(i)


def run_convergence(
  problem: str,
  optimizers: Sequence[str],
  steps: int,
  grid: int,
  settings: TrainSettings,
  data,
  key,
  kfac_jax: tuple[bool, str, str | None],
  sizes=None,
  fast_compile: bool = False,
) -> list[dict[str, Any]]:
  """Trains every optimizer (every learning rate of its grid) on one problem, interleaved.

  Returns one row per optimizer: its best learning rate (fewest steps to the target,
  then the lowest final loss), with the timings of that run.
  """
  target = TARGETS[problem]
  likelihood, params, batch = make_problem(problem, key, data, sizes)
  loss_fn = jax.jit(loss_function(likelihood))
  runs: dict[str, list[Run]] = {}
  for optimizer in optimizers:
    if optimizer == "kfac_jax":
      if kfac_jax[0]:
        runs[optimizer] = [kfac_jax_run(problem, settings, params, batch)]
      continue
    runs[optimizer] = gradest_runs(
      problem, optimizer, grid, settings, params, batch, key, fast_compile
    )
  every = [r for rs in runs.values() for r in rs]
  for n, run in enumerate(every):
    keys = step_keys(jax.random.fold_in(key, 1 + n), steps)
    run.keys = [jax.random.key_data(k) for k in keys] if run.optimizer == "kfac_jax" else keys
  interleave(every, steps)

  candidates: dict[str, list[dict[str, Any]]] = {}
  for optimizer, rs in runs.items():
    candidates[optimizer] = []
    for run in rs:
      losses = [float(v) for v in run.losses] + [float(loss_fn(run.params, batch))]
      times = np.asarray(run.times)
      compile_seconds = run.compile_seconds
      if run.optimizer == "kfac_jax":  # its warm-up steps ran the compiled steps too
        compile_seconds = max(0.0, compile_seconds - run.warmup_steps * float(np.median(times)))
      candidates[optimizer].append(
        {
          "learning_rate": run.learning_rate,
          "losses": losses,
          "step_seconds": times,
          "compile_seconds": compile_seconds,
          "steps_to_target": steps_to_target(losses, target),
          "final_loss": losses[-1],
        }
      )

  def rank(c):
    s = c["steps_to_target"]
    final = c["final_loss"] if np.isfinite(c["final_loss"]) else math.inf
    return (s if s is not None else math.inf, final)

  best = {name: min(cs, key=rank) for name, cs in candidates.items()}
  adam = best.get("adam")
  reference = best.get("kfac_jax")
  rows = []
  for optimizer in optimizers:
    row: dict[str, Any] = {
      "problem": problem,
      "optimizer": optimizer,
      "settings": optimizer_settings(optimizer, settings),
      "target": target,
      "status": "ok",
      "version": None,
    }
    if optimizer == "kfac_jax":
      row["status"], row["version"] = kfac_jax[1], kfac_jax[2]
    if optimizer not in best:
      row.update({k: None for k in CONVERGENCE_COLUMNS if k not in row})
      row.update(losses=[], seconds=[], grid=[])
      rows.append(row)
      continue
    c = best[optimizer]
    t = c["step_seconds"]
    elapsed = np.concatenate([[0.0], np.cumsum(t)])  # seconds before step i; the total
    s = c["steps_to_target"]
    ref_loss = None if reference is None else reference["final_loss"]
    s_ref = None if ref_loss is None else steps_to_target(c["losses"], ref_loss)
    row.update(
      learning_rate=c["learning_rate"],
      steps=len(t),
      steps_to_target=s,
      seconds_to_target=None if s is None else float(elapsed[s]),
      compile_seconds=round(c["compile_seconds"], 2),
      final_loss=c["final_loss"],
      total_seconds=float(elapsed[-1]),
      ms_per_step_median=1e3 * float(np.median(t)),
      ms_per_step_min=1e3 * float(np.min(t)),
      reference_loss=ref_loss,
      steps_to_reference=s_ref,
      seconds_to_reference=None if s_ref is None else float(elapsed[s_ref]),
    )
    if adam is not None:
      a = adam["step_seconds"]
      row.update(
        vs_adam_median=float(np.median(t) / np.median(a)),
        vs_adam_min=float(np.min(t) / np.min(a)),
        vs_adam_amortized=float(np.mean(t) / np.mean(a)),
      )
    else:
      row.update(vs_adam_median=None, vs_adam_min=None, vs_adam_amortized=None)
    row.update(
      losses=c["losses"],
      seconds=[float(v) for v in elapsed],
      grid=[
        {
          "learning_rate": g["learning_rate"],
          "steps_to_target": g["steps_to_target"],
          "final_loss": g["final_loss"],
          "total_seconds": float(np.sum(g["step_seconds"])),
        }
        for g in candidates[optimizer]
      ],
    )
    rows.append(row)
  return rows


# --------------------------------------------------------------------------------------
# Reporting.
# --------------------------------------------------------------------------------------

COST_COLUMNS = (
  "function",
  "ms",
  "median_ms",
  "gradients",
  "gradients_median",
  "products",
  "compile_seconds",
)
CONVERGENCE_COLUMNS = (
  "problem",
  "optimizer",
  "learning_rate",
  "settings",
  "target",
  "steps",
  "steps_to_target",
  "seconds_to_target",
  "compile_seconds",
  "final_loss",
  "total_seconds",
  "ms_per_step_median",
  "ms_per_step_min",
  "vs_adam_median",
  "vs_adam_min",
  "vs_adam_amortized",
  "reference_loss",
  "steps_to_reference",
  "seconds_to_reference",
  "status",
  "version",
)


COST_TABLE = (
  Column("function", "function"),
  Column("ms", "ms", ".3f"),
  Column("gradients", "gradients", ".2f"),
  Column("(median)", "gradients_median", ".2f"),
  Column("products", lambda r: r.get("products", 0), "d"),
)
CONVERGENCE_TABLE = (
  Column("problem", "problem"),
  Column("optimizer", "optimizer"),
  Column("lr", lambda r: "auto" if r["learning_rate"] is None else f"{r['learning_rate']:g}"),
  Column("steps", "steps", "d"),
  Column("to target", "steps_to_target", "d"),
  Column("seconds", "seconds_to_target", ".2f"),
  Column("compile", "compile_seconds", ".1f"),
  Column("final loss", "final_loss", ".4f"),
  Column("ms/step", "ms_per_step_median", ".2f"),
  Column("x Adam", "vs_adam_median", ".2f"),
  Column("(amort.)", "vs_adam_amortized", ".2f"),
  Column("to kfac-jax", "seconds_to_reference", ".2f"),
  Column("status", lambda r: "" if r["status"] == "ok" else r["status"]),
)


def format_cost_table(rows) -> str:
  return format_table(rows, COST_TABLE)


def format_convergence_table(rows) -> str:
  """The convergence rows as a text table (seconds after compilation; "x Adam": per-step
  cost over Adam's, median and amortized; "to kfac-jax": seconds to kfac-jax's final loss;
  a run that did not happen shows its status)."""
  return format_table(rows, CONVERGENCE_TABLE)


def plot_cost(rows, path):
  plt = pyplot()
  fig, ax = plt.subplots(figsize=(7, 3.8))
  names = [r["function"] for r in rows]
  bars = ax.barh(range(len(rows)), [r["gradients"] for r in rows], color="tab:blue")
  for bar in bars:
    width = bar.get_width()
    if np.isfinite(width):
      ax.annotate(
        f"{width:.2f}",
        (width, bar.get_y() + bar.get_height() / 2),
        xytext=(3, 0),
        textcoords="offset points",
        va="center",
        fontsize=7,
      )
  ax.axvline(1.0, color="k", lw=0.8)
  ax.axvline(2.0, color="tab:red", ls="--", lw=0.8, label="target for one GGN product")
  ax.set_yticks(range(len(rows)), names, fontsize=8)
  ax.margins(x=0.1)  # room for the printed values
  ax.invert_yaxis()
  ax.set_xlabel("cost in gradient-equivalents (time / time of one gradient)")
  ax.set_ylabel("function")
  ax.set_title("Cost of the Fisher and natural-gradient pieces")
  ax.legend(fontsize=7)
  save_figure(fig, path)


def plot_convergence(rows, path):
  """Training loss against steps (top) and against seconds after compilation (bottom)."""
  plt = pyplot()
  problems = list(dict.fromkeys(r["problem"] for r in rows))
  optimizers = list(dict.fromkeys(r["optimizer"] for r in rows))
  styles = series_styles(optimizers)
  fig, axes = plt.subplots(2, len(problems), figsize=(4.6 * len(problems), 7.5), squeeze=False)
  for col, problem in enumerate(problems):
    top, bottom = axes[0][col], axes[1][col]
    for r in rows:
      if r["problem"] != problem or not r["losses"]:
        continue
      losses = np.asarray(r["losses"], dtype=float)
      steps = np.arange(1, len(losses) + 1)
      seconds = np.asarray(r["seconds"], dtype=float)
      lr = r["learning_rate"]
      label = f"{r['optimizer']} (lr {'auto' if lr is None else f'{lr:g}'})"
      plot_series(top, steps, losses, styles[r["optimizer"]], label=label)
      plot_series(bottom, seconds[1:], losses[1:], styles[r["optimizer"]], label=label)
    start = max(
      (r["losses"][0] for r in rows if r["problem"] == problem and r["losses"]), default=1
    )
    for ax in (top, bottom):
      ax.axhline(TARGETS[problem], color="k", ls=":", lw=0.8)
      ax.set_xscale("log")
      ax.set_yscale("log")
      low, high = ax.get_ylim()
      if np.isfinite(start) and high > 3 * start:  # a diverged run: clip it
        ax.set_ylim(low, 3 * start)
      ax.set_ylabel("training loss (mean NLL, nats)")
      ax.grid(True, which="both", lw=0.3, alpha=0.5)
    top.set_title(f"{problem} (target {TARGETS[problem]:g}, dotted)")
    top.set_xlabel("step + 1")
    bottom.set_title(f"{problem}: against time")
    bottom.set_xlabel("seconds after compilation")
  axes[0][0].legend(fontsize=7)
  save_figure(fig, path)


# --------------------------------------------------------------------------------------
# Command line.
# --------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(
    prog="python -m benchmarks.natural_gradient",
    description="Fisher-vector product cost and natural-gradient convergence on digits.",
  )
  parser.add_argument(
    "--cost-sizes",
    type=integer,
    nargs="+",
    default=None,
    help="MLP widths for the cost part (64 512 512 10)",
  )
  parser.add_argument("--cost-batch", type=integer, default=None, help="batch size (1024)")
  parser.add_argument("--cost-cg", type=integer, default=10, help="CG iterations of a step")
  parser.add_argument("--cost-repeats", type=integer, default=None, help="timing repeats (30)")
  parser.add_argument("--min-time", type=float, default=0.05, help="seconds per measurement")
  parser.add_argument(
    "--steps",
    type=integer,
    nargs=4,
    default=None,
    metavar=("LOGREG", "MLP", "AE", "AE_LARGE"),
    help="training steps per problem (100 200 200 100)",
  )
  parser.add_argument(
    "--examples",
    type=integer,
    default=None,
    help="training examples of digits used (all 1797; 256 with --quick)",
  )
  parser.add_argument(
    "--autoencoder-sizes",
    type=integer,
    nargs="+",
    default=None,
    help="autoencoder widths (64 48 32 16 8 16 32 48 64)",
  )
  parser.add_argument("--grid", type=integer, default=3, help="learning rates tried per optimizer")
  parser.add_argument("--cg-maxiter", type=integer, default=10, help="CG iterations, training")
  parser.add_argument("--damping", type=float, default=1e-2, help="initial damping (ng_*)")
  parser.add_argument("--kfac-damping", type=float, default=1e-2, help="kfac_gradest damping")
  parser.add_argument("--kfac-momentum", type=float, default=0.9, help="kfac_gradest momentum")
  parser.add_argument(
    "--kfac-curvature-period", type=integer, default=2, help="kfac_gradest: steps per factor update"
  )
  parser.add_argument(
    "--kfac-inverse-period",
    type=integer,
    default=10,
    help="kfac_gradest: steps per inverse refresh",
  )
  parser.add_argument(
    "--kfac-kl-clip", type=float, default=1e-2, help="kfac_gradest KL clipping (0: none)"
  )
  parser.add_argument(
    "--kfac-adaptive-curvature-period",
    type=integer,
    default=1,
    help="steps between factor updates of kfac_gradest_adaptive (1)",
  )
  parser.add_argument(
    "--kfac-adaptive-damping",
    type=float,
    default=1.0,
    help="initial damping of kfac_gradest_adaptive and kfac_jax",
  )
  parser.add_argument(
    "--problems",
    nargs="+",
    default=None,
    choices=PROBLEMS,
    help="problems to run (all; logreg and autoencoder with --quick)",
  )
  parser.add_argument("--optimizers", nargs="+", default=list(OPTIMIZERS), choices=OPTIMIZERS)
  parser.add_argument("--skip-cost", action="store_true", help="only the convergence part")
  parser.add_argument("--skip-convergence", action="store_true", help="only the cost part")
  parser.add_argument("--seed", type=integer, default=0, help="PRNG seed")
  parser.add_argument("--out", default=os.path.join("bench_out", "natural_gradient"))
  parser.add_argument("--quick", action="store_true", help="tiny settings (for tests)")
  parser.add_argument(
    "--fast-compile", action="store_true", help="XLA backend optimizations off (implied by --quick)"
  )
  parser.add_argument("--no-plots", action="store_true", help="skip the PNG files")
  parser.add_argument("--quiet", action="store_true", help="no tables")
  args = parser.parse_args(argv)
  q = args.quick
  if args.cost_sizes is None:
    args.cost_sizes = [64, 64, 10] if q else [64, 512, 512, 10]
  if args.cost_batch is None:
    args.cost_batch = 64 if q else 1024
  if args.cost_repeats is None:
    args.cost_repeats = 3 if q else 30
  steps = args.steps or ([10, 10, 10, 10] if q else [100, 200, 200, 100])
  if args.problems is None:
    args.problems = ["logreg", "autoencoder"] if q else list(PROBLEMS)
  if args.examples is None:
    args.examples = 256 if q else 1797
  if args.autoencoder_sizes is None:
    args.autoencoder_sizes = [64, 16, 8, 16, 64] if q else SPECS["autoencoder"][0]
  if q:
    args.fast_compile = True
    args.grid = min(args.grid, 1)
    args.min_time = min(args.min_time, 0.005)
  if len(args.cost_sizes) < 2 or min(args.cost_sizes) < 1:
    parser.error("--cost-sizes needs at least two positive widths")
  if min(steps) < 1 or args.cost_batch < 1 or args.cost_repeats < 1 or args.cost_cg < 1:
    parser.error("--steps, --cost-batch, --cost-repeats and --cost-cg must be >= 1")
  sizes = args.autoencoder_sizes
  if len(sizes) < 2 or min(sizes) < 1 or sizes[0] != 64 or sizes[-1] != 64:
    parser.error("--autoencoder-sizes must start and end with 64 (the pixels)")
  if not 1 <= args.examples <= 1797:
    parser.error("--examples must be in [1, 1797]")
  if args.grid < 1 or args.cg_maxiter < 1:
    parser.error("--grid and --cg-maxiter must be >= 1")
  if args.damping < 0:
    parser.error("--damping must be >= 0")
  if args.skip_cost and args.skip_convergence:
    parser.error("--skip-cost and --skip-convergence leave nothing to run")
  if args.kfac_damping <= 0 or args.kfac_adaptive_damping <= 0:
    parser.error("--kfac-damping and --kfac-adaptive-damping must be > 0")
  if args.kfac_kl_clip < 0:
    parser.error("--kfac-kl-clip must be >= 0 (0: no clipping)")
  if not 0 <= args.kfac_momentum < 1:
    parser.error("--kfac-momentum must be in [0, 1)")
  if min(args.kfac_curvature_period, args.kfac_inverse_period) < 1 or (
    args.kfac_adaptive_curvature_period < 1
  ):
    parser.error("--kfac-curvature-period and --kfac-inverse-period must be >= 1")
  args.steps = dict(zip(PROBLEMS, steps, strict=True))
  return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  """Runs the benchmark; returns ``{'config', 'cost', 'convergence', 'kfac_jax'}``."""
  args = parse_args(argv)
  os.makedirs(args.out, exist_ok=True)
  root = jax.random.key(args.seed)
  clock = Stopwatch()
  cost_rows = [] if args.skip_cost else run_cost(args, jax.random.fold_in(root, 0))
  x, labels = load_digits_data()
  data = (x[: args.examples], labels[: args.examples])
  requested = "kfac_jax" in args.optimizers and not args.skip_convergence
  kfac_jax = kfac_jax_status() if requested else (False, "not requested", None)
  settings = TrainSettings(
    damping=args.damping,
    cg_maxiter=args.cg_maxiter,
    kfac_damping=args.kfac_damping,
    kfac_momentum=args.kfac_momentum,
    kfac_curvature_period=args.kfac_curvature_period,
    kfac_inverse_period=args.kfac_inverse_period,
    kfac_kl_clip=args.kfac_kl_clip or None,
    kfac_adaptive_damping=args.kfac_adaptive_damping,
    kfac_adaptive_curvature_period=args.kfac_adaptive_curvature_period,
  )
  convergence = []
  for pi, problem in enumerate([] if args.skip_convergence else args.problems):
    if not args.quiet:
      print(f"  {problem}: {', '.join(args.optimizers)}", file=sys.stderr, flush=True)
    convergence += run_convergence(
      problem,
      [o for o in args.optimizers if o not in EXCLUDED.get(problem, ())],
      args.steps[problem],
      args.grid,
      settings,
      data,
      jax.random.fold_in(root, 1 + pi),  # the same initialization for every optimizer
      kfac_jax,
      args.autoencoder_sizes if problem == "autoencoder" else None,
      args.fast_compile,
    )
  config = {k: v for k, v in vars(args).items() if k not in ("out", "quiet", "no_plots")}
  config.update(
    backend=jax.default_backend(),
    jax=jax.__version__,
    seconds=round(clock(), 1),
    targets=TARGETS,
  )
  if cost_rows:
    write_csv(cost_rows, os.path.join(args.out, "cost.csv"), COST_COLUMNS)
  if convergence:
    write_csv(convergence, os.path.join(args.out, "convergence.csv"), CONVERGENCE_COLUMNS)
  result = {
    "config": config,
    "cost": cost_rows,
    "convergence": convergence,
    "kfac_jax": {"available": kfac_jax[0], "status": kfac_jax[1], "version": kfac_jax[2]},
  }
  write_json(result, os.path.join(args.out, "natural_gradient.json"))
  if not args.no_plots:
    if cost_rows:
      plot_cost(cost_rows, os.path.join(args.out, "cost.png"))
    if convergence:
      plot_convergence(convergence, os.path.join(args.out, "convergence.png"))
  if not args.quiet:
    if cost_rows:
      sizes = "-".join(map(str, args.cost_sizes))
      print(f"(a) cost, MLP {sizes}, batch {args.cost_batch}, in gradient-equivalents")
      print(format_cost_table(cost_rows))
      print()
    if convergence:
      print("(b) convergence on digits (best learning rate of the grid; seconds after compilation)")
      print(format_convergence_table(convergence))
      version = f" {kfac_jax[2]}" if kfac_jax[2] else ""
      print(f"\nkfac-jax{version}: {kfac_jax[1]} (jax {jax.__version__})")
    print(f"{config['seconds']} s; written to {args.out}")
  return result


if __name__ == "__main__":
  main()
