r"""Natural-gradient transforms for optax.

Steepest descent with the step measured in KL divergence instead of Euclidean length:

.. math::
  h^\star = \arg\min_h \nabla L(\theta)^\top h \ \text{ s.t. }\
    \mathrm{KL}(p_\theta \,\|\, p_{\theta+h}) \approx \tfrac12 h^\top F h = c
  \quad\Longrightarrow\quad h^\star \propto -F^{-1} \nabla L(\theta).

The transforms here solve the damped system :math:`(F + \lambda I)\,x = g` by
conjugate gradients with the Fisher-vector products of :mod:`gradest.fisher`, so no
matrix is ever formed, and return ``x`` (the natural gradient; chain a negative
learning rate, or use the aliases). The solver is gradest's own conjugate gradients on
pytrees rather than ``jax.scipy.sparse.linalg.cg``, because it reports what the
transforms need from its recurrences, at no extra product: the relative residual,
:math:`F x`, and the warm start's product reused as the initial residual. A step with
``cg_maxiter = k`` costs at most ``k + 1`` Fisher-vector products with a warm start,
``k`` without.

The transforms follow optax's conventions: each factory returns an
``optax.GradientTransformationExtraArgs`` whose ``update(updates, state, params, *,
batch, ...)`` takes the current batch and the other per-step inputs as keyword-only
extra arguments; the state is a ``NamedTuple`` of arrays (it checkpoints and crosses
``jax.jit``); they compose in ``optax.chain`` with clipping, schedules, weight decay and
``optax.MultiSteps``.

Extra arguments (passed to ``update`` or to ``optax.chain(...).update``):

* ``batch``: ``(inputs, targets)`` for the Fisher (see :mod:`gradest.fisher`), required;
* ``key``: a PRNG key, required for ``kind='monte_carlo'``;
* ``value_fn``: ``value_fn(params) -> scalar``, the training loss on this batch, for
  Levenberg-Marquardt damping adaptation (the name optax's line searches use);
* ``value``: the loss at ``params``, if already computed (saves one evaluation).

Unknown extra arguments are ignored, so other ``GradientTransformationExtraArgs``
(line searches, ...) can share the chain.

References:
  Amari, *Natural Gradient Works Efficiently in Learning*, Neural Computation 1998.
  Martens, *Deep learning via Hessian-free optimization*, ICML 2010. Martens, *New
  Insights and Perspectives on the Natural Gradient Method*, JMLR 2020 (arXiv 2014).
  Martens & Grosse, *Optimizing Neural Networks with Kronecker-factored Approximate
  Curvature*, ICML 2015. Schulman et al., *Trust Region Policy Optimization*, ICML 2015.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
import optax.tree_utils as otu

from gradest._src.base import (
  Array,
  PyTree,
  check_choice,
  check_key,
  check_positive_int,
  check_real,
  check_same_structure,
)
from gradest._src.fisher import (
  DIAGONAL_KINDS,
  KINDS,
  Likelihood,
  fisher_diagonal,
  fisher_vector_product,
  get_likelihood,
)


class NaturalGradientState(NamedTuple):
  """State of :func:`scale_by_natural_gradient`.

  Attributes:
    damping: ``()`` float32, the damping :math:`\\lambda` the next step uses.
    solution: like ``params`` (same shapes and dtypes), the last solution ``x``: the
      warm start of the next solve (zeros before the first step).
    residual: ``()`` float32, :math:`\\|(F + \\lambda I)x - g\\| / \\|g\\|` of the last
      solve, from CG's residual recurrence (equal to the directly computed residual
      up to round-off); 0 before the first step.
    converged: ``()`` bool, ``residual <= cg_tol`` at the last step (True before).
    reduction_ratio: ``()`` float32, the last step's ratio :math:`\\rho` of actual to
      predicted loss change (0 when damping is not adapted, and before the first step).
    count: ``()`` int32, the number of steps taken.
  """

  damping: Array
  solution: PyTree
  residual: Array
  converged: Array
  reduction_ratio: Array
  count: Array


class KLTrustRegionState(NamedTuple):
  """State of :func:`scale_by_kl_trust_region`.

  Attributes:
    solution: like ``params``, the last conjugate-gradient solution (warm start).
    residual: ``()`` float32, relative residual of the last solve.
    converged: ``()`` bool, ``residual <= cg_tol`` at the last step.
    step_scale: ``()`` float32, the factor :math:`\\sqrt{2\\delta / x^\\top F x}` applied
      to the last solution (0 before the first step).
    count: ``()`` int32, the number of steps taken.
  """

  solution: PyTree
  residual: Array
  converged: Array
  step_scale: Array
  count: Array


class FisherDiagonalState(NamedTuple):
  """State of :func:`scale_by_fisher_diagonal`.

  Attributes:
    diagonal: like ``params``, the exponential moving average of the diagonal Fisher
      (before bias correction).
    count: ``()`` int32, the number of steps taken.
  """

  diagonal: PyTree
  count: Array


# --------------------------------------------------------------------------------------
# Shared pieces.
# --------------------------------------------------------------------------------------


def _check_solver_args(likelihood, kind, damping, cg_maxiter, cg_tol, num_samples, kinds=KINDS):
  lik = get_likelihood(likelihood)
  check_choice(kind, "kind", kinds)
  damping = check_real(
    damping,
    "damping",
    fix="Use damping=0 for none, or a small positive value such as 1e-3.",
  )
  maxiter = check_positive_int(cg_maxiter, "cg_maxiter")
  tol = check_real(cg_tol, "cg_tol", strict=True)
  check_positive_int(num_samples, "num_samples")
  return lik, damping, maxiter, tol


def check_step_inputs(
  name: str,
  params: Any,
  batch: Any,
  kind: str,
  key: Any,
  *,
  adapt_damping: bool = False,
  value_fn: Any = None,
) -> None:
  """Raises a clear error for a missing per-step input of a curvature transform's update."""
  if params is None:
    raise ValueError(
      f"{name} needs the current parameters: call update(updates, state, params, batch=...)."
    )
  if batch is None:
    raise TypeError(
      f"{name}.update needs the current batch as a keyword argument: "
      "update(updates, state, params, batch=(inputs, targets))."
    )
  if kind == "monte_carlo":
    if key is None:
      raise TypeError(
        f"{name} with kind='monte_carlo' samples targets and needs key= at every update "
        "(a fresh PRNG key per step)."
      )
    check_key(key)
  if adapt_damping and value_fn is None:
    raise TypeError(
      f"{name}(adapt_damping=True) needs value_fn= at every update: value_fn(params) -> "
      "the loss on this batch."
    )


