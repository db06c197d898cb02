"""``chapters cache merge``: combine shard caches into the one the book reads."""

from __future__ import annotations

from pathlib import Path

import click


@click.group("cache")
def command() -> None:
    """Work with jupyter-caches of executed chapters."""


@command.command("merge")
@click.argument("sources", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--into",
    "target",
    required=True,
    type=click.Path(path_type=Path),
    help="The cache to merge into (created if missing).",
)
def merge(sources: tuple[Path, ...], target: Path) -> None:
    """Copy every executed notebook of SOURCES into the cache --into."""
    from chapters_support.execution.merge import merge_caches

    try:
        copied = merge_caches(sources, target)
    except FileNotFoundError as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"merged {copied} notebook(s) from {len(sources)} cache(s) into {target}")
