r"""Noise-contrastive and sampled losses for large output spaces.

A model scores a class :math:`w` in a context :math:`c` by a logit :math:`s(w \mid c)`
(unnormalized: :math:`u = e^{s}`). The losses here replace the full softmax over
``V`` classes by the ``num_true`` true classes and ``k`` classes drawn from a noise
distribution :math:`q` (:mod:`gradest.samplers`), each corrected by the log of its
expected count among the negatives, :math:`\log(k\,q(w))` for draws with replacement:

* :func:`nce_loss`: binary NCE, the logistic loss of telling data from noise with
  :math:`\Delta s = s - \log Z - \log(k q)` (Gutmann & Hyvärinen 2012), consistent for
  the *normalized* model;
* :func:`negative_sampling_loss`: word2vec's, :math:`\Delta s = s` (NCE with
  :math:`k\,q \equiv 1`, the seed's special case): not consistent, but a good embedding
  objective;
* :func:`sampled_softmax_loss`: the softmax over the true and sampled classes with
  logits :math:`s - \log(k q)` (Jean et al. 2015, TensorFlow's ``sampled_softmax_loss``);
* :func:`ranking_nce_loss`: each true class ranked against the negatives alone
  (Ma & Collins 2018), consistent for the *conditional* model;
* :func:`infonce_loss`: the contrastive loss of representation learning with in-batch
  and explicit negatives.

All are per example, written in log-sigmoid / log-sum-exp form, computed in at least
float32 (so float16 and bfloat16 inputs give finite results) and returned in the
logits' dtype. Accidental hits (a sampled class that is a true one) are left out with a
boolean ``sampled_mask``, by selection: no ``-FLT_MAX`` is added to any logit.

:func:`sampled_logits_loss` is the high-level function with TensorFlow's semantics: it
draws the candidates, gathers only their rows of the output layer (never a ``V x d``
product) and applies one of the losses; :func:`full_softmax_loss` is the exact loss it
approximates, for evaluation.
"""

from __future__ import annotations

import functools
import math
import operator
from typing import Any

import jax
import jax.numpy as jnp

from gradest._src.base import Array, compute_dtype
from gradest._src.gumbel import check_temperature
from gradest._src.samplers import (
  Candidates,
  Sampler,
  accidental_hits,
  check_labels,
  checked_candidates,
)

LOSSES = ("nce", "negative_sampling", "sampled_softmax", "ranking_nce")

# log(smallest normal float32): a zero expected count gives a large finite correction.
_MIN_LOG_COUNT = math.log(float(jnp.finfo(jnp.float32).tiny))


def _float(x: Any, name: str) -> Array:
  x = jnp.asarray(x)
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise TypeError(f"{name} must be a floating-point array, got dtype {x.dtype}.")
  return x


def _broadcast(x: Any, shape: tuple[int, ...], name: str, target: str, dtype: Any) -> Array:
  x = jnp.asarray(x)
  try:
    broadcast = jnp.broadcast_shapes(x.shape, shape)
  except ValueError:
    broadcast = None
  if broadcast != shape:
    raise ValueError(f"{name} of shape {x.shape} does not broadcast to {target}'s shape {shape}.")
  return jnp.broadcast_to(x, shape).astype(dtype)


def _check_logits(true_logits: Any, sampled_logits: Any):
  true_logits = _float(true_logits, "true_logits")
  sampled_logits = _float(sampled_logits, "sampled_logits")
  if true_logits.ndim < 1 or sampled_logits.ndim < 1:
    raise ValueError(
      "true_logits must have shape batch + (num_true,) and sampled_logits batch + "
      f"(num_sampled,), got shapes {true_logits.shape} and {sampled_logits.shape}."
    )
  if true_logits.shape[:-1] != sampled_logits.shape[:-1]:
    raise ValueError(
      f"true_logits {true_logits.shape} and sampled_logits {sampled_logits.shape} must "
      "share their batch shape (all axes but the last)."
    )
  return true_logits, sampled_logits


