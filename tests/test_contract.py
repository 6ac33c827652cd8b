"""The estimator contract, checked once for every entry of ``gradest.ESTIMATORS``.

Each registry entry is run on every test problem whose distribution it accepts (a
diagonal Gaussian, Bernoulli and one-hot categorical latents computed by a small
"encoder" from a pytree of parameters), and checked for: unbiasedness against the exact
gradient (closed form or enumeration) within its own standard errors, or a significant
bias for the entries marked biased; the objective level giving the gradient level's
estimate; jit / no-jit / device placement (``chex.variants``); ``jax.vmap``;
determinism; the mean-only mode; shapes; sharding of the sample axis; bad inputs.
Adding an entry to the registry gets it all of these tests.
"""

from __future__ import annotations

import functools
import itertools
import math
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized

import gradest
from gradest.distributions import Bernoulli, OneHotCategorical

from .helpers import assert_unbiased, z_value
from .problems import PARAMS, cos_cost, cos_cost_grad, gaussian

X = jnp.array([0.3, -1.0])
ENCODER = {"w": jnp.array([[0.5, -0.2, 0.1], [0.3, 0.4, -0.6]]), "b": jnp.array([0.1, 0.0, -0.3])}
TARGET = jnp.array([0.45, 0.2, 0.8])
CLASS_COST = jnp.array([0.3, 1.0, -0.5])


def encoder_logits(p):
  return X @ p["w"] + p["b"]


def bernoulli_fn(p):
  return Bernoulli(encoder_logits(p))


def categorical_fn(p):
  return OneHotCategorical(encoder_logits(p).reshape(1, 3))


def bernoulli_cost(b):
  return jnp.sum((b - TARGET) ** 2)


def categorical_cost(y):
  return jnp.sum(y * CLASS_COST) ** 2


class Problem(NamedTuple):
  kind: str
  dist_fn: Any
  params: Any
  f: Any
  family: str | None = None


PROBLEMS = {
  "gaussian": Problem("gaussian", gaussian, PARAMS, cos_cost),
  "bernoulli": Problem("bernoulli", bernoulli_fn, ENCODER, bernoulli_cost, "bernoulli"),
  "categorical": Problem("categorical", categorical_fn, ENCODER, categorical_cost, "categorical"),
}

CASES = [
  (name, problem)
  for name, problem in itertools.product(gradest.ESTIMATORS, PROBLEMS)
  if gradest.ESTIMATORS[name].accepts(PROBLEMS[problem].kind)
]
IDS = [f"{n}-{p}" for n, p in CASES]
# One problem per estimator, for the checks whose cost is compilation.
FIRST_CASES = [next(c for c in CASES if c[0] == name) for name in gradest.ESTIMATORS]
FIRST_IDS = [f"{n}-{p}" for n, p in FIRST_CASES]


def call(name, problem, key, num_samples, **overrides):
  """The gradient-level estimate of registry entry ``name`` on ``problem``."""
  e, pr = gradest.ESTIMATORS[name], PROBLEMS[problem]
  kwargs = {**_setup(name, problem), **overrides}
  return e.grad(pr.f, pr.dist_fn, pr.params, key, num_samples, **kwargs)


# Options these tests pass on top of the registry's (cheaper to compile, same contract).
TEST_OPTIONS = {"gumbel_rao": {"num_conditional": 2}}


def _setup(name, problem):
  pr = PROBLEMS[problem]
  shape = None if pr.family is None else pr.dist_fn(pr.params).logits.shape
  return {**gradest.ESTIMATORS[name].kwargs(pr.f, pr.family, shape), **TEST_OPTIONS.get(name, {})}


