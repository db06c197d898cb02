"""The book as the CLI sees it: its folder, its _config.yml, its table of contents.

Read with plain YAML so the ``chapters`` command does not pay for starting Sphinx.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class BookError(RuntimeError):
    """The book folder, its config or its table of contents is not usable."""


@dataclass
class Book:
    root: Path
    config: dict[str, Any] = field(default_factory=dict)
    toc: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, root: str | Path = "book") -> Book:
        path = Path(root)
        # the default also works from inside the book (the container's working directory)
        candidates = [path, path / "book", *([Path(".")] if str(root) == "book" else [])]
        path = next((c for c in candidates if (c / "_config.yml").is_file()), path)
        if not (path / "_config.yml").is_file():
            raise BookError(
                f"{path}: no _config.yml here; pass --book DIR (the folder of the book)"
            )
        config = yaml.safe_load((path / "_config.yml").read_text(encoding="utf-8")) or {}
        toc_path = path / "_toc.yml"
        toc = yaml.safe_load(toc_path.read_text(encoding="utf-8")) if toc_path.is_file() else {}
        return cls(root=path.resolve(), config=config, toc=toc or {})

    @property
    def cache_path(self) -> Path:
        """Where Jupyter Book keeps executed notebooks: ``execute.cache`` (which Jupyter Book
        resolves against the working directory), else ``_build/.jupyter_cache`` in the book."""
        cache = (self.config.get("execute") or {}).get("cache")
        if cache:
            return Path(cache).resolve()
        return self.root / "_build" / ".jupyter_cache"

    @property
    def timeout(self) -> float | None:
        value = (self.config.get("execute") or {}).get("timeout", 30)
        return None if value is None or value < 0 else float(value)

    @property
    def sphinx_config(self) -> dict[str, Any]:
        return ((self.config.get("sphinx") or {}).get("config")) or {}

    def myst_extensions(self) -> list[str]:
        return list((self.config.get("parse") or {}).get("myst_enable_extensions") or [])

    def docnames(self) -> list[str]:
        """Documents in table-of-contents order (root first)."""
        found: list[str] = []

        def walk(entry: Any) -> None:
            if isinstance(entry, dict):
                if "file" in entry:
                    found.append(_strip_suffix(str(entry["file"])))
                for key in ("root",):
                    if key in entry:
                        found.append(_strip_suffix(str(entry[key])))
                for key in ("chapters", "sections", "parts"):
                    for child in entry.get(key) or []:
                        walk(child)
            elif isinstance(entry, list):
                for child in entry:
                    walk(child)

        walk(self.toc)
        return list(dict.fromkeys(found))  # without repeats, in order

    def source(self, docname: str) -> Path | None:
        for suffix in (".md", ".ipynb"):
            candidate = self.root / f"{docname}{suffix}"
            if candidate.is_file():
                return candidate
        return None

    def resolve(self, name: str) -> str:
        """A chapter given as a docname, a file name or a path, as a docname."""
        path = Path(name)
        if path.suffix in {".md", ".ipynb"}:
            try:
                return _strip_suffix(path.resolve().relative_to(self.root).as_posix())
            except ValueError:
                return _strip_suffix(path.name)
        docname = _strip_suffix(name)
        if self.source(docname) is None:
            raise BookError(
                f"no chapter {name!r} in {self.root} (known: {', '.join(self.docnames())})"
            )
        return docname


def _strip_suffix(name: str) -> str:
    return re.sub(r"\.(md|ipynb)$", "", name)