def _prepare(true_logits, sampled_logits, true_log_ec, sampled_log_ec, sampled_mask):
  """Checks shapes, casts to the work dtype and applies the expected-count correction."""
  true_logits, sampled_logits = _check_logits(true_logits, sampled_logits)
  out_dtype = jnp.result_type(true_logits, sampled_logits)
  work = compute_dtype(true_logits, sampled_logits)
  t = true_logits.astype(work)
  s = sampled_logits.astype(work)
  if true_log_ec is not None:
    t = t - jnp.maximum(
      _broadcast(true_log_ec, t.shape, "true_log_expected_count", "true_logits", work),
      _MIN_LOG_COUNT,
    )
    s = s - jnp.maximum(
      _broadcast(sampled_log_ec, s.shape, "sampled_log_expected_count", "sampled_logits", work),
      _MIN_LOG_COUNT,
    )
  if sampled_mask is None:
    mask = jnp.ones(s.shape, bool)
  else:
    mask = jnp.asarray(sampled_mask)
    if mask.dtype != jnp.bool_:
      raise TypeError(
        f"sampled_mask must be boolean (True keeps a sampled logit), got {mask.dtype}; "
        "for accidental hits pass ~accidental_hits(labels, sampled)."
      )
    mask = _broadcast(mask, s.shape, "sampled_mask", "sampled_logits", bool)
  return t, s, mask, out_dtype


def _binary_logistic(t: Array, s: Array, mask: Array) -> Array:
  """``-mean_t log sigma(t) - sum_j log sigma(-s_j)`` over the kept negatives."""
  positive = -jnp.mean(jax.nn.log_sigmoid(t), axis=-1)
  negative = -jnp.sum(jnp.where(mask, jax.nn.log_sigmoid(-s), 0.0), axis=-1)
  return positive + negative


@jax.jit
def nce_loss(
  true_logits: Array,
  sampled_logits: Array,
  true_log_expected_count: Array,
  sampled_log_expected_count: Array,
  *,
  log_partition: Array | float | None = None,
  sampled_mask: Array | None = None,
) -> Array:
  r"""Binary noise-contrastive estimation loss, per example.

  With :math:`\Delta s(w) = s(w) - \log Z - \log \mathbb E[\#w]` (the log expected count
  of :math:`w` among the negatives, :math:`\log(k\,q(w))` for ``k`` draws with
  replacement), the loss of one example with true classes :math:`t_1..t_T` and
  negatives :math:`w_1..w_k` is

  .. math::
    -\frac{1}{T}\sum_{i=1}^{T} \log \sigma(\Delta s(t_i))
    - \sum_{j=1}^{k} \log \sigma(-\Delta s(w_j)).

  Its minimizer (infinite data, a flexible enough model) is
  :math:`s(w \mid c) - \log Z = \log p(w \mid c)`: NCE fits the *normalized* model
  while never computing a sum over the classes. :math:`\log Z` is ``log_partition``: 0
  (the model is self-normalized, Mnih & Teh 2012), or a learned parameter (a scalar or
  one per example, e.g. per context) that NCE estimates along with the model.

  Several true classes share one unit of positive weight (:math:`1/T` each), so
  ``s - log Z`` still fits :math:`\log p(w \mid c)` with :math:`p` the labels'
  distribution. TensorFlow's ``nce_loss`` gives them soft labels :math:`1/T` instead,
  which for :math:`T > 1` also pushes every true logit down; with :math:`T = 1` the two
  agree.

  Args:
    true_logits: :math:`s` of the true classes, ``batch + (num_true,)``.
    sampled_logits: :math:`s` of the negatives, ``batch + (num_sampled,)``.
    true_log_expected_count: log expected counts of the true classes, broadcastable to
      ``true_logits`` (:attr:`gradest.samplers.Candidates.true_log_expected_count`).
    sampled_log_expected_count: those of the negatives, broadcastable to
      ``sampled_logits``; values below log(float32 tiny) are clamped there, so a
      class the sampler never draws gives a large finite correction instead of NaN.
    log_partition: :math:`\log Z`, a scalar or ``batch``-shaped (``None``: 0).
    sampled_mask: bool, broadcastable to ``sampled_logits``; ``False`` leaves a negative
      out (accidental hits: ``~accidental_hits(labels, sampled)``).

  Returns:
    The loss of each example, shape ``batch``.

  Examples:
    >>> import jax.numpy as jnp
    >>> loss = nce_loss(jnp.zeros((2, 1)), jnp.zeros((2, 4)), jnp.log(0.1), jnp.log(0.1))
    >>> loss.shape
    (2,)

  References:
    Gutmann & Hyvärinen, *Noise-contrastive estimation of unnormalized statistical
    models*, JMLR 2012. Mnih & Teh, *A fast and simple algorithm for training neural
    probabilistic language models*, ICML 2012.
  """
  t, s, mask, out_dtype = _prepare(
    true_logits,
    sampled_logits,
    true_log_expected_count,
    sampled_log_expected_count,
    sampled_mask,
  )
  if log_partition is not None:
    log_z = _float(log_partition, "log_partition").astype(t.dtype)
    log_z = _broadcast(log_z, t.shape[:-1], "log_partition", "the batch", t.dtype)[..., None]
    t, s = t - log_z, s - log_z
  return _binary_logistic(t, s, mask).astype(out_dtype)


