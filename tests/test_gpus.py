"""Parallel chapters on GPUs (issue 12): at most ``kernels_per_gpu`` kernels share a device,
and each kernel sees only its own (found without torch: CUDA_VISIBLE_DEVICES or nvidia-smi)."""

from __future__ import annotations

import os

import pytest
from conftest import ROOTS
from test_warm import facts_of

from chapters_support.book import Book
from chapters_support.cli.check import load_chapters
from chapters_support.execution import execute
from chapters_support.execution.gpus import GPU_ENV, device_slots, per_gpu, visible_gpus


@pytest.fixture
def fake_smi(tmp_path, monkeypatch):
    """An nvidia-smi that lists the GPUs it is given, first on PATH."""

    def install(*indexes: int) -> None:
        folder = tmp_path / "bin"
        folder.mkdir(exist_ok=True)
        smi = folder / "nvidia-smi"
        lines = "".join(f"{i}\n" for i in indexes)
        smi.write_text(f"#!/bin/sh\nprintf '{lines}'\n", encoding="utf-8")
        smi.chmod(0o755)
        monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)

    return install


def test_devices_come_from_cuda_visible_devices_else_nvidia_smi(fake_smi, monkeypatch):
    fake_smi(0, 1)
    assert visible_gpus() == ["0", "1"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    assert visible_gpus() == ["3", "5"]
    for hidden in ("", "-1", "-1,0"):
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", hidden)
        assert visible_gpus() == [], hidden
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    monkeypatch.setenv("PATH", "/nonexistent")
    assert visible_gpus() == []


def test_slots_spread_the_kernels_over_the_devices(fake_smi, monkeypatch):
    fake_smi(0, 1)
    assert device_slots(1) == ["0", "1"]
    assert device_slots(2) == ["0", "1", "0", "1"]
    monkeypatch.delenv(GPU_ENV, raising=False)
    assert per_gpu(3) == 3
    monkeypatch.setenv(GPU_ENV, "2")
    assert per_gpu(3) == 2
    monkeypatch.setenv(GPU_ENV, "many")
    with pytest.raises(ValueError, match="CHAPTERS_KERNELS_PER_GPU='many': give a whole number"):
        per_gpu()
    monkeypatch.setenv(GPU_ENV, "0")
    with pytest.raises(ValueError, match="at least 1, not 0"):
        per_gpu()


def seen_devices(report) -> dict[str, str]:
    """The CUDA_VISIBLE_DEVICES each chapter's kernel had."""
    return {
        chapter: facts["environment"].get("CUDA_VISIBLE_DEVICES")
        for chapter, facts in facts_of(report).items()
    }


@pytest.mark.slow
def test_one_gpu_runs_one_kernel_at_a_time_and_each_kernel_sees_its_device(
    fake_smi, monkeypatch, tmp_path
):
    chapters = load_chapters(Book.load(ROOTS / "test-warm"), ())
    fake_smi(0)
    one = execute(chapters, tmp_path / "one", jobs=2, force=True, kernels_per_gpu=1)
    assert one.devices == ["0"]  # one worker: the one GPU, one kernel on it at a time
    assert seen_devices(one) == {"facts-a": "0", "facts-b": "0"}
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,7")
    two = execute(chapters, tmp_path / "two", jobs=2, force=True, kernels_per_gpu=1)
    assert sorted(two.devices) == ["4", "7"]
    assert set(seen_devices(two).values()) <= {"4", "7"}
    # no GPU: the cores alone limit the kernels, and nothing is hidden from them
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    none = execute(chapters, tmp_path / "none", jobs=2, force=True, kernels_per_gpu=1)
    assert none.devices == [] and set(seen_devices(none).values()) == {"-1"}
