"""``chapters execute``: run chapters (or one shard of them) into a jupyter-cache."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console

from chapters_support.book import Book, BookError
from chapters_support.cli import options
from chapters_support.cli.check import load_chapters, run_chapters
from chapters_support.verdict import describe_failure


@click.command("execute")
@click.argument("chapters", nargs=-1)
@options.book
@options.cache
@click.option(
    "--shard",
    default=None,
    metavar="I/N",
    help="Execute only shard I of N, balanced by book/_durations.json.",
)
@options.jobs
@options.kernels_per_gpu
@options.force
@click.option(
    "--record-durations",
    is_flag=True,
    help="Write the measured times into book/_durations.json (for sharding).",
)
def command(
    chapters: tuple[str, ...],
    book_dir: str,
    cache: Path | None,
    shard: str | None,
    jobs: int | None,
    kernels_per_gpu: int | None,
    force: bool,
    record_durations: bool,
) -> None:
    """Execute CHAPTERS (default: all) into the cache; exits 1 if any chapter fails."""
    from chapters_support.execution.shards import (
        assign,
        load_durations,
        parse_shard,
        save_durations,
    )

    console = Console(highlight=False, soft_wrap=True)
    try:
        book = Book.load(book_dir)
        selected = load_chapters(book, chapters)
        if shard is not None:
            index, count = parse_shard(shard)
            durations = load_durations(book.root)
            mine = set(assign([c.docname for c in selected], durations, count)[index - 1])
            selected = [c for c in selected if c.docname in mine]
            console.print(
                f"shard {index}/{count}: {', '.join(c.docname for c in selected) or 'nothing'}"
            )
        cache_path = cache.resolve() if cache else book.cache_path
        report = run_chapters(
            book,
            selected,
            cache=cache_path,
            jobs=jobs,
            force=force,
            require_cache=False,
            console=console,
            kernels_per_gpu=kernels_per_gpu,
        )
    except (BookError, ValueError) as error:
        raise click.ClickException(str(error)) from None
    console.print(
        f"executed {len(report.executed)} chapter(s) in {report.wall_seconds:.1f} s, "
        f"{len(report.cached)} already cached, into {cache_path}"
    )
    if record_durations and report.executed:
        from chapters_support.checks.device import describe, device

        measured = {o.chapter.docname: o.seconds for o in report.executed if o.succeeded}
        path = save_durations(book.root, measured, describe(device(announce=False)))
        console.print(f"recorded {len(measured)} duration(s) in {path}")
    if report.failures:
        for outcome in report.failures:
            console.print(
                f"[red]{outcome.chapter.docname}:[/] {describe_failure(outcome.failure.to_json())}"
            )
        raise click.exceptions.Exit(1)
