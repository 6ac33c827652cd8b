"""The Flax output layers (linen and nnx): exact evaluation, sampled training, errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import gradest
from gradest.flax import SampledOutput
from gradest.flax.nnx import SampledOutput as NNXSampledOutput
from gradest.samplers import UniformSampler, unigram_sampler

V, D, N = 200, 8, 256


def toy_data():
  """Inputs and labels drawn from a random softmax layer over V classes."""
  kx, kw, ky = jax.random.split(jax.random.key(0), 3)
  x = jax.random.normal(kx, (N, D))
  w = 2.0 * jax.random.normal(kw, (V, D))
  labels = jax.random.categorical(ky, x @ w.T)
  return x, labels


def test_linen_layer_evaluates_exactly_and_trains_with_sampled_loss():
  x, labels = toy_data()
  layer = SampledOutput(num_classes=V, features=D, num_sampled=16, loss="sampled_softmax")
  params = layer.init(jax.random.key(1), x, labels, deterministic=True)
  kernel, bias = params["params"]["kernel"], params["params"]["bias"]
  assert kernel.shape == (V, D) and bias.shape == (V,)
  exact = layer.apply(params, x, labels, deterministic=True)
  np.testing.assert_allclose(exact, gradest.full_softmax_loss(x, kernel, bias, labels), rtol=1e-6)
  log_probs = layer.apply(params, x, method="log_probs")
  np.testing.assert_allclose(jax.nn.logsumexp(log_probs, axis=-1), 0.0, atol=1e-5)
  np.testing.assert_allclose(
    -jnp.take_along_axis(log_probs, labels[:, None], 1)[:, 0], exact, rtol=1e-5
  )
  opt = optax.adam(0.05)
  state = opt.init(params)

  @jax.jit
  def step(params, state, key):
    def loss(p):
      return layer.apply(p, x, labels, deterministic=False, rngs={"sampling": key}).mean()

    value, grads = jax.value_and_grad(loss)(params)
    updates, state = opt.update(grads, state)
    return optax.apply_updates(params, updates), state, value

  before = float(exact.mean())
  for key in jax.random.split(jax.random.key(2), 150):
    params, state, _ = step(params, state, key)
  after = float(layer.apply(params, x, labels, deterministic=True).mean())
  assert before > 4.0 and after < before - 2.0, (before, after)


def test_linen_nce_learns_a_log_partition_parameter():
  x, labels = toy_data()
  layer = SampledOutput(
    num_classes=V, features=D, num_sampled=32, loss="nce", learn_log_partition=True,
    sampler=unigram_sampler(jnp.ones(V)),
  )
  params = layer.init(jax.random.key(1), x, labels, deterministic=True)
  assert params["params"]["log_partition"].shape == ()
  grads = jax.grad(
    lambda p: layer.apply(p, x, labels, deterministic=False, rngs={"sampling": jax.random.key(3)})
    .mean()
  )(params)
  assert float(jnp.abs(grads["params"]["log_partition"])) > 0
  # Only the true and sampled rows of the kernel get a gradient.
  touched = int(jnp.sum(jnp.any(grads["params"]["kernel"] != 0, axis=1)))
  assert touched <= len(set(np.asarray(labels).tolist())) + 32


def test_nnx_layer_train_and_eval_modes():
  x, labels = toy_data()
  model = NNXSampledOutput(D, V, num_sampled=16, rngs=nnx.Rngs(0, sampling=1))
  exact = model(x, labels, deterministic=True)
  np.testing.assert_allclose(
    exact, gradest.full_softmax_loss(x, model.kernel[...], model.bias[...], labels), rtol=1e-6
  )
  sampled_a, sampled_b = model(x, labels), model(x, labels)  # the stream advances
  assert not np.allclose(sampled_a, sampled_b)
  model.eval()
  np.testing.assert_allclose(model(x, labels), exact, rtol=1e-6)
  model.train()
  optimizer = nnx.Optimizer(model, optax.adam(0.05), wrt=nnx.Param)

  @nnx.jit
  def step(model, optimizer):
    loss, grads = nnx.value_and_grad(lambda m: m(x, labels).mean())(model)
    optimizer.update(model, grads)
    return loss

  before = float(exact.mean())
  for _ in range(150):
    step(model, optimizer)
  after = float(model(x, labels, deterministic=True).mean())
  assert after < before - 2.0, (before, after)
  assert model.log_probs(x).shape == (N, V)


def test_layers_under_vmap():
  x, labels = toy_data()
  layer = SampledOutput(num_classes=V, features=D, num_sampled=8)
  params = layer.init(jax.random.key(1), x, labels, deterministic=True)
  keys = jax.random.split(jax.random.key(4), 3)
  losses = jax.vmap(
    lambda k: layer.apply(params, x, labels, deterministic=False, rngs={"sampling": k})
  )(keys)
  assert losses.shape == (3, N) and jnp.all(jnp.isfinite(losses))


def test_bad_input():
  x, labels = toy_data()
  with pytest.raises(ValueError, match="loss must be one of"):
    SampledOutput(num_classes=V, features=D, loss="full").init(
      jax.random.key(0), x, labels, deterministic=True
    )
  with pytest.raises(ValueError, match="sampler.num_classes=10 does not match"):
    SampledOutput(num_classes=V, features=D, sampler=UniformSampler(10)).init(
      jax.random.key(0), x, labels, deterministic=True
    )
  with pytest.raises(ValueError, match="hidden must have shape"):
    SampledOutput(num_classes=V, features=D + 1).init(
      jax.random.key(0), x, labels, deterministic=True
    )
  layer = SampledOutput(num_classes=V, features=D)
  params = layer.init(jax.random.key(0), x, labels, deterministic=True)
  with pytest.raises(Exception, match="sampling"):
    layer.apply(params, x, labels, deterministic=False)  # no rng for the negatives
  with pytest.raises(ValueError, match="num_sampled must be >= 1"):
    NNXSampledOutput(D, V, num_sampled=0, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="labels must lie in"):
    NNXSampledOutput(D, V, rngs=nnx.Rngs(0))(x, labels.at[0].set(V))
