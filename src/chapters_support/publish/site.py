"""The versioned site: one folder per version, ``versions.json``, ``latest/`` and ``index.html``.

::

    site/
      index.html          redirect to latest/ (or to the newest version)
      versions.json       the version switcher's list
      latest/             one redirect page per page of the preferred version
      v1.0/               a whole version: HTML, derive-and-verify.pdf, _sources/*.ipynb
      v1.1/

Publishing a version writes its own folder and the shared files above, never another
version's folder; it refuses to replace a published version without ``force``. A version is
assembled in a staging folder beside the others, scanned for leaks, and only then renamed
into place, and so are the shared files (versions.json, latest/, index.html): a failed
publish, a full disk included, leaves the site as it was.
"""

from __future__ import annotations

import datetime as _dt
import errno
import html
import json
import os
import posixpath
import re
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from chapters_support.book import Book
from chapters_support.editions import ENGLISH, languages, site_folder
from chapters_support.publish.build import (
    BuildError,
    Built,
    build_version,
    source_date_epoch,
)
from chapters_support.publish.scan import Leak, scan_tree
from chapters_support.publish.versions import (
    ALIAS,
    VERSIONS_JSON,
    check_version,
    preferred_version,
    read_versions,
    updated_versions,
    write_versions,
)

# never published: tracebacks with machine paths (reports/), Sphinx's incremental-build stamp
EXCLUDED = ("reports", ".buildinfo", ".doctrees")


class PublishError(RuntimeError):
    """Publishing stopped; the site is unchanged."""


class LeakError(PublishError):
    def __init__(self, leaks: Sequence[Leak]):
        self.leaks = list(leaks)
        shown = "\n".join(f"  {leak}" for leak in self.leaks[:40])
        more = f"\n  ... and {len(self.leaks) - 40} more" if len(self.leaks) > 40 else ""
        super().__init__(
            f"the leak scan found {len(self.leaks)} problem(s); nothing was published:\n"
            f"{shown}{more}"
        )


@dataclass
class Published:
    version: str
    path: Path
    pdf: Path
    pages: int
    preferred: str | None
    seconds_html: float
    seconds_pdf: float
    editions: list[str] = field(default_factory=lambda: [ENGLISH])


def redirect_page(url: str) -> str:
    """A page that sends the reader to ``url``, keeping the #anchor (for deep links)."""
    href = html.escape(url, quote=True)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>Redirecting to {href}</title>\n"
        f'<link rel="canonical" href="{href}">\n'
        f'<meta http-equiv="refresh" content="0; url={href}">\n'
        f"<script>location.replace({json.dumps(url)} + location.search + location.hash)"
        "</script>\n</head>\n"
        f'<body><p>Redirecting to <a href="{href}">{href}</a>.</p></body>\n</html>\n'
    )


def stage(built_html: Path, pdf: Path, staging: Path, sde: str) -> None:
    """The version's folder as it will be published, from the build output."""
    if staging.exists():
        shutil.rmtree(staging)
    shutil.copytree(built_html, staging, ignore=shutil.ignore_patterns(*EXCLUDED))
    shutil.copyfile(pdf, staging / pdf.name)
    report = staging / "derivations.json"
    if report.is_file():
        # the report's build time is the one volatile field: pin it to SOURCE_DATE_EPOCH
        data = json.loads(report.read_text(encoding="utf-8"))
        if "generated" in data:
            when = _dt.datetime.fromtimestamp(int(sde), tz=_dt.UTC)
            data["generated"] = when.isoformat(timespec="seconds")
            report.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")


def install(staging: Path, target: Path) -> None:
    """Rename ``staging`` to ``target``, replacing the old folder only once the new is ready."""
    old = target.with_name(f".{target.name}.old")
    if old.exists():
        shutil.rmtree(old)
    if target.exists():
        target.rename(old)
    staging.rename(target)
    if old.exists():
        shutil.rmtree(old)


def _pages(folder: Path) -> list[str]:
    """The HTML pages of a version; _static/ and the like hold template fragments."""
    return [
        page.relative_to(folder).as_posix()
        for page in sorted(folder.rglob("*.html"))
        if not any(part.startswith("_") for part in page.relative_to(folder).parts[:-1])
    ]


