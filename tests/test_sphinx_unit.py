"""The Sphinx side alone, with ``sphinx.testing`` (issue 12): the collector, the transforms and
the MIME renderer on notebooks whose outputs are already there (no kernel), in one process
and with a ``-j 2`` parallel read, since the extension declares ``parallel_read_safe``."""

from __future__ import annotations

import io
import json
from pathlib import Path

import nbformat
import pytest
import torch
from bs4 import BeautifulSoup
from sphinx.testing.util import SphinxTestApp

from chapters_support.checks import check_close
from chapters_support.result import MIME_TYPE

CHAPTERS = 8  # Sphinx reads in parallel only when there are more than five documents

CONF = """
extensions = ["myst_nb", "chapters_support.sphinx_ext"]
nb_execution_mode = "off"
myst_enable_extensions = ["amsmath", "colon_fence", "dollarmath"]
chapters_strict = False
suppress_warnings = ["mystnb.unknown_mime_type"]
"""


def chapter(index: int) -> nbformat.NotebookNode:
    """A chapter with one derivation and its check's output, as a kernel would have left it;
    every third chapter's check FAILs."""
    label = f"sq-{index}"
    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3"}
    notebook.cells.append(
        nbformat.v4.new_markdown_cell(
            f"# Chapter {index}\n\n"
            f"```{{derivation}} Square of {index}\n:label: {label}\n\n"
            f"$$\n x^2 = {index * index} \\quad\\text{{at}}\\quad x = {index}\n$$\n```\n"
        )
    )
    value = float(index * index) + (1.0 if index % 3 == 0 else 0.0)
    reference = torch.tensor([float(index * index)], dtype=torch.float64)
    result = check_close(label, torch.tensor([value], dtype=torch.float64), reference)
    code = nbformat.v4.new_code_cell("check_close(...)", execution_count=1)
    code.outputs = [nbformat.v4.new_output("display_data", data=result.to_bundle())]
    notebook.cells.append(code)
    return notebook


