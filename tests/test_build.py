"""`jupyter-book build` on small books: badges, status page, JSON, and every way to fail.

These execute real kernels (a few seconds per chapter), as users do.
"""

from __future__ import annotations

import re

import pytest
from conftest import ROOTS

pytestmark = pytest.mark.slow


def normalise(text: str) -> str:
    """Strip numbers that change from run to run (timings, versions) for snapshots."""
    text = re.sub(r"\d+(\.\d+)?\s?(µs|ms|s)\b", "<time>", text)
    text = re.sub(r"torch [\w.+]+", "torch <version>", text)
    text = re.sub(r"Python [\d.]+", "Python <version>", text)
    text = re.sub(r"CPU: [^—]+—", "CPU: <cpu> —", text)
    return re.sub(r"\d\.\de[-+]\d\d", "<err>", text)


def test_passing_book_has_badges_status_page_and_json(book_copy, build, data_regression):
    built = build(book_copy("test-pass"))
    assert built.returncode == 0, built.output
    assert "chapters: all 2 derivations verified (PASS)" in built.output

    page = built.page("good")
    boxes = page.select(".chapters-derivation")
    assert [box["id"] for box in boxes] == ["sq-grad", "normal-var"]
    badges = [box.select_one(".chapters-derivation-title .chapters-badge") for box in boxes]
    assert [b.get_text() for b in badges] == ["PASS", "PASS"]
    # the badge links to the check's output in the same page
    assert page.select_one(f"#{badges[0]['href'][1:]}").select_one(".chapters-check--pass")
    # the {ref} to a derivation resolves to its box
    assert page.select_one('a[href="#sq-grad"]') is not None

    status = built.page("status")
    table = status.select_one("table.chapters-status-table")
    rows = [
        [td.get_text(" ", strip=True) for td in tr.select("td")] for tr in table.select("tbody tr")
    ]
    assert [r[2] for r in rows] == ["PASS", "PASS"]
    heading = status.select_one(".chapters-status-chapter").get_text(" ", strip=True)
    # its claims are counted, and none is bound to a step check
    assert re.fullmatch(
        r"Good chapter — 2/2 pass, steps 0/3 \(0%\), executed in \d+(\.\d+)? (ms|s)", heading
    )
    links = [a["href"] for a in table.select("tbody a.reference")]
    assert "good.html#sq-grad" in links and "good.html#normal-var" in links
    summary = status.select_one(".chapters-status-summary").get_text(" ", strip=True)
    assert summary == "2 derivations in 1 chapters: 2 pass, 0 fail, 0 unverified."
    environment = status.select_one(".chapters-status-environment").get_text(" ", strip=True)
    assert "torch" in environment and ("no CUDA" in environment or "CUDA" in environment)

    data_regression.check(
        {
            "badges": [normalise(str(b)) for b in badges],
            "status_rows": [[normalise(cell) for cell in row] for row in rows],
        }
    )

    report = built.report()
    assert report["totals"] == {"pass": 2, "fail": 0, "unverified": 0, "total": 2}
    assert [d["label"] for d in report["derivations"]] == ["sq-grad", "normal-var"]
    first = report["derivations"][0]
    assert first["url"] == "good.html#sq-grad" and first["dtype"] == "float64"
    assert first["max_abs_err"] < 1e-12 and first["ratio"] < 1
    assert report["chapters"][0]["execution_seconds"] > 0

    # a rebuild with nothing changed executes nothing and still passes
    again = build(built.root)
    assert again.returncode == 0, again.output
    assert "executing" not in again.output
    assert "0 added, 0 changed, 0 removed" in again.output  # no document is even re-read
    assert (
        "no targets are out of date." in again.output
    )  # and none, not even the status page, rewritten


@pytest.mark.parametrize(
    ("root", "expected"),
    [
        (
            "test-fail",
            r"wrong\.md:\d+: derivation 'sq-grad' FAILS its check: max abs err \S+, rel err 2\.5e-01",
        ),
        (
            "test-unverified",
            r"unchecked\.md:\d+: derivation 'sq-grad' is UNVERIFIED: no check with this label ran",
        ),
        (
            "test-raise",
            r"raises\.md:\d+: a cell raised in the cell at line \d+: ZeroDivisionError: division by zero",
        ),
        (
            "test-kill",
            r"killed\.md:\d+: the kernel died in the cell at line \d+: killed by a signal",
        ),
        (
            "test-timeout",
            r"slow\.md:\d+: a cell timed out in the cell at line \d+: it ran longer than the 5 s timeout",
        ),
        ("test-labels", r"check 'nobody' \(PASS\) has no \{derivation\} with that label"),
    ],
)
def test_bad_books_fail_the_build_and_say_where(book_copy, build, root, expected):
    built = build(book_copy(root))
    assert built.returncode != 0, built.output
    assert re.search(expected, built.output), built.output[-4000:]
    assert "problem(s) with the book's derivations" in built.output
    # our message is the last word: no traceback of it (nor jupyter-book's) below it
    assert "Traceback" not in built.output, built.output[-4000:]
    assert built.output.rstrip().splitlines()[-1].startswith("  - "), built.output[-2000:]
    assert "problem(s) with the book's derivations" in built.output.split("Derive & Verify:")[-1]


