"""Ctrl-C and SIGTERM while chapters execute (issue 12): the build stops at once with the
shell's exit status and one line, leaves no kernel behind, keeps every chapter that had
finished in an intact cache, blames no chapter, and the next build executes only the rest."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import require_tool, run_jupyter_book
from test_warm import gone

pytestmark = pytest.mark.slow

CHAPTERS = ["a-quick", "b-slow", "c-slow", "d-quick"]


def processes_of(root: Path, parent: int) -> list[str]:
    """Kernels of this book (their environment names a chapter of it) and fork servers of
    this build, still running."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid() or gone(int(entry.name)):
            continue
        try:
            environ = (entry / "environ").read_bytes()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if f"CHAPTERS_SOURCE={root}".encode() in environ or (
            "chapters_support.execution.forkserver" in cmdline and f"--parent {parent}" in cmdline
        ):
            found.append(f"{entry.name}: {cmdline[:120]}")
    return found


def start(command: list[str], root: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        command,
        cwd=root,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "CHAPTERS_TEST_SLEEP": "60"},
        start_new_session=True,  # its own process group, as a terminal's foreground job is
    )


def cached_chapters(root: Path) -> int:
    """How many chapters the book's jupyter-cache holds now (read while the build runs)."""
    database = root / "_build" / ".jupyter_cache" / "global.db"
    if not database.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=1) as db:
            return db.execute("SELECT count(*) FROM nbcache").fetchone()[0]
    except sqlite3.Error:
        return 0


