"""Building one version: the HTML and the PDF of the current tree, in a throw-away copy.

The book is copied (without its ``_build``) into a work folder and built there with
``jupyter-book build``, so a publish never reuses stale doctrees or a half-built LaTeX
folder. The version reaches the build as ``chapters_version`` in the copy's
``_config.yml``. Executed chapters come from the book's jupyter-cache or ``--cache DIR``
(lookups are by the code's hash, so the copy finds them); that cache is the only thing of
the author's the build may change, by adding what it had to execute, unless
``CHAPTERS_REQUIRE_CACHE=1`` forbids executing. ``SOURCE_DATE_EPOCH`` (default: the last
commit's time) fixes the dates Sphinx and TeX write, so one commit builds the same bytes.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from chapters_support.book import Book
from chapters_support.editions import ENGLISH, edition_config


class BuildError(RuntimeError):
    """A build of the book failed; the message ends with the tail of its output."""


@dataclass
class Built:
    html: Path
    pdf: Path
    tex: Path
    seconds_html: float
    seconds_pdf: float


def source_date_epoch(root: Path) -> str:
    """``SOURCE_DATE_EPOCH`` if set, else the time of the last commit, else the time of the
    newest file of the book: a time that only moves when the book does."""
    if os.environ.get("SOURCE_DATE_EPOCH", "").strip().isdigit():
        return os.environ["SOURCE_DATE_EPOCH"].strip()
    git = shutil.which("git")
    if git:
        proc = subprocess.run(
            [git, "log", "-1", "--format=%ct"], cwd=root, capture_output=True, text=True
        )
        if proc.returncode == 0 and proc.stdout.strip().isdigit():
            return proc.stdout.strip()
    sources = [p for p in root.rglob("*") if p.is_file() and "_build" not in p.parts]
    return str(int(max((p.stat().st_mtime for p in sources), default=time.time())))


def prepare(
    book: Book,
    work: Path,
    version: str,
    cache: Path | None,
    *,
    language: str = ENGLISH,
    links: dict[str, str] | None = None,
    switcher_json: str | None = None,
) -> Path:
    """Copy the book into ``work``, its config naming the version, the edition's language,
    its links to the other editions, and the cache to use."""
    if cache is not None and not (cache / "global.db").is_file():
        raise BuildError(f"{cache} is not a jupyter-cache (no global.db)")
    target = work / book.root.name
    shutil.copytree(
        book.root,
        target,
        ignore=shutil.ignore_patterns("_build", ".ipynb_checkpoints", "__pycache__"),
    )
    extra: dict[str, Any] = {"chapters_version": version}
    if switcher_json:
        extra["chapters_switcher_json"] = switcher_json
    # the book's own cache, or the given one: what executes (unless CHAPTERS_REQUIRE_CACHE=1
    # forbids it) is kept there for the next build, as in a plain `jupyter-book build`
    config = edition_config(
        dict(book.config),
        language,
        cache=cache if cache is not None else book.cache_path,
        links=links,
        sphinx_extra=extra,
    )
    (target / "_config.yml").write_text(
        "# written by `chapters publish` from the book's _config.yml\n"
        + yaml.safe_dump(config, sort_keys=False, allow_unicode=True),
        encoding="utf-8",
    )
    return target


def jupyter_book_command() -> list[str]:
    """The ``jupyter-book`` of this environment (beside its Python), else the one on PATH."""
    script = Path(sys.executable).parent / "jupyter-book"
    if script.is_file():
        return [str(script)]
    found = shutil.which("jupyter-book")
    if found:
        return [found]
    raise BuildError("jupyter-book is not installed in this environment")


def run_jupyter_book(root: Path, builder: str, env: dict[str, str], log: Path) -> float:
    """``jupyter-book build ROOT --builder BUILDER``; its output goes to ``log``."""
    start = time.perf_counter()
    with log.open("w", encoding="utf-8") as out:
        proc = subprocess.run(
            [*jupyter_book_command(), "build", str(root), "--builder", builder],
            cwd=root,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
        )
    if proc.returncode != 0:
        tail = "\n".join(log.read_text(encoding="utf-8", errors="replace").splitlines()[-60:])
        raise BuildError(f"the {builder} build failed (exit {proc.returncode}):\n{tail}")
    return time.perf_counter() - start


_MISSING = re.compile(r"Missing character: There is no (.+?) in font ([^/!\n]+)")


def missing_glyphs(latex_log: Path) -> list[str]:
    """Characters xelatex dropped because the font lacks them (it only logs this)."""
    if not latex_log.is_file():
        return []
    found = _MISSING.findall(latex_log.read_text(encoding="utf-8", errors="replace"))
    return sorted({f"{char} in {font.strip()}" for char, font in found})


def build_version(
    book: Book,
    work: Path,
    version: str,
    *,
    cache: Path | None,
    sde: str,
    language: str = ENGLISH,
    links: dict[str, str] | None = None,
    switcher_json: str | None = None,
) -> Built:
    """Build the HTML, then the PDF (from the same cache: nothing executes twice)."""
    root = prepare(
        book, work, version, cache, language=language, links=links, switcher_json=switcher_json
    )
    env = {
        **os.environ,
        "SOURCE_DATE_EPOCH": sde,
        # TeX's \today and the PDF's dates follow SOURCE_DATE_EPOCH only with this
        "FORCE_SOURCE_DATE": "1",
    }
    seconds_html = run_jupyter_book(root, "html", env, work / "html.log")
    seconds_pdf = run_jupyter_book(root, "pdflatex", env, work / "pdf.log")
    latex = root / "_build" / "latex"
    pdfs = sorted(latex.glob("*.pdf"))
    if len(pdfs) != 1:
        raise BuildError(f"expected one PDF in {latex}, found {[p.name for p in pdfs]}")
    pdf = pdfs[0]
    dropped = missing_glyphs(pdf.with_suffix(".log"))
    if dropped:
        raise BuildError(
            "the PDF lacks characters its fonts do not have (set latex_elements.fontpkg "
            "in _config.yml to fonts that have them): " + "; ".join(dropped)
        )
    return Built(
        html=root / "_build" / "html",
        pdf=pdf,
        tex=pdf.with_suffix(".tex"),
        seconds_html=seconds_html,
        seconds_pdf=seconds_pdf,
    )
