"""The Chinese edition's machinery (issue 13) on a small book: catalogues extracted without
display maths, a translated edition built from the English cache with no execution, code and
maths shared byte for byte, a translation that changes a formula refused, an out-of-date one
marked; and the real book's catalogues checked."""

from __future__ import annotations

import json
import re
import shutil

import pytest
from babel.messages.pofile import read_po, write_po
from bs4 import BeautifulSoup
from conftest import REPO, ROOTS, run_jupyter_book

from chapters_support.catalogues import catalogues, glossary, read
from chapters_support.cli import main

pytestmark = pytest.mark.slow

EXTRA = """
The gradient is linear in $\\mathbf{w}$.

A second paragraph, to be edited later.
"""
TRANSLATIONS = {
    "Good chapter": "好的一章",
    "Gradient of a squared norm": "平方范数的梯度",
    "The gradient is linear in $\\mathbf{w}$.": "梯度关于 $\\mathbf{w}$ 是线性的。",
    # a translator's slip: the exponent 2 became 3
    "For $L(\\mathbf{w}) = \\lVert \\mathbf{X}\\mathbf{w} \\rVert_2^2$ the chain rule gives": (
        "对 $L(\\mathbf{w}) = \\lVert \\mathbf{X}\\mathbf{w} \\rVert_2^3$，链式法则给出"
    ),
    "A second paragraph, to be edited later.": "第二段，稍后会修改。",
}


def translate(po_path, strings):
    with po_path.open("rb") as handle:
        catalogue = read_po(handle)
    for message in catalogue:
        if message.id in strings:
            message.string = strings[message.id]
    with po_path.open("wb") as handle:
        write_po(handle, catalogue, width=0)


def page(path) -> BeautifulSoup:
    return BeautifulSoup(path.read_text(encoding="utf-8"), "html.parser")


def shared_parts(soup: BeautifulSoup) -> dict[str, list[str]]:
    """What both editions must show identically: code, outputs, display maths, badges."""
    return {
        "code": [c.get_text() for c in soup.select("div.cell_input pre")],
        "outputs": [o.get_text() for o in soup.select("div.cell_output")],
        "display maths": [m.get_text() for m in soup.select("div.math")],
        # the verdicts; their words are the page's language
        "badges": [b["class"] for b in soup.select(".chapters-badge")],
    }


