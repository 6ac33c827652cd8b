"""Write the local intersphinx inventories in ``docs/_inventories/``.

The documentation must build without network access (CI reaches only PyPI), so
``docs/conf.py`` gives every intersphinx project its online inventory first and one of
these files second. Each file lists exactly the external objects that gradest's
docstrings and pages refer to, with their real documentation URLs, in the
``objects.inv`` format (version 2: a plain-text header, then zlib-compressed lines
``name domain:role priority uri display-name``; ``$`` in a URI stands for the name).

Run ``python docs/make_inventories.py`` after adding a reference to a new external name,
and commit the result. It needs nothing beyond the standard library.
"""

from __future__ import annotations

import zlib
from pathlib import Path

HERE = Path(__file__).resolve().parent / "_inventories"

# project -> (display name, version, base URL, [(name, domain:role, relative URI)])
PROJECTS: dict[str, tuple[str, str, str, list[tuple[str, str, str]]]] = {
  "python": (
    "Python",
    "3",
    "https://docs.python.org/3/",
    [
      ("typing.Any", "py:data", "library/typing.html#$"),
      ("collections.abc.Callable", "py:class", "library/collections.abc.html#$"),
      ("collections.abc.Sequence", "py:class", "library/collections.abc.html#$"),
      ("collections.abc.Mapping", "py:class", "library/collections.abc.html#$"),
      ("int", "py:class", "library/functions.html#$"),
      ("float", "py:class", "library/functions.html#$"),
      ("bool", "py:class", "library/functions.html#$"),
      ("str", "py:class", "library/stdtypes.html#$"),
      ("tuple", "py:class", "library/stdtypes.html#$"),
      ("list", "py:class", "library/stdtypes.html#$"),
      ("dict", "py:class", "library/stdtypes.html#$"),
      ("None", "py:data", "library/constants.html#$"),
      ("ValueError", "py:exception", "library/exceptions.html#$"),
      ("TypeError", "py:exception", "library/exceptions.html#$"),
    ],
  ),
  "numpy": (
    "NumPy",
    "2",
    "https://numpy.org/doc/stable/",
    [
      ("numpy.ndarray", "py:class", "reference/generated/numpy.ndarray.html#$"),
      ("numpy.number", "py:class", "reference/arrays.scalars.html#$"),
      ("numpy.bool", "py:class", "reference/arrays.scalars.html#$"),
    ],
  ),
  "jax": (
    "JAX",
    "latest",
    "https://docs.jax.dev/en/latest/",
    [
      ("jax.Array", "py:class", "_autosummary/jax.Array.html#$"),
      ("jax.jit", "py:function", "_autosummary/jax.jit.html#$"),
      ("jax.vmap", "py:function", "_autosummary/jax.vmap.html#$"),
      ("jax.grad", "py:function", "_autosummary/jax.grad.html#$"),
      ("jax.random.gamma", "py:function", "_autosummary/jax.random.gamma.html#$"),
      ("jax.sharding.NamedSharding", "py:class", "jax.sharding.html#$"),
      ("jax.sharding.PartitionSpec", "py:class", "jax.sharding.html#$"),
    ],
  ),
  "optax": (
    "Optax",
    "latest",
    "https://optax.readthedocs.io/en/latest/",
    [
      ("optax.GradientTransformationExtraArgs", "py:class", "api/transformations.html#$"),
      ("optax.chain", "py:function", "api/combining_optimizers.html#$"),
      ("optax.MultiSteps", "py:class", "api/optimizer_wrappers.html#$"),
    ],
  ),
  "flax": (
    "Flax",
    "latest",
    "https://flax.readthedocs.io/en/latest/",
    [
      ("flax.linen.Dense", "py:class", "api_reference/flax.linen/layers.html#$"),
      ("flax.linen.Conv", "py:class", "api_reference/flax.linen/layers.html#$"),
      ("flax.linen.Embed", "py:class", "api_reference/flax.linen/layers.html#$"),
      (
        "flax.linen.intercept_methods",
        "py:function",
        "api_reference/flax.linen/module.html#$",
      ),
      ("flax.nnx.Linear", "py:class", "api_reference/flax.nnx/nn/linear.html#$"),
      ("flax.nnx.Conv", "py:class", "api_reference/flax.nnx/nn/linear.html#$"),
      ("flax.nnx.Embed", "py:class", "api_reference/flax.nnx/nn/linear.html#$"),
    ],
  ),
  "numpyro": (
    "NumPyro",
    "stable",
    "https://num.pyro.ai/en/stable/",
    [
      ("numpyro.infer.svi.SVI", "py:class", "svi.html#$"),
      ("numpyro.infer.elbo.TraceGraph_ELBO", "py:class", "svi.html#$"),
      ("numpyro.optim.optax_to_numpyro", "py:function", "optimizers.html#$"),
    ],
  ),
}


def inventory_bytes(project: str, version: str, entries: list[tuple[str, str, str]]) -> bytes:
  header = (
    "# Sphinx inventory version 2\n"
    f"# Project: {project}\n"
    f"# Version: {version}\n"
    "# The remainder of this file is compressed using zlib.\n"
  ).encode()
  body = "".join(f"{name} {role} 1 {uri} -\n" for name, role, uri in sorted(entries))
  return header + zlib.compress(body.encode(), 9)


def main() -> None:
  HERE.mkdir(exist_ok=True)
  for key, (project, version, _base, entries) in PROJECTS.items():
    (HERE / f"{key}.inv").write_bytes(inventory_bytes(project, version, entries))
    print(f"{key}.inv: {len(entries)} objects")


if __name__ == "__main__":
  main()
