"""``chapters bench``: build-performance measurements on this machine, in one run."""

from __future__ import annotations

from pathlib import Path

import click

from chapters_support.book import Book, BookError
from chapters_support.cli import options


@click.command("bench")
@options.book
@click.option(
    "--json", "json_path", type=click.Path(path_type=Path), help="Also write the results as JSON."
)
@click.option("--no-pdf", is_flag=True, help="Skip the PDF measurement (needs TeX Live).")
def command(book_dir: str, json_path: Path | None, no_pdf: bool) -> None:
    """Cold builds (serial, parallel, warm kernels) against the compute lower bound, one
    chapter's kernel start, no-change rebuild, edits, extension overhead, PDF.

    Takes several minutes: every measurement is a real build of a private copy of the book.
    Prints a Markdown table; exits 1 when a target is not met.
    """
    from chapters_support import bench

    try:
        book = Book.load(book_dir)
    except BookError as error:
        raise click.ClickException(str(error)) from None
    results = bench.run(book.root, pdf=not no_pdf, log=lambda line: click.echo(line, err=True))
    if json_path is not None:
        bench.save(results, json_path)
    click.echo(bench.to_markdown(results))
    if not all(t["met"] for t in results["targets"]):
        raise click.exceptions.Exit(1)
