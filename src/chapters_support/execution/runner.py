"""Execute chapters into the jupyter-cache the book reads: in parallel, one kernel each.

Kernels run in worker processes; only this (parent) process writes to the cache, so
parallel execution never meets SQLite's "database is locked". A chapter that fails is
reported with its cell and source line and is not cached; the others are cached at once,
so nothing that succeeded is lost.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import contextlib
import errno
import functools
import multiprocessing
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import nbformat

from chapters_support.execution.notebooks import (
    DEFAULT_EXECUTION_SECONDS,
    Chapter,
    merge_outputs,
)
from chapters_support.result import SOURCE_ENV, results_from_outputs

REQUIRE_CACHE_ENV = "CHAPTERS_REQUIRE_CACHE"


class RequireCacheError(RuntimeError):
    """Require-cache mode, and some chapters would have to execute."""

    def __init__(self, missing: Sequence[tuple[Chapter, str]]) -> None:
        names = ", ".join(f"{c.docname} ({why})" for c, why in missing)
        super().__init__(
            f"require-cache mode ({REQUIRE_CACHE_ENV}=1 or --require-cache): "
            f"{len(missing)} chapter(s) are not in the cache and would execute: {names}"
        )
        self.missing = [c.docname for c, _ in missing]


class CacheWriteError(RuntimeError):
    """A chapter that executed could not be written into the cache (a full disk, most often).

    The run stops: nothing after it could be cached either. What was cached before stays, the
    half-written record is removed, and the next build executes only what is missing."""

    def __init__(self, chapter: Chapter, cache_path: str | Path, error: BaseException) -> None:
        self.chapter = chapter
        self.cache_path = Path(cache_path)
        self.error = error
        self.cached = 0
        self.not_cached = 0

    def __str__(self) -> str:
        full = (isinstance(self.error, OSError) and self.error.errno == errno.ENOSPC) or (
            "disk is full" in str(self.error) or "No space left" in str(self.error)
        )
        what = "no space left on the device" if full else f"{type(self.error).__name__}"
        return (
            f"{self.chapter.path.name} executed but could not be written into the cache "
            f"{self.cache_path}: {what} ({_first_line(self.error)}). {self.cached} chapter(s) "
            f"cached are kept, {self.not_cached} are not cached; "
            + ("free some space, then " if full else "")
            + "build again: only those execute."
        )


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def _cache_errors() -> tuple[type[BaseException], ...]:
    """What a failed write into jupyter-cache raises: the notebook's file, or SQLite (through
    SQLAlchemy) for its record."""
    import sqlite3

    from sqlalchemy.exc import SQLAlchemyError

    return (OSError, sqlite3.Error, SQLAlchemyError)


def _drop_record(cache: Any, notebook: Any) -> None:
    """Remove the record of ``notebook``, whose file may be missing or half-written
    (jupyter-cache writes the record first, then the file, with no rollback)."""
    from jupyter_cache.cache.db import NbCacheRecord

    with contextlib.suppress(Exception):
        _, hashkey = cache.create_hashed_notebook(notebook)
        record = NbCacheRecord.record_from_hashkey(hashkey, cache.db)
        cache.remove_cache(record.pk)


def require_cache_from_env() -> bool:
    return os.environ.get(REQUIRE_CACHE_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


@dataclass
class Failure:
    """Why a chapter did not execute to the end."""

    kind: str  # cell_error | timeout | dead_kernel | error
    message: str
    cell_index: int | None = None
    line: int | None = None
    ename: str | None = None
    evalue: str | None = None
    traceback: str = ""

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Outcome:
    chapter: Chapter
    reason: str  # why it executed: cache miss reason, or "forced"
    seconds: float
    notebook: Any = None  # the executed notebook merged into the source, when it succeeded
    failure: Failure | None = None
    cell_seconds: float = 0.0  # the cells' own execution time, as the kernel stamped it
    startup_seconds: float | None = None  # kernel start request to the end of the first cell
    waited_seconds: float = 0.0  # of which waiting for the fork server's imports
    kernel: str = ""  # "forked", or "plain (why)"

    @property
    def succeeded(self) -> bool:
        return self.failure is None


@dataclass
class ExecutionReport:
    executed: list[Outcome] = field(default_factory=list)
    cached: list[Chapter] = field(default_factory=list)
    wall_seconds: float = 0.0
    jobs: int = 1
    kernels: str = ""  # which kernels ran the chapters, and why (warm.WarmKernels.describe)
    devices: list[str] = field(default_factory=list)  # the GPU of each worker (gpus.py)

    @property
    def failures(self) -> list[Outcome]:
        return [o for o in self.executed if not o.succeeded]


def _cache(path: str | Path) -> Any:
    from jupyter_cache import get_cache

    return get_cache(str(path))


def miss_reason(cache: Any, chapter: Chapter) -> str | None:
    """None when the chapter's code is in the cache and its cached step checks read the maths
    the chapter has now; else a sentence saying why it must execute.

    jupyter-cache keys a notebook on its code alone, so an edit of a derivation's LaTeX is a
    cache hit; each step check records a digest of the maths it read, and a digest that no
    longer matches the source makes the chapter run again (a prose edit keeps every digest).
    """
    try:
        record = cache.match_cache_notebook(chapter.notebook)
    except KeyError:
        record = None
    if record is not None:
        try:
            return stale_maths(cache, record, chapter)
        except (OSError, ValueError) as error:  # nbformat's NotJSONError is a ValueError
            _drop_record(cache, chapter.notebook)
            return f"its cached copy was unreadable ({_first_line(error)}), so it runs again"
    earlier = [r for r in cache.list_cache_records() if r.uri == str(chapter.path)]
    if earlier:
        return "code changed since the cached run"
    return "not in the cache yet"


def stale_maths(cache: Any, record: Any, chapter: Chapter) -> str | None:
    """Why the cached step results no longer match the chapter's maths, or None."""
    from chapters_support.maths import extract

    notebook = cache.get_cache_bundle(record.pk).nb
    checked: dict[str, str] = {}
    for cell in notebook.cells:
        for result in results_from_outputs(cell.get("outputs", [])):
            if result.kind == "steps" and result.digest:
                checked[result.label] = result.digest
    if not checked:
        return None
    try:
        text = chapter.path.read_text(encoding="utf-8")
    except OSError:
        return None
    now = {d.label: d.digest for d in extract.derivations(text)}
    changed = sorted(label for label, digest in checked.items() if now.get(label) != digest)
    if not changed:
        return None
    names = ", ".join(changed[:3]) + (f" and {len(changed) - 3} more" if len(changed) > 3 else "")
    return f"the maths of {names} changed since the cached run"


