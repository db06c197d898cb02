"""Derive & Verify support package.

The root stays tiny so that the ``chapters`` CLI and a chapter's kernel do not pay for
Sphinx (or torch) imports they do not use: ``device`` and ``setup`` load lazily.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["__version__", "device", "setup"]


def device(*args: Any, **kwargs: Any) -> Any:
    """The torch device this chapter runs on: CUDA when present, else the CPU (said plainly)."""
    from chapters_support.checks.device import device as _device

    return _device(*args, **kwargs)


def setup(app: Any) -> dict[str, Any]:
    """Sphinx entry point, so ``extensions = ["chapters_support"]`` also works."""
    from chapters_support.sphinx_ext import setup as _setup

    return _setup(app)