def levenberg_marquardt(
  damping: Array, actual: Array, predicted: Array, factor: float, lo: float, hi: float
) -> tuple[Array, Array]:
  r"""The Levenberg-Marquardt rule: ``(new damping, reduction ratio)``.

  :math:`\rho` is the actual over the predicted loss change when the model predicts a
  decrease, 0 when it predicts an increase (a step past the model's minimum), 1/2 when
  it predicts no change, and the lowest float32 when the trial loss is not finite. The
  damping is divided by ``factor`` when :math:`\rho > 3/4`, multiplied by it when
  :math:`\rho < 1/4`, and kept in ``[lo, hi]``.
  """
  actual = actual.astype(jnp.float32)
  predicted = predicted.astype(jnp.float32)
  fit = actual / jnp.where(predicted < 0, predicted, -1.0)
  ratio = jnp.where(predicted < 0, fit, jnp.where(predicted > 0, 0.0, 0.5))
  ratio = jnp.where(jnp.isfinite(actual), ratio, jnp.finfo(jnp.float32).min)
  new = jnp.where(
    ratio > 0.75, damping / factor, jnp.where(ratio < 0.25, damping * factor, damping)
  )
  return jnp.clip(new, lo, hi).astype(jnp.float32), ratio.astype(jnp.float32)


class _Solution(NamedTuple):
  """What :func:`solve_damped_system` returns: ``x``, ``F x``, the residual, the products."""

  x: PyTree
  fx: PyTree
  residual: Array
  iterations: Array


def _compute_dtype(tree: PyTree):
  """float32, or float64 when a leaf is: the dtype of CG's scalars."""
  return jnp.result_type(jnp.float32, *jax.tree.leaves(tree))