def recorded_seconds(cache: Any) -> dict[str, float]:
    """The last recorded execution time of each chapter (by file name) in the cache."""
    seconds: dict[str, float] = {}
    for record in sorted(cache.list_cache_records(), key=lambda r: r.created):
        value = (record.data or {}).get("execution_seconds")
        if value is not None:
            seconds[Path(record.uri).name] = float(value)
    return seconds


def execute_payload(payload: dict[str, Any]) -> dict[str, Any]:
    """Run one notebook in its own kernel (in a worker process)."""
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    notebook = nbformat.reads(payload["notebook"], as_version=4)
    state: dict[str, Any] = {"cell": None}

    def on_cell_start(cell: Any, cell_index: int) -> None:
        state["cell"] = cell_index

    from traitlets.config import Config

    from chapters_support.execution import warm

    scratch = tempfile.TemporaryDirectory(prefix="chapters-") if payload["in_temp"] else None
    cwd = scratch.name if scratch is not None else payload["cwd"]
    config = Config()
    config.WarmKernelManager.fork_server = payload.get("fork_server") or ""
    client = _worker_client()(
        notebook,
        timeout=payload["timeout"],
        kernel_name=payload["kernel_name"],
        kernel_manager_class=warm.WarmKernelManager,
        config=config,
        allow_errors=False,
        # the cells' timestamps (for the bench's lower bound); merge_outputs keeps the
        # source's metadata, so they never reach the cache key
        record_timing=True,
        resources={"metadata": {"path": cwd}},
        on_cell_start=on_cell_start,
    )
    del warm.LAUNCHES[:]
    warm.REGISTRY = payload.get("registry")
    from chapters_support.execution import gpus

    env = dict(payload["env"])
    if gpus.DEVICE is not None:  # this worker's GPU, and only it
        env["CUDA_VISIBLE_DEVICES"] = gpus.DEVICE
    start = time.perf_counter()
    failure: dict[str, Any] | None = None
    try:
        # kernel chatter (transport warnings, teardown tracebacks) is not the reader's business;
        # what went wrong reaches us through nbclient's exceptions
        client.execute(stderr=subprocess.DEVNULL, env=env)
    except CellTimeoutError as exc:
        failure = {
            "kind": "timeout",
            "message": f"it ran longer than the {payload['timeout']:g} s timeout",
            "traceback": str(exc),
        }
    except DeadKernelError as exc:
        failure = {
            "kind": "dead_kernel",
            "message": "killed by a signal (for example by the out-of-memory killer)",
            "traceback": str(exc),
        }
    except CellExecutionError as exc:
        failure = {
            "kind": "cell_error",
            "message": f"{exc.ename}: {exc.evalue}",
            "ename": exc.ename,
            "evalue": exc.evalue,
            "traceback": str(exc),
        }
    except Exception as exc:  # kernel failed to start, bad kernelspec, ...
        failure = {"kind": "error", "message": f"{type(exc).__name__}: {exc}", "traceback": ""}
    seconds = time.perf_counter() - start
    from chapters_support.execution.interrupt import KernelRegistry

    for launch in warm.LAUNCHES:  # shut down by now
        KernelRegistry.forget(warm.REGISTRY, launch["pid"])
    if scratch is not None:
        scratch.cleanup()
    if failure is not None:
        failure["cell_index"] = state["cell"]
    launched = warm.LAUNCHES[-1] if warm.LAUNCHES else None
    cells, startup = cell_timing(notebook, launched["at"] if launched else None)
    return {
        "notebook": nbformat.writes(notebook),
        "seconds": seconds,
        "failure": failure,
        "cell_seconds": cells,
        "startup_seconds": startup,
        "waited_seconds": launched["forked"] - launched["at"]
        if launched and launched.get("forked")
        else 0.0,
        "kernel": launched["kernel"] if launched else "not started",
    }