def wait_for(condition, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    pytest.fail(f"never saw {what} in {seconds:g} s")


def interrupt_when(
    proc: subprocess.Popen[str],
    ready: Callable[[list[str]], bool],
    what: str,
    signum: int,
    *,
    whom: str = "group",
    settle: float = 1.0,
) -> tuple[str, float]:
    """Once ``ready(lines so far)``, and ``settle`` seconds later, send ``signum`` to the
    process's group (a terminal's Ctrl-C) or to the process alone; returns all its output and
    how long it took to stop. A process still running after 30 s is killed."""
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    try:
        wait_for(lambda: ready(lines), 120, what)
        time.sleep(settle)
        sent = time.monotonic()
        if whom == "group":
            os.killpg(proc.pid, signum)
        else:
            proc.send_signal(signum)
        proc.wait(timeout=30)
        stopped = time.monotonic() - sent
        reader.join(timeout=10)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        proc.stdout.close()
    return "".join(lines), stopped


@pytest.mark.parametrize(
    ("tool", "signum", "whom"),
    [
        ("jupyter-book", signal.SIGINT, "group"),  # a terminal's Ctrl-C
        ("jupyter-book", signal.SIGTERM, "process"),  # kill PID, a CI runner's cancel
        ("chapters", signal.SIGINT, "group"),
    ],
)
def test_a_signal_stops_the_build_and_loses_nothing(book_copy, tool, signum, whom):
    root = book_copy("test-interrupt")
    command = [require_tool(tool), *(["build", str(root)] if tool == "jupyter-book" else [])]
    if tool == "chapters":
        command += ["check", "--book", str(root)]
    proc = start(command, root)
    # a-quick is cached; b-slow and c-slow are in the middle of their 60 s cells
    output, stopped = interrupt_when(
        proc,
        lambda _: cached_chapters(root) >= 1,
        "a chapter cached",
        signum,
        whom=whom,
        settle=2.0,
    )
    name = signal.Signals(signum).name
    assert proc.returncode == 128 + signum, output[-3000:]
    assert stopped < 15, f"took {stopped:.1f} s to stop"  # the slow cells sleep 60 s
    assert (
        f"interrupted by {name}: 1 chapter(s) cached, 3 not run "
        "(the next build executes only those)" in output
    ), output[-3000:]
    # no chapter is blamed for the interrupt, and no traceback follows the line
    assert "FAILED" not in output and "failed" not in output.split("interrupted by")[-1]
    assert "Traceback" not in output and "problem(s)" not in output
    assert processes_of(root, proc.pid) == []
    database = root / "_build" / ".jupyter_cache" / "global.db"
    with sqlite3.connect(database) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    # the next build executes only what did not run, and completes
    built = run_jupyter_book(root, env={"CHAPTERS_TEST_SLEEP": "0"})
    assert built.returncode == 0, built.output[-3000:]
    executed = re.findall(r"executing (\S+) \(", built.output)
    assert sorted(executed) == ["b-slow", "c-slow", "d-quick"]


def test_the_workers_leave_ctrl_c_to_the_run():
    """A terminal's Ctrl-C reaches every process of the group: the workers ignore it (the
    run stops them), and their kernels are in sessions of their own anyway."""
    code = (
        "import signal\n"
        "from chapters_support.startup import execution_worker\n"
        "execution_worker()\n"
        "print(signal.getsignal(signal.SIGINT) is signal.SIG_IGN)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "True"


def test_two_builds_at_once_both_finish_and_lose_no_record(book_copy):
    """The second build waits for the first to execute, then finds every chapter cached:
    no "database is locked", no chapter executed twice, every record there."""
    root = book_copy("test-interrupt")
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "CHAPTERS_TEST_SLEEP": "4"}
    first = subprocess.Popen(
        [require_tool("jupyter-book"), "build", str(root)],
        cwd=root,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        wait_for(lambda: cached_chapters(root) >= 1, 120, "a chapter cached")
        second = subprocess.run(
            [require_tool("chapters"), "check", "--book", str(root)],
            cwd=root,
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )
        out_first, _ = first.communicate(timeout=300)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert first.returncode == 0, out_first[-3000:]
    assert second.returncode == 0, second.stdout[-3000:]
    assert f"pid {first.pid}) is executing chapters into" in second.stdout.replace("\n", " ")
    assert "executed 0 chapter(s), 4 from the cache" in second.stdout
    assert "locked" not in out_first + second.stdout + second.stderr
    assert sorted(re.findall(r"executing (\S+) \(", out_first)) == CHAPTERS
    assert cached_chapters(root) == 4


def run_then_report_signals(payload: dict) -> dict[str, str]:
    """Run in an execution worker: execute a chapter, then say how SIGINT/SIGTERM are handled."""
    from chapters_support.execution.runner import execute_payload

    failure = execute_payload(payload)["failure"]
    assert failure is None, failure
    return {name: str(signal.getsignal(getattr(signal, name))) for name in ("SIGINT", "SIGTERM")}


def test_a_worker_still_ignores_ctrl_c_after_nbclient_ran_a_chapter():
    """nbclient installs SIGINT/SIGTERM handlers around a kernel (they shut the kernel down)
    and leaves Python's default Ctrl-C handler behind: the workers' client does neither."""
    from conftest import ROOTS

    from chapters_support.book import Book
    from chapters_support.cli.check import load_chapters
    from chapters_support.execution.runner import kernel_pool, payload_for

    [chapter] = load_chapters(Book.load(ROOTS / "test-warm"), ("facts-a",))
    with kernel_pool(1, [chapter.notebook], kernel_name="python3") as pool:
        payload = payload_for(chapter, chapter.notebook, pool.env, pool.warm.address)
        handlers = pool.executor.submit(run_then_report_signals, payload).result()
    ignored = str(signal.SIG_IGN)
    assert handlers == {"SIGINT": ignored, "SIGTERM": ignored}


def test_ctrl_c_stops_chapters_mutate_at_once(book_copy):
    """``chapters mutate`` runs its mutants in the same kernels as a build: Ctrl-C stops them
    all at once, with the shell's status and one line, records nothing and leaves no kernel."""
    root = book_copy("test-mutate")
    layer = root / "layer.md"
    text = layer.read_text(encoding="utf-8")
    first_cell_end = text.index("```\n", text.index("```{code-cell}")) + len("```\n")
    slow = (
        "\n```{code-cell} ipython3\nimport os\nimport time\n\n"
        'time.sleep(float(os.environ.get("CHAPTERS_TEST_SLEEP", "0")))\n```\n'
    )
    layer.write_text(text[:first_cell_end] + slow + text[first_cell_end:], encoding="utf-8")
    proc = start(
        [require_tool("chapters"), "mutate", "--book", str(root), "-j", "2", "--record"], root
    )
    output, stopped = interrupt_when(
        proc, lambda _: len(processes_of(root, proc.pid)) >= 2, "two mutant kernels", signal.SIGINT
    )
    output = " ".join(output.split())
    assert proc.returncode == 130, output[-3000:]
    assert stopped < 15, f"took {stopped:.1f} s to stop"
    assert re.search(
        r"interrupted by SIGINT: 0 of \d+ runs finished; no score was recorded", output
    ), output[-3000:]
    assert "Traceback" not in output
    assert processes_of(root, proc.pid) == []
    assert not (root / "_mutation.json").exists()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_while_sphinx_writes_is_one_line_and_the_shells_status(book_copy, signum):
    """After execution: jupyter-book would exit 1 with a box around a KeyboardInterrupt; the
    build stops with the shell's status and one line, and the cache is untouched."""
    root = book_copy("test-interrupt")
    built = run_jupyter_book(root, env={"CHAPTERS_TEST_SLEEP": "0"})
    assert built.returncode == 0, built.output[-3000:]
    proc = subprocess.Popen(
        [require_tool("jupyter-book"), "build", "--all", str(root)],
        cwd=root,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "CHAPTERS_TEST_WRITE_SLEEP": "30"},
        start_new_session=True,
    )
    output, _ = interrupt_when(
        proc, lambda lines: any("writing output" in line for line in lines), "writing", signum
    )
    assert proc.returncode == 128 + signum, output[-3000:]
    name = signal.Signals(signum).name
    assert output.count(f"chapters: interrupted by {name} while Sphinx read and wrote") == 1
    assert "Traceback" not in output and "non-zero exit code" not in output, output[-3000:]
    assert "executing" not in output  # every chapter came from the cache
    assert cached_chapters(root) == 4
