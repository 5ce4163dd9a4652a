"""Sphinx configuration of the sb3-distill documentation (``make docs``: warnings are errors)."""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.abspath(".."))

from sb3_distill import __version__

project = "sb3-distill"
author = "sb3-distill contributors"
copyright = "2026, sb3-distill contributors"
version = release = __version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
    "sphinx.ext.intersphinx",
    "myst_parser",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}
# Names in type hints that Sphinx cannot resolve to a documented target are not errors.
nitpicky = False
intersphinx_mapping: dict[str, tuple[str, None]] = {}
html_theme = "sphinx_rtd_theme"
html_title = f"sb3-distill {release}"
exclude_patterns = ["_build", "README.md"]
suppress_warnings = ["myst.header"]

# The results page is generated from the committed benchmark results at every build.
sys.path.insert(0, os.path.dirname(__file__))
import results_page  # noqa: E402

results_page.write(__import__("pathlib").Path(__file__).parent / "results.md")
