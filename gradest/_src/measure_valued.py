r"""Measure-valued (weak-derivative) estimator for Gaussian distributions."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from gradest._src import control_variates as cvs
from gradest._src import core
from gradest._src.base import (
  Array,
  GradEstimate,
  PyTree,
  check_family,
  check_positive_int,
  draw_samples,
  open_uniform,
  tree_mean,
)
from gradest._src.distributions import Normal, as_distribution

# Elements of f-inputs materialized at once when the chunk size is chosen automatically.
_ELEMENT_BUDGET = 1 << 20


def rayleigh(key: Array, shape: tuple[int, ...], dtype: Any = float) -> Array:
  r"""Standard Rayleigh draws :math:`\sqrt{-2 \log U}`, always finite.

  ``jax.random.rayleigh`` is infinite when its uniform is exactly 0; here :math:`U`
  comes from :func:`open_uniform`, so the largest draw is about 13.2 (float32) or 37.6
  (float64). Where :math:`U > 0`, a float32 or float64 draw is ``jax.random.rayleigh``'s.

  Args:
    key: a PRNG key.
    shape: the shape of the draw.
    dtype: the dtype returned; the draw is computed in at least float32.
  """
  return jnp.sqrt(-2.0 * jnp.log(open_uniform(key, shape, dtype))).astype(dtype)


def _replacements(key: Array, loc: Array, scale: Array, coupling: bool) -> Array:
  """The four replacement values per coordinate, shape ``(4, D)``.

  Rows: the mean's positive and negative parts (Rayleigh), and the scale's positive
  (double-sided Maxwell) and negative (Gaussian) parts. Drawn in at least float32 and
  returned in ``loc``'s dtype; every entry is finite.
  """
  k_pos, k_neg, k_max, k_gauss = jax.random.split(jax.random.fold_in(key, 1), 4)
  shape, dtype = loc.shape, loc.dtype
  wide = jnp.promote_types(dtype, jnp.float32)
  w_pos = rayleigh(k_pos, shape, wide)
  w_neg = w_pos if coupling else rayleigh(k_neg, shape, wide)
  # Double-sided Maxwell: a random sign times the norm of a 3-d standard Gaussian (exact,
  # and much cheaper than the gamma-based sampler).
  k_norm, k_sign = jax.random.split(k_max)
  g3 = jax.random.normal(k_norm, (3,) + shape, wide)
  m = jnp.sqrt(jnp.sum(g3 * g3, axis=0)) * jax.random.rademacher(k_sign, shape, wide)
  # U * M with U ~ Uniform(0, 1) is exactly N(0, 1): the coupled negative part.
  z = (
    jax.random.uniform(k_gauss, shape, wide) * m
    if coupling
    else jax.random.normal(k_gauss, shape, wide)
  )
  loc, scale = loc.astype(wide), scale.astype(wide)
  out = jnp.stack([loc + scale * w_pos, loc - scale * w_neg, loc + scale * m, loc + scale * z])
  return out.astype(dtype)


def check_gaussian(dist: Any, key: Array | None = None) -> None:
  """Raises a ``TypeError`` unless ``dist`` is Gaussian (gradest, distrax or numpyro)."""
  del key  # the family alone decides
  check_family(
    dist,
    Normal,
    "measure_valued_grad",
    "Gaussian distributions (gradest Normal, distrax/numpyro Normal)",
    "use score_function_grad or pathwise_grad for other families.",
  )


def measure_valued_grad(
  f: Callable[[Array], Array],
  dist_fn: Callable[[PyTree], Any],
  params: PyTree,
  key: Array,
  num_samples: int,
  *,
  coupling: bool = True,
  control_variate: cvs.ControlVariate | None = None,
  cv_coefficient: float | str = 1.0,
  return_per_sample: bool = True,
  coordinate_chunk_size: int | None = None,
  sample_sharding: Any = None,
) -> GradEstimate:
  r"""Measure-valued estimate of :math:`\nabla_\theta \mathbb E_{\mathcal N(\mu, \sigma^2)}[f]`.

  The derivative of a Gaussian density in one coordinate is a difference of two
  densities (a weak derivative), which gives, with the other coordinates held at the
  sample :math:`x`,

  .. math::
    \partial_{\mu_d} \mathbb E[f] &= \tfrac{1}{\sigma_d \sqrt{2\pi}}\,
      \mathbb E\big[f(x_{d \leftarrow \mu_d + \sigma_d W}) -
      f(x_{d \leftarrow \mu_d - \sigma_d W'})\big],
      \quad W, W' \sim \mathrm{Rayleigh}(1), \\
    \partial_{\sigma_d} \mathbb E[f] &= \tfrac{1}{\sigma_d}\,
      \mathbb E\big[f(x_{d \leftarrow \mu_d + \sigma_d M}) -
      f(x_{d \leftarrow \mu_d + \sigma_d Z})\big],
      \quad M \sim \text{double-sided Maxwell},\ Z \sim \mathcal N(0, 1).

  With ``coupling=True`` the two parts share randomness (:math:`W' = W`,
  :math:`Z = U M` with :math:`U \sim \mathcal U(0,1)`), which lowers the variance.
  The gradients with respect to :math:`(\mu, \sigma)` are pulled back to ``params``
  through ``dist_fn`` by one vector-Jacobian product, so ``params`` can be any pytree
  (e.g. ``{'mu': ..., 'log_sigma': ...}``). ``f`` need not be differentiable.

  The estimator is linear in the cost, so a control variate :math:`h` with a known mean
  enters as

  .. math::
    \hat g = \mathrm{MV}(f - c\,h) + c\, \nabla_\theta \mathbb E_{p_\theta}[h],

  with :math:`h` evaluated at the same points as :math:`f`.

  Cost: ``4 N D`` evaluations of ``f`` (and of :math:`h` with a control variate) for an
  event of ``D`` coordinates, evaluated ``coordinate_chunk_size`` coordinates at a time
  (memory ``4 N`` times the chunk times ``D``; never ``N D^2``).

  Args:
    f: the cost, one sample (``event_shape``) to a scalar.
    dist_fn: ``params -> Normal`` (gradest, distrax or numpyro Gaussian).
    params: any pytree of arrays.
    key: a PRNG key.
    num_samples: ``N`` (static).
    coupling: couple the positive and negative parts.
    control_variate: a :class:`ControlVariate` such as :func:`delta_method`.
    cv_coefficient: the control variate's coefficient :math:`c`, a number or
      ``'optimal'`` (one per leaf of ``params``, estimated from an independent pilot
      draw of ``N`` samples, which keeps the estimate unbiased and doubles the cost).
    return_per_sample: if False, ``per_sample`` is ``None``.
    coordinate_chunk_size: coordinates evaluated together; ``None`` picks the largest
      that keeps about :math:`2^{20}` input elements live.
    sample_sharding: optional sharding for arrays with a leading sample axis.

  Returns:
    A :class:`GradEstimate`: ``grad`` like ``params``; ``per_sample`` with a leading
    ``N`` axis; ``values`` of shape ``(N,)``.

  Raises:
    TypeError: the distribution is not Gaussian.
    ValueError: ``num_samples < 1``; ``f`` not scalar-valued; ``cv_coefficient``
      neither a number nor ``'optimal'``.

  Examples:
    >>> import jax, jax.numpy as jnp, gradest
    >>> dist_fn = lambda p: gradest.distributions.Normal(p["mu"], jnp.exp(p["log_sigma"]))
    >>> params = {"mu": jnp.ones(3), "log_sigma": jnp.zeros(3)}
    >>> f = lambda x: jnp.sum(jnp.cos(x))
    >>> est = gradest.measure_valued_grad(f, dist_fn, params, jax.random.key(0), 100,
    ...                                   control_variate=gradest.delta_method(f))
    >>> est.per_sample["mu"].shape
    (100, 3)

  References:
    Pflug, *Optimization of Stochastic Models*, 1996. Mohamed, Rosca, Figurnov & Mnih,
    *Monte Carlo Gradient Estimation in Machine Learning*, JMLR 2020, section 6.
  """
  setup = core.prepare(
    f,
    dist_fn,
    params,
    key,
    num_samples,
    control_variate=control_variate,
    cv_coefficient=cv_coefficient,
    check_dist=check_gaussian,
  )
  dist, n = setup.dist, setup.num_samples
  event_shape = dist.event_shape
  size = math.prod(event_shape)
  if coordinate_chunk_size is None:
    chunk = max(1, min(size, _ELEMENT_BUDGET // (4 * n * size)))
  else:
    chunk = min(size, check_positive_int(coordinate_chunk_size, "coordinate_chunk_size"))

  loc = jax.lax.stop_gradient(dist.loc).reshape(-1)
  scale = jax.lax.stop_gradient(dist.scale).reshape(-1)
  coords = jnp.arange(size)
  if control_variate is None:
    evaluate = f
  else:
    # f and the control variate h at the same points: the estimator is linear in the
    # cost, so the terms of f - c h are those of f minus c times those of h.
    def evaluate(x):
      return f(x), control_variate.value(dist, x)

  def weak_derivatives(k):
    """``values`` and the per-sample (loc, scale) gradient terms of each evaluated cost."""
    keys, xs = draw_samples(dist, k, n, sample_sharding)
    xs = jax.lax.stop_gradient(xs).reshape(n, size)
    repl = jax.vmap(lambda k: _replacements(k, loc, scale, coupling))(keys)  # (N, 4, D)
    values = jax.vmap(lambda x: f(x.reshape(event_shape)))(xs)

    def at_coordinate(d):
      mask = coords == d  # a select, which fuses, rather than a scatter per evaluation

      def one_sample(x, r):
        return jax.vmap(lambda v: evaluate(jnp.where(mask, v, x).reshape(event_shape)))(r[:, d])

      return jax.vmap(one_sample)(xs, repl)  # (N, 4) per cost

    evals = jax.lax.map(at_coordinate, coords, batch_size=chunk)  # (D, N, 4) per cost

    def terms(e):
      e = jnp.moveaxis(e, 0, 1)  # (N, D, 4)
      g_loc = (e[..., 0] - e[..., 1]) / (scale * math.sqrt(2.0 * math.pi))
      g_scale = (e[..., 2] - e[..., 3]) / scale
      return g_loc.reshape((n,) + event_shape), g_scale.reshape((n,) + event_shape)

    if control_variate is None:
      return values, terms(evals), None
    return values, terms(evals[0]), terms(evals[1])

  def moments(p):
    d = as_distribution(dist_fn(p))
    return d.loc, d.scale

  _, pullback = jax.vjp(moments, params)

  def per_sample(k):
    values, gf, gh = weak_derivatives(k)
    (f_terms,) = jax.vmap(pullback)(gf)
    if gh is None:
      return core.Terms(values, f_terms, None, pullback(tree_mean(gf))[0])
    (h_terms,) = jax.vmap(pullback)(gh)
    return core.Terms(values, f_terms, h_terms)

  def mean(k, coefficient):
    values, gf, gh = weak_derivatives(k)
    if coefficient is not None:
      gf = jax.tree.map(lambda a, b: a - coefficient * b, gf, gh)
    (grad,) = pullback(tree_mean(gf))
    return values, grad

  return core.estimate(
    setup,
    dist_fn,
    params,
    per_sample=per_sample,
    mean=mean,
    control_variate=control_variate,
    cv_coefficient=cv_coefficient,
    return_per_sample=return_per_sample,
  )