def test_a_translated_edition_shares_what_is_verified(tmp_path, capsys):
    root = tmp_path / "book"
    shutil.copytree(ROOTS / "test-pass", root, ignore=shutil.ignore_patterns("_build"))
    good = root / "good.md"
    good.write_text(good.read_text(encoding="utf-8") + EXTRA, encoding="utf-8")
    built = run_jupyter_book(root)
    assert built.returncode == 0, built.output[-3000:]

    # the catalogues: every paragraph and title, no display maths, no code
    assert main(["i18n", "update", "--book", str(root), "--language", "zh_CN"]) == 0
    po = root / "locales" / "zh_CN" / "LC_MESSAGES" / "good.po"
    with po.open("rb") as handle:
        ids = {str(m.id) for m in read_po(handle) if m.id}
    assert set(TRANSLATIONS) <= ids
    assert not any("\\frac{\\partial L}" in i or "torch" in i for i in ids)
    translate(po, TRANSLATIONS)

    # the English paragraph changes after its translation: out of date (fuzzy)
    good.write_text(
        good.read_text(encoding="utf-8").replace("to be edited later", "edited now"),
        encoding="utf-8",
    )
    assert main(["i18n", "update", "--book", str(root), "--language", "zh_CN"]) == 0
    capsys.readouterr()
    assert main(["i18n", "status", "--book", str(root), "--language", "zh_CN"]) == 1
    status = " ".join(capsys.readouterr().out.split())
    assert "good: 1 translation(s) out of date" in status
    assert "inline maths differ: missing ['L(\\\\mathbf{w}) = \\\\lVert" in status
    assert "1 problem(s)" in status

    # the Chinese edition, from the English cache
    records = len(list((root / "_build" / ".jupyter_cache" / "executed").iterdir()))
    assert main(["build", "--book", str(root), "--language", "zh_CN"]) == 0
    out = capsys.readouterr().out
    assert len(list((root / "_build" / ".jupyter_cache" / "executed").iterdir())) == records
    zh_html = root / "_build" / "zh_CN" / "_build" / "html"
    zh, en = page(zh_html / "good.html"), page(root / "_build" / "html" / "good.html")
    assert zh.html["lang"] == "zh-CN"
    assert zh.select_one("h1").get_text().startswith("好的一章")
    text = " ".join(zh.get_text(" ").split())
    assert "平方范数的梯度" in text and "梯度关于" in text
    # the slip is not shown: that paragraph is the English one, its formula the verified one
    assert "链式法则给出" not in text and "the chain rule gives" in text
    # the out-of-date paragraph is shown in English, marked, and the page says so
    stale = zh.select(".chapters-i18n-stale")
    assert [s.get_text(" ", strip=True) for s in stale] == ["A second paragraph, edited now."]
    assert len(zh.select(".chapters-i18n-note")) == 1
    # code, outputs, display maths and badges: the English page's, byte for byte
    assert shared_parts(zh) == shared_parts(en)
    assert shared_parts(en)["display maths"] and shared_parts(en)["code"]
    # the extension's words are Chinese: the caption, the badge, the status page
    caption = zh.select_one(".chapters-derivation-title").get_text(" ", strip=True)
    assert caption.startswith("推导 1 （平方范数的梯度） 通过"), caption
    status_page = page(zh_html / "status.html")
    summary = status_page.select_one(".chapters-status-summary").get_text(" ", strip=True)
    assert summary == "1 章共 2 个推导： 2 个通过，0 个未通过，0 个未验证。"
    report = json.loads((zh_html / "derivations.json").read_text(encoding="utf-8"))
    assert [d["title"] for d in report["derivations"]][0] == "平方范数的梯度"
    assert report["totals"]["pass"] == 2
    assert "zh_CN: " in out


def test_chinese_edition_executes_nothing_and_warns_about_the_slip(tmp_path):
    """The build's own words: no chapter executed, and the refused translation named."""
    root = tmp_path / "book"
    shutil.copytree(ROOTS / "test-pass", root, ignore=shutil.ignore_patterns("_build"))
    good = root / "good.md"
    good.write_text(good.read_text(encoding="utf-8") + EXTRA, encoding="utf-8")
    assert run_jupyter_book(root).returncode == 0
    assert main(["i18n", "update", "--book", str(root), "--language", "zh_CN"]) == 0
    translate(root / "locales" / "zh_CN" / "LC_MESSAGES" / "good.po", TRANSLATIONS)
    from chapters_support.book import Book
    from chapters_support.cli.build import write_edition_config

    config = write_edition_config(Book.load(root), "zh_CN", ["en", "zh_CN"])
    built = run_jupyter_book(
        root, "--config", str(config), "--path-output", str(root / "_build" / "zh_CN")
    )
    assert built.returncode == 0, built.output[-3000:]
    assert "nothing executed" in built.output and "executing" not in built.output
    assert "Prefix dict" not in built.output  # jieba (Chinese search) builds quietly
    assert re.search(
        r"good\.md:\d+: WARNING: the translation changes the inline maths, so the English text "
        r"is shown: the English has \$L\(\\mathbf\{w\}\) = \\lVert \\mathbf\{X\}\\mathbf\{w\} "
        r"\\rVert_2\^2\$ where the translation has \$L\(\\mathbf\{w\}\) = .*\\rVert_2\^3\$",
        built.output,
    ), built.output[-3000:]


