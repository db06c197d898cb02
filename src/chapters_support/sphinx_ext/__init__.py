"""The Sphinx / MyST-NB side of Derive & Verify. Never imports torch.

Enable with ``extensions = ["chapters_support.sphinx_ext"]`` (or, in a Jupyter Book,
``sphinx: extra_extensions: [chapters_support.sphinx_ext]``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sphinx.application import Sphinx

from chapters_support import __version__

STATIC = Path(__file__).parent / "_static"


def _add_static(app: Sphinx, config: Any) -> None:
    # at config-inited, so the pickled environment sees the same config next build
    # (changing it later would make Sphinx re-read every document every time)
    if str(STATIC) not in config.html_static_path:
        config.html_static_path.append(str(STATIC))
    app.add_css_file("chapters.css")


def setup(app: Sphinx) -> dict[str, Any]:
    from chapters_support.publish import pages
    from chapters_support.sphinx_ext import config, i18n, nodes, offline
    from chapters_support.sphinx_ext.collector import ChecksCollector
    from chapters_support.sphinx_ext.directives import (
        DerivationDirective,
        DerivationStatusDirective,
    )
    from chapters_support.sphinx_ext.execute import (
        execute_before_read,
        prepare_doctree,
        restore_signals,
    )
    from chapters_support.sphinx_ext.report import finish, status_docs_to_rewrite
    from chapters_support.sphinx_ext.transforms import (
        CheckBadgePostTransform,
        MathCommentsPostTransform,
        StatusTablePostTransform,
        reset_assessment,
    )

    app.setup_extension("myst_nb")
    config.register(app)
    nodes.register(app)
    app.add_directive("derivation", DerivationDirective)
    app.add_directive("derivation-status", DerivationStatusDirective)
    app.add_env_collector(ChecksCollector)
    app.add_post_transform(CheckBadgePostTransform)
    app.add_post_transform(StatusTablePostTransform)
    app.add_post_transform(MathCommentsPostTransform)
    app.connect("config-inited", _add_static)
    # after MyST-NB has built env.mystnb_config (builder-inited), before any document is read
    app.connect("env-before-read-docs", execute_before_read)
    app.connect("doctree-read", prepare_doctree, priority=400)
    app.connect("env-updated", status_docs_to_rewrite)
    app.connect("env-check-consistency", reset_assessment)
    app.connect("build-finished", finish)
    app.connect("build-finished", restore_signals, priority=100)  # before finish may exit
    offline.register(app)
    pages.register(app)
    i18n.register(app)
    return {
        "version": __version__,
        "env_version": 2,
        "parallel_read_safe": True,
        "parallel_write_safe": True,
    }
