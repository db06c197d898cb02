"""The PDF (xelatex through sphinx-jupyterbook-latex), as a reader of it sees it.

Both PDFs come from the published sites of test_publish.py: the small book's (fast to
build) and the real book's (slow). ``pdftotext`` gives what the reader can read.
"""

from __future__ import annotations

import json
import re
import subprocess

import pytest
from conftest import require_tool
from test_publish import book_site, record, small_site

pytestmark = pytest.mark.slow


def pdf_text(pdf, *, layout: bool = False) -> str:
    """The PDF's text; with ``layout`` each printed line stays one line (a derivation's
    title and its badge share a baseline, which the reading order may split)."""
    proc = subprocess.run(
        [
            require_tool("pdftotext"),
            "-enc",
            "UTF-8",
            *(["-layout"] if layout else []),
            str(pdf),
            "-",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return proc.stdout


def pdf_pages(pdf) -> int:
    info = subprocess.run(
        [require_tool("pdfinfo"), str(pdf)], capture_output=True, text=True, check=True
    ).stdout
    return int(re.search(r"^Pages:\s+(\d+)", info, re.M)[1])


def squash(text: str) -> str:
    """Text without spaces, line breaks or hyphens, case-folded: line breaking and TeX's
    hyphenation cannot hide a title from the comparison."""
    return re.sub(r"[\s\-‐–]+", "", text.replace("’", "'")).casefold()


def derivation_badges(pdf, report: dict) -> list[str]:
    """The derivations whose title in the PDF is not followed by its PASS badge."""
    flat = squash(pdf_text(pdf, layout=True))
    return [
        f"{d['chapter']}: Derivation {d['number']} ({d['title']})"
        for d in report["derivations"]
        if squash(f"Derivation {d['number']} ({d['title']}) PASS") not in flat
    ]


def test_small_book_pdf_has_title_page_chapters_badges_and_references(tmp_path_factory):
    site = small_site(tmp_path_factory)
    for version in site.versions:
        pdf = site.version(version) / "site-test.pdf"
        text = pdf_text(pdf)
        first_page = text.split("\f")[0]
        # the title page: the title (its & escaped in _config.yml), the version and a date
        assert "Site & test book" in first_page
        assert f"Release {version}" in first_page
        assert re.search(r"[A-Z][a-z]{2} \d{1,2}, \d{4}", first_page), first_page
        for title in ("Gradients of quadratic forms", "Verification status"):
            assert squash(title) in squash(text), title
        report = json.loads((site.version(version) / "derivations.json").read_text("utf-8"))
        assert derivation_badges(pdf, report) == []
        # the status table and the check's own line
        assert "1 derivations in 1 chapters: 1 pass, 0 fail, 0 unverified." in " ".join(
            text.split()
        )
        assert "PASS quad-grad: max abs err" in text
        # cross-references resolved (LaTeX prints ?? for one it could not)
        assert "??" not in text
        assert "See Gradient of a quadratic form and the intro." in " ".join(text.split())
        # \mathbf{\Sigma} keeps its Sigma (bold maths Sigma, U+1D6BA)
        assert "\N{MATHEMATICAL BOLD CAPITAL SIGMA}" in text


def test_real_book_pdf_has_every_chapter_and_a_pass_badge_per_derivation(tmp_path_factory):
    site = book_site(tmp_path_factory)
    folder = site.version("v1.0")
    pdf = folder / "derive-and-verify.pdf"
    text = pdf_text(pdf)
    report = json.loads((folder / "derivations.json").read_text(encoding="utf-8"))
    assert "Release v1.0" in text.split("\f")[0]
    flat = squash(text)
    missing = [c["title"] for c in report["chapters"] if squash(c["title"]) not in flat]
    assert missing == []
    assert derivation_badges(pdf, report) == []
    assert "??" not in text
    total = report["totals"]["total"]
    summary = f"{total} derivations in {len(report['chapters'])} chapters: {total} pass"
    assert summary in " ".join(text.split())
    pages = pdf_pages(pdf)
    record(
        "pdf",
        {
            "book_pages": pages,
            "book_pdf_bytes": pdf.stat().st_size,
            "book_pdf_build_seconds": site.seconds.get("pdf"),
            "book_html_build_seconds": site.seconds.get("html"),
        },
    )
    print(f"\nreal book PDF: {pages} pages, built in {site.seconds.get('pdf')} s")
