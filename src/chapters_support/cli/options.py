"""Options several subcommands share, declared once."""

from __future__ import annotations

from pathlib import Path

import click

book = click.option(
    "--book", "book_dir", default="book", show_default=True, help="The book's folder."
)
cache = click.option(
    "--cache", type=click.Path(path_type=Path), help="jupyter-cache folder [default: the book's]."
)
jobs = click.option(
    "-j", "--jobs", type=int, default=None, help="Kernels at once [default: one per core]."
)
force = click.option("--force", is_flag=True, help="Re-execute even chapters whose code is cached.")
kernels_per_gpu = click.option(
    "--kernels-per-gpu",
    type=click.IntRange(min=1),
    default=None,
    help="On GPUs, kernels at once on each device [default: CHAPTERS_KERNELS_PER_GPU, else "
    "chapters_kernels_per_gpu in _config.yml, else 1].",
)
