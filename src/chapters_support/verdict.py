"""From derivations, check results and execution failures to a status per derivation.

Pure data in, pure data out: the Sphinx extension and the ``chapters check`` command both
decide here, so the book and the CLI can never disagree. Imports neither torch nor Sphinx.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from chapters_support.result import FAIL, PASS, UNVERIFIED, format_error

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def strip_ansi(text: str) -> str:
    return _ANSI.sub("", text)


@dataclass
class Problem:
    """One reason the book is not verified, located at chapter and line."""

    kind: str  # check_failed | unverified | orphan_check | duplicate_label | execution_failed
    chapter: str  # docname
    message: str
    label: str | None = None
    line: int | None = None
    source: str = ""  # the file, as users know it

    def __str__(self) -> str:
        name = self.source or self.chapter
        where = f"{name}:{self.line}" if self.line else name
        return f"{where}: {self.message}"


@dataclass
class ChapterData:
    """What a chapter contributes: its derivations, its check results, how execution went."""

    chapter: str  # docname
    source: str = ""  # file name shown to users, e.g. linear-regression.md
    title: str = ""
    derivations: list[dict[str, Any]] = field(default_factory=list)  # label, title, line, number
    results: list[dict[str, Any]] = field(default_factory=list)  # CheckResult.to_json()
    failure: dict[str, Any] | None = None  # runner.Failure.to_json()
    seconds: float | None = None


def _row(
    chapter: ChapterData, derivation: Mapping[str, Any], results: list[dict[str, Any]]
) -> dict[str, Any]:
    row: dict[str, Any] = {
        "chapter": chapter.chapter,
        "chapter_title": chapter.title,
        "source": chapter.source,
        "label": derivation["label"],
        "title": derivation.get("title") or "",
        "number": derivation.get("number"),
        "line": derivation.get("line"),
        "checks": len(results),
    }
    if not results:
        row.update(status=UNVERIFIED, message="no check with this label ran")
        if chapter.failure:
            row["message"] = (
                "not checked: the chapter stopped executing first "
                f"({chapter.failure.get('message', 'execution failed')})"
            )
        for key in (
            "max_abs_err",
            "max_rel_err",
            "ratio",
            "atol",
            "rtol",
            "dtype",
            "device",
            "seconds",
        ):
            row[key] = None
        return row
    failed = [r for r in results if r.get("status") != PASS]

    def worst(key: str) -> float | None:
        values = [r[key] for r in results if r.get(key) is not None]
        return max(values) if values else None

    decisive = max(results, key=lambda r: (r.get("status") != PASS, r.get("ratio") or 0.0))
    row.update(
        status=FAIL if failed else PASS,
        message="; ".join(r.get("message", "") for r in (failed or [decisive])),
        max_abs_err=worst("max_abs_err"),
        max_rel_err=worst("max_rel_err"),
        ratio=worst("ratio"),
        atol=decisive.get("atol"),
        rtol=decisive.get("rtol"),
        dtype=decisive.get("dtype"),
        device=decisive.get("device"),
        seconds=sum(float(r.get("seconds") or 0.0) for r in results),
        reason=next((r.get("reason") for r in results if r.get("reason")), None),
        kinds=sorted({r.get("kind", "") for r in results}),
    )
    return row


def assess(chapters: Iterable[ChapterData]) -> tuple[list[dict[str, Any]], list[Problem]]:
    """Rows (one per derivation, book order) and every problem that must fail the build."""
    rows: list[dict[str, Any]] = []
    problems: list[Problem] = []
    seen: dict[str, tuple[str, int | None]] = {}
    for chapter in chapters:
        where = chapter.source or chapter.chapter
        by_label: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for result in chapter.results:
            by_label[str(result.get("label"))].append(result)
        labels = set()
        for derivation in chapter.derivations:
            label = derivation["label"]
            if not label:
                problems.append(
                    Problem(
                        "missing_label",
                        chapter.chapter,
                        f"derivation {derivation.get('number')} has no :label: option, so no check "
                        "can verify it",
                        None,
                        derivation.get("line"),
                        where,
                    )
                )
                continue
            if label in seen:
                other, other_line = seen[label]
                problems.append(
                    Problem(
                        "duplicate_label",
                        chapter.chapter,
                        f"derivation label {label!r} is already used at {other}"
                        + (f":{other_line}" if other_line else "")
                        + "; labels must be unique in the book",
                        label,
                        derivation.get("line"),
                        where,
                    )
                )
            seen[label] = (where, derivation.get("line"))
            labels.add(label)
            row = _row(chapter, derivation, by_label.get(label, []))
            rows.append(row)
            if row["status"] == FAIL:
                problems.append(
                    Problem(
                        "check_failed",
                        chapter.chapter,
                        f"derivation {label!r} FAILS its check: {row['message']}",
                        label,
                        derivation.get("line"),
                        where,
                    )
                )
            elif row["status"] == UNVERIFIED:
                problems.append(
                    Problem(
                        "unverified",
                        chapter.chapter,
                        f"derivation {label!r} is UNVERIFIED: {row['message']}",
                        label,
                        derivation.get("line"),
                        where,
                    )
                )
        for label, results in by_label.items():
            if label not in labels:
                status = ", ".join(sorted({r.get("status", "?").upper() for r in results}))
                problems.append(
                    Problem(
                        "orphan_check",
                        chapter.chapter,
                        f"check {label!r} ({status}) has no {{derivation}} with that label "
                        "in this chapter",
                        label,
                        source=where,
                    )
                )
        if chapter.failure:
            failure = chapter.failure
            problems.append(
                Problem(
                    "execution_failed",
                    chapter.chapter,
                    describe_failure(failure),
                    None,
                    failure.get("line"),
                    where,
                )
            )
    return rows, problems


def describe_failure(failure: Mapping[str, Any]) -> str:
    cell = f" in the cell at line {failure['line']}" if failure.get("line") else ""
    kinds = {
        "cell_error": "a cell raised",
        "timeout": "a cell timed out",
        "dead_kernel": "the kernel died",
        "error": "execution failed",
    }
    what = kinds.get(str(failure.get("kind")), "execution failed")
    return f"{what}{cell}: {strip_ansi(str(failure.get('message', '')))}"


def totals(rows: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    counts = {PASS: 0, FAIL: 0, UNVERIFIED: 0}
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    counts["total"] = sum(counts[s] for s in (PASS, FAIL, UNVERIFIED))
    return counts


def environments(chapters: Iterable[ChapterData]) -> list[dict[str, Any]]:
    """The distinct environments the checks ran in (torch, CUDA, device)."""
    found: list[dict[str, Any]] = []
    for chapter in chapters:
        for result in chapter.results:
            env = result.get("environment") or {}
            if env and env not in found:
                found.append(env)
    return found


def badge_text(row: Mapping[str, Any]) -> str:
    """The words on a badge: the status, and for a FAIL the numbers that failed."""
    status = str(row["status"]).upper()
    if row["status"] == FAIL and row.get("ratio") is not None:
        return f"{status} · error/tolerance {row['ratio']:.2g}"
    if row["status"] == FAIL:
        return f"{status} · non-finite"
    return status


def error_summary(row: Mapping[str, Any]) -> str:
    if row.get("max_abs_err") is None and row.get("ratio") is None:
        return "–"
    return f"abs {format_error(row.get('max_abs_err'))}, rel {format_error(row.get('max_rel_err'))}"
