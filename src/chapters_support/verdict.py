"""From derivations, check results and execution failures to a status per derivation.

Pure data in, pure data out: the Sphinx extension and the ``chapters check`` command both
decide here, so the book and the CLI can never disagree. Imports neither torch nor Sphinx.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from chapters_support.result import (
    FAIL,
    PASS,
    STEP_FAIL,
    STEP_PASS,
    UNVERIFIED,
    format_error,
    summarize_steps,
)

STEPS_KIND = "steps"
_REL_TEXT = {"<=": "\\le", ">=": "\\ge", "!=": "\\ne", "~=": "\\approx", "in": "\\in", "->": "\\to"}

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


def _steps_of(derivation: Mapping[str, Any], results: list[dict[str, Any]]) -> dict[str, Any]:
    """The step verdicts of a derivation: from its check_steps result, or, when nothing binds
    it yet, the number of claims its text makes (all of them unchecked)."""
    step_items = [
        item for r in results if r.get("kind") == STEPS_KIND for item in r.get("items", [])
    ]
    if step_items:
        summary = summarize_steps(step_items)
        summary["bound"] = True
        summary["final_checked"] = any(
            i.get("final") and i.get("status") == STEP_PASS and i.get("reference")
            for i in step_items
        )
        return {"summary": summary, "items": step_items}
    claims = derivation.get("claims") or {}
    display, inline = int(claims.get("display", 0)), int(claims.get("inline", 0))
    summary = summarize_steps([])
    summary.update(
        bound=False,
        claims=display + inline,
        display={"claims": display, "pass": 0},
        inline={"claims": inline, "pass": 0},
        final_checked=False,
    )
    return {"summary": summary, "items": []}


def _row(
    chapter: ChapterData, derivation: Mapping[str, Any], results: list[dict[str, Any]]
) -> dict[str, Any]:
    steps = _steps_of(derivation, results)
    row: dict[str, Any] = {
        "chapter": chapter.chapter,
        "chapter_title": chapter.title,
        "source": chapter.source,
        "label": derivation["label"],
        "title": derivation.get("title") or "",
        "number": derivation.get("number"),
        "line": derivation.get("line"),
        "checks": len(results),
        "steps": steps["summary"],
        "step_results": steps["items"],
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
            "environment",
        ):
            row[key] = None
        return row
    failed = [r for r in results if r.get("status") != PASS]
    # the numbers of the row are those of its checks against torch; a steps check adds its
    # verdict, and its numbers only when it is the derivation's only check
    numeric = [r for r in results if r.get("kind") != STEPS_KIND] or results

    def worst(key: str) -> float | None:
        values = [r[key] for r in numeric if r.get(key) is not None]
        return max(values) if values else None

    decisive = max(numeric, key=lambda r: (r.get("status") != PASS, r.get("ratio") or 0.0))
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
        # one execution of the chapter produced every result of the row: one environment
        environment=next((r["environment"] for r in results if r.get("environment")), None),
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
            failing_checks = [
                r
                for r in by_label.get(label, [])
                if r.get("status") != PASS and r.get("kind") != STEPS_KIND
            ]
            if failing_checks:
                problems.append(
                    Problem(
                        "check_failed",
                        chapter.chapter,
                        f"derivation {label!r} FAILS its check: "
                        + "; ".join(r.get("message", "") for r in failing_checks),
                        label,
                        derivation.get("line"),
                        where,
                    )
                )
            total = len(row["step_results"])
            for item in row["step_results"]:
                if item.get("status") != STEP_FAIL:
                    continue
                rel = _REL_TEXT.get(item.get("rel", "="), item.get("rel", "="))
                problems.append(
                    Problem(
                        "step_failed",
                        chapter.chapter,
                        f"derivation {label!r} step {item.get('step')} of {total} FAILS: "
                        f"{item.get('lhs')} {rel} {item.get('rhs')} — {item.get('detail')}",
                        label,
                        item.get("line"),
                        where,
                    )
                )
            if row["status"] == UNVERIFIED:
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


def _same(text: str) -> str:
    return text


# the words a page shows, through the caller's translation (the book side passes its
# message catalogue's gettext; the CLI and derivations.json keep English)
Words = Callable[[str], str]


def N_(text: str) -> str:
    """Marks a word for the message catalogue, translated where it is shown."""
    return text


STATUS_WORDS = {PASS: N_("PASS"), FAIL: N_("FAIL"), UNVERIFIED: N_("UNVERIFIED")}


def status_text(status: str, _: Words = _same) -> str:
    return str(_(STATUS_WORDS.get(status, status.upper())))


def badge_text(row: Mapping[str, Any], _: Words = _same) -> str:
    """The words on a badge: the status, the steps that hold, and for a FAIL what failed."""
    status = status_text(row["status"], _)
    steps = row.get("steps") or {}
    if steps.get("first_fail") is not None:
        return str(_("{status} · step {step} of {steps}")).format(
            status=status, step=steps["first_fail"], steps=steps["steps"]
        )
    if row["status"] == PASS and steps.get("bound"):
        return str(_("{status} · steps {passed}/{claims}")).format(
            status=status, passed=steps["pass"], claims=steps["claims"]
        )
    if row["status"] == FAIL and row.get("ratio") is not None:
        return str(_("{status} · error/tolerance {ratio}")).format(
            status=status, ratio=f"{row['ratio']:.2g}"
        )
    if row["status"] == FAIL:
        return str(_("{status} · non-finite")).format(status=status)
    return status


def error_summary(row: Mapping[str, Any]) -> str:
    if row.get("max_abs_err") is None and row.get("ratio") is None:
        return "–"
    return f"abs {format_error(row.get('max_abs_err'))}, rel {format_error(row.get('max_rel_err'))}"


def step_coverage(rows: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Claims that PASS over all claims, display and inline apart (unbound ones count too)."""
    out: dict[str, Any] = {"display": {"claims": 0, "pass": 0}, "inline": {"claims": 0, "pass": 0}}
    bound = 0
    derivations = 0
    final = 0
    for row in rows:
        steps = row.get("steps") or {}
        derivations += 1
        bound += bool(steps.get("bound"))
        final += bool(steps.get("final_checked"))
        for kind in ("display", "inline"):
            part = steps.get(kind) or {}
            out[kind]["claims"] += int(part.get("claims", 0))
            out[kind]["pass"] += int(part.get("pass", 0))
    claims = out["display"]["claims"] + out["inline"]["claims"]
    passed = out["display"]["pass"] + out["inline"]["pass"]
    out.update(
        claims=claims, pass_=passed, bound=bound, derivations=derivations, final_checked=final
    )
    out["pass"] = out.pop("pass_")
    for part in (out, out["display"], out["inline"]):
        part["coverage"] = part["pass"] / part["claims"] if part["claims"] else None
    return out


