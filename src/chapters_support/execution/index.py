"""Which chapter sources are known to be in the cache, without parsing them again.

Asking jupyter-cache means reading the chapter as MyST-NB does (a Markdown parse) and
hashing its code; MyST-NB then parses it once more. This index remembers, per exact source
text (and the parser settings that shape a notebook), the cache key it had, so a build
that finds a chapter unchanged and still cached skips the extra parse. A stale entry costs
nothing: its cache key is looked up, and a miss falls back to the full read.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

INDEX_FILE = "chapters-index.json"


class SourceIndex:
    def __init__(self, cache_path: str | Path, salt: str) -> None:
        self.path = Path(cache_path) / INDEX_FILE
        self.salt = salt.encode("utf-8")
        try:
            self.entries: dict[str, str] = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            self.entries = {}
        self._cache: Any = None

    def key(self, source: Path) -> str:
        return hashlib.sha256(self.salt + b"\0" + source.read_bytes()).hexdigest()

    @property
    def cache(self) -> Any:
        if self._cache is None:
            from jupyter_cache import get_cache

            self._cache = get_cache(str(self.path.parent))
        return self._cache

    def is_cached(self, source: Path) -> bool:
        """The source's record is still the one remembered: a record written again since (a
        re-execution with the same code, after a maths edit) makes the source read anew."""
        remembered = self.entries.get(self.key(source))
        if remembered is None or not (self.path.parent / "global.db").is_file():
            return False
        hashkey, _, stamp = remembered.partition("#")[0].partition("@")
        from jupyter_cache.cache.db import NbCacheRecord

        try:
            record = NbCacheRecord.record_from_hashkey(hashkey, self.cache.db)
        except KeyError:
            return False
        return _stamp(record) == stamp

    def remember(self, source: Path, notebook: Any) -> None:
        """Record the cache key of a chapter that is now cached (read in full this build), and
        the digest of its code, so that a later build needs neither without parsing it."""
        from chapters_support.execution.notebooks import code_digest

        try:
            record = self.cache.match_cache_notebook(notebook)
        except KeyError:
            return
        entry = f"{record.hashkey}@{_stamp(record)}#{code_digest(notebook)}"
        self.entries[self.key(source)] = entry

    def code_digest(self, source: Path) -> str | None:
        """The code digest remembered with the source's entry (ask after :meth:`is_cached`)."""
        digest = self.entries.get(self.key(source), "").partition("#")[2]
        return digest or None

    def save(self) -> None:
        if self.path.parent.is_dir():
            self.path.write_text(
                json.dumps(self.entries, indent=1, sort_keys=True), encoding="utf-8"
            )


def _stamp(record: Any) -> str:
    # when the record was written: SQLite may give a rewritten record its old primary key
    return record.created.isoformat() if record.created else ""
