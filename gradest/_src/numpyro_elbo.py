r"""Per-site gradient estimators inside NumPyro's SVI: :class:`ELBO`.

NumPyro trains discrete latent variables with the plain score function
(``TraceGraph_ELBO``: no baseline) or by enumeration. :class:`ELBO` is a
``numpyro.infer.elbo.ELBO`` whose loss is a *surrogate*: its value is the negative ELBO
estimate (the negative multi-sample bound with ``vimco``) and its gradient with respect to
the parameters is the estimate of the estimator chosen for each latent site of the guide.

How a site's learning signal is formed (the semantics of ``TraceGraph_ELBO``): the cost
terms :math:`\log p` (model sites) and :math:`-\log q` (guide sites) that depend on the
site's value, found by NumPyro's provenance tracking
(``numpyro.infer.elbo.get_nonreparam_deps``), summed over every plate the site is not in
(``MultiFrameTensor.sum_to``). A site inside a plate thus gets one signal per plate element,
and independent data points do not add each other's noise.

Requires ``numpyro`` (the ``adapters`` extra); ``get_nonreparam_deps`` exists from NumPyro
0.12, its provenance tracking works with JAX >= 0.9 from NumPyro 0.21.
"""

from __future__ import annotations

import functools
import types
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpyro
from numpyro.handlers import replay, seed, substitute, trace
from numpyro.infer.elbo import ELBO as NumPyroELBO
from numpyro.infer.elbo import MultiFrameTensor, get_nonreparam_deps
from numpyro.primitives import Messenger
from numpyro.util import check_model_guide_match

from gradest._src.discrete import (
  BERNOULLI,
  CATEGORICAL,
  Family,
  antithetic_logit_grad,
  gumbel_rao_sample,
  perturb,
)
from gradest._src.distributions import Bernoulli, Categorical, as_distribution
from gradest._src.gumbel import check_temperature, straight_through
from gradest._src.registry import ESTIMATORS
from gradest._src.relax import init_rebar_params, relax_logit_grad
from gradest._src.score_function import score_function_surrogate
from gradest._src.vimco import vimco_surrogate

Array = jax.Array

PATHWISE = "pathwise"
SCORE = "score"
ANTITHETIC = "antithetic"
RELAXED = "relaxed"
MULTI_SAMPLE = "multi_sample"
CONTROL_VARIATE = "control_variate"
RELAX_HIDDEN = 8  # hidden units of RELAX's default surrogate network


class SiteEstimator(NamedTuple):
  """How :class:`ELBO` estimates the gradient through one latent site.

  Attributes:
    name: the estimator's name (the gradest registry name, ``gradest.ESTIMATORS``, where
      it has one; ``sticking_the_landing`` and ``learned_baseline`` exist only per site).
    kind: ``"pathwise"`` (the sample carries its reparameterization gradient),
      ``"score"`` (:math:`\\nabla\\log q` times the site's downstream cost, less a baseline),
      ``"antithetic"`` (ARM / DisARM: the downstream cost at the sample and at its antithetic
      partner), ``"relaxed"`` (straight-through, Gumbel-Rao: the exact sample carries a
      relaxed sample's gradient), ``"control_variate"`` (REBAR / RELAX: the score term less
      a learned, reparameterized control variate) or ``"multi_sample"`` (VIMCO).
    families: what the site's distribution may be: ``"reparameterized"`` (``has_rsample``),
      ``"any"``, ``"bernoulli"``, ``"categorical"``.
    min_particles: the smallest ``num_particles``.
    reruns: extra runs of guide and model per particle for this site.
    options: fixed options (the baseline of the score-function entries, the conditional
      samples of Gumbel-Rao, whether a pathwise site keeps its score term).
    unbiased: whether the estimate's mean is the exact gradient of the objective (the ELBO;
      the multi-sample bound for ``vimco``).
    params: the NumPyro parameters the estimator learns for each site ``s`` using it,
      named ``f"{s}.{suffix}"`` for these suffixes (declared by :meth:`ELBO.wrap_guide`).
  """

  name: str
  kind: str
  families: tuple[str, ...]
  min_particles: int = 1
  reruns: int = 0
  options: Mapping[str, Any] = types.MappingProxyType({})
  unbiased: bool = True
  params: tuple[str, ...] = ()


_REBAR_PARAMS = ("cv_eta", "cv_log_temperature")
_RELAX_PARAMS = (*_REBAR_PARAMS, "cv_w1", "cv_b1", "cv_w2")

SITE_ESTIMATORS: Mapping[str, SiteEstimator] = types.MappingProxyType(
  {
    e.name: e
    for e in (
      SiteEstimator("pathwise", PATHWISE, ("reparameterized",)),
      SiteEstimator(
        "sticking_the_landing", PATHWISE, ("reparameterized",), options={"score_term": False}
      ),
      SiteEstimator("score_function", SCORE, ("any",), options={"baseline": None}),
      SiteEstimator("reinforce_loo", SCORE, ("any",), 2, options={"baseline": "leave_one_out"}),
      SiteEstimator(
        "learned_baseline", SCORE, ("any",), options={"baseline": "learned"}, params=("baseline",)
      ),
      SiteEstimator("disarm", ANTITHETIC, ("bernoulli",), reruns=1),
      SiteEstimator("arm", ANTITHETIC, ("bernoulli",), reruns=1),
      SiteEstimator("rebar", CONTROL_VARIATE, ("bernoulli",), reruns=2, params=_REBAR_PARAMS),
      SiteEstimator("relax", CONTROL_VARIATE, ("bernoulli",), reruns=2, params=_RELAX_PARAMS),
      SiteEstimator("straight_through", RELAXED, ("bernoulli",), unbiased=False),
      SiteEstimator(
        "gumbel_rao", RELAXED, ("bernoulli",), options={"num_conditional": 10}, unbiased=False
      ),
      SiteEstimator("vimco", MULTI_SAMPLE, ("any",), 2),
    )
  }
)
"""The estimators :class:`ELBO` offers per site, by name."""


