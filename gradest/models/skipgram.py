r"""The skip-gram model with negative sampling: embedding tables, loss and SGD step.

The skip-gram model (Mikolov et al. 2013a) gives every word :math:`w` of a vocabulary
of size :math:`V` an input vector :math:`v_w` and an output (context) vector
:math:`u_w`, both in :math:`\mathbb R^d`, and scores a context word :math:`o` near a
center word :math:`c` by :math:`s(o \mid c) = u_o^\top v_c`. Negative sampling
(Mikolov et al. 2013b) trains it on (center, context) pairs with :math:`k` negatives
:math:`n_1..n_k` drawn from a noise distribution :math:`q` (word2vec: the unigram
distribution raised to the power 3/4, :math:`q(w) \propto \mathrm{count}(w)^{3/4}`,
:func:`gradest.samplers.unigram_sampler`), by minimizing

.. math::
  \ell(c, o) = -\log \sigma(u_o^\top v_c) - \sum_{j=1}^{k} \log \sigma(-u_{n_j}^\top v_c),

which is :func:`gradest.negative_sampling_loss` (NCE without the :math:`\log(kq)`
correction; its optimum is the shifted pointwise mutual information
:math:`u_o^\top v_c = \mathrm{PMI}(o, c) - \log k`, Levy & Goldberg 2014).

This module holds the model only; the data pipeline (a corpus, its subsampling and
pairs) and the training loop are the caller's:

* :class:`SkipGramParams` and :func:`init_params`: the two ``(V, d)`` tables with
  word2vec's initialization;
* :func:`pair_losses`: the loss of each pair from the full tables, for ``jax.grad``
  and any optax optimizer (a dense ``(V, d)`` gradient);
* :func:`train_step`: one SGD step by **sparse row updates** (the gradient is taken
  with respect to the gathered rows and applied with ``table.at[ids].add``, so a step
  costs :math:`O(B (k + 2) d)` whatever :math:`V`), its learning rate from any optax
  schedule.

Examples:
  >>> import jax, jax.numpy as jnp, optax
  >>> from gradest.models import skipgram
  >>> from gradest.samplers import unigram_sampler
  >>> counts = jnp.array([50, 30, 20, 10, 5, 5])
  >>> sampler = unigram_sampler(counts, 0.75)
  >>> centers, contexts = jnp.array([0, 1, 2, 3]), jnp.array([1, 0, 3, 2])
  >>> params = skipgram.init_params(jax.random.key(0), 6, 8)
  >>> schedule = optax.linear_schedule(0.5, 0.0, transition_steps=50)  # word2vec's decay
  >>> for step in range(50):
  ...   key = jax.random.fold_in(jax.random.key(1), step)
  ...   params, loss = skipgram.train_step(params, centers, contexts, key, schedule(step),
  ...                                      sampler=sampler, num_negatives=2)
  >>> bool(loss < 3 * jnp.log(2.0))  # the loss at u = 0 is (1 + k) log 2
  True
  >>> # The same loss from the full tables, for jax.grad and an optax optimizer:
  >>> grads = jax.grad(lambda p: skipgram.pair_losses(
  ...   p, centers, contexts, jax.random.key(2), sampler=sampler, num_negatives=2).mean())(params)
  >>> grads.input.shape
  (6, 8)

References:
  Mikolov, Chen, Corrado & Dean, *Efficient estimation of word representations in
  vector space*, ICLR workshop 2013 (2013a). Mikolov, Sutskever, Chen, Corrado & Dean,
  *Distributed representations of words and phrases and their compositionality*,
  NeurIPS 2013 (2013b). Levy & Goldberg, *Neural word embedding as implicit matrix
  factorization*, NeurIPS 2014.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gradest._src.base import Array, check_key, check_positive_int, is_concrete
from gradest._src.nce import negative_sampling_loss
from gradest._src.samplers import Sampler, accidental_hits, sample_candidates

# --------------------------------------------------------------------------------------
# Argument checks.
# --------------------------------------------------------------------------------------


def _int_array(x: Any, name: str) -> Array:
  x = jnp.asarray(x)
  if not jnp.issubdtype(x.dtype, jnp.integer):
    raise TypeError(f"{name} must be integer word ids, got dtype {x.dtype}.")
  return x.astype(jnp.int32)


def check_ids(ids: Array, vocab_size: int, name: str) -> None:
  """Raises if concrete word ids fall outside ``[0, vocab_size)``."""
  if is_concrete(ids) and ids.size:
    values = np.asarray(ids)
    low, high = int(values.min()), int(values.max())
    if low < 0 or high >= vocab_size:
      raise ValueError(
        f"{name} must be word ids in [0, {vocab_size}) (vocab_size from counts or the "
        f"embedding tables), got values in [{low}, {high}]."
      )


# --------------------------------------------------------------------------------------
# Parameters, loss, sparse SGD.
# --------------------------------------------------------------------------------------


class SkipGramParams(NamedTuple):
  """The two embedding tables.

  Attributes:
    input: the word (center) vectors :math:`v_w`, ``(V, d)`` (word2vec's ``syn0``: the
      embeddings to use).
    output: the context vectors :math:`u_w`, ``(V, d)`` (word2vec's ``syn1neg``).
  """

  input: Array
  output: Array


def init_params(key: Array, vocab_size: int, dim: int) -> SkipGramParams:
  r"""Embedding tables with word2vec's initialization.

  .. math::
    v_w \sim \mathcal U\big(-\tfrac{1}{2d}, \tfrac{1}{2d}\big)^d, \qquad u_w = 0.

  Args:
    key: a PRNG key.
    vocab_size: ``V >= 1``.
    dim: ``d >= 1``.

  Returns:
    :class:`SkipGramParams` of float32 ``(V, d)`` tables.

  Examples:
    >>> import jax
    >>> p = init_params(jax.random.key(0), 10, 4)
    >>> p.input.shape, float(abs(p.input).max()) <= 0.125, float(abs(p.output).max())
    ((10, 4), True, 0.0)
  """
  check_key(key)
  vocab_size = check_positive_int(vocab_size, "vocab_size")
  dim = check_positive_int(dim, "dim")
  half = 0.5 / dim
  table = jax.random.uniform(key, (vocab_size, dim), jnp.float32, -half, half)
  return SkipGramParams(table, jnp.zeros((vocab_size, dim), jnp.float32))


def _check_params(params: Any) -> SkipGramParams:
  if not isinstance(params, SkipGramParams):
    raise TypeError(
      f"params must be SkipGramParams(input, output) (from init_params), got "
      f"{type(params).__name__}."
    )
  vin, vout = jnp.shape(params.input), jnp.shape(params.output)
  if len(vin) != 2 or vin != vout:
    raise ValueError(
      f"params.input and params.output must both have shape (vocab_size, dim), got {vin} "
      f"and {vout}."
    )
  return params


def _check_step_args(params, centers, contexts, weights, sampler, num_negatives, batch_ndim):
  params = _check_params(params)
  vocab_size = params.input.shape[0]
  centers = _int_array(centers, "centers")
  contexts = _int_array(contexts, "contexts")
  what = "(batch,)" if batch_ndim == 1 else "(num_steps, batch)"
  if centers.ndim != batch_ndim or contexts.shape != centers.shape:
    raise ValueError(
      f"centers and contexts must have the same shape {what}, got {centers.shape} and "
      f"{contexts.shape}."
    )
  if weights is None:
    weights = jnp.ones(centers.shape, jnp.float32)
  else:
    weights = jnp.asarray(weights)
    if weights.shape != centers.shape:
      raise ValueError(
        f"weights must have the shape of centers {centers.shape}, got {weights.shape}."
      )
    weights = weights.astype(jnp.float32)
  if not isinstance(sampler, Sampler):
    raise TypeError(
      "sampler must be a gradest sampler, e.g. gradest.samplers.unigram_sampler(counts, "
      f"0.75), got {type(sampler).__name__}."
    )
  if sampler.num_classes != vocab_size:
    raise ValueError(
      f"sampler.num_classes={sampler.num_classes} does not match the vocabulary size "
      f"{vocab_size} of params."
    )
  num_negatives = check_positive_int(num_negatives, "num_negatives")
  check_ids(centers, vocab_size, "centers")
  check_ids(contexts, vocab_size, "contexts")
  return params, centers, contexts, weights, num_negatives


def _negatives(sampler, key, contexts, num_negatives, shared_negatives):
  """``(k,)`` negatives shared by the batch, or ``(B, k)`` drawn independently per pair."""
  return sample_candidates(
    sampler, key, contexts[:, None], num_negatives, shared_negatives=shared_negatives
  ).sampled


def _output_ids(contexts, negatives, shared_negatives):
  """The output rows of a batch: ``(B + k,)`` when shared, else ``(B, 1 + k)``."""
  if shared_negatives:
    return jnp.concatenate([contexts, negatives])
  return jnp.concatenate([contexts[:, None], negatives], axis=1)


def _rows_loss(in_rows, out_rows, weights, mask, shared_negatives):
  """``sum_b weights_b * loss_b`` from gathered rows, and the per-pair losses."""
  if shared_negatives:
    b = in_rows.shape[0]
    true = jnp.sum(in_rows * out_rows[:b], axis=-1)[:, None]
    sampled = in_rows @ out_rows[b:].T
  else:
    logits = jnp.einsum("bd,bjd->bj", in_rows, out_rows)
    true, sampled = logits[:, :1], logits[:, 1:]
  losses = negative_sampling_loss(true, sampled, sampled_mask=mask)
  return jnp.sum(weights * losses), losses


def _hit_mask(contexts, negatives, remove_accidental_hits):
  if not remove_accidental_hits:
    return None
  return ~accidental_hits(contexts[:, None], negatives)


def _pair_losses(params, centers, contexts, key, sampler, num_negatives, shared, remove_hits):
  negatives = _negatives(sampler, key, contexts, num_negatives, shared)
  ids = _output_ids(contexts, negatives, shared)
  mask = _hit_mask(contexts, negatives, remove_hits)
  ones = jnp.ones(centers.shape, jnp.float32)
  return _rows_loss(params.input[centers], params.output[ids], ones, mask, shared)[1]


def pair_losses(
  params: SkipGramParams,
  centers: Array,
  contexts: Array,
  key: Array,
  *,
  sampler: Sampler,
  num_negatives: int,
  shared_negatives: bool = False,
  remove_accidental_hits: bool = True,
) -> Array:
  r"""The negative-sampling loss of each (center, context) pair, from the full tables.

  .. math::
    \ell_b = -\log \sigma(u_{o_b}^\top v_{c_b})
      - \sum_{j=1}^{k} [n_{bj} \ne o_b] \log \sigma(-u_{n_{bj}}^\top v_{c_b}),

  with ``k`` negatives per pair drawn independently with replacement,
  ``n = sample_candidates(sampler, key, contexts[:, None], k, shared_negatives=False)
  .sampled`` of shape ``(B, k)``, or with ``shared_negatives`` one set of shape ``(k,)``
  for the batch; with ``remove_accidental_hits`` a negative equal to the pair's context is
  left out (word2vec skips it). :func:`train_step` draws the same negatives from the
  same key. ``jax.grad`` of a sum of these with respect to ``params`` is a dense ``(V, d)``
  array; :func:`train_step` applies the same gradient sparsely.

  Args:
    params: :class:`SkipGramParams`, tables ``(V, d)``.
    centers: int center words, ``(B,)``.
    contexts: int context words, ``(B,)``.
    key: a PRNG key for the negatives.
    sampler: the noise distribution, a :class:`gradest.samplers.Sampler` over ``V``
      words (word2vec: ``unigram_sampler(counts, 0.75)``).
    num_negatives: ``k >= 1`` (static).
    shared_negatives: one set of negatives for the whole batch.
    remove_accidental_hits: leave out negatives equal to the pair's context.

  Returns:
    float32 ``(B,)``.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> from gradest.samplers import UniformSampler
    >>> p = init_params(jax.random.key(0), 10, 4)
    >>> l = pair_losses(p, jnp.array([1, 2]), jnp.array([3, 4]), jax.random.key(1),
    ...                 sampler=UniformSampler(10), num_negatives=3)
    >>> l.shape, bool(l.max() <= 4 * jnp.log(2.0) + 1e-6)  # u = 0: (1 + k) log 2 at most
    ((2,), True)
  """
  check_key(key)
  params, centers, contexts, _, k = _check_step_args(
    params, centers, contexts, None, sampler, num_negatives, 1
  )
  return _pair_losses_jit(
    params,
    centers,
    contexts,
    key,
    sampler,
    k,
    bool(shared_negatives),
    bool(remove_accidental_hits),
  )


_pair_losses_jit = jax.jit(_pair_losses, static_argnums=(5, 6, 7))


def _sparse_step(params, centers, contexts, weights, key, lr, sampler, k, shared, remove_hits):
  negatives = _negatives(sampler, key, contexts, k, shared)
  ids = _output_ids(contexts, negatives, shared)
  mask = _hit_mask(contexts, negatives, remove_hits)
  in_rows, out_rows = params.input[centers], params.output[ids]
  (total, losses), (g_in, g_out) = jax.value_and_grad(_rows_loss, argnums=(0, 1), has_aux=True)(
    in_rows, out_rows, weights, mask, shared
  )
  del total
  new = SkipGramParams(
    params.input.at[centers].add(-lr * g_in), params.output.at[ids].add(-lr * g_out)
  )
  mean_loss = jnp.sum(weights * losses) / jnp.maximum(jnp.sum(weights), 1.0)
  return new, mean_loss


_train_step_jit = jax.jit(_sparse_step, static_argnums=(7, 8, 9), donate_argnums=(0,))


def train_step(
  params: SkipGramParams,
  centers: Array,
  contexts: Array,
  key: Array,
  learning_rate: float | Array,
  *,
  sampler: Sampler,
  num_negatives: int,
  weights: Array | None = None,
  shared_negatives: bool = False,
  remove_accidental_hits: bool = True,
) -> tuple[SkipGramParams, Array]:
  r"""One SGD step of skip-gram with negative sampling, by sparse row updates.

  With the per-pair losses :math:`\ell_b` of :func:`pair_losses` and the pair weights
  :math:`w_b`, the step is

  .. math::
    \theta \leftarrow \theta - \eta\, \nabla_\theta \sum_b w_b\, \ell_b,

  word2vec's per-pair learning rate :math:`\eta` (the gradient of a sum, so :math:`\eta`
  does not depend on the batch size). Only the rows the batch
  touches change: the gradient is taken with respect to the gathered rows
  ``input[centers]`` and ``output[ids]`` (``ids`` the contexts and the negatives) and
  added back with ``table.at[ids].add(-lr * g)``, which sums the contributions of
  repeated ids — exactly the dense gradient step, at a cost of
  :math:`O(B (k + 2) d)` instead of :math:`O(V d)`.

  A row that occurs ``n`` times in the batch moves by the sum of its ``n`` per-pair
  gradients, as with word2vec's lock-free threads, so a word drawn as a negative
  about :math:`B k q(w)` times per batch takes a step that many times larger: the
  batch must be small enough that words rarely repeat within it. With
  ``shared_negatives`` each negative row takes the gradients of all ``B`` pairs at
  once, so :math:`B \eta` must stay smaller still.

  The tables of ``params`` are **donated** (updated in place where the backend allows):
  do not use ``params`` after the call, use the returned ones.

  Args:
    params: :class:`SkipGramParams`, tables ``(V, d)``.
    centers: int ``(B,)``.
    contexts: int ``(B,)``.
    key: a PRNG key for the negatives.
    learning_rate: :math:`\eta`, a scalar (e.g. ``schedule(step)`` of an optax schedule).
    sampler: the noise distribution over the ``V`` words.
    num_negatives: ``k >= 1``.
    weights: per-pair weights ``(B,)`` (0 for padding); ``None``: all 1.
    shared_negatives: one set of ``k`` negatives for the whole batch (cheaper, noisier).
    remove_accidental_hits: leave out negatives equal to the pair's context (word2vec).

  Returns:
    ``(params, mean_loss)``: the updated tables and the weighted mean of the pair losses
    before the step.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> from gradest.samplers import UniformSampler
    >>> p = init_params(jax.random.key(0), 10, 4)
    >>> p, loss = train_step(p, jnp.array([1, 2]), jnp.array([3, 4]), jax.random.key(1), 0.1,
    ...                      sampler=UniformSampler(10), num_negatives=3)
    >>> p.output.shape, int((p.output != 0).any(axis=1).sum()) <= 8  # rows of 2 + 2 * 3 ids
    ((10, 4), True)
  """
  check_key(key)
  params, centers, contexts, weights, k = _check_step_args(
    params, centers, contexts, weights, sampler, num_negatives, 1
  )
  if jnp.ndim(learning_rate) != 0:
    raise ValueError(f"learning_rate must be a scalar, got shape {jnp.shape(learning_rate)}.")
  lr = jnp.asarray(learning_rate, jnp.float32)
  return _train_step_jit(
    params,
    centers,
    contexts,
    weights,
    key,
    lr,
    sampler,
    k,
    bool(shared_negatives),
    bool(remove_accidental_hits),
  )


__all__ = [
  "SkipGramParams",
  "init_params",
  "pair_losses",
  "train_step",
]
