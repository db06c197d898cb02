"""Running chapters into jupyter-cache: used by the CLI and by the Sphinx extension.

The names below load on first use (PEP 562), so a process that needs one module of this
package (the fork server behind warm kernels runs ``-m chapters_support.execution.forkserver``
and must import nothing but what its kernels will use) does not import nbformat and
jupyter-cache with it.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "Chapter": "notebooks",
    "read_chapter": "notebooks",
    "REQUIRE_CACHE_ENV": "runner",
    "CacheWriteError": "runner",
    "ExecutionReport": "runner",
    "Failure": "runner",
    "Outcome": "runner",
    "RequireCacheError": "runner",
    "cached_notebook": "runner",
    "execute": "runner",
    "plan": "runner",
    "require_cache_from_env": "runner",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_WHERE])
