"""A jupyter-cache that cannot be read (issue 12): a corrupt, a truncated and an old cache are
moved aside and rebuilt, announced, never a traceback; in require-cache mode the build stops
naming the file and the fix."""

from __future__ import annotations

import errno
import shutil
import sqlite3
from pathlib import Path

import pytest
from conftest import ROOTS, run_jupyter_book

from chapters_support.cli import main
from chapters_support.execution.health import cache_problem

pytestmark = pytest.mark.slow


def not_a_database(cache) -> None:
    (cache / "global.db").write_bytes(b"this is not a database, it is a note\n" * 100)


def truncated(cache) -> None:
    data = (cache / "global.db").read_bytes()
    (cache / "global.db").write_bytes(data[: len(data) // 3])


def from_an_older_jupyter_cache(cache) -> None:
    """jupyter-cache 0.4 kept its projects in a table called nbstage."""
    (cache / "global.db").unlink()
    with sqlite3.connect(cache / "global.db") as db:
        db.execute("CREATE TABLE nbcache (pk INTEGER PRIMARY KEY, hashkey VARCHAR(255))")
        db.execute("CREATE TABLE nbstage (pk INTEGER PRIMARY KEY, uri VARCHAR(255))")
    (cache / "__version__.txt").write_text("0.4.3")


DAMAGES = {
    "not a database": (not_a_database, "file is not a database"),
    "truncated": (truncated, "database disk image is malformed"),
    "older jupyter-cache": (from_an_older_jupyter_cache, "written by jupyter-cache 0.4.3"),
}


@pytest.fixture(scope="module")
def cached_book(tmp_path_factory):
    """test-pass built once: a real cache to damage."""
    root = tmp_path_factory.mktemp("cached") / "book"
    shutil.copytree(ROOTS / "test-pass", root, ignore=shutil.ignore_patterns("_build"))
    built = run_jupyter_book(root)
    assert built.returncode == 0, built.output[-3000:]
    return root


def damaged_copy(cached_book, tmp_path, damage: str):
    root = tmp_path / "book"
    shutil.copytree(cached_book, root)
    cache = root / "_build" / ".jupyter_cache"
    DAMAGES[damage][0](cache)
    return root, cache


@pytest.mark.parametrize("damage", DAMAGES)
def test_an_unreadable_cache_is_moved_aside_and_rebuilt(cached_book, tmp_path, damage):
    root, cache = damaged_copy(cached_book, tmp_path, damage)
    assert DAMAGES[damage][1] in cache_problem(cache)
    built = run_jupyter_book(root)
    assert built.returncode == 0, built.output[-3000:]
    assert "Traceback" not in built.output
    assert f"the jupyter-cache {cache / 'global.db'} could not be read (" in built.output
    assert DAMAGES[damage][1] in built.output
    assert "and executing every chapter again" in built.output
    assert "executing good (not in the cache yet)" in built.output
    # nothing deleted: the damaged cache is beside the new one, which is whole
    [aside] = list(cache.parent.glob(".jupyter_cache.unreadable-*"))
    assert (aside / "global.db").is_file()
    assert cache_problem(cache) is None
    assert built.report()["totals"]["pass"] == 2


def test_require_cache_mode_names_the_file_and_the_fix(cached_book, tmp_path):
    root, cache = damaged_copy(cached_book, tmp_path, "not a database")
    built = run_jupyter_book(root, env={"CHAPTERS_REQUIRE_CACHE": "1"})
    assert built.returncode != 0
    assert f"{cache / 'global.db'} cannot be read (file is not a database)" in built.output
    assert "restore the cache, or remove" in built.output
    assert (cache / "global.db").is_file()  # left as it was


def test_chapters_check_rebuilds_it_too(cached_book, tmp_path, capsys):
    root, cache = damaged_copy(cached_book, tmp_path, "truncated")
    assert main(["check", "--book", str(root)]) == 0
    out = capsys.readouterr().out
    assert "could not be read (database disk image is malformed)" in out.replace("\n", " ")
    assert "executed 1 chapter(s), 0 from the cache" in out


def _records(cache) -> dict[str, int]:
    from jupyter_cache import get_cache

    return {Path(r.uri).stem: r.pk for r in get_cache(str(cache)).list_cache_records()}


@pytest.fixture
def disk_fills_up(monkeypatch):
    """The disk fills up while jupyter-cache writes its ``count``-th notebook: half of the file
    is written, then ENOSPC, as a full disk does."""
    calls = {"count": 0, "at": 2}
    write_text = Path.write_text

    def filling(self, data, *args, **kwargs):
        if self.name == "base.ipynb" and "executed" in self.parts:  # jupyter-cache's layout
            calls["count"] += 1
            if calls["count"] == calls["at"]:
                write_text(self, data[: len(data) // 2], *args, **kwargs)
                raise OSError(errno.ENOSPC, "No space left on device", str(self))
        return write_text(self, data, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", filling)
    return calls


def test_a_full_disk_while_caching_stops_the_run_and_keeps_the_rest(
    book_copy, tmp_path, capsys, monkeypatch, disk_fills_up
):
    """Issue 12: the run stops with one clear message naming the chapter, the cache and the
    fix; what was cached before stays readable, the half-written record is gone, and the
    next run executes only the chapters that are missing."""
    monkeypatch.setenv("CHAPTERS_TEST_SLEEP", "0")
    root = book_copy("test-interrupt")
    cache = tmp_path / "cache"
    argv = ["execute", "--book", str(root), "--cache", str(cache), "-j", "1"]
    assert main(argv) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert (
        f"b-slow.md executed but could not be written into the cache {cache}: no space left on "
        "the device ([Errno 28] No space left on device:" in err
    )
    assert (
        "1 chapter(s) cached are kept, 3 are not cached; free some space, then build again: "
        "only those execute." in err
    )
    assert "Traceback" not in err
    assert sorted(_records(cache)) == ["a-quick"]
    with sqlite3.connect(cache / "global.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert len(list((cache / "executed").iterdir())) == 1  # b's half-written folder is gone

    disk_fills_up["at"] = 0  # space again
    assert main(argv) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "executed 3 chapter(s)" in out and "1 already cached" in out
    assert sorted(_records(cache)) == ["a-quick", "b-slow", "c-slow", "d-quick"]


def test_a_half_written_cached_notebook_runs_again(book_copy, tmp_path, capsys, monkeypatch):
    """A record whose notebook file was cut short (a process killed in the middle of the
    write, before this project's cleanup could run): that chapter executes again, said why."""
    monkeypatch.setenv("CHAPTERS_TEST_SLEEP", "0")
    root = book_copy("test-interrupt")
    cache = tmp_path / "cache"
    argv = ["execute", "--book", str(root), "--cache", str(cache), "-j", "2"]
    assert main(argv) == 0
    capsys.readouterr()
    from jupyter_cache import get_cache

    bundle_path = get_cache(str(cache))._get_notebook_path_cache(
        get_cache(str(cache)).get_cache_record(_records(cache)["c-slow"]).hashkey
    )
    bundle_path.write_bytes(bundle_path.read_bytes()[:200])
    assert main(argv) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "executing c-slow (its cached copy was unreadable" in out
    assert "executed 1 chapter(s)" in out and "3 already cached" in out
