r"""Fisher-vector products, generalized Gauss-Newton products and diagonal Fishers.

Conventions shared by every function here:

* ``apply_fn(params, inputs) -> outputs`` is the model: ``params`` any pytree,
  ``inputs`` any pytree whose leaves have a leading batch axis of size ``N``, and
  ``outputs`` an array (or, for :func:`ggn_vector_product`, a pytree) with the same
  leading axis. A ``flax.linen`` model's ``model.apply`` is such a function, and so is
  ``lambda state, x: nnx.merge(graphdef, state)(x)`` for a ``flax.nnx`` model.
* ``batch`` is the tuple ``(inputs, targets)``; ``targets`` has the leading axis ``N``
  too, and may be ``None`` where no product needs it (``kind='exact'`` and
  ``kind='monte_carlo'``).
* The model's loss is the **mean** negative log-likelihood over the batch,
  :math:`L(\theta) = -\frac1N \sum_i \log p(y_i \mid f_\theta(x_i))`, and every matrix
  here is normalized the same way: a mean over the ``N`` examples. The curvature of a
  sum over examples is ``N`` times larger.
* A *likelihood* is the conditional distribution of one example's target given that
  example's outputs (:class:`Likelihood`): the built-in names are ``'categorical'``
  (softmax over the last axis; integer targets), ``'bernoulli'`` (sigmoid; 0/1 or
  soft targets in ``[0, 1]``), ``'gaussian'`` (unit variance; the outputs are the
  mean) and ``'gaussian_learned_scale'`` (the last axis of the outputs is
  ``[mean, log_scale]``, twice the targets' last axis). Any other conditional
  distribution is one :func:`likelihood_from_distribution` call away.

The three Fisher matrices:

.. math::
  F_{\mathrm{exact}} = \frac1N \sum_i J_i^\top H_i J_i, \qquad
  H_i = \mathbb E_{y \sim p(\cdot \mid f_i)}\big[\nabla_f \log p(y \mid f_i)\,
    \nabla_f \log p(y \mid f_i)^\top\big],

with :math:`J_i = \partial f_\theta(x_i) / \partial\theta`: the Fisher of the model's
predictive distribution, which is the generalized Gauss-Newton matrix when :math:`f`
is the natural parameter of an exponential family (logits, a Gaussian mean). The
*empirical* Fisher replaces the expectation over :math:`y` by the observed targets,
:math:`\frac1N\sum_i g_i g_i^\top` with :math:`g_i = \nabla_\theta \log p(y_i \mid
f_i)`. It is **not** the Fisher (its expectation is not :math:`F`, and far from the
optimum its directions can be poor; Kunstner et al., 2019), but it is what the
"outer product of loss gradients" recipe computes. The *Monte Carlo* Fisher samples
:math:`\tilde y_i \sim p(\cdot \mid f_i)` from the model instead, which makes it an
unbiased estimate of :math:`F_{\mathrm{exact}}`.

References:
  Amari, *Natural Gradient Works Efficiently in Learning*, Neural Computation 1998.
  Schraudolph, *Fast Curvature Matrix-Vector Products for Second-Order Gradient
  Descent*, Neural Computation 2002. Martens, *New Insights and Perspectives on the
  Natural Gradient Method*, JMLR 2020 (arXiv 2014). Kunstner, Hennig & Balles,
  *Limitations of the Empirical Fisher Approximation for Natural Gradient Descent*,
  NeurIPS 2019.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax.tree_utils as otu

from gradest._src.base import (
  Array,
  PyTree,
  as_jax_callable,
  check_choice,
  check_key,
  check_positive_int,
  check_same_structure,
  tree_weighted_sum,
)
from gradest._src.distributions import (
  Bernoulli,
  Categorical,
  Normal,
  as_distribution,
  kl_divergence,
)

KINDS = ("exact", "empirical", "monte_carlo")
DIAGONAL_KINDS = ("monte_carlo", "empirical")


# --------------------------------------------------------------------------------------
# Likelihoods: the output-space pieces.
# --------------------------------------------------------------------------------------


class Likelihood(NamedTuple):
  r"""The conditional distribution :math:`p(y \mid f)` of one example's target.

  Every function takes **one example** (no batch axis); gradest vmaps them.

  Attributes:
    name: a short name, used in error messages.
    log_likelihood: ``log_likelihood(outputs, targets) -> scalar``,
      :math:`\log p(y \mid f)` summed over the example's coordinates.
    output_fisher_vector_product: ``(outputs, tangent) -> tangent``, the output-space
      Fisher :math:`H(f)\,u` with :math:`H(f) = \mathbb E_{y \sim p(\cdot\mid f)}[
      \nabla_f \log p\, \nabla_f \log p^\top]`, ``tangent`` shaped like ``outputs``.
    sample: ``sample(key, outputs) -> targets``, one draw of :math:`y \sim p(\cdot
      \mid f)` (used by the Monte Carlo Fisher and the sampled-label diagonal).
  """

  name: str
  log_likelihood: Callable[[Array, Array], Array]
  output_fisher_vector_product: Callable[[Array, Array], Array]
  sample: Callable[[Array, Array], Array]


def _categorical_log_likelihood(logits, targets):
  targets = jnp.asarray(targets)
  if logits.ndim < 1 or targets.shape != logits.shape[:-1]:
    raise ValueError(
      "the categorical likelihood needs outputs (logits) of shape (N, ..., K) and integer "
      f"targets of shape (N, ...); per example got outputs {logits.shape} and targets "
      f"{targets.shape}."
    )
  if not jnp.issubdtype(targets.dtype, jnp.integer):
    raise TypeError(
      f"the categorical likelihood needs integer class targets, got dtype {targets.dtype}; "
      "pass class indices, not one-hot vectors."
    )
  return Categorical(logits).log_prob(targets)


def _categorical_fvp(logits, u):
  p = jax.nn.softmax(logits, axis=-1)
  return p * u - p * jnp.sum(p * u, axis=-1, keepdims=True)


def _check_same_shape(name, outputs, targets):
  if jnp.shape(targets) != jnp.shape(outputs):
    raise ValueError(
      f"the {name} likelihood needs targets of the outputs' shape; per example got outputs "
      f"{jnp.shape(outputs)} and targets {jnp.shape(targets)}."
    )


def _bernoulli_log_likelihood(logits, targets):
  _check_same_shape("bernoulli", logits, targets)
  return Bernoulli(logits).log_prob(targets)


def _bernoulli_fvp(logits, u):
  # p (1 - p) = sigmoid(l) sigmoid(-l): no cancellation for large |l|.
  return jax.nn.sigmoid(logits) * jax.nn.sigmoid(-logits) * u


def _split_mean_log_scale(outputs):
  if outputs.ndim < 1 or outputs.shape[-1] % 2:
    raise ValueError(
      "the gaussian_learned_scale likelihood needs outputs whose last axis is "
      f"[mean, log_scale] (an even size), got per-example outputs of shape {outputs.shape}."
    )
  return jnp.split(outputs, 2, axis=-1)


def gaussian_likelihood(scale: float = 1.0, learned_scale: bool = False) -> Likelihood:
  r"""A diagonal Gaussian likelihood.

  With ``learned_scale=False`` the outputs are the mean and the standard deviation is
  the fixed ``scale``: :math:`H = I / \sigma^2`, and the negative log-likelihood is the
  squared error divided by :math:`2\sigma^2` (plus a constant). With
  ``learned_scale=True`` the last axis of the outputs is ``[mean, log_scale]`` (twice
  the targets' last axis) and, per coordinate, :math:`H = \mathrm{diag}(1/\sigma^2,
  2)` in :math:`(\mu, \log\sigma)`: the Fisher, which differs from the Hessian of the
  negative log-likelihood away from the optimum.

  Args:
    scale: :math:`\sigma > 0` for the fixed-variance case (ignored otherwise).
    learned_scale: whether the model predicts :math:`\log\sigma`.

  Examples:
    >>> import jax.numpy as jnp
    >>> lik = gaussian_likelihood(learned_scale=True)
    >>> outputs = jnp.array([0.0, jnp.log(0.5)])  # mean 0, sigma 1/2
    >>> lik.output_fisher_vector_product(outputs, jnp.ones(2))  # (1 / sigma^2, 2)
    Array([4., 2.], dtype=float32)
  """
  if learned_scale:

    def log_likelihood(outputs, targets):
      mean, log_scale = _split_mean_log_scale(outputs)
      _check_same_shape("gaussian_learned_scale", mean, targets)
      return Normal(mean, jnp.exp(log_scale)).log_prob(targets)

    def fvp(outputs, u):
      _, log_scale = _split_mean_log_scale(outputs)
      u_mean, u_log_scale = jnp.split(u, 2, axis=-1)
      return jnp.concatenate([u_mean * jnp.exp(-2.0 * log_scale), 2.0 * u_log_scale], axis=-1)

    def sample(key, outputs):
      mean, log_scale = _split_mean_log_scale(outputs)
      return Normal(mean, jnp.exp(log_scale)).sample(key)

    return Likelihood("gaussian_learned_scale", log_likelihood, fvp, sample)

  sigma = float(scale)
  if not sigma > 0.0:
    raise ValueError(f"scale must be > 0, got {scale}.")

  def log_likelihood(outputs, targets):
    _check_same_shape("gaussian", outputs, targets)
    return Normal(outputs, sigma).log_prob(targets)

  def fvp(outputs, u):
    return u / sigma**2

  def sample(key, outputs):
    return Normal(outputs, sigma).sample(key)

  return Likelihood("gaussian", log_likelihood, fvp, sample)


def likelihood_from_distribution(name: str, distribution_fn: Callable[[Array], Any]) -> Likelihood:
  r"""A :class:`Likelihood` from ``distribution_fn(outputs) -> distribution``.

  The distribution is over one example's targets (a gradest family, or a distrax /
  numpyro distribution). Its log-likelihood and sampler are the distribution's own;
  the output-space Fisher-vector product is the Hessian of the closed-form
  :math:`\mathrm{KL}(p_f \,\|\, p_{f'})` at :math:`f' = f` (one forward-over-reverse
  product), so the family needs a closed-form :func:`gradest.distributions.kl_divergence`.

  Examples:
    >>> import jax.numpy as jnp
    >>> from gradest.distributions import Normal
    >>> lik = likelihood_from_distribution("gaussian_sd_2", lambda f: Normal(f, 2.0))
    >>> lik.output_fisher_vector_product(jnp.zeros(3), jnp.ones(3))  # 1 / 2**2
    Array([0.25, 0.25, 0.25], dtype=float32)
  """

  def dist(outputs):
    return as_distribution(distribution_fn(outputs), "distribution_fn(outputs)")

  def log_likelihood(outputs, targets):
    return dist(outputs).log_prob(targets)

  def fvp(outputs, u):
    return _kl_hessian_vector_product(dist, outputs)(u)

  def sample(key, outputs):
    return dist(outputs).sample(key)

  return Likelihood(name, log_likelihood, fvp, sample)


# The built-in likelihoods, read-only: new ones are passed as Likelihood objects.
LIKELIHOODS = types.MappingProxyType(
  {
    "categorical": Likelihood(
      "categorical",
      _categorical_log_likelihood,
      _categorical_fvp,
      lambda key, logits: Categorical(logits).sample(key),
    ),
    "bernoulli": Likelihood(
      "bernoulli",
      _bernoulli_log_likelihood,
      _bernoulli_fvp,
      lambda key, logits: Bernoulli(logits).sample(key),
    ),
    "gaussian": gaussian_likelihood(),
    "gaussian_learned_scale": gaussian_likelihood(learned_scale=True),
  }
)


def get_likelihood(likelihood: str | Likelihood) -> Likelihood:
  """``likelihood`` as a :class:`Likelihood` (a built-in name or the object itself).

  Raises:
    ValueError: an unknown name (the message lists the built-in ones).

  Examples:
    >>> get_likelihood("bernoulli").name
    'bernoulli'
  """
  if isinstance(likelihood, Likelihood):
    return likelihood
  if isinstance(likelihood, str) and likelihood in LIKELIHOODS:
    return LIKELIHOODS[likelihood]
  raise ValueError(
    f"likelihood must be one of {', '.join(map(repr, LIKELIHOODS))} or a "
    f"gradest.fisher.Likelihood (e.g. from likelihood_from_distribution); got {likelihood!r}."
  )


# --------------------------------------------------------------------------------------
# Argument checks and the linearized model.
# --------------------------------------------------------------------------------------


def leading_size(tree: PyTree, name: str) -> int:
  leaves = jax.tree.leaves(tree)
  if not leaves:
    raise ValueError(f"{name} has no arrays; it needs a leading batch axis.")
  sizes = {jnp.shape(x)[0] if jnp.ndim(x) else None for x in leaves}
  if len(sizes) != 1 or None in sizes:
    shapes = [jnp.shape(x) for x in leaves]
    raise ValueError(
      f"every leaf of {name} needs the same leading batch axis, got shapes {shapes}."
    )
  return sizes.pop()


def split_batch(batch: Any, needs_targets: bool, what: str) -> tuple[PyTree, PyTree]:
  if batch is None:
    raise TypeError(
      f"{what} needs batch=(inputs, targets), got None; pass the current batch "
      "(targets may be None for kind='exact' and kind='monte_carlo')."
    )
  if not isinstance(batch, tuple | list) or len(batch) != 2:
    raise TypeError(
      f"batch must be the tuple (inputs, targets), got {type(batch).__name__}"
      + (f" of length {len(batch)}" if isinstance(batch, tuple | list) else "")
      + "; wrap your inputs as (inputs, None) if no targets are needed."
    )
  inputs, targets = batch
  if needs_targets and targets is None:
    raise ValueError(
      f"{what} needs the observed targets: pass batch=(inputs, targets), not (inputs, None)."
    )
  return inputs, targets


def check_targets(outputs: PyTree, targets: PyTree, likelihood: Likelihood) -> None:
  n = leading_size(outputs, "apply_fn(params, inputs)")
  jax.eval_shape(jax.vmap(likelihood.output_fisher_vector_product), outputs, outputs)
  if targets is not None:
    m = leading_size(targets, "targets")
    if m != n:
      raise ValueError(
        f"targets have {m} examples but apply_fn(params, inputs) returned {n}; the batch's "
        "inputs and targets must share the leading axis."
      )
    jax.eval_shape(jax.vmap(likelihood.log_likelihood), outputs, targets)


def check_kind(kind: str, key: Any, choices=KINDS) -> None:
  check_choice(kind, "kind", choices)
  if kind == "monte_carlo":
    if key is None:
      raise TypeError(
        "kind='monte_carlo' samples targets from the model and needs key= (a PRNG key, "
        "e.g. jax.random.key(0))."
      )
    check_key(key)


def linearize(apply_fn: Callable, params: PyTree, inputs: PyTree):
  """``(outputs, jvp, vjp)`` of ``p -> apply_fn(p, inputs)`` from one forward pass."""
  outputs, jvp = jax.linearize(lambda p: apply_fn(p, inputs), params)
  transpose = jax.linear_transpose(jvp, params)
  return outputs, jvp, lambda cotangent: transpose(cotangent)[0]


def _check_vector(v: PyTree, params: PyTree) -> PyTree:
  check_same_structure(v, params, "v", "params")
  return jax.tree.map(lambda a, p: jnp.asarray(a, jnp.result_type(p)), v, params)


def output_grads(likelihood: Likelihood, outputs: Array, targets: Array) -> Array:
  """Per-example :math:`\\nabla_f \\log p(y_i \\mid f_i)`, shaped like ``outputs``."""
  return jax.vmap(jax.grad(likelihood.log_likelihood))(outputs, targets)


def sampled_targets(likelihood: Likelihood, outputs: Array, key: Array, num_samples: int):
  """Targets drawn from the model, shape ``(num_samples, N, ...)``, without gradient."""
  n = outputs.shape[0]
  # One key per (sample, example), so the draws do not depend on how the batch is
  # sharded; one flat vmap compiles about twice as fast as two nested ones.
  keys = jax.random.split(key, (num_samples, n)).reshape(num_samples * n)
  outputs = jax.lax.stop_gradient(outputs)
  tiled = jnp.broadcast_to(outputs, (num_samples,) + outputs.shape)
  y = jax.vmap(likelihood.sample)(keys, tiled.reshape((num_samples * n,) + outputs.shape[1:]))
  return y.reshape((num_samples, n) + y.shape[1:])


def _rowdot(a: Array, b: Array) -> Array:
  return jnp.sum((a * b).reshape(a.shape[0], -1), axis=1)


def _scale_rows(w: Array, a: Array) -> Array:
  return w.reshape((-1,) + (1,) * (a.ndim - 1)) * a


# --------------------------------------------------------------------------------------
# Matrix-vector products.
# --------------------------------------------------------------------------------------


def fisher_vector_product(
  apply_fn: Callable[[PyTree, PyTree], Array],
  params: PyTree,
  batch: tuple[PyTree, PyTree | None],
  *,
  likelihood: str | Likelihood,
  kind: str = "exact",
  key: Array | None = None,
  num_samples: int = 1,
) -> Callable[[PyTree], PyTree]:
  r"""The map :math:`v \mapsto F v` for the Fisher of a model's predictive distribution.

  .. math::
    F v = \frac1N \sum_{i=1}^N J_i^\top M_i J_i v, \qquad
    M_i = \begin{cases}
      H(f_i) & \texttt{'exact'} \ \text{(the output-space Fisher; the GGN)} \\
      \nabla_f \ell_i \nabla_f \ell_i^\top,\ \ell_i = \log p(y_i \mid f_i)
        & \texttt{'empirical'} \ \text{(observed targets)} \\
      \frac1S \sum_s \nabla_f \tilde\ell_{is} \nabla_f \tilde\ell_{is}^\top,\
        \tilde y_{is} \sim p(\cdot \mid f_i) & \texttt{'monte\_carlo'}
    \end{cases}

  The model is linearized once (one forward pass, ``jax.linearize``); each product is
  then one Jacobian-vector product, the output-space product, and one
  vector-Jacobian product (``jax.linear_transpose``). No Jacobian or per-example
  gradient is formed, for any of the three kinds. Calling the returned function many
  times (conjugate gradients) reuses the linearization.

  Args:
    apply_fn: ``apply_fn(params, inputs) -> outputs`` with a leading batch axis ``N``.
    params: any pytree of floating-point arrays.
    batch: ``(inputs, targets)``; targets (leading axis ``N``) are needed only for
      ``kind='empirical'``.
    likelihood: a name (``'categorical'``, ``'bernoulli'``, ``'gaussian'``,
      ``'gaussian_learned_scale'``) or a :class:`Likelihood`.
    kind: ``'exact'``, ``'empirical'`` or ``'monte_carlo'``.
    key: PRNG key, required for ``kind='monte_carlo'``.
    num_samples: ``S``, sampled targets per example for ``kind='monte_carlo'``.

  Returns:
    ``fvp(v)``: ``v`` and the result are pytrees with the structure and shapes of
    ``params``. ``'exact'`` and ``'empirical'`` are symmetric positive semi-definite
    linear maps; ``'monte_carlo'`` is one too, for a fixed ``key``, and its mean over
    keys is the exact one.

  Raises:
    ValueError: an unknown ``kind`` or likelihood, targets whose shape does not fit
      the outputs, ``num_samples < 1``, or a ``v`` unlike ``params``.
    TypeError: a missing ``batch``, a missing ``key`` for ``'monte_carlo'``.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> apply_fn = lambda p, x: x @ p["w"] + p["b"]
    >>> params = {"w": jnp.ones((3, 4)), "b": jnp.zeros(4)}
    >>> batch = (jnp.ones((5, 3)), jnp.array([0, 1, 2, 3, 0]))
    >>> fvp = fisher_vector_product(apply_fn, params, batch, likelihood="categorical")
    >>> jax.tree.map(jnp.shape, fvp(params))
    {'b': (4,), 'w': (3, 4)}

  References:
    Schraudolph, *Fast Curvature Matrix-Vector Products for Second-Order Gradient
    Descent*, 2002. Martens, *New Insights and Perspectives on the Natural Gradient
    Method*, JMLR 2020. Kunstner, Hennig & Balles, *Limitations of the Empirical Fisher
    Approximation*, NeurIPS 2019.
  """
  lik = get_likelihood(likelihood)
  s = check_positive_int(num_samples, "num_samples")
  check_kind(kind, key)
  inputs, targets = split_batch(batch, kind == "empirical", "fisher_vector_product")
  outputs, jvp, vjp = linearize(apply_fn, params, inputs)
  check_targets(outputs, targets if kind == "empirical" else None, lik)
  n = outputs.shape[0]

  if kind == "exact":

    def output_product(u):
      return jax.vmap(lik.output_fisher_vector_product)(outputs, u) / n

  elif kind == "empirical":
    g = output_grads(lik, outputs, targets)

    def output_product(u):
      return _scale_rows(_rowdot(g, u) / n, g)

  else:
    sampled = sampled_targets(lik, outputs, key, s)
    g = jax.vmap(lambda y: output_grads(lik, outputs, y))(sampled)  # (S, N, ...)
    g = jax.lax.stop_gradient(g)

    def output_product(u):
      coeff = jax.vmap(lambda gs: _rowdot(gs, u))(g) / (n * s)  # (S, N)
      return jnp.einsum("sn,sn...->n...", coeff, g)

  def fvp(v: PyTree) -> PyTree:
    v = _check_vector(v, params)
    return vjp(output_product(jvp(v)))

  return fvp


def ggn_vector_product(
  apply_fn: Callable[[PyTree, PyTree], PyTree],
  loss_fn: Callable[[PyTree, Any], Array],
  params: PyTree,
  batch: tuple[PyTree, PyTree | None],
) -> Callable[[PyTree], PyTree]:
  r"""The generalized Gauss-Newton product :math:`v \mapsto G v` for any loss of the outputs.

  .. math::
    G v = \frac1N \sum_{i=1}^N J_i^\top\, \nabla^2_f \ell(f_i, y_i)\, J_i v,

  the Hessian of the mean loss :math:`\frac1N\sum_i \ell(f_\theta(x_i), y_i)` with the
  model linearized (the second-derivative terms of ``apply_fn`` dropped). ``G`` is
  positive semi-definite when ``loss_fn`` is convex in the outputs (squared error,
  cross-entropy, Huber, ...), which is what conjugate gradients needs. The
  output-space Hessian-vector product is forward-over-reverse (``jvp`` of ``grad`` of
  ``loss_fn``), per example; the model is linearized once. For a negative
  log-likelihood in natural parameters (softmax cross-entropy on logits, sigmoid
  cross-entropy, squared error) ``G`` equals the exact Fisher of
  :func:`fisher_vector_product`.

  Args:
    apply_fn: ``apply_fn(params, inputs) -> outputs`` (any pytree, leading axis ``N``).
    loss_fn: ``loss_fn(outputs, targets) -> scalar`` for **one** example (gradest
      vmaps it); twice differentiable in ``outputs``.
    params: any pytree of floating-point arrays.
    batch: ``(inputs, targets)``; ``targets`` may be ``None`` (passed through).

  Returns:
    ``ggn(v)`` with ``v`` and the result shaped like ``params``.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> apply_fn = lambda p, x: x @ p
    >>> huber = lambda f, y: jnp.sum(jnp.where(jnp.abs(f - y) < 1, 0.5 * (f - y) ** 2,
    ...                                        jnp.abs(f - y) - 0.5))
    >>> batch = (jnp.eye(3), jnp.zeros((3, 2)))
    >>> ggn_vector_product(apply_fn, huber, jnp.ones((3, 2)) * 0.1, batch)(jnp.ones((3, 2)))
    Array([[0.33333334, 0.33333334],
           [0.33333334, 0.33333334],
           [0.33333334, 0.33333334]], dtype=float32)

  References:
    Schraudolph, *Fast Curvature Matrix-Vector Products for Second-Order Gradient
    Descent*, Neural Computation 2002. Martens, *Deep learning via Hessian-free
    optimization*, ICML 2010.
  """
  inputs, targets = split_batch(batch, False, "ggn_vector_product")
  outputs, jvp, vjp = linearize(apply_fn, params, inputs)
  n = leading_size(outputs, "apply_fn(params, inputs)")
  if targets is not None and leading_size(targets, "targets") != n:
    raise ValueError(
      f"targets have {leading_size(targets, 'targets')} examples but apply_fn(params, "
      f"inputs) returned {n}; inputs and targets must share the leading axis."
    )
  out_struct = jax.eval_shape(
    as_jax_callable(loss_fn), *jax.tree.map(lambda x: x[0], (outputs, targets))
  )
  if jax.tree.leaves(out_struct)[0].shape != () or len(jax.tree.leaves(out_struct)) != 1:
    raise ValueError(
      "loss_fn must map one example's (outputs, targets) to a scalar, got shapes "
      f"{[x.shape for x in jax.tree.leaves(out_struct)]}; gradest vmaps over the batch."
    )

  def output_hvp(f, y, u):
    return jax.jvp(lambda o: jax.grad(loss_fn)(o, y), (f,), (u,))[1]

  def ggn(v: PyTree) -> PyTree:
    v = _check_vector(v, params)
    hu = jax.vmap(output_hvp)(outputs, targets, jvp(v))
    return vjp(jax.tree.map(lambda x: x / n, hu))

  return ggn


def fisher_quadratic_form(
  apply_fn: Callable[[PyTree, PyTree], Array],
  params: PyTree,
  batch: tuple[PyTree, PyTree | None],
  vectors: Sequence[PyTree],
  *,
  likelihood: str | Likelihood,
) -> Array:
  r"""The matrix :math:`V^\top F V` of the exact Fisher in the span of a few vectors.

  .. math::
    Q_{jk} = v_j^\top F v_k = \frac1N \sum_{i=1}^N (J_i v_j)^\top H_i\, (J_i v_k),

  with :math:`F` the exact Fisher (the GGN) of :func:`fisher_vector_product`. Only
  forward-mode products are needed: one linearization and one ``jvp`` per vector
  (vectorized), no reverse pass, which makes it the cheap way to evaluate a quadratic
  model along a few directions (K-FAC's learning rate and momentum, a trust-region
  scale, a reduction ratio).

  Args:
    apply_fn: ``apply_fn(params, inputs) -> outputs`` with a leading batch axis ``N``.
    params: any pytree of floating-point arrays.
    batch: ``(inputs, targets)``; targets are not used (may be ``None``).
    vectors: ``k >= 1`` pytrees shaped like ``params``.
    likelihood: a likelihood name or :class:`Likelihood`.

  Returns:
    ``Q``, shape ``(k, k)``, symmetric positive semi-definite, float32 or wider.

  Examples:
    >>> import jax.numpy as jnp
    >>> apply_fn = lambda p, x: x @ p
    >>> batch = (jnp.eye(2), None)  # F = I / 2 for the unit-variance Gaussian
    >>> fisher_quadratic_form(apply_fn, jnp.zeros(2), batch, [jnp.array([1.0, 0.0]),
    ...                       jnp.array([1.0, 1.0])], likelihood="gaussian")
    Array([[0.5, 0.5],
           [0.5, 1. ]], dtype=float32)
  """
  lik = get_likelihood(likelihood)
  vectors = list(vectors)
  if not vectors:
    raise ValueError("vectors must hold at least one pytree shaped like params.")
  inputs, _ = split_batch(batch, False, "fisher_quadratic_form")
  outputs, jvp, _ = linearize(apply_fn, params, inputs)
  check_targets(outputs, None, lik)
  n = outputs.shape[0]
  stacked = jax.tree.map(lambda *vs: jnp.stack(vs), *[_check_vector(v, params) for v in vectors])
  tangents = jax.vmap(jvp)(stacked)  # (k, N, ...)
  h_tangents = jax.vmap(jax.vmap(lik.output_fisher_vector_product), (None, 0))(outputs, tangents)
  k = len(vectors)
  q = tangents.reshape(k, -1) @ h_tangents.reshape(k, -1).T / n
  return 0.5 * (q + q.T)


def _kl_hessian_vector_product(dist_fn: Callable[[PyTree], Any], params: PyTree):
  """``v -> d^2/dq^2 KL(p_params || p_q) v`` at ``q = params``, forward-over-reverse."""
  fixed = jax.lax.stop_gradient(params)
  p = as_distribution(dist_fn(fixed), "dist_fn(params)")

  def kl(q):
    return kl_divergence(p, as_distribution(dist_fn(q), "dist_fn(params)"))

  return jax.linearize(jax.grad(kl), fixed)[1]


def distribution_fisher_vector_product(
  dist_fn: Callable[[PyTree], Any],
  params: PyTree,
  *,
  key: Array | None = None,
  num_samples: int | None = None,
) -> Callable[[PyTree], PyTree]:
  r"""The Fisher of a family of distributions, :math:`v \mapsto F(\theta) v`.

  .. math::
    F(\theta) = \nabla^2_{\theta'} \mathrm{KL}(p_\theta \,\|\, p_{\theta'})
      \big|_{\theta' = \theta}
      = \mathbb E_{x \sim p_\theta}\big[\nabla_\theta \log p_\theta(x)\,
        \nabla_\theta \log p_\theta(x)^\top\big],

  the second-order term of :math:`\mathrm{KL}(p_\theta \| p_{\theta + h}) \approx
  \frac12 h^\top F h` (the first-order term vanishes). When the family has a
  closed-form :func:`gradest.distributions.kl_divergence` (``Normal``, ``Bernoulli``,
  ``Categorical``, ``Gamma``) the product is the exact Hessian of that KL, one
  forward-over-reverse product through ``dist_fn``. For any other distribution, pass
  ``key`` and ``num_samples``: the product is then the Monte Carlo average of
  :math:`s_j s_j^\top v` over ``num_samples`` samples :math:`x_j \sim p_\theta`,
  :math:`s_j = \nabla_\theta \log p_\theta(x_j)`, an unbiased estimate (one ``jvp``
  and one ``vjp`` of the vector of log-probabilities per product). For natural-gradient
  variational inference (``dist_fn`` maps variational parameters to :math:`q`) and
  policy gradients (``dist_fn`` maps policy parameters to the action distribution).

  Args:
    dist_fn: ``params -> distribution`` (a gradest family, or distrax / numpyro).
    params: any pytree.
    key: PRNG key for the score-function estimate (families with no closed-form KL).
    num_samples: samples for that estimate.

  Returns:
    ``fvp(v)``, ``v`` and the result shaped like ``params``.

  Raises:
    TypeError: no closed-form KL for the family and no ``key``/``num_samples``.

  Examples:
    >>> import jax.numpy as jnp
    >>> from gradest.distributions import Normal
    >>> dist_fn = lambda p: Normal(p["mu"], jnp.exp(p["log_sigma"]))
    >>> params = {"mu": jnp.zeros(2), "log_sigma": jnp.log(jnp.array([1.0, 2.0]))}
    >>> fvp = distribution_fisher_vector_product(dist_fn, params)
    >>> fvp({"mu": jnp.ones(2), "log_sigma": jnp.ones(2)})  # diag(1 / sigma^2, 2)
    {'log_sigma': Array([2., 2.], dtype=float32), 'mu': Array([1.  , 0.25], dtype=float32)}

  References:
    Amari, *Natural Gradient Works Efficiently in Learning*, 1998. Schulman et al.,
    *Trust Region Policy Optimization*, ICML 2015.
  """
  if key is None and num_samples is None:
    try:
      return _checked(_kl_hessian_vector_product(dist_fn, params), params)
    except TypeError as err:
      if "kl_divergence" not in str(err):
        raise
      raise TypeError(
        f"distribution_fisher_vector_product: {err} Pass key= and num_samples= to use the "
        "expected outer product of score functions instead."
      ) from None
  if key is None or num_samples is None:
    raise TypeError(
      "the score-function Fisher needs both key= and num_samples=; pass neither to use "
      "the Hessian of the closed-form KL."
    )
  check_key(key)
  n = check_positive_int(num_samples, "num_samples")
  fixed = jax.lax.stop_gradient(params)
  dist = as_distribution(dist_fn(fixed), "dist_fn(params)")
  xs = jax.lax.stop_gradient(dist.sample(key, (n,)))

  def log_probs(q):
    d = as_distribution(dist_fn(q), "dist_fn(params)")
    return jax.vmap(d.log_prob)(xs)

  _, jvp, vjp = linearize(lambda q, _: log_probs(q), fixed, None)
  return _checked(lambda v: vjp(jvp(v) / n), params)


def _checked(fvp: Callable[[PyTree], PyTree], params: PyTree) -> Callable[[PyTree], PyTree]:
  return lambda v: fvp(_check_vector(v, params))


# --------------------------------------------------------------------------------------
# Diagonals.
# --------------------------------------------------------------------------------------


def fisher_diagonal(
  apply_fn: Callable[[PyTree, PyTree], Array],
  params: PyTree,
  batch: tuple[PyTree, PyTree | None],
  *,
  likelihood: str | Likelihood,
  kind: str = "monte_carlo",
  key: Array | None = None,
  num_samples: int = 1,
  chunk_size: int | None = 64,
) -> PyTree:
  r"""A diagonal of the Fisher from per-example gradients.

  .. math::
    \widehat{\mathrm{diag}\,F} = \frac1{NS} \sum_{i=1}^N \sum_{s=1}^S
      \big(\nabla_\theta \log p(\tilde y_{is} \mid f_\theta(x_i))\big)^{\odot 2},

  with :math:`\tilde y_{is} \sim p(\cdot \mid f_\theta(x_i))` for
  ``kind='monte_carlo'``: unbiased for the diagonal of the exact Fisher
  (:math:`\mathbb E[g g^\top] = J^\top H J` per example). With ``kind='empirical'``
  the observed targets replace the samples (``S = 1``): the diagonal of the empirical
  Fisher, which is biased for that of the Fisher. Per-example gradients are computed
  by ``vmap`` of reverse mode over ``chunk_size`` examples at a time, their squares
  summed over the chunks in a ``lax.scan`` (memory ``chunk_size S |params|``; ``None``
  for all ``N`` at once); each example is passed to ``apply_fn`` as a batch of one.

  Args:
    apply_fn: ``apply_fn(params, inputs) -> outputs`` with a leading batch axis.
    params: any pytree of floating-point arrays.
    batch: ``(inputs, targets)``; targets needed only for ``kind='empirical'``.
    likelihood: a likelihood name or :class:`Likelihood`.
    kind: ``'monte_carlo'`` (sampled targets) or ``'empirical'``.
    key: PRNG key, required for ``'monte_carlo'``.
    num_samples: ``S``, sampled targets per example.
    chunk_size: examples per vectorized chunk (``None``: the whole batch).

  Returns:
    A pytree shaped like ``params``, non-negative.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> apply_fn = lambda p, x: x @ p
    >>> batch = (jnp.ones((4, 3)), None)
    >>> d = fisher_diagonal(apply_fn, jnp.zeros((3, 2)), batch, likelihood="bernoulli",
    ...                     key=jax.random.key(0))
    >>> d  # at logits 0, (y - 1/2)^2 = 1/4 whichever target is drawn
    Array([[0.25, 0.25],
           [0.25, 0.25],
           [0.25, 0.25]], dtype=float32)

  References:
    Martens, *New Insights and Perspectives on the Natural Gradient Method*, JMLR 2020.
    Kunstner, Hennig & Balles, NeurIPS 2019.
  """
  lik = get_likelihood(likelihood)
  s = check_positive_int(num_samples, "num_samples")
  check_kind(kind, key, DIAGONAL_KINDS)
  inputs, targets = split_batch(batch, kind == "empirical", "fisher_diagonal")
  n = leading_size(inputs, "inputs")
  outputs = jax.eval_shape(as_jax_callable(apply_fn), params, inputs)
  check_targets(outputs, targets if kind == "empirical" else None, lik)

  def example_outputs(p, x):
    return apply_fn(p, jax.tree.map(lambda a: a[None], x))[0]

  def squared_grads(x, y_or_key):
    f, vjp = jax.vjp(lambda p: example_outputs(p, x), params)
    if kind == "empirical":
      gs = jax.grad(lik.log_likelihood)(f, y_or_key)[None]
    else:
      keys = jax.random.split(y_or_key, s)
      ys = jax.vmap(lik.sample, (0, None))(keys, jax.lax.stop_gradient(f))
      gs = jax.vmap(jax.grad(lik.log_likelihood), (None, 0))(f, ys)
    per_sample = jax.vmap(lambda g: vjp(g)[0])(jax.lax.stop_gradient(gs))
    return jax.tree.map(lambda g: jnp.sum(jnp.square(g), axis=0), per_sample)

  second = targets if kind == "empirical" else jax.random.split(key, n)
  count = n * (1 if kind == "empirical" else s)
  chunk = n if chunk_size is None else min(check_positive_int(chunk_size, "chunk_size"), n)
  if chunk == n:
    total = jax.vmap(squared_grads)(inputs, second)
    return jax.tree.map(lambda t: jnp.sum(t, axis=0) / count, total)

  # Chunks of `chunk` examples; the last one padded (with copies of example 0) and masked.
  num_chunks = -(-n // chunk)
  pad = num_chunks * chunk - n

  def chunked(a):
    a = jnp.concatenate([a, jnp.broadcast_to(a[:1], (pad,) + a.shape[1:])]) if pad else a
    return a.reshape((num_chunks, chunk) + a.shape[1:])

  mask = (jnp.arange(num_chunks * chunk) < n).reshape(num_chunks, chunk)

  def body(acc, xs):
    x, y, m = xs
    sq = jax.vmap(squared_grads)(x, y)
    return jax.tree.map(jnp.add, acc, tree_weighted_sum(m, sq)), None

  chunks = (*jax.tree.map(chunked, (inputs, second)), mask)
  total, _ = jax.lax.scan(body, otu.tree_zeros_like(params), chunks)
  return jax.tree.map(lambda t: t / count, total)