@functools.cache
def program(name, problem):
  """One compiled program per case: every mode of the estimator at one key.

  Returns ``key -> dict`` with the estimate (``N`` samples), the mean-only estimate, the
  estimate with the sample axis sharded over a one-device mesh, and the objective
  level's value and gradient, all from the same key.
  """
  e, pr = gradest.ESTIMATORS[name], PROBLEMS[problem]
  n = big_n(name)
  kwargs = _setup(name, problem)
  mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))

  def run(key):
    out = {
      "est": e.grad(pr.f, pr.dist_fn, pr.params, key, n, **kwargs),
      "mean_only": e.grad(pr.f, pr.dist_fn, pr.params, key, n, return_per_sample=False, **kwargs),
      "sharded": e.grad(pr.f, pr.dist_fn, pr.params, key, n, sample_sharding=sharding, **kwargs),
    }
    if e.objective is not None:
      out["objective"] = jax.value_and_grad(
        lambda p: e.objective(pr.f, pr.dist_fn(p), key, n, **kwargs)
      )(pr.params)
    return out

  return jax.jit(run)


@functools.cache
def results(name, problem, seed=0):
  return program(name, problem)(jax.random.key(seed))


def big_n(name):
  e = gradest.ESTIMATORS[name]
  if e.multi_sample:
    return 3  # VIMCO: K = 3 (the unbiasedness check repeats it)
  return samples_for(name, 4000 if e.cost.startswith("4 D") else 20000)


def samples_for(name, n):
  """``n`` rounded to what the entry accepts (antithetic pairs need an even count)."""
  e = gradest.ESTIMATORS[name]
  return max(e.min_samples, n - n % e.evaluations_per_row)


def exact_gradient(problem):
  pr = PROBLEMS[problem]
  if pr.kind == "gaussian":
    return cos_cost_grad(pr.params)
  return gradest.exact_grad(pr.f, pr.dist_fn, pr.params).grad


def multi_sample_exact(problem, k):
  """The exact gradient of E[log mean_k exp f(b_k)] over K independent samples."""
  pr = PROBLEMS[problem]

  def objective(p):
    states = _states(pr.kind, pr.dist_fn(p).logits)
    log_p = jax.vmap(pr.dist_fn(p).log_prob)(states)
    values = jax.vmap(pr.f)(states)
    combos = jnp.array(list(itertools.product(range(states.shape[0]), repeat=k)))
    joint = jnp.exp(jnp.sum(log_p[combos], axis=1))
    return jnp.sum(joint * (jax.nn.logsumexp(values[combos], axis=1) - math.log(k)))

  return jax.grad(objective)(pr.params)


def _states(kind, logits):
  if kind == "bernoulli":
    d = logits.size
    bits = (jnp.arange(2**d)[:, None] >> jnp.arange(d)[None, :]) & 1
    return bits.astype(logits.dtype).reshape((2**d,) + logits.shape)
  k = logits.shape[-1]
  return jax.nn.one_hot(jnp.arange(k), k, dtype=logits.dtype).reshape((k,) + logits.shape)


def _leaves(tree):
  return [np.asarray(x) for x in jax.tree.leaves(tree)]


def assert_trees_close(a, b, rtol=1e-5, atol=1e-6):
  chex.assert_trees_all_equal_structs(a, b)
  chex.assert_trees_all_close(a, b, rtol=rtol, atol=atol)


# --------------------------------------------------------------------------------------
# Statistics.
# --------------------------------------------------------------------------------------


def check_statistics(name, problem, key):
  """Unbiased within standard errors, or (entries marked biased) significantly biased."""
  e = gradest.ESTIMATORS[name]
  if e.multi_sample:
    k, reps = big_n(name), 20000
    fn = jax.jit(jax.vmap(lambda kk: call(name, problem, kk, k, return_per_sample=False).grad))
    assert_unbiased(fn(jax.random.split(key, reps)), multi_sample_exact(problem, k))
    return
  est = results(name, problem)["est"]
  exact = exact_gradient(problem)
  if e.unbiased:
    assert_unbiased(est.per_sample, exact)
    return
  # A biased entry: its bias is significant on these problems (the flag is truthful).
  s = np.concatenate([x.reshape(x.shape[0], -1) for x in _leaves(est.per_sample)], 1)
  t = np.concatenate([x.reshape(-1) for x in _leaves(exact)])
  gap = np.abs(s.mean(0) - t) / (s.std(0, ddof=1) / math.sqrt(s.shape[0]))
  assert gap.max() > z_value(t.size), gap


