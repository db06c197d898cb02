"""``chapters build``: the book in English and in each language it has catalogues for.

The English edition is ``jupyter-book build BOOK``, which executes what its cache lacks. Each
other edition is the same build with a configuration that names its language, catalogues and
search language and reads the English build's jupyter-cache (so it executes nothing), written
beside the English one under ``_build/<language>/``.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import click

from chapters_support.book import Book, BookError
from chapters_support.cli import options
from chapters_support.editions import ENGLISH, edition_config, languages


def edition_output(book: Book, language: str) -> Path:
    """Where ``jupyter-book build`` writes the edition's HTML."""
    if language == ENGLISH:
        return book.root / "_build" / "html"
    return book.root / "_build" / language / "_build" / "html"


def relative_root(book: Book, source: str, target: str) -> str:
    """The URL of edition ``target``'s root from edition ``source``'s root, in ``_build``."""
    import os.path

    here, there = edition_output(book, source), edition_output(book, target)
    return os.path.relpath(there, here).replace(os.sep, "/") + "/"


def write_edition_config(book: Book, language: str, editions: list[str]) -> Path:
    """The edition's ``_config.yml``, written beside its output."""
    import yaml

    links = {lang: relative_root(book, language, lang) for lang in editions if lang != language}
    config = edition_config(book.config, language, cache=book.cache_path, links=links)
    path = book.root / "_build" / language / "_config.yml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f"# written by `chapters build` from {book.root.name}/_config.yml: the {language} "
        "edition\n" + yaml.safe_dump(config, sort_keys=False, allow_unicode=True),
        encoding="utf-8",
    )
    return path


def jupyter_book() -> list[str]:
    from chapters_support.publish.build import BuildError, jupyter_book_command

    try:
        return jupyter_book_command()
    except BuildError as error:
        raise click.ClickException(str(error)) from None


def build_edition(book: Book, language: str, extra: list[str], editions: list[str]) -> int:
    command = [
        *jupyter_book(),
        "build",
        str(book.root),
        *extra,
        "--config",
        str(write_edition_config(book, language, editions)),
    ]
    if language != ENGLISH:
        command += ["--path-output", str(book.root / "_build" / language)]
    click.echo(click.style(f"chapters build: the {language} edition", bold=True))
    return subprocess.run(command).returncode


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
    editions = languages(book.root)
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
        code = build_edition(book, language, extra, editions)
        if code != 0:
            click.echo(f"chapters build: the {language} edition failed (exit {code})", err=True)
            return code
    for language in chosen:
        click.echo(f"{language}: {edition_output(book, language) / 'index.html'}")
    return 0
