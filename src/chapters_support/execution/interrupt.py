"""Ctrl-C and SIGTERM during execution: stop within a second or two, lose nothing.

While chapters execute, SIGINT and SIGTERM only set a flag (:func:`stop_signals`); the loop
that collects finished chapters looks at it between results, so a signal never lands in the
middle of a cache write. Then the run stops in order: the chapters that finished are cached,
every kernel still running is killed (each registered in a :class:`KernelRegistry` by the
worker that started it, so plain kernels, in sessions of their own, are found too), the
workers are stopped, and :class:`Interrupted` says how many chapters were cached and how
many did not run. An interrupted chapter is never reported as a failure of its own.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(Exception):
    """The run was stopped by a signal; ``exit_code`` is the shell's 128 + signal number."""

    def __init__(
        self,
        signum: int,
        cached: int,
        not_run: int,
        failed: list[str],
        line: str | None = None,
    ) -> None:
        self.signum = signum
        self.cached = cached
        self.not_run = not_run
        self.failed = failed
        name = signal.Signals(signum).name
        if line is not None:  # a run that caches nothing says what it lost in its own words
            line = f"interrupted by {name}: {line}"
        else:
            line = (
                f"interrupted by {name}: {cached} chapter(s) cached, {not_run} not run "
                "(the next build executes only those)"
            )
        if failed:
            line += f"; failed before the interrupt: {', '.join(failed)}"
        super().__init__(line)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


@contextlib.contextmanager
def stop_signals() -> Iterator[list[int]]:
    """While inside: SIGINT and SIGTERM are recorded in the list yielded instead of raising
    (in the main thread only; elsewhere Python delivers no signals, and nothing changes)."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def record(signum: int, frame: object) -> None:
        received.append(signum)

    previous = {signum: signal.signal(signum, record) for signum in SIGNALS}
    try:
        yield received
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


class KernelRegistry:
    """A folder of the kernels running now, one empty file per kernel named by its pid
    (which is also its process group: jupyter_client and the fork server start each kernel
    in a session of its own)."""

    def __init__(self) -> None:
        self.path = Path(tempfile.mkdtemp(prefix="chapters-kernels-"))

    @staticmethod
    def register(folder: str | None, pid: int) -> None:
        if folder:
            with contextlib.suppress(OSError):
                Path(folder, str(pid)).touch()

    @staticmethod
    def forget(folder: str | None, pid: int) -> None:
        if folder:
            with contextlib.suppress(OSError):
                Path(folder, str(pid)).unlink()

    def kill_all(self) -> list[int]:
        """SIGKILL every registered kernel's process group; returns their pids."""
        from chapters_support.execution.forkserver import kill_group

        killed = []
        for entry in self.path.iterdir():
            if not entry.name.isdigit():
                continue
            if kill_group(int(entry.name)):
                killed.append(int(entry.name))
            entry.unlink(missing_ok=True)
        return killed

    def close(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
