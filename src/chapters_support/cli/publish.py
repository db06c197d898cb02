"""``chapters publish``: the HTML and the PDF of the current tree, as one version of the site."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("publish")
@click.option(
    "--version", "version", required=True, help="The version's name and folder, e.g. v1.2.0."
)
@click.option(
    "--site",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("site"),
    show_default=True,
    help="The site folder holding every published version.",
)
@click.option("--latest", is_flag=True, help="Make this the preferred version and latest/.")
@click.option("--force", is_flag=True, help="Replace this version if it is already published.")
@click.option("--book", "book_dir", default="book", show_default=True, help="The book's folder.")
@click.option(
    "--cache",
    type=click.Path(file_okay=False, path_type=Path),
    help="The jupyter-cache to build from, e.g. the GPU run's merged cache "
    "[default: the book's own].",
)
@click.option(
    "--base-url",
    default="..",
    show_default=True,
    help="The site's root as the switcher links it from a version's root: relative by "
    "default, or an absolute URL (needed when pages sit in sub-folders).",
)
@click.option(
    "--allow",
    multiple=True,
    metavar="REGEX",
    help="A leak-scan match that is not a leak (repeatable).",
)
def command(
    version: str,
    site: Path,
    latest: bool,
    force: bool,
    book_dir: str,
    cache: Path | None,
    base_url: str,
    allow: tuple[str, ...],
) -> None:
    """Build the book's HTML and PDF as VERSION into SITE/VERSION/ and update the site's
    versions.json, latest/ and index.html.

    Never changes another version's folder. Set CHAPTERS_REQUIRE_CACHE=1 to fail instead of
    executing a chapter the cache lacks. Fails, publishing nothing, when the leak scan finds
    a token, a home or root path or this machine's hostname in any file of the version.
    """
    from chapters_support.book import BookError
    from chapters_support.publish.site import PublishError, publish
    from chapters_support.publish.versions import VersionError

    try:
        publish(
            book_dir,
            version,
            site,
            latest=latest,
            force=force,
            cache=cache.resolve() if cache else None,
            base_url=base_url,
            allow=allow,
            log=click.echo,
        )
    except (BookError, PublishError, VersionError) as error:
        raise click.ClickException(str(error)) from None
