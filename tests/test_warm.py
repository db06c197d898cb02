"""Warm kernels (issue 11): chapters run in kernels forked from a server that imported the
heavy modules once, and such a kernel is the process a fresh start would have given."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime
from pathlib import Path

import nbformat
import pytest
from conftest import ROOTS, run_jupyter_book

from chapters_support.book import Book
from chapters_support.cli.check import load_chapters
from chapters_support.execution import execute
from chapters_support.execution.forkserver import blas_threads
from chapters_support.execution.runner import cell_timing, kernel_pool
from chapters_support.execution.warm import (
    WARM_ENV,
    ForkedKernel,
    NotForkable,
    WarmKernels,
    first_imports,
    from_config,
    kernel_prefix,
    requested,
)

# what differs between any two kernel processes, forked or not
PER_PROCESS = {"pid", "ppid", "torch_seed", "numpy_draw", "random_draw"}


# -- the pieces, without a kernel --------------------------------------------------------------


def notebook(*cells: tuple[str, str]):
    nb = nbformat.v4.new_notebook()
    for kind, source in cells:
        make = nbformat.v4.new_code_cell if kind == "code" else nbformat.v4.new_markdown_cell
        nb.cells.append(make(source))
    return nb


def test_preload_defaults_to_the_first_code_cells_imports_in_order():
    chapters = [
        notebook(
            ("markdown", "import not_code"),
            ("code", "%matplotlib inline\nimport torch, math\nfrom torch.nn import functional"),
            ("code", "import only_in_a_later_cell"),
        ),
        notebook(("code", "from . import relative\nimport math\nfrom chapters_support import x")),
        notebook(("code", "this is not python(")),
        notebook(("markdown", "no code at all")),
    ]
    assert first_imports(chapters) == ["torch", "math", "torch.nn", "chapters_support"]


def test_the_environment_variable_overrides_the_config(monkeypatch):
    monkeypatch.delenv(WARM_ENV, raising=False)
    assert requested(True) == (True, "")
    assert requested(False) == (False, "chapters_warm_kernels: false in _config.yml")
    monkeypatch.setenv(WARM_ENV, "0")
    assert requested(True) == (False, "CHAPTERS_WARM_KERNELS=0")
    monkeypatch.setenv(WARM_ENV, "off")
    assert requested(True) == (False, "CHAPTERS_WARM_KERNELS=off")
    monkeypatch.setenv(WARM_ENV, "1")
    assert requested(False) == (True, "")
    monkeypatch.delenv(WARM_ENV)
    config = {"chapters_warm_kernels": False, "chapters_warm_preload": ["torch"]}
    assert from_config(config) == (
        (False, "chapters_warm_kernels: false in _config.yml"),
        ["torch"],
    )
    assert from_config({}) == ((True, ""), [])


def test_only_an_ipykernel_kernel_is_forked(tmp_path, monkeypatch):
    kernels = tmp_path / "kernels"
    for name, argv in {
        "other-language": ["/usr/bin/R", "--slave", "-f", "{connection_file}"],
        "python-module": [sys.executable, "-m", "some_kernel", "-f", "{connection_file}"],
        "python-options": ["python", "-X", "utf8", "-m", "ipykernel_launcher", "-f", "{c}"],
    }.items():
        (kernels / name).mkdir(parents=True)
        spec = {"argv": argv, "display_name": name, "language": "python"}
        (kernels / name / "kernel.json").write_text(json.dumps(spec), encoding="utf-8")
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path))
    assert kernel_prefix("python3") == [sys.executable]
    assert kernel_prefix("python-options") == [sys.executable, "-X", "utf8"]
    assert kernel_prefix("other-language") is None
    assert kernel_prefix("python-module") is None
    assert kernel_prefix("no-such-kernel") is None
    with WarmKernels(preload=[], env=dict(os.environ), kernel_name="other-language") as warm:
        assert warm.address is None
        assert warm.describe() == (
            "plain kernels: the kernel 'other-language' is not an ipykernel this can fork"
        )


def test_cell_timing_sums_the_kernels_stamps_and_measures_the_start():
    nb = notebook(("markdown", "text"), ("code", "a"), ("code", "b"), ("code", "no stamps"))
    nb.cells[1].metadata["execution"] = {
        "iopub.execute_input": "2026-12-08T10:00:01.000000Z",
        "shell.execute_reply": "2026-12-08T10:00:01.500000Z",
    }
    nb.cells[2].metadata["execution"] = {
        "iopub.execute_input": "2026-12-08T10:00:02.000000Z",
        "shell.execute_reply": "2026-12-08T10:00:04.250000Z",
    }
    launched = datetime(2026, 12, 8, 10, 0, 0, 800000, tzinfo=UTC).timestamp()
    total, startup = cell_timing(nb, launched)
    assert total == pytest.approx(2.75)
    assert startup == pytest.approx(0.7)  # launch to the end of the first code cell
    assert cell_timing(nb, None) == (pytest.approx(2.75), None)


def test_each_kernel_gets_the_blas_threads_its_environment_asks_for():
    assert blas_threads({"OPENBLAS_NUM_THREADS": "3", "OMP_NUM_THREADS": "1"}) == 3
    assert blas_threads({"GOTO_NUM_THREADS": "2", "OMP_NUM_THREADS": "1"}) == 2
    assert blas_threads({"OMP_NUM_THREADS": "1"}) == 1
    assert blas_threads({"OMP_NUM_THREADS": "0"}) == len(os.sched_getaffinity(0))


def test_our_own_processes_skip_the_slow_optional_import():
    """rfc3987_syntax costs ~1 s at import and serves no notebook schema: the `chapters`
    command and the workers skip it, and notebooks still validate."""
    code = (
        "from chapters_support.startup import skip_slow_imports; skip_slow_imports()\n"
        "import sys, nbformat\n"
        "nbformat.validate(nbformat.v4.new_notebook())\n"
        "print(sys.modules['rfc3987_syntax'] is None)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "True"


def loaded(names: list[str]) -> dict[str, bool]:
    """Run in an execution worker: which of these modules it has imported."""
    return {name: sys.modules.get(name) is not None for name in names}


@pytest.mark.slow
def test_execution_workers_skip_it_before_their_first_task():
    with kernel_pool(1, [], kernel_name="python3", warm=(False, "test")) as pool:
        assert pool.warm.address is None
        got = pool.executor.submit(loaded, ["nbformat", "rfc3987_syntax"]).result()
    assert got == {"nbformat": True, "rfc3987_syntax": False}


# -- kernels -----------------------------------------------------------------------------------


def facts_of(report) -> dict[str, dict]:
    """What each chapter's kernel printed about itself, by chapter."""
    out = {}
    for outcome in report.executed:
        assert outcome.succeeded, outcome.failure
        printed = next(
            o for c in outcome.notebook.cells for o in c.get("outputs", []) if "text" in o
        )
        facts = json.loads(printed["text"])
        figure = outcome.notebook.cells[-1].outputs
        facts["figure"] = [sorted(o.get("data", {})) for o in figure]
        facts["kernel"] = outcome.kernel
        out[outcome.chapter.docname] = facts
    return out


