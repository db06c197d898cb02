"""The package as users get it (issue 12): an sdist and a wheel that pass ``twine check``, and a
chapter notebook downloaded from the published site that runs, every check PASS, in a fresh
virtual environment outside the repository with nothing but that wheel and what its first
cell asks for."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest
from conftest import REPO
from test_publish import book_site

from chapters_support.publish.pages import kernel_requirements
from chapters_support.result import MIME_TYPE

pytestmark = pytest.mark.slow

RUN = """
import json, sys
import nbformat
from nbclient import NotebookClient

notebook = nbformat.read(sys.argv[1], as_version=4)
NotebookClient(notebook, timeout=300, kernel_name="python3").execute()
nbformat.write(notebook, sys.argv[2])
"""


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "build", "--sdist", "--wheel", "--outdir", str(out), str(REPO)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    return out


def test_the_sdist_and_wheel_pass_twine_check(dist):
    files = sorted(p.name for p in dist.iterdir())
    assert len(files) == 2
    assert {f.rsplit(".", 2)[-1] if f.endswith(".whl") else "sdist" for f in files} == {
        "whl",
        "sdist",
    }
    done = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", *map(str, dist.iterdir())],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("PASSED") == 2


def test_a_downloaded_notebook_runs_outside_the_repository(dist, tmp_path, tmp_path_factory):
    site = book_site(tmp_path_factory)
    sources = site.version("v1.0") / "_sources"
    # what a reader downloads from the site: the notebook (and the chapter's source beside it)
    download = tmp_path / "downloads"
    download.mkdir()
    for name in ("matrix-calculus.ipynb", "matrix-calculus.md"):
        shutil.copyfile(sources / name, download / name)
    venv = tmp_path / "fresh"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    pip = [python, "-m", "pip", "install", "--quiet", "-c", str(REPO / ".ci/constraints-cpu.txt")]
    wheel = next(dist.glob("*.whl"))
    # what the notebook's first cell installs (the wheel stands in for the git URL), and
    # Jupyter to run it, which Colab or the reader's own Jupyter brings
    subprocess.run([*pip, "--no-deps", str(wheel)], check=True, timeout=600)
    subprocess.run([*pip, *kernel_requirements(), "nbclient", "ipykernel"], check=True, timeout=900)
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(RUN), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHAPTERS_", "PYTHON"))}
    env["PATH"] = f"{venv / 'bin'}:{env.get('PATH', '')}"
    done = subprocess.run(
        [python, str(script), "matrix-calculus.ipynb", "executed.ipynb"],
        cwd=download,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    cells = json.loads((download / "executed.ipynb").read_text(encoding="utf-8"))["cells"]
    results = [
        json.loads(data) if isinstance(data, str) else data
        for cell in cells
        for output in cell.get("outputs", [])
        if (data := output.get("data", {}).get(MIME_TYPE)) is not None
    ]
    assert results, "no check ran"
    assert [r["status"] for r in results] == ["pass"] * len(results)
    # the step checks read the chapter's source beside the notebook, as the first cell found it
    assert {r["kind"] for r in results} >= {"gradient", "steps"}
    # it ran the wheel's package, not this checkout's
    where = subprocess.run(
        [python, "-c", "import chapters_support; print(chapters_support.__file__)"],
        cwd=download,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert str(venv) in where and str(REPO) not in where