@jax.jit
def negative_sampling_loss(
  true_logits: Array, sampled_logits: Array, *, sampled_mask: Array | None = None
) -> Array:
  r"""word2vec's negative-sampling loss, per example.

  .. math::
    -\frac{1}{T}\sum_{i=1}^{T} \log \sigma(s(t_i)) - \sum_{j=1}^{k} \log \sigma(-s(w_j)),

  NCE with the correction :math:`\log(k q)` dropped. It does not fit the normalized
  model (its optimum is :math:`s = \log p(w \mid c) - \log(k q(w))`, a pointwise
  mutual information shifted by :math:`\log k`), which is what makes it a good
  embedding objective.

  Args:
    true_logits: ``batch + (num_true,)``.
    sampled_logits: ``batch + (num_sampled,)``.
    sampled_mask: bool, broadcastable to ``sampled_logits``; ``False`` leaves a negative out.

  Returns:
    Shape ``batch``.

  Examples:
    >>> import jax.numpy as jnp
    >>> round(float(negative_sampling_loss(jnp.zeros(1), jnp.zeros(3))), 4)  # 4 log 2
    2.7726

  References:
    Mikolov et al., *Distributed representations of words and phrases and their
    compositionality*, NeurIPS 2013. Levy & Goldberg, *Neural word embedding as implicit
    matrix factorization*, NeurIPS 2014.
  """
  t, s, mask, out_dtype = _prepare(true_logits, sampled_logits, None, None, sampled_mask)
  return _binary_logistic(t, s, mask).astype(out_dtype)


@jax.jit
def sampled_softmax_loss(
  true_logits: Array,
  sampled_logits: Array,
  true_log_expected_count: Array,
  sampled_log_expected_count: Array,
  *,
  sampled_mask: Array | None = None,
) -> Array:
  r"""Sampled softmax cross-entropy, per example.

  The softmax over the true and the sampled classes, each logit corrected by its log
  expected count, :math:`\tilde s = s - \log \mathbb E[\#w]`, with the target spread
  evenly over the ``T`` true classes:

  .. math::
    \log \sum_{w \in \{t_i\} \cup \{w_j\}} e^{\tilde s(w)} - \frac1T \sum_{i} \tilde s(t_i).

  Its gradient is a (biased, consistent as ``k`` grows) estimate of the full softmax
  gradient, the expectation under the model approximated by self-normalized
  importance sampling with proposal :math:`q`.

  Args:
    true_logits: ``batch + (num_true,)``.
    sampled_logits: ``batch + (num_sampled,)``.
    true_log_expected_count: broadcastable to ``true_logits``.
    sampled_log_expected_count: broadcastable to ``sampled_logits``.
    sampled_mask: bool, broadcastable to ``sampled_logits``; ``False`` leaves a negative
      out of the normalizer (accidental hits).

  Returns:
    Shape ``batch``.

  Examples:
    >>> import jax.numpy as jnp
    >>> l = sampled_softmax_loss(jnp.zeros((2, 1)), jnp.zeros((2, 3)), 0.0, 0.0)
    >>> [round(float(x), 4) for x in l]  # log 4
    [1.3863, 1.3863]

  References:
    Bengio & Senécal, *Adaptive importance sampling to accelerate training of a neural
    probabilistic language model*, IEEE TNN 2008. Jean et al., *On using very large
    target vocabulary for neural machine translation*, ACL 2015.
  """
  t, s, mask, out_dtype = _prepare(
    true_logits,
    sampled_logits,
    true_log_expected_count,
    sampled_log_expected_count,
    sampled_mask,
  )
  z = jnp.concatenate([t, s], axis=-1)
  keep = jnp.concatenate([jnp.ones(t.shape, bool), mask], axis=-1)
  loss = jax.nn.logsumexp(z, axis=-1, where=keep) - jnp.mean(t, axis=-1)
  return loss.astype(out_dtype)


