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


FILE_RE = re.compile(r"^(\s*)- file:\s*(\S+?)(\.md|\.ipynb)?\s*$")
CAPTION_RE = re.compile(r"^\s*- caption:\s*(.+?)\s*$")


def _entry(line: str) -> tuple[str, str] | None:
    """``(indent, file)`` of a ``- file: NAME`` line of the table of contents, else None."""
    match = FILE_RE.match(line)
    return (match.group(1), match.group(2)) if match else None


def add_to_toc(toc_path: Path, slug: str, part: str | None = None) -> str | None:
    """List ``- file: SLUG`` in ``_toc.yml``, keeping its comments: in the part captioned
    ``part``, else in the last part with content (not the one that holds only the status
    page), else (no parts) before the status page; the status page stays last. Returns the
    caption of the part it went into (None for a book without parts)."""
    lines = toc_path.read_text(encoding="utf-8").splitlines(keepends=True)
    entries = {i: entry for i, line in enumerate(lines) if (entry := _entry(line))}
    parts: list[tuple[str, list[int]]] = []  # caption, its chapter entries (line indexes)
    for index, line in enumerate(lines):
        if heading := CAPTION_RE.match(line):
            parts.append((heading.group(1).strip("\"'"), []))
        elif index in entries and parts:
            chapters = parts[-1][1]
            # a chapter of the part, not a section of one
            if not chapters or entries[index][0] == entries[chapters[0]][0]:
                chapters.append(index)

    def is_status(index: int) -> bool:
        return entries[index][1] == "status"

    def insert(at: int, indent: str) -> None:
        lines.insert(at, f"{indent}- file: {slug}\n")
        toc_path.write_text("".join(lines), encoding="utf-8")

    if part is not None and not parts:
        raise BookError(f"{toc_path}: --part {part!r}, but the table of contents has no parts")
    if parts:
        if part is not None:
            chosen = [p for p in parts if p[0].casefold() == part.casefold()]
            if not chosen:
                captions = ", ".join(repr(p[0]) for p in parts)
                raise BookError(f"{toc_path}: no part captioned {part!r}; the parts are {captions}")
        else:
            chosen = [p for p in parts if any(not is_status(i) for i in p[1])]
            if not chosen:
                raise BookError(f"{toc_path}: no part with a chapter to add the chapter beside")
        caption, chapters = chosen[-1]
        content = [i for i in chapters if not is_status(i)]
        if content:
            at, indent = content[-1] + 1, entries[content[-1]][0]
            # past the last line of the entry above (its own keys are indented deeper)
            while at < len(lines) and _inside_entry(lines[at], indent):
                at += 1
        elif chapters:  # a part that holds only the status page: before it
            at, indent = chapters[0], entries[chapters[0]][0]
        else:
            raise BookError(f"{toc_path}: the part {caption!r} lists no chapters to add beside")
        insert(at, indent)
        return caption
    if not entries:
        raise BookError(f"{toc_path}: no '- file:' entries to add the chapter beside")
    status = [i for i in entries if is_status(i)]
    last = max(entries)
    insert(*((status[0], entries[status[0]][0]) if status else (last + 1, entries[last][0])))
    return None


def _inside_entry(line: str, indent: str) -> bool:
    """Whether ``line`` still belongs to the list entry at ``indent`` above it."""
    stripped = line.strip()
    if not stripped:
        return False
    return len(line) - len(line.lstrip()) > len(indent) and not stripped.startswith("#")


@click.command("new")
@click.argument("slug")
@click.option("--title", required=True, help="The chapter's title.")
@click.option(
    "--part",
    help="The caption of the part of _toc.yml to list it in (default: the last part with "
    "chapters; the status page stays last).",
)
@options.book
def command(slug: str, title: str, part: str | None, book_dir: str) -> None:
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
    toc = book.root / "_toc.yml"
    try:
        caption = add_to_toc(toc, slug, part)  # first: a wrong --part leaves no file behind
    except BookError as error:
        raise click.ClickException(str(error)) from None
    target.write_text(scaffold(slug, title), encoding="utf-8")
    where = f" (part {caption!r})" if caption else ""
    click.echo(f"created {target} and added it to {toc}{where}")
    click.echo(f"next: write the derivation, then run `chapters check {slug}`")