def _dot(a: PyTree, b: PyTree, dtype) -> Array:
  leaves = jax.tree.leaves(
    jax.tree.map(lambda u, v: jnp.vdot(u.astype(dtype), v.astype(dtype)), a, b)
  )
  return sum(leaves, jnp.zeros((), dtype))


def _max_abs(tree: PyTree, dtype) -> Array:
  return jnp.asarray(otu.tree_norm(tree, ord="inf"), dtype)


def _axpy(alpha: Array, x: PyTree, y: PyTree) -> PyTree:
  """``y + alpha x`` leaf by leaf, each leaf keeping its dtype."""
  return jax.tree.map(lambda xi, yi: (yi + alpha * xi).astype(yi.dtype), x, y)


def _scale(alpha: Array, x: PyTree) -> PyTree:
  return jax.tree.map(lambda xi: (alpha * xi).astype(xi.dtype), x)


def solve_damped_system(fvp, g, damping, x0, tol, maxiter) -> _Solution:
  r"""Conjugate gradients on :math:`A x = g`, :math:`A = F + \lambda I`, on pytrees.

  Returns ``x``, ``F x`` and the relative residual :math:`\|g - A x\| / \|g\|`, all
  from CG's recurrences: with a warm start ``x0`` the solve costs ``maxiter + 1``
  Fisher-vector products at most (``maxiter`` from zero), one per iteration and none
  to report. Iterations stop when the residual is at most ``tol`` or after ``maxiter``.

  * **Warm start.** ``x0`` (``None`` for zero) is first scaled by the step length that
    minimizes the quadratic model :math:`q(x) = \frac12 x^\top A x - g^\top x` along
    it (clipped at 0): :math:`x_0 \leftarrow \max(0, g^\top x_0 / x_0^\top A x_0)\,
    x_0`. Then :math:`q(x_0) \le q(0) = 0`, and since CG never increases :math:`q`, the
    solution predicts a decrease however few iterations run. The product
    :math:`A x_0` that the scaling needs also gives the initial residual
    :math:`r_0 = g - \alpha A x_0`.
  * **Recurrences.** Besides :math:`x_{k+1} = x_k + \alpha_k p_k` and
    :math:`r_{k+1} = r_k - \alpha_k A p_k`, the undamped :math:`F x_{k+1} = F x_k +
    \alpha_k F p_k` is accumulated from the same products (not as :math:`g - r -
    \lambda x`, which cancels when :math:`\lambda` dominates :math:`F`), so
    :math:`x^\top F x` (the reduction ratio's model, the trust region's scale) keeps
    the relative accuracy of ``x``. The recurrence residual departs from the true
    :math:`g - A x` only by round-off.
  * **Scaling.** The system is solved for :math:`g / s` with :math:`s =
    \max_i |g_i|` (and the warm start's direction normalized alike), so that squared
    norms neither overflow nor underflow in float32 however large or small the
    gradient; the results are scaled back.
  * **Breakdown.** An iteration whose direction has no positive curvature
    (:math:`p^\top A p \le 0`, possible only for a singular undamped ``F``) ends the
    solve without moving.

  Scalars are float32 (float64 for float64 trees); each leaf keeps its dtype.
  """
  dtype = _compute_dtype(g)
  lam = jax.tree.map(lambda leaf: jnp.asarray(damping, leaf.dtype), g)

  def products(v):
    fv = fvp(v)
    return fv, jax.tree.map(lambda f, d, vi: f + d * vi, fv, lam, v)

  s = _max_abs(g, dtype)
  s = jnp.where((s > 0) & jnp.isfinite(s), s, jnp.ones_like(s))
  b = _scale(1 / s, g)
  if x0 is None:
    x, fx, r = otu.tree_zeros_like(b), otu.tree_zeros_like(b), b
  else:
    t = _max_abs(x0, dtype)
    u = _scale(1 / jnp.where(t > 0, t, jnp.ones_like(t)), x0)
    fu, au = products(u)
    curvature = _dot(u, au, dtype)
    alpha = jnp.where(curvature > 0, _dot(b, u, dtype) / jnp.where(curvature > 0, curvature, 1), 0)
    alpha = jnp.maximum(alpha, 0)
    x, fx, r = _scale(alpha, u), _scale(alpha, fu), _axpy(-alpha, au, b)
  norm_b = jnp.sqrt(_dot(b, b, dtype))
  threshold = jnp.square(tol * norm_b).astype(dtype)
  rs = _dot(r, r, dtype)

  def cond(carry):
    k, _, _, _, _, rs, stalled = carry
    return (k < maxiter) & (rs > threshold) & ~stalled

  def body(carry):
    k, x, fx, r, p, rs, _ = carry
    fp, ap = products(p)
    curvature = _dot(p, ap, dtype)
    stalled = ~(curvature > 0)
    alpha = jnp.where(stalled, 0, rs / jnp.where(stalled, 1, curvature))
    x, fx, r = _axpy(alpha, p, x), _axpy(alpha, fp, fx), _axpy(-alpha, ap, r)
    rs_new = _dot(r, r, dtype)
    p = _axpy(rs_new / jnp.where(rs > 0, rs, 1), p, r)
    return k + 1, x, fx, r, p, rs_new, stalled

  init = (jnp.zeros((), jnp.int32), x, fx, r, r, rs, jnp.zeros((), jnp.bool_))
  k, x, fx, r, _, rs, _ = jax.lax.while_loop(cond, body, init)
  residual = jnp.where(norm_b > 0, jnp.sqrt(rs) / jnp.where(norm_b > 0, norm_b, 1), 0)
  return _Solution(_scale(s, x), _scale(s, fx), residual.astype(jnp.float32), k)


