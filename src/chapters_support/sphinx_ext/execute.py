"""Execute every cache-missing chapter, in parallel, before Sphinx reads them.

Jupyter Book 1 executes notebooks one by one while reading, and a failing or killed
notebook there is only a warning (or aborts the build). Here the extension runs the
chapters Sphinx is about to read in parallel kernels into MyST-NB's own jupyter-cache;
MyST-NB then finds every successful chapter cached and executes nothing. A chapter that
failed is excluded from MyST-NB's execution (it would only fail again) and carries an
:class:`ExecutionFailureNode` that names the cell, so the build can fail and say where.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import sys
import threading
from pathlib import Path, PurePosixPath
from typing import Any, NoReturn, Protocol, cast

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.environment import BuildEnvironment
from sphinx.errors import SphinxError
from sphinx.util import logging
from sphinx.util.console import bold, red

from chapters_support.sphinx_ext import config
from chapters_support.sphinx_ext.nodes import CheckResultNode, ExecutionFailureNode
from chapters_support.verdict import describe_failure, strip_ansi

logger = logging.getLogger(__name__)


class AppData(Protocol):
    """What the execution step keeps on the Sphinx application for the later phases."""

    chapters_failures: dict[str, dict[str, Any]]
    chapters_code_digests: dict[str, str]
    chapters_report: Any


class ChaptersBuildError(SphinxError):
    category = "Derive & Verify"


def fail(error: ChaptersBuildError) -> NoReturn:
    """Stop the build with our message (file, line, label, numbers) and nothing below it.

    sphinx-build prints a SphinxError as its message, so there it is raised. jupyter-book's
    CLI prints the traceback of any exception from Sphinx and then its own RuntimeError
    chained to it: under it the message is written here, as Sphinx would, and the build
    exits with status 1."""
    if "jupyter_book.cli.main" not in sys.modules:
        raise error
    sys.stdout.flush()
    sys.stderr.write(f"\n{red(error.category + ':')}\n{error}\n")
    sys.stderr.flush()
    raise SystemExit(1)


def _excluded(path: Path, patterns: list[str]) -> bool:
    posix = PurePosixPath(path.as_posix())
    return any(posix.match(pattern) for pattern in patterns)


def _parser_salt(env: BuildEnvironment) -> str:
    """What besides a chapter's text decides its notebook (and so its cache key); sets are
    sorted so the salt is the same in every process."""
    nb_config = cast(Any, env).mystnb_config
    settings = {
        "myst": dataclasses.asdict(cast(Any, env).myst_config),
        "kernel_aliases": nb_config.kernel_rgx_aliases,
        "metadata_key": nb_config.metadata_key,
    }
    return json.dumps(settings, sort_keys=True, default=_stable)


def _stable(value: Any) -> Any:
    if isinstance(value, (set, frozenset)):
        return sorted(map(str, value))
    return repr(value)


def stop_on_signals(app: Sphinx) -> None:
    """Ctrl-C or SIGTERM while Sphinx reads and writes (execution has its own handling, in
    ``execution/interrupt.py``): one line and the shell's exit status, 130 or 143.

    jupyter-book's CLI passes a KeyboardInterrupt to ``sys.exit`` (status 1, and a message
    box saying the build "returns a non-zero exit code (...)"); SystemExit passes Sphinx's and
    jupyter-book's handlers untouched. Restored by :func:`restore_signals` at build-finished.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    owner = os.getpid()

    def stop(signum: int, frame: Any) -> None:
        if os.getpid() != owner:  # a worker of Sphinx's parallel read: its parent says it
            os._exit(128 + signum)
        sys.stdout.flush()
        sys.stderr.write(
            f"\nchapters: interrupted by {signal.Signals(signum).name} while Sphinx read and "
            "wrote the pages; the jupyter-cache is intact, and the next build executes no "
            "chapter that is cached\n"
        )
        sys.stderr.flush()
        raise SystemExit(128 + signum)

    cast(Any, app).chapters_signal_handlers = {
        signum: signal.signal(signum, stop) for signum in (signal.SIGINT, signal.SIGTERM)
    }


def restore_signals(app: Sphinx, exception: Exception | None) -> None:
    for signum, handler in (getattr(app, "chapters_signal_handlers", None) or {}).items():
        signal.signal(signum, handler)
    cast(Any, app).chapters_signal_handlers = None


def execute_before_read(app: Sphinx, env: BuildEnvironment, docnames: list[str]) -> None:
    stop_on_signals(app)
    data = cast(AppData, app)
    data.chapters_failures = {}
    data.chapters_code_digests = {}  # docname -> code digest, for the collector (mutation scores)
    cfg = config.get(app)
    nb_config = cast(Any, env).mystnb_config  # MyST-NB's, set at builder-inited
    if nb_config.execution_mode == "off" or not cfg.execute:
        return
    from chapters_support.execution.lock import cache_lock

    # one executor per cache: a second build on this book waits, then finds it cached
    with cache_lock(
        nb_config.execution_cache_path, lambda line: logger.info(bold("chapters: ") + line)
    ):
        _execute_chapters(app, env, docnames, cfg, nb_config)


