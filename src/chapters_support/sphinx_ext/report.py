"""derivations.json, and the verdict that fails (or warns about) the build."""

from __future__ import annotations

import datetime as _dt
import errno
import json
import os
from pathlib import Path
from typing import Any, cast

from sphinx.application import Sphinx
from sphinx.util import logging

from chapters_support import __version__
from chapters_support.provenance import installed
from chapters_support.sphinx_ext import config
from chapters_support.sphinx_ext.execute import ChaptersBuildError, fail
from chapters_support.sphinx_ext.transforms import assessment
from chapters_support.verdict import (
    Problem,
    coverage_text,
    environments,
    step_coverage,
    totals,
)

logger = logging.getLogger(__name__)


def status_docs_to_rewrite(app: Sphinx, env: Any) -> list[str]:
    """``env-updated``: the status page depends on every chapter, so rewrite it whenever any
    document was read or removed in this build (and only then: a no-change rebuild writes
    nothing). Every page with a derivation is rewritten when this build's torch or device is
    not the last build's, since its badges say whether it was verified here."""
    status_docs = set(getattr(env, "chapters_status_docs", set()))
    here = installed().as_dict()
    moved = getattr(env, "chapters_installed", None) not in (None, here)
    env.chapters_installed = here  # pickled with the environment, for the next build
    if moved:
        return sorted(status_docs | set(getattr(env, "chapters_derivations", {})))
    if not getattr(app, "chapters_env_changed", False):
        return []
    return sorted(status_docs)


def _generated() -> _dt.datetime:
    """Now, or SOURCE_DATE_EPOCH when set (reproducible builds: a re-published version is
    byte-identical)."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch and epoch.strip().isdigit():
        return _dt.datetime.fromtimestamp(int(epoch), tz=_dt.UTC)
    return _dt.datetime.now(_dt.UTC)


def report_data(app: Sphinx) -> dict[str, Any]:
    data = assessment(app)
    rows = []
    for row in data["rows"]:
        anchor = next(
            (
                d["anchor"]
                for c in data["chapters"]
                if c.chapter == row["chapter"]
                for d in c.derivations
                if d["label"] == row["label"]
            ),
            None,
        )
        url = app.builder.get_target_uri(row["chapter"]) + (f"#{anchor}" if anchor else "")
        rows.append({**row, "url": url})
    return {
        "generator": f"chapters-support {__version__}",
        "project": app.config.project,
        "generated": _generated().isoformat(timespec="seconds"),
        "totals": totals(data["rows"]),
        "steps": step_coverage(data["rows"]),
        "environments": environments(data["chapters"]),
        "build_environment": data["installed"].as_dict(),
        "chapters": [
            {
                "chapter": c.chapter,
                "title": c.title,
                "source": c.source,
                "execution_seconds": c.seconds,
                "failure": c.failure,
                "derivations": len(c.derivations),
                "steps": step_coverage(r for r in data["rows"] if r["chapter"] == c.chapter),
            }
            for c in data["chapters"]
        ],
        "derivations": rows,
        "problems": [p.__dict__ for p in data["problems"]],
    }


def _no_space(exception: BaseException | None) -> OSError | None:
    """The ENOSPC behind ``exception`` (Sphinx wraps some errors in its own), if any."""
    seen = 0
    while exception is not None and seen < 10:
        if isinstance(exception, OSError) and exception.errno == errno.ENOSPC:
            return exception
        exception = exception.__cause__ or exception.__context__
        seen += 1
    return None


def finish(app: Sphinx, exception: Exception | None) -> None:
    if exception is not None:
        full = _no_space(exception)
        if full is not None:
            cache = Path(cast(Any, app.env).mystnb_config.execution_cache_path)
            fail(
                ChaptersBuildError(
                    f"no space left on the device while writing the book into {app.outdir} "
                    f"({full.filename or full}). The executed chapters were cached in {cache} "
                    "before writing began, and writing does not touch the cache: free some "
                    "space and build again, and nothing cached executes again."
                )
            )
        return
    cfg = config.get(app)
    if app.builder.format == "html":
        out = Path(app.outdir) / cfg.status_json
        out.write_text(json.dumps(report_data(app), indent=2, default=str) + "\n", encoding="utf-8")
    rows = assessment(app)["rows"]
    problems = list(assessment(app)["problems"])
    coverage = step_coverage(rows)
    if coverage["claims"]:
        logger.info(f"chapters: {coverage_text(coverage)}")
    elsewhere = sorted({r["verified_elsewhere"] for r in rows if r.get("verified_elsewhere")})
    if elsewhere:
        moved = sum(1 for r in rows if r.get("verified_elsewhere"))
        logger.info(
            f"chapters: {moved} derivation(s) were verified by an earlier run on another torch "
            f"or device ({'; '.join(elsewhere)}) than this build's ({installed().describe()}); "
            "their badges say so (`chapters check --force` verifies them here)"
        )
    if (
        coverage["claims"]
        and cfg.min_step_coverage
        and (coverage["coverage"] or 0.0) < cfg.min_step_coverage
    ):
        problems.append(
            Problem(
                "step_coverage",
                app.config.root_doc,
                f"step coverage {coverage['pass']}/{coverage['claims']} = "
                f"{coverage['coverage']:.1%} is below chapters_min_step_coverage "
                f"{cfg.min_step_coverage:.1%}",
                source=app.config.root_doc,
            )
        )
    if not problems:
        count = totals(rows)
        logger.info(f"chapters: all {count['total']} derivations verified (PASS)")
        return
    if not cfg.strict:
        for problem in problems:
            location = (problem.chapter, problem.line) if problem.line else problem.chapter
            logger.warning(
                problem.message, type="chapters", subtype=problem.kind, location=location
            )
        return
    from sphinx.locale import get_translation

    _ = get_translation("chapters")
    listing = "\n".join(f"  - {problem}" for problem in problems)
    heading = str(
        _(
            "{count} problem(s) with the book's derivations "
            "(set chapters_strict: false to only warn while drafting):"
        )
    ).format(count=len(problems))
    fail(ChaptersBuildError(f"{heading}\n{listing}"))
