"""Running chapters into jupyter-cache: used by the CLI and by the Sphinx extension."""

from chapters_support.execution.notebooks import Chapter, read_chapter
from chapters_support.execution.runner import (
    REQUIRE_CACHE_ENV,
    ExecutionReport,
    Failure,
    Outcome,
    RequireCacheError,
    cached_notebook,
    execute,
    plan,
    require_cache_from_env,
)

__all__ = [
    "REQUIRE_CACHE_ENV",
    "Chapter",
    "ExecutionReport",
    "Failure",
    "Outcome",
    "RequireCacheError",
    "cached_notebook",
    "execute",
    "plan",
    "read_chapter",
    "require_cache_from_env",
]
