"""Which device a chapter runs on, announced once in plain words."""

from __future__ import annotations

import os
import platform
from functools import cache, lru_cache
from typing import Any

import torch

from chapters_support.provenance import DEVICE_ENV


@cache
def _pick(forced: str | None) -> torch.device:
    if forced:
        picked = torch.device(forced)
        if picked.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"{DEVICE_ENV}={forced} but torch sees no CUDA device")
        return picked
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


_announced: set[str] = set()


def device(*, announce: bool = True) -> torch.device:
    """CUDA when torch sees a GPU, else the CPU; ``CHAPTERS_DEVICE=cpu`` forces a choice.

    The first call prints which device was picked and why, so a reader of the executed
    chapter knows where its numbers came from.
    """
    picked = _pick(os.environ.get(DEVICE_ENV) or None)
    if announce and str(picked) not in _announced:
        _announced.add(str(picked))
        print(describe(picked))
    return picked


def device_name(dev: torch.device) -> str:
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    return _cpu_model() or platform.processor() or platform.machine() or "CPU"


@lru_cache(maxsize=1)
def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def describe(dev: torch.device) -> str:
    if dev.type == "cuda":
        return (
            f"Running on CUDA: {device_name(dev)} "
            f"(torch {torch.__version__}, CUDA {torch.version.cuda})"
        )
    why = (
        f"{DEVICE_ENV} asked for it"
        if os.environ.get(DEVICE_ENV)
        else "no CUDA device is visible to torch"
    )
    return f"Running on CPU ({why}): {device_name(dev)}, torch {torch.__version__}"


def environment(dev: torch.device) -> dict[str, Any]:
    """What the status page reports about where a check ran (never hostnames or paths)."""
    return {
        "torch": torch.__version__,
        "cuda": torch.version.cuda if dev.type == "cuda" else None,
        "device_type": dev.type,
        "device_name": device_name(dev),
        "python": platform.python_version(),
    }
