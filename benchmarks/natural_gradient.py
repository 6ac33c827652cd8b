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
  cross-entropy), scaled down to 64-48-32-16-8-16-32-48-64.

Each optimizer runs ``--steps`` steps for every learning rate of its grid (one jitted
``lax.scan``; the learning rate is an argument, so one compilation per problem and
optimizer). Reported for the best learning rate (fewest steps to the target, then the
lowest final loss): the number of steps to reach the problem's target training loss,
the seconds that took (measured seconds per step, compilation excluded, times the
steps), the final loss, and the seconds per step. The optimizers: SGD with momentum
0.9, Adam, :func:`gradest.natural_gradient` with the exact Fisher (``ng_exact``) and
with the empirical Fisher (``ng_empirical``), both with Levenberg-Marquardt damping and
``--cg-maxiter`` CG iterations, :func:`gradest.scale_by_fisher_diagonal` with sampled
labels (``diagonal``), and kfac-jax's optimizer (adaptive learning rate, momentum and
damping) when it is installed and works with the installed JAX (``pip install
gradest[kfac]``); otherwise its row says why it did not run.

Outputs (in ``--out``): ``cost.csv``, ``convergence.csv``, ``natural_gradient.json``
(everything, curves included, and every learning rate's result), ``cost.png`` and
``convergence.png``. ``--quick`` (for the test) shrinks everything: a 64-64-10 MLP for the
cost, 256 examples, a 64-16-8-16-64 autoencoder, two problems, 10 steps, one learning
rate, and XLA's backend optimizations off (``--fast-compile``), so its timings mean
nothing.

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
  Stopwatch,
  compile_ahead,
  pyplot,
  time_call,
  time_interleaved,
  write_csv,
  write_json,
)
from gradest import fisher
from gradest.models import apply_mlp, init_mlp

OPTIMIZERS = ("sgd", "adam", "ng_exact", "ng_empirical", "diagonal", "kfac")
PROBLEMS = ("logreg", "mlp", "autoencoder")
LEARNING_RATES = {
  "sgd": (0.1, 0.3, 1.0),
  "adam": (0.003, 0.01, 0.03),
  "ng_exact": (0.3, 1.0),
  "ng_empirical": (0.1, 0.3, 1.0),
  "diagonal": (0.01, 0.03, 0.1),
}


@dataclasses.dataclass(frozen=True)
class TrainSettings:
  """The settings of the natural-gradient optimizers (hashable: a static jit argument)."""

  damping: float = 1e-2
  cg_maxiter: int = 10


# Target training losses: reached by the better optimizers well within the default steps.
TARGETS = {"logreg": 0.05, "mlp": 0.01, "autoencoder": 20.0}


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


def make_optimizer(name: str, learning_rate, likelihood, settings: TrainSettings):
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
  raise ValueError(f"unknown optimizer {name!r}")


@functools.partial(jax.jit, static_argnames=("problem", "optimizer", "steps", "settings"))
def train(problem, optimizer, steps, settings, learning_rate, params, batch, key):
  """``steps`` full-batch steps; the training loss before each step and after the last."""
  likelihood = SPECS[problem][1]
  opt = make_optimizer(optimizer, learning_rate, likelihood, settings)
  objective = functools.partial(loss_function(likelihood), batch=batch)

  def step(carry, k):
    p, state = carry
    value, grads = jax.value_and_grad(objective)(p)
    updates, state = opt.update(
      grads, state, p, batch=batch, key=k, value=value, value_fn=objective
    )
    return (optax.apply_updates(p, updates), state), value

  (params, _), losses = jax.lax.scan(step, (params, opt.init(params)), jax.random.split(key, steps))
  return jnp.append(losses, objective(params))


# kfac-jax ------------------------------------------------------------------------------


def kfac_status() -> tuple[bool, str]:
  """Whether kfac-jax is importable and takes a step with the installed JAX."""
  try:
    import kfac_jax
  except ImportError:
    return False, "not installed (pip install 'gradest[kfac]')"
  version = getattr(kfac_jax, "__version__", "?")
  try:
    run_kfac("logreg", 1, jax.random.key(0), None)
  except Exception as err:  # report any failure in the table instead of crashing
    message = f"{type(err).__name__}: {err}".splitlines()[0][:120]
    return False, f"kfac-jax {version} fails with jax {jax.__version__} ({message})"
  return True, f"kfac-jax {version}"


