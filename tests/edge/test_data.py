"""Dataset loading, caching (keyed, atomic, never half-written) and the stratified split."""
import os
import shutil

import numpy as np
import pytest

from edge import cache
from edge.data import BuiltinSource, Preprocess, load_frames, split_stratified
from edge.errors import DataError
from firmware_py.binning import BinSpec


def test_builtin_source_and_cache_roundtrip():
    src = BuiltinSource(n_per_class=2, seed=3)
    X, y, names = load_frames(src, progress=False)
    assert X.shape == (20, 30, 578) and X.dtype == np.uint8 and sorted(set(y)) == list(range(10))
    X2, y2, _ = load_frames(src, progress=False)
    assert np.array_equal(X, X2) and np.array_equal(y, y2)


def test_builtin_limit_generates_only_the_prefix():
    """--limit N on the built-in set (now generated only up to N) gives exactly the first N of the bigger set."""
    full = load_frames(BuiltinSource(n_per_class=4, seed=1), use_cache=False, progress=False)
    head = load_frames(BuiltinSource(n_per_class=4, seed=1), use_cache=False, progress=False, limit=25)
    assert head[0].shape[0] == 25 and np.array_equal(head[0], full[0][:25])
    assert np.array_equal(head[1], full[1][:25]) and head[2] == full[2][:25]


def test_cache_key_depends_on_content_and_params(tmp_path, nmnist_small):
    files = sorted((nmnist_small / "Train" / "1").iterdir())[:3]
    for f in files:
        (tmp_path / "Train" / "1").mkdir(parents=True, exist_ok=True)
        shutil.copy(f, tmp_path / "Train" / "1" / f.name)
    spec = BinSpec(34, 34, 10_000, 30, 2)
    X1, _, _ = load_frames(tmp_path, spec, progress=False)
    X1d, _, _ = load_frames(tmp_path, spec, Preprocess(denoise_us=5000), progress=False)
    assert X1d.sum() < X1.sum()  # another parameter: another entry, not the stale one
    victim = tmp_path / "Train" / "1" / files[0].name
    victim.write_bytes(victim.read_bytes()[: 5 * 100])  # another content: another key
    X2, _, _ = load_frames(tmp_path, spec, progress=False)
    assert not np.array_equal(X1[0], X2[0]) and np.array_equal(X1[1:], X2[1:])


def test_bad_file_mid_load_leaves_nothing_in_cache(tmp_path, nmnist_small, monkeypatch):
    monkeypatch.setenv("SNN_EDGE_CACHE", str(tmp_path / "cache"))
    good = sorted((nmnist_small / "Train" / "2").iterdir())[:2]
    (tmp_path / "d" / "Train" / "2").mkdir(parents=True)
    for f in good:
        shutil.copy(f, tmp_path / "d" / "Train" / "2" / f.name)
    (tmp_path / "d" / "Train" / "2" / "zz_bad.bin").write_bytes(b"\x01\x02\x03")
    with pytest.raises(DataError, match="zz_bad.bin: truncated N-MNIST file"):
        load_frames(tmp_path / "d", progress=False)
    assert not (tmp_path / "cache").exists() or os.listdir(tmp_path / "cache") == []


def test_interrupted_store_leaves_no_entry(tmp_path, monkeypatch):
    monkeypatch.setenv("SNN_EDGE_CACHE", str(tmp_path))

    def exploding_savez(fh, **arrays):
        fh.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", exploding_savez)
    with pytest.raises(KeyboardInterrupt):
        cache.store("k" * 64, {"X": np.zeros(3)})
    assert os.listdir(tmp_path) == []


def test_corrupt_entry_is_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setenv("SNN_EDGE_CACHE", str(tmp_path))
    (tmp_path / ("a" * 64 + ".npz")).write_bytes(b"not a zip")
    assert cache.load("a" * 64) is None and not (tmp_path / ("a" * 64 + ".npz")).exists()


def test_sensor_mismatch_is_an_error(event_samples):
    with pytest.raises(DataError, match="sensor is 128x128 but the binning expects 34x34"):
        load_frames(event_samples / "mnist-dvs_digit0_scale4_0001.aedat", progress=False)


def test_mnist_dvs_recording_bins_with_its_own_spec(event_samples):
    spec = BinSpec(128, 128, 20_000, 100, downsample=4)
    X, y, _ = load_frames(event_samples / "mnist-dvs_digit0_scale4_0001.aedat", spec, progress=False)
    assert X.shape == (1, 100, 2 * 32 * 32) and X.sum() > 1000


def test_stratified_split_keeps_proportions():
    y = np.repeat(np.arange(10), [97, 116, 99, 93, 105, 92, 94, 117, 87, 100])
    tr, va = split_stratified(y, 0.2, seed=0)
    assert len(np.intersect1d(tr, va)) == 0 and len(tr) + len(va) == len(y)
    for c in range(10):
        assert abs((y[va] == c).sum() - 0.2 * (y == c).sum()) <= 0.5
    assert np.array_equal(split_stratified(y, 0.2, 0)[1], va)


def test_three_way_split_is_stratified_disjoint_and_keyed_by_name():
    from edge.data import split_three_way

    counts = [97, 116, 99, 93, 105, 92, 94, 117, 87, 100]  # the class counts of nmnist-small
    y = np.repeat(np.arange(10), counts)
    names = [f"Train/{c}/{i:05d}.bin" for c, n in enumerate(counts) for i in range(n)]
    sp = split_three_way(y, names)
    parts = (sp.train, sp.val, sp.test)
    assert sum(map(len, parts)) == len(y) and len(np.unique(np.concatenate(parts))) == len(y)
    for c in range(10):
        for part, f in zip(parts[1:], (0.2, 0.2)):
            assert abs((y[part] == c).sum() - f * counts[c]) <= 0.5
    # another listing order of the same recordings gives the same recordings in each part
    perm = np.random.default_rng(5).permutation(len(y))
    sp2 = split_three_way(y[perm], [names[i] for i in perm])
    for a, b in zip(parts, (sp2.train, sp2.val, sp2.test)):
        assert sorted(names[i] for i in a) == sorted(names[perm[i]] for i in b)
    assert not np.array_equal(split_three_way(y, names, seed=1).test, sp.test)
    with pytest.raises(DataError, match="unique"):
        split_three_way(y[:3], ["a", "a", "b"])


def test_accuracy_interval95():
    from edge.metrics import accuracy_interval95

    s = accuracy_interval95([0.80, 0.84, 0.82], n_test=200)
    assert s.method == "t over seeds" and s.n_seeds == 3 and s.low < 0.82 < s.high
    assert s.high - 0.82 == pytest.approx(4.303 * 0.02 / np.sqrt(3), rel=1e-3)  # t(0.975, 2) = 4.303
    one = accuracy_interval95([0.9], n_test=200)   # Wilson: 0.9 of 200 -> about [0.851, 0.934]
    assert one.method == "Wilson" and one.low == pytest.approx(0.8506, abs=2e-3) and one.high == pytest.approx(0.9343, abs=2e-3)
