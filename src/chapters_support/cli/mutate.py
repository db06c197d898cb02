"""``chapters mutate``: how many wrong versions of each check's derived code it kills."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from chapters_support.book import Book, BookError
from chapters_support.cli import options


def changed_chapters(book: Book, base: str) -> tuple[str, ...]:
    """The chapters whose source differs from ``base`` (a pull request's target)."""
    try:
        out = subprocess.run(
            ["git", "diff", "--name-only", base, "--", str(book.root)],
            capture_output=True,
            text=True,
            check=True,
            cwd=book.root,
        ).stdout
    except (OSError, subprocess.CalledProcessError) as error:
        raise click.ClickException(f"--changed {base}: git diff failed: {error}") from None
    top = subprocess.run(
        ["git", "rev-parse", "--show-toplevel"], capture_output=True, text=True, cwd=book.root
    ).stdout.strip()
    names = {(Path(top) / line).resolve() for line in out.splitlines() if line.strip()}
    return tuple(
        d for d in book.docnames() if (s := book.source(d)) is not None and s.resolve() in names
    )


@click.command("mutate")
@click.argument("chapters", nargs=-1)
@options.book
@options.jobs
@click.option("--cap", default=12, show_default=True, help="Mutants per derivation at most.")
@click.option(
    "--threshold",
    default=0.98,
    show_default=True,
    help="Exit 1 when the share of valid, non-equivalent mutants killed is below it.",
)
@click.option("--changed", metavar="BASE", help="Only the chapters that differ from git BASE.")
@click.option("--json", "json_path", type=click.Path(path_type=Path), help="Write the results.")
@click.option(
    "--record", is_flag=True, help="Keep the scores in the book's _mutation.json (status page)."
)
def command(
    chapters: tuple[str, ...],
    book_dir: str,
    jobs: int | None,
    cap: int,
    threshold: float,
    changed: str | None,
    json_path: Path | None,
    record: bool,
) -> int:
    """Mutate the derived code of each check and count the mutants its check kills.

    Each mutant (a constant scaled, + turned to -, a term dropped, a transpose removed, @
    swapped, a reduction over another dimension, a result negated) runs its chapter up to the
    check in a fresh kernel; the book's cache is never touched. KILLED: the check fails or
    refuses the input; SURVIVED: it passes; EQUIVALENT: the derived values are bit-identical
    (not counted); INVALID: a crash before the verdict (not counted).
    """
    from chapters_support import mutate
    from chapters_support.cli.check import load_chapters, progress_bar
    from chapters_support.execution.interrupt import Interrupted
    from chapters_support.execution.runner import default_jobs
    from chapters_support.execution.shards import load_durations
    from chapters_support.execution.warm import from_config

    console = Console(highlight=False)
    try:
        book = Book.load(book_dir)
        names = changed_chapters(book, changed) if changed else chapters
        if changed and not names:
            console.print(f"no chapter differs from {changed}: nothing to mutate")
            return 0
        selected = load_chapters(book, names)
    except BookError as error:
        raise click.ClickException(str(error)) from None
    durations = load_durations(book.root)
    warm, preload = from_config(book.sphinx_config)
    with progress_bar(console, "mutants") as progress:
        task = progress.add_task("", total=None)

        def planned(total: int) -> None:
            progress.update(task, total=total)

        def done(run: Any) -> None:
            progress.update(task, advance=1, description=run.chapter.docname)

        try:
            scores, notes = mutate.measure(
                selected,
                cap=cap,
                jobs=jobs or default_jobs(),
                expected=lambda c: durations.get(c.docname, 0.0),
                on_done=done,
                on_planned=planned,
                on_kernels=lambda line: console.print(line),
                warm=warm,
                preload=preload,
            )
        except mutate.MutateError as error:
            raise click.ClickException(str(error)) from None
        except Interrupted as stopped:
            progress.stop()
            console.print(f"[bold red]{stopped}[/]")
            raise click.exceptions.Exit(stopped.exit_code) from None
    _print(console, scores, notes)
    total = mutate.summary(scores)
    if json_path is not None:
        data = {"summary": total, "checks": [s.to_json() for s in scores], "notes": notes}
        json_path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    if record:
        written = mutate.record(book.root, scores, selected, cap)
        console.print(f"recorded in {written}")
    score = total["score"]
    if score is not None and score < threshold:
        console.print(f"[bold red]score {score:.1%} is below the threshold {threshold:.0%}[/]")
        return 1
    return 0


def _print(console: Console, scores: list[Any], notes: list[str]) -> None:
    from chapters_support import mutate

    for chapter in dict.fromkeys(s.chapter for s in scores):
        mine = [s for s in scores if s.chapter == chapter]
        table = Table(title=chapter, title_justify="left")
        for column in ("derivation", "mutants", "killed", "survived", "equivalent", "invalid"):
            table.add_column(column, justify="left" if column == "derivation" else "right")
        table.add_column("score", justify="right")
        for s in mine:
            value = s.score
            style = "green" if value is not None and value >= 0.9 else "bold red"
            table.add_row(
                s.label,
                f"{len(s.results)}/{s.candidates}",
                *(str(s.count(v)) for v in mutate.VERDICTS[:1]),
                str(s.count(mutate.SURVIVED)),
                str(s.count(mutate.EQUIVALENT)),
                str(s.count(mutate.INVALID)),
                f"[{style}]{value:.0%}[/]" if value is not None else "–",
            )
        console.print(table)
        for s in mine:
            for r in s.results:
                if r.verdict == mutate.SURVIVED:
                    where = f"{chapter}.md:{r.line}" if r.line else chapter
                    console.print(
                        f"  [bold red]survived[/] {s.label} ({r.mutant.operator}) {where}"
                    )
                    console.print(f"    - {escape(r.mutant.before)}")
                    console.print(f"    + {escape(r.mutant.after)}")
    for note in notes:
        console.print(f"[yellow]not measured:[/] {escape(note)}")
    total = mutate.summary(scores)
    score = f"{total['score']:.1%}" if total["score"] is not None else "–"
    console.print(
        f"mutants: {total['killed']} killed, {total['survived']} survived, "
        f"{total['equivalent']} equivalent, {total['invalid']} invalid over {total['checks']} "
        f"derivations: score {score}"
    )
