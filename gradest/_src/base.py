"""Shared types and argument checks used by every estimator."""

from __future__ import annotations

import functools
import importlib.util
import math
import operator
import weakref
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np

PyTree = Any
Array = jax.Array


class GradEstimate(NamedTuple):
  """A Monte Carlo gradient estimate.

  Attributes:
    grad: the estimate of the gradient, a pytree with the structure of ``params``.
    per_sample: the per-sample gradient estimates, the same pytree with a leading
      ``num_samples`` axis on every leaf (``grad`` is their mean), or ``None`` when
      the estimator was called with ``return_per_sample=False``.
    values: the cost at each evaluation of ``f``, shape ``(num_samples,)`` (the Monte
      Carlo estimate of the objective is their mean).
    aux: the estimator's extra outputs (a dict, e.g. RELAX's ``cv_grad``), or ``None``.
  """

  grad: PyTree
  per_sample: PyTree | None
  values: Array
  aux: Any = None

  def variance(self) -> PyTree:
    """Per-coordinate variance of a single-sample estimate (``ddof=1``).

    The variance of ``grad`` itself is this divided by ``num_samples`` for estimators
    whose per-sample terms are independent.
    """
    return per_sample_variance(self.per_sample)


def per_sample_variance(per_sample: PyTree | None) -> PyTree:
  """Per-coordinate variance over the leading sample axis (``ddof=1``)."""
  if per_sample is None:
    raise ValueError(
      "variance() needs per-sample gradients: call the estimator with return_per_sample=True."
    )
  return jax.tree.map(lambda g: jnp.var(g, axis=0, ddof=1), per_sample)


def as_float_array(x: Any) -> Array:
  """``x`` as a JAX array, cast to the default float dtype unless it is floating already."""
  x = jnp.asarray(x)
  if not jnp.issubdtype(x.dtype, jnp.floating):
    x = x.astype(jnp.result_type(float))
  return x


def require_extra(modules: Sequence[str], extra: str, user: str) -> None:
  """Raises an ``ImportError`` naming the extra to install when a module is missing.

  Args:
    modules: the importable names ``user`` needs (e.g. ``["flax"]``).
    extra: gradest's optional extra that installs them (e.g. ``"flax"``).
    user: what needs them, for the message (e.g. ``"gradest.flax"``).
  """
  missing = [m for m in modules if importlib.util.find_spec(m) is None]
  if missing:
    raise ImportError(
      f"Missing {', '.join(missing)} for {user}: install gradest's {extra!r} extra with "
      f'pip install "gradest[{extra}]".'
    )


def compute_dtype(*args: Any) -> Any:
  """The dtype to compute in for inputs ``args`` (arrays or dtypes): at least float32.

  Half-precision inputs (float16, bfloat16) are computed in float32 and the results cast
  back to the inputs' dtype; float32 and float64 are computed in their own dtype.
  """
  return jnp.promote_types(jnp.result_type(*args), jnp.float32)


def is_concrete(x: Any) -> bool:
  """Whether this process can read ``x``'s value now.

  False for a tracer inside ``jax.jit`` / ``jax.vmap``, and for a global ``jax.Array``
  split across processes (a batch from ``jax.make_array_from_process_local_data`` after
  ``jax.distributed.initialize``), whose value no single process holds: host-side checks
  of values are skipped for both, as under ``jax.jit``. A global array replicated on
  every device has its whole value in each process, and is concrete.
  """
  try:
    if not getattr(x, "is_fully_addressable", True) and not x.is_fully_replicated:
      return False
    np.asarray(x)
  except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
    return False
  return True


def check_num_samples(num_samples: Any, minimum: int = 1, why: str = "") -> int:
  """Validates a static sample count and returns it as a Python int."""
  try:
    n = operator.index(num_samples)
  except TypeError:
    raise TypeError(
      f"num_samples must be a Python int (a static value), got {type(num_samples).__name__}; "
      "pass it as a static argument under jax.jit (static_argnums / functools.partial)."
    ) from None
  if n < minimum:
    extra = f" ({why})" if why else ""
    raise ValueError(f"num_samples must be >= {minimum}{extra}, got {n}.")
  return n


def check_positive_int(value: Any, name: str, minimum: int = 1) -> int:
  try:
    n = operator.index(value)
  except TypeError:
    raise TypeError(f"{name} must be a Python int, got {type(value).__name__}.") from None
  if n < minimum:
    raise ValueError(f"{name} must be >= {minimum}, got {n}.")
  return n