def _cast_like(tree: PyTree, like: PyTree) -> PyTree:
  return jax.tree.map(lambda a, b: jnp.asarray(a, jnp.result_type(b)), tree, like)


# --------------------------------------------------------------------------------------
# Natural gradient.
# --------------------------------------------------------------------------------------


def scale_by_natural_gradient(
  apply_fn: Callable[[PyTree, PyTree], Array],
  likelihood: str | Likelihood,
  *,
  damping: float = 1e-3,
  cg_maxiter: int = 20,
  cg_tol: float = 1e-4,
  kind: str = "exact",
  num_samples: int = 1,
  warm_start: bool = True,
  adapt_damping: bool = False,
  damping_factor: float = 1.5,
  min_damping: float = 1e-8,
  max_damping: float = 1e4,
  reject_steps: bool = True,
) -> optax.GradientTransformationExtraArgs:
  r"""Preconditions updates by the damped Fisher: returns ``x`` with :math:`(F + \lambda I)x = g`.

  .. math::
    x = (F(\theta) + \lambda I)^{-1} g, \qquad
    F(\theta) = \frac1N \sum_i J_i^\top H_i J_i,

  solved by at most ``cg_maxiter`` conjugate-gradient iterations, each one
  Fisher-vector product of the chosen ``kind`` on the step's ``batch`` (see
  :func:`gradest.fisher.fisher_vector_product`; ``'empirical'`` uses the observed
  targets and is *not* the Fisher). The model is linearized once per step. The solve
  starts from the previous step's solution (``warm_start``; one more product, which
  scales it so that the step always predicts a decrease), and its relative residual
  and a ``converged`` flag are stored in the state: a solve that stopped at
  ``cg_maxiter`` is visible there, never silent.

  **Damping adaptation** (``adapt_damping=True``, Levenberg-Marquardt): after the
  solve, the loss at the trial point :math:`\theta - x` is compared with the
  quadratic model's prediction,

  .. math::
    \rho = \frac{L(\theta - x) - L(\theta)}{-g^\top x + \frac12 x^\top F x},

  and :math:`\lambda` is divided by ``damping_factor`` when :math:`\rho > 3/4`,
  multiplied by it when :math:`\rho < 1/4` (or when the trial loss is not finite),
  and kept inside ``[min_damping, max_damping]``. With ``reject_steps`` (the default),
  a step whose trial loss is not lower (:math:`\rho \le 0`) is rejected, as in
  Levenberg-Marquardt: the update is zero and only the damping changes. The ratio is
  measured at the full
  model step (learning rate 1), as in Hessian-free optimization, independently of the
  learning rate applied afterwards. It needs the extra argument ``value_fn`` (the
  loss on this batch as a function of the parameters) and costs one evaluation of it
  (two without ``value``).

  Args:
    apply_fn: ``apply_fn(params, inputs) -> outputs`` (a flax ``model.apply`` works).
    likelihood: a name (``'categorical'``, ``'bernoulli'``, ``'gaussian'``,
      ``'gaussian_learned_scale'``) or a :class:`gradest.fisher.Likelihood`.
    damping: :math:`\lambda \ge 0` (the initial value when adapted).
    cg_maxiter: conjugate-gradient iterations per step, ``>= 1``.
    cg_tol: relative residual at which CG stops, ``> 0``.
    kind: ``'exact'``, ``'empirical'`` or ``'monte_carlo'`` (needs ``key``).
    num_samples: sampled targets per example for ``'monte_carlo'``.
    warm_start: start CG from the previous solution instead of zero.
    adapt_damping: adapt :math:`\lambda` from the reduction ratio (needs ``value_fn``).
    damping_factor: the factor (``> 1``) by which :math:`\lambda` moves.
    min_damping, max_damping: bounds of the adapted damping.
    reject_steps: with ``adapt_damping``, return a zero update when the trial step
      does not lower the loss.

  Returns:
    An ``optax.GradientTransformationExtraArgs``. ``update(updates, state, params, *,
    batch, key=None, value=None, value_fn=None)`` returns ``x`` (same structure as
    ``updates``) and a :class:`NaturalGradientState`.

  Raises:
    ValueError: negative damping, ``cg_maxiter < 1``, ``cg_tol <= 0``, an unknown
      ``kind`` or likelihood, ``damping_factor <= 1``; at update time, no ``params``.
    TypeError: at update time, no ``batch``; no ``key`` for ``'monte_carlo'``; no
      ``value_fn`` when adapting the damping.

  Examples:
    >>> import jax, jax.numpy as jnp, optax
    >>> apply_fn = lambda p, x: x @ p["w"] + p["b"]
    >>> params = {"w": jnp.zeros((4, 3)), "b": jnp.zeros(3)}
    >>> x, y = jnp.ones((8, 4)), jnp.arange(8) % 3
    >>> loss = lambda p: -jnp.mean(jax.nn.log_softmax(apply_fn(p, x))[jnp.arange(8), y])
    >>> opt = optax.chain(optax.clip_by_global_norm(1.0),
    ...                   natural_gradient(0.5, apply_fn, "categorical", damping=1e-2))
    >>> state = opt.init(params)
    >>> step = jax.jit(lambda p, s: opt.update(jax.grad(loss)(p), s, p, batch=(x, y)))
    >>> updates, state = step(params, state)
    >>> bool(loss(optax.apply_updates(params, updates)) < loss(params))
    True

  References:
    Amari, 1998. Martens, *Deep learning via Hessian-free optimization*, ICML 2010
    (damping by the reduction ratio). Martens, *New Insights and Perspectives on the
    Natural Gradient Method*, JMLR 2020. Martens & Grosse, *K-FAC*, ICML 2015.
  """
  lik, damping, maxiter, tol = _check_solver_args(
    likelihood, kind, damping, cg_maxiter, cg_tol, num_samples
  )
  if adapt_damping:
    factor = check_real(damping_factor, "damping_factor", minimum=1.0, strict=True)
    lo = check_real(min_damping, "min_damping")
    hi = check_real(max_damping, "max_damping", minimum=lo)
  name = "scale_by_natural_gradient"

  def init_fn(params: PyTree) -> NaturalGradientState:
    return NaturalGradientState(
      damping=jnp.asarray(damping, jnp.float32),
      solution=otu.tree_zeros_like(params),
      residual=jnp.zeros((), jnp.float32),
      converged=jnp.ones((), jnp.bool_),
      reduction_ratio=jnp.zeros((), jnp.float32),
      count=jnp.zeros((), jnp.int32),
    )

  def update_fn(
    updates: PyTree,
    state: NaturalGradientState,
    params: PyTree | None = None,
    *,
    batch: Any = None,
    key: Array | None = None,
    value: Array | None = None,
    value_fn: Callable[[PyTree], Array] | None = None,
    **extra_args: Any,
  ) -> tuple[PyTree, NaturalGradientState]:
    del extra_args
    check_step_inputs(
      name, params, batch, kind, key, adapt_damping=adapt_damping, value_fn=value_fn
    )
    check_same_structure(updates, params, "updates", "params")
    fvp = fisher_vector_product(
      apply_fn, params, batch, likelihood=lik, kind=kind, key=key, num_samples=num_samples
    )
    x0 = _cast_like(state.solution, updates) if warm_start else None
    x, fx, residual, _ = solve_damped_system(fvp, updates, state.damping, x0, tol, maxiter)
    new_damping, ratio, out = state.damping, jnp.zeros((), jnp.float32), x
    if adapt_damping:
      current = value_fn(params) if value is None else value
      trial = value_fn(jax.tree.map(lambda p, xi: p - xi.astype(p.dtype), params, x))
      predicted = -otu.tree_vdot(updates, x) + 0.5 * otu.tree_vdot(x, fx)
      new_damping, ratio = levenberg_marquardt(
        state.damping, trial - current, predicted, factor, lo, hi
      )
      if reject_steps:
        keep = (ratio > 0) | (predicted == 0)
        out = jax.tree.map(lambda xi: jnp.where(keep, xi, jnp.zeros_like(xi)), x)
    new_state = NaturalGradientState(
      damping=new_damping,
      solution=_cast_like(x, state.solution),
      residual=residual,
      converged=residual <= tol,
      reduction_ratio=ratio.astype(jnp.float32),
      count=optax.safe_increment(state.count),
    )
    return out, new_state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def natural_gradient(
  learning_rate: optax.ScalarOrSchedule,
  apply_fn: Callable[[PyTree, PyTree], Array],
  likelihood: str | Likelihood,
  **kwargs: Any,
) -> optax.GradientTransformationExtraArgs:
  r"""Natural-gradient descent: :math:`\theta \leftarrow \theta - \eta\,(F + \lambda I)^{-1} g`.

  ``optax.chain(scale_by_natural_gradient(apply_fn, likelihood, **kwargs),
  optax.scale_by_learning_rate(learning_rate))``; ``learning_rate`` may be a schedule.
  See :func:`scale_by_natural_gradient` for the arguments and the extra arguments of
  ``update`` (``batch``, ``key``, ``value``, ``value_fn``).

  Examples:
    >>> import jax.numpy as jnp, optax
    >>> opt = natural_gradient(optax.linear_schedule(1.0, 0.1, 100),
    ...                        lambda p, x: x @ p, "gaussian", damping=1e-3)
    >>> state = opt.init(jnp.zeros(3))
  """
  return optax.chain(
    scale_by_natural_gradient(apply_fn, likelihood, **kwargs),
    optax.scale_by_learning_rate(learning_rate),
  )


