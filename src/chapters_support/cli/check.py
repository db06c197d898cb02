"""``chapters check``: execute chapters through the book's cache and report every derivation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from chapters_support.book import Book, BookError
from chapters_support.cli import options
from chapters_support.result import FAIL, PASS, format_seconds, results_from_outputs
from chapters_support.verdict import (
    _REL_TEXT,
    ChapterData,
    assess,
    coverage_text,
    describe_failure,
    step_coverage,
    steps_text,
    totals,
)

_STYLE = {PASS: "bold green", FAIL: "bold red", "unverified": "bold yellow"}
_STEP_STYLE = {
    "pass": "green",
    "fail": "bold red",
    "unsupported": "yellow",
    "unbound": "yellow",
    "excluded": "magenta",
    "defines": "dim",
    "condition": "dim",
}


def load_chapters(book: Book, names: tuple[str, ...]) -> list[Any]:
    from myst_nb.core.config import NbParserConfig
    from myst_parser.config.main import MdParserConfig

    from chapters_support.execution import read_chapter

    docnames = [book.resolve(n) for n in names] if names else book.docnames()
    md_config = MdParserConfig(enable_extensions=set(book.myst_extensions()))
    nb_config = NbParserConfig(execution_timeout=int(book.timeout) if book.timeout else -1)
    chapters = []
    for docname in docnames:
        source = book.source(docname)
        if source is None:
            raise BookError(f"{docname}: listed in _toc.yml but no {docname}.md or .ipynb exists")
        chapter = read_chapter(source, docname, md_config, nb_config)
        if chapter is not None:
            chapters.append(chapter)
    return chapters


def progress_bar(console: Console, what: str, *, disable: bool = False) -> Progress:
    """The bar the commands show while kernels run: what, done/total, the last one, the time."""
    return Progress(
        TextColumn(f"[bold]{what}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=disable,
    )


def run_chapters(
    book: Book,
    chapters: list[Any],
    *,
    cache: Path,
    jobs: int | None,
    force: bool,
    require_cache: bool,
    console: Console,
    kernels_per_gpu: int | None = None,
) -> Any:
    """Execute what is not cached, with a progress bar; returns the ExecutionReport. One
    executor at a time per cache: a second command or build on the same book waits."""
    from chapters_support.execution.gpus import per_gpu
    from chapters_support.execution.lock import cache_lock

    try:
        per_device = kernels_per_gpu or per_gpu(
            int(book.sphinx_config.get("chapters_kernels_per_gpu", 1))
        )
    except ValueError as error:
        raise click.ClickException(str(error)) from None
    with cache_lock(cache, lambda line: console.print(f"[yellow]{line}[/]")):
        return _run_chapters(book, chapters, cache, jobs, force, require_cache, console, per_device)


def _run_chapters(
    book: Book,
    chapters: list[Any],
    cache: Path,
    jobs: int | None,
    force: bool,
    require_cache: bool,
    console: Console,
    kernels_per_gpu: int,
) -> Any:
    from chapters_support.execution import CacheWriteError, execute, plan
    from chapters_support.execution.health import UnreadableCache, ensure_readable
    from chapters_support.execution.interrupt import Interrupted
    from chapters_support.execution.shards import load_durations
    from chapters_support.execution.warm import from_config

    try:
        note = ensure_readable(cache, rebuild=not require_cache)
    except UnreadableCache as error:
        raise click.ClickException(str(error)) from None
    if note:
        console.print(f"[yellow]{note}[/]")
    planned = plan(chapters, cache, force=force)
    todo = planned[0]
    with progress_bar(console, "executing", disable=not todo) as progress:
        task = progress.add_task("", total=len(todo))

        def started(chapter: Any, reason: str) -> None:
            console.print(f"executing [bold]{chapter.docname}[/] ({reason})")

        def done(outcome: Any) -> None:
            progress.update(task, advance=1, description=outcome.chapter.docname)
            if not outcome.succeeded:
                console.print(
                    f"[red]{outcome.chapter.docname} failed:[/] "
                    f"{describe_failure(outcome.failure.to_json())}"
                )

        warm, preload = from_config(book.sphinx_config)
        try:
            report = execute(
                chapters,
                cache,
                jobs=jobs,
                force=force,
                require_cache=require_cache,
                on_start=started,
                on_done=done,
                durations=load_durations(book.root),
                planned=planned,
                warm=warm,
                preload=preload,
                kernels_per_gpu=kernels_per_gpu,
            )
        except Interrupted as stopped:
            progress.stop()
            console.print(f"[bold red]{stopped}[/]")
            raise click.exceptions.Exit(stopped.exit_code) from None
        except CacheWriteError as error:
            progress.stop()
            raise click.ClickException(str(error)) from None
    if report.kernels:
        console.print(report.kernels)
    if report.devices:
        from chapters_support.execution.gpus import describe

        console.print(describe(report.devices, kernels_per_gpu))
    return report


def chapter_data(book: Book, chapters: list[Any], report: Any, cache: Path) -> list[ChapterData]:
    from chapters_support.derivations import find_derivations
    from chapters_support.execution import cached_notebook

    executed = {o.chapter.docname: o for o in report.executed}
    out = []
    for chapter in chapters:
        outcome = executed.get(chapter.docname)
        notebook = outcome.notebook if outcome is not None else cached_notebook(cache, chapter)
        outputs = [
            o
            for cell in (notebook.cells if notebook else [])
            if cell.cell_type == "code"
            for o in cell.get("outputs", [])
        ]
        out.append(
            ChapterData(
                chapter=chapter.docname,
                source=chapter.path.relative_to(book.root).as_posix(),
                title=chapter.docname,
                derivations=find_derivations(chapter.path, book.myst_extensions()),
                results=[r.to_json() for r in results_from_outputs(outputs)],
                failure=outcome.failure.to_json() if outcome and outcome.failure else None,
                seconds=outcome.seconds if outcome else None,
            )
        )
    return out


@click.command("check")
@click.argument("chapters", nargs=-1)
@options.book
@options.cache
@options.jobs
@options.kernels_per_gpu
@options.force
@click.option(
    "--require-cache",
    is_flag=True,
    envvar="CHAPTERS_REQUIRE_CACHE",
    help="Fail instead of executing a chapter that is not cached.",
)
@click.option(
    "--steps",
    "show_steps",
    is_flag=True,
    help="List every step of every derivation (each relation of its maths) with its verdict.",
)
def command(
    chapters: tuple[str, ...],
    book_dir: str,
    cache: Path | None,
    jobs: int | None,
    kernels_per_gpu: int | None,
    force: bool,
    require_cache: bool,
    show_steps: bool,
) -> None:
    """Execute CHAPTERS (default: every chapter of the book) and check every derivation.

    Exits 1 when a derivation FAILs, is UNVERIFIED, or a chapter does not execute.
    """
    from chapters_support.execution import RequireCacheError

    console = Console(highlight=False, soft_wrap=True)
    try:
        book = Book.load(book_dir)
        selected = load_chapters(book, chapters)
        cache_path = cache.resolve() if cache else book.cache_path
        report = run_chapters(
            book,
            selected,
            cache=cache_path,
            jobs=jobs,
            force=force,
            require_cache=require_cache,
            console=console,
            kernels_per_gpu=kernels_per_gpu,
        )
    except (BookError, RequireCacheError) as error:
        raise click.ClickException(str(error)) from None
    data = chapter_data(book, selected, report, cache_path)
    rows, problems = assess(data)

    table = Table(title="Derivations", title_justify="left")
    for column in ("Chapter", "Derivation", "Status", "Steps", "Error / tolerance", "Seconds"):
        table.add_column(
            column, justify="right" if column in {"Seconds", "Error / tolerance"} else "left"
        )
    for row in rows:
        ratio = f"{row['ratio']:.2g}" if row.get("ratio") is not None else "–"
        seconds = format_seconds(row["seconds"]) if row.get("seconds") is not None else "–"
        table.add_row(
            row["source"],
            row["label"],
            f"[{_STYLE[row['status']]}]{row['status'].upper()}[/]",
            steps_text(row),
            ratio,
            seconds,
        )
    console.print(table)
    if show_steps:
        for row in rows:
            print_steps(console, row)
    count = totals(rows)
    console.print(
        f"{count['total']} derivations: [green]{count[PASS]} pass[/], [red]{count[FAIL]} fail[/], "
        f"[yellow]{count['unverified']} unverified[/]; executed {len(report.executed)} chapter(s), "
        f"{len(report.cached)} from the cache"
    )
    coverage = step_coverage(rows)
    if coverage["claims"]:
        console.print(coverage_text(coverage))
    if problems:
        console.print(f"[bold red]{len(problems)} problem(s):[/]")
        for problem in problems:
            console.print(f"  {problem}", markup=False)
        raise click.exceptions.Exit(1)


def print_steps(console: Console, row: dict[str, Any]) -> None:
    """One derivation's steps: every relation of its maths, in reading order."""
    items = row.get("step_results") or []
    if not items:
        claims = (row.get("steps") or {}).get("claims", 0)
        console.print(f"[bold]{row['label']}[/]: no step check ({claims} claims in its text)")
        return
    table = Table(title=f"{row['source']} {row['label']}", title_justify="left", show_lines=False)
    for column in ("#", "Line", "", "Step", "Verdict", "Detail"):
        table.add_column(column, overflow="fold")
    for item in items:
        rel = _REL_TEXT.get(item["rel"], item["rel"])
        style = _STEP_STYLE.get(item["status"], "")
        table.add_row(
            str(item["step"]),
            str(item["line"]),
            "display" if item["display"] else "inline",
            f"{item['lhs']} {rel} {item['rhs']}",
            f"[{style}]{item['status'].upper()}[/]",
            item.get("detail") or "",
        )
    console.print(table)