def check_real(
  value: Any,
  name: str,
  *,
  minimum: float = 0.0,
  strict: bool = False,
  below: float | None = None,
  fix: str = "",
) -> float:
  """Validates a static real number ``>= minimum`` (``> minimum`` if ``strict``), ``< below``."""
  try:
    x = float(value)
  except (TypeError, ValueError):
    raise TypeError(
      f"{name} must be a Python number (a static value), got {type(value).__name__}."
    ) from None
  too_small = x <= minimum if strict else x < minimum
  if not math.isfinite(x) or too_small or (below is not None and x >= below):
    if below is not None:
      bound = f"in {'(' if strict else '['}{minimum}, {below})"
    else:
      bound = f"> {minimum}" if strict else f">= {minimum}"
    extra = f" {fix}" if fix else ""
    raise ValueError(f"{name} must be a finite number {bound}, got {value}.{extra}")
  return x


def check_cv_coefficient(cv_coefficient: Any) -> None:
  """Raises unless ``cv_coefficient`` is ``'optimal'`` or one real number (or scalar array)."""
  if isinstance(cv_coefficient, str):
    if cv_coefficient != "optimal":
      raise ValueError(f"cv_coefficient must be a number or 'optimal', got {cv_coefficient!r}.")
    return
  if not hasattr(cv_coefficient, "dtype") and not isinstance(cv_coefficient, (int, float)):
    raise TypeError(
      "cv_coefficient must be a number (or scalar array) or 'optimal', got "
      f"{type(cv_coefficient).__name__}."
    )
  if jnp.ndim(cv_coefficient) != 0:
    raise ValueError(
      f"cv_coefficient must be a scalar, got shape {jnp.shape(cv_coefficient)}; use "
      "cv_coefficient='optimal' for one coefficient per leaf of params."
    )


def check_choice(value: Any, name: str, choices: Sequence[str]) -> str:
  """Validates that ``value`` is one of the strings ``choices``."""
  if not isinstance(value, str) or value not in choices:
    raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}.")
  return value


LEAVE_ONE_OUT = "leave_one_out"


def check_baseline(baseline: Any) -> bool:
  """Validates a score-function baseline; returns True for ``'leave_one_out'``.

  A baseline is ``None``, one scalar (a number or scalar array) for all samples, or
  the string ``'leave_one_out'``.
  """
  if isinstance(baseline, str):
    if baseline != LEAVE_ONE_OUT:
      raise ValueError(
        f"baseline must be None, a number (or scalar array), or 'leave_one_out'; got {baseline!r}."
      )
    return True
  if baseline is not None and jnp.ndim(baseline) != 0:
    raise ValueError(
      f"baseline must be a scalar (one value for all samples), got shape "
      f"{jnp.shape(baseline)}; use baseline='leave_one_out' for per-sample baselines."
    )
  return False


def check_family(
  dist: Any, family: type | tuple[type, ...], user: str, wanted: str, fix: str
) -> None:
  """Raises a ``TypeError`` unless ``dist`` is an instance of ``family``.

  Args:
    dist: the distribution ``dist_fn`` returned (after ``as_distribution``).
    family: the accepted class(es).
    user: the function that needs the family, for the message.
    wanted: the accepted families in words (e.g. ``"Gaussian distributions"``).
    fix: what to use instead.
  """
  if not isinstance(dist, family):
    raise TypeError(f"{user} is implemented for {wanted}, got {type(dist).__name__}; {fix}")


def check_reparameterized(dist: Any, key: Array, name: str = "pathwise_grad") -> None:
  """Raises a ``TypeError`` unless ``dist`` draws samples differentiable in its parameters."""
  sample = jax.eval_shape(dist.sample, key)
  if not getattr(dist, "reparameterized", False) or not jnp.issubdtype(sample.dtype, jnp.floating):
    raise TypeError(
      f"{name} needs a reparameterized distribution (samples differentiable in the "
      f"parameters, e.g. Normal or Gamma), got {type(dist).__name__}; use "
      "score_function_grad for it, or a relaxation for discrete variables."
    )


def _shape_struct(x: Any) -> jax.ShapeDtypeStruct:
  return jax.ShapeDtypeStruct(jnp.shape(x), jnp.result_type(x))


