r"""K-FAC: Kronecker-factored approximate curvature as an optax transformation.

For a layer :math:`y = a W + b` (rows :math:`a` of its input, :math:`g = \nabla_y \log
p(\tilde y \mid f)` of its output, with :math:`\tilde y` sampled from the model), the
layer's block of the Fisher is approximated by a Kronecker product,

.. math::
  F_W \approx A \otimes G, \qquad
  A = \frac1{NT} \sum_{i,t} \bar a_{it} \bar a_{it}^\top, \qquad
  G = \frac1{N} \sum_{i,t} g_{it} g_{it}^\top,

with :math:`\bar a = (a, 1)` when the layer has a bias (the bias is the last row of
the block), :math:`N` examples and :math:`T` rows per example (positions of a sequence
or of a convolution's output; one for a plain dense layer). The block is exact for a
single dense layer with a Gaussian likelihood of fixed variance. Its damped inverse
is applied to the gradient matrix :math:`[\nabla W; \nabla b]` with factored Tikhonov
damping (Martens & Grosse, 2015, section 6.3):

.. math::
  \Delta = (A + \pi \sqrt\lambda\, I)^{-1}\, [\nabla W; \nabla b]\,
    (G + \tfrac{\sqrt\lambda}{\pi} I)^{-1}, \qquad
  \pi = \sqrt{\frac{\mathrm{tr}(A) / \dim A}{\mathrm{tr}(G) / \dim G}}.

References:
  Martens & Grosse, *Optimizing Neural Networks with Kronecker-factored Approximate
  Curvature*, ICML 2015. Grosse & Martens, *A Kronecker-factored approximate Fisher
  matrix for convolution layers*, ICML 2016. Ba, Grosse & Martens, *Distributed
  Second-Order Optimization using Kronecker-Factored Approximations*, ICLR 2017.
  Eschenhagen et al., *Kronecker-Factored Approximate Curvature for Modern Neural
  Network Architectures*, NeurIPS 2023.
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
  Likelihood,
  fisher_quadratic_form,
  get_likelihood,
  output_grads,
  sampled_targets,
  split_batch,
)
from gradest._src.layers import (
  Layer,
  LayerSummary,
  capture,
  kernel_from_matrix,
  kernel_matrix,
  layer_rows,
  trace_layers,
)
from gradest._src.natural_gradient import check_step_inputs, levenberg_marquardt


class KFACState(NamedTuple):
  """State of :func:`scale_by_kfac` (arrays only: it checkpoints and crosses ``jax.jit``).

  Attributes:
    factors_in: by layer name, the moving average of the input factor :math:`A`
      (``(in_size, in_size)``; the diagonal ``(V,)`` for an embedding), before bias
      correction.
    factors_out: by layer name, the moving average of the output factor :math:`G`,
      ``(out_features, out_features)``.
    inverses_in: the damped inverse of each bias-corrected input factor, as of the last
      refresh.
    inverses_out: the same for the output factors.
    damping: ``()`` float32, :math:`\\lambda` (the next refresh uses it).
    step: like ``params``, the last step ``s`` (the parameters moved by ``-s``).
    learning_rate: ``()`` float32, the learning rate of the last step (chosen by the
      quadratic model when adaptive).
    momentum: ``()`` float32, the momentum coefficient of the last step.
    reduction_ratio: ``()`` float32, the ratio of actual to predicted loss change at
      the last damping adaptation (0 before).
    count: ``()`` int32, steps taken.
  """

  factors_in: dict[str, Array]
  factors_out: dict[str, Array]
  inverses_in: dict[str, Array]
  inverses_out: dict[str, Array]
  damping: Array
  step: PyTree
  learning_rate: Array
  momentum: Array
  reduction_ratio: Array
  count: Array


# --------------------------------------------------------------------------------------
# Factors.
# --------------------------------------------------------------------------------------


def _batch_factors(apply_fn, params, inputs, targets, lik, kind, key, num_samples, layers, shapes):
  """The factors of one batch, ``({name: A}, {name: G})``."""
  outputs, pullback, acts = capture(apply_fn, params, inputs, layers, shapes)
  outputs = jax.lax.stop_gradient(outputs)
  n = outputs.shape[0]
  if kind == "empirical":
    cotangents = output_grads(lik, outputs, targets)[None]
  else:
    ys = sampled_targets(lik, outputs, key, num_samples)
    cotangents = jax.vmap(lambda y: output_grads(lik, outputs, y))(ys)
  s = cotangents.shape[0]
  grads = jax.vmap(pullback)(jax.lax.stop_gradient(cotangents).astype(outputs.dtype))
  f32 = jnp.promote_types(jnp.float32, outputs.dtype)
  factors_in, factors_out = {}, {}
  for layer in layers:
    rows = layer_rows(layer, jax.lax.stop_gradient(acts[layer.name]))
    count = rows.shape[0]
    if layer.kind == "embed":
      a = jnp.zeros(layer.in_features, f32).at[rows].add(1.0) / count
    else:
      rows = rows.astype(f32)
      if layer.bias is not None:
        rows = jnp.concatenate([rows, jnp.ones((count, 1), f32)], axis=1)
      a = rows.T @ rows / count
    g = grads[layer.name].reshape(-1, layer.out_features).astype(f32)
    factors_in[layer.name] = a
    factors_out[layer.name] = g.T @ g / (n * s)
  return factors_in, factors_out


def kfac_factors(
  apply_fn: Callable[[PyTree, PyTree], Array],
  params: PyTree,
  batch: tuple[PyTree, PyTree | None],
  *,
  likelihood: str | Likelihood,
  kind: str = "monte_carlo",
  key: Array | None = None,
  num_samples: int = 1,
) -> dict[str, tuple[Array, Array]]:
  r"""The Kronecker factors :math:`(A, G)` of every layer on one batch.

  .. math::
    A = \frac1{NT} \sum_{i,t} \bar a_{it} \bar a_{it}^\top, \qquad
    G = \frac1{NS} \sum_{i,t,s} g_{its} g_{its}^\top, \qquad
    g_{its} = \nabla_{y_{it}} \log p(\tilde y_{is} \mid f_\theta(x_i)),

  with :math:`\tilde y_{is}` sampled from the model (``kind='monte_carlo'``, the
  Fisher's factors) or the observed targets (``kind='empirical'``: the empirical
  Fisher's, which is *not* the Fisher). :math:`\bar a = (a, 1)` for a layer with a
  bias; rows :math:`t` are positions (one for a dense layer on ``(N, d)`` inputs, the
  output pixels of a convolution). For an embedding :math:`A` is diagonal and returned
  as its diagonal, the frequencies of the ids. The layers are those of
  :func:`gradest.fisher.find_layers`.

  Args:
    apply_fn: ``apply_fn(params, inputs) -> outputs``, leading batch axis ``N``.
    params: the parameters.
    batch: ``(inputs, targets)``; targets needed only for ``kind='empirical'``.
    likelihood: a likelihood name or :class:`gradest.fisher.Likelihood`.
    kind: ``'monte_carlo'`` (needs ``key``) or ``'empirical'``.
    key: PRNG key for the sampled targets.
    num_samples: ``S``, sampled targets per example.

  Returns:
    ``{layer name: (A, G)}``.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> from gradest.fisher import register_dense
    >>> apply_fn = lambda p, x: register_dense(x @ p["w"], x, p["w"])
    >>> factors = kfac_factors(apply_fn, {"w": jnp.zeros((3, 2))}, (jnp.eye(3), None),
    ...                        likelihood="gaussian", key=jax.random.key(0))
    >>> factors["w"][0]  # A = X^T X / N
    Array([[0.33333334, 0.        , 0.        ],
           [0.        , 0.33333334, 0.        ],
           [0.        , 0.        , 0.33333334]], dtype=float32)
  """
  lik = get_likelihood(likelihood)
  check_choice(kind, "kind", DIAGONAL_KINDS)
  s = check_positive_int(num_samples, "num_samples")
  inputs, targets = split_batch(batch, kind == "empirical", "kfac_factors")
  if kind == "monte_carlo":
    if key is None:
      raise TypeError("kind='monte_carlo' samples targets and needs key= (a PRNG key).")
    check_key(key)
  summary, shapes = trace_layers(apply_fn, params, inputs)
  _require_layers(summary)
  a, g = _batch_factors(
    apply_fn, params, inputs, targets, lik, kind, key, s, summary.layers, shapes
  )
  return {name: (a[name], g[name]) for name in a}


def _require_layers(summary: LayerSummary) -> None:
  if not summary.layers:
    skipped = "; ".join(f"{n}: {r}" for n, r in summary.skipped) or "none"
    raise ValueError(
      "K-FAC found no supported layer in the model (flax.linen Dense/Conv/Embed, flax.nnx "
      "Linear/Conv/Embed, or gradest.fisher.register_dense/register_conv2d/register_embed "
      f"in a plain function); layer calls skipped: {skipped}. "
      "gradest.fisher.find_layers(apply_fn, params, inputs) shows what it sees."
    )


def _damped_inverse(matrix: Array, damping: Array) -> Array:
  """``(matrix + damping I)^{-1}`` for a symmetric PSD matrix, via its eigendecomposition."""
  if matrix.ndim == 1:
    return 1.0 / (jnp.maximum(matrix, 0.0) + damping)
  values, vectors = jnp.linalg.eigh(matrix)
  return (vectors / (jnp.maximum(values, 0.0) + damping)) @ vectors.T


def _mean_trace(m: Array) -> Array:
  return jnp.mean(m) if m.ndim == 1 else jnp.trace(m) / m.shape[0]


def _refresh(factors_in, factors_out, correction, damping):
  inverses_in, inverses_out = {}, {}
  root = jnp.sqrt(damping)
  for name in factors_in:
    a = factors_in[name] / correction
    g = factors_out[name] / correction
    ta, tg = _mean_trace(a), _mean_trace(g)
    pi = jnp.where((ta > 0) & (tg > 0), jnp.sqrt(ta / jnp.where(tg > 0, tg, 1.0)), 1.0)
    inverses_in[name] = _damped_inverse(a, pi * root)
    inverses_out[name] = _damped_inverse(g, root / pi)
  return inverses_in, inverses_out


def _precondition(layers: tuple[Layer, ...], updates, inverses_in, inverses_out):
  leaves, treedef = jax.tree.flatten(updates)
  leaves = list(leaves)
  for layer in layers:
    kernel = leaves[layer.kernel]
    m = kernel_matrix(layer, kernel).astype(inverses_out[layer.name].dtype)
    if layer.bias is not None:
      m = jnp.concatenate([m, leaves[layer.bias].astype(m.dtype)[None]], axis=0)
    inv_a = inverses_in[layer.name]
    m = (inv_a[:, None] * m if inv_a.ndim == 1 else inv_a @ m) @ inverses_out[layer.name]
    if layer.bias is not None:
      leaves[layer.bias] = m[-1].astype(leaves[layer.bias].dtype)
      m = m[:-1]
    leaves[layer.kernel] = kernel_from_matrix(layer, m, kernel.shape).astype(kernel.dtype)
  return jax.tree.unflatten(treedef, leaves)


# --------------------------------------------------------------------------------------
# The transformation.
# --------------------------------------------------------------------------------------


def _check_layers_match(summary: LayerSummary, state: KFACState) -> None:
  names = [layer.name for layer in summary.layers]
  if sorted(names) != sorted(state.factors_in):
    raise ValueError(
      f"the model's K-FAC layers {names} differ from those the state was initialized "
      f"with {sorted(state.factors_in)}; initialize with example_inputs like this batch's."
    )
  for layer in summary.layers:
    want = (layer.in_features,) if layer.kind == "embed" else (layer.in_size,) * 2
    if tuple(state.factors_in[layer.name].shape) != want:
      raise ValueError(
        f"layer {layer.name!r}: the state's input factor has shape "
        f"{tuple(state.factors_in[layer.name].shape)}, the model needs {want}."
      )


def _solve_quadratic_model(q: Array, b: Array, momentum: float | None):
  """Minimizes ``-(c . b) + c^T q c / 2`` over ``c = (alpha, mu)`` (``mu`` fixed if given)."""
  tiny = jnp.finfo(q.dtype).tiny
  q00 = jnp.where(q[0, 0] > tiny, q[0, 0], 1.0)
  if momentum is not None:
    mu = jnp.asarray(momentum, q.dtype)
    alpha = jnp.where(q[0, 0] > tiny, (b[0] - mu * q[0, 1]) / q00, 0.0)
  else:
    det = q[0, 0] * q[1, 1] - q[0, 1] ** 2
    joint = (det > 1e-6 * q[0, 0] * q[1, 1]) & (q[1, 1] > tiny)
    safe = jnp.where(joint, det, 1.0)
    alpha = jnp.where(joint, (q[1, 1] * b[0] - q[0, 1] * b[1]) / safe, b[0] / q00)
    mu = jnp.where(joint, (q[0, 0] * b[1] - q[0, 1] * b[0]) / safe, 0.0)
    alpha = jnp.where(q[0, 0] > tiny, alpha, 0.0)
  c = jnp.stack([alpha, mu])
  predicted = -(c @ b) + 0.5 * c @ q @ c
  return alpha, mu, predicted


def scale_by_kfac(
  apply_fn: Callable[[PyTree, PyTree], Array],
  likelihood: str | Likelihood,
  *,
  example_inputs: PyTree,
  learning_rate: optax.ScalarOrSchedule | None = None,
  momentum: float | None = None,
  damping: float = 1e-3,
  kind: str = "monte_carlo",
  num_samples: int = 1,
  decay: float = 0.95,
  curvature_update_period: int = 1,
  inverse_update_period: int = 5,
  adapt_damping: bool = False,
  damping_adaptation_period: int = 5,
  damping_factor: float = (20 / 19) ** 5,
  min_damping: float = 1e-8,
  max_damping: float = 1e4,
  kl_clip: float | None = None,
) -> optax.GradientTransformationExtraArgs:
  r"""K-FAC: preconditions each layer's gradient with its damped Kronecker-factored block.

  Returns the **step** ``s`` (the parameters move by ``-s``; chain ``optax.scale(-1)``,
  or use :func:`kfac`). Per layer, with the factors of :func:`gradest.fisher.kfac_factors`
  averaged over steps,

  .. math::
    \bar A_t = \beta \bar A_{t-1} + (1 - \beta) A_t, \qquad
    \Delta = (\hat A + \pi\sqrt\lambda I)^{-1} [\nabla W; \nabla b]
      (\hat G + \tfrac{\sqrt\lambda}{\pi} I)^{-1},

  (:math:`\hat A = \bar A_t / (1 - \beta^t)`, likewise :math:`\hat G`, with
  :math:`t` the number of factor updates, one every ``curvature_update_period``
  steps; the damped inverses are recomputed every ``inverse_update_period`` steps, an
  eigendecomposition per factor); parameters no layer covers keep their gradient (the identity
  preconditioner; :func:`gradest.fisher.find_layers` lists them). The step is then

  * ``learning_rate`` given: :math:`s = \eta\,\nu\,\Delta + \mu\, s_{t-1}` with
    ``momentum`` :math:`\mu` (default 0) and, with ``kl_clip`` :math:`\kappa`, the
    factor :math:`\nu = \min(1, \sqrt{\kappa / (\eta^2 \Delta^\top g)})` that bounds
    the step's K-FAC estimate of :math:`\mathrm{KL}` (Ba et al., 2017);
  * ``learning_rate=None``: :math:`s = \alpha\Delta + \mu s_{t-1}` with
    :math:`(\alpha, \mu)` minimizing the quadratic model
    :math:`M(s) = -g^\top s + \frac12 s^\top (F + \lambda I) s` with the **exact**
    Fisher :math:`F` on the batch (Martens & Grosse, 2015, section 7), from two
    forward-mode products (:func:`gradest.fisher.fisher_quadratic_form`); a
    ``momentum`` value fixes :math:`\mu` and only :math:`\alpha` is chosen.

  **Damping adaptation** (``adapt_damping=True``, Levenberg-Marquardt): every
  ``damping_adaptation_period`` steps, :math:`\rho = (L(\theta - s) - L(\theta)) /
  M(s)` is measured (0 when :math:`M(s) > 0`: the step goes past the model's
  minimum), at the cost of one evaluation of ``value_fn`` (and one forward-mode
  product with a fixed learning rate), and :math:`\lambda` is divided by ``damping_factor``
  when :math:`\rho > 3/4`, multiplied by it when :math:`\rho < 1/4`, within
  ``[min_damping, max_damping]``.

  The layers are found when the transformation is initialized, by tracing
  ``apply_fn(params, example_inputs)`` (see :func:`gradest.fisher.find_layers`):
  ``flax.linen`` and ``flax.nnx`` dense, 2-D convolution and embedding layers, and
  the ``register_*`` calls of a plain function.

  Args:
    apply_fn: ``apply_fn(params, inputs) -> outputs`` (a linen ``model.apply``,
      ``lambda state, x: nnx.merge(graphdef, state)(x)``, or a plain function).
    likelihood: a likelihood name or :class:`gradest.fisher.Likelihood`.
    example_inputs: one batch of inputs (arrays or ``jax.ShapeDtypeStruct``; only the
      shapes are used), to find the layers at ``init``.
    learning_rate: a float or schedule, or ``None`` for the quadratic model's.
    momentum: ``None`` (adapted with ``learning_rate=None``, 0 otherwise) or a fixed
      coefficient in ``[0, 1)``.
    damping: :math:`\lambda > 0` (the initial value when adapted).
    kind: ``'monte_carlo'`` (targets sampled from the model: the Fisher's factors;
      needs ``key``) or ``'empirical'`` (the observed targets: the empirical Fisher).
    num_samples: sampled targets per example.
    decay: :math:`\beta \in [0, 1)` of the factors' moving averages.
    curvature_update_period: steps between updates of the factors (each update is
      one forward pass and one reverse pass to the layers' outputs with sampled
      targets, plus the factors' products), ``>= 1``.
    inverse_update_period: steps between refreshes of the inverses, ``>= 1``.
    adapt_damping: adapt :math:`\lambda` (needs ``value_fn``).
    damping_adaptation_period: steps between adaptations, ``>= 1``.
    damping_factor: the factor (``> 1``) by which :math:`\lambda` moves.
    min_damping, max_damping: bounds of the adapted damping.
    kl_clip: :math:`\kappa > 0`, with a fixed ``learning_rate`` only.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` with state :class:`KFACState`;
    ``update(updates, state, params, *, batch, key=None, value=None, value_fn=None)``.

  Raises:
    ValueError: ``damping <= 0``, ``inverse_update_period < 1``, a bad ``decay``,
      ``momentum``, ``kl_clip`` or ``kind``; at ``init``, a model with no supported
      layer; at update time, no ``params``.
    TypeError: at update time, no ``batch``, no ``key`` for ``'monte_carlo'``, no
      ``value_fn`` when adapting the damping.

  Examples:
    >>> import jax, jax.numpy as jnp, optax
    >>> import flax.linen as nn
    >>> model = nn.Sequential([nn.Dense(16), nn.tanh, nn.Dense(3)])
    >>> x, y = jax.random.normal(jax.random.key(0), (32, 4)), jnp.arange(32) % 3
    >>> params = model.init(jax.random.key(1), x)
    >>> opt = kfac(0.3, model.apply, "categorical", example_inputs=x, damping=1e-2)
    >>> def loss(p):
    ...   return -jnp.mean(jax.nn.log_softmax(model.apply(p, x))[jnp.arange(32), y])
    >>> state = opt.init(params)
    >>> @jax.jit
    ... def step(p, s, k):
    ...   updates, s = opt.update(jax.grad(loss)(p), s, p, batch=(x, y), key=k)
    ...   return optax.apply_updates(p, updates), s
    >>> new, state = step(params, state, jax.random.key(2))
    >>> bool(loss(new) < loss(params))
    True

  References:
    Martens & Grosse, *Optimizing Neural Networks with Kronecker-factored Approximate
    Curvature*, ICML 2015. Grosse & Martens, ICML 2016 (convolutions). Ba, Grosse &
    Martens, ICLR 2017 (KL clipping).
  """
  lik = get_likelihood(likelihood)
  check_choice(kind, "kind", DIAGONAL_KINDS)
  lam0 = check_real(
    damping,
    "damping",
    strict=True,
    fix="K-FAC's factors are singular when a batch has fewer rows than a layer has "
    "inputs; use a positive damping such as 1e-3.",
  )
  s_count = check_positive_int(num_samples, "num_samples")
  beta = check_real(decay, "decay", below=1.0)
  period = check_positive_int(inverse_update_period, "inverse_update_period")
  stats_period = check_positive_int(curvature_update_period, "curvature_update_period")
  adapt_period = check_positive_int(damping_adaptation_period, "damping_adaptation_period")
  if momentum is not None:
    momentum = check_real(momentum, "momentum", below=1.0)
  if kl_clip is not None:
    kl_clip = check_real(kl_clip, "kl_clip", strict=True)
    if learning_rate is None:
      raise ValueError(
        "kl_clip bounds a fixed learning rate's step; with learning_rate=None the "
        "quadratic model already sets the step's size. Pass a learning_rate or drop kl_clip."
      )
  if adapt_damping:
    factor = check_real(damping_factor, "damping_factor", minimum=1.0, strict=True)
    lo = check_real(min_damping, "min_damping", strict=True)
    hi = check_real(max_damping, "max_damping", minimum=lo)
  name = "scale_by_kfac"

  def init_fn(params: PyTree) -> KFACState:
    summary, _ = trace_layers(apply_fn, params, example_inputs)
    _require_layers(summary)
    f_in, f_out, i_in, i_out = {}, {}, {}, {}
    for layer in summary.layers:
      if layer.kind == "embed":
        f_in[layer.name] = jnp.zeros(layer.in_features, jnp.float32)
        i_in[layer.name] = jnp.ones(layer.in_features, jnp.float32)
      else:
        f_in[layer.name] = jnp.zeros((layer.in_size,) * 2, jnp.float32)
        i_in[layer.name] = jnp.eye(layer.in_size, dtype=jnp.float32)
      f_out[layer.name] = jnp.zeros((layer.out_features,) * 2, jnp.float32)
      i_out[layer.name] = jnp.eye(layer.out_features, dtype=jnp.float32)
    zero = jnp.zeros((), jnp.float32)
    return KFACState(
      factors_in=f_in,
      factors_out=f_out,
      inverses_in=i_in,
      inverses_out=i_out,
      damping=jnp.asarray(lam0, jnp.float32),
      step=otu.tree_zeros_like(params),
      learning_rate=zero,
      momentum=zero,
      reduction_ratio=zero,
      count=jnp.zeros((), jnp.int32),
    )

  def update_fn(
    updates: PyTree,
    state: KFACState,
    params: PyTree | None = None,
    *,
    batch: Any = None,
    key: Array | None = None,
    value: Array | None = None,
    value_fn: Callable[[PyTree], Array] | None = None,
    **extra_args: Any,
  ) -> tuple[PyTree, KFACState]:
    del extra_args
    check_step_inputs(
      name, params, batch, kind, key, adapt_damping=adapt_damping, value_fn=value_fn
    )
    check_same_structure(updates, params, "updates", "params")
    inputs, targets = split_batch(batch, kind == "empirical", f"{name}.update")
    summary, shapes = trace_layers(apply_fn, params, inputs)
    _check_layers_match(summary, state)
    layers = summary.layers
    count = state.count

    def moving_averages():
      new_in, new_out = _batch_factors(
        apply_fn, params, inputs, targets, lik, kind, key, s_count, layers, shapes
      )
      return (
        {n: beta * state.factors_in[n] + (1 - beta) * new_in[n] for n in new_in},
        {n: beta * state.factors_out[n] + (1 - beta) * new_out[n] for n in new_out},
      )

    if stats_period == 1:
      factors_in, factors_out = moving_averages()
    else:
      factors_in, factors_out = jax.lax.cond(
        count % stats_period == 0,
        moving_averages,
        lambda: (state.factors_in, state.factors_out),
      )
    updates_so_far = (count // stats_period + 1).astype(jnp.float32)
    correction = 1.0 - beta**updates_so_far
    inverses_in, inverses_out = jax.lax.cond(
      count % period == 0,
      lambda: _refresh(factors_in, factors_out, correction, state.damping),
      lambda: (state.inverses_in, state.inverses_out),
    )
    delta = _precondition(layers, updates, inverses_in, inverses_out)
    g_delta = otu.tree_vdot(updates, delta).astype(jnp.float32)
    previous = jax.tree.map(lambda s, u: s.astype(u.dtype), state.step, updates)

    def quadratic(vectors):
      f = fisher_quadratic_form(apply_fn, params, (inputs, None), vectors, likelihood=lik)
      gram = jnp.array([[otu.tree_vdot(u, v) for v in vectors] for u in vectors])
      return (f + state.damping * gram).astype(jnp.float32)

    if learning_rate is None:
      q = quadratic([delta, previous])
      b = jnp.stack([g_delta, otu.tree_vdot(updates, previous).astype(jnp.float32)])
      alpha, mu, predicted = _solve_quadratic_model(q, b, momentum)
      step = jax.tree.map(lambda d, p: alpha * d + mu * p, delta, previous)
    else:
      lr = learning_rate(count) if callable(learning_rate) else learning_rate
      alpha = jnp.asarray(lr, jnp.float32)
      if kl_clip is not None:
        kl = alpha**2 * jnp.abs(g_delta)
        alpha = alpha * jnp.minimum(1.0, jnp.sqrt(kl_clip / jnp.where(kl > 0, kl, 1.0)))
      mu = jnp.asarray(0.0 if momentum is None else momentum, jnp.float32)
      step = jax.tree.map(lambda d, p: alpha * d + mu * p, delta, previous)
      predicted = None

    new_damping, ratio = state.damping, state.reduction_ratio
    if adapt_damping:

      def adapt():
        pred = predicted
        if pred is None:
          c = quadratic([step])[0, 0]
          pred = -otu.tree_vdot(updates, step).astype(jnp.float32) + 0.5 * c
        current = value_fn(params) if value is None else value
        trial = value_fn(jax.tree.map(lambda p, s: p - s.astype(p.dtype), params, step))
        return levenberg_marquardt(state.damping, trial - current, pred, factor, lo, hi)

      new_damping, ratio = jax.lax.cond(
        count % adapt_period == adapt_period - 1,
        adapt,
        lambda: (state.damping, state.reduction_ratio),
      )

    step = jax.tree.map(lambda s, u: s.astype(u.dtype), step, updates)
    new_state = KFACState(
      factors_in=factors_in,
      factors_out=factors_out,
      inverses_in=inverses_in,
      inverses_out=inverses_out,
      damping=new_damping,
      step=jax.tree.map(lambda s, p: s.astype(p.dtype), step, state.step),
      learning_rate=jnp.asarray(alpha, jnp.float32),
      momentum=jnp.asarray(mu, jnp.float32),
      reduction_ratio=ratio,
      count=optax.safe_increment(count),
    )
    return step, new_state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def kfac(
  learning_rate: optax.ScalarOrSchedule | None,
  apply_fn: Callable[[PyTree, PyTree], Array],
  likelihood: str | Likelihood,
  **kwargs: Any,
) -> optax.GradientTransformationExtraArgs:
  r"""K-FAC descent: ``optax.chain(scale_by_kfac(..., learning_rate=...), optax.scale(-1))``.

  ``learning_rate=None`` chooses the learning rate and momentum by the quadratic model
  at every step (Martens & Grosse, 2015); a float or schedule fixes it. See
  :func:`scale_by_kfac` for the arguments (``example_inputs`` is required) and the
  extra arguments of ``update`` (``batch``, ``key``, ``value``, ``value_fn``).

  Examples:
    >>> import jax.numpy as jnp
    >>> from gradest.fisher import register_dense
    >>> apply_fn = lambda p, x: register_dense(x @ p, x, p)
    >>> opt = kfac(None, apply_fn, "gaussian", example_inputs=jnp.ones((8, 3)))
    >>> state = opt.init(jnp.zeros((3, 2)))
  """
  return optax.chain(
    scale_by_kfac(apply_fn, likelihood, learning_rate=learning_rate, **kwargs), optax.scale(-1.0)
  )