def gone(pid: int) -> bool:
    """Whether the process has exited (a zombie waiting for a reaper counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in {"Z", "X"}


def wait_gone(pid: int, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if gone(pid):
            return True
        time.sleep(0.05)
    return False


@pytest.mark.slow
def test_a_forked_kernel_is_the_process_a_fresh_start_gives(tmp_path, monkeypatch):
    monkeypatch.delenv(WARM_ENV, raising=False)
    chapters = load_chapters(Book.load(ROOTS / "test-warm"), ())
    warm = execute(chapters, tmp_path / "warm", jobs=2, force=True, warm=requested(True))
    monkeypatch.setenv(WARM_ENV, "0")
    plain = execute(chapters, tmp_path / "plain", jobs=2, force=True, warm=requested(True))

    assert warm.kernels.startswith("warm kernels, forked from a server that imported json, os,")
    assert "matplotlib.pyplot, numpy, torch, threadpoolctl once in" in warm.kernels
    assert plain.kernels == "plain kernels: warm kernels turned off by CHAPTERS_WARM_KERNELS=0"
    forked, fresh = facts_of(warm), facts_of(plain)
    assert {f["kernel"] for f in forked.values()} == {"forked"}
    assert {f["kernel"] for f in fresh.values()} == {"plain"}
    for chapter in ("facts-a", "facts-b"):
        a, b = forked[chapter], fresh[chapter]
        # the same working folder, import path, environment (each kernel's own JPY_PARENT_PID,
        # its parent), threads, plotting backend, signal handlers, figures
        different = {k for k in a if a[k] != b[k] and k not in {"environment", "kernel"}}
        assert different == PER_PROCESS, {k: (a[k], b[k]) for k in different - PER_PROCESS}
        a["environment"].pop("JPY_PARENT_PID")
        b["environment"].pop("JPY_PARENT_PID")
        assert b["environment"].pop(WARM_ENV) == "0"  # what this test set for the plain run
        assert a["environment"] == b["environment"]
        assert a["parent_is_jpy_parent"] and a["session_leader"] and not a["cuda_initialized"]
        assert not a["nbformat_loaded"]
        assert a["source"] == str(ROOTS / "test-warm" / f"{chapter}.md")
        assert a["figure"] == [["image/png", "text/plain"]]
        assert a["torch_threads"] == a["blas_threads"][0] == 1  # two kernels share two cores
    # each kernel is reseeded as a fresh process is: no two draw the same numbers
    for key in ("torch_seed", "numpy_draw", "random_draw"):
        assert forked["facts-a"][key] != forked["facts-b"][key], key
    # and nothing is left running: not the kernels, not the server (their parent)
    for facts in forked.values():
        assert gone(facts["pid"]) and gone(facts["ppid"])


@pytest.mark.slow
def test_a_server_that_started_a_thread_forks_nothing(tmp_path, monkeypatch):
    """A preloaded module that starts a thread makes forking unsafe: the server refuses, the
    kernels start the normal way, and the run says why."""
    (tmp_path / "starts_a_thread.py").write_text(
        "import threading, time\n"
        "threading.Thread(target=time.sleep, args=(600,), daemon=True).start()\n",
        encoding="utf-8",
    )
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    monkeypatch.delenv(WARM_ENV, raising=False)
    chapters = load_chapters(Book.load(ROOTS / "test-warm"), ("facts-a",))
    report = execute(chapters, tmp_path / "c", force=True, preload=["starts_a_thread", "json"])
    assert report.kernels == (
        "plain kernels: the preloaded modules started 1 thread(s) in the fork server"
    )
    [outcome] = report.executed
    assert outcome.succeeded, outcome.failure
    assert outcome.kernel.startswith("plain (the preloaded modules started 1 thread(s)")


@pytest.mark.slow
def test_a_module_the_server_cannot_import_is_left_to_the_kernel(tmp_path, monkeypatch):
    monkeypatch.delenv(WARM_ENV, raising=False)
    chapters = load_chapters(Book.load(ROOTS / "test-warm"), ("facts-a",))
    report = execute(chapters, tmp_path / "c", force=True, preload=["json", "no_such_module_x"])
    assert report.kernels.startswith("warm kernels, forked from a server that imported json once")
    assert report.kernels.endswith(
        "; the kernels import for themselves no_such_module_x "
        "(ModuleNotFoundError: No module named 'no_such_module_x')"
    )
    [outcome] = report.executed
    assert outcome.succeeded and outcome.kernel == "forked"


@pytest.mark.slow
def test_the_server_forks_only_its_own_pythons_ipykernel(tmp_path):
    with WarmKernels(preload=[], env=dict(os.environ)) as warm:
        assert warm.address is not None
        with pytest.raises(NotForkable, match=r"is not this server's Python"):
            ForkedKernel.launch(warm.address, ["/bin/sh", "-c", "true"], env={}, cwd=str(tmp_path))
        other = [sys.executable, "-m", "http.server"]
        with pytest.raises(NotForkable, match=r"-m ipykernel_launcher"):
            ForkedKernel.launch(warm.address, other, env={}, cwd=str(tmp_path))


SURVIVOR = """
import json, os, sys, time
from jupyter_client.connect import write_connection_file
from chapters_support.execution.warm import ForkedKernel, WarmKernels

