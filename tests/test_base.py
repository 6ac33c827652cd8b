"""The shared estimator core: callables JAX can cache, and uniforms in (0, 1)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gradest._src.base import (
  as_jax_callable,
  check_baseline,
  check_cv_coefficient,
  check_real,
  check_same_structure,
  check_scalar_output,
  open_uniform,
)

# jax.random.uniform(jax.random.key(4), (2**20,)) is exactly 0 at this index (found by
# scanning keys 0, 1, ...; about one key in eight has a zero among 2**20 float32 draws).
ZERO_KEY, ZERO_SHAPE, ZERO_INDEX = 4, (1 << 20,), 286683


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


def test_open_uniform_replaces_an_exact_zero_and_nothing_else():
  key = jax.random.key(ZERO_KEY)
  plain = np.asarray(jax.random.uniform(key, ZERO_SHAPE))
  assert plain[ZERO_INDEX] == 0.0, "the key no longer draws a zero: pick another"
  u = np.asarray(open_uniform(key, ZERO_SHAPE, jnp.float32))
  assert u.dtype == np.float32
  assert np.all(u > 0) and np.all(u < 1)
  assert u[ZERO_INDEX] == np.finfo(np.float32).tiny
  others = np.arange(u.size) != ZERO_INDEX
  np.testing.assert_array_equal(u[others], plain[others])
  assert np.all(np.isfinite(np.log(u))) and np.all(np.isfinite(np.log1p(-u)))


@pytest.mark.parametrize(
  "dtype,expected", [(jnp.float16, jnp.float32), (jnp.bfloat16, jnp.float32), (float, None)]
)
@pytest.mark.numerics
def test_open_uniform_draws_in_at_least_float32(dtype, expected):
  u = open_uniform(jax.random.key(0), (2, 3), dtype)
  assert u.shape == (2, 3)
  assert u.dtype == (expected or jnp.result_type(float))


def test_open_uniform_upper_clip_is_below_one():
  # A draw can only reach 1 - epsneg from below; the clip keeps that bound explicit.
  u = open_uniform(jax.random.key(1), (1 << 16,), jnp.float32)
  assert float(u.max()) <= 1.0 - float(jnp.finfo(jnp.float32).epsneg)
  jitted = jax.jit(lambda k: open_uniform(k, (8,), jnp.float32))
  np.testing.assert_array_equal(jitted(jax.random.key(1)), jitted(jax.random.key(1)))


def test_check_real_with_an_exclusive_upper_bound():
  assert check_real(0.5, "decay", below=1.0) == 0.5
  for bad in (1.0, -0.1, float("nan")):
    with pytest.raises(ValueError, match=r"decay must be a finite number in \[0.0, 1.0\)"):
      check_real(bad, "decay", below=1.0)
  with pytest.raises(TypeError, match="decay must be a Python number"):
    check_real("0.5x", "decay", below=1.0)


@pytest.mark.parametrize("good", [0.5, 2, jnp.float32(0.3), jnp.array(1.0), "optimal"])
def test_check_cv_coefficient_accepts_a_number_or_optimal(good):
  check_cv_coefficient(good)


def test_check_cv_coefficient_rejects_the_rest():
  with pytest.raises(ValueError, match="cv_coefficient must be a number or 'optimal'"):
    check_cv_coefficient("best")
  with pytest.raises(ValueError, match="cv_coefficient must be a scalar"):
    check_cv_coefficient(jnp.ones(3))
  with pytest.raises(TypeError, match="cv_coefficient"):
    check_cv_coefficient({"a": 1.0})


def test_check_same_structure_raises_value_errors():
  ref = {"a": jnp.ones(2), "b": jnp.ones((3, 1))}
  check_same_structure({"a": jnp.zeros(2), "b": jnp.zeros((3, 1))}, ref, "updates", "params")
  with pytest.raises(ValueError, match="structure of params"):
    check_same_structure({"a": jnp.ones(2)}, ref, "updates", "params")
  with pytest.raises(ValueError, match=r"leaf shapes of params: got a leaf of shape \(3,\)"):
    check_same_structure({"a": jnp.ones(2), "b": jnp.ones(3)}, ref, "updates", "params")


def test_check_baseline():
  assert check_baseline("leave_one_out") is True
  assert check_baseline(None) is False and check_baseline(0.5) is False
  with pytest.raises(ValueError, match="baseline must be None, a number"):
    check_baseline("mean")
  with pytest.raises(ValueError, match="baseline must be a scalar"):
    check_baseline(jnp.ones(2))


def test_same_structure_accepts_python_number_leaves():
  # Regression: the shape comparison read .shape of the leaves, which floats do not have.
  from gradest._src.base import check_same_structure

  check_same_structure({"a": 1.0, "b": 2}, {"a": jnp.array(0.5), "b": jnp.array(1.0)}, "v", "p")
  with pytest.raises(ValueError, match="leaf shapes"):
    check_same_structure({"a": jnp.ones(2), "b": 2.0}, {"a": 0.5, "b": 1.0}, "v", "p")