def check_same_structure(tree: PyTree, reference: PyTree, name: str, reference_name: str) -> None:
  """Raises a ``ValueError`` unless ``tree`` has the structure and leaf shapes of ``reference``."""
  try:
    chex.assert_trees_all_equal_structs(tree, reference)
  except AssertionError:
    raise ValueError(
      f"{name} must be a pytree with the structure of {reference_name}; got "
      f"{jax.tree.structure(tree)} for {jax.tree.structure(reference)}."
    ) from None
  try:
    # Leaves may be Python numbers: compare the shapes they have as arrays.
    chex.assert_trees_all_equal_shapes(
      jax.tree.map(_shape_struct, tree), jax.tree.map(_shape_struct, reference)
    )
  except AssertionError:
    for a, b in zip(jax.tree.leaves(tree), jax.tree.leaves(reference), strict=True):
      if jnp.shape(a) != jnp.shape(b):
        raise ValueError(
          f"{name} must have the leaf shapes of {reference_name}: got a leaf of shape "
          f"{jnp.shape(a)} where {reference_name} has {jnp.shape(b)}."
        ) from None
    raise


def as_jax_callable(f: Callable[..., Any]) -> Callable[..., Any]:
  """``f`` in a form that ``jax.jit`` and ``jax.eval_shape`` accept.

  Those transformations cache on a weak reference to the function, and NumPy functions
  (``np.sum``), ufuncs (``np.cos``) and callables with ``__slots__`` cannot be weakly
  referenced: JAX raises a ``TypeError`` for them, and a later call in the same
  process can crash the interpreter. Such a callable is wrapped in a Python function
  that calls it; any other callable is returned unchanged, so JAX's caches keep
  hitting. Every user-supplied function gradest hands to one of those transformations
  goes through here.

  Args:
    f: any callable.

  Returns:
    ``f`` itself if it can be weakly referenced, else a function with the same
    behaviour that can.

  Examples:
    >>> import jax, jax.numpy as jnp, numpy as np
    >>> jax.eval_shape(as_jax_callable(np.sum), jnp.ones(3)).shape
    ()
  """
  try:
    weakref.ref(f)
  except TypeError:
    pass
  else:
    return f

  @functools.wraps(f, assigned=("__doc__",), updated=())
  def call(*args: Any, **kwargs: Any) -> Any:
    return f(*args, **kwargs)

  call.__name__ = call.__qualname__ = getattr(f, "__name__", type(f).__name__)
  return call


def check_scalar_output(f: Callable[..., Any], *args: Any, name: str = "f") -> None:
  """Raises at trace time if ``f(*args)`` is not a real scalar.

  ``f`` may be any callable, NumPy functions and builtins included (see
  :func:`as_jax_callable`).
  """
  out = jax.eval_shape(as_jax_callable(f), *args)
  leaves = jax.tree.leaves(out)
  if len(leaves) != 1 or leaves[0].shape != ():
    shapes = [getattr(leaf, "shape", None) for leaf in leaves]
    raise ValueError(
      f"{name} must map one sample to a scalar, but it returned shapes {shapes}. "
      f"If {name} returns one value per coordinate, reduce it (e.g. sum) inside {name}; "
      "gradest vmaps over samples itself."
    )
  if not jnp.issubdtype(leaves[0].dtype, jnp.floating):
    raise TypeError(f"{name} must return a floating-point scalar, got dtype {leaves[0].dtype}.")


def check_key(key: Any) -> None:
  """Raises unless ``key`` is one PRNG key (typed, or a raw ``uint32[2]`` key)."""
  if not hasattr(key, "dtype") or not hasattr(key, "shape"):
    raise TypeError(
      "key must be a JAX PRNG key (jax.random.key(0) or jax.random.PRNGKey(0)), "
      f"got {type(key).__name__}."
    )
  if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
    if key.shape != ():
      raise ValueError(
        f"key must be a single PRNG key, got a key array of shape {key.shape}; "
        "use jax.vmap over keys for a batch of estimates."
      )
  elif key.shape != (2,) or key.dtype != jnp.uint32:
    raise ValueError(
      "key must be a single PRNG key (jax.random.key(0) or jax.random.PRNGKey(0)), "
      f"got an array of shape {key.shape} and dtype {key.dtype}."
    )


