"""What every page of a published version shows (the Sphinx side of publishing).

- the version switcher (pydata-sphinx-theme's, which sphinx-book-theme inherits), fed by
  ``versions.json`` beside the version folders;
- in the theme's download menu: this version's PDF of the whole book (in place of "print
  this page") and the chapter's executed notebook;
- a launch menu with Open in Colab, which opens that notebook from the site branch of
  ``repository.url`` (Colab's ``/github/ORG/REPO/blob/BRANCH/PATH`` form).

All of it only when ``chapters_version`` is set, as ``chapters publish`` does, because only
a published version has a PDF beside its pages and a notebook on the site branch.
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path, PurePosixPath
from typing import Any

from sphinx.application import Sphinx

COLAB = "https://colab.research.google.com/github"
_GITHUB = re.compile(r"^https?://github\.com/([^/]+)/([^/#?]+?)(?:\.git)?/?$")


def pdf_name(app: Sphinx) -> str:
    """The book's PDF as the LaTeX builder names it (``latex.latex_documents.targetname``)."""
    documents = getattr(app.config, "latex_documents", None) or []
    if documents and len(documents[0]) > 1:
        return PurePosixPath(str(documents[0][1])).with_suffix(".pdf").name
    return f"{app.config.project or 'book'}.pdf"


def colab_url(repository_url: str, branch: str, path: str) -> str | None:
    """Colab's URL for a notebook at ``path`` on ``branch`` of a GitHub repository."""
    match = _GITHUB.match(repository_url.strip())
    if not match:
        return None
    org, repo = match.groups()
    return f"{COLAB}/{org}/{repo}/blob/{branch}/{path}"


def configure_version(app: Sphinx, config: Any) -> None:
    """``config-inited``: a published build gets the switcher and its release on the title page."""
    version = config.chapters_version
    if not version:
        return
    if not config.release:
        config.release = version
    if not config.version:
        config.version = version
    options = dict(config.html_theme_options)
    options.setdefault(
        "switcher", {"json_url": config.chapters_switcher_json, "version_match": version}
    )
    # the JSON lives beside the version folders, not in the book: the theme cannot check it
    options.setdefault("check_switcher", False)
    end = options.get("article_header_end", ["article-header-buttons.html"])
    if isinstance(end, str):
        end = [item.strip() for item in end.split(",") if item.strip()]
    if not any(str(item).startswith("version-switcher") for item in end):
        options["article_header_end"] = ["version-switcher.html", *end]
    config.html_theme_options = options


def _executed_notebook(app: Sphinx, pagename: str) -> str | None:
    """The chapter as a notebook with its outputs, or None for a page that is not one.

    MyST-NB writes each notebook to ``<outdir>/../jupyter_execute/<docname>.ipynb``, but
    in cache mode without the outputs (it merges them into a copy); they are merged here
    from the same jupyter-cache. Cell ids are numbered in order: reading a MyST file draws
    random ids, which would change the published notebook on every build.
    """
    path = Path(app.outdir).parent / "jupyter_execute" / f"{pagename}.ipynb"
    if not path.is_file():
        return None
    import nbformat

    notebook = nbformat.read(path, as_version=nbformat.NO_CONVERT)
    config = getattr(app.env, "mystnb_config", None)
    cache_path = Path(config.execution_cache_path) if config is not None else None
    if cache_path is not None and (cache_path / "global.db").is_file():
        from jupyter_cache import get_cache

        cache = get_cache(str(cache_path))
        # not in the cache (the chapter failed): the notebook without outputs
        with contextlib.suppress(KeyError):
            _, notebook = cache.merge_match_into_notebook(notebook)
    for index, cell in enumerate(notebook.cells):
        if "id" in cell:
            cell["id"] = f"cell-{index}"
    return nbformat.writes(notebook)


def publish_notebook(
    app: Sphinx, pagename: str, templatename: str, context: dict[str, Any], doctree: Any
) -> None:
    """``html-page-context``, before the theme's header buttons: offer the executed notebook.

    Written to ``_sources/<page>.ipynb``, where sphinx-book-theme's download menu links it.
    """
    # only a published version has the notebook on its site branch (and a Colab link to it);
    # building it from the cache for every local build would cost every author time
    if app.builder.format != "html" or doctree is None or not app.config.chapters_version:
        return
    notebook = _executed_notebook(app, pagename)
    if notebook is None:
        return
    target = Path(app.outdir) / "_sources" / f"{pagename}.ipynb"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(notebook, encoding="utf-8")
    context["ipynb_source"] = f"{pagename}.ipynb"


def _group(buttons: list[dict[str, Any]], label: str) -> dict[str, Any] | None:
    return next((b for b in buttons if b.get("type") == "group" and b.get("label") == label), None)


def add_version_buttons(
    app: Sphinx, pagename: str, templatename: str, context: dict[str, Any], doctree: Any
) -> None:
    """``html-page-context``, after the theme built its header buttons (priority 501)."""
    version = app.config.chapters_version
    buttons = context.get("header_buttons")
    if not version or not isinstance(buttons, list) or doctree is None:
        return
    pathto = context["pathto"]
    download = _group(buttons, "download-buttons")
    if download is not None:
        pdf = {
            "type": "link",
            "url": pathto(pdf_name(app), 1),
            "text": "Book .pdf",
            "tooltip": f"Download the whole book ({version}) as PDF",
            "icon": "fas fa-file-pdf",
            "label": "download-pdf-button",
        }
        entries = download["buttons"]
        # the theme's own ".pdf" only prints this page; the book's PDF replaces it
        entries[:] = [b for b in entries if b.get("label") != "download-pdf-button"] + [pdf]
    repository = str(app.config.html_theme_options.get("repository_url") or "")
    if context.get("ipynb_source") and repository:
        url = colab_url(
            repository,
            app.config.chapters_site_branch,
            f"{version}/_sources/{context['ipynb_source']}",
        )
        if url is None:
            return
        colab = {
            "type": "link",
            "text": "Colab",
            "tooltip": "Open this chapter's notebook in Colab",
            "icon": "_static/images/logo_colab.png",
            "url": url,
            "label": "launch-colab-button",
        }
        launch = _group(buttons, "launch-buttons")
        if launch is None:
            launch = {
                "type": "group",
                "tooltip": "Launch interactive content",
                "icon": "fas fa-rocket",
                "buttons": [],
                "label": "launch-buttons",
            }
            buttons.insert(0, launch)
        # the theme's own Colab button (launch_buttons.colab_url) would open the .md source
        launch["buttons"][:] = [b for b in launch["buttons"] if b.get("text") != "Colab"]
        launch["buttons"].append(colab)


def register(app: Sphinx) -> None:
    app.connect("config-inited", configure_version)
    # sphinx-book-theme: prep_header_buttons at 500, its buttons at 501
    app.connect("html-page-context", publish_notebook, priority=500)
    app.connect("html-page-context", add_version_buttons, priority=510)
