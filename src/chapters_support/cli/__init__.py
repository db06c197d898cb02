"""The ``chapters`` command. Each subcommand lives in its own module and is a function of
an argv list (``main(["check", "linear-regression"])``), so tests call it directly."""

from __future__ import annotations

import sys
from collections.abc import Sequence

import click

from chapters_support import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="chapters")
def cli() -> None:
    """Derive & Verify: execute chapters, check every derivation, scaffold new chapters."""


def _register() -> None:
    from chapters_support.cli import (
        bench,
        build,
        cache,
        check,
        execute,
        i18n,
        mutate,
        new,
        publish,
    )

    for module in (build, check, execute, cache, new, bench, publish, mutate, i18n):
        cli.add_command(module.command)


_register()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code instead of exiting (for tests and scripts)."""
    from chapters_support.startup import skip_slow_imports

    skip_slow_imports()
    try:
        code = cli.main(
            args=list(argv) if argv is not None else None,
            prog_name="chapters",
            standalone_mode=False,
        )
    except click.exceptions.Exit as done:
        return int(done.exit_code or 0)
    except click.ClickException as error:
        error.show()
        return error.exit_code
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        return 1
    # with standalone_mode=False click returns a raised Exit's code instead of exiting
    return code if isinstance(code, int) else 0


def entry() -> None:  # pragma: no cover - the console script
    sys.exit(main())
