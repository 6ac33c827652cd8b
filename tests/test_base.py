"""The shared estimator core: callables JAX can cache."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gradest._src.base import as_jax_callable, check_scalar_output


class Slotted:
  """A callable that cannot be weakly referenced (no __weakref__ slot)."""

  __slots__ = ("reduce",)

  def __init__(self, reduce=True):
    self.reduce = reduce

  def __call__(self, x):
    return jnp.sum(x) if self.reduce else x


TRACEABLE = {"np.sum": np.sum, "slots": Slotted()}


@pytest.mark.parametrize("name", TRACEABLE)
def test_as_jax_callable_wraps_what_jax_cannot_cache(name):
  f = TRACEABLE[name]
  g = as_jax_callable(f)
  assert g is not f
  x = jnp.array([0.5, -1.0, 2.0])
  np.testing.assert_array_equal(g(x), f(x))
  for _ in range(2):  # a second call is where an unwrapped callable crashed the process
    assert jax.eval_shape(g, x).shape == ()
    np.testing.assert_array_equal(jax.jit(g)(x), f(x))


def test_as_jax_callable_wraps_ufuncs():
  g = as_jax_callable(np.cos)
  assert g is not np.cos
  np.testing.assert_array_equal(g(np.arange(3.0)), np.cos(np.arange(3.0)))


@pytest.mark.parametrize("f", [sum, len, jnp.sum, lambda x: x], ids=["sum", "len", "jnp", "lambda"])
def test_as_jax_callable_keeps_other_callables(f):
  assert as_jax_callable(f) is f


@pytest.mark.parametrize("f", [np.sum, sum, Slotted()], ids=["np.sum", "builtin_sum", "slots"])
def test_check_scalar_output_accepts_any_callable(f):
  for _ in range(2):
    check_scalar_output(f, jax.ShapeDtypeStruct((3,), jnp.float32))


def test_check_scalar_output_still_rejects_non_scalars():
  for _ in range(2):
    with pytest.raises(ValueError, match="scalar"):
      check_scalar_output(Slotted(reduce=False), jax.ShapeDtypeStruct((3,), jnp.float32))
