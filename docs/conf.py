"""Sphinx configuration for the gradest documentation.

Build (warnings are errors, every cross-reference must resolve):

    sphinx-build -W --keep-going -n -b html docs docs/_build/html

The notebooks live in ``notebooks/`` (where the tests and readers find them). Sphinx
reads only files under its source directory, so this file copies them into
``docs/notebooks/`` (ignored by git) before the build; MyST-NB then executes them and
renders their outputs. A copy is rewritten only when its content changed, so the
execution cache (``nb_execution_mode = "cache"``) stays valid between builds.
"""

from __future__ import annotations

import filecmp
import os
import shutil
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(DOCS))
# The notebook kernels import gradest and benchmarks/ from this checkout.
os.environ["PYTHONPATH"] = os.pathsep.join(
  [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
)
os.environ.setdefault("MPLBACKEND", "Agg")

from _ext.estimator_table import write_registry_table  # noqa: E402

import gradest  # noqa: E402


def _copy_notebooks() -> None:
  target = DOCS / "notebooks"
  target.mkdir(exist_ok=True)
  sources = sorted((ROOT / "notebooks").glob("*.ipynb"))
  for src in sources:
    dst = target / src.name
    if not dst.exists() or not filecmp.cmp(src, dst, shallow=False):
      shutil.copyfile(src, dst)
  names = {s.name for s in sources}
  for stale in target.glob("*.ipynb"):
    if stale.name not in names:
      stale.unlink()


_copy_notebooks()
write_registry_table(DOCS / "_generated" / "registry_table.md")

# -- Project -----------------------------------------------------------------------------

project = "gradest"
author = "the gradest authors"
copyright = "the gradest authors"
release = gradest.__version__
version = release

# -- General -----------------------------------------------------------------------------

extensions = [
  "sphinx.ext.autodoc",
  "sphinx.ext.autosummary",
  "sphinx.ext.napoleon",
  "sphinx.ext.mathjax",
  "sphinx.ext.intersphinx",
  "sphinx.ext.viewcode",
  "myst_nb",
]

source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
root_doc = "index"
templates_path = ["_templates"]
exclude_patterns = ["_build", "_generated", "Thumbs.db", ".DS_Store", "**.ipynb_checkpoints"]

nitpicky = True
# Names that are documentation conventions, not objects: the type alias for "any pytree"
# and the placeholders of the shape comments.
nitpick_ignore = [
  ("py:class", "PyTree"),
  ("py:class", "gradest._src.base.PyTree"),
  # The default ``param_dtype=jnp.float32`` of a Flax module's signature, a dtype object
  # that JAX documents on its jax.numpy page but not as a class of its own.
  ("py:class", "jax.numpy.float32"),
]

# -- Autodoc / autosummary / napoleon ----------------------------------------------------

autosummary_generate = True
autosummary_imported_members = True
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = True
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_use_ivar = True

# -- Intersphinx (works offline) ---------------------------------------------------------
# Each project lists its online inventory first and the local one in docs/_inventories/
# second (written by docs/make_inventories.py for exactly the names these pages use).
# Sphinx uses the first that loads, so an offline build resolves every reference.


def _inventory(name: str, url: str):
  return (url, (None, str(DOCS / "_inventories" / f"{name}.inv")))


intersphinx_mapping = {
  "python": _inventory("python", "https://docs.python.org/3"),
  "numpy": _inventory("numpy", "https://numpy.org/doc/stable"),
  "jax": _inventory("jax", "https://docs.jax.dev/en/latest"),
  "optax": _inventory("optax", "https://optax.readthedocs.io/en/latest"),
  "flax": _inventory("flax", "https://flax.readthedocs.io/en/latest"),
  "numpyro": _inventory("numpyro", "https://num.pyro.ai/en/stable"),
}
intersphinx_timeout = 5

# -- MyST / MyST-NB ----------------------------------------------------------------------

myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3
nb_execution_mode = "cache"
nb_execution_cache_path = str(DOCS / "_build" / ".jupyter_cache")
nb_execution_raise_on_error = True
nb_execution_timeout = 600
nb_execution_show_tb = True
nb_merge_streams = True

# -- Math ---------------------------------------------------------------------------------
# MathJax comes from Sphinx's default CDN. To read the pages offline, point
# GRADEST_DOCS_MATHJAX at a local MathJax 2 (Debian's libjs-mathjax:
# /usr/share/javascript/mathjax/MathJax.js); the pages then load it from that file.
if os.environ.get("GRADEST_DOCS_MATHJAX"):
  mathjax_path = (
    Path(os.environ["GRADEST_DOCS_MATHJAX"]).resolve().as_uri() + "?config=TeX-AMS-MML_HTMLorMML"
  )
  # MyST marks the page body "mathjax_ignore" and the math "math": MathJax 2's spelling.
  mathjax2_config = {
    "tex2jax": {
      "inlineMath": [["\\(", "\\)"]],
      "displayMath": [["\\[", "\\]"]],
      "processClass": "math|output_area|tex2jax_process|mathjax_process",
      "ignoreClass": "tex2jax_ignore|mathjax_ignore",
    }
  }

# -- HTML --------------------------------------------------------------------------------

html_theme = "sphinx_book_theme"
html_title = f"gradest {release}"
html_static_path = ["_static"]
html_theme_options = {
  "show_toc_level": 2,
  "navigation_with_keys": False,
}

# -- Type aliases in signatures ----------------------------------------------------------
# Annotations evaluate to the runtime classes, whose module paths are private
# (jaxlib._jax.Array, optax._src.base....) and absent from the projects' inventories, and
# gradest's modules write the alias ``Array`` for ``jax.Array``. Point those references
# at the public names before intersphinx resolves them.

_REFERENCE_ALIASES = {
  "Array": "jax.Array",
  "jax.jaxlib._jax.Array": "jax.Array",
  "jaxlib._jax.Array": "jax.Array",
  "jaxlib.xla_extension.ArrayImpl": "jax.Array",
  "jax.P": "jax.sharding.PartitionSpec",
  "optax._src.base.GradientTransformation": "optax.GradientTransformation",
  "optax._src.base.GradientTransformationExtraArgs": "optax.GradientTransformationExtraArgs",
}
# The VAE functions are documented in gradest.models.vae and re-exported by gradest.models.
_REFERENCE_ALIASES.update(
  {
    f"gradest.models.{name}": f"gradest.models.vae.{name}"
    for name in (
      "apply_mlp",
      "bernoulli_log_likelihood",
      "elbo",
      "gaussian_kl",
      "init_mlp",
      "iwae_bound",
    )
  }
)


def _alias_reference(app, env, node, contnode):
  target = node.get("reftarget")
  if node.get("refdomain") != "py" or target not in _REFERENCE_ALIASES:
    return None
  node["reftarget"] = _REFERENCE_ALIASES[target]
  if node["reftarget"].startswith("gradest."):  # a page of this site
    return env.domains["py"].resolve_xref(
      env, node["refdoc"], app.builder, node["reftype"], node["reftarget"], node, contnode
    )
  return None  # let intersphinx resolve the public name


def setup(app):
  app.connect("missing-reference", _alias_reference, priority=100)
