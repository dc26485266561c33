"""Fixtures of the CUDA tests: fuseray on ``benchmarks/overhead_local.py``'s fake driver."""

import gc
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import overhead_local  # noqa: E402


def _fake(monkeypatch, devices: int):
    fake = overhead_local.install(call_ns=0, devices=devices, patch=monkeypatch.setattr)
    yield fake
    gc.collect()  # the test's arrays and streams go back to the fake before it is undone


@pytest.fixture(params=[1, 2], ids=["one-gpu", "two-gpus"])
def fake_cuda(request, monkeypatch):
    """fuseray on a fake driver with one or two GPUs; ``.launches`` lists (device, stream)."""
    yield from _fake(monkeypatch, request.param)


@pytest.fixture
def fake_one_gpu(monkeypatch):
    """``fake_cuda`` with one GPU, where cached calls take the compiled call site."""
    yield from _fake(monkeypatch, 1)