@jax.jit
def ranking_nce_loss(
  true_logits: Array,
  sampled_logits: Array,
  true_log_expected_count: Array,
  sampled_log_expected_count: Array,
  *,
  sampled_mask: Array | None = None,
) -> Array:
  r"""Ranking NCE: each true class against the negatives, per example.

  With :math:`\tilde s = s - \log \mathbb E[\#w]`,

  .. math::
    \frac1T \sum_{i=1}^{T} \Big[\log\Big(e^{\tilde s(t_i)} + \sum_{j=1}^{k}
    e^{\tilde s(w_j)}\Big) - \tilde s(t_i)\Big].

  It is consistent for the conditional model :math:`p(w \mid c) \propto e^{s(w \mid
  c)}` for every ``k`` (Ma & Collins 2018), with no partition function to learn. For
  one true class it equals :func:`sampled_softmax_loss`; for several, each true class
  is ranked against the negatives alone rather than against the other true classes too.

  Args:
    true_logits: ``batch + (num_true,)``.
    sampled_logits: ``batch + (num_sampled,)``.
    true_log_expected_count: broadcastable to ``true_logits``.
    sampled_log_expected_count: broadcastable to ``sampled_logits``.
    sampled_mask: bool, broadcastable to ``sampled_logits``; ``False`` leaves a negative out.

  Returns:
    Shape ``batch``.

  Examples:
    >>> import jax.numpy as jnp
    >>> l = ranking_nce_loss(jnp.zeros((1, 2)), jnp.zeros((1, 3)), 0.0, 0.0)
    >>> round(float(l[0]), 4)  # log 4: each true class against the 3 negatives
    1.3863

  References:
    Ma & Collins, *Noise contrastive estimation and negative sampling for conditional
    models: consistency and statistical efficiency*, EMNLP 2018.
  """
  t, s, mask, out_dtype = _prepare(
    true_logits,
    sampled_logits,
    true_log_expected_count,
    sampled_log_expected_count,
    sampled_mask,
  )
  negatives = jax.nn.logsumexp(s, axis=-1, where=mask, keepdims=True)
  loss = jnp.mean(jnp.logaddexp(t, negatives) - t, axis=-1)
  return loss.astype(out_dtype)


def infonce_loss(
  anchors: Array,
  positives: Array,
  *,
  negatives: Array | None = None,
  temperature: float | Array = 1.0,
  in_batch: bool = True,
  normalize: bool = False,
  symmetric: bool = False,
) -> Array:
  r"""InfoNCE (contrastive predictive coding), per example.

  With similarities :math:`\mathrm{sim}(a, b) = a^\top b / \tau` (cosine similarities
  when ``normalize``), anchor :math:`a_i` must pick its positive :math:`p_i` among the
  candidates :math:`C_i`:

  .. math::
    -\log \frac{e^{\mathrm{sim}(a_i, p_i)}}{\sum_{b \in C_i} e^{\mathrm{sim}(a_i, b)}},

  where :math:`C_i` holds :math:`p_i`, the other examples' positives (``in_batch``),
  and the explicit ``negatives``. :math:`\log |C_i|` minus the mean loss is a lower
  bound on the mutual information of anchors and positives.

  Args:
    anchors: ``(B, d)``.
    positives: ``(B, d)``; row ``i`` is anchor ``i``'s positive.
    negatives: explicit negatives, ``(M, d)`` shared by the batch or ``(B, M, d)`` per
      anchor; ``None`` for none.
    temperature: :math:`\tau > 0`.
    in_batch: use the other examples' positives as negatives.
    normalize: L2-normalize anchors, positives and negatives (cosine similarity, as in
      SimCLR and CLIP).
    symmetric: also classify each positive among the anchors and average the two
      losses (CLIP's loss); needs ``in_batch`` and no explicit negatives.

  Returns:
    Shape ``(B,)``.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> x = jax.random.normal(jax.random.key(0), (4, 8))
    >>> infonce_loss(x, x, temperature=0.1).shape
    (4,)

  References:
    van den Oord, Li & Vinyals, *Representation learning with contrastive predictive
    coding*, 2018. Chen et al., *A simple framework for contrastive learning of visual
    representations* (SimCLR), ICML 2020. Radford et al., *Learning transferable visual
    models from natural language supervision* (CLIP), ICML 2021.
  """
  anchors = _float(anchors, "anchors")
  positives = _float(positives, "positives")
  if anchors.ndim != 2 or positives.shape != anchors.shape:
    raise ValueError(
      f"anchors and positives must both have shape (batch, dim), got {anchors.shape} "
      f"and {positives.shape}."
    )
  check_temperature(temperature)
  b, d = anchors.shape
  if negatives is not None:
    negatives = _float(negatives, "negatives")
    if not (
      (negatives.ndim == 2 and negatives.shape[1] == d)
      or (negatives.ndim == 3 and negatives.shape[0] == b and negatives.shape[2] == d)
    ):
      raise ValueError(
        f"negatives must have shape (M, {d}) (shared) or ({b}, M, {d}) (per anchor), "
        f"got {negatives.shape}."
      )
  if not in_batch and negatives is None:
    raise ValueError("infonce_loss needs negatives: pass negatives=... or keep in_batch=True.")
  if symmetric and (not in_batch or negatives is not None):
    raise ValueError("symmetric=True needs in_batch=True and no explicit negatives.")
  return _infonce(anchors, positives, negatives, temperature, in_batch, normalize, symmetric)


