"""Default tolerances per dtype, and the ceilings the book's config sets on them.

The ceilings live in ``book/_config.yml`` under ``sphinx.config.chapters_tolerance_ceiling``
so that the author sees one number in one place; a chapter's kernel runs in the book's
folder, so we find that file by walking up from the working directory.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
import yaml

CONFIG_ENV = "CHAPTERS_CONFIG"


@dataclass(frozen=True)
class Tolerance:
    rtol: float
    atol: float


# Defaults sit well inside the ceilings: a few hundred unit roundoffs of each format.
DEFAULT_TOLERANCE: dict[str, Tolerance] = {
    "float64": Tolerance(rtol=1e-9, atol=1e-12),
    "float32": Tolerance(rtol=1e-5, atol=1e-6),
    "bfloat16": Tolerance(rtol=2e-2, atol=2e-2),
    "float16": Tolerance(rtol=2e-3, atol=2e-3),
}

DEFAULT_CEILING: dict[str, Tolerance] = {
    "float64": Tolerance(rtol=1e-8, atol=1e-10),
    "float32": Tolerance(rtol=1e-4, atol=1e-5),
    "bfloat16": Tolerance(rtol=5e-2, atol=5e-2),
    "float16": Tolerance(rtol=1e-2, atol=1e-2),
}

# A Monte-Carlo bound at a higher confidence than this is wide enough to hide a wrong claim.
DEFAULT_CONFIDENCE_CEILING = 0.9999


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def default_tolerance(dtype: torch.dtype) -> Tolerance:
    name = dtype_name(dtype)
    if name not in DEFAULT_TOLERANCE:
        raise ValueError(f"no default tolerance for dtype {name}; pass atol= and rtol=")
    return DEFAULT_TOLERANCE[name]


def _find_config(start: Path) -> Path | None:
    explicit = os.environ.get(CONFIG_ENV)
    if explicit:
        return Path(explicit)
    for folder in (start, *start.parents):
        candidate = folder / "_config.yml"
        if candidate.is_file():
            return candidate
    return None


@lru_cache(maxsize=8)
def _load(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    return ((data.get("sphinx") or {}).get("config") or {}) if isinstance(data, dict) else {}


def book_config() -> dict[str, Any]:
    return _load(_find_config(Path.cwd()))


def ceiling(dtype: torch.dtype) -> Tolerance:
    name = dtype_name(dtype)
    configured = (book_config().get("chapters_tolerance_ceiling") or {}).get(name)
    base = DEFAULT_CEILING.get(name, Tolerance(rtol=float("inf"), atol=float("inf")))
    if not configured:
        return base
    return Tolerance(
        rtol=float(configured.get("rtol", base.rtol)), atol=float(configured.get("atol", base.atol))
    )


def confidence_ceiling() -> float:
    return float(book_config().get("chapters_confidence_ceiling", DEFAULT_CONFIDENCE_CEILING))
