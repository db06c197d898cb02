"""A jupyter-cache that cannot be read (issue 12): a corrupt, a truncated and an old cache are
moved aside and rebuilt, announced, never a traceback; in require-cache mode the build stops
naming the file and the fix."""

from __future__ import annotations

import shutil
import sqlite3

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