# --------------------------------------------------------------------------------------
# KL trust region.
# --------------------------------------------------------------------------------------


def scale_by_kl_trust_region(
  apply_fn: Callable[[PyTree, PyTree], Array],
  likelihood: str | Likelihood,
  *,
  max_kl: float = 1e-2,
  damping: float = 1e-3,
  cg_maxiter: int = 10,
  cg_tol: float = 1e-4,
  kind: str = "exact",
  num_samples: int = 1,
  warm_start: bool = True,
) -> optax.GradientTransformationExtraArgs:
  r"""The natural-gradient direction scaled to a fixed KL divergence (TRPO's step).

  .. math::
    x = (F + \lambda I)^{-1} g, \qquad
    \mathrm{update} = \sqrt{\frac{2\delta}{x^\top F x}}\; x,

  so that the step :math:`h = -\mathrm{update}` satisfies :math:`\frac12 h^\top F h =
  \delta`: to second order, :math:`\mathrm{KL}(p_\theta \,\|\, p_{\theta + h}) =
  \delta` (the "equal-KL" step of the natural-gradient derivation), whatever the scale
  of ``g``. ``F`` is the mean over the batch of the per-example Fisher, so
  :math:`\delta` bounds the mean KL over the batch's inputs, as in TRPO. Chain
  ``optax.scale(-1.0)`` to descend (or use :func:`kl_trust_region`). A zero gradient
  gives a zero update.

  Args:
    apply_fn: ``apply_fn(params, inputs) -> outputs``.
    likelihood: a likelihood name or :class:`gradest.fisher.Likelihood`.
    max_kl: :math:`\delta > 0`.
    damping: :math:`\lambda \ge 0` for the solve (the scaling uses the undamped ``F``).
    cg_maxiter, cg_tol, kind, num_samples, warm_start: as in
      :func:`scale_by_natural_gradient`.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` with state :class:`KLTrustRegionState`;
    ``update(updates, state, params, *, batch, key=None)``.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> apply_fn = lambda p, x: x @ p
    >>> tr = scale_by_kl_trust_region(apply_fn, "gaussian", max_kl=0.5, damping=0.0)
    >>> x = jnp.eye(2)
    >>> up, state = tr.update(jnp.array([1.0, 1.0]), tr.init(jnp.zeros(2)), jnp.zeros(2),
    ...                       batch=(x, None))
    >>> float(0.5 * up @ (x.T @ x / 2) @ up)  # 1/2 h^T F h = max_kl
    0.5

  References:
    Schulman, Levine, Moritz, Jordan & Abbeel, *Trust Region Policy Optimization*,
    ICML 2015. Kakade, *A Natural Policy Gradient*, NeurIPS 2001.
  """
  lik, damping, maxiter, tol = _check_solver_args(
    likelihood, kind, damping, cg_maxiter, cg_tol, num_samples
  )
  delta = check_real(max_kl, "max_kl", strict=True)
  name = "scale_by_kl_trust_region"

  def init_fn(params: PyTree) -> KLTrustRegionState:
    return KLTrustRegionState(
      solution=otu.tree_zeros_like(params),
      residual=jnp.zeros((), jnp.float32),
      converged=jnp.ones((), jnp.bool_),
      step_scale=jnp.zeros((), jnp.float32),
      count=jnp.zeros((), jnp.int32),
    )

  def update_fn(updates, state, params=None, *, batch=None, key=None, **extra_args):
    del extra_args
    check_step_inputs(name, params, batch, kind, key)
    check_same_structure(updates, params, "updates", "params")
    fvp = fisher_vector_product(
      apply_fn, params, batch, likelihood=lik, kind=kind, key=key, num_samples=num_samples
    )
    x0 = _cast_like(state.solution, updates) if warm_start else None
    x, fx, residual, _ = solve_damped_system(fvp, updates, damping, x0, tol, maxiter)
    curvature = otu.tree_vdot(x, fx).astype(jnp.float32)
    scale = jnp.where(
      curvature > 0, jnp.sqrt(2.0 * delta / jnp.where(curvature > 0, curvature, 1.0)), 0.0
    )
    out = jax.tree.map(lambda xi: (scale * xi).astype(xi.dtype), x)
    new_state = KLTrustRegionState(
      solution=_cast_like(x, state.solution),
      residual=residual,
      converged=residual <= tol,
      step_scale=scale,
      count=optax.safe_increment(state.count),
    )
    return out, new_state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def kl_trust_region(
  apply_fn: Callable[[PyTree, PyTree], Array],
  likelihood: str | Likelihood,
  **kwargs: Any,
) -> optax.GradientTransformationExtraArgs:
  """TRPO-style descent: ``optax.chain(scale_by_kl_trust_region(...), optax.scale(-1.0))``.

  Every step changes the model's predictive distribution by ``max_kl`` (to second
  order, averaged over the batch). See :func:`scale_by_kl_trust_region`.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> opt = kl_trust_region(lambda p, x: x @ p, "categorical", max_kl=0.01)
    >>> params, x = jnp.zeros((4, 3)), jnp.ones((8, 4))
    >>> grads = jnp.ones((4, 3)).at[:, 0].set(-2.0)
    >>> updates, state = opt.update(grads, opt.init(params), params, batch=(x, None))
    >>> updates.shape
    (4, 3)
  """
  return optax.chain(scale_by_kl_trust_region(apply_fn, likelihood, **kwargs), optax.scale(-1.0))