def _execute_chapters(
    app: Sphinx, env: BuildEnvironment, docnames: list[str], cfg: Any, nb_config: Any
) -> None:
    from chapters_support.execution import (
        CacheWriteError,
        RequireCacheError,
        execute,
        read_chapter,
        require_cache_from_env,
    )
    from chapters_support.execution.gpus import per_gpu
    from chapters_support.execution.health import UnreadableCache, ensure_readable
    from chapters_support.execution.index import SourceIndex
    from chapters_support.execution.interrupt import Interrupted
    from chapters_support.execution.notebooks import code_digest, has_code
    from chapters_support.execution.shards import load_durations
    from chapters_support.execution.warm import requested

    data = cast(AppData, app)
    force = nb_config.execution_mode == "force"
    try:
        kernels_per_gpu = per_gpu(cfg.kernels_per_gpu)
    except ValueError as error:
        fail(ChaptersBuildError(str(error)))
    require_cache = cfg.require_cache or require_cache_from_env()
    try:
        note = ensure_readable(nb_config.execution_cache_path, rebuild=not require_cache)
    except UnreadableCache as error:
        fail(ChaptersBuildError(str(error)))
    if note:
        logger.warning(bold("chapters: ") + note)
    index = SourceIndex(nb_config.execution_cache_path, salt=_parser_salt(env))
    chapters = []
    known = 0
    for docname in sorted(docnames):
        path = Path(env.doc2path(docname))
        if path.suffix not in {".md", ".ipynb"} or _excluded(
            path, list(nb_config.execution_excludepatterns)
        ):
            continue
        if not force and index.is_cached(path):
            known += 1  # unchanged since it was cached: no need to parse it twice
            if (digest := index.code_digest(path)) is not None:
                data.chapters_code_digests[docname] = digest
            continue
        chapter = read_chapter(path, docname, cast(Any, env).myst_config, nb_config)
        if chapter is not None:
            data.chapters_code_digests[docname] = code_digest(chapter.notebook)
        if chapter is not None and has_code(chapter):
            chapters.append(chapter)

    def started(chapter: Any, reason: str) -> None:
        logger.info(bold("chapters: ") + f"executing {chapter.docname} ({reason})")

    def finished(outcome: Any) -> None:
        if outcome.succeeded:
            logger.info(
                bold("chapters: ")
                + f"{outcome.chapter.docname} executed in {outcome.seconds:.1f} s"
            )
        else:
            logger.info(
                bold("chapters: ")
                + f"{outcome.chapter.docname} FAILED: "
                + describe_failure(outcome.failure.to_json())
            )

    try:
        report = execute(
            chapters,
            nb_config.execution_cache_path,
            jobs=cfg.jobs or None,
            force=force,
            require_cache=require_cache,
            on_start=started,
            on_done=finished,
            durations=load_durations(Path(app.srcdir)),
            warm=requested(cfg.warm_kernels),
            preload=list(cfg.warm_preload),
            kernels_per_gpu=kernels_per_gpu,
        )
    except (RequireCacheError, CacheWriteError) as error:
        fail(ChaptersBuildError(str(error)))
    except Interrupted as stopped:
        # one line and the shell's exit status (130 for Ctrl-C, 143 for SIGTERM); SystemExit
        # passes Sphinx's and jupyter-book's handlers, which would print a traceback
        sys.stderr.write(f"chapters: {stopped}\n")
        sys.stderr.flush()
        raise SystemExit(stopped.exit_code) from None
    cached = len(report.cached) + known
    if report.executed:
        logger.info(
            bold("chapters: ") + f"executed {len(report.executed)} chapter(s) with "
            f"{min(report.jobs, len(report.executed))} "
            f"kernel(s) in parallel in {report.wall_seconds:.1f} s; {cached} from the cache"
        )
        if report.devices:
            from chapters_support.execution.gpus import describe

            logger.info(bold("chapters: ") + describe(report.devices, kernels_per_gpu))
        cells = sum(o.cell_seconds for o in report.executed)
        logger.info(
            bold("chapters: ") + f"{report.kernels}; the cells themselves ran {cells:.1f} s"
        )
    elif cached:
        logger.info(
            bold("chapters: ") + f"all {cached} chapter(s) from the cache; nothing executed"
        )
    for chapter in [*report.cached, *(o.chapter for o in report.executed if o.succeeded)]:
        index.remember(chapter.path, chapter.notebook)
    index.save()
    data.chapters_report = report
    data.chapters_failures = {o.chapter.docname: o.failure.to_json() for o in report.failures}
    excluded = [PurePosixPath(o.chapter.path.as_posix()).as_posix() for o in report.failures]
    # MyST-NB only reads from the cache now: failed chapters are not run a second time.
    cast(Any, env).mystnb_config = nb_config.copy(
        execution_mode="cache",
        execution_excludepatterns=[*nb_config.execution_excludepatterns, *excluded],
    )


def prepare_doctree(app: Sphinx, doctree: nodes.document) -> None:
    """Runs before the collector: give check outputs ids, show an execution failure."""
    seen: dict[str, int] = {}
    for node in doctree.findall(CheckResultNode):
        label = node.get("label", "")
        seen[label] = seen.get(label, 0) + 1
        suffix = "" if seen[label] == 1 else f"-{seen[label]}"
        node["ids"] = [nodes.make_id(f"check-{label}{suffix}")]

    failure = getattr(app, "chapters_failures", {}).get(app.env.docname)
    if not failure:
        return
    box = ExecutionFailureNode(failure=failure)
    from sphinx.locale import get_translation

    _ = get_translation("chapters")
    box += nodes.title(text=str(_("This chapter did not execute to the end")))
    box += nodes.paragraph(text=describe_failure(failure))
    if failure.get("traceback"):
        box += nodes.literal_block(text=strip_ansi(failure["traceback"]))
    # after the chapter title, so the reader sees it first
    section = next(iter(doctree.findall(nodes.section)), None)
    if section is not None:
        title_index = 1 if section.children and isinstance(section[0], nodes.title) else 0
        section.insert(title_index, box)
    else:
        doctree.insert(0, box)
