"""Split chapters into balanced shards by recorded duration (as the PyTorch tutorials do).

Greedy longest-processing-time: the longest chapter goes to the least loaded shard, ties
broken by name and shard index, so every runner computes the same split.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from chapters_support.execution.notebooks import DEFAULT_EXECUTION_SECONDS

DURATIONS_FILE = "_durations.json"


def parse_shard(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not match:
        raise ValueError(f"--shard takes I/N, e.g. 2/3, not {text!r}")
    index, count = int(match.group(1)), int(match.group(2))
    if count < 1 or not 1 <= index <= count:
        raise ValueError(f"--shard {text}: need 1 <= I <= N")
    return index, count


def assign(names: Sequence[str], durations: Mapping[str, float], count: int) -> list[list[str]]:
    """Every name in exactly one of ``count`` shards, balancing the summed durations."""
    shards: list[list[str]] = [[] for _ in range(count)]
    load = [0.0] * count
    ordered = sorted(names, key=lambda n: (-durations.get(n, DEFAULT_EXECUTION_SECONDS), n))
    for name in ordered:
        target = min(range(count), key=lambda i: (load[i], i))
        shards[target].append(name)
        load[target] += durations.get(name, DEFAULT_EXECUTION_SECONDS)
    return shards


def load_durations(book_root: Path) -> dict[str, float]:
    path = book_root / DURATIONS_FILE
    if not path.is_file():
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    return {str(k): float(v) for k, v in (data.get("seconds") or {}).items()}


def save_durations(book_root: Path, measured: Mapping[str, float], device: str) -> Path:
    """Merge newly measured chapter times into the committed durations file."""
    path = book_root / DURATIONS_FILE
    current: dict[str, Any] = {}
    if path.is_file():
        current = json.loads(path.read_text(encoding="utf-8"))
    seconds = dict(current.get("seconds") or {})
    seconds.update({k: round(float(v), 2) for k, v in measured.items()})
    payload = {
        "about": "seconds each chapter took to execute; `chapters execute --shard` balances by it",
        "device": device,
        "seconds": dict(sorted(seconds.items())),
    }
    path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    return path