def _param_inits(est: SiteEstimator) -> dict[str, Array]:
  """The initial values of a site's learned parameters, by suffix."""
  if not est.params:
    return {}
  if est.kind == SCORE:
    return {"baseline": jnp.zeros((), jnp.float32)}
  rebar = init_rebar_params()
  out = {"cv_eta": rebar["eta"], "cv_log_temperature": rebar["log_temperature"]}
  if "cv_w1" in est.params:
    out["cv_w1"] = jnp.linspace(0.25, 2.0, RELAX_HIDDEN, dtype=jnp.float32)
    out["cv_b1"] = jnp.linspace(-2.0, 2.0, RELAX_HIDDEN, dtype=jnp.float32)
    out["cv_w2"] = jnp.zeros(RELAX_HIDDEN, jnp.float32)
  return out


def _relax_network(event_ndim: int) -> Callable[[Any, Array], Array]:
  """RELAX's default surrogate :math:`r_\\rho`: one tanh layer per variable, summed per event."""

  def network(rho, z):
    hidden = jnp.tanh(z[..., None] * rho["w1"] + rho["b1"])
    out = hidden @ rho["w2"]
    return jnp.sum(out, axis=tuple(range(out.ndim - event_ndim, out.ndim)))

  return network


def _check_estimator_name(name: Any, where: str) -> SiteEstimator:
  if isinstance(name, SiteEstimator):
    return name
  if name in SITE_ESTIMATORS:
    return SITE_ESTIMATORS[name]
  later = sorted(set(ESTIMATORS) - set(SITE_ESTIMATORS))
  hint = (
    f" ({name!r} is a gradest estimator that ELBO does not offer per site yet)"
    if name in ESTIMATORS
    else ""
  )
  raise ValueError(
    f"{where}: unknown estimator {name!r}{hint}; use one of {sorted(SITE_ESTIMATORS)} "
    f"(not yet available inside ELBO: {later})."
  )


def _base(fn: Any) -> Any:
  """The distribution under numpyro's Expanded / Independent / Masked wrappers."""
  while hasattr(fn, "base_dist"):
    fn = fn.base_dist
  return fn


def _class_names(fn: Any) -> list[str]:
  """The class names a rule may use for ``fn``: ``BernoulliLogits`` also as ``Bernoulli``."""
  names = []
  for d in (fn, _base(fn)):
    for cls in type(d).__mro__:
      n = cls.__name__
      for alias in (n, n.removesuffix("Logits").removesuffix("Probs")):
        if alias not in names and alias not in ("object", "Distribution"):
          names.append(alias)
  return names


def _family(fn: Any) -> str:
  """``"bernoulli"``, ``"categorical"`` or ``"other"`` for a numpyro distribution."""
  base = as_distribution(_base(fn), "the site's distribution")
  if isinstance(base, Bernoulli):
    return "bernoulli"
  if isinstance(base, Categorical):
    return "categorical"
  return "other"


def _logits(fn: Any) -> tuple[Family, Array]:
  """The gradest family and the logits of a Bernoulli site, broadcast to the site's shape."""
  base = as_distribution(_base(fn), "the site's distribution")
  shape = tuple(fn.batch_shape) + tuple(fn.event_shape)
  if isinstance(base, Bernoulli):
    return BERNOULLI, jnp.broadcast_to(base.logits, shape)
  return CATEGORICAL, jnp.broadcast_to(base.logits, shape + base.logits.shape[-1:])


def _sample_dtype(fn: Any, key: Array) -> Any:
  return jax.eval_shape(lambda k: fn.sample(k), key).dtype


def _bernoulli_log_prob(fn: Any, value: Array, lp: Array) -> Array:
  """``lp`` with the gradient in the logits of gradest's ``x l - softplus(l)``.

  NumPyro's ``BernoulliLogits.log_prob`` is right in value but its gradient at logits
  exactly 0 is off by 1/2 (the kinks of ``|l|`` and ``max(l, 0)``), which biases every
  score function at the usual zero initialization. Only plain, expanded and independent
  ``BernoulliLogits`` sites are rewritten (``BernoulliProbs`` has no kink); the value
  stays NumPyro's, and a site with an infinite logit keeps NumPyro's gradient.
  """
  d = fn
  while type(d).__name__ in ("ExpandedDistribution", "Independent"):
    d = d.base_dist
  if type(d).__name__ != "BernoulliLogits":
    return lp
  _, logits = _logits(fn)
  finite = jnp.isfinite(logits)
  safe = jnp.where(finite, logits, 0.0)
  elementwise = value.astype(safe.dtype) * safe - jax.nn.softplus(safe)
  correction = jnp.where(finite, elementwise - jax.lax.stop_gradient(elementwise), 0.0)
  axes = tuple(range(correction.ndim - len(fn.event_shape), correction.ndim))
  stable = jax.lax.stop_gradient(lp) + (jnp.sum(correction, axis=axes) if axes else correction)
  return jnp.where(jnp.all(finite), stable, lp)


