"""A site that loads nothing from another host: MathJax from the site itself, no thebe.

Jupyter Book 1 pages load MathJax 3 from cdn.jsdelivr.net and carry sphinx-thebe's loader
for unpkg.com; offline, or behind a blocked CDN, the maths stays raw LaTeX. With
``chapters_offline`` (on by default) Sphinx's ``mathjax_path`` points at the MathJax bundle
vendored in ``_static/mathjax/`` (see its README) and sphinx-thebe's scripts, styles and
per-page config are left out: thebe would start kernels on mybinder.org, which a reader of
this book does not need (the Colab link opens the executed notebook instead).
"""

from __future__ import annotations

from typing import Any

from docutils import nodes
from sphinx.application import Sphinx

#: relative to the extension's _static folder, which Sphinx copies to the site's _static/
MATHJAX_PATH = "mathjax/tex-svg-full.js"

# what sphinx-thebe adds to every page (sphinx_thebe/__init__.py)
_THEBE_FILES = ("sphinx-thebe.js", "sphinx-thebe.css")
_THEBE_MARKERS = ("THEBE_JS_URL", "text/x-thebe-config", "kernelName =")


def _offline(app: Sphinx) -> bool:
    return bool(app.config.chapters_offline)


def use_local_mathjax(app: Sphinx, config: Any) -> None:
    """``config-inited``: serve MathJax from the site; one bundle, no fonts, no autoload."""
    if not config.chapters_offline:
        return
    config.mathjax_path = MATHJAX_PATH
    mathjax3 = config.mathjax3_config if isinstance(config.mathjax3_config, dict) else {}
    # one <defs> of glyph paths per page instead of one per equation: smaller, faster pages
    mathjax3.setdefault("svg", {}).setdefault("fontCache", "global")
    config.mathjax3_config = mathjax3


def _is_thebe(asset: Any) -> bool:
    filename = str(getattr(asset, "filename", "") or "")
    body = str(getattr(asset, "attributes", {}).get("body", "") or "")
    return filename.endswith(_THEBE_FILES) or any(m in body for m in _THEBE_MARKERS)


def drop_thebe_assets(
    app: Sphinx, pagename: str, templatename: str, context: dict[str, Any], doctree: Any
) -> None:
    """``html-page-context``: sphinx-thebe's loader names unpkg.com; leave it out."""
    if not _offline(app):
        return
    for key in ("script_files", "css_files"):
        assets = context.get(key)
        if isinstance(assets, list):
            # in place: Sphinx restores its own list after each page
            assets[:] = [a for a in assets if not _is_thebe(a)]


def drop_thebe_config(app: Sphinx, doctree: nodes.document, docname: str) -> None:
    """``doctree-resolved``, after sphinx-thebe: remove the raw thebe config it appended."""
    if not _offline(app):
        return
    for raw in list(doctree.findall(nodes.raw)):
        if raw.get("format") == "html" and any(m in raw.astext() for m in _THEBE_MARKERS):
            raw.parent.remove(raw)


def register(app: Sphinx) -> None:
    app.connect("config-inited", use_local_mathjax)
    app.connect("html-page-context", drop_thebe_assets)
    # sphinx-thebe appends its nodes at the default priority 500
    app.connect("doctree-resolved", drop_thebe_config, priority=600)
