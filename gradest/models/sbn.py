r"""Sigmoid belief networks: layered directed models over binary units.

A sigmoid belief net (SBN) with layer sizes ``(n_0, ..., n_L)``, listed from the top
layer down to the bottom (visible) layer, is the directed model over binary row vectors
:math:`s_l \in \{0, 1\}^{n_l}`

.. math::
  p(s_{0,i} = 1) = \sigma(t_i), \qquad
  p(s_{l+1,i} = 1 \mid s_l) = \sigma\Big(\sum_j s_{l,j} W_{l,ji} + b_{l,i}\Big),

with :math:`\sigma(a) = 1 / (1 + e^{-a})` and the units of a layer conditionally
independent given the layer above. Writing :math:`a_0 = t` and
:math:`a_{l+1} = s_l W_l + b_l` for the logits of every layer, the log joint is a sum of
Bernoulli log-likelihoods,

.. math::
  \log p(s_0, \dots, s_L) = \sum_{l=0}^{L} \sum_i
    s_{l,i} \log \sigma(a_{l,i}) + (1 - s_{l,i}) \log \sigma(-a_{l,i}).

**Closed-form gradient.** A weight enters only the conditional of its child unit, and
:math:`\frac{d}{da}\,[s \log \sigma(a) + (1 - s) \log \sigma(-a)] = s - \sigma(a)` both
for :math:`s = 1` and for :math:`s = 0`, so with :math:`p_l = \sigma(a_l)`

.. math::
  \frac{\partial \log p}{\partial W_{l,ji}} = s_{l,j}\,(s_{l+1,i} - p_{l+1,i}), \qquad
  \frac{\partial \log p}{\partial b_{l,i}} = s_{l+1,i} - p_{l+1,i}, \qquad
  \frac{\partial \log p}{\partial t_i} = s_{0,i} - \sigma(t_i),

the local "parent times prediction error" rule. In matrix form
:math:`\nabla_{W_l} \log p = s_l^\top (s_{l+1} - p_{l+1})`, which
:func:`log_prob_grad` evaluates for a whole batch with one matrix product per layer.

**Conventions.**

* Parameters are the dict ``{"top_logits": t, "layers": [{"w": W_0, "b": b_0}, ...]}``
  of :func:`init_sbn`, ``W_l`` of shape ``(n_l, n_{l+1})`` (parent by child, so a
  layer's logits are ``s @ w + b``, as in :func:`gradest.models.apply_mlp`).
* A configuration of the net is a list ``layers = [s_0, ..., s_L]``, top first, each of
  shape ``batch + (n_l,)``. The batch axes (any number, or none) broadcast between
  layers. Values are floats; :func:`log_prob` uses the stable log-sigmoid form above,
  which is also defined (and differentiable in ``s``) for relaxed values in
  :math:`[0, 1]`.
* The *variational* SBN has one latent layer ``h`` (``num_latent`` units) above the
  visible layer ``x`` and a factorial recognition model
  :math:`q(h \mid x) = \prod_k \mathrm{Bernoulli}(h_k; \sigma(x R + c)_k)`, with
  parameters ``{"generative": init_sbn(...), "recognition": {"w": R, "b": c}}``
  (:func:`init_variational_sbn`). :func:`elbo`, :func:`importance_weighted_bound` and
  :func:`exact_log_marginal` evaluate it; :func:`wake_sleep_grads` trains it.

Examples:
  >>> import jax
  >>> from gradest.models import sbn
  >>> params = sbn.init_sbn(jax.random.key(0), (2, 3))  # 2 latent units above 3 visible
  >>> layers = sbn.sample(jax.random.key(1), params, 8)
  >>> [s.shape for s in layers]
  [(8, 2), (8, 3)]
  >>> sbn.log_prob(params, layers).shape
  (8,)
  >>> grads = sbn.log_prob_grad(params, layers)
  >>> grads["layers"][0]["w"].shape
  (2, 3)

References:
  Neal, *Connectionist learning of belief networks*, Artificial Intelligence 56, 1992.
  Hinton, Dayan, Frey & Neal, *The "wake-sleep" algorithm for unsupervised neural
  networks*, Science 268, 1995. Mnih & Gregor, *Neural Variational Inference and
  Learning in Belief Networks*, ICML 2014. Burda, Grosse & Salakhutdinov, *Importance
  Weighted Autoencoders*, ICLR 2016.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gradest._src.base import (
  Array,
  PyTree,
  check_key,
  check_num_samples,
  check_positive_int,
  open_uniform,
)
from gradest._src.distributions import Bernoulli

# exact_log_marginal enumerates 2**num_latent states; beyond this it is impractical.
_MAX_EXACT_LATENT = 20
# Elements of one (data points x latent states) block in exact_log_marginal.
_EXACT_BLOCK = 1 << 22


# --------------------------------------------------------------------------------------
# Argument checks.
# --------------------------------------------------------------------------------------


def _check_layer_sizes(layer_sizes: Any) -> tuple[int, ...]:
  if isinstance(layer_sizes, (str, bytes)) or not hasattr(layer_sizes, "__iter__"):
    raise TypeError(
      "layer_sizes must be a sequence of positive ints, top layer first, such as (32, 64); "
      f"got {type(layer_sizes).__name__}."
    )
  sizes = tuple(check_positive_int(n, f"layer_sizes[{i}]") for i, n in enumerate(layer_sizes))
  if not sizes:
    raise ValueError("layer_sizes must hold at least one layer width, got an empty sequence.")
  return sizes


def _sizes(params: Any, name: str = "params") -> tuple[int, ...]:
  """The layer sizes that ``params`` describe, after checking their structure."""
  try:
    top, layers = params["top_logits"], params["layers"]
  except (KeyError, TypeError, IndexError):
    raise TypeError(
      f"{name} must be a dict {{'top_logits': ..., 'layers': [...]}} as returned by "
      f"init_sbn, got {type(params).__name__}."
    ) from None
  if jnp.ndim(top) != 1:
    raise ValueError(f"{name}['top_logits'] must have shape (n_0,), got shape {jnp.shape(top)}.")
  sizes = [jnp.shape(top)[0]]
  for i, layer in enumerate(layers):
    w_shape, b_shape = jnp.shape(layer["w"]), jnp.shape(layer["b"])
    if len(w_shape) != 2 or w_shape[0] != sizes[-1] or b_shape != w_shape[1:]:
      raise ValueError(
        f"{name}['layers'][{i}] must hold 'w' of shape ({sizes[-1]}, n) and 'b' of shape "
        f"(n,), got shapes {w_shape} and {b_shape}; build the parameters with init_sbn."
      )
    sizes.append(w_shape[1])
  return tuple(sizes)


def _as_array(x: Any) -> Any:
  """Array-likes (nested lists, numbers) as numpy arrays; arrays and tracers unchanged."""
  return x if hasattr(x, "shape") and hasattr(x, "dtype") else np.asarray(x)


def _float_dtype(x: Any) -> Any:
  dtype = jnp.result_type(x)
  return dtype if jnp.issubdtype(dtype, jnp.floating) else jnp.result_type(float)


def _as_float(x: Any, dtype: Any) -> Array:
  x = jnp.asarray(x)
  if not jnp.issubdtype(x.dtype, jnp.floating):
    x = x.astype(dtype)
  return x


def _check_layers(params: Any, layers: Any, names: Sequence[str] | None = None) -> list[Any]:
  """Checks the number, sizes and batch shapes of ``layers`` against ``params``."""
  sizes = _sizes(params)
  if not isinstance(layers, (list, tuple)):
    raise TypeError(
      "layers must be a list of arrays [s_0 (top), ..., s_L (bottom)], one per layer, got "
      f"{type(layers).__name__}."
    )
  if len(layers) != len(sizes):
    raise ValueError(
      f"layers holds {len(layers)} arrays but params describe {len(sizes)} layers of sizes "
      f"{sizes}; pass one array per layer, top layer first."
    )
  names = names or [f"layers[{i}]" for i in range(len(sizes))]
  layers = [_as_array(s) for s in layers]
  for name, s, n in zip(names, layers, sizes, strict=True):
    if s.ndim == 0 or s.shape[-1] != n:
      raise ValueError(
        f"{name} must have shape batch + ({n},) to match the layer sizes {sizes} of the "
        f"parameters, got shape {s.shape}."
      )
  try:
    jnp.broadcast_shapes(*(s.shape[:-1] for s in layers))
  except ValueError:
    raise ValueError(
      f"the batch axes of {', '.join(names)} do not broadcast together: shapes "
      f"{[s.shape for s in layers]}."
    ) from None
  return layers


def _check_recognition(recognition_params: Any) -> tuple[int, int]:
  try:
    w_shape = jnp.shape(recognition_params["w"])
    b_shape = jnp.shape(recognition_params["b"])
  except (KeyError, TypeError, IndexError):
    raise TypeError(
      "recognition_params must be a dict {'w': (num_visible, num_latent), 'b': "
      f"(num_latent,)}}, got {type(recognition_params).__name__}."
    ) from None
  if len(w_shape) != 2 or b_shape != w_shape[1:]:
    raise ValueError(
      "recognition_params must hold 'w' of shape (num_visible, num_latent) and 'b' of shape "
      f"(num_latent,), got shapes {w_shape} and {b_shape}."
    )
  return w_shape[0], w_shape[1]


def _check_generative(generative_params: Any) -> tuple[int, int]:
  sizes = _sizes(generative_params, "generative_params")
  if len(sizes) != 2:
    raise ValueError(
      "generative_params of a variational SBN must describe one latent and one visible "
      f"layer, got layer sizes {sizes}; build them with init_sbn(key, (num_latent, "
      "num_visible)) or init_variational_sbn."
    )
  return sizes[0], sizes[1]


def _check_variational(params: Any) -> tuple[PyTree, PyTree]:
  try:
    gen, rec = params["generative"], params["recognition"]
  except (KeyError, TypeError, IndexError):
    raise TypeError(
      "params must be a dict {'generative': ..., 'recognition': ...} as returned by "
      f"init_variational_sbn, got {type(params).__name__}."
    ) from None
  num_latent, num_visible = _check_generative(gen)
  if _check_recognition(rec) != (num_visible, num_latent):
    raise ValueError(
      f"params['recognition']['w'] must have shape (num_visible, num_latent) = "
      f"({num_visible}, {num_latent}) to match the generative model, got "
      f"{jnp.shape(rec['w'])}."
    )
  return gen, rec


def _check_visible(x: Any, num_visible: int) -> Any:
  x = _as_array(x)
  if x.ndim == 0 or x.shape[-1] != num_visible:
    raise ValueError(
      f"x must have shape batch + (num_visible,) = batch + ({num_visible},), got shape "
      f"{x.shape}; flatten images to vectors first."
    )
  return x


# --------------------------------------------------------------------------------------
# Closed-form pieces.
# --------------------------------------------------------------------------------------


def _log_bernoulli(logits: Array, s: Array) -> Array:
  """``sum_i s_i log sigmoid(a_i) + (1 - s_i) log sigmoid(-a_i)`` over the last axis."""
  lp = s * jax.nn.log_sigmoid(logits) + (1 - s) * jax.nn.log_sigmoid(-logits)
  return jnp.sum(lp, axis=-1)


def _bernoulli_entropy(logits: Array) -> Array:
  """Entropy of independent Bernoulli units, summed over the last axis."""
  return jnp.sum(jax.nn.softplus(logits) - logits * jax.nn.sigmoid(logits), axis=-1)


def _bernoulli_sample(key: Array, logits: Array, sample_shape: tuple[int, ...] = ()) -> Array:
  """The same values as ``Bernoulli(logits).sample(key, sample_shape)``, drawn flat.

  JAX's random bits depend only on the flat position, so one flat draw reshaped gives
  the same numbers as a draw in the final shape.
  """
  # A flat draw keeps the random-number program one-dimensional, which compiles faster.
  shape = tuple(sample_shape) + logits.shape
  flat = Bernoulli(jnp.broadcast_to(logits, shape).reshape(-1)).sample(key)
  return flat.reshape(shape)


def _bernoulli_from_uniform(u: Array, logits: Array) -> Array:
  """0/1 floats with ``P(1) = sigmoid(logits)`` from uniforms ``u`` in the open interval
  (:func:`open_uniform`), by the rule that :class:`gradest.distributions.Bernoulli`
  samples with: ``u < sigmoid(l)  <=>  log u - log1p(-u) < l``."""
  return (jnp.log(u) - jnp.log1p(-u) < logits).astype(logits.dtype)


def _logits(params: PyTree, layers: Sequence[Array], batch: tuple[int, ...]) -> list[Array]:
  top = params["top_logits"]
  out = [jnp.broadcast_to(top, batch + top.shape)]
  for s, layer in zip(layers[:-1], params["layers"], strict=True):
    a = s @ layer["w"] + layer["b"]
    out.append(jnp.broadcast_to(a, batch + a.shape[-1:]))
  return out


# The computations below are jitted so that eager calls compile once per shape instead of
# dispatching dozens of small operations; the public functions check arguments first.


def _prepare(params: PyTree, layers: Sequence[Any]) -> tuple[list[Array], tuple[int, ...]]:
  dtype = _float_dtype(params["top_logits"])
  layers = [_as_float(s, dtype) for s in layers]
  return layers, tuple(jnp.broadcast_shapes(*(s.shape[:-1] for s in layers)))


@jax.jit
def _layer_logits_jit(params: PyTree, layers: Sequence[Any]) -> list[Array]:
  layers, batch = _prepare(params, layers)
  return _logits(params, layers, batch)


@jax.jit
def _log_prob_jit(params: PyTree, layers: Sequence[Any]) -> Array:
  layers, batch = _prepare(params, layers)
  logits = _logits(params, layers, batch)
  total = _log_bernoulli(logits[0], layers[0])
  for a, s in zip(logits[1:], layers[1:], strict=True):
    total = total + _log_bernoulli(a, s)
  return total


@jax.jit
def _log_prob_grad_jit(params: PyTree, layers: Sequence[Any]) -> PyTree:
  layers, batch = _prepare(params, layers)
  layers = [jnp.broadcast_to(s, batch + s.shape[-1:]) for s in layers]
  logits = _logits(params, layers, batch)
  flat = [s.reshape(-1, s.shape[-1]) for s in layers]
  errors = [s - jax.nn.sigmoid(a).reshape(s.shape) for s, a in zip(flat, logits, strict=True)]
  grads = {
    "top_logits": jnp.sum(errors[0], axis=0),
    "layers": [
      {"w": parent.T @ err, "b": jnp.sum(err, axis=0)}
      for parent, err in zip(flat[:-1], errors[1:], strict=True)
    ],
  }
  # Each leaf in its parameter's dtype, as jax.grad returns it.
  return jax.tree.map(lambda g, p: g.astype(jnp.result_type(p)), grads, params)


@functools.partial(jax.jit, static_argnums=2)
def _sample_jit(key: Array, params: PyTree, num_samples: int) -> list[Array]:
  top = params["top_logits"]
  sizes = [top.shape[0]] + [layer["b"].shape[0] for layer in params["layers"]]
  # One flat draw of uniforms for all layers: a single random-bits computation.
  u = open_uniform(key, (num_samples * sum(sizes),), top.dtype)
  parts = jnp.split(u, np.cumsum([num_samples * n for n in sizes])[:-1])
  uniforms = [p.reshape(num_samples, n) for p, n in zip(parts, sizes, strict=True)]
  s = _bernoulli_from_uniform(uniforms[0], jnp.broadcast_to(top, uniforms[0].shape))
  out = [s]
  for u_l, layer in zip(uniforms[1:], params["layers"], strict=True):
    s = _bernoulli_from_uniform(u_l, s @ layer["w"] + layer["b"])
    out.append(s)
  return out


def _normal_matrices(key: Array, shapes: Sequence[tuple[int, int]], scale: Any) -> list[Array]:
  """``scale``-times standard normal matrices of the given shapes, from one flat draw."""
  if not shapes:
    return []
  sizes = [m * n for m, n in shapes]
  z = scale * jax.random.normal(key, (sum(sizes),), jnp.float32)
  parts = jnp.split(z, np.cumsum(sizes)[:-1])
  return [part.reshape(shape) for part, shape in zip(parts, shapes, strict=True)]


@functools.partial(jax.jit, static_argnums=1)
def _init_sbn_jit(key: Array, sizes: tuple[int, ...], scale: Any) -> PyTree:
  shapes = list(zip(sizes[:-1], sizes[1:], strict=True))
  return {
    "top_logits": jnp.zeros((sizes[0],), jnp.float32),
    "layers": [
      {"w": w, "b": jnp.zeros((w.shape[1],), jnp.float32)}
      for w in _normal_matrices(key, shapes, scale)
    ],
  }


@functools.partial(jax.jit, static_argnums=(1, 2))
def _init_variational_jit(key: Array, num_visible: int, num_latent: int, scale: Any) -> PyTree:
  w, r = _normal_matrices(key, [(num_latent, num_visible), (num_visible, num_latent)], scale)
  return {
    "generative": {
      "top_logits": jnp.zeros((num_latent,), jnp.float32),
      "layers": [{"w": w, "b": jnp.zeros((num_visible,), jnp.float32)}],
    },
    "recognition": {"w": r, "b": jnp.zeros((num_latent,), jnp.float32)},
  }


@jax.jit
def _recognition_logits_jit(recognition_params: PyTree, x: Any) -> Array:
  w, b = recognition_params["w"], recognition_params["b"]
  return _as_float(x, _float_dtype(w)) @ w + b


def _posterior_samples(
  params: PyTree, x: Any, key: Array, num_samples: int
) -> tuple[Array, Array, Array]:
  """``x`` as floats, the logits of ``q(h | x)`` and ``num_samples`` draws from it."""
  x = _as_float(x, _float_dtype(params["generative"]["top_logits"]))
  logits = _recognition_logits_jit(params["recognition"], x)
  return x, logits, _bernoulli_sample(key, logits, (num_samples,))


@functools.partial(jax.jit, static_argnums=3)
def _elbo_jit(params: PyTree, x: Any, key: Array, num_samples: int) -> Array:
  x, logits, h = _posterior_samples(params, x, key, num_samples)
  log_p = _log_prob_jit(params["generative"], [h, x])
  return jnp.mean(log_p, axis=0) + _bernoulli_entropy(logits)


@functools.partial(jax.jit, static_argnums=3)
def _iwae_jit(params: PyTree, x: Any, key: Array, num_samples: int) -> Array:
  x, logits, h = _posterior_samples(params, x, key, num_samples)
  log_w = _log_prob_jit(params["generative"], [h, x]) - _log_bernoulli(logits, h)
  return jax.nn.logsumexp(log_w, axis=0) - math.log(num_samples)


@jax.jit
def _exact_log_marginal_jit(generative_params: PyTree, x: Any) -> Array:
  top = generative_params["top_logits"]
  w, b = generative_params["layers"][0]["w"], generative_params["layers"][0]["b"]
  num_latent, num_visible = w.shape
  x = _as_float(x, _float_dtype(top))
  num_states = 1 << num_latent
  states = (jnp.arange(num_states)[:, None] >> jnp.arange(num_latent)) & 1
  states = states.astype(w.dtype)  # (2**H, H): every latent configuration once
  a = states @ w + b
  # log p(h) + log p(x | h) = offset(h) + x . a(h): a matrix product over data and states.
  offset = _log_bernoulli(top, states) - jnp.sum(jax.nn.softplus(a), axis=-1)
  flat = x.reshape(-1, num_visible)
  block = max(1, _EXACT_BLOCK // num_states)
  if flat.shape[0] <= block:
    out = jax.nn.logsumexp(flat @ a.T + offset, axis=-1)
  else:
    out = jax.lax.map(lambda xn: jax.nn.logsumexp(a @ xn + offset), flat, batch_size=block)
  return out.reshape(x.shape[:-1])


@jax.jit
def _wake_sleep_jit(params: PyTree, x: Any, key: Array) -> PyTree:
  gen, rec = params["generative"], params["recognition"]
  x = _as_float(x, _float_dtype(gen["top_logits"]))
  x = x.reshape(-1, x.shape[-1])
  batch_size = x.shape[0]
  wake_key, sleep_key = jax.random.split(key)
  # Wake: complete the data with posterior samples, fit the generative model to them.
  h = _bernoulli_sample(wake_key, _recognition_logits_jit(rec, x))
  gen_grad = _log_prob_grad_jit(gen, [h, x])
  # Sleep: dream from the generative model, fit the recognition model to the dreams.
  h_dream, x_dream = _sample_jit(sleep_key, gen, batch_size)
  err = h_dream - jax.nn.sigmoid(_recognition_logits_jit(rec, x_dream))
  rec_grad = {"w": x_dream.T @ err, "b": jnp.sum(err, axis=0)}
  return jax.tree.map(lambda g: -g / batch_size, {"generative": gen_grad, "recognition": rec_grad})


# --------------------------------------------------------------------------------------
# Sigmoid belief nets.
# --------------------------------------------------------------------------------------


def init_sbn(key: Array, layer_sizes: Sequence[int], scale: float = 0.01) -> PyTree:
  r"""Parameters of a sigmoid belief net with the given layer widths, top layer first.

  .. math::
    t = 0, \qquad W_l \sim \text{scale} \cdot \mathcal N(0, I), \qquad b_l = 0,

  so every unit starts close to a fair coin.

  Args:
    key: a PRNG key.
    layer_sizes: ``(n_0, ..., n_L)``, at least one positive int, from the top latent
      layer down to the visible layer; ``(32, 64)`` is 32 latent units above 64 visible
      units. One entry gives independent Bernoulli units.
    scale: the standard deviation of the initial weights, ``>= 0``.

  Returns:
    ``{"top_logits": (n_0,), "layers": [{"w": (n_l, n_{l+1}), "b": (n_{l+1},)}, ...]}``
    with one dict per pair of consecutive layers, in float32.

  Raises:
    TypeError: ``layer_sizes`` is not a sequence of ints; a bad ``key``.
    ValueError: an empty ``layer_sizes``, a width below 1, or a negative ``scale``.

  Examples:
    >>> import jax
    >>> params = init_sbn(jax.random.key(0), (2, 3, 5))
    >>> params["top_logits"].shape, [p["w"].shape for p in params["layers"]]
    ((2,), [(2, 3), (3, 5)])

  References:
    Neal, *Connectionist learning of belief networks*, Artificial Intelligence 56, 1992.
  """
  check_key(key)
  sizes = _check_layer_sizes(layer_sizes)
  if isinstance(scale, (int, float)) and not scale >= 0:
    raise ValueError(f"scale must be a non-negative number, got {scale}.")
  return _init_sbn_jit(key, sizes, scale)


def layer_logits(params: PyTree, layers: Sequence[Array]) -> list[Array]:
  r"""The logits of every layer given the layer above it.

  .. math::
    a_0 = t, \qquad a_{l+1} = s_l W_l + b_l, \quad l = 0, \dots, L-1,

  so :math:`p(s_{l,i} = 1 \mid s_{l-1}) = \sigma(a_{l,i})`. The bottom layer
  :math:`s_L` only sets the batch shape.

  Args:
    params: the parameters of :func:`init_sbn`.
    layers: ``[s_0, ..., s_L]``, top first, each of shape ``batch + (n_l,)`` (the
      batch axes broadcast).

  Returns:
    ``[a_0, ..., a_L]``, each of shape ``batch + (n_l,)`` with the broadcast batch
    shape (``a_0`` is ``top_logits`` broadcast to it).

  Raises:
    ValueError: the number of layers or a layer's last-axis size does not match
      ``params``; batch axes that do not broadcast.
    TypeError: ``layers`` is not a list; malformed ``params``.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> params = init_sbn(jax.random.key(0), (2, 3))
    >>> [a.shape for a in layer_logits(params, [jnp.ones((8, 2)), jnp.zeros((8, 3))])]
    [(8, 2), (8, 3)]

  References:
    Neal, *Connectionist learning of belief networks*, Artificial Intelligence 56, 1992.
  """
  return _layer_logits_jit(params, _check_layers(params, layers))


def log_prob(params: PyTree, layers: Sequence[Array]) -> Array:
  r"""Log joint probability of a configuration of the net.

  .. math::
    \log p(s_0, \dots, s_L) = \sum_{l=0}^{L} \sum_i
      s_{l,i} \log \sigma(a_{l,i}) + (1 - s_{l,i}) \log \sigma(-a_{l,i}),

  with the logits :math:`a_l` of :func:`layer_logits`. The log-sigmoid form is finite for
  logits of any size, and it is also defined for relaxed values :math:`s \in [0, 1]`
  (a cross-entropy), where ``jax.grad`` with respect to the layers is what relaxed
  gradient estimators need.

  Args:
    params: the parameters of :func:`init_sbn`.
    layers: ``[s_0, ..., s_L]``, top first, each of shape ``batch + (n_l,)``; any
      batch shape (or none), broadcasting between layers. Integer or boolean values are
      cast to the parameters' float dtype.

  Returns:
    The log joint, shape ``batch`` (a scalar for unbatched layers).

  Raises:
    ValueError: the number of layers or a layer's last-axis size does not match
      ``params``; batch axes that do not broadcast.
    TypeError: ``layers`` is not a list; malformed ``params``.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> params = init_sbn(jax.random.key(0), (2, 3), scale=0.0)
    >>> round(float(log_prob(params, [jnp.ones(2), jnp.zeros(3)])), 4)  # 5 fair coins
    -3.4657

  References:
    Neal, *Connectionist learning of belief networks*, Artificial Intelligence 56, 1992.
  """
  return _log_prob_jit(params, _check_layers(params, layers))


def sample(key: Array, params: PyTree, num_samples: int) -> list[Array]:
  r"""Ancestral samples from the net: each layer drawn given the one above.

  .. math::
    s_0 \sim \mathrm{Bernoulli}(\sigma(t)), \qquad
    s_{l+1} \mid s_l \sim \mathrm{Bernoulli}(\sigma(s_l W_l + b_l)).

  Args:
    key: a PRNG key (one flat draw of ``N * sum(n_l)`` uniforms serves all layers).
    params: the parameters of :func:`init_sbn`.
    num_samples: the number of independent configurations ``N >= 1`` (static).

  Returns:
    ``[s_0, ..., s_L]``, each a float 0/1 array of shape ``(N, n_l)``.

  Raises:
    ValueError: ``num_samples < 1``; malformed ``params``; a key array.
    TypeError: a non-integer ``num_samples``.

  Examples:
    >>> import jax
    >>> params = init_sbn(jax.random.key(0), (2, 3))
    >>> top, visible = sample(jax.random.key(1), params, 8)
    >>> visible.shape, set(visible.ravel().tolist()) <= {0.0, 1.0}
    ((8, 3), True)

  References:
    Neal, *Connectionist learning of belief networks*, Artificial Intelligence 56, 1992.
  """
  check_key(key)
  n = check_num_samples(num_samples)
  _sizes(params)
  return _sample_jit(key, params, n)


def log_prob_grad(params: PyTree, layers: Sequence[Array]) -> PyTree:
  r"""Closed-form gradient of ``log_prob(params, layers).sum()`` with respect to ``params``.

  With :math:`p_l = \sigma(a_l)` the predicted probabilities and the sums over all
  batch elements :math:`n`,

  .. math::
    \nabla_{W_l} = \sum_n s_{l}^{(n)\top} \big(s_{l+1}^{(n)} - p_{l+1}^{(n)}\big),
    \qquad
    \nabla_{b_l} = \sum_n \big(s_{l+1}^{(n)} - p_{l+1}^{(n)}\big), \qquad
    \nabla_{t} = \sum_n \big(s_0^{(n)} - \sigma(t)\big),

  one matrix product per layer (no backward pass). The same formulas hold for relaxed
  values in :math:`[0, 1]`. Equal to
  ``jax.grad(lambda p: log_prob(p, layers).sum())(params)`` up to rounding.

  Args:
    params: the parameters of :func:`init_sbn`.
    layers: ``[s_0, ..., s_L]`` as for :func:`log_prob` (any batch shape; the gradient
      is summed over all batch axes after broadcasting).

  Returns:
    A pytree like ``params``: ``{"top_logits": ..., "layers": [{"w": ..., "b": ...}]}``.

  Raises:
    ValueError: the number of layers or a layer's last-axis size does not match
      ``params``; batch axes that do not broadcast.
    TypeError: ``layers`` is not a list; malformed ``params``.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> params = init_sbn(jax.random.key(0), (2, 3))
    >>> layers = sample(jax.random.key(1), params, 8)
    >>> g = log_prob_grad(params, layers)
    >>> ref = jax.grad(lambda p: log_prob(p, layers).sum())(params)
    >>> bool(jnp.allclose(g["layers"][0]["w"], ref["layers"][0]["w"], atol=1e-5))
    True

  References:
    Neal, *Connectionist learning of belief networks*, Artificial Intelligence 56, 1992.
  """
  return _log_prob_grad_jit(params, _check_layers(params, layers))


# --------------------------------------------------------------------------------------
# The variational SBN: one latent layer and a recognition model.
# --------------------------------------------------------------------------------------


def init_variational_sbn(
  key: Array, num_visible: int, num_latent: int, scale: float = 0.01
) -> PyTree:
  r"""Parameters of a one-latent-layer SBN and its factorial recognition model.

  .. math::
    p(h, x) = \mathrm{Bernoulli}(h; \sigma(t))\,
      \mathrm{Bernoulli}(x; \sigma(h W + b)), \qquad
    q(h \mid x) = \mathrm{Bernoulli}(h; \sigma(x R + c)),

  with :math:`W, R \sim \text{scale} \cdot \mathcal N(0, I)` and zero biases.

  Args:
    key: a PRNG key.
    num_visible: the number of visible units (data dimensions).
    num_latent: the number of binary latent units.
    scale: the standard deviation of the initial weights.

  Returns:
    ``{"generative": ..., "recognition": {"w": (num_visible, num_latent), "b":
    (num_latent,)}}``, the generative part laid out as ``init_sbn(key, (num_latent,
    num_visible), scale)``, in float32.

  Raises:
    ValueError: a size below 1 or a negative ``scale``.
    TypeError: a non-integer size; a bad ``key``.

  Examples:
    >>> import jax
    >>> params = init_variational_sbn(jax.random.key(0), 6, 3)  # 3 latent, 6 visible
    >>> params["generative"]["layers"][0]["w"].shape, params["recognition"]["w"].shape
    ((3, 6), (6, 3))

  References:
    Mnih & Gregor, *Neural Variational Inference and Learning in Belief Networks*, ICML
    2014.
  """
  check_key(key)
  nv = check_positive_int(num_visible, "num_visible")
  nh = check_positive_int(num_latent, "num_latent")
  if isinstance(scale, (int, float)) and not scale >= 0:
    raise ValueError(f"scale must be a non-negative number, got {scale}.")
  return _init_variational_jit(key, nv, nh, scale)


def recognition_logits(recognition_params: PyTree, x: Array) -> Array:
  r"""Logits of the recognition model :math:`q(h \mid x)`: :math:`x R + c`.

  Args:
    recognition_params: ``{"w": (num_visible, num_latent), "b": (num_latent,)}``.
    x: data of shape ``batch + (num_visible,)``.

  Returns:
    Logits of shape ``batch + (num_latent,)``.

  Raises:
    ValueError: ``x``'s last axis is not ``num_visible``; malformed parameters.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> params = init_variational_sbn(jax.random.key(0), 6, 3)
    >>> recognition_logits(params["recognition"], jnp.ones((4, 6))).shape
    (4, 3)

  References:
    Hinton, Dayan, Frey & Neal, *The "wake-sleep" algorithm for unsupervised neural
    networks*, Science 268, 1995.
  """
  num_visible, _ = _check_recognition(recognition_params)
  return _recognition_logits_jit(recognition_params, _check_visible(x, num_visible))


def log_joint(generative_params: PyTree, h: Array, x: Array) -> Array:
  r"""Log joint :math:`\log p(h, x)` of a one-latent-layer SBN: ``log_prob(params, [h, x])``.

  .. math::
    \log p(h, x) = \log \mathrm{Bernoulli}(h; \sigma(t))
      + \log \mathrm{Bernoulli}(x; \sigma(h W + b)).

  Args:
    generative_params: ``init_sbn(key, (num_latent, num_visible))``.
    h: latent values, shape ``batch + (num_latent,)``.
    x: visible values, shape ``batch + (num_visible,)`` (batch axes broadcast with
      ``h``'s, so ``K`` samples of shape ``(K, B, num_latent)`` pair with data of shape
      ``(B, num_visible)``).

  Returns:
    The log joint, shape ``batch``.

  Raises:
    ValueError: the parameters do not have exactly two layers; ``h`` or ``x`` of the
      wrong size.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> params = init_variational_sbn(jax.random.key(0), 6, 3)
    >>> log_joint(params["generative"], jnp.ones((5, 4, 3)), jnp.ones((4, 6))).shape
    (5, 4)

  References:
    Neal, *Connectionist learning of belief networks*, Artificial Intelligence 56, 1992.
  """
  _check_generative(generative_params)
  layers = _check_layers(generative_params, [h, x], names=("h", "x"))
  return _log_prob_jit(generative_params, layers)


def _check_bound_args(params: Any, x: Any, key: Any, num_samples: Any) -> tuple[Any, int]:
  gen, _ = _check_variational(params)
  check_key(key)
  k = check_num_samples(num_samples)
  return _check_visible(x, _check_generative(gen)[1]), k


def elbo(params: PyTree, x: Array, key: Array, num_samples: int = 1) -> Array:
  r"""Monte Carlo evidence lower bound of a variational SBN, per data point.

  With :math:`h_k \sim q(h \mid x)`, :math:`k = 1..K`,

  .. math::
    \hat{\mathcal L}(x) = \frac1K \sum_{k=1}^K \log p(x, h_k) + \mathcal H[q(h \mid x)],
    \qquad
    \mathcal H[q] = \sum_j \operatorname{softplus}(\ell_j) - \ell_j \sigma(\ell_j),

  the entropy of the factorial posterior (logits :math:`\ell`) in closed form. It is
  unbiased for :math:`\mathcal L(x) = \mathbb E_q[\log p(x, h) - \log q(h \mid x)] \le
  \log p(x)`. Meant for evaluation: the samples are discrete, so ``jax.grad`` of it is
  an unbiased gradient for the generative parameters only, not for the recognition
  parameters (use a score-function or relaxed estimator for those).

  Args:
    params: the parameters of :func:`init_variational_sbn`.
    x: data of shape ``batch + (num_visible,)``.
    key: a PRNG key for the posterior samples.
    num_samples: ``K >= 1`` posterior samples per data point (static).

  Returns:
    The estimates, shape ``x.shape[:-1]``.

  Raises:
    ValueError: ``num_samples < 1``; ``x`` of the wrong size; malformed ``params``.
    TypeError: a non-integer ``num_samples``; a bad ``key``.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> params = init_variational_sbn(jax.random.key(0), 6, 3, scale=0.0)
    >>> values = elbo(params, jnp.ones((4, 6)), jax.random.key(1))
    >>> values.shape, round(float(values[0]), 4)  # q = p(h), so the bound is exact
    ((4,), -4.1589)

  References:
    Mnih & Gregor, *Neural Variational Inference and Learning in Belief Networks*, ICML
    2014.
  """
  x, k = _check_bound_args(params, x, key, num_samples)
  return _elbo_jit(params, x, key, k)


def importance_weighted_bound(params: PyTree, x: Array, key: Array, num_samples: int) -> Array:
  r"""Importance-weighted lower bound on :math:`\log p(x)` of a variational SBN.

  .. math::
    \hat{\mathcal L}_K(x) = \log \frac1K \sum_{k=1}^K
      \frac{p(x, h_k)}{q(h_k \mid x)}, \qquad h_k \sim q(h \mid x),

  computed with ``logsumexp``. Its expectation increases with ``K`` from the ELBO
  (``K = 1``) to :math:`\log p(x)` (as :math:`K \to \infty`), so a large ``K`` estimates
  the log-likelihood of models too large for :func:`exact_log_marginal`.

  Args:
    params: the parameters of :func:`init_variational_sbn`.
    x: data of shape ``batch + (num_visible,)``.
    key: a PRNG key for the posterior samples.
    num_samples: ``K >= 1`` (static).

  Returns:
    The estimates, shape ``x.shape[:-1]``.

  Raises:
    ValueError: ``num_samples < 1``; ``x`` of the wrong size; malformed ``params``.
    TypeError: a non-integer ``num_samples``; a bad ``key``.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> params = init_variational_sbn(jax.random.key(0), 6, 3)
    >>> importance_weighted_bound(params, jnp.ones((4, 6)), jax.random.key(1), 100).shape
    (4,)

  References:
    Burda, Grosse & Salakhutdinov, *Importance Weighted Autoencoders*, ICLR 2016.
  """
  x, k = _check_bound_args(params, x, key, num_samples)
  return _iwae_jit(params, x, key, k)


def exact_log_marginal(generative_params: PyTree, x: Array) -> Array:
  r"""Exact :math:`\log p(x)` of a one-latent-layer SBN by enumerating the latent states.

  .. math::
    \log p(x) = \log \sum_{h \in \{0,1\}^{H}} p(h)\, p(x \mid h), \qquad
    \log p(x \mid h) = x \cdot a(h) - \sum_i \operatorname{softplus}(a_i(h)),

  with :math:`a(h) = h W + b`. The second form (equal to the log-sigmoid form) is linear
  in ``x``, so all data points and all :math:`2^H` states take one matrix product, done
  in blocks of data points to bound memory. Practical for ``num_latent <= 20``.

  Args:
    generative_params: ``init_sbn(key, (num_latent, num_visible))``.
    x: data of shape ``batch + (num_visible,)``.

  Returns:
    :math:`\log p(x)`, shape ``x.shape[:-1]``.

  Raises:
    ValueError: ``num_latent > 20``; parameters without exactly two layers; ``x`` of
      the wrong size.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> params = init_sbn(jax.random.key(0), (3, 6), scale=0.0)
    >>> round(float(exact_log_marginal(params, jnp.ones(6))), 4)  # 6 fair coins
    -4.1589

  References:
    Neal, *Connectionist learning of belief networks*, Artificial Intelligence 56, 1992.
  """
  num_latent, num_visible = _check_generative(generative_params)
  if num_latent > _MAX_EXACT_LATENT:
    raise ValueError(
      f"exact_log_marginal enumerates all 2**num_latent latent states, and num_latent = "
      f"{num_latent} > {_MAX_EXACT_LATENT} is too many; estimate log p(x) with "
      "importance_weighted_bound and a large num_samples instead."
    )
  return _exact_log_marginal_jit(generative_params, _check_visible(x, num_visible))


def wake_sleep_grads(params: PyTree, x: Array, key: Array) -> PyTree:
  r"""Gradients of the wake-sleep losses for one step on a batch of data.

  **Wake phase** (generative model): :math:`h^{(n)} \sim q(h \mid x^{(n)})` and the
  loss :math:`-\frac1B \sum_n \log p(x^{(n)}, h^{(n)})`, whose gradient is the negated,
  averaged :func:`log_prob_grad` of the completed data.

  **Sleep phase** (recognition model): :math:`B` "dreams"
  :math:`(h'^{(n)}, x'^{(n)}) \sim p` by :func:`sample`, and the loss
  :math:`-\frac1B \sum_n \log q(h'^{(n)} \mid x'^{(n)})`, with the closed-form gradient

  .. math::
    \nabla_R = -\frac1B \sum_n x'^{(n)\top}
      \big(h'^{(n)} - \sigma(x'^{(n)} R + c)\big), \qquad
    \nabla_c = -\frac1B \sum_n \big(h'^{(n)} - \sigma(x'^{(n)} R + c)\big).

  The two phases optimize different objectives, so the result is not the gradient of
  one function; pass it to an optimizer (e.g. ``optax.adam``) as if it were.

  ``key`` is split as ``wake_key, sleep_key = jax.random.split(key)``; the wake sample
  is ``Bernoulli(recognition_logits(...)).sample(wake_key)`` and the dreams are
  ``sample(sleep_key, params["generative"], B)``.

  Args:
    params: the parameters of :func:`init_variational_sbn`.
    x: a batch of data, shape ``(B, num_visible)`` (more leading axes are flattened
      into the batch; one vector counts as ``B = 1``).
    key: a PRNG key.

  Returns:
    A pytree like ``params``: the gradients of the losses to minimize.

  Raises:
    ValueError: ``x`` of the wrong size or an empty batch; malformed ``params``.
    TypeError: a bad ``key``.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> params = init_variational_sbn(jax.random.key(0), 6, 3)
    >>> grads = wake_sleep_grads(params, jnp.ones((8, 6)), jax.random.key(1))
    >>> jax.tree.structure(grads) == jax.tree.structure(params)
    True

  References:
    Hinton, Dayan, Frey & Neal, *The "wake-sleep" algorithm for unsupervised neural
    networks*, Science 268, 1995.
  """
  gen, _ = _check_variational(params)
  check_key(key)
  x = _check_visible(x, _check_generative(gen)[1])
  if math.prod(x.shape[:-1]) < 1:
    raise ValueError(f"x must hold at least one data point, got shape {x.shape}.")
  return _wake_sleep_jit(params, x, key)