def coverage_text(coverage: Mapping[str, Any], _: Words = _same) -> str:
    def pct(part: Mapping[str, Any]) -> str:
        value = part.get("coverage")
        return f"{part['pass']}/{part['claims']} ({value:.0%})" if value is not None else "0/0"

    return str(
        _(
            "steps: {all} of the claims PASS — display {display}, inline {inline}; {bound} of "
            "{derivations} derivations bound, the final formula of {final} PASSes against the "
            "check's reference"
        )
    ).format(
        all=pct(coverage),
        display=pct(coverage["display"]),
        inline=pct(coverage["inline"]),
        bound=coverage["bound"],
        derivations=coverage["derivations"],
        final=coverage.get("final_checked", 0),
    )


def steps_text(row: Mapping[str, Any], _: Words = _same) -> str:
    """The status table's steps cell: ``8/8``, ``FAIL at 3 · 5/8``, ``not bound · 12 claims``."""
    steps = row.get("steps") or {}
    if not steps.get("bound"):
        claims = int(steps.get("claims") or 0)
        if not claims:
            return "–"
        one, many = _("not bound · {claims} claim"), _("not bound · {claims} claims")
        return str(one if claims == 1 else many).format(claims=claims)
    text = f"{steps['pass']}/{steps['claims']}"
    if steps.get("first_fail") is not None:
        text = str(_("FAIL at step {step} · {text}")).format(step=steps["first_fail"], text=text)
    return text