@functools.cache
def _worker_client() -> type:
    """nbclient's NotebookClient, without the SIGINT and SIGTERM handlers it installs around
    a kernel (which shut the kernel down, and leave Python's default Ctrl-C handler behind):
    a terminal's Ctrl-C reaches every process of the group, and in an execution worker it is
    for the run that started it, which caches what finished and stops the rest in order
    (interrupt.py), never for the chapter the worker is running."""
    from nbclient import NotebookClient

    class WorkerNotebookClient(NotebookClient):
        @contextlib.asynccontextmanager
        async def async_setup_kernel(self, **kwargs: Any) -> Any:
            async with super().async_setup_kernel(**kwargs):
                loop = asyncio.get_running_loop()
                for signum in (signal.SIGINT, signal.SIGTERM):
                    loop.remove_signal_handler(signum)
                    signal.signal(signum, signal.SIG_IGN)
                yield

    return WorkerNotebookClient


def cell_timing(notebook: Any, launched: float | None) -> tuple[float, float | None]:
    """The code cells' own execution time (nbclient's ``record_timing`` stamps, from the
    kernel's execute_input to its execute_reply), and the time from the kernel's launch
    (``launched``, epoch seconds) to the end of its first code cell: what a chapter pays
    before its first line of maths."""
    total, startup = 0.0, None
    for cell in notebook.cells:
        stamps = cell.get("metadata", {}).get("execution") or {}
        begin, end = stamps.get("iopub.execute_input"), stamps.get("shell.execute_reply")
        if cell.cell_type != "code" or not begin or not end:
            continue
        finished = _stamp(end)
        total += finished - _stamp(begin)
        if startup is None and launched is not None:
            startup = finished - launched
    return total, startup


