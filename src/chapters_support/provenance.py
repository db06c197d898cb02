"""Where this build would verify the book, and the words for a result verified elsewhere.

Every check result carries the torch and the device it ran on (``checks/device.py``
``environment``). A build that takes the result from a cache written on another machine (the
GPU runner's merged cache, a colleague's, last month's torch) would show it as if it had been
verified here; this module says when that is not so, and the badge and the status page say it
to the reader: "verified on torch 2.8.0+cu128, CUDA".

Shared by both sides and importing neither torch nor Sphinx: the book side must not import
torch (seconds of start-up, and CUDA must stay uninitialised in the executing process), so the
installed torch is read from its ``torch/version.py`` (written by torch's build, holding
``__version__`` with the local build tag, "2.13.0+cpu", "2.8.0+cu128", and ``cuda``) through
``importlib``'s spec, without importing the package; its distribution metadata is the
fallback, though PyPI's CUDA wheels leave the tag out of it.
"""

from __future__ import annotations

import ast
import importlib.util
import os
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

# forces the chapters' device (read by checks/device.py in the kernel, and here)
DEVICE_ENV = "CHAPTERS_DEVICE"


@dataclass(frozen=True)
class Installed:
    """What a chapter executed by this build would run on."""

    torch: str | None  # torch.__version__, None when torch is not installed
    device_type: str  # "cuda" or "cpu"

    def describe(self) -> str:
        return describe({"torch": self.torch, "device_type": self.device_type})

    def as_dict(self) -> dict[str, Any]:
        return {"torch": self.torch, "device_type": self.device_type}


def _torch_version() -> str | None:
    try:
        spec = importlib.util.find_spec("torch")
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        for folder in spec.submodule_search_locations:
            try:
                tree = ast.parse((Path(folder) / "version.py").read_text(encoding="utf-8"))
            except (OSError, SyntaxError, ValueError):
                continue
            for node in tree.body:
                if not isinstance(node, ast.Assign):
                    continue
                target = node.targets[0]
                if isinstance(target, ast.Name) and target.id == "__version__":
                    try:
                        value = ast.literal_eval(node.value)
                    except ValueError:
                        break
                    if isinstance(value, str):
                        return value
    try:
        return metadata.version("torch")
    except metadata.PackageNotFoundError:
        return None


def _device_type() -> str:
    forced = os.environ.get(DEVICE_ENV, "").strip()
    if forced:
        return forced.split(":", 1)[0].lower()
    from chapters_support.execution.gpus import visible_gpus

    return "cuda" if visible_gpus() else "cpu"


@lru_cache(maxsize=1)
def installed() -> Installed:
    """This build's torch and device (once per process: ``nvidia-smi`` may be asked)."""
    return Installed(torch=_torch_version(), device_type=_device_type())


def describe(env: Mapping[str, Any]) -> str:
    """Words that tell two environments apart: "torch 2.8.0+cu128, CUDA"."""
    torch = env.get("torch")
    device = str(env.get("device_type") or "?").upper()
    return f"torch {torch}, {device}" if torch else f"no torch, {device}"


def verified_elsewhere(env: Mapping[str, Any] | None, here: Installed) -> str | None:
    """The mark for a result whose torch or device is not this build's, else None."""
    if not env:
        return "verified in an environment it did not record"
    if env.get("torch") != here.torch or env.get("device_type") != here.device_type:
        return f"verified on {describe(env)}"
    return None