@functools.partial(jax.jit, static_argnums=(4, 5, 6))
def _infonce(anchors, positives, negatives, temperature, in_batch, normalize, symmetric):
  out_dtype = jnp.result_type(anchors, positives)
  work = compute_dtype(anchors, positives)
  a, p = anchors.astype(work), positives.astype(work)
  n = None if negatives is None else negatives.astype(work)
  if normalize:
    a, p = _l2_normalize(a), _l2_normalize(p)
    n = None if n is None else _l2_normalize(n)
  inv_t = 1.0 / jnp.asarray(temperature, work)
  positive = jnp.sum(a * p, axis=-1) * inv_t
  parts = []
  if in_batch:
    pairs = (a @ p.T) * inv_t
    parts.append(pairs)
  else:
    parts.append(positive[:, None])
  if n is not None:
    if n.ndim == 2:
      parts.append((a @ n.T) * inv_t)
    else:
      parts.append(jnp.einsum("bd,bmd->bm", a, n) * inv_t)
  loss = jax.nn.logsumexp(jnp.concatenate(parts, axis=-1), axis=-1) - positive
  if symmetric:
    loss = 0.5 * (loss + jax.nn.logsumexp(pairs, axis=0) - positive)
  return loss.astype(out_dtype)


def _l2_normalize(x: Array) -> Array:
  norm = jnp.sqrt(jnp.sum(x * x, axis=-1, keepdims=True))
  return x / jnp.maximum(norm, jnp.finfo(x.dtype).eps)


# --------------------------------------------------------------------------------------
# The output layer: gathered rows, the high-level loss, the exact loss.
# --------------------------------------------------------------------------------------


def _check_layer(hidden, weights, biases, labels, num_true=None):
  hidden = _float(hidden, "hidden")
  weights = _float(weights, "weights")
  if hidden.ndim < 1:
    raise ValueError("hidden must have shape batch + (dim,), got a scalar.")
  if weights.ndim != 2 or weights.shape[1] != hidden.shape[-1]:
    raise ValueError(
      f"weights must have shape (num_classes, dim) = (V, {hidden.shape[-1]}) to match "
      f"hidden {hidden.shape}, got {weights.shape}."
    )
  num_classes = weights.shape[0]
  if biases is not None:
    biases = _float(biases, "biases")
    if biases.shape != (num_classes,):
      raise ValueError(
        f"biases must have shape (num_classes,) = ({num_classes},), got {biases.shape}; "
        "pass biases=None for a layer without bias."
      )
  batch_shape = hidden.shape[:-1]
  labels = jnp.asarray(labels)
  if labels.shape == batch_shape:
    labels = labels[..., None]
  if labels.shape[:-1] != batch_shape or labels.ndim != len(batch_shape) + 1:
    raise ValueError(
      f"labels must have shape batch or batch + (num_true,) with batch = {batch_shape} "
      f"(from hidden), got {labels.shape}."
    )
  labels = check_labels(labels, num_classes)
  if num_true is not None and operator.index(num_true) != labels.shape[-1]:
    raise ValueError(
      f"num_true={num_true} does not match labels of shape {labels.shape} "
      f"({labels.shape[-1]} true classes per example)."
    )
  return hidden, weights, biases, labels


