"""Sphinx configuration: the Markdown pages (MyST), and an API reference from the package's docstrings.

Build (CI does, with the wheel installed: .ci/release docs):

    python -m pip install -r docs/requirements.txt
    python -m sphinx -W --keep-going -b html docs docs/_build/html

autodoc imports `fastgrad`, so build where the package with its compiled modules imports (an installed wheel,
or the repository root after `pip install -e .`).
"""
from __future__ import annotations

import os
import re

import fastgrad

project = "fastgrad"
author = "the fastgrad authors"
release = fastgrad.__version__
version = ".".join(release.split(".")[:2])

extensions = ["myst_parser", "sphinx.ext.autodoc"]
source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "requirements.txt"]
myst_heading_anchors = 3

autodoc_default_options = {"members": True, "undoc-members": True, "show-inheritance": True}
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
# NOTE: docstrings are plain prose in which `x` means code (Markdown habit): render it as literal code.
default_role = "code"

html_theme = "alabaster"
html_title = f"fastgrad {release}"

# The pages in reading order; a page that does not exist yet (training.md is written later) is left out, so
# the toctree never names a missing document.
PAGES = ["tutorial", "training", "tensors", "semantics", "engine", "scaling", "testing", "api/index",
         "changelog"]
_here = os.path.dirname(os.path.abspath(__file__))


def _toctree(app, docname, source):
    if docname != "index":
        return
    present = [p for p in PAGES if os.path.exists(os.path.join(_here, p + ".md"))]
    source[0] = source[0].replace("<!-- pages -->", "\n".join(present))


# code spans (`x`, ``x``) are left alone; outside them, characters that reST would read as markup are escaped
_CODE = re.compile(r"(``.+?``|`[^`]+`)")
_MARKUP = re.compile(r"([*|])|(?<=\w)_(?=\W|$)")


def _plain_prose(app, what, name, obj, options, lines):
    """The docstrings are plain prose, not reST: `|x|` is an absolute value and `*args` is not emphasis."""
    for i, line in enumerate(lines):
        parts = _CODE.split(line)
        parts[::2] = [_MARKUP.sub(lambda m: "\\" + m.group(0), part) for part in parts[::2]]
        lines[i] = "".join(parts)


def setup(app):
    app.connect("source-read", _toctree)
    app.connect("autodoc-process-docstring", _plain_prose)