warm = WarmKernels(preload=["json"], env=dict(os.environ))
warm.start()
connection, _ = write_connection_file(os.path.join(sys.argv[1], "kernel.json"))
argv = [sys.executable, "-m", "ipykernel_launcher", "-f", connection]
kernel = ForkedKernel.launch(warm.address, argv, env=dict(os.environ), cwd=sys.argv[1])
print(json.dumps({"server": warm.hello()["pid"], "kernel": kernel.pid}), flush=True)
if sys.argv[2] == "hang-up":
    kernel.conn.close()
time.sleep(600)
"""


@pytest.mark.slow
@pytest.mark.parametrize("how", ["parent-killed", "hang-up"])
def test_no_kernel_outlives_whoever_asked_for_it(tmp_path, how):
    """A build killed with SIGKILL leaves no server and no kernel behind; a provisioner that
    hangs up takes its kernel with it."""
    script = tmp_path / "survivor.py"
    script.write_text(textwrap.dedent(SURVIVOR), encoding="utf-8")
    proc = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path), how], stdout=subprocess.PIPE, text=True
    )
    try:
        pids = json.loads(proc.stdout.readline())
        if how == "parent-killed":
            assert not gone(pids["kernel"]) and not gone(pids["server"])
            proc.send_signal(signal.SIGKILL)
            assert wait_gone(pids["server"]), "the fork server outlived its parent"
        else:
            assert not gone(pids["server"])
        assert wait_gone(pids["kernel"]), "the kernel outlived whoever asked for it"
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()


@pytest.mark.slow
def test_warm_kernels_in_a_build_and_the_config_switch(book_copy, monkeypatch):
    monkeypatch.delenv(WARM_ENV, raising=False)
    root = book_copy("test-warm")
    built = run_jupyter_book(root)
    assert built.returncode == 0, built.output[-3000:]
    assert "warm kernels, forked from a server that imported json, os," in built.output
    config = root / "_config.yml"
    config.write_text(
        config.read_text(encoding="utf-8").replace(
            "chapters_strict: true", "chapters_strict: true\n    chapters_warm_kernels: false"
        ),
        encoding="utf-8",
    )
    shutil.rmtree(root / "_build")
    built = run_jupyter_book(root)
    assert built.returncode == 0, built.output[-3000:]
    assert (
        "plain kernels: warm kernels turned off by chapters_warm_kernels: false "
        "in _config.yml; the cells themselves ran" in built.output
    )