def check_objective_level(name, problem):
  """The objective level's gradient is the estimate; its value the Monte Carlo objective."""
  e = gradest.ESTIMATORS[name]
  if e.objective is None:
    return
  out = results(name, problem)
  value, grad = out["objective"]
  assert_trees_close(grad, out["est"].grad, rtol=1e-4, atol=1e-5)
  values = np.asarray(out["est"].values, np.float64)
  expected = (
    jax.nn.logsumexp(values) - math.log(values.size) if e.multi_sample else values.mean()
  )
  np.testing.assert_allclose(value, expected, rtol=1e-5, atol=1e-6)


def check_modes(name, problem):
  """Determinism, shapes, the mean-only mode and a sharded sample axis agree."""
  e, pr = gradest.ESTIMATORS[name], PROBLEMS[problem]
  n = big_n(name)
  out = results(name, problem)
  a = out["est"]
  again = program(name, problem)(jax.random.key(0))["est"]
  for x, y in zip(_leaves(a), _leaves(again), strict=True):
    np.testing.assert_array_equal(x, y)
  rows = n // e.evaluations_per_row
  chex.assert_trees_all_equal_structs(a.grad, pr.params)
  chex.assert_tree_shape_prefix(a.per_sample, (rows,))
  chex.assert_shape(a.values, (n,))
  for leaf, p in zip(jax.tree.leaves(a.per_sample), jax.tree.leaves(pr.params), strict=True):
    assert leaf.shape == (rows,) + p.shape
  # grad is the mean of per_sample, to float32 summation error over N rows.
  for g, ps in zip(_leaves(a.grad), _leaves(a.per_sample), strict=True):
    ps = ps.astype(np.float64)
    np.testing.assert_allclose(g, ps.mean(0), rtol=0, atol=1e-4 * (1 + np.abs(ps).mean()))
  chex.assert_trees_all_equal_shapes(a.variance(), pr.params)
  chex.assert_tree_all_finite(a.variance())
  assert out["mean_only"].per_sample is None
  assert_trees_close(out["mean_only"].grad, a.grad, rtol=1e-4, atol=1e-4)
  assert_trees_close(out["sharded"], a)
  other = results(name, problem, seed=1)["est"]
  assert not all(
    np.allclose(x, y) for x, y in zip(_leaves(other.grad), _leaves(a.grad), strict=True)
  )


@pytest.mark.parametrize("name, problem", CASES, ids=IDS)
def test_estimator_contract(name, problem, key):
  """One compiled program per case, read by every check (compilation dominates)."""
  check_statistics(name, problem, key)
  check_objective_level(name, problem)
  check_modes(name, problem)


# --------------------------------------------------------------------------------------
# Transformations, determinism, shapes.
# --------------------------------------------------------------------------------------


class VariantsTest(chex.TestCase):
  """jit, no jit and device placement give the same estimate for the same key."""

  @chex.variants(with_jit=True, without_jit=True, with_device=True)
  @parameterized.named_parameters(
    *[(i, n, p) for i, (n, p) in zip(FIRST_IDS, FIRST_CASES, strict=True)]
  )
  def test_same_estimate(self, name, problem):
    key = jax.random.key(3)
    n = samples_for(name, 8)
    got = self.variant(lambda k: call(name, problem, k, n))(key)
    want = call(name, problem, key, n)
    assert_trees_close(got, want, rtol=2e-5, atol=1e-6)