def sampled_logits(
  hidden: Array, weights: Array, biases: Array | None, labels: Array, sampled: Array
) -> tuple[Array, Array]:
  """The logits of the true and the sampled classes, gathering only their rows.

  Args:
    hidden: ``batch + (dim,)``.
    weights: the output layer, ``(num_classes, dim)``.
    biases: ``(num_classes,)`` or ``None``.
    labels: int ``batch + (num_true,)`` (or ``batch`` for one true class).
    sampled: int ``(num_sampled,)`` shared by the batch, or ``batch + (num_sampled,)``.

  Returns:
    ``(true_logits, sampled_logits)`` of shapes ``batch + (num_true,)`` and
    ``batch + (num_sampled,)``. The cost is ``O(batch x (num_true + num_sampled) x dim)``
    whatever ``num_classes``.

  Examples:
    >>> import jax.numpy as jnp
    >>> t, s = sampled_logits(jnp.ones((2, 3)), jnp.ones((100, 3)), None,
    ...                       jnp.array([1, 2]), jnp.array([5, 6, 7]))
    >>> t.shape, s.shape
    ((2, 1), (2, 3))
  """
  hidden, weights, biases, labels = _check_layer(hidden, weights, biases, labels)
  sampled = _check_sampled(sampled, hidden.shape[:-1])
  return _gathered_logits(hidden, weights, biases, labels, sampled)


def _check_sampled(sampled: Any, batch_shape: tuple[int, ...]) -> Array:
  sampled = jnp.asarray(sampled)
  if not jnp.issubdtype(sampled.dtype, jnp.integer):
    raise TypeError(f"sampled must be integer class ids, got dtype {sampled.dtype}.")
  if sampled.ndim != 1 and sampled.shape[:-1] != batch_shape:
    raise ValueError(
      f"sampled must have shape (num_sampled,) or batch + (num_sampled,) with batch = "
      f"{batch_shape}, got {sampled.shape}."
    )
  return sampled


@jax.jit
def _gathered_logits(hidden, weights, biases, labels, sampled):
  true_logits = jnp.einsum("...d,...td->...t", hidden, weights[labels])
  if sampled.ndim == 1:
    sampled_logits_ = hidden @ weights[sampled].T
  else:
    sampled_logits_ = jnp.einsum("...d,...sd->...s", hidden, weights[sampled])
  if biases is not None:
    true_logits = true_logits + biases[labels]
    sampled_logits_ = sampled_logits_ + biases[sampled]
  return true_logits, sampled_logits_


