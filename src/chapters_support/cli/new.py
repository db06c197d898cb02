"""``chapters new SLUG --title``: scaffold a chapter and add it to the table of contents."""

from __future__ import annotations

import re
from importlib.resources import files
from pathlib import Path

import click

from chapters_support.book import Book, BookError
from chapters_support.cli import options

SLUG_RE = re.compile(r"^[a-z0-9][a-z0-9-]*$")


def scaffold(slug: str, title: str) -> str:
    template = (
        files("chapters_support.templates").joinpath("chapter.md").read_text(encoding="utf-8")
    )
    return template.format(slug=slug, title=title)


def add_to_toc(toc_path: Path, slug: str) -> None:
    """Insert ``- file: SLUG`` before the status page (kept last), keeping comments intact."""
    lines = toc_path.read_text(encoding="utf-8").splitlines(keepends=True)
    for index, line in enumerate(lines):
        match = re.match(r"^(\s*)- file:\s*status(\.md)?\s*$", line)
        if match:
            lines.insert(index, f"{match.group(1)}- file: {slug}\n")
            break
    else:
        entries = [i for i, line in enumerate(lines) if re.match(r"^\s*- file:", line)]
        if not entries:
            raise BookError(f"{toc_path}: no '- file:' entries to add the chapter beside")
        indent = re.match(r"^(\s*)", lines[entries[-1]]).group(1)
        lines.insert(entries[-1] + 1, f"{indent}- file: {slug}\n")
    toc_path.write_text("".join(lines), encoding="utf-8")


@click.command("new")
@click.argument("slug")
@click.option("--title", required=True, help="The chapter's title.")
@options.book
def command(slug: str, title: str, book_dir: str) -> None:
    """Create BOOK/SLUG.md from the chapter template and list it in _toc.yml."""
    if not SLUG_RE.match(slug):
        raise click.BadParameter(
            "use lower-case letters, digits and hyphens, e.g. 'batch-norm'", param_hint="SLUG"
        )
    try:
        book = Book.load(book_dir)
    except BookError as error:
        raise click.ClickException(str(error)) from None
    target = book.root / f"{slug}.md"
    if target.exists():
        raise click.ClickException(f"{target} already exists; pick another slug")
    if slug in book.docnames():
        raise click.ClickException(f"{slug!r} is already in {book.root / '_toc.yml'}")
    target.write_text(scaffold(slug, title), encoding="utf-8")
    add_to_toc(book.root / "_toc.yml", slug)
    click.echo(f"created {target} and added it to {book.root / '_toc.yml'}")
    click.echo(f"next: write the derivation, then run `chapters check {slug}`")
