"""Test configuration: hypothesis profiles, the GPU marker, and the reference CPU backend.

The core tests check the front end, graph, passes and planner through the NumPy interpreter (the
reference backend), so they pin it; the numba and CUDA backends have their own test modules that
compare against it.
"""

import os
import pathlib
import sys

import pytest
from hypothesis import HealthCheck, settings

# Every kernel any test plans is also compiled by NVRTC for sm_80 and sm_90, in worker processes
# while the tests run; the session's last test item reports the result
# (tests/cuda/compile_all.py). FUSERAY_COMPILE_ALL=0 turns it off for quick local runs.
sys.path.insert(0, str(pathlib.Path(__file__).parent / "cuda"))
pytest_plugins = ["compile_all", "numba_warm"]

settings.register_profile(
    "ci",
    derandomize=True,
    max_examples=int(os.environ.get("FUSERAY_HYPOTHESIS_EXAMPLES", "300")),
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "dev",
    max_examples=2000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture
def reference_backend(monkeypatch):
    """Run on the NumPy interpreter whatever the environment selects."""
    import fuseray

    monkeypatch.setattr(fuseray.config, "cpu_backend", "numpy")
    monkeypatch.setattr(fuseray.config, "device", "cpu")