def sampled_logits_loss(
  hidden: Array,
  weights: Array,
  biases: Array | None,
  labels: Array,
  key: Array | None,
  *,
  sampler: Sampler,
  num_sampled: int,
  loss: str = "sampled_softmax",
  num_true: int | None = None,
  remove_accidental_hits: bool | None = None,
  unique: bool = True,
  shared_negatives: bool = True,
  exclude_true: bool = False,
  log_partition: Array | float | None = None,
  candidates: Candidates | None = None,
) -> Array:
  r"""A sampled loss of a linear output layer, with TensorFlow's semantics.

  The layer scores class :math:`w` by :math:`s(w) = h^\top W_w + b_w`. This draws
  ``num_sampled`` negatives from ``sampler`` (:func:`gradest.samplers.sample_candidates`),
  gathers the rows of ``weights`` and ``biases`` of the true and sampled classes only,
  and returns the chosen loss per example — ``tf.nn.nce_loss`` (``loss="nce"``) and
  ``tf.nn.sampled_softmax_loss`` (``loss="sampled_softmax"``) in one call, plus
  ``"negative_sampling"`` and ``"ranking_nce"``.

  Gradients: ``jax.grad`` with respect to ``weights`` is a dense ``(V, dim)`` array
  (JAX has no sparse gradients), which costs ``O(V dim)`` memory traffic per step. For a
  step whose cost does not grow with ``V``, gather the rows ``weights[ids]`` of the true
  and sampled ids yourself, compute the logits from slices of that block, apply the
  same loss with
  :func:`candidate_sampling_loss`, differentiate with respect to the rows and update
  with ``weights.at[ids].add(...)`` in a jitted step with the table donated
  (``benchmarks/nce.py`` does exactly this).

  Args:
    hidden: ``batch + (dim,)``.
    weights: ``(num_classes, dim)``; ``num_classes`` must equal ``sampler.num_classes``.
    biases: ``(num_classes,)`` or ``None``.
    labels: int ``batch + (num_true,)`` or ``batch``; checked to lie in
      ``[0, num_classes)`` when concrete (under ``jax.jit`` an out-of-range id is
      clamped by the gather, as everywhere in JAX).
    key: a PRNG key (may be ``None`` when ``candidates`` is given).
    sampler: a :class:`gradest.samplers.Sampler` over ``num_classes`` classes.
    num_sampled: negatives per set, ``>= 1`` (static).
    loss: ``"sampled_softmax"``, ``"nce"``, ``"negative_sampling"`` or ``"ranking_nce"``.
    num_true: optional check of ``labels.shape[-1]``.
    remove_accidental_hits: leave out sampled classes equal to a true label. ``None``:
      TensorFlow's defaults — ``True`` for the softmax losses, ``False`` for NCE and
      negative sampling (whose noise sample may legitimately contain a true class).
      With draws *with replacement* (``unique=False``), removing the hits drops the
      true class from the sampled estimate of the normalizer while its own term
      :math:`e^{s_t}/(k q_t)` vanishes as ``k`` grows, so the loss converges to a
      softmax without the true class's mass; with ``unique=True`` (expected counts
      tending to 1) or with the hits kept, it converges to the full softmax.
    unique: draw the negatives until distinct (TensorFlow's default ``True``).
    shared_negatives: one set of negatives for the batch (TensorFlow's) or one per
      example.
    exclude_true: never draw a true label (see :func:`gradest.samplers.sample_candidates`).
    log_partition: :math:`\log Z` for ``loss="nce"`` (a scalar or per example).
    candidates: negatives drawn beforehand (TensorFlow's ``sampled_values``); then
      ``key``, ``unique``, ``shared_negatives`` and ``exclude_true`` are not used.

  Returns:
    The loss of each example, shape ``batch``.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> from gradest.samplers import LogUniformSampler
    >>> V, d = 10_000, 16
    >>> w = 0.01 * jax.random.normal(jax.random.key(1), (V, d))
    >>> h = jax.random.normal(jax.random.key(2), (4, d))
    >>> labels = jnp.array([3, 14, 159, 2653])
    >>> loss = sampled_logits_loss(h, w, jnp.zeros(V), labels, jax.random.key(3),
    ...                            sampler=LogUniformSampler(V), num_sampled=64)
    >>> loss.shape
    (4,)

  References:
    TensorFlow, ``tf.nn.nce_loss``, ``tf.nn.sampled_softmax_loss``. Jean et al., ACL
    2015. Gutmann & Hyvärinen, JMLR 2012. Ma & Collins, EMNLP 2018.
  """
  _check_loss_name(loss, log_partition)
  # Labels are checked (range included, when concrete) once here, not again below.
  hidden, weights, biases, labels = _check_layer(hidden, weights, biases, labels, num_true)
  if not isinstance(sampler, Sampler):
    raise TypeError(
      f"sampler must be a gradest sampler, got {type(sampler).__name__}; e.g. "
      "gradest.samplers.LogUniformSampler(num_classes)."
    )
  if sampler.num_classes != weights.shape[0]:
    raise ValueError(
      f"sampler.num_classes={sampler.num_classes} does not match weights.shape[0]="
      f"{weights.shape[0]}."
    )
  if candidates is None:
    if key is None:
      raise ValueError("key is needed to draw the negatives (or pass candidates=...).")
    candidates = checked_candidates(
      sampler,
      key,
      labels,
      num_sampled,
      unique=unique,
      shared_negatives=shared_negatives,
      exclude_true=exclude_true,
    )
  else:
    _check_candidates(candidates, hidden.shape[:-1])
  true_logits, sampled = _gathered_logits(hidden, weights, biases, labels, candidates.sampled)
  return _candidate_loss(
    true_logits,
    sampled,
    labels,
    candidates,
    log_partition,
    loss,
    _remove_hits(loss, remove_accidental_hits),
  )


def candidate_sampling_loss(
  true_logits: Array,
  sampled_logits: Array,
  labels: Array,
  candidates: Candidates,
  *,
  loss: str = "sampled_softmax",
  remove_accidental_hits: bool | None = None,
  log_partition: Array | float | None = None,
) -> Array:
  r"""The loss of :func:`sampled_logits_loss` from logits computed elsewhere.

  For a model that computes its true and sampled logits itself — from gathered rows
  whose gradient it takes directly (a sparse update, flat in ``V``), or from anything
  other than a linear layer — this applies the corrections of ``candidates``, the
  accidental-hit mask and the chosen loss exactly as :func:`sampled_logits_loss` does.

  Args:
    true_logits: ``batch + (num_true,)``.
    sampled_logits: ``batch + (num_sampled,)``, for the ids ``candidates.sampled``.
    labels: int ``batch + (num_true,)`` (or ``batch``), for the accidental hits.
    candidates: the :class:`gradest.samplers.Candidates` the negatives came from.
    loss, remove_accidental_hits, log_partition: as in :func:`sampled_logits_loss`.

  Returns:
    The loss of each example, shape ``batch``.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> from gradest.samplers import UniformSampler, sample_candidates
    >>> labels = jnp.array([[1], [2]])
    >>> c = sample_candidates(UniformSampler(100), jax.random.key(0), labels, 8)
    >>> candidate_sampling_loss(jnp.zeros((2, 1)), jnp.zeros((2, 8)), labels, c).shape
    (2,)
  """
  _check_loss_name(loss, log_partition)
  true_logits, sampled_logits = _check_logits(true_logits, sampled_logits)
  batch_shape = true_logits.shape[:-1]
  labels = jnp.asarray(labels)
  if labels.shape == batch_shape:
    labels = labels[..., None]
  if labels.shape[:-1] != batch_shape or labels.ndim != len(batch_shape) + 1:
    raise ValueError(
      f"labels must have shape batch or batch + (num_true,) with batch = {batch_shape} "
      f"(from true_logits), got {labels.shape}."
    )
  labels = check_labels(labels)
  _check_candidates(candidates, batch_shape)
  return _candidate_loss(
    true_logits,
    sampled_logits,
    labels,
    candidates,
    log_partition,
    loss,
    _remove_hits(loss, remove_accidental_hits),
  )


