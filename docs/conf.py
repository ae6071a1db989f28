"""Sphinx configuration for the optax_lr documentation.

Build the site (warnings are errors) and run every code example in it:

  sphinx-build -W --keep-going -b html docs docs/_build/html
  sphinx-build -W --keep-going -b doctest docs docs/_build/doctest
"""

import os
import re
import sys

import sphinx.util.logging

# The library is imported from the checkout, as the tests do (pytest's pythonpath = ["."]).
sys.path.insert(0, os.path.abspath(".."))
# Examples run on CPU in seconds; keep XLA off any accelerator and quiet.
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import optax_lr  # noqa: E402

project = "optax_lr"
author = "the optax_lr authors"
copyright = "2026, the optax_lr authors"
release = optax_lr.__version__
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.doctest",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
]

source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
# results/ and figures/ hold the benchmarks' generated tables; pages include them where they belong.
exclude_patterns = ["_build", "results", "figures", "Thumbs.db", ".DS_Store"]

myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3

# Google-style docstrings (the house style), rendered by napoleon.
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
autodoc_typehints = "description"
autodoc_member_order = "bysource"
autodoc_default_options = {"members": True, "show-inheritance": False}
autosummary_generate = True
add_module_names = False

# Every docstring example (``>>>``) and every {doctest}/{testcode} block runs with these names:
# the imports, and a small linear-regression problem (``params``, ``batch``, ``next_batch``,
# ``grads``, ``grad_fn``, ``loss_on_batch``, ``opt_state``) that the API reference's examples
# refer to. The API reference's index page states them for the reader.
doctest_global_setup = """
import jax
import jax.numpy as jnp
import numpy as np
import optax
import optax_lr

params = {"w": jnp.full((3, 2), 0.5), "b": jnp.zeros(2)}
batch = (jnp.ones((4, 3)), jnp.zeros((4, 2)))
next_batch = (jnp.full((4, 3), 0.5), jnp.ones((4, 2)))

def loss(params, batch):
  x, y = batch
  return jnp.mean((x @ params["w"] + params["b"] - y) ** 2)

grad_fn = jax.grad(loss)
grads = grad_fn(params, batch)
loss_on_batch = lambda p: loss(p, batch)
opt_state = optax_lr.adam_cam_hd(1e-3).init(params)
"""
doctest_test_doctest_blocks = "default"

# Docstring examples that do not run as written are shown but not run until the docstring is
# fixed; keys are the objects' ``__qualname__``s, values say what is wrong. Keep this empty: each
# entry is a docstring to fix in optax_lr/.
DOCSTRING_EXAMPLES_NOT_RUN: dict[str, str] = {}


# Docstrings must cite papers by title and authors, never by an internal file name, and must not
# point outside the repository: every such docstring is a build warning (an error under -W).
strict_docstring_citations = True
_FORBIDDEN_IN_DOCSTRINGS = re.compile(r"\bseed 00\d|ALGORITHMS\.md|\.\./shared", re.IGNORECASE)
_logger = sphinx.util.logging.getLogger(__name__)


def _check_citations(app, what, name, obj, options, lines):
  del what, obj, options
  if not app.config.strict_docstring_citations:
    return
  for line in lines:
    if _FORBIDDEN_IN_DOCSTRINGS.search(line):
      _logger.warning("docstring of %s cites by file name or points outside the repository: %r",
                      name, line.strip())


def _skip_incomplete_examples(app, what, name, obj, options, lines):
  del app, what, options
  if getattr(obj, "__qualname__", name.rsplit(".", 1)[-1]) not in DOCSTRING_EXAMPLES_NOT_RUN:
    return
  for i, line in enumerate(lines):
    if line.lstrip().startswith(">>> "):
      lines[i] = line + "  # doctest: +SKIP"


def setup(app):
  app.add_config_value("strict_docstring_citations", True, "env", bool)
  app.connect("autodoc-process-docstring", _check_citations)
  app.connect("autodoc-process-docstring", _skip_incomplete_examples)


html_theme = "furo"
html_title = "optax_lr"
html_static_path = []

nitpicky = False