def _site_log_prob(site: Mapping[str, Any]) -> Array:
  """A sample site's ``log_prob`` (event-summed, batch-shaped), without its plate scale."""
  lp = site["fn"].log_prob(site["value"])
  return _bernoulli_log_prob(site["fn"], site["value"], lp)


def _relaxed_bernoulli_log_prob(site: Mapping[str, Any]) -> Array:
  """A Bernoulli site's :math:`\\sum (v\\ell - \\mathrm{softplus}(\\ell))` at a relaxed value.

  NumPyro's ``log_prob`` is :math:`-\\infty` off the support ``{0, 1}``; this continuous
  extension agrees with it on the support.
  """
  _, logits = _logits(site["fn"])
  lp = site["value"] * logits - jax.nn.softplus(logits)
  event_ndim = len(site["fn"].event_shape)
  return jnp.sum(lp, axis=tuple(range(lp.ndim - event_ndim, lp.ndim)))


def _log_probs(tr: Mapping[str, Any], relaxed: Any = ()) -> dict[str, Array]:
  """Each sample site's ``log_prob`` (event-summed, batch-shaped) times its plate scale.

  The Bernoulli sites named in ``relaxed`` (holding relaxed values) get the continuous
  extension.
  """
  out = {}
  for name, site in tr.items():
    if site["type"] == "sample":
      lp = _relaxed_bernoulli_log_prob(site) if name in relaxed else _site_log_prob(site)
      if site["scale"] is not None:
        lp = site["scale"] * lp
      out[name] = lp
  return out


def _sticking_the_landing_log_prob(site: Mapping[str, Any]) -> Array:
  """``log q(z)`` (times the plate scale) with the gradient through ``z`` only.

  The distribution's parameters are cut from the gradient, the value keeps its
  reparameterization path: the score term :math:`\\nabla_\\phi \\log q_\\phi(z)`, of
  mean zero, is dropped.
  """
  fn = jax.tree.map(jax.lax.stop_gradient, site["fn"])
  lp = _site_log_prob({"fn": fn, "value": site["value"]})
  return lp if site["scale"] is None else site["scale"] * lp


def _sites_after(name: str, guide_tr: Mapping, guide_deps: Mapping | None) -> frozenset:
  """The guide's latent sites whose values depend on ``name`` (all Bernoulli or reparameterized).

  Raises:
    TypeError: one of them can be neither relaxed nor reparameterized.
  """
  if guide_deps is None:
    return frozenset()
  after = frozenset(
    s
    for s, deps in guide_deps.items()
    if name in deps
    and s != name
    and guide_tr[s]["type"] == "sample"
    and not guide_tr[s]["is_observed"]
    and not guide_tr[s]["fn"].has_rsample
  )
  for s in after:
    if _family(guide_tr[s]["fn"]) != "bernoulli":
      raise TypeError(
        f"site {name!r}: REBAR / RELAX relax the guide sites after it, but site {s!r} "
        f"({type(_base(guide_tr[s]['fn'])).__name__}) depends on it and is neither "
        f"Bernoulli nor reparameterizable; use 'disarm' or 'reinforce_loo' for site {name!r}."
      )
  return after


def _zero_with_grad(grad: Array, param: Array) -> Array:
  """A term of value 0 whose gradient with respect to ``param`` is ``grad``."""
  grad = jax.lax.stop_gradient(grad)
  return jnp.sum(grad * (param - jax.lax.stop_gradient(param)))


class _Intervene(Messenger):
  """Draws the values of antithetic and straight-through sites from the site's own key.

  It sits outside the ``seed`` handler, so every site gets the key it would get without it
  (a re-run with the same seed reuses every site's noise: common random numbers). Values of
  non-pathwise sites are cut from the gradient, as in ``TraceGraph_ELBO``.
  """

  def __init__(self, fn, choose, flip=None, temperature=1.0, relaxed=None, soften=()):
    self.choose = choose
    self.flip = flip
    self.temperature = temperature
    self.relaxed = relaxed or {}  # site name -> relaxed value
    self.soften = soften  # (Bernoulli site names, temperature): relaxed with their own noise
    super().__init__(fn)

  def process_message(self, msg):
    if msg["type"] != "sample" or msg["is_observed"] or msg["value"] is not None:
      return
    if msg["name"] in self.relaxed:  # REBAR / RELAX: the control variate's relaxed input
      msg["value"] = self.relaxed[msg["name"]]
      return
    if self.soften and msg["name"] in self.soften[0]:  # downstream of a relaxed site
      fam, logits = _logits(msg["fn"])
      noise, _ = perturb(fam, msg["kwargs"]["rng_key"], jax.lax.stop_gradient(logits))
      msg["value"] = fam.soft(logits + noise, self.soften[1])
      return
    est = self.choose(msg["name"], msg["fn"])
    if est.kind not in (ANTITHETIC, RELAXED, CONTROL_VARIATE):
      return
    key = msg["kwargs"]["rng_key"]
    fam, logits = _logits(msg["fn"])
    noise, _ = perturb(fam, key, jax.lax.stop_gradient(logits))
    dtype = _sample_dtype(msg["fn"], key)
    if est.kind in (ANTITHETIC, CONTROL_VARIATE):
      z = logits - noise if msg["name"] == self.flip else logits + noise
      msg["value"] = jax.lax.stop_gradient(fam.hard(z)).astype(dtype)
    elif "num_conditional" in est.options:  # Gumbel-Rao: the same exact sample
      k = est.options["num_conditional"]
      msg["value"] = gumbel_rao_sample(fam, key, logits, self.temperature, k)
    else:
      hard = jax.lax.stop_gradient(fam.hard(logits + noise))
      msg["value"] = straight_through(hard, fam.soft(logits + noise, self.temperature))

  def postprocess_message(self, msg):
    if msg["type"] != "sample" or msg["is_observed"] or msg["name"] in self.relaxed:
      return
    if self.soften and msg["name"] in self.soften[0]:
      return
    if self.choose(msg["name"], msg["fn"]).kind not in (PATHWISE, RELAXED):
      msg["value"] = jax.lax.stop_gradient(msg["value"])


