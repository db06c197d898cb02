"""Shared fixtures: small books under tests/roots/, built the way users build them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOTS = Path(__file__).parent / "roots"
REPO = Path(__file__).parent.parent
BIN = Path(sys.executable).parent


def find_tool(name: str) -> str | None:
    """A tool on PATH, beside this Python (an unactivated venv), or in /usr/sbin (sshd)."""
    for candidate in (shutil.which(name), BIN / name, Path("/usr/sbin") / name):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def require_tool(name: str) -> str:
    """A tool the tests need: in CI its absence fails the test instead of skipping it."""
    found = find_tool(name)
    if found:
        return found
    message = f"{name} is not installed (bash .ci/run installs everything the tests need)"
    if os.environ.get("CI"):
        pytest.fail(f"{message} (CI must install everything the tests need)")
    pytest.skip(message)


@dataclass
class Built:
    root: Path
    returncode: int
    output: str

    @property
    def html(self) -> Path:
        return self.root / "_build" / "html"

    def page(self, name: str):
        from bs4 import BeautifulSoup

        return BeautifulSoup(
            (self.html / f"{name}.html").read_text(encoding="utf-8"), "html.parser"
        )

    def report(self) -> dict:
        return json.loads((self.html / "derivations.json").read_text(encoding="utf-8"))


def run_jupyter_book(root: Path, *args: str, env: dict[str, str] | None = None) -> Built:
    command = [require_tool("jupyter-book"), "build", str(root), *args]
    proc = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, **(env or {})},
        cwd=root,
    )
    return Built(root, proc.returncode, proc.stdout + proc.stderr)


@pytest.fixture
def book_copy(tmp_path: Path):
    """Copy a test root (or the real book) into a fresh folder and return its path."""

    def copy(name: str) -> Path:
        source = REPO / "book" if name == "book" else ROOTS / name
        target = tmp_path / name
        shutil.copytree(source, target, ignore=shutil.ignore_patterns("_build"))
        return target

    return copy


@pytest.fixture
def build():
    return run_jupyter_book