def _stamp(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def kernel_env(workers: int) -> dict[str, str]:
    """The kernels' environment: share the cores instead of each kernel taking all of them.

    torch starts one thread per core in every kernel; with several kernels at once the
    threads fight over the cores (10x slower on 2 shared cores). Explicit settings win.
    """
    env = dict(os.environ)
    threads = str(max(1, default_jobs() // max(1, workers)))
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env.setdefault(name, threads)
    return env


def payload_for(
    chapter: Chapter,
    notebook: Any,
    env: Mapping[str, str],
    fork_server: str | None,
    registry: str | None = None,
) -> dict[str, Any]:
    """What a worker needs to run one notebook of ``chapter`` in its own kernel."""
    return {
        # the kernel's step checks read the chapter's own maths from its source
        "env": {**env, SOURCE_ENV: str(chapter.path)},
        "notebook": nbformat.writes(notebook),
        "timeout": chapter.timeout if chapter.timeout is not None else -1,
        "kernel_name": chapter.kernel_name,
        "cwd": str(chapter.path.parent),
        "in_temp": chapter.in_temp,
        "fork_server": fork_server,
        "registry": registry,
    }


@dataclass
class KernelPool:
    """Worker processes that each run one notebook at a time in a kernel of its own, the
    kernels' environment, the fork server they come from, and the register of the kernels
    running now (so that an interrupted run can kill them all)."""

    executor: cf.ProcessPoolExecutor
    env: dict[str, str]
    warm: Any  # warm.WarmKernels
    registry: Any  # interrupt.KernelRegistry

    def submit(self, chapter: Chapter, notebook: Any) -> cf.Future:
        payload = payload_for(
            chapter, notebook, self.env, self.warm.address, str(self.registry.path)
        )
        return self.executor.submit(execute_payload, payload)

    def stop(self) -> None:
        """Kill every kernel still running and the workers, without waiting for a chapter."""
        # the workers first: killed, they cannot notice their kernels dying, report it, or
        # run nbclient's exit handlers; then the kernels they leave
        for process in list((getattr(self.executor, "_processes", None) or {}).values()):
            with contextlib.suppress(OSError, AttributeError):
                process.kill()
        self.registry.kill_all()
        self.warm.close()  # the fork server kills what it forked
        self.executor.shutdown(wait=False, cancel_futures=True)


@contextlib.contextmanager
def kernel_pool(
    workers: int,
    notebooks: Sequence[Any],
    *,
    kernel_name: str,
    warm: tuple[bool, str] = (True, ""),
    preload: Sequence[str] | None = None,
    devices: Sequence[str] = (),
) -> Iterator[KernelPool]:
    """The :class:`KernelPool` for one run (the fork server started first: it imports while
    the workers start). ``preload`` defaults to what the notebooks' first code cells import;
    ``devices`` gives each worker's kernels one GPU (one entry per worker)."""
    from chapters_support.execution.gpus import slot_queue
    from chapters_support.execution.interrupt import KernelRegistry
    from chapters_support.execution.warm import WarmKernels, first_imports
    from chapters_support.startup import execution_worker

    env = kernel_env(workers)
    modules = list(preload) if preload else first_imports(notebooks)
    registry = KernelRegistry()
    try:
        with (
            WarmKernels(preload=modules, env=env, kernel_name=kernel_name, enabled=warm) as kernels,
            cf.ProcessPoolExecutor(
                max_workers=workers,
                mp_context=multiprocessing.get_context("spawn"),
                # before the first task imports nbformat; one device each, on GPUs
                initializer=execution_worker,
                initargs=(slot_queue(list(devices)) if devices else None,),
            ) as executor,
        ):
            yield KernelPool(executor, env, kernels, registry)
    finally:
        registry.kill_all()  # none, unless a worker died with its kernel running
        registry.close()


def plan(
    chapters: Iterable[Chapter], cache_path: str | Path, *, force: bool = False
) -> tuple[list[tuple[Chapter, str]], list[Chapter]]:
    """Split chapters into (to execute, with why) and (already cached)."""
    cache = _cache(cache_path)
    todo: list[tuple[Chapter, str]] = []
    hits: list[Chapter] = []
    for chapter in chapters:
        reason = "forced re-execution" if force else miss_reason(cache, chapter)
        if reason is None:
            hits.append(chapter)
        else:
            todo.append((chapter, reason))
    return todo, hits


def default_jobs() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def execute(
    chapters: Iterable[Chapter],
    cache_path: str | Path,
    *,
    jobs: int | None = None,
    force: bool = False,
    require_cache: bool = False,
    on_start: Callable[[Chapter, str], None] | None = None,
    on_done: Callable[[Outcome], None] | None = None,
    durations: Mapping[str, float] | None = None,
    planned: tuple[list[tuple[Chapter, str]], list[Chapter]] | None = None,
    warm: tuple[bool, str] = (True, ""),
    preload: Sequence[str] | None = None,
    kernels_per_gpu: int = 1,
) -> ExecutionReport:
    """Execute every chapter whose code is not cached, longest first, ``jobs`` at a time.

    ``planned`` is the caller's own ``plan(...)`` of the same chapters, so they are not
    hashed and looked up a second time. ``warm`` is ``warm.requested(...)``: whether the
    kernels are forked warm, and who turned that off; ``preload`` the server's modules.
    """
    started = time.perf_counter()
    todo, hits = planned if planned is not None else plan(chapters, cache_path, force=force)
    report = ExecutionReport(cached=hits, jobs=jobs or default_jobs())
    if not todo:
        return report
    if require_cache:
        raise RequireCacheError(todo)
    cache = _cache(cache_path)
    recorded = recorded_seconds(cache)

    def expected(chapter: Chapter) -> float:
        # the cache's own record, else the committed durations (a cold cache), else a guess
        if chapter.path.name in recorded:
            return recorded[chapter.path.name]
        return (durations or {}).get(chapter.docname, DEFAULT_EXECUTION_SECONDS)

    # longest first, so a long chapter does not start last (dynamic balancing by the pool)
    todo.sort(key=lambda item: (-expected(item[0]), item[0].docname))
    from chapters_support.execution.gpus import device_slots
    from chapters_support.execution.interrupt import Interrupted, stop_signals

    # on GPUs, at most kernels_per_gpu kernels share one device
    slots = device_slots(kernels_per_gpu)
    workers = max(1, min(report.jobs, len(todo), len(slots) or len(todo)))
    report.devices = slots[:workers]

    with (
        stop_signals() as received,
        kernel_pool(
            workers,
            [chapter.notebook for chapter, _ in todo],
            kernel_name=todo[0][0].kernel_name,
            warm=warm,
            preload=preload,
            devices=report.devices,
        ) as pool,
    ):
        futures = {}
        for chapter, reason in todo:
            if on_start is not None:
                on_start(chapter, reason)
            futures[pool.submit(chapter, chapter.notebook)] = (chapter, reason)
        pending = set(futures)
        # a signal only sets a flag, looked at between results: never inside a cache write
        while pending and not received:
            done, pending = cf.wait(pending, timeout=0.1, return_when=cf.FIRST_COMPLETED)
            for future in done:
                chapter, reason = futures[future]
                try:
                    outcome = _collect(cache, chapter, reason, future, cache_path)
                except CacheWriteError as error:
                    pool.stop()
                    error.cached = len(hits) + sum(o.succeeded for o in report.executed)
                    error.not_cached = len(todo) - sum(o.succeeded for o in report.executed)
                    raise
                report.executed.append(outcome)
                if on_done is not None:
                    on_done(outcome)
        if received:
            # what finished before the signal is kept; what ran is stopped, not blamed
            for future in [f for f in pending if f.done() and not f.cancelled()]:
                chapter, reason = futures[future]
                with contextlib.suppress(Exception):
                    if future.result()["failure"] is None:
                        report.executed.append(_collect(cache, chapter, reason, future, cache_path))
            pool.stop()
            succeeded = [o for o in report.executed if o.succeeded]
            raise Interrupted(
                received[0],
                cached=len(succeeded) + len(hits),
                not_run=len(todo) - len(report.executed),
                failed=[o.chapter.docname for o in report.executed if not o.succeeded],
            )
        report.kernels = pool.warm.describe()
    report.wall_seconds = time.perf_counter() - started
    return report


def _collect(
    cache: Any, chapter: Chapter, reason: str, future: cf.Future, cache_path: str | Path
) -> Outcome:
    from jupyter_cache.base import CacheBundleIn

    try:
        raw = future.result()
    except cf.process.BrokenProcessPool as exc:  # the worker process itself was killed
        failure = Failure(kind="dead_kernel", message=f"the execution worker died: {exc}")
        return Outcome(chapter, reason, 0.0, failure=failure)
    except Exception as exc:  # a bug on our side of the kernel, reported as such
        failure = Failure(kind="error", message=f"{type(exc).__name__}: {exc}")
        return Outcome(chapter, reason, 0.0, failure=failure)
    executed = nbformat.reads(raw["notebook"], as_version=4)
    merged = merge_outputs(chapter.notebook, executed)
    timing = {
        "cell_seconds": raw["cell_seconds"],
        "startup_seconds": raw["startup_seconds"],
        "waited_seconds": raw["waited_seconds"],
        "kernel": raw["kernel"],
    }
    if raw["failure"] is not None:
        failure = Failure(**raw["failure"])
        failure.line = chapter.line_of_cell(failure.cell_index)
        return Outcome(chapter, reason, raw["seconds"], notebook=merged, failure=failure, **timing)
    try:
        cache.cache_notebook_bundle(
            CacheBundleIn(
                merged, str(chapter.path), data={"execution_seconds": raw["seconds"], **timing}
            ),
            check_validity=False,
            overwrite=True,
        )
    except _cache_errors() as error:
        _drop_record(cache, merged)
        raise CacheWriteError(chapter, cache_path, error) from error
    return Outcome(chapter, reason, raw["seconds"], notebook=merged, **timing)


def cached_notebook(cache_path: str | Path, chapter: Chapter) -> Any | None:
    """The chapter merged with its cached outputs, or None when it is not cached."""
    cache = _cache(cache_path)
    try:
        _, notebook = cache.merge_match_into_notebook(chapter.notebook)
    except KeyError:
        return None
    return notebook
