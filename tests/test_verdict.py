"""The verdict shared by the book and the CLI: statuses and the problems that fail a build."""

from __future__ import annotations

from chapters_support.verdict import ChapterData, assess, badge_text, totals


def result(label: str, status: str = "pass", ratio: float = 0.1) -> dict:
    return {
        "label": label,
        "status": status,
        "message": f"{status} message",
        "ratio": ratio,
        "max_abs_err": ratio * 1e-12,
        "max_rel_err": ratio * 1e-9,
        "atol": 1e-12,
        "rtol": 1e-9,
        "dtype": "float64",
        "device": "cpu",
        "seconds": 0.01,
        "kind": "close",
    }


def derivation(label: str, line: int) -> dict:
    return {"label": label, "title": label.title(), "number": 1, "line": line}


def test_pass_fail_unverified_rows_and_problems():
    chapter = ChapterData(
        "ch",
        source="ch.md",
        title="Chapter",
        derivations=[derivation("a", 10), derivation("b", 20), derivation("c", 30)],
        results=[result("a"), result("b"), result("b", "fail", 7.5)],
    )
    rows, problems = assess([chapter])
    assert [r["status"] for r in rows] == ["pass", "fail", "unverified"]
    assert rows[1]["ratio"] == 7.5 and rows[1]["checks"] == 2
    assert [str(p) for p in problems] == [
        "ch.md:20: derivation 'b' FAILS its check: fail message",
        "ch.md:30: derivation 'c' is UNVERIFIED: no check with this label ran",
    ]
    assert totals(rows) == {"pass": 1, "fail": 1, "unverified": 1, "total": 3}
    assert badge_text(rows[1]) == "FAIL · error/tolerance 7.5"


def test_orphan_check_and_duplicate_label_across_chapters():
    one = ChapterData(
        "one", source="one.md", derivations=[derivation("x", 5)], results=[result("x")]
    )
    two = ChapterData(
        "two",
        source="two.md",
        derivations=[derivation("x", 8)],
        results=[result("x"), result("typo")],
    )
    _, problems = assess([one, two])
    kinds = {p.kind: str(p) for p in problems}
    assert kinds["duplicate_label"] == (
        "two.md:8: derivation label 'x' is already used at one.md:5; labels must be unique in the book"
    )
    assert kinds["orphan_check"].startswith("two.md: check 'typo' (PASS) has no {derivation}")


def test_execution_failure_leaves_later_derivations_unverified():
    chapter = ChapterData(
        "ch",
        source="ch.md",
        derivations=[derivation("a", 10), derivation("b", 40)],
        results=[result("a")],
        failure={
            "kind": "cell_error",
            "message": "ZeroDivisionError: division by zero",
            "line": 25,
        },
    )
    rows, problems = assess([chapter])
    assert rows[1]["status"] == "unverified"
    assert "chapter stopped executing first" in rows[1]["message"]
    assert (
        str(problems[-1])
        == "ch.md:25: a cell raised in the cell at line 25: ZeroDivisionError: division by zero"
    )


def test_missing_label_is_a_problem():
    chapter = ChapterData("ch", source="ch.md", derivations=[{"label": "", "number": 2, "line": 3}])
    _, problems = assess([chapter])
    assert problems[0].kind == "missing_label" and problems[0].line == 3