def open_uniform(key: Array, shape: Sequence[int], dtype: Any = float) -> Array:
  r"""Uniform draws in the open interval :math:`(0, 1)`, in at least float32.

  ``jax.random.uniform`` draws from :math:`[0, 1)` on a grid of spacing
  :math:`2^{-23}` in float32 (:math:`2^{-10}` in float16, :math:`2^{-7}` in bfloat16),
  so it returns exactly 0 once in :math:`2^{23} \approx 8 \times 10^6` float32 draws,
  where :math:`\log u`, :math:`\sqrt{-\log u}` and inverse CDFs are infinite. Samplers
  that transform a uniform that way draw it here: in float32 (or in ``dtype`` if it is
  wider, e.g. float64), clipped to :math:`[\mathrm{tiny},\, 1 - \epsilon/2]` (``tiny``
  the smallest normal number, :math:`1 - \epsilon/2` the largest number below 1), so
  the transform is finite. Every other draw is that of ``jax.random.uniform(key, shape,
  promote_types(dtype, float32))`` unchanged. Half precision gets float32's finer grid:
  cast the transformed sample back to the caller's dtype.

  Args:
    key: a PRNG key.
    shape: the shape of the draw.
    dtype: the caller's floating dtype; the draw uses ``promote_types(dtype, float32)``.

  Returns:
    An array of ``shape`` with values in :math:`(0, 1)`.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> u = open_uniform(jax.random.key(0), (4,), jnp.bfloat16)
    >>> u.dtype, bool(jnp.all((u > 0) & (u < 1)))
    (dtype('float32'), True)
  """
  dtype = compute_dtype(dtype)
  info = jnp.finfo(dtype)
  u = jax.random.uniform(key, tuple(shape), dtype)
  return jnp.clip(u, info.tiny, 1.0 - info.epsneg)


def tree_mean(tree: PyTree) -> PyTree:
  r"""Mean over the leading (sample) axis of every leaf.

  .. math:: \bar g = \frac1N \sum_{i=1}^N g_i = (1/N, \dots, 1/N) \cdot g

  Leaves of shape ``(N, ...)`` become ``(...)``; leaves with more than one axis are
  reduced as a contraction with the ``1/N`` vector (a dot product, which XLA's CPU
  backend runs faster than a reduction over a short leading axis).

  Examples:
    >>> import jax.numpy as jnp
    >>> tree_mean({"a": jnp.array([[1.0, 2.0], [3.0, 4.0]])})["a"].tolist()
    [2.0, 3.0]
  """

  def mean(x):
    if x.ndim == 1:
      return jnp.mean(x, axis=0)
    return tree_weighted_sum(jnp.full((x.shape[0],), 1.0 / x.shape[0], x.dtype), x)

  return jax.tree.map(mean, tree)


def tree_weighted_sum(weights: Array, tree: PyTree) -> PyTree:
  """``sum_i weights[i] * leaf[i]`` over the leading axis, as a dot product."""
  return jax.tree.map(lambda x: jnp.tensordot(weights.astype(x.dtype), x, axes=1), tree)


def tree_scale_per_sample(weights: Array, tree: PyTree) -> PyTree:
  """Multiplies each leaf's leading axis by ``weights`` (shape ``(n,)``)."""

  def scale(x):
    return x * weights.reshape((-1,) + (1,) * (x.ndim - 1)).astype(x.dtype)

  return jax.tree.map(scale, tree)


def constrain_samples(tree: PyTree, sharding: Any) -> PyTree:
  """Applies a sharding constraint along the leading (sample) axis, if one is given."""
  if sharding is None:
    return tree
  return jax.tree.map(lambda x: jax.lax.with_sharding_constraint(x, sharding), tree)


def sample_keys(key: Array, num_samples: int, sharding: Any = None) -> Array:
  """The per-sample keys ``jax.random.split(key, num_samples)``, laid out by ``sharding``."""
  return constrain_samples(jax.random.split(key, num_samples), sharding)


def draw_samples(dist: Any, key: Array, num_samples: int, sharding: Any = None):
  """Draws ``num_samples`` samples, one per key of ``jax.random.split(key, num_samples)``.

  Every estimator draws its samples this way, so the same ``key`` gives the same
  samples to all of them (common random numbers when comparing estimators), and a
  per-sample key is what the pathwise estimator differentiates through.

  Returns:
    ``(keys, samples)``, both with a leading ``num_samples`` axis.
  """
  keys = sample_keys(key, num_samples, sharding)
  samples = jax.vmap(lambda k: dist.sample(k))(keys)
  return keys, constrain_samples(samples, sharding)
