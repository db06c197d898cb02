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