@pytest.mark.parametrize("name, problem", FIRST_CASES, ids=FIRST_IDS)
def test_vmap_over_keys_and_params(name, problem, key):
  e, pr = gradest.ESTIMATORS[name], PROBLEMS[problem]
  n = samples_for(name, 8)
  keys = jax.random.split(key, 3)
  params = jax.tree.map(lambda x: jnp.stack([x, x + 0.1, x - 0.2]), pr.params)
  kwargs = _setup(name, problem)

  def one(p, k):
    return e.grad(pr.f, pr.dist_fn, p, k, n, **kwargs).grad

  batched = jax.jit(jax.vmap(one))(params, keys)
  single = jax.jit(one)(jax.tree.map(lambda x: x[1], params), keys[1])
  assert_trees_close(jax.tree.map(lambda x: x[1], batched), single, rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------------------------
# Bad inputs.
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, problem", CASES, ids=IDS)
def test_bad_num_samples_and_key(name, problem, key):
  with pytest.raises(ValueError, match="num_samples"):
    call(name, problem, key, 0)
  with pytest.raises(TypeError, match="num_samples"):
    call(name, problem, key, 8.0)
  with pytest.raises((TypeError, ValueError), match="key"):
    call(name, problem, 0, samples_for(name, 8))


@pytest.mark.parametrize("name, problem", CASES, ids=IDS)
def test_non_scalar_cost_is_rejected(name, problem, key):
  e, pr = gradest.ESTIMATORS[name], PROBLEMS[problem]
  kwargs = _setup(name, problem)
  with pytest.raises(ValueError, match="scalar"):
    e.grad(lambda x: x * 1.0, pr.dist_fn, pr.params, key, samples_for(name, 4), **kwargs)


@pytest.mark.parametrize("name", list(gradest.ESTIMATORS))
def test_distribution_it_does_not_accept(name, key):
  e = gradest.ESTIMATORS[name]
  for problem in PROBLEMS.values():
    if e.accepts(problem.kind):
      continue
    kwargs = e.kwargs(problem.f, problem.family or "bernoulli", (3,))
    with pytest.raises(TypeError, match="dist|distribution|reparameterized|Normal"):
      e.grad(problem.f, problem.dist_fn, problem.params, key, samples_for(name, 4), **kwargs)
  kwargs = e.kwargs(cos_cost, "bernoulli", (3,))
  with pytest.raises(TypeError, match="dist_fn"):
    e.grad(cos_cost, lambda p: p["log_sigma"], PARAMS, key, samples_for(name, 4), **kwargs)


@pytest.mark.parametrize("name", list(gradest.ESTIMATORS))
def test_numpy_cost_static_under_jit(name, key):
  """Any callable cost (np.sum cannot be weakly referenced, which jax.jit needs)."""
  e = gradest.ESTIMATORS[name]
  problem = dict(FIRST_CASES)[name]
  pr = PROBLEMS[problem]
  n = samples_for(name, 8)
  shape = None if pr.family is None else pr.dist_fn(pr.params).logits.shape
  kwargs = e.kwargs(np.sum, pr.family, shape)
  fn = jax.jit(lambda f, k: e.grad(f, pr.dist_fn, pr.params, k, n, **kwargs), static_argnums=0)
  first, second = fn(np.sum, key), fn(np.sum, key)  # the second call crashed once
  assert_trees_close(first, second)
  chex.assert_tree_all_finite(first.grad)


def test_registry_lookup():
  assert gradest.get_estimator("disarm") is gradest.ESTIMATORS["disarm"]
  with pytest.raises(ValueError, match="unknown estimator"):
    gradest.get_estimator("reinforce")
  assert set(gradest.estimator_names("bernoulli")) >= {"arm", "disarm", "score_function"}
  assert "arm" not in gradest.estimator_names("categorical")
  assert gradest.estimator_names() == tuple(gradest.ESTIMATORS)


@pytest.mark.parametrize("name", gradest.estimator_names("bernoulli"))
def test_foreign_bernoulli(name, key):
  distrax = pytest.importorskip("distrax")
  numpyro_dist = pytest.importorskip("numpyro.distributions")
  n = samples_for(name, 8)
  want = call(name, "bernoulli", key, n).grad
  e, pr = gradest.ESTIMATORS[name], PROBLEMS["bernoulli"]
  kwargs = _setup(name, "bernoulli")
  for make in (distrax.Bernoulli, numpyro_dist.Bernoulli):
    got = e.grad(pr.f, lambda p, m=make: m(logits=encoder_logits(p)), pr.params, key, n, **kwargs)
    assert_trees_close(got.grad, want)
