"""One executor at a time per jupyter-cache: a second build (or ``chapters check``) on the
same book waits for the first to finish executing, then finds its chapters cached.

Without it, two builds execute the same chapters at once and write the same records
("database is locked", a record overwritten). The lock is ``filelock``'s (an ``flock`` on
Linux, released by the kernel if its holder dies), on a file beside the cache folder, which
may itself be moved aside (``health.py``); the holder writes its pid beside it, so the one
that waits can say whom it waits for.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path


@contextlib.contextmanager
def cache_lock(cache_path: str | Path, announce: Callable[[str], None]) -> Iterator[None]:
    from filelock import FileLock, Timeout

    cache = Path(cache_path).absolute()
    cache.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(cache.parent / f"{cache.name}.lock"))
    owner = cache.parent / f"{cache.name}.lock.pid"
    try:
        lock.acquire(timeout=0)
    except Timeout:
        try:
            pid = owner.read_text(encoding="utf-8").strip()
        except OSError:
            pid = ""
        who = f" (pid {pid})" if pid.isdigit() else ""
        announce(f"another build{who} is executing chapters into {cache}; waiting for it to finish")
        lock.acquire()
    try:
        with contextlib.suppress(OSError):
            owner.write_text(str(os.getpid()), encoding="utf-8")
        yield
    finally:
        with contextlib.suppress(OSError):
            owner.unlink()
        lock.release()
