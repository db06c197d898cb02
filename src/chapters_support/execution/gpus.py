"""Parallel chapters on GPUs: at most ``kernels_per_gpu`` kernels on each device at once, each
kernel shown only its own device (``CUDA_VISIBLE_DEVICES``), so that parallel chapters do not
exhaust one GPU's memory while another sits idle.

The devices are found without importing torch (the executing process never does: CUDA
must not be initialised in it, and the Sphinx side never imports torch): the
``CUDA_VISIBLE_DEVICES`` the build was given, else ``nvidia-smi``'s list. None found: the
chapters run on the CPU and only the cores limit the kernels.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import subprocess
from typing import Any

GPU_ENV = "CHAPTERS_KERNELS_PER_GPU"
# the device this execution worker's kernels get (set by its initializer)
DEVICE: str | None = None


def visible_gpus() -> list[str]:
    """The GPUs the build may use, as ``CUDA_VISIBLE_DEVICES`` entries."""
    given = os.environ.get("CUDA_VISIBLE_DEVICES")
    if given is not None:
        entries = [d.strip() for d in given.split(",") if d.strip()]
        # CUDA stops at the first invalid entry: "-1" (or "") hides every device
        return [] if not entries or entries[0].startswith("-") else entries
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        done = subprocess.run(
            [smi, "--query-gpu=index", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return []
    if done.returncode != 0:
        return []
    return [line.strip() for line in done.stdout.splitlines() if line.strip().isdigit()]


def per_gpu(config_value: int = 1) -> int:
    """Kernels per GPU: ``CHAPTERS_KERNELS_PER_GPU`` over ``chapters_kernels_per_gpu``."""
    value = os.environ.get(GPU_ENV, "").strip()
    if value:
        try:
            number = int(value)
        except ValueError:
            raise ValueError(f"{GPU_ENV}={value!r}: give a whole number of kernels") from None
    else:
        number = config_value
    if number < 1:
        raise ValueError(f"kernels per GPU must be at least 1, not {number}")
    return number


def device_slots(kernels_per_gpu: int) -> list[str]:
    """One entry per kernel that may run at once: each visible GPU, ``kernels_per_gpu`` times
    (spread: 0, 1, 0, 1, ...). Empty without GPUs."""
    gpus = visible_gpus()
    return [gpu for _ in range(kernels_per_gpu) for gpu in gpus]


def describe(devices: list[str], kernels_per_gpu: int) -> str:
    """The run's line about its GPUs (each worker's device in ``devices``)."""
    return (
        f"on GPU(s) {', '.join(sorted(set(devices)))}: at most {kernels_per_gpu} "
        "kernel(s) on each at once"
    )


def slot_queue(slots: list[str]) -> Any:
    """A queue the spawned workers take their devices from, one each."""
    queue = multiprocessing.get_context("spawn").Queue()
    for slot in slots:
        queue.put(slot)
    return queue


def take_device(queue: Any) -> None:
    """In a worker, once: the device its kernels will see."""
    global DEVICE
    if queue is not None:
        DEVICE = queue.get(timeout=60)
