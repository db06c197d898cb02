"""The site's ``versions.json``, in pydata-sphinx-theme's version switcher format.

A list of ``{"name", "version", "url", "preferred"?}``, newest first; exactly one entry is
``preferred`` once any version was published with ``--latest`` (the last such one), and the
``latest/`` alias points at it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

VERSIONS_JSON = "versions.json"
ALIAS = "latest"
# a version becomes a folder name and a path segment in every URL of its pages
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_RESERVED = {ALIAS, "stable", VERSIONS_JSON, "index.html"}


class VersionError(ValueError):
    """A version name that cannot be a folder of the site."""


def check_version(version: str) -> str:
    if not _NAME.fullmatch(version) or version.endswith((".", ".json", ".html")):
        raise VersionError(
            f"unusable version {version!r}: letters, digits, '.', '_' and '-' only, "
            "starting with a letter or digit (it becomes a folder of the site)"
        )
    if version.lower() in _RESERVED:
        raise VersionError(f"{version!r} is reserved for the site itself; pick another name")
    return version


def read_versions(site: Path) -> list[dict[str, Any]]:
    """The entries already published (empty for a new site)."""
    path = site / VERSIONS_JSON
    if not path.is_file():
        return []
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, list) or not all(isinstance(e, dict) and "version" in e for e in data):
        raise ValueError(f"{path} is not a version switcher list of {{version, url, ...}}")
    return data


def _newest_first(versions: list[str]) -> list[str]:
    from packaging.version import InvalidVersion, Version

    numbered: list[tuple[Version, str]] = []
    named: list[str] = []
    for version in versions:
        try:
            numbered.append((Version(version.lstrip("vV")), version))
        except InvalidVersion:
            named.append(version)
    # names such as "dev" or "main" first, then numbered releases newest first
    return sorted(named) + [v for _, v in sorted(numbered, reverse=True)]


def preferred_version(entries: list[dict[str, Any]]) -> str | None:
    return next((str(e["version"]) for e in entries if e.get("preferred")), None)


def updated_versions(
    entries: list[dict[str, Any]], version: str, *, latest: bool, base_url: str = ".."
) -> list[dict[str, Any]]:
    """``entries`` with ``version`` added (or kept), re-sorted, urls rebuilt from ``base_url``.

    ``base_url`` is the site's root as seen from a version's root: ``..`` (relative, the
    default) or an absolute URL such as ``https://org.github.io/repo``.
    """
    versions = {str(e["version"]) for e in entries} | {version}
    preferred = version if latest else preferred_version(entries)
    base = base_url.rstrip("/")
    out = []
    for name in _newest_first(sorted(versions)):
        entry: dict[str, Any] = {
            "name": f"{name} (latest)" if name == preferred else name,
            "version": name,
            "url": f"{base}/{name}/",
        }
        if name == preferred:
            entry["preferred"] = True
        out.append(entry)
    return out


def write_versions(site: Path, entries: list[dict[str, Any]], into: Path | None = None) -> Path:
    """``versions.json`` (or ``into``, to be renamed into place)."""
    path = into or site / VERSIONS_JSON
    path.write_text(json.dumps(entries, indent=2) + "\n", encoding="utf-8")
    return path