def test_fail_badge_shows_the_numbers(book_copy, build):
    built = build(book_copy("test-fail"))
    assert built.returncode != 0
    badge = built.page("wrong").select_one(".chapters-derivation .chapters-badge")
    assert badge["class"] == ["chapters-badge", "chapters-badge--fail"]
    assert re.fullmatch(r"FAIL · error/tolerance \d\.\de\+\d\d", badge.get_text())
    assert "at index" in badge["title"]
    line = next(
        n
        for n, t in enumerate((built.root / "wrong.md").read_text().splitlines(), 1)
        if t.startswith("```{derivation}")
    )
    assert f"wrong.md:{line}: derivation 'sq-grad'" in built.output


def test_raising_chapter_shows_the_error_on_its_page(book_copy, build):
    built = build(book_copy("test-raise"))
    box = built.page("raises").select_one(".chapters-execution-failure")
    assert "ZeroDivisionError: division by zero" in box.get_text()
    badge = built.page("raises").select_one(".chapters-derivation .chapters-badge")
    assert badge.get_text() == "UNVERIFIED"


def test_draft_mode_warns_instead_of_failing(book_copy, build):
    root = book_copy("test-fail")
    config = root / "_config.yml"
    config.write_text(config.read_text().replace("chapters_strict: true", "chapters_strict: false"))
    built = build(root)
    assert built.returncode == 0, built.output
    assert re.search(r"wrong\.md:\d+: WARNING: derivation 'sq-grad' FAILS its check", built.output)
    assert built.report()["totals"]["fail"] == 1


def test_a_failing_chapter_loses_nothing_else(book_copy, build):
    root = book_copy("test-pass")
    wrong = (ROOTS / "test-fail" / "wrong.md").read_text()
    (root / "wrong.md").write_text(wrong.replace("sq-grad", "sq-grad-again"))
    toc = root / "_toc.yml"
    toc.write_text(toc.read_text().replace("  - file: status", "  - file: wrong\n  - file: status"))
    first = build(root)
    assert first.returncode != 0
    assert "executing good" in first.output and "executing wrong" in first.output

    fixed = root / "wrong.md"
    fixed.write_text(fixed.read_text().replace("2.5 * X.T", "2 * X.T"))
    second = build(root)
    assert second.returncode == 0, second.output
    # the good chapter came from the cache; only the edited chapter ran
    assert "executing good" not in second.output
    assert "executing wrong (" in second.output


def test_markdown_only_edit_executes_nothing(book_copy, build):
    root = book_copy("test-pass")
    assert build(root).returncode == 0
    page = root / "good.md"
    page.write_text(page.read_text().replace("See {ref}`sq-grad`.", "See {ref}`sq-grad` again."))
    built = build(root)
    assert built.returncode == 0, built.output
    assert "executing" not in built.output
    assert "all 1 chapter(s) from the cache; nothing executed" in built.output


def test_require_cache_refuses_to_execute(book_copy, build):
    built = build(book_copy("test-pass"), env={"CHAPTERS_REQUIRE_CACHE": "1"})
    assert built.returncode != 0
    assert "require-cache mode" in built.output and "good (not in the cache yet)" in built.output


def test_latex_builder_shows_badges(book_copy, build):
    built = build(book_copy("test-pass"), "--builder", "latex")
    assert built.returncode == 0, built.output
    tex = next((built.root / "_build" / "latex").glob("*.tex")).read_text(encoding="utf-8")
    assert tex.count(r"\textbf{\small PASS}") == 2
    assert r"\textbf{PASS}} \texttt{sq\_grad}" not in tex  # labels keep their hyphens
    assert r"\texttt{sq-grad}" in tex


def test_a_book_without_the_extension_still_shows_verdicts_as_text(book_copy, build):
    root = book_copy("test-pass")
    config = root / "_config.yml"
    config.write_text(
        config.read_text().replace(
            "extra_extensions: [chapters_support.sphinx_ext]", "extra_extensions: []"
        )
    )
    built = build(root)
    assert built.returncode == 0, built.output  # the MIME plugin is global: other books must build
    page = built.page("good").get_text(" ")
    assert "PASS sq-grad: max abs err" in page


# -- step checks: what the reader reads is what is checked ---------------------------------------


def step_line(root, text: str) -> int:
    return next(
        n for n, t in enumerate((root / "steps.md").read_text().splitlines(), 1) if text in t
    )


