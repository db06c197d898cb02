"""A jupyter-cache that cannot be read is moved aside and rebuilt, announced, never a
traceback.

``global.db`` can be damaged (a disk that filled up, a copy cut short, a file that is not a
database at all) or written by a jupyter-cache whose tables differ from the installed one;
jupyter-cache then raises ``sqlite3.DatabaseError`` or SQLAlchemy's ``OperationalError`` from
deep inside a build. Before a build or ``chapters check`` uses the cache, it is probed here
(SQLite's own ``quick_check`` and every table jupyter-cache reads). An unreadable cache is
renamed (nothing is deleted: the outputs in it can still be recovered by hand) and every
chapter executes into a fresh one; where nothing may execute (require-cache mode, for
publishing a cache made elsewhere) the build stops with the file, the reason and the fix.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from pathlib import Path


class UnreadableCache(RuntimeError):
    """The cache cannot be read and may not be rebuilt here."""


def cache_problem(path: str | Path) -> str | None:
    """Why the jupyter-cache at ``path`` cannot be read, or None (also when there is none)."""
    folder = Path(path)
    database = folder / "global.db"
    if not database.exists():
        return None
    from jupyter_cache import __version__, get_cache
    from jupyter_cache.cache.db import get_version
    from sqlalchemy.exc import SQLAlchemyError

    try:
        with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
            verdict = db.execute("PRAGMA quick_check").fetchone()[0]
        if verdict != "ok":
            return f"SQLite's quick_check: {verdict}"
        cache = get_cache(str(folder))
        cache.list_cache_records()
        cache.list_project_records()
    except (sqlite3.Error, SQLAlchemyError, RuntimeError) as error:
        # jupyter-cache wraps SQLAlchemy's OperationalError in a RuntimeError of its own
        cause = error.__cause__ if isinstance(error, RuntimeError) else error
        if not isinstance(cause, (sqlite3.Error, SQLAlchemyError)):
            raise
        reason = str(getattr(cause, "orig", None) or cause).splitlines()[0]
        written = get_version(folder)
        if written and written != __version__:
            return f"written by jupyter-cache {written}, this is {__version__}: {reason}"
        return reason
    return None


def ensure_readable(path: str | Path, *, rebuild: bool) -> str | None:
    """Check the cache at ``path``; an unreadable one is moved aside when ``rebuild`` (returns
    the sentence to announce), else :class:`UnreadableCache` names the file and the fix."""
    problem = cache_problem(path)
    if problem is None:
        return None
    folder = Path(path)
    database = folder / "global.db"
    if not rebuild:
        raise UnreadableCache(
            f"{database} cannot be read ({problem}), and nothing may execute here "
            f"(require-cache mode): restore the cache, or remove {folder} and build without "
            "CHAPTERS_REQUIRE_CACHE to execute every chapter again"
        )
    aside = folder.with_name(f"{folder.name}.unreadable-{time.strftime('%Y%m%d-%H%M%S')}")
    n = 1
    while aside.exists():
        n += 1
        aside = aside.with_name(f"{aside.name.split('~')[0]}~{n}")
    folder.rename(aside)
    return (
        f"the jupyter-cache {database} could not be read ({problem}); moved it to {aside} "
        "and executing every chapter again"
    )