def write_alias(
    site: Path, version: str | None, *, pages_of: Path | None = None, into: Path | None = None
) -> None:
    """``latest/`` (or ``into``): for every page of the preferred version (found in
    ``pages_of``, by default its folder in ``site``), a page redirecting to it."""
    alias = into or site / ALIAS
    if alias.exists():
        shutil.rmtree(alias)
    if version is None:
        return
    source = pages_of or site / version
    for relative in _pages(source):
        depth = relative.count("/")
        url = posixpath.join(*([".."] * (depth + 1)), version, relative)
        out = alias / relative
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(redirect_page(url), encoding="utf-8")


def root_page(entries: list[dict]) -> str:
    """``index.html``: a redirect to ``latest/``, or to the newest version."""
    preferred = preferred_version(entries)
    return redirect_page(f"{ALIAS}/" if preferred else f"{entries[0]['version']}/")


def _no_space_message(error: OSError, site: Path, version: str) -> str:
    full, where, why = error.errno == errno.ENOSPC, error.filename, error.strerror
    if isinstance(error, shutil.Error) and error.args and error.args[0]:
        # copytree goes on after a failed file and raises the (src, dst, why) list at the end
        _, where, why = error.args[0][0]
        full = f"[Errno {errno.ENOSPC}]" in str(why)
    what = "no space left on the device" if full else f"{type(error).__name__}: {why}"
    return (
        f"{what} while writing version {version} into {site} ({where or error}); "
        "nothing was published: every published version, versions.json, latest/ and "
        "index.html are as they were" + ("; free some space and publish again" if full else "")
    )


def _depth(language: str) -> int:
    """How many folders below the version's root the edition lies (0 for English)."""
    return len([part for part in site_folder(language).split("/") if part])


def edition_links(language: str, editions: list[str]) -> dict[str, str]:
    """The root of each other edition, from this edition's root, in a published version."""
    up = "../" * _depth(language)
    return {
        other: f"{up}{site_folder(other)}/" if site_folder(other) else up or "./"
        for other in editions
        if other != language
    }


def switcher_json(language: str) -> str:
    """The version switcher's list, from the edition's root (one list per edition, so that the
    Chinese pages switch to the Chinese pages of another version)."""
    return "../" * (_depth(language) + 1) + edition_versions_json(language)


def edition_versions_json(language: str) -> str:
    return VERSIONS_JSON if language == ENGLISH else f"versions.{language}.json"


def edition_entries(
    entries: list[dict], language: str, site: Path, version: str, base_url: str
) -> list[dict]:
    """``versions.json``'s entries as the ``language`` edition's switcher needs them: each
    version's page in that language where the version has the edition, else its English."""
    folder = site_folder(language)
    relative = not re.match(r"^[a-z]+://", base_url)
    base = ("../" * _depth(language) + base_url.rstrip("/")) if relative else base_url.rstrip("/")
    out = []
    for entry in entries:
        name = str(entry["version"])
        has = name == version or (site / name / folder / "index.html").is_file()
        out.append({**entry, "url": f"{base}/{name}/{folder}/" if has else f"{base}/{name}/"})
    return out


def _replace_all(moves: list[tuple[Path, Path]]) -> None:
    """Put each staged file or folder in place: renames only, which need no space."""
    for staged, final in moves:
        if staged.is_dir():
            install(staged, final)
        else:
            os.replace(staged, final)


