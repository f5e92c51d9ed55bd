"""Transforms against tonic on real data, and host binning against the board's pure-Python binning."""
import subprocess

import numpy as np
import pytest

from edge.events import list_folder_dataset, make_events, read_events
from edge.transforms import crop, denoise, downsample, refractory, to_frames
from firmware_py.binning import BINARY, COUNT, Binner, BinSpec
from tests.conftest import REPO

NMNIST_2X = BinSpec(34, 34, 10_000, 30, downsample=2)


@pytest.fixture(scope="module")
def real_recordings(nmnist_small):
    return [read_events(f, label).events for f, label in list_folder_dataset(nmnist_small)]


def firmware_dense(events, spec):
    b = Binner(spec, slots=0xFFFF)            # room for any recording: counts, full resolution
    b.add_many(events["x"].tolist(), events["y"].tolist(), events["t"].tolist(), events["p"].tolist())
    return np.frombuffer(bytes(b.dense()), dtype=np.uint8).reshape(spec.n_steps, spec.n_inputs)


def test_host_and_firmware_binning_agree_on_all_real_recordings(real_recordings):
    assert len(real_recordings) == 1000
    specs = [NMNIST_2X, BinSpec(34, 34, 10_000, 30, downsample=1, mode=COUNT)]
    for i, ev in enumerate(real_recordings):
        spec = specs[i % 2]
        assert np.array_equal(to_frames(ev, spec), firmware_dense(ev, spec)), f"recording {i}"


def test_binning_with_crop_and_ragged_downsample(real_recordings):
    spec = BinSpec(34, 34, 7_000, 20, downsample=3, crop=(2, 3, 29, 30), mode=COUNT)
    for ev in real_recordings[:50]:
        assert np.array_equal(to_frames(ev, spec), firmware_dense(ev, spec))


def test_binning_semantics_by_hand():
    spec = BinSpec(4, 4, dt_us=100, n_steps=3, downsample=2, mode=BINARY)
    ev = make_events([0, 1, 3, 2, 0], [0, 1, 3, 0, 0], [0, 99, 150, 250, 300], [1, 1, 0, 1, 0])
    f = to_frames(ev, spec)
    assert f.shape == (3, 8)
    # (0,0,p=1) and (1,1,p=1) both land on neuron (1*2+0)*2+0 = 4 at step 0; binary -> 1
    assert f[0].tolist() == [0, 0, 0, 0, 1, 0, 0, 0]
    # (3,3,p=0) at t=150 -> step 1, neuron (0*2+1)*2+1 = 3
    assert f[1].tolist() == [0, 0, 0, 1, 0, 0, 0, 0]
    # (2,0,p=1) at t=250 -> step 2, neuron 5; t=300 is past the window and dropped
    assert f[2].tolist() == [0, 0, 0, 0, 0, 1, 0, 0]
    counts = to_frames(ev, BinSpec(4, 4, 100, 3, downsample=2, mode=COUNT))
    assert counts[0, 4] == 2


def test_crop_and_downsample_event_transforms():
    ev = make_events([0, 5, 9], [0, 5, 9], [1, 2, 3], [0, 1, 0])
    c = crop(ev, 4, 4, 5, 5)
    assert c["x"].tolist() == [1] and c["y"].tolist() == [1]
    d = downsample(ev, 3, 10, 10)
    assert d["x"].tolist() == [0, 1] and len(d) == 2  # x=9 -> 3 is past the 3x3 output: ragged edge dropped


def test_denoise_and_refractory_equal_tonic_on_all_real_recordings(real_recordings):
    F = pytest.importorskip("tonic.functional")
    for i, ev in enumerate(real_recordings):
        assert np.array_equal(denoise(ev, 10_000), F.denoise_numpy(ev, 10_000)), f"denoise, recording {i}"
        if i % 10 == 0:
            assert np.array_equal(refractory(ev, 2_000), F.refractory_period_numpy(ev, 2_000)), f"refractory {i}"


def test_denoise_equals_tonic_on_davis_recording(event_samples):
    F = pytest.importorskip("tonic.functional")
    ev = read_events(event_samples / "davis-sample.aedat4").events
    out = denoise(ev, 5_000)
    assert 0 < len(out) < len(ev)
    assert np.array_equal(out, F.denoise_numpy(ev, 5_000))


MP_SCRIPT = r"""
import sys
sys.path.insert(0, REPO)
from firmware_py.binning import Binner, BinSpec
spec = BinSpec(34, 34, 10000, 30, 2)
b = Binner(spec)
with open(PATH) as fh:
    for line in fh:
        x, y, t, p = line.split()
        b.add(int(x), int(y), int(t), int(p))
# The board path: sparse per-step inputs (a dense 30x578 frame is a host-side view and does not fit a 64 KB heap
# next to the event dict).
for k in range(spec.n_steps):
    n = b.step_inputs(k)
    pairs = sorted((b.idx[j], b.vals[j]) for j in range(n))
    sys.stdout.write("%d:%s\n" % (k, " ".join("%d=%d" % (i, v) for i, v in pairs)))
"""


def test_firmware_binning_under_real_micropython(real_recordings, micropython_bin, tmp_path):
    """The board's binning, run by the MicroPython unix port with a 64 KB heap, gives the host's tensor."""
    for i in (0, 137, 999):
        ev = real_recordings[i]
        path = tmp_path / f"ev{i}.txt"
        path.write_text("\n".join(f"{e['x']} {e['y']} {e['t']} {e['p']}" for e in ev))
        script = tmp_path / "bin.py"
        script.write_text(f"REPO = {str(REPO)!r}\nPATH = {str(path)!r}\n" + MP_SCRIPT)
        out = subprocess.run([micropython_bin, "-X", "heapsize=64K", str(script)], capture_output=True,
                             text=True, timeout=120, check=True).stdout
        got = np.zeros((30, 578), dtype=np.uint8)
        for line in out.splitlines():
            k, _, pairs = line.partition(":")
            for pair in pairs.split():
                n, v = pair.split("=")
                got[int(k), int(n)] = int(v)
        assert len(out.splitlines()) == 30
        assert np.array_equal(got, to_frames(ev, NMNIST_2X)), f"recording {i}"