def run_kfac(problem: str, steps: int, key, data, sizes=None):
  """kfac-jax's optimizer with adaptive learning rate, momentum and damping.

  Returns the losses before each step and after the last, and the seconds per step
  (the first step, which compiles, excluded).
  """
  import kfac_jax

  likelihood, params, batch = make_problem(problem, key, data, sizes)
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
    initial_damping=1.0,
    multi_device=False,
    num_burnin_steps=0,
  )
  rng = jax.random.PRNGKey(1)
  state = opt.init(params, rng, batch)
  losses, clock = [], Stopwatch()
  for i in range(steps):
    if i == 1:
      clock.restart()
    params, state, stats = opt.step(params, state, rng, batch=batch, global_step_int=i)
    losses.append(float(stats["loss"]))
  per_step = clock() / (steps - 1) if steps > 1 else math.nan
  losses.append(float(loss_fn(params, batch)))
  return losses, per_step


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


def run_convergence(
  problem: str,
  optimizer: str,
  steps: int,
  grid: int,
  settings,
  data,
  key,
  kfac,
  sizes=None,
  fast_compile: bool = False,
) -> dict[str, Any]:
  target = TARGETS[problem]
  row: dict[str, Any] = {"problem": problem, "optimizer": optimizer, "target": target}
  k_init, k_run = jax.random.split(key)
  if optimizer == "kfac":
    available, status = kfac
    row["status"] = status
    if not available:
      row.update(
        learning_rate=None,
        steps_to_target=None,
        seconds_to_target=None,
        final_loss=None,
        seconds_per_step=None,
        compile_seconds=None,
        losses=[],
      )
      return row
    losses, per_step = run_kfac(problem, steps, k_init, data, sizes)
    candidates = [("adaptive", losses, per_step, math.nan)]
  else:
    row["status"] = "ok"
    _, params, batch = make_problem(problem, k_init, data, sizes)
    compiled, compile_seconds, _ = compile_ahead(
      train, (problem, optimizer, steps, settings, 0.1, params, batch, k_run), fast=fast_compile
    )
    candidates = []
    for lr in LEARNING_RATES[optimizer][:grid]:
      clock = Stopwatch()
      losses = np.asarray(jax.block_until_ready(compiled(lr, params, batch, k_run)))
      per_step = clock() / steps
      candidates.append((lr, [float(v) for v in losses], per_step, compile_seconds))

  def rank(c):
    s = steps_to_target(c[1], target)
    final = c[1][-1] if np.isfinite(c[1][-1]) else math.inf
    return (s if s is not None else math.inf, final)

  row["grid"] = [
    {
      "learning_rate": c[0],
      "steps_to_target": steps_to_target(c[1], target),
      "final_loss": c[1][-1],
    }
    for c in candidates
  ]
  lr, losses, per_step, compile_seconds = min(candidates, key=rank)
  s = steps_to_target(losses, target)
  row.update(
    learning_rate=lr,
    steps_to_target=s,
    seconds_to_target=None if s is None else round(s * per_step, 3),
    final_loss=losses[-1],
    seconds_per_step=per_step,
    compile_seconds=None if math.isnan(compile_seconds) else round(compile_seconds, 2),
    losses=losses,
  )
  return row


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
  "target",
  "steps_to_target",
  "seconds_to_target",
  "final_loss",
  "seconds_per_step",
  "compile_seconds",
  "status",
)


def format_cost_table(rows) -> str:
  head = f"{'function':<24} {'ms':>9} {'gradients':>10} {'(median)':>9} {'products':>9}"
  lines = [head, "-" * len(head)]
  for r in rows:
    lines.append(
      f"{r['function']:<24} {r['ms']:>9.3f} {r['gradients']:>10.2f} {r['gradients_median']:>9.2f}"
      f" {r.get('products', 0):>9d}"
    )
  return "\n".join(lines)


def _fmt(x, spec):
  return "-" if x is None else format(x, spec)


def format_convergence_table(rows) -> str:
  head = (
    f"{'problem':<12} {'optimizer':<13} {'lr':>8} {'target':>7} {'steps':>6} {'seconds':>8} "
    f"{'final loss':>10} {'ms/step':>8}"
  )
  lines = [head, "-" * len(head)]
  for r in rows:
    lr = r["learning_rate"]
    lr = "-" if lr is None else (lr if isinstance(lr, str) else f"{lr:g}")
    per_step = None if r["seconds_per_step"] is None else 1e3 * r["seconds_per_step"]
    line = (
      f"{r['problem']:<12} {r['optimizer']:<13} {lr:>8} {r['target']:>7g} "
      f"{_fmt(r['steps_to_target'], 'd'):>6} {_fmt(r['seconds_to_target'], '.2f'):>8} "
      f"{_fmt(r['final_loss'], '.4f'):>10} {_fmt(per_step, '.2f'):>8}"
    )
    if r["status"] != "ok":
      line += f"  {r['status']}"
    lines.append(line)
  return "\n".join(lines)


