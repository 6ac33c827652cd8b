r"""The layers K-FAC preconditions, found in a model without rewriting it.

K-FAC needs, for every layer :math:`y = a W + b`, the layer's input :math:`a` and the
gradient of the log-likelihood with respect to its output :math:`y`. gradest records
both while it traces the model, through public APIs only:

* ``flax.linen``: ``nn.Dense``, ``nn.Conv`` (two spatial dimensions) and ``nn.Embed``
  calls, seen with ``flax.linen.intercept_methods``;
* ``flax.nnx``: ``nnx.Linear``, ``nnx.Conv`` and ``nnx.Embed`` calls, seen by wrapping
  those classes' ``__call__`` while gradest traces the model (and only then; the
  wrapper passes every call through unchanged);
* plain functions: :func:`register_dense`, :func:`register_conv2d` and
  :func:`register_embed`, identity functions of a layer's output that the model calls
  once per layer (they cost nothing outside K-FAC).

A layer's parameters are matched to the leaves of ``params`` by identity (the kernel
the layer uses *is* a leaf of the ``params`` the model was called with), so a model
that transforms a kernel before using it (a cast, a reshape, weight tying through
another use) is not matched; such layers are listed as skipped, with the reason, and
their parameters fall back to the identity preconditioner, as does every leaf no
layer covers (layer norms, biases of unsupported layers, ...). A use of a layer's
parameters outside a recorded call (``Embed.attend`` for tied output weights, a kernel
read directly) is not seen: the block covers the recorded call only.
:func:`find_layers` prints what was found.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp

from gradest._src.base import Array, PyTree

LAYER_KINDS = ("dense", "conv2d", "embed")


@dataclasses.dataclass(frozen=True)
class ConvGeometry:
  """The geometry of a 2-D convolution (NHWC inputs, HWIO kernel).

  Attributes:
    kernel_size: ``(kh, kw)``.
    strides: ``(sh, sw)``.
    padding: ``'SAME'``, ``'VALID'``, or ``((lo, hi), (lo, hi))``.
    dilation: the kernel dilation ``(dh, dw)``.
  """

  kernel_size: tuple[int, int]
  strides: tuple[int, int] = (1, 1)
  padding: str | tuple[tuple[int, int], tuple[int, int]] = "SAME"
  dilation: tuple[int, int] = (1, 1)


@dataclasses.dataclass(frozen=True)
class Layer:
  """One layer whose parameters K-FAC preconditions with a Kronecker-factored block.

  Attributes:
    name: a unique name (the module path for flax, the kernel's path otherwise).
    kind: ``'dense'``, ``'conv2d'`` or ``'embed'``.
    kernel: the index of the kernel (embedding table) in ``jax.tree.leaves(params)``.
    bias: the index of the bias, or ``None``.
    kernel_path: the kernel's path (``jax.tree_util.keystr``), for display.
    bias_path: the bias's path, or ``None``.
    in_features: the input factor's size without the bias row: ``d_in`` (dense),
      ``C kh kw`` (conv2d), the vocabulary size (embed).
    out_features: the output factor's size.
    conv: the convolution's geometry (conv2d only).
  """

  name: str
  kind: str
  kernel: int
  bias: int | None
  kernel_path: str
  bias_path: str | None
  in_features: int
  out_features: int
  conv: ConvGeometry | None = None

  @property
  def in_size(self) -> int:
    """The side of the input factor, ``in_features`` plus one for a bias."""
    return self.in_features + (self.bias is not None)


@dataclasses.dataclass(frozen=True)
class LayerSummary:
  """What :func:`find_layers` found in a model.

  Attributes:
    layers: the layers K-FAC preconditions, in call order.
    skipped: ``(name, reason)`` for every layer call that could not be used.
    fallback: the paths of the parameter leaves no layer covers (preconditioned by
      the identity).
  """

  layers: tuple[Layer, ...]
  skipped: tuple[tuple[str, str], ...]
  fallback: tuple[str, ...]

  def __str__(self) -> str:
    lines = [f"{'layer':<28} {'kind':<7} {'input factor':>12} {'output factor':>13}"]
    for layer in self.layers:
      lines.append(f"{layer.name:<28} {layer.kind:<7} {layer.in_size:>12} {layer.out_features:>13}")
    for name, reason in self.skipped:
      lines.append(f"{name:<28} skipped: {reason}")
    if self.fallback:
      lines.append("identity preconditioner for: " + ", ".join(self.fallback))
    return "\n".join(lines)


# --------------------------------------------------------------------------------------
# Recording.
# --------------------------------------------------------------------------------------

_LOCAL = threading.local()


def _stack() -> list:
  if not hasattr(_LOCAL, "stack"):
    _LOCAL.stack = []
  return _LOCAL.stack


def _current():
  stack = _stack()
  return stack[-1] if stack else None


def _key_name(key: Any) -> str:
  for attr in ("key", "name", "idx"):
    if hasattr(key, attr):
      return str(getattr(key, attr))
  return str(key)


class _Call:
  """One recorded layer call (static information, plus its input in capture mode)."""

  def __init__(self, name, kind, kernel, bias, in_features, out_features, conv, reason, shape):
    self.name, self.kind, self.kernel, self.bias = name, kind, kernel, bias
    self.in_features, self.out_features, self.conv = in_features, out_features, conv
    self.reason, self.output_shape = reason, shape


class _Recorder:
  """Collects layer calls while a model is traced; adds perturbations in capture mode."""

  def __init__(self, params: PyTree, perturbations: dict[str, Array] | None = None):
    with_paths = jax.tree_util.tree_leaves_with_path(params)
    self.index = {id(leaf): i for i, (_, leaf) in enumerate(with_paths)}
    self.keys = [path for path, _ in with_paths]
    self.paths = [jax.tree_util.keystr(path) for path, _ in with_paths]
    self.perturbations = perturbations
    self.calls: list[_Call] = []
    self.inputs: dict[str, Array] = {}

  def _default_name(self, kind: str, kernel: int | None) -> str:
    if kernel is None:
      return f"{kind}_{len(self.calls)}"
    keys = [_key_name(k) for k in self.keys[kernel]]
    while len(keys) > 1 and keys[-1] in ("kernel", "embedding", "value", "w", "weight"):
      keys.pop()
    return "/".join(keys)

  def record(self, kind, outputs, inputs, kernel, bias, name, conv):
    k = self.index.get(id(kernel))
    b = None if bias is None else self.index.get(id(bias))
    reason = None
    if isinstance(conv, str):
      reason, conv = conv, None
    elif k is None:
      reason = "its kernel is not a leaf of params (transformed before use?)"
    elif bias is not None and b is None:
      reason = "its bias is not a leaf of params"
    in_features, out_features = 0, 0
    if reason is None:
      reason, in_features, out_features = _check_shapes(kind, outputs, inputs, kernel, bias, conv)
    label = name if name is not None else self._default_name(kind, k)
    taken = {c.name for c in self.calls}
    base, i = label, 2
    while label in taken:
      label, i = f"{base}#{i}", i + 1
    self.calls.append(
      _Call(label, kind, k, b, in_features, out_features, conv, reason, jnp.shape(outputs))
    )
    if self.perturbations is not None and label in self.perturbations:
      self.inputs[label] = inputs
      return outputs + self.perturbations[label].astype(outputs.dtype)
    return outputs


def _check_shapes(kind, outputs, inputs, kernel, bias, conv) -> tuple[str | None, int, int]:
  ks, xs, ys = jnp.shape(kernel), jnp.shape(inputs), jnp.shape(outputs)
  if kind == "dense":
    if len(ks) != 2 or len(xs) < 2 or xs[-1] != ks[0] or ys != xs[:-1] + (ks[1],):
      return f"shapes kernel {ks}, inputs {xs}, outputs {ys} are not a batched x @ W", 0, 0
    d_in, d_out = ks
  elif kind == "conv2d":
    if len(ks) != 4 or len(xs) != 4 or xs[-1] != ks[2] or len(ys) != 4 or ys[-1] != ks[3]:
      return f"shapes kernel {ks}, inputs {xs}, outputs {ys} are not an NHWC/HWIO conv", 0, 0
    if conv is None or tuple(conv.kernel_size) != tuple(ks[:2]):
      return "the convolution's geometry does not match its kernel", 0, 0
    patches = jax.eval_shape(lambda x: conv_patches(x, conv), jax.ShapeDtypeStruct(xs, jnp.float32))
    if patches.shape[:3] != ys[:3]:
      return f"patches of shape {patches.shape[:3]} do not match outputs {ys[:3]}", 0, 0
    d_in, d_out = ks[0] * ks[1] * ks[2], ks[3]
  else:
    if len(ks) != 2 or not jnp.issubdtype(jnp.result_type(inputs), jnp.integer):
      return "an embedding needs a (vocabulary, features) table and integer ids", 0, 0
    if ys != xs + (ks[1],) or len(xs) < 1:
      return f"ids {xs} and outputs {ys} do not fit the table {ks}", 0, 0
    d_in, d_out = ks
  if len(ys) < 1 or ys[0] != xs[0]:
    return "the layer's input and output do not share a leading batch axis", 0, 0
  if bias is not None and jnp.shape(bias) != (d_out,):
    return f"bias of shape {jnp.shape(bias)}, expected ({d_out},)", 0, 0
  return None, int(d_in), int(d_out)


def conv_patches(inputs: Array, conv: ConvGeometry) -> Array:
  """The patches of a 2-D convolution, ``(N, H', W', C kh kw)``, channel-major features."""
  return jax.lax.conv_general_dilated_patches(
    inputs,
    conv.kernel_size,
    conv.strides,
    conv.padding,
    rhs_dilation=conv.dilation,
    dimension_numbers=("NHWC", "HWIO", "NHWC"),
  )


def _register(kind, outputs, inputs, kernel, bias, name, conv):
  recorder = _current()
  if recorder is None:
    return outputs
  return recorder.record(kind, outputs, inputs, kernel, bias, name, conv)


def register_dense(
  outputs: Array, inputs: Array, kernel: Array, bias: Array | None = None, *, name=None
) -> Array:
  r"""Marks ``outputs = inputs @ kernel + bias`` as a dense layer for K-FAC.

  An identity function of ``outputs`` (no cost) except while gradest traces the model
  for K-FAC, when it records the layer. ``kernel`` and ``bias`` must be leaves of the
  ``params`` the model was called with, used as they are.

  Args:
    outputs: ``(N, ..., d_out)``.
    inputs: ``(N, ..., d_in)``; extra axes are positions (sequence, ...), each one a
      row of the factors.
    kernel: ``(d_in, d_out)``.
    bias: ``(d_out,)`` or ``None``.
    name: a name for summaries (default: the kernel's path in ``params``).

  Returns:
    ``outputs``.

  Examples:
    >>> import jax.numpy as jnp
    >>> def apply_fn(p, x):
    ...   h = register_dense(x @ p["w1"] + p["b1"], x, p["w1"], p["b1"])
    ...   return register_dense(jnp.tanh(h) @ p["w2"], jnp.tanh(h), p["w2"])
    >>> params = {"w1": jnp.ones((3, 4)), "b1": jnp.zeros(4), "w2": jnp.ones((4, 2))}
    >>> apply_fn(params, jnp.ones((5, 3))).shape
    (5, 2)
  """
  return _register("dense", outputs, inputs, kernel, bias, name, None)


def register_conv2d(
  outputs: Array,
  inputs: Array,
  kernel: Array,
  bias: Array | None = None,
  *,
  strides: int | tuple[int, int] = 1,
  padding: str | int | tuple = "SAME",
  dilation: int | tuple[int, int] = 1,
  name=None,
) -> Array:
  r"""Marks a 2-D convolution (NHWC inputs, HWIO kernel, one feature group) for K-FAC.

  The convolution's rows are its patches (:math:`C k_h k_w` features each, one row per
  output position), as in Grosse & Martens (2016). An identity function of
  ``outputs`` outside K-FAC's tracing.

  Args:
    outputs: ``(N, H', W', O)``.
    inputs: ``(N, H, W, C)``.
    kernel: ``(kh, kw, C, O)``.
    bias: ``(O,)`` or ``None``.
    strides, padding, dilation: as passed to ``jax.lax.conv_general_dilated``
      (``padding``: ``'SAME'``, ``'VALID'``, an int, or pairs).
    name: a name for summaries.

  Returns:
    ``outputs``.

  References:
    Grosse & Martens, *A Kronecker-factored approximate Fisher matrix for convolution
    layers*, ICML 2016.
  """
  geometry = conv_geometry(jnp.shape(kernel)[:2], strides, padding, dilation)
  if isinstance(geometry, str):
    raise ValueError(f"register_conv2d: {geometry}")
  return _register("conv2d", outputs, inputs, kernel, bias, name, geometry)


def register_embed(outputs: Array, ids: Array, table: Array, *, name=None) -> Array:
  r"""Marks ``outputs = table[ids]`` as an embedding layer for K-FAC.

  Its input factor is diagonal (the frequencies of the ids in the batch), so the
  block costs :math:`O(V + d^2)` memory for a ``(V, d)`` table.

  Args:
    outputs: ``ids.shape + (d,)``.
    ids: integer ids, leading batch axis ``N``.
    table: ``(V, d)``.
    name: a name for summaries.

  Returns:
    ``outputs``.
  """
  return _register("embed", outputs, ids, table, None, name, None)


def _pair(value: Any, what: str) -> tuple[int, int] | str:
  if value is None:
    return (1, 1)
  if isinstance(value, int):
    return (value, value)
  value = tuple(value)
  if len(value) != 2 or not all(isinstance(v, int) for v in value):
    return f"{what} must be an int or two ints, got {value!r}"
  return value


def conv_geometry(kernel_size, strides, padding, dilation) -> ConvGeometry | str:
  """A :class:`ConvGeometry`, or the reason the arguments are not supported."""
  kernel_size = tuple(int(k) for k in kernel_size)
  strides, dilation = _pair(strides, "strides"), _pair(dilation, "dilation")
  for value in (strides, dilation):
    if isinstance(value, str):
      return value
  if isinstance(padding, str):
    if padding.upper() not in ("SAME", "VALID"):
      return f"padding {padding!r} is not supported (only 'SAME', 'VALID' or explicit pads)"
    padding = padding.upper()
  elif isinstance(padding, int):
    padding = ((padding, padding), (padding, padding))
  else:
    pads = []
    for p in tuple(padding):
      pads.append((p, p) if isinstance(p, int) else tuple(int(v) for v in p))
    if len(pads) != 2 or any(len(p) != 2 for p in pads):
      return f"padding {padding!r} is not two (low, high) pairs"
    padding = tuple(pads)
  return ConvGeometry(kernel_size, strides, padding, dilation)


# --------------------------------------------------------------------------------------
# Flax hooks.
# --------------------------------------------------------------------------------------


def _linen_layer(linen, module, args, kwargs):
  """``(kind, inputs, kernel, bias, conv)`` for a supported linen layer, else None."""
  kind = {linen.Dense: "dense", linen.Conv: "conv2d", linen.Embed: "embed"}.get(type(module))
  if kind is None:
    return None
  inputs = args[0] if args else kwargs.get("inputs")
  params = module.variables.get("params", {})
  if kind == "embed":
    return kind, inputs, params.get("embedding"), None, None
  kernel, bias = params.get("kernel"), params.get("bias")
  conv = _flax_conv(module, kernel) if kind == "conv2d" else None
  return kind, inputs, kernel, bias, conv


def _flax_conv(module, kernel) -> ConvGeometry | str:
  if jnp.ndim(kernel) != 4:
    return "only 2-D convolutions are supported"
  if getattr(module, "feature_group_count", 1) != 1:
    return "grouped convolutions are not supported"
  if _pair(getattr(module, "input_dilation", 1), "input_dilation") != (1, 1):
    return "input dilation is not supported"
  if getattr(module, "mask", None) is not None:
    return "masked convolutions are not supported"
  return conv_geometry(
    jnp.shape(kernel)[:2],
    getattr(module, "strides", 1),
    getattr(module, "padding", "SAME"),
    getattr(module, "kernel_dilation", 1),
  )


def _linen_interceptor(next_fun, args, kwargs, context):
  outputs = next_fun(*args, **kwargs)
  recorder = _current()
  if recorder is None or context.method_name != "__call__":
    return outputs
  found = _linen_layer(sys.modules["flax.linen"], context.module, args, kwargs)
  if found is None:
    return outputs
  kind, inputs, kernel, bias, conv = found
  name = "/".join(context.module.path) or type(context.module).__name__
  return recorder.record(kind, outputs, inputs, kernel, bias, name, conv)


def _nnx_value(variable):
  if variable is None:
    return None
  return variable.get_value() if hasattr(variable, "get_value") else variable.value


def _nnx_wrapper(cls, original, kind):
  def __call__(self, inputs, *args, **kwargs):  # noqa: N807
    outputs = original(self, inputs, *args, **kwargs)
    recorder = _current()
    if recorder is None or type(self) is not cls:
      return outputs
    conv = None
    if kind == "embed":
      kernel, bias = _nnx_value(self.embedding), None
    else:
      kernel, bias = _nnx_value(self.kernel), _nnx_value(getattr(self, "bias", None))
      if kind == "conv2d":
        conv = _flax_conv(self, kernel)
    return recorder.record(kind, outputs, inputs, kernel, bias, None, conv)

  __call__.__wrapped__ = original
  return __call__


_NNX_LOCK = threading.RLock()
_NNX_DEPTH = [0]


@contextlib.contextmanager
def _nnx_patched(nnx) -> Iterator[None]:
  kinds = {nnx.Linear: "dense", nnx.Conv: "conv2d", nnx.Embed: "embed"}
  with _NNX_LOCK:
    originals = {}
    if _NNX_DEPTH[0] == 0:
      # (the class's own __call__ or None when inherited, the function called)
      originals = {cls: (cls.__dict__.get("__call__"), cls.__call__) for cls in kinds}
      for cls, (_, original) in originals.items():
        cls.__call__ = _nnx_wrapper(cls, original, kinds[cls])
    _NNX_DEPTH[0] += 1
    try:
      yield
    finally:
      _NNX_DEPTH[0] -= 1
      for cls, (own, _) in originals.items():
        if own is None:
          del cls.__call__
        else:
          cls.__call__ = own


@contextlib.contextmanager
def recording(recorder: _Recorder) -> Iterator[_Recorder]:
  """Makes ``recorder`` see the layer calls of the models traced inside the block."""
  stack = _stack()
  stack.append(recorder)
  try:
    with contextlib.ExitStack() as hooks:
      linen = sys.modules.get("flax.linen")
      if linen is not None:
        hooks.enter_context(linen.intercept_methods(_linen_interceptor))
      nnx = sys.modules.get("flax.nnx")
      if nnx is not None:
        hooks.enter_context(_nnx_patched(nnx))
      yield recorder
  finally:
    stack.pop()


# --------------------------------------------------------------------------------------
# Discovery and capture.
# --------------------------------------------------------------------------------------


def _summarize(recorder: _Recorder) -> tuple[LayerSummary, dict[str, tuple[int, ...]]]:
  calls = recorder.calls
  uses: dict[int, int] = {}
  for c in calls:
    for leaf in (c.kernel, c.bias):
      if leaf is not None:
        uses[leaf] = uses.get(leaf, 0) + 1
  layers, skipped, shapes = [], [], {}
  for c in calls:
    reason = c.reason
    if reason is None and any(uses.get(x, 0) > 1 for x in (c.kernel, c.bias) if x is not None):
      reason = "its parameters are used by more than one layer call (shared weights)"
    if reason is not None:
      skipped.append((c.name, reason))
      continue
    layers.append(
      Layer(
        name=c.name,
        kind=c.kind,
        kernel=c.kernel,
        bias=c.bias,
        kernel_path=recorder.paths[c.kernel],
        bias_path=None if c.bias is None else recorder.paths[c.bias],
        in_features=c.in_features,
        out_features=c.out_features,
        conv=c.conv,
      )
    )
    shapes[c.name] = c.output_shape
  covered = {x for layer in layers for x in (layer.kernel, layer.bias) if x is not None}
  fallback = tuple(p for i, p in enumerate(recorder.paths) if i not in covered)
  return LayerSummary(tuple(layers), tuple(skipped), fallback), shapes


def trace_layers(
  apply_fn: Callable[[PyTree, PyTree], Any], params: PyTree, inputs: PyTree
) -> tuple[LayerSummary, dict[str, tuple[int, ...]]]:
  """The layers of ``apply_fn`` and their output shapes, from one abstract trace."""
  found = []

  def traced(p, x):
    recorder = _Recorder(p)
    with recording(recorder):
      out = apply_fn(p, x)
    found.append(_summarize(recorder))
    return out

  jax.eval_shape(traced, params, inputs)
  return found[-1]


def find_layers(
  apply_fn: Callable[[PyTree, PyTree], Any], params: PyTree, inputs: PyTree
) -> LayerSummary:
  r"""The layers of a model that K-FAC preconditions, and what falls back.

  Traces ``apply_fn(params, inputs)`` abstractly (nothing is computed) and records the
  ``flax.linen`` / ``flax.nnx`` dense, 2-D convolution and embedding layers and the
  :func:`register_dense` / :func:`register_conv2d` / :func:`register_embed` calls.
  ``print`` the result for a table.

  Args:
    apply_fn: ``apply_fn(params, inputs) -> outputs`` (a linen ``model.apply``, or
      ``lambda state, x: nnx.merge(graphdef, state)(x)``, or a plain function).
    params: the parameters (arrays or ``jax.ShapeDtypeStruct``).
    inputs: one batch of inputs (arrays or ``jax.ShapeDtypeStruct``).

  Returns:
    A :class:`LayerSummary`.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> def apply_fn(p, x):
    ...   return register_dense(x @ p["w"], x, p["w"]) + p["scale"]
    >>> summary = find_layers(apply_fn, {"w": jnp.ones((3, 2)), "scale": jnp.ones(2)},
    ...                       jnp.ones((4, 3)))
    >>> [layer.name for layer in summary.layers], summary.fallback
    (['w'], ("['scale']",))
  """
  return trace_layers(apply_fn, params, inputs)[0]


def capture(
  apply_fn: Callable[[PyTree, PyTree], Any],
  params: PyTree,
  inputs: PyTree,
  layers: tuple[Layer, ...],
  output_shapes: dict[str, tuple[int, ...]],
):
  """``(outputs, pullback, layer_inputs)``: ``pullback(cotangent)`` gives the
  cotangents of every layer's output (a dict by layer name), ``layer_inputs`` the
  layers' inputs. One forward pass; the pullback reaches only the layer outputs."""
  zeros = {
    layer.name: jnp.zeros(output_shapes[layer.name], jnp.result_type(float)) for layer in layers
  }

  def tagged(perturbations):
    recorder = _Recorder(params, perturbations)
    with recording(recorder):
      out = apply_fn(params, inputs)
    missing = [name for name in perturbations if name not in recorder.inputs]
    if missing:
      raise ValueError(
        f"the layers {missing} were found when the model was first traced but not now; "
        "K-FAC needs the same layers at every step."
      )
    return out, recorder.inputs

  outputs, pullback, layer_inputs = jax.vjp(tagged, zeros, has_aux=True)
  return outputs, lambda cotangent: pullback(cotangent)[0], layer_inputs


def layer_rows(layer: Layer, inputs: Array) -> Array:
  """The rows of a layer's input factor: ``(R, in_features)`` (ids ``(R,)`` for embed)."""
  if layer.kind == "embed":
    return inputs.reshape(-1)
  if layer.kind == "conv2d":
    inputs = conv_patches(inputs, layer.conv)
  return inputs.reshape(-1, layer.in_features)


def kernel_matrix(layer: Layer, kernel: Array) -> Array:
  """The kernel as the ``(in_features, out_features)`` matrix the rows multiply."""
  if layer.kind == "conv2d":  # HWIO -> (C, kh, kw, O), the patches' feature order
    return jnp.transpose(kernel, (2, 0, 1, 3)).reshape(layer.in_features, layer.out_features)
  return kernel


def kernel_from_matrix(layer: Layer, matrix: Array, shape: tuple[int, ...]) -> Array:
  """The inverse of :func:`kernel_matrix`."""
  if layer.kind == "conv2d":
    kh, kw, c, o = shape
    return jnp.transpose(matrix.reshape(c, kh, kw, o), (1, 2, 0, 3))
  return matrix


def positions(layer: Layer, output_shape: tuple[int, ...]) -> int:
  """Rows per example: the product of the output's axes between batch and features."""
  return math.prod(output_shape[1:-1])