def publish(
    book_dir: str | Path,
    version: str,
    site: str | Path,
    *,
    latest: bool = False,
    force: bool = False,
    cache: Path | None = None,
    base_url: str = "..",
    allow: Sequence[str] = (),
    log: Callable[[str], None] = print,
) -> Published:
    """Build the book's HTML and PDF as ``version`` and add them to ``site``."""
    check_version(version)
    book = Book.load(book_dir)
    site = Path(site).resolve()
    target = site / version
    if target.exists() and not force:
        raise PublishError(f"{version} is already published in {site}; pass --force to replace it")
    entries = read_versions(site)
    site.mkdir(parents=True, exist_ok=True)
    staging = site / f".{version}.staging"
    editions = languages(book.root)
    sde = source_date_epoch(book.root)
    with tempfile.TemporaryDirectory(prefix="chapters-publish-") as tmp:
        work = Path(tmp)
        built: dict[str, Built] = {}
        for language in editions:
            log(
                f"building {version} (HTML, then PDF) from {book.root.name}/ in {work}"
                + (f": the {language} edition" if len(editions) > 1 else "")
            )
            try:
                built[language] = build_version(
                    book,
                    work / language,
                    version,
                    cache=cache,
                    sde=sde,
                    language=language,
                    links=edition_links(language, editions),
                    switcher_json=switcher_json(language),
                )
            except BuildError as error:
                raise PublishError(str(error)) from None
            done = built[language]
            log(f"built: HTML in {done.seconds_html:.0f} s, PDF in {done.seconds_pdf:.0f} s")
        try:
            english = built[ENGLISH]
            stage(english.html, english.pdf, staging, sde)
            for language in editions[1:]:
                folder = staging / site_folder(language)
                stage(built[language].html, built[language].pdf, folder, sde)
                # one verdict, one data file: the English edition's (titles in English)
                shutil.copyfile(staging / "derivations.json", folder / "derivations.json")
            leaks = scan_tree(staging, extra=[b.tex for b in built.values()], allow=allow)
            if leaks:
                raise LeakError(leaks)
        except OSError as error:
            shutil.rmtree(staging, ignore_errors=True)
            raise PublishError(_no_space_message(error, site, version)) from None
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    # everything that changes is written beside the site first; only renames follow, so a
    # full disk (or any failed write) leaves the site exactly as it was
    entries = updated_versions(entries, version, latest=latest, base_url=base_url)
    preferred = preferred_version(entries)
    alias = site / f".{ALIAS}.staging"
    staged = {
        **{
            f"versions-{language}": site / f".{edition_versions_json(language)}.staging"
            for language in editions[1:]
        },
        "versions": site / f".{VERSIONS_JSON}.staging",
        "index": site / ".index.html.staging",
        "nojekyll": site / ".nojekyll.staging",
    }
    try:
        write_alias(site, preferred, pages_of=staging if preferred == version else None, into=alias)
        write_versions(site, entries, into=staged["versions"])
        for language in editions[1:]:
            write_versions(
                site,
                edition_entries(entries, language, site, version, base_url),
                into=staged[f"versions-{language}"],
            )
        staged["index"].write_text(root_page(entries), encoding="utf-8")
        # GitHub Pages runs Jekyll otherwise, which drops _static/, _sources/ and _images/
        staged["nojekyll"].write_text("", encoding="utf-8")
    except OSError as error:
        for path in (staging, alias, *staged.values()):
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        raise PublishError(_no_space_message(error, site, version)) from None
    moves = [
        (staging, target),
        *[
            (staged[f"versions-{language}"], site / edition_versions_json(language))
            for language in editions[1:]
        ],
        (staged["versions"], site / VERSIONS_JSON),
        (staged["index"], site / "index.html"),
        (staged["nojekyll"], site / ".nojekyll"),
    ]
    if preferred is not None:
        moves.append((alias, site / ALIAS))
    else:
        shutil.rmtree(site / ALIAS, ignore_errors=True)
        shutil.rmtree(alias, ignore_errors=True)
    _replace_all(moves)
    pages = len(_pages(target))
    english = built[ENGLISH]
    others = "".join(
        f", the {language} edition in {site_folder(language)}/" for language in editions[1:]
    )
    log(
        f"published {version}: {pages} pages and {english.pdf.name} in {target}{others}"
        + (f"; {ALIAS}/ is {preferred}" if preferred else "")
    )
    return Published(
        version=version,
        path=target,
        pdf=target / english.pdf.name,
        pages=pages,
        preferred=preferred,
        seconds_html=sum(b.seconds_html for b in built.values()),
        seconds_pdf=sum(b.seconds_pdf for b in built.values()),
        editions=list(editions),
    )