# --------------------------------------------------------------------------------------
# Diagonal preconditioner.
# --------------------------------------------------------------------------------------


def scale_by_fisher_diagonal(
  apply_fn: Callable[[PyTree, PyTree], Array],
  likelihood: str | Likelihood,
  *,
  kind: str = "monte_carlo",
  decay: float = 0.95,
  damping: float = 1e-3,
  num_samples: int = 1,
) -> optax.GradientTransformationExtraArgs:
  r"""A cheap diagonal natural-gradient preconditioner.

  .. math::
    d_t = \beta d_{t-1} + (1 - \beta)\, \widehat{\mathrm{diag}\,F}_t, \qquad
    \mathrm{update} = \frac{g}{d_t / (1 - \beta^t) + \lambda},

  with :math:`\widehat{\mathrm{diag}\,F}_t` from :func:`gradest.fisher.fisher_diagonal`
  on the step's batch: sampled targets (``'monte_carlo'``, unbiased for the Fisher's
  diagonal) or the observed ones (``'empirical'``). The running average is
  bias-corrected as in Adam. Unlike Adam the denominator is the Fisher's diagonal
  itself, not a square root, which is the diagonal approximation of
  :math:`F^{-1} g`. Chain a negative learning rate.

  Args:
    apply_fn: ``apply_fn(params, inputs) -> outputs``.
    likelihood: a likelihood name or :class:`gradest.fisher.Likelihood`.
    kind: ``'monte_carlo'`` (needs ``key`` at each update) or ``'empirical'``.
    decay: :math:`\beta \in [0, 1)`.
    damping: :math:`\lambda \ge 0`.
    num_samples: sampled targets per example.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` with state :class:`FisherDiagonalState`;
    ``update(updates, state, params, *, batch, key=None)``.

  Examples:
    >>> import jax, jax.numpy as jnp, optax
    >>> opt = optax.chain(scale_by_fisher_diagonal(lambda p, x: x @ p, "bernoulli"),
    ...                   optax.scale(-0.1))
    >>> params = jnp.zeros(3)
    >>> up, state = opt.update(jnp.ones(3), opt.init(params), params,
    ...                        batch=(jnp.ones((4, 3)), None), key=jax.random.key(0))
    >>> [round(float(u), 4) for u in up]  # -0.1 g / (1/4 + 1e-3) at logits 0
    [-0.3984, -0.3984, -0.3984]

  References:
    Martens, *New Insights and Perspectives on the Natural Gradient Method*, JMLR 2020
    (diagonal approximations); Kunstner, Hennig & Balles, NeurIPS 2019.
  """
  lik = get_likelihood(likelihood)
  check_choice(kind, "kind", DIAGONAL_KINDS)
  beta = check_real(decay, "decay")
  if beta >= 1.0:
    raise ValueError(f"decay must be in [0, 1), got {decay}.")
  lam = check_real(damping, "damping", fix="Use a small positive value such as 1e-3.")
  s = check_positive_int(num_samples, "num_samples")
  name = "scale_by_fisher_diagonal"

  def init_fn(params: PyTree) -> FisherDiagonalState:
    return FisherDiagonalState(diagonal=otu.tree_zeros_like(params), count=jnp.zeros((), jnp.int32))

  def update_fn(updates, state, params=None, *, batch=None, key=None, **extra_args):
    del extra_args
    check_step_inputs(name, params, batch, kind, key)
    check_same_structure(updates, params, "updates", "params")
    d = fisher_diagonal(apply_fn, params, batch, likelihood=lik, kind=kind, key=key, num_samples=s)
    count = optax.safe_increment(state.count)
    diagonal = otu.tree_update_moment(_cast_like(d, state.diagonal), state.diagonal, beta, 1)
    corrected = otu.tree_bias_correction(diagonal, beta, count)
    out = jax.tree.map(lambda g, a: (g / (a + lam)).astype(g.dtype), updates, corrected)
    return out, FisherDiagonalState(diagonal=diagonal, count=count)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
