"""The real book: every chapter executes and every derivation passes, as the reader sees it."""

from __future__ import annotations

import re

import pytest

pytestmark = pytest.mark.slow


def test_the_book_builds_and_every_derivation_passes(book_copy, build):
    root = book_copy("book")
    built = build(root)
    assert built.returncode == 0, built.output[-6000:]
    report = built.report()
    totals = report["totals"]
    assert totals["fail"] == 0 and totals["unverified"] == 0
    assert totals["pass"] == totals["total"] >= 70
    assert len(report["chapters"]) >= 19
    assert all(c["failure"] is None for c in report["chapters"])
    assert not report["problems"]
    # every derivation box in every chapter carries a PASS badge beside its title
    for chapter in report["chapters"]:
        page = built.page(chapter["chapter"])
        boxes = page.select(".chapters-derivation")
        assert len(boxes) == chapter["derivations"] > 0, chapter["chapter"]
        assert all(b.select_one(".chapters-derivation-title .chapters-badge--pass") for b in boxes)
    status = built.page("status").select_one(".chapters-status-summary").get_text(" ", strip=True)
    assert re.fullmatch(
        rf"{totals['total']} derivations in \d+ chapters: {totals['total']} pass, 0 fail, 0 unverified\.",
        status,
    )
    # a sane build: no warnings at all
    warnings = [line for line in built.output.splitlines() if "WARNING" in line]
    assert not warnings, warnings