class ELBO(NumPyroELBO):
  r"""The ELBO with a gradient estimator chosen per latent site of the guide.

  Use it as ``numpyro.infer.SVI(model, guide, optim, loss=ELBO(...))``. For ``K`` particles
  (independent runs of guide and model), the loss is the surrogate

  .. math::
    \mathcal S = -\frac1K \sum_{k=1}^K \Big[\sum_{s \in \text{model}} \log p_s
      - \sum_{s \in \text{guide}} \log q_s\Big]_k - \sum_{\text{sites } z} T_z,

  whose value is the negative ELBO estimate (every :math:`T_z` has value 0) and whose
  gradient is the chosen estimators'. With :math:`c_{z,k}` the downstream cost of site
  :math:`z` in particle :math:`k` (the cost terms depending on :math:`z`, per element of
  the plates :math:`z` is in), the site terms are

  .. math::
    T_z^{\mathrm{score}} = \frac1K\sum_k \big(c_{z,k} - b_{z,k}\big)\,
      \log q(z_k)\ \text{(gradient only)}, \qquad
    T_z^{\mathrm{DisARM}} = \frac1K\sum_k \tfrac12\big(c_{z,k} - \tilde c_{z,k}\big)
      (z_k - \tilde z_k)\,\sigma(|\ell_k|)\,\ell_k\ \text{(gradient only)},

  with :math:`b = 0` (``score_function``) or the mean of the other particles' costs
  (``reinforce_loo``), :math:`\tilde z = \mathbb 1[\ell - L > 0]` the antithetic partner of
  :math:`z = \mathbb 1[\ell + L > 0]` and :math:`\tilde c` the downstream cost when guide
  and model are run again with the same seed (common random numbers for every other site)
  and :math:`\tilde z` in place of :math:`z`. ``arm`` uses
  :math:`(c - \tilde c)(\sigma(L) - \tfrac12)` instead. The log-density in :math:`T` is not
  multiplied by the plate's subsampling scale (the cost is): the estimate is unbiased for
  the full-data ELBO under ``plate(..., subsample_size=B)``.

  Estimators (``estimators`` values; gradest registry names):

  * ``"pathwise"``: reparameterized sites (``site["fn"].has_rsample``); the sample carries
    its gradient, as in ``Trace_ELBO``.
  * ``"sticking_the_landing"``: reparameterized sites; the pathwise gradient with the
    score term :math:`\nabla_\phi \log q_\phi(z)` (mean zero) dropped: :math:`\log q` is
    evaluated at the sample with the guide's parameters cut from the gradient. Zero
    variance where the guide equals the posterior (Roeder, Wu & Duvenaud, 2017). Not with
    ``vimco`` (biased for the multi-sample bound).
  * ``"score_function"``: no baseline (``TraceGraph_ELBO``'s estimator).
  * ``"reinforce_loo"``: the leave-one-out baseline over the particles (``K >= 2``).
  * ``"learned_baseline"``: a learned constant baseline :math:`b_z` (the NumPyro parameter
    ``f"{z}.baseline"``, starting at 0), trained by the optimizer alongside the guide by a
    loss term of value 0 whose gradient in :math:`b_z` is :math:`b_z - \bar c_z` (the
    mean learning signal over particles and plate elements), so it tracks the mean signal;
    the guide's gradient uses it cut from the gradient, hence stays unbiased. Needs
    :meth:`wrap_guide`.
  * ``"rebar"``, ``"relax"``: Bernoulli sites; :math:`(c - c_\phi(\tilde z))\nabla\log q
    + \nabla c_\phi(z) - \nabla c_\phi(\tilde z)` with REBAR's
    :math:`c_\phi(z) = \eta\, c(\sigma(z/\lambda))` (RELAX adds a small per-variable
    tanh network), :math:`c(\cdot)` the downstream cost with guide and model run again
    at the relaxed value (Bernoulli guide sites after it relaxed too), per plate element.
    Unbiased; :math:`\phi` (``f"{z}.cv_eta"``, ``f"{z}.cv_log_temperature"``, RELAX's
    ``f"{z}.cv_w1"``, ``cv_b1``, ``cv_w2``) gets the gradient of the squared estimate, so
    the optimizer lowers the variance. Two extra differentiated runs of guide and model
    per particle and site; the model must use the value arithmetically. Needs
    :meth:`wrap_guide`.
  * ``"disarm"``, ``"arm"``: Bernoulli sites; one extra run of guide and model per particle
    and per such site (so ``K * (1 + number of antithetic sites)`` runs in all).
  * ``"straight_through"``: Bernoulli sites; the exact sample carries the gradient of
    :math:`\sigma((\ell + L)/\tau)`. **Biased** (the bias does not shrink with ``K``).
  * ``"gumbel_rao"``: Bernoulli sites; the exact sample carries the gradient of the mean of
    10 relaxed samples drawn given it (Paulus et al., 2021). **Biased**, less variable
    than ``straight_through``. Categorical sites get neither relaxation: their integer
    value cannot carry a gradient into the model (a clear TypeError says so).
  * ``"vimco"``: the objective becomes the multi-sample bound
    :math:`\log\frac1K\sum_k e^{w_k}` (:math:`w_k` the particle's log-weight, not split by
    plates), with VIMCO's per-particle leave-one-out signals (``K >= 2``). It cannot be
    combined with other score-type or antithetic sites; pathwise and straight-through sites
    then get the gradient of the bound.

  Args:
    num_particles: ``K`` (static). The default is 2, the smallest for the default
      leave-one-out baseline.
    estimators: a mapping from a guide site name, or a distribution class name
      (``"Bernoulli"``, ``"BernoulliLogits"``, ``"Categorical"``, ``"Normal"``, ...), to an
      estimator name. A site name wins over a class name.
    default: the estimator of the sites no key matches; ``None`` means ``"pathwise"`` for
      reparameterizable sites and ``"reinforce_loo"`` for the others.
    temperature: :math:`\tau > 0` of ``straight_through``.
    vectorize_particles: as in NumPyro's ELBOs (``True``: ``jax.vmap``; ``False``:
      ``jax.lax.map``; or a callable).

  Raises:
    ValueError: an unknown estimator name, ``num_particles`` not a positive integer,
      ``temperature <= 0``; at the first loss evaluation, ``num_particles`` too small for a
      site's estimator, an ``estimators`` key matching no latent site and no distribution
      class of the guide, ``vimco`` mixed with score-type or antithetic sites.
    TypeError: (at the first loss evaluation) an estimator that does not fit a site's
      distribution (``disarm`` on a Normal, ``pathwise`` on a Bernoulli).

  Examples:
    >>> import jax, jax.numpy as jnp, numpyro, numpyro.distributions as dist
    >>> from numpyro.infer import SVI
    >>> from gradest.numpyro import ELBO
    >>> def model(x):
    ...   with numpyro.plate("data", x.shape[0]):
    ...     z = numpyro.sample("z", dist.Bernoulli(logits=0.0))
    ...     numpyro.sample("x", dist.Normal(2.0 * z - 1.0, 1.0), obs=x)
    >>> def guide(x):
    ...   logits = numpyro.param("logits", jnp.zeros(x.shape[0]))
    ...   with numpyro.plate("data", x.shape[0]):
    ...     numpyro.sample("z", dist.Bernoulli(logits=logits))
    >>> svi = SVI(model, guide, numpyro.optim.Adam(0.05),
    ...           loss=ELBO(num_particles=4, estimators={"z": "disarm"}))
    >>> result = svi.run(jax.random.key(0), 50, jnp.array([-1.0, 1.0, 1.2]), progress_bar=False)
    >>> result.params["logits"].shape
    (3,)

  References:
    Schulman, Heess, Weber & Abbeel, *Gradient Estimation Using Stochastic Computation
    Graphs*, NeurIPS 2015. Kool, van Hoof & Welling, *Buy 4 REINFORCE samples, get a
    baseline for free!*, 2019. Yin & Zhou, *ARM*, ICLR 2019. Dong, Mnih & Tucker,
    *DisARM*, NeurIPS 2020. Bengio, Léonard & Courville, 2013 (straight-through). Mnih &
    Rezende, *Variational Inference for Monte Carlo Objectives*, ICML 2016. Roeder, Wu &
    Duvenaud, *Sticking the Landing*, NeurIPS 2017. Tucker et al., *REBAR*, NeurIPS 2017.
    Grathwohl et al., *Backpropagation through the Void* (RELAX), ICLR 2018. Paulus,
    Maddison & Krause, *Rao-Blackwellizing the Straight-Through Gumbel-Softmax Gradient
    Estimator*, ICLR 2021.
  """

  can_infer_discrete = True

  def __init__(
    self,
    num_particles: int = 2,
    estimators: Mapping[str, str] | None = None,
    default: str | None = None,
    *,
    temperature: float = 1.0,
    vectorize_particles: bool | Callable[..., Any] = True,
  ):
    if isinstance(num_particles, bool) or not isinstance(num_particles, int) or num_particles < 1:
      raise ValueError(f"num_particles must be a positive integer, got {num_particles!r}.")
    super().__init__(num_particles=num_particles, vectorize_particles=vectorize_particles)
    estimators = dict(estimators or {})
    for key in estimators:
      if not isinstance(key, str):
        raise TypeError(
          f"estimators keys must be site names or distribution class names (str), got {key!r}."
        )
    self.estimators = {
      k: _check_estimator_name(v, f"estimators[{k!r}]") for k, v in estimators.items()
    }
    self.default = None if default is None else _check_estimator_name(default, "default")
    check_temperature(temperature)
    self.temperature = temperature

  # ------------------------------------------------------------------------------------
  # Choosing and checking a site's estimator.
  # ------------------------------------------------------------------------------------

  def choose(self, name: str, fn: Any) -> SiteEstimator:
    """The estimator of the latent site ``name`` with distribution ``fn``, checked."""
    where = f"site {name!r}"
    if name in self.estimators:
      est = self.estimators[name]
      where += f" (estimators[{name!r}])"
    else:
      cls = next((c for c in _class_names(fn) if c in self.estimators), None)
      if cls is not None:
        est = self.estimators[cls]
        where += f" (estimators[{cls!r}])"
      elif self.default is not None:
        est = self.default
      else:
        est = SITE_ESTIMATORS["pathwise" if fn.has_rsample else "reinforce_loo"]
    self._check_fits(est, fn, where)
    return est

  def _check_fits(self, est: SiteEstimator, fn: Any, where: str) -> None:
    dist_name = type(_base(fn)).__name__
    if "reparameterized" in est.families and not fn.has_rsample:
      raise TypeError(
        f"{where}: {est.name!r} needs a reparameterizable distribution (has_rsample), got "
        f"{dist_name}; use 'reinforce_loo', 'score_function' or 'vimco' (or 'disarm' / "
        "'arm' / 'straight_through' for a Bernoulli)."
      )
    fam = _family(fn) if ("bernoulli" in est.families or "categorical" in est.families) else ""
    if fam and fam not in est.families:
      why = ""
      if fam == "categorical" and est.kind in (RELAXED, CONTROL_VARIATE):
        why = (
          " (a Categorical site's value is an integer index: a relaxed sample cannot reach "
          "the model, whose indexing by it is not differentiable, and NumPyro has no one-hot "
          "categorical distribution)"
        )
      raise TypeError(
        f"{where}: {est.name!r} is defined for {' / '.join(est.families)} distributions, "
        f"got {dist_name}{why}; use 'reinforce_loo', 'learned_baseline' or 'score_function'"
        + (" (or 'pathwise' where has_rsample)." if fn.has_rsample else " (or 'vimco').")
      )
    if self.num_particles < est.min_particles:
      raise ValueError(
        f"{where}: {est.name!r} needs num_particles >= {est.min_particles} (its leave-one-out "
        f"baseline compares particles), got {self.num_particles}; raise num_particles or "
        "use 'score_function'."
      )

  def _check_plan(self, plan: Mapping[str, SiteEstimator], guide_tr: Mapping) -> None:
    matched = set(plan)
    for site in guide_tr.values():
      if site["type"] == "sample" and not site["is_observed"]:
        matched.update(_class_names(site["fn"]))
    unmatched = sorted(set(self.estimators) - matched)
    if unmatched:
      raise ValueError(
        f"estimators keys {unmatched} match no latent site of the guide (its sites are "
        f"{sorted(plan)}) and no class of their distributions; check the spelling."
      )
    kinds = {est.kind for est in plan.values()}
    elbo_only = (SCORE, ANTITHETIC, CONTROL_VARIATE)
    if MULTI_SAMPLE in kinds and (
      kinds & set(elbo_only) or any(not e.options.get("score_term", True) for e in plan.values())
    ):
      others = sorted(
        n for n, e in plan.items() if e.kind in elbo_only or not e.options.get("score_term", True)
      )
      raise ValueError(
        f"'vimco' optimizes the multi-sample bound and cannot be combined with the ELBO "
        f"estimators of sites {others}; use 'vimco' for every non-reparameterized site, or "
        "none ('sticking_the_landing' is biased for the multi-sample bound: use 'pathwise')."
      )

  # ------------------------------------------------------------------------------------
  # The estimators' learned parameters.
  # ------------------------------------------------------------------------------------

  def wrap_guide(self, guide: Callable[..., Any]) -> Callable[..., Any]:
    """``guide`` that also declares the parameters of the sites' learned estimators.

    ``learned_baseline``, ``rebar`` and ``relax`` learn parameters alongside the guide's
    (a baseline, control-variate parameters). NumPyro's SVI collects parameters from the
    guide and the model only, so they are declared by the guide: pass
    ``elbo.wrap_guide(guide)`` to ``SVI`` (and use it wherever the parameters are needed).
    After the guide runs, the wrapper calls ``numpyro.param(f"{site}.{suffix}", init)``
    for every suffix in ``SITE_ESTIMATORS[name].params`` of each site's estimator: the
    baseline starts at 0, REBAR's :math:`\\eta = 1`, :math:`\\lambda = 0.5`
    (``cv_log_temperature`` holds :math:`\\log\\lambda`), RELAX's surrogate network
    (``cv_w1``, ``cv_b1``, ``cv_w2``) at output 0. A guide with no such site is returned
    unchanged in behaviour.

    Args:
      guide: the NumPyro guide.

    Returns:
      The wrapped guide (same arguments and return value).
    """

    @functools.wraps(guide)
    def wrapped(*args, **kwargs):
      with trace() as tr:
        out = guide(*args, **kwargs)
      for name, site in tr.items():
        if site["type"] == "sample" and not site["is_observed"]:
          for suffix, value in _param_inits(self.choose(name, site["fn"])).items():
            numpyro.param(f"{name}.{suffix}", value)
      return out

    return wrapped

  @staticmethod
  def _site_params(est: SiteEstimator, name: str, param_map: Mapping[str, Any]) -> dict:
    missing = [f"{name}.{s}" for s in est.params if f"{name}.{s}" not in param_map]
    if missing:
      raise ValueError(
        f"site {name!r} uses {est.name!r}, which learns the parameters {missing}; they are "
        "not among the SVI parameters. Declare them by wrapping the guide: "
        "SVI(model, elbo.wrap_guide(guide), optim, loss=elbo)."
      )
    return {s: param_map[f"{name}.{s}"] for s in est.params}

  # ------------------------------------------------------------------------------------
  # The loss.
  # ------------------------------------------------------------------------------------

  def _run(self, keys, param_map, model, guide, args, kwargs, flip=None, relaxed=None, soften=()):
    model_key, guide_key = keys
    guide = _Intervene(
      seed(substitute(guide, data=param_map), guide_key),
      self.choose,
      flip,
      self.temperature,
      relaxed,
      soften,
    )
    guide_tr = trace(guide).get_trace(*args, **kwargs)
    model = seed(substitute(model, data=param_map), model_key)
    model_tr = trace(replay(model, guide_tr)).get_trace(*args, **kwargs)
    return model_tr, guide_tr

  def loss_with_mutable_state(self, rng_key, param_map, model, guide, *args, **kwargs):
    """The surrogate loss (value: the negative ELBO estimate) and no mutable state.

    Args:
      rng_key: a PRNG key.
      param_map: the parameters, by site name (constrained values).
      model: the NumPyro model.
      guide: the NumPyro guide.
      *args: the model's and guide's positional arguments.
      **kwargs: their keyword arguments.

    Returns:
      ``{"loss": scalar, "mutable_state": None}``.
    """
    model_deps, guide_deps = get_nonreparam_deps(model, guide, args, kwargs, param_map)
    tracked = set().union(*model_deps.values(), *guide_deps.values())
    plan: dict[str, SiteEstimator] = {}

    def downstream(model_tr, guide_tr, lp_model, lp_guide, name, cut=True):
      def depends(deps, site):
        return name not in tracked or name in deps.get(site, ())

      cost = MultiFrameTensor()
      for site, lp in lp_model.items():
        if depends(model_deps, site):
          cost.add((model_tr[site]["cond_indep_stack"], lp))
      for site, lp in lp_guide.items():
        if depends(guide_deps, site):
          cost.add((guide_tr[site]["cond_indep_stack"], -lp))
      cost = cost.sum_to(guide_tr[name]["cond_indep_stack"])
      return jax.lax.stop_gradient(cost) if cut else cost

    def particle(key):
      keys = tuple(jax.random.split(key))
      model_tr, guide_tr = self._run(keys, param_map, model, guide, args, kwargs)
      check_model_guide_match(model_tr, guide_tr)
      for name, site in guide_tr.items():
        if site["type"] == "sample" and not site["is_observed"]:
          plan[name] = self.choose(name, site["fn"])
      self._check_plan(plan, guide_tr)
      lp_model, lp_guide = _log_probs(model_tr), _log_probs(guide_tr)
      log_p = sum((jnp.sum(lp) for lp in lp_model.values()), start=jnp.zeros(()))
      log_q = sum((jnp.sum(lp) for lp in lp_guide.values()), start=jnp.zeros(()))
      log_q_cut = jnp.zeros(())
      for n, lp in lp_guide.items():
        if plan[n].kind not in (PATHWISE, RELAXED):
          lp = jax.lax.stop_gradient(lp)
        elif not plan[n].options.get("score_term", True):
          lp = _sticking_the_landing_log_prob(guide_tr[n])
        log_q_cut = log_q_cut + jnp.sum(lp)
      out = {"elbo": log_p - log_q_cut, "log_weight": log_p - log_q, "sites": {}}
      vimco_log_q = jnp.zeros(())
      for name, est in plan.items():
        site = guide_tr[name]
        if est.kind == MULTI_SAMPLE:
          vimco_log_q = vimco_log_q + jnp.sum(_site_log_prob(site))
        elif est.kind == SCORE:
          log_q_site = _site_log_prob(site)  # not scaled: see the docstring
          cost = downstream(model_tr, guide_tr, lp_model, lp_guide, name)
          out["sites"][name] = (jnp.broadcast_to(cost, log_q_site.shape), log_q_site)
        elif est.kind == ANTITHETIC:
          out["sites"][name] = self._antithetic(
            est, name, site, keys, param_map, model, guide, args, kwargs, downstream,
            downstream(model_tr, guide_tr, lp_model, lp_guide, name),
          )  # fmt: skip
        elif est.kind == CONTROL_VARIATE:
          after = _sites_after(name, guide_tr, guide_deps if name in tracked else None)
          out["sites"][name] = self._control_variate(
            est, name, site, keys, param_map, model, guide, args, kwargs, downstream,
            downstream(model_tr, guide_tr, lp_model, lp_guide, name), after,
          )  # fmt: skip
      out["vimco_log_q"] = vimco_log_q
      return out

    keys = jax.random.split(rng_key, self.num_particles)
    out = self.vectorize_particles_fn(particle, keys)
    if any(est.kind == MULTI_SAMPLE for est in plan.values()):
      bound = vimco_surrogate(out["log_weight"], out["vimco_log_q"])
      return {"loss": -bound, "mutable_state": None}
    elbo = jnp.mean(out["elbo"])
    # Terms of value 0 whose gradients train the estimators' own parameters (minimized).
    training = jnp.zeros(())
    for name, site_out in out["sites"].items():
      est = plan[name]
      if est.kind == SCORE:
        a, b = site_out
        baseline = est.options["baseline"]
        if baseline == "learned":
          (baseline,) = self._site_params(est, name, param_map).values()
          training = training + _zero_with_grad(baseline - jnp.mean(a), baseline)
        surrogate = score_function_surrogate(a, b, baseline)
        elbo = elbo + jnp.sum(surrogate - a) / self.num_particles
      else:  # a is the logits' gradient estimate, b the logits
        a, b = site_out[:2]
        elbo = elbo + jnp.sum(a * (b - jax.lax.stop_gradient(b))) / self.num_particles
        if est.kind == CONTROL_VARIATE:
          phi = self._site_params(est, name, param_map)
          for suffix, g in site_out[2].items():
            training = training + _zero_with_grad(jnp.mean(g, axis=0), phi[suffix])
    return {"loss": training - elbo, "mutable_state": None}

  def _control_variate(
    self, est, name, site, keys, param_map, model, guide, args, kwargs, downstream, cost, after
  ):
    """``(gradient estimate w.r.t. the logits, logits, cv_grad)`` of a REBAR / RELAX site.

    The control variate's cost is the site's downstream cost with the site's value replaced
    by a relaxed one (guide and model run again with the same seed and the parameters held
    fixed), per element of the site's plates; the Bernoulli guide sites ``after`` it are
    relaxed too (with their own noise and the same temperature), so the control variate is
    continuous in the site's relaxed variable. ``cv_grad`` is the gradient of the squared
    estimate with respect to the site's control-variate parameters.
    """
    fam, logits = _logits(site["fn"])
    fixed = jax.lax.stop_gradient(logits)
    noise, key_c = perturb(fam, site["kwargs"]["rng_key"], fixed)
    b = jax.lax.stop_gradient(fam.hard(fixed + noise))
    event_ndim = len(site["fn"].event_shape)
    batch = logits.shape[: logits.ndim - event_ndim]
    frozen = jax.tree.map(jax.lax.stop_gradient, param_map)

    def relaxed_cost(value, temperature):
      model_tr, guide_tr = self._run(
        keys, frozen, model, guide, args, kwargs, relaxed={name: value}, soften=(after, temperature)
      )
      soft = {name, *after}
      lp_model, lp_guide = _log_probs(model_tr, soft), _log_probs(guide_tr, soft)
      relaxed = downstream(model_tr, guide_tr, lp_model, lp_guide, name, cut=False)
      return jnp.broadcast_to(relaxed, batch)

    stored = self._site_params(est, name, param_map)
    phi = {"eta": stored["cv_eta"], "log_temperature": stored["cv_log_temperature"]}
    network = None
    if est.name == "relax":
      phi["network"] = {k: stored[f"cv_{k}"] for k in ("w1", "b1", "w2")}
      network = _relax_network(event_ndim)

    def cv_fn(phi, z):
      # REBAR's eta f(soft(z / lambda)) (plus RELAX's network), as in
      # rebar_control_variate / relax_control_variate, with lambda also for the sites after.
      temperature = jnp.exp(phi["log_temperature"])
      c = phi["eta"] * relaxed_cost(fam.soft(z, temperature), temperature)
      return c if network is None else c + network(phi["network"], z)

    fb = jnp.broadcast_to(cost, batch)

    def square(phi):
      g = relax_logit_grad(fam, cv_fn, phi, fixed, noise, key_c, b, fb)
      return jnp.sum(jnp.square(g)), g

    cv_grad, grad = jax.grad(square, has_aux=True)(phi)
    flat = {"cv_eta": cv_grad["eta"], "cv_log_temperature": cv_grad["log_temperature"]}
    if "network" in cv_grad:
      flat.update({f"cv_{k}": v for k, v in cv_grad["network"].items()})
    return jax.lax.stop_gradient(grad), logits, jax.lax.stop_gradient(flat)

  def _antithetic(
    self, est, name, site, keys, param_map, model, guide, args, kwargs, downstream, cost
  ):
    """``(gradient estimate w.r.t. the logits, logits)`` of an ARM / DisARM site."""
    model_tr, guide_tr = self._run(keys, param_map, model, guide, args, kwargs, flip=name)
    cost_tilde = downstream(model_tr, guide_tr, _log_probs(model_tr), _log_probs(guide_tr), name)
    fam, logits = _logits(site["fn"])
    noise, _ = perturb(fam, site["kwargs"]["rng_key"], jax.lax.stop_gradient(logits))
    batch = logits.shape[: logits.ndim - len(site["fn"].event_shape)]
    diff = jnp.broadcast_to(cost - cost_tilde, batch)
    diff = diff.reshape(batch + (1,) * len(site["fn"].event_shape))
    fixed = jax.lax.stop_gradient(logits)
    grad = antithetic_logit_grad(fixed, noise, diff, integrated=est.name == "disarm")
    return jax.lax.stop_gradient(grad), logits

  def loss(self, rng_key, param_map, model, guide, *args, **kwargs):
    """The surrogate loss; see :meth:`loss_with_mutable_state`."""
    return self.loss_with_mutable_state(rng_key, param_map, model, guide, *args, **kwargs)["loss"]