@pytest.fixture
def book(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    (src / "conf.py").write_text(CONF, encoding="utf-8")
    toctree = "\n".join(f"chapter-{i}" for i in range(1, CHAPTERS + 1))
    (src / "index.md").write_text(
        f"# Book\n\n```{{toctree}}\n{toctree}\nstatus\n```\n", encoding="utf-8"
    )
    (src / "status.md").write_text("# Status\n\n```{derivation-status}\n```\n", encoding="utf-8")
    for i in range(1, CHAPTERS + 1):
        nbformat.write(chapter(i), src / f"chapter-{i}.ipynb")
    return src


def build(src: Path, out: Path, parallel: int) -> tuple[SphinxTestApp, str]:
    warnings = io.StringIO()
    app = SphinxTestApp(
        "html", srcdir=src, builddir=out, parallel=parallel, status=io.StringIO(), warning=warnings
    )
    try:
        app.build()
    finally:
        app.cleanup()
    return app, warnings.getvalue()


def badges(app: SphinxTestApp) -> dict[str, str]:
    found = {}
    for i in range(1, CHAPTERS + 1):
        page = Path(app.outdir, f"chapter-{i}.html").read_text(encoding="utf-8")
        soup = BeautifulSoup(page, "html.parser")
        box = soup.select_one(".chapters-derivation")
        badge = box.select_one(".chapters-badge")
        found[box["id"]] = badge.get_text(" ", strip=True).split(" ")[0]
    return found


def test_collector_transforms_and_renderer(book, tmp_path):
    app, warnings = build(book, tmp_path / "serial", parallel=0)
    # the collector: every derivation and every result, per document
    env = app.env
    assert sorted(env.chapters_derivations) == [f"chapter-{i}" for i in range(1, CHAPTERS + 1)]
    assert sum(len(v) for v in env.chapters_results.values()) == CHAPTERS
    # the transforms: a badge by each derivation, with its verdict
    expected = {f"sq-{i}": "FAIL" if i % 3 == 0 else "PASS" for i in range(1, CHAPTERS + 1)}
    assert badges(app) == expected
    # the MIME renderer: the check's own HTML in the page, not the bundle's fallbacks
    page = Path(app.outdir, "chapter-1.html").read_text(encoding="utf-8")
    assert "chapters-check" in page and "application/vnd.chapters-support" not in page
    # the status page and derivations.json count the same
    report = json.loads(Path(app.outdir, "derivations.json").read_text(encoding="utf-8"))
    assert report["totals"] == {"pass": 6, "fail": 2, "unverified": 0, "total": 8}
    status = Path(app.outdir, "status.html").read_text(encoding="utf-8")
    assert "8 derivations in 8 chapters: 6 pass, 2 fail, 0 unverified." in " ".join(
        BeautifulSoup(status, "html.parser").get_text(" ").split()
    )
    # not strict: the two failures are warnings naming the chapter and the label
    assert warnings.count("derivation 'sq-") == 2 and "chapter-3" in warnings


def test_a_parallel_read_gives_the_same_book(book, tmp_path):
    serial, _ = build(book, tmp_path / "serial", parallel=0)
    parallel, _ = build(book, tmp_path / "parallel", parallel=2)
    assert parallel.parallel == 2 and parallel.is_parallel_allowed("read")
    for attr in ("chapters_derivations", "chapters_results"):
        assert getattr(parallel.env, attr) == getattr(serial.env, attr), attr
    assert badges(parallel) == badges(serial)

    def report(app):
        data = json.loads(Path(app.outdir, "derivations.json").read_text(encoding="utf-8"))
        data.pop("generated", None)
        return data

    assert report(parallel) == report(serial)


def _run_elsewhere(src: Path, label: str) -> None:
    """Chapter ``label``'s cached check as if a CUDA machine with another torch had run it."""
    path = src / f"chapter-{label.split('-')[1]}.ipynb"
    notebook = nbformat.read(path, as_version=4)
    payload = notebook.cells[1].outputs[0]["data"][MIME_TYPE]
    payload["environment"] = {
        **payload["environment"],
        "torch": "2.8.0+cu128",
        "cuda": "12.8",
        "device_type": "cuda",
        "device_name": "NVIDIA H100 80GB HBM3",
    }
    payload["device"] = "cuda:0"
    nbformat.write(notebook, path)


def marks(app: SphinxTestApp) -> dict[str, str]:
    found = {}
    for i in range(1, CHAPTERS + 1):
        page = Path(app.outdir, f"chapter-{i}.html").read_text(encoding="utf-8")
        mark = BeautifulSoup(page, "html.parser").select_one(".chapters-derivation-title")
        found[f"sq-{i}"] = " ".join(
            m.get_text(" ", strip=True) for m in mark.select(".chapters-elsewhere")
        )
    return found


@pytest.fixture
def this_build(monkeypatch):
    """This build's torch and device, asked afresh (the answer is kept once per process)."""
    from chapters_support.provenance import installed

    monkeypatch.delenv("CHAPTERS_DEVICE", raising=False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    installed.cache_clear()
    yield monkeypatch
    installed.cache_clear()


def test_a_result_verified_on_another_torch_or_device_is_marked(book, tmp_path, this_build):
    """Issue 12: a cached result from another torch or device says where it was verified, on
    its badge, on the status page and in derivations.json; when this build's own torch or device
    changes, every badge is rewritten (a no-change rebuild still writes nothing)."""
    from chapters_support.provenance import installed

    _run_elsewhere(book, "sq-2")
    app, _ = build(book, tmp_path / "out", parallel=0)
    here = f"torch {torch.__version__}, CPU"
    assert marks(app) == {
        f"sq-{i}": "verified on torch 2.8.0+cu128, CUDA" if i == 2 else ""
        for i in range(1, CHAPTERS + 1)
    }
    status = BeautifulSoup(
        Path(app.outdir, "status.html").read_text(encoding="utf-8"), "html.parser"
    )
    text = " ".join(status.get_text(" ").split())
    assert f"This build has {here}; 1 of 8 derivations were verified by an earlier run" in text
    row = next(tr for tr in status.select("tr") if "Square of 2" in tr.get_text())
    assert row.select_one(".chapters-elsewhere").get_text() == "verified on torch 2.8.0+cu128, CUDA"
    assert "NVIDIA H100 80GB HBM3 — torch 2.8.0+cu128, CUDA 12.8" in text
    assert f"torch {torch.__version__}, no CUDA, Python" in text and "(this build's)" in text
    report = json.loads(Path(app.outdir, "derivations.json").read_text(encoding="utf-8"))
    assert report["build_environment"] == {"torch": torch.__version__, "device_type": "cpu"}
    elsewhere = {r["label"]: r["verified_elsewhere"] for r in report["derivations"]}
    assert elsewhere["sq-2"] == "verified on torch 2.8.0+cu128, CUDA"
    assert [label for label, mark in elsewhere.items() if mark] == ["sq-2"]

    # the same cache read by a build whose chapters would run on CUDA: every page is rewritten
    this_build.setenv("CHAPTERS_DEVICE", "cuda")
    installed.cache_clear()
    app, _ = build(book, tmp_path / "out", parallel=0)
    assert marks(app) == {
        f"sq-{i}": "verified on torch 2.8.0+cu128, CUDA"
        if i == 2
        else f"verified on torch {torch.__version__}, CPU"
        for i in range(1, CHAPTERS + 1)
    }
    # and nothing changed since: nothing is written
    page = Path(app.outdir, "chapter-1.html")
    before = page.stat().st_mtime_ns
    build(book, tmp_path / "out", parallel=0)
    assert page.stat().st_mtime_ns == before


def test_the_pdf_says_where_a_result_was_verified(book, tmp_path, this_build):
    _run_elsewhere(book, "sq-2")
    app = SphinxTestApp(
        "latex",
        srcdir=book,
        builddir=tmp_path / "latex",
        status=io.StringIO(),
        warning=io.StringIO(),
    )
    try:
        app.build()
    finally:
        app.cleanup()
    tex = next(Path(app.outdir).glob("*.tex")).read_text(encoding="utf-8")
    assert tex.count("verified on torch 2.8.0+cu128, CUDA") == 2  # the badge, the status table
    assert "verified on torch " + torch.__version__ not in tex


def test_a_full_disk_while_writing_the_site_is_one_clear_error(book, tmp_path, monkeypatch):
    """Issue 12: ENOSPC from Sphinx's HTML writer ends the build with our message (where, and
    that the cache is safe), not Sphinx's traceback of an OSError."""
    import errno

    from sphinx.builders.html import StandaloneHTMLBuilder

    from chapters_support.sphinx_ext.execute import ChaptersBuildError

    handle_page = StandaloneHTMLBuilder.handle_page

    def full(self, pagename, *args, **kwargs):
        if pagename == "chapter-3":
            raise OSError(errno.ENOSPC, "No space left on device", f"{self.outdir}/chapter-3.html")
        return handle_page(self, pagename, *args, **kwargs)

    monkeypatch.setattr(StandaloneHTMLBuilder, "handle_page", full)
    # sphinx-build's way (jupyter-book's CLI gets the same words and exit status 1)
    monkeypatch.delitem(__import__("sys").modules, "jupyter_book.cli.main", raising=False)
    app = SphinxTestApp(
        "html", srcdir=book, builddir=tmp_path / "out", status=io.StringIO(), warning=io.StringIO()
    )
    try:
        with pytest.raises(ChaptersBuildError) as stopped:
            app.build()
    finally:
        app.cleanup()
    message = " ".join(str(stopped.value).split())
    assert message.startswith(
        f"no space left on the device while writing the book into {app.outdir} "
        f"({app.outdir}/chapter-3.html)."
    )
    assert "writing does not touch the cache" in message
