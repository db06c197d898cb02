"""``chapters i18n``: the translation catalogues of the book's other editions.

``status`` lists each catalogue's messages: translated, out of date (the English changed since:
``#, fuzzy``, shown in English until updated) and untranslated, and every translation that
changed what must not change (maths, code, link and role targets: exit 1). ``update``
extracts the English messages (Sphinx's gettext builder, from the English build's cache, so
nothing executes) and merges them into the catalogues with sphinx-intl, which marks a message
whose English changed as fuzzy.
"""

from __future__ import annotations

import subprocess

import click
from rich.console import Console
from rich.table import Table

from chapters_support.book import Book, BookError
from chapters_support.cli import options

DEFAULT_LANGUAGE = "zh_CN"


@click.group("i18n")
def command() -> None:
    """The book's translations: their status, and new English messages merged in."""


@command.command("status")
@options.book
@click.option("--language", "-l", default=DEFAULT_LANGUAGE, show_default=True)
def status(book_dir: str, language: str) -> int:
    """How far each catalogue is translated; exit 1 when a translation changes maths, code or
    a link's target, or does not use the glossary's term (locales/LANG/glossary.yml)."""
    from chapters_support import catalogues

    try:
        book = Book.load(book_dir)
    except BookError as error:
        raise click.ClickException(str(error)) from None
    found = catalogues.catalogues(book.root, language)
    if not found:
        raise click.ClickException(
            f"no catalogues for {language} in {book.root / catalogues.LOCALES}; "
            "`chapters i18n update` makes them"
        )
    console = Console(highlight=False, soft_wrap=True)
    table = Table(title=f"Translations ({language})", title_justify="left")
    for column in ("catalogue", "messages", "translated", "out of date", "untranslated"):
        table.add_column(column, justify="left" if column == "catalogue" else "right")
    terms = catalogues.glossary(book.root, language)
    rows = [catalogues.read(path, terms) for path in found]
    for row in rows:
        table.add_row(
            row.catalogue,
            str(row.messages),
            str(row.translated),
            str(row.fuzzy),
            str(row.untranslated),
        )
    total = sum(r.messages for r in rows)
    done = sum(r.translated for r in rows)
    stale = sum(r.fuzzy for r in rows)
    console.print(table)
    console.print(
        f"{done}/{total} messages translated ({done / total:.0%}), {stale} out of date"
        if total
        else "no messages"
    )
    for row in rows:
        if row.fuzzy:
            console.print(
                f"[yellow]{row.catalogue}: {row.fuzzy} translation(s) out of date "
                "(the English changed since; shown in English until updated)[/]"
            )
    problems = [p for r in rows for p in r.problems]
    for problem in problems:
        console.print(f"[red]{problem}[/]")
    if problems:
        console.print(
            f"[bold red]{len(problems)} problem(s): translations that change what must not "
            "change, or leave the glossary[/]"
        )
        return 1
    return 0


@command.command("update")
@options.book
@click.option("--language", "-l", default=DEFAULT_LANGUAGE, show_default=True)
def update(book_dir: str, language: str) -> int:
    """Extract the English messages and merge them into the catalogues (a message whose English
    changed is marked out of date)."""
    from sphinx_intl import basic

    from chapters_support import catalogues
    from chapters_support.cli.build import jupyter_book, write_edition_config
    from chapters_support.editions import ENGLISH

    try:
        book = Book.load(book_dir)
    except BookError as error:
        raise click.ClickException(str(error)) from None
    out = book.root / "_build" / "gettext"
    # the English edition's config: it reads the English build's cache (--path-output would
    # otherwise move the cache under gettext/, and every chapter would execute again)
    config = write_edition_config(book, ENGLISH, [])
    done = subprocess.run(
        [
            *jupyter_book(),
            "build",
            str(book.root),
            "--config",
            str(config),
            "--path-output",
            str(out),
            "--builder",
            "custom",
            "--custom-builder",
            "gettext",
        ],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise click.ClickException(
            "extracting the English messages failed:\n" + (done.stdout + done.stderr)[-3000:]
        )
    pot = out / "_build" / "gettext"
    # no wrapping: a message per line (Chinese has no spaces to wrap at, and a wrap inside a
    # role such as {cite} splits it for every reader of the diff)
    basic.update(str(book.root / catalogues.LOCALES), str(pot), (language,), line_width=0)
    click.echo(f"catalogues of {language} updated from {len(list(pot.glob('*.pot')))} templates")
    return 0