def test_the_books_catalogues_keep_maths_code_links_and_the_glossary():
    """Every translation of the real book keeps its message's inline maths, code, role and
    link targets, and uses the glossary's terms (what `chapters i18n status` reports)."""
    terms = glossary(REPO / "book", "zh_CN")
    assert len(terms) >= 90
    found = catalogues(REPO / "book", "zh_CN")
    chapters = {p.stem for p in (REPO / "book").glob("*.md")}
    assert {p.stem for p in found} == chapters
    problems = [str(p) for path in found for p in read(path, terms).problems]
    assert problems == []


def test_the_extensions_words_are_translated_and_compiled():
    """Every string the extension shows has a Chinese translation, none out of date, and the
    .mo Sphinx loads is the .po compiled (python -m chapters_support.sphinx_ext.messages)."""
    from chapters_support.sphinx_ext import messages

    wanted = {m.id for m in messages.extracted() if m.id}
    catalogue = messages.read("zh_CN")
    translated = {m.id for m in catalogue if m.id and m.string and not m.fuzzy}
    assert wanted - translated == set()
    assert len(wanted) >= 35
    mo = messages.catalogue_path("zh_CN").with_suffix(".mo")
    assert mo.read_bytes() == messages.compiled(catalogue)


def test_publish_writes_both_editions_linked_to_each_other(tmp_path, capsys):
    """A published version holds the English edition and, in zh/, the Chinese one: every page
    links to its twin, each edition's switcher lists its own pages of each version, the
    Chinese PDF has every glyph, and derivations.json is one and the same data."""
    import subprocess
    from urllib.parse import urljoin

    root = tmp_path / "book"
    shutil.copytree(ROOTS / "test-site", root, ignore=shutil.ignore_patterns("_build"))
    assert run_jupyter_book(root).returncode == 0
    assert main(["i18n", "update", "--book", str(root), "--language", "zh_CN"]) == 0
    po = root / "locales" / "zh_CN" / "LC_MESSAGES" / "gradients.po"
    with po.open("rb") as handle:
        title = next(str(m.id) for m in read_po(handle) if m.id)
    translate(po, {title: "梯度一章"})
    site = tmp_path / "site"
    argv = ["publish", "--book", str(root), "--version", "v1", "--site", str(site), "--latest"]
    assert main(argv) == 0, capsys.readouterr()
    assert "the zh_CN edition in zh/" in capsys.readouterr().out
    en_root, zh_root = site / "v1", site / "v1" / "zh"
    for pagename in ("intro", "gradients", "status"):
        en_page, zh_page = en_root / f"{pagename}.html", zh_root / f"{pagename}.html"
        en, zh = page(en_page), page(zh_page)
        assert (en.html["lang"], zh.html["lang"]) == ("en", "zh-CN")
        to_zh = en.select_one('link[rel="alternate"][hreflang="zh-CN"]')["href"]
        to_en = zh.select_one('link[rel="alternate"][hreflang="en"]')["href"]
        assert urljoin(en_page.as_uri(), to_zh) == zh_page.as_uri()
        assert urljoin(zh_page.as_uri(), to_en) == en_page.as_uri()
    assert page(zh_root / "gradients.html").select_one("h1").get_text().startswith("梯度一章")
    switcher = json.loads((site / "versions.zh_CN.json").read_text(encoding="utf-8"))
    assert [e["url"] for e in switcher] == ["../../v1/zh/"]
    assert (en_root / "derivations.json").read_bytes() == (
        zh_root / "derivations.json"
    ).read_bytes()
    assert (site / "latest" / "zh" / "gradients.html").is_file()
    # the Chinese PDF: xeCJK with Noto CJK, its Chinese text there (no glyph dropped: the
    # publish fails on any)
    pdfs = list(zh_root.glob("*.pdf"))
    assert len(pdfs) == 1, pdfs
    text = subprocess.run(
        ["pdftotext", str(pdfs[0]), "-"], capture_output=True, text=True, check=True
    ).stdout
    assert "梯度一章" in text and "推导 1" in text
    fonts = subprocess.run(["pdffonts", str(pdfs[0])], capture_output=True, text=True).stdout
    assert "NotoSerifCJK" in fonts
