"""Per-site gradient estimators for NumPyro's SVI (needs the ``adapters`` extra: numpyro).

``gradest.numpyro.ELBO`` is a ``numpyro.infer.elbo.ELBO`` that gives each latent site of the
guide its own gradient estimator (pathwise, sticking the landing, score function with no,
a leave-one-out or a learned baseline, ARM, DisARM, REBAR, RELAX, straight-through,
Gumbel-Rao, VIMCO), with ``TraceGraph_ELBO``'s plate-aware
Rao-Blackwellization of the learning signals.
"""

from gradest._src.base import require_extra

require_extra(["numpyro"], "adapters", "gradest.numpyro")

from gradest._src.numpyro_elbo import ELBO, SITE_ESTIMATORS, SiteEstimator  # noqa: E402

__all__ = ["ELBO", "SITE_ESTIMATORS", "SiteEstimator"]
