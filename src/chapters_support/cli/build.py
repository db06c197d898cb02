"""``chapters build``: the book in English and in each language it has catalogues for.

The English edition is ``jupyter-book build BOOK``, which executes what its cache lacks. Each
other edition is the same build with ``CHAPTERS_LANGUAGE`` (its language and catalogues) and
``CHAPTERS_CACHE`` (the English build's jupyter-cache: it executes nothing), written beside
the English one under ``_build/<language>/``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import click

from chapters_support.book import Book, BookError
from chapters_support.cli import options

ENGLISH = "en"


def languages(book: Book) -> list[str]:
    """The book's editions: English, then each language with catalogues, sorted."""
    from chapters_support.catalogues import LOCALES

    found = sorted(
        p.name for p in (book.root / LOCALES).glob("*") if any(p.glob("LC_MESSAGES/*.po"))
    )
    return [ENGLISH, *found]


def edition_output(book: Book, language: str) -> Path:
    """Where ``jupyter-book build`` writes the edition's HTML."""
    if language == ENGLISH:
        return book.root / "_build" / "html"
    return book.root / "_build" / language / "_build" / "html"


def _jupyter_book() -> str:
    beside = Path(sys.executable).with_name("jupyter-book")
    found = str(beside) if beside.is_file() else shutil.which("jupyter-book")
    if not found:
        raise click.ClickException("jupyter-book is not installed in this environment")
    return found


def build_edition(book: Book, language: str, extra: list[str]) -> int:
    from chapters_support.sphinx_ext.i18n import CACHE_ENV, LANGUAGE_ENV

    command = [_jupyter_book(), "build", str(book.root), *extra]
    env = dict(os.environ)
    if language != ENGLISH:
        command += ["--path-output", str(book.root / "_build" / language)]
        env[LANGUAGE_ENV] = language
        env[CACHE_ENV] = str(book.cache_path)
    click.echo(click.style(f"chapters build: the {language} edition", bold=True))
    return subprocess.run(command, env=env).returncode


@click.command("build")
@options.book
@click.option(
    "--language",
    "-l",
    "wanted",
    multiple=True,
    help="An edition to build (en, zh_CN, ...; repeat for several) [default: every edition].",
)
@click.option("--all", "fresh", is_flag=True, help="Re-read every page (jupyter-book --all).")
def command(book_dir: str, wanted: tuple[str, ...], fresh: bool) -> int:
    """Build every edition of the book: English first (it executes what the cache lacks), then
    each translation from the same cache (it executes nothing)."""
    try:
        book = Book.load(book_dir)
    except BookError as error:
        raise click.ClickException(str(error)) from None
    editions = languages(book)
    unknown = [lang for lang in wanted if lang not in editions]
    if unknown:
        raise click.ClickException(
            f"no edition {', '.join(unknown)}: this book has {', '.join(editions)} "
            f"(a language has an edition when {book.root.name}/locales/<language>/LC_MESSAGES "
            "holds its catalogues)"
        )
    chosen = [lang for lang in editions if not wanted or lang in wanted]
    extra = ["--all"] if fresh else []
    for language in chosen:
        code = build_edition(book, language, extra)
        if code != 0:
            click.echo(f"chapters build: the {language} edition failed (exit {code})", err=True)
            return code
    for language in chosen:
        click.echo(f"{language}: {edition_output(book, language) / 'index.html'}")
    return 0