def _check_loss_name(loss: Any, log_partition: Any) -> None:
  if loss not in LOSSES:
    raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}.")
  if log_partition is not None and loss != "nce":
    raise ValueError(f"log_partition is an NCE parameter; got it with loss={loss!r}.")


def _check_candidates(candidates: Any, batch_shape: tuple[int, ...]) -> None:
  if not isinstance(candidates, Candidates):
    raise TypeError(
      f"candidates must be a gradest.samplers.Candidates, got {type(candidates).__name__}."
    )
  _check_sampled(candidates.sampled, batch_shape)


def _remove_hits(loss: str, remove_accidental_hits: bool | None) -> bool:
  """TensorFlow's defaults: remove accidental hits for the softmax losses only."""
  if remove_accidental_hits is None:
    return loss in ("sampled_softmax", "ranking_nce")
  return bool(remove_accidental_hits)


@functools.partial(jax.jit, static_argnums=(5, 6))
def _candidate_loss(true_logits, sampled, labels, candidates, log_partition, loss, remove_hits):
  mask = ~accidental_hits(labels, candidates.sampled) if remove_hits else None
  # Slots a jitted draw could not fill carry an infinite log expected count: left out.
  drawn = candidates.sampled_log_expected_count < jnp.inf
  mask = drawn if mask is None else mask & drawn
  if loss == "negative_sampling":
    return negative_sampling_loss(true_logits, sampled, sampled_mask=mask)
  args = (
    true_logits,
    sampled,
    candidates.true_log_expected_count,
    candidates.sampled_log_expected_count,
  )
  if loss == "nce":
    return nce_loss(*args, log_partition=log_partition, sampled_mask=mask)
  if loss == "sampled_softmax":
    return sampled_softmax_loss(*args, sampled_mask=mask)
  return ranking_nce_loss(*args, sampled_mask=mask)


def full_softmax_loss(hidden: Array, weights: Array, biases: Array | None, labels: Array) -> Array:
  r"""The exact softmax cross-entropy over all classes, per example (for evaluation).

  .. math::
    \log \sum_{w=1}^{V} e^{s(w)} - \frac1T \sum_i s(t_i),

  the loss :func:`sampled_softmax_loss` approximates (the same target spread evenly
  over the true classes). Costs a ``batch x V`` product.

  Args:
    hidden: ``batch + (dim,)``.
    weights: ``(num_classes, dim)``.
    biases: ``(num_classes,)`` or ``None``.
    labels: int ``batch + (num_true,)`` or ``batch``.

  Returns:
    Shape ``batch``.

  Examples:
    >>> import jax.numpy as jnp
    >>> loss = full_softmax_loss(jnp.zeros((2, 3)), jnp.zeros((8, 3)), None, jnp.array([0, 5]))
    >>> [round(float(x), 4) for x in loss]  # log 8
    [2.0794, 2.0794]
  """
  hidden, weights, biases, labels = _check_layer(hidden, weights, biases, labels)
  return _full_softmax(hidden, weights, biases, labels)


@jax.jit
def _full_softmax(hidden, weights, biases, labels):
  out_dtype = jnp.result_type(hidden, weights)
  logits = (hidden @ weights.T).astype(compute_dtype(hidden, weights))
  if biases is not None:
    logits = logits + biases
  true = jnp.take_along_axis(logits, labels, axis=-1)
  return (jax.nn.logsumexp(logits, axis=-1) - jnp.mean(true, axis=-1)).astype(out_dtype)