def plot_cost(rows, path):
  plt = pyplot()
  fig, ax = plt.subplots(figsize=(7, 3.5))
  names = [r["function"] for r in rows]
  ax.barh(range(len(rows)), [r["gradients"] for r in rows], color="tab:blue")
  ax.axvline(1.0, color="k", lw=0.8)
  ax.axvline(2.0, color="tab:red", ls="--", lw=0.8, label="target for one GGN product")
  ax.set_yticks(range(len(rows)), names, fontsize=8)
  ax.invert_yaxis()
  ax.set_xlabel("cost in gradient-equivalents")
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def plot_convergence(rows, path):
  plt = pyplot()
  problems = list(dict.fromkeys(r["problem"] for r in rows))
  fig, axes = plt.subplots(1, len(problems), figsize=(5 * len(problems), 4), squeeze=False)
  for ax, problem in zip(axes[0], problems, strict=True):
    for r in rows:
      if r["problem"] != problem or not r["losses"]:
        continue
      lr = r["learning_rate"]
      ax.plot(r["losses"], label=f"{r['optimizer']} (lr {lr})")
    ax.axhline(TARGETS[problem], color="k", ls=":", lw=0.8)
    ax.set_yscale("log")
    ax.set_title(f"{problem}: training loss")
    ax.set_xlabel("step")
  axes[0][0].legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


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
    type=int,
    nargs="+",
    default=None,
    help="MLP widths for the cost part (64 512 512 10)",
  )
  parser.add_argument("--cost-batch", type=int, default=None, help="batch size (1024)")
  parser.add_argument("--cost-cg", type=int, default=10, help="CG iterations of a step")
  parser.add_argument("--cost-repeats", type=int, default=None, help="timing repeats (30)")
  parser.add_argument("--min-time", type=float, default=0.05, help="seconds per measurement")
  parser.add_argument(
    "--steps",
    type=int,
    nargs=3,
    default=None,
    metavar=("LOGREG", "MLP", "AE"),
    help="training steps per problem (100 200 200)",
  )
  parser.add_argument(
    "--examples",
    type=int,
    default=None,
    help="training examples of digits used (all 1797; 256 with --quick)",
  )
  parser.add_argument(
    "--autoencoder-sizes",
    type=int,
    nargs="+",
    default=None,
    help="autoencoder widths (64 48 32 16 8 16 32 48 64)",
  )
  parser.add_argument("--grid", type=int, default=3, help="learning rates tried per optimizer")
  parser.add_argument("--cg-maxiter", type=int, default=10, help="CG iterations, training")
  parser.add_argument("--damping", type=float, default=1e-2, help="initial damping")
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
  parser.add_argument("--seed", type=int, default=0, help="PRNG seed")
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
  steps = args.steps or ([10, 10, 10] if q else [100, 200, 200])
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
  args.steps = dict(zip(PROBLEMS, steps, strict=True))
  return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  """Runs the benchmark; returns ``{'config', 'cost', 'convergence', 'kfac'}``."""
  args = parse_args(argv)
  os.makedirs(args.out, exist_ok=True)
  root = jax.random.key(args.seed)
  clock = Stopwatch()
  cost_rows = [] if args.skip_cost else run_cost(args, jax.random.fold_in(root, 0))
  x, labels = load_digits_data()
  data = (x[: args.examples], labels[: args.examples])
  requested = "kfac" in args.optimizers and not args.skip_convergence
  kfac = kfac_status() if requested else (False, "not requested")
  settings = TrainSettings(damping=args.damping, cg_maxiter=args.cg_maxiter)
  convergence = []
  for pi, problem in enumerate([] if args.skip_convergence else args.problems):
    for optimizer in args.optimizers:
      if not args.quiet:
        print(f"  {problem} / {optimizer}", file=sys.stderr, flush=True)
      key = jax.random.fold_in(root, 1 + pi)  # same initialization for every optimizer
      steps = args.steps[problem]
      sizes = args.autoencoder_sizes if problem == "autoencoder" else None
      convergence.append(
        run_convergence(
          problem,
          optimizer,
          steps,
          args.grid,
          settings,
          data,
          key,
          kfac,
          sizes,
          args.fast_compile,
        )
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
    "kfac": {"available": kfac[0], "status": kfac[1]},
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
      print("(b) convergence on digits (best learning rate of the grid)")
      print(format_convergence_table(convergence))
      print(f"\nkfac-jax: {kfac[1]}")
    print(f"{config['seconds']} s; written to {args.out}")
  return result


if __name__ == "__main__":
  main()