def test_step_checks_show_in_badges_status_page_and_json(book_copy, build):
    built = build(book_copy("test-steps"))
    assert built.returncode == 0, built.output
    assert (
        "chapters: steps: 4/8 (50%) of the claims PASS — display 2/4 (50%), inline 2/4 (50%); "
        "1 of 3 derivations bound, the final formula of 1 PASSes against the check's reference"
        in built.output
    )

    badge = built.page("steps").select_one(".chapters-derivation .chapters-badge")
    assert badge.get_text() == "PASS · steps 4/5"
    status = built.page("status")
    coverage = status.select_one(".chapters-status-coverage").get_text(" ", strip=True)
    assert coverage.startswith(
        "Steps: 4/8 (50%) of the claims PASS"
    )  # good.md's claims are not bound
    headings = [h.get_text(" ", strip=True) for h in status.select(".chapters-status-chapter")]
    assert any(h.startswith("Steps chapter — 1/1 pass, steps 4/5 (80%)") for h in headings)
    table = status.select_one("table.chapters-status-table")
    assert [th.get_text() for th in table.select("th")][3] == "Steps"
    assert table.select("tbody tr td")[3].get_text(strip=True) == "4/5"

    report = built.report()
    row = next(r for r in report["derivations"] if r["label"] == "mse-grad")
    assert [s["status"] for s in row["step_results"]] == [
        "pass",
        "pass",
        "pass",
        "pass",
        "excluded",
    ]
    assert row["steps"]["final_checked"] and row["steps"]["display"] == {"claims": 3, "pass": 2}
    assert row["step_results"][4]["detail"] == "an expectation, not this example's residual"
    assert row["step_results"][2]["line"] == step_line(
        built.root, r"&= \frac{2}{n}\mathbf{X}^\top\mathbf{r}"
    )
    assert report["steps"]["claims"] == 8 and report["steps"]["pass"] == 4


def test_a_typo_in_the_maths_alone_reexecutes_that_chapter_and_fails_the_build(book_copy, build):
    root = book_copy("test-steps")
    assert build(root).returncode == 0
    page = root / "steps.md"
    right = r"&= \frac{2}{n}\mathbf{X}^\top\mathbf{r} ."
    page.write_text(page.read_text().replace(right, r"&= \frac{1}{n}\mathbf{X}^\top\mathbf{r} ."))
    built = build(root)
    assert built.returncode != 0
    # the code did not change: only the maths digest tells the cache that the chapter is stale
    assert "executing steps (the maths of mse-grad changed since the cached run)" in built.output
    assert "executing good" not in built.output
    line = step_line(root, r"\frac{1}{n}\mathbf{X}^\top\mathbf{r} .")
    assert re.search(
        rf"steps\.md:{line}: derivation 'mse-grad' step 3 of 5 FAILS: "
        r".*= \\frac\{1\}\{n\}\\mathbf\{X\}\^\\top\\mathbf\{r\} — the sides differ: max abs err \S+, rel err 5\.0e-01",
        built.output,
    ), built.output[-3000:]
    html = built.page("steps")
    assert (
        html.select_one(".chapters-derivation .chapters-badge").get_text() == "FAIL · step 3 of 5"
    )
    marked = html.select_one(".chapters-derivation .chapters-step-fail")
    assert marked is not None and "math" in marked["class"]
    note = html.select_one(".chapters-step-failure").get_text(" ", strip=True)
    assert note.startswith("Step 3 of 5 does not hold:") and "rel err 5.0e-01" in note

    # the fix executes the chapter again; a prose edit after it executes nothing
    page.write_text(page.read_text().replace(r"&= \frac{1}{n}\mathbf{X}^\top\mathbf{r} .", right))
    fixed = build(root)
    assert fixed.returncode == 0, fixed.output
    assert "executing steps (the maths of mse-grad changed" in fixed.output
    page.write_text(page.read_text().replace("Its shape is that of", "Its shape is the shape of"))
    prose = build(root)
    assert prose.returncode == 0, prose.output
    assert "executing" not in prose.output


def test_step_coverage_below_the_configured_floor_fails_the_build(book_copy, build):
    root = book_copy("test-steps")
    config = root / "_config.yml"
    config.write_text(
        config.read_text().replace(
            "chapters_strict: true", "chapters_strict: true\n    chapters_min_step_coverage: 0.6"
        )
    )
    built = build(root)
    assert built.returncode != 0
    assert "step coverage 4/8 = 50.0% is below chapters_min_step_coverage 60.0%" in built.output
    config.write_text(config.read_text().replace("0.6", "0.5"))
    assert build(root).returncode == 0


def test_latex_builder_shows_the_failing_step(book_copy, build):
    root = book_copy("test-steps")
    page = root / "steps.md"
    page.write_text(
        page.read_text().replace(
            r"&= \frac{2}{n}\mathbf{X}^\top\mathbf{r} .",
            r"&= \frac{3}{n}\mathbf{X}^\top\mathbf{r} .",
        )
    )
    config = root / "_config.yml"
    config.write_text(config.read_text().replace("chapters_strict: true", "chapters_strict: false"))
    built = build(root, "--builder", "latex")
    assert built.returncode == 0, built.output
    tex = next((built.root / "_build" / "latex").glob("*.tex")).read_text(encoding="utf-8")
    assert "Step 3 of 5 does not hold:" in tex
    assert r"FAIL · step 3 of 5" in tex
    # the maths' comment is gone from the LaTeX, where it would swallow \end{split}
    assert "unchecked: an expectation" not in tex and r"\mathbb{E}[\mathbf{r}] = \mathbf{0}" in tex
