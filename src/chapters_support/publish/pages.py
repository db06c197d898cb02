"""What every page of a published version shows (the Sphinx side of publishing).

- the version switcher (pydata-sphinx-theme's, which sphinx-book-theme inherits), fed by
  ``versions.json`` beside the version folders;
- in the theme's download menu: this version's PDF of the whole book (in place of "print
  this page") and the chapter's executed notebook;
- a launch menu with Open in Colab, which opens that notebook from the site branch of
  ``repository.url`` (Colab's ``/github/ORG/REPO/blob/BRANCH/PATH`` form);
- in that notebook, a first cell that makes it run outside the repository (Colab, a fresh
  environment): it installs this package at the commit that built the page, with only the
  dependencies a chapter's kernel needs (the ``kernel`` extra: never Jupyter itself, which
  Colab brings its own of), and finds the chapter's source, which the step checks read,
  beside the notebook or on the site branch.

All of it only when ``chapters_version`` is set, as ``chapters publish`` does, because only
a published version has a PDF beside its pages and a notebook on the site branch.
"""

from __future__ import annotations

import contextlib
import json
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


INSTALL_TAG = "chapters-install"
_RAW = "https://raw.githubusercontent.com"


def _commit(folder: Path) -> str | None:
    """The commit of the checkout that holds ``folder`` (None outside git)."""
    import subprocess

    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.SubprocessError):
        return None
    sha = done.stdout.strip()
    return sha if done.returncode == 0 and re.fullmatch(r"[0-9a-f]{40}", sha) else None


def kernel_requirements() -> list[str]:
    """What a chapter's kernel needs besides this package: its ``kernel`` extra."""
    from importlib.metadata import PackageNotFoundError, requires

    try:
        declared = requires("chapters-support") or []
    except PackageNotFoundError:  # pragma: no cover - the extension runs from the package
        return []
    found = []
    for requirement in declared:
        spec, _, marker = requirement.partition(";")
        if re.search(r"""extra\s*==\s*["']kernel["']""", marker):
            found.append(spec.strip())
    return found


def install_spec(app: Sphinx) -> str:
    """The pip requirement that installs the package that built this page."""
    from importlib.metadata import version

    if app.config.chapters_install_spec:
        return str(app.config.chapters_install_spec)
    repository = str(app.config.html_theme_options.get("repository_url") or "").rstrip("/")
    ref = _commit(Path(app.srcdir)) or app.config.chapters_version
    if repository and ref:
        return f"chapters-support @ git+{repository}@{ref}"
    return f"chapters-support=={version('chapters-support')}"


def install_cell(app: Sphinx, pagename: str) -> Any:
    """The first cell of a published chapter notebook (see the module's docstring)."""
    from importlib.metadata import version

    import nbformat

    source_name = f"{PurePosixPath(pagename).name}.md"
    repository = str(app.config.html_theme_options.get("repository_url") or "")
    match = _GITHUB.match(repository.strip())
    url = (
        f"{_RAW}/{match.group(1)}/{match.group(2)}/{app.config.chapters_site_branch}/"
        f"{app.config.chapters_version}/_sources/{pagename}.md"
        if match
        else ""
    )
    requirements = ", ".join(json.dumps(r) for r in kernel_requirements())
    fetch = (
        f'urllib.request.urlretrieve({json.dumps(url)}, os.environ["CHAPTERS_SOURCE"])'
        if url
        else "raise RuntimeError("
        + json.dumps(f"put {source_name} beside this notebook: the step checks read it")
        + ")"
    )
    code = f"""\
# Outside the course's repository (Colab, a fresh environment) run this cell first: it
# installs the checks at the version that built this page, and only what a chapter's kernel
# needs (not Jupyter, which the notebook already runs in), then finds the chapter's source,
# which the step checks read. Where both are there already it does nothing.
import os
import subprocess
import sys
import urllib.request

try:
    from chapters_support import __version__ as installed
except ImportError:
    installed = None
if installed != {json.dumps(version("chapters-support"))}:
    pip = [sys.executable, "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, "--no-deps", {json.dumps(install_spec(app))}], check=True)
    subprocess.run([*pip, {requirements}], check=True)
if not os.path.isfile(os.environ.get("CHAPTERS_SOURCE", "")):
    os.environ["CHAPTERS_SOURCE"] = os.path.abspath({json.dumps(source_name)})
    if not os.path.isfile(os.environ["CHAPTERS_SOURCE"]):
        {fetch}
"""
    cell = nbformat.v4.new_code_cell(code)
    cell.metadata["tags"] = [INSTALL_TAG]
    return cell


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
    first = install_cell(app, pagename)
    if notebook.cells and "id" not in notebook.cells[0]:
        del first["id"]  # a notebook of nbformat < 4.5 has no cell ids
    notebook.cells.insert(0, first)
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


# each edition's name in its own language, as a reader looks for it
LANGUAGE_NAMES = {"en": "English", "zh_CN": "中文", "zh_TW": "中文（繁體）"}


def edition_url(prefix: str, pagename: str) -> str:
    """The same page in the edition whose root is ``prefix`` (relative to this edition's)."""
    up = "../" * pagename.count("/")
    return f"{up}{prefix.rstrip('/')}/{pagename}.html" if prefix else f"{up}{pagename}.html"


def add_language_links(
    app: Sphinx, pagename: str, templatename: str, context: dict[str, Any], doctree: Any
) -> None:
    """``html-page-context``: every page links to itself in each other edition (a header
    button, and ``<link rel="alternate" hreflang>`` for search engines and readers)."""
    editions = dict(app.config.chapters_editions or {})
    if not editions:
        return
    buttons = context.get("header_buttons")
    links = []
    for language, prefix in sorted(editions.items()):
        url = edition_url(prefix, pagename)
        name = LANGUAGE_NAMES.get(language, language)
        hreflang = language.replace("_", "-")
        links.append(f'<link rel="alternate" hreflang="{hreflang}" href="{url}" />')
        if isinstance(buttons, list):
            buttons.insert(
                0,
                {
                    "type": "link",
                    "text": name,
                    "tooltip": name,
                    "icon": "fas fa-language",
                    "url": url,
                    "label": f"edition-{language}-button",
                },
            )
    context["metatags"] = context.get("metatags", "") + "\n".join(links) + "\n"


def register(app: Sphinx) -> None:
    app.connect("config-inited", configure_version)
    # sphinx-book-theme: prep_header_buttons at 500, its buttons at 501
    app.connect("html-page-context", publish_notebook, priority=500)
    app.connect("html-page-context", add_version_buttons, priority=510)
    app.connect("html-page-context", add_language_links, priority=511)
