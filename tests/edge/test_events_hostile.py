"""Hostile event files (issue 14, point 3): every reader refuses bad input with a DataError naming the file and
the field, never crashes, aborts, casts silently or allocates what a header declares."""
from __future__ import annotations

import random

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge import aedat4
from edge.errors import DataError
from edge.events import EVENT_DTYPE, read_events

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _structured(fields, n=3, fill=None):
    arr = np.zeros(n, [(f, dt) for f, dt in fields])
    for f, v in (fill or {}).items():
        arr[f] = v
    return arr


def _save(tmp_path, name, arr):
    path = tmp_path / name
    with open(path, "wb") as fh:
        np.save(fh, arr)
    return path


STD = [("x", "<i2"), ("y", "<i2"), ("t", "<i8"), ("p", "<i1")]
NPY_CASES = {
    "wrap_int64_x": (_structured([("x", "<i8")] + STD[1:], fill={"x": [1, 65539, 2], "t": [0, 1, 2]}), "x=65539"),
    "float_x": (_structured([("x", "<f4")] + STD[1:], fill={"x": [1.5, 2.0, 3.0]}), "field 'x' has dtype float32"),
    "nan_y": (_structured([STD[0], ("y", "<f8")] + STD[2:], fill={"y": [np.nan, 1, 2]}), "field 'y'"),
    "float_p": (_structured(STD[:3] + [("p", "<f4")], fill={"p": [0.5, 1, 0]}), "field 'p' has dtype float32"),
    "float_t": (_structured(STD[:2] + [("t", "<f8"), STD[3]]), "field 't'"),
    "string_x": (_structured([("x", "U3")] + STD[1:]), "field 'x' has dtype <U3"),
    "two_d": (np.zeros((2, 2), STD), "expected a 1-D event array, got shape (2, 2)"),
    "zero_d": (np.zeros((), STD), "got shape ()"),
    "plain_float": (np.zeros((4, 4)), "lacks field(s)"),
    "missing_p": (_structured(STD[:3]), "lacks field(s) ['p']"),
    "empty": (np.zeros(0, STD), "no events"),
}


@pytest.mark.parametrize("name", sorted(NPY_CASES))
def test_bad_npy_named_not_cast(tmp_path, name):
    arr, message = NPY_CASES[name]
    path = _save(tmp_path, name + ".npy", arr)
    with pytest.raises(DataError) as err:
        read_events(path)
    assert str(path) in str(err.value) and message in str(err.value), str(err.value)


@pytest.mark.parametrize("content, message", [
    (b"", "not a .npy file"),
    (b"PK\x03\x04 zip", "zip archive"),
    (b"\x93NUMPY\x01\x00", "not a readable .npy"),
])
def test_npy_that_is_not_one(tmp_path, content, message):
    path = tmp_path / "x.npy"
    path.write_bytes(content)
    with pytest.raises(DataError, match=message):
        read_events(path)


def test_npy_declaring_more_than_the_file_holds_is_not_allocated(tmp_path):
    path = _save(tmp_path, "ok.npy", _structured(STD, fill={"t": [0, 1, 2]}))
    data = path.read_bytes().replace(b"(3,)", b"(99999999999,)")
    path.write_bytes(data)
    with pytest.raises(DataError, match="greater than file size"):
        read_events(path)


@pytest.mark.parametrize("suffix, message", [(".aedat", "empty file"), (".aedat4", "broken AEDAT4 header"),
                                             (".bin", "empty file")])
def test_empty_recordings(tmp_path, suffix, message):
    path = tmp_path / ("empty" + suffix)
    path.write_bytes(b"")
    with pytest.raises(DataError, match=message):
        read_events(path)


@pytest.fixture(scope="module")
def davis(event_samples):
    pytest.importorskip("aedat", reason="AEDAT4 needs the aedat package (the data extra)")
    return (event_samples / "davis-sample.aedat4").read_bytes()


def test_aedat4_header_declaring_gigabytes_is_refused_before_decoding(tmp_path, davis):
    path = tmp_path / "tiny.aedat4"
    path.write_bytes(davis[:14] + b"\xff\xff\xff\xd0")           # 18 bytes: the header "holds" 3.5 GB
    with pytest.raises(DataError, match="AEDAT4 header declares 3506438143 bytes"):
        read_events(path)


def test_a_decoder_abort_is_contained_and_the_next_file_decodes(tmp_path, davis):
    """The same 18-byte file given straight to the decoder makes it abort (SIGABRT: a 3.5 GB allocation
    over the child's limit); we get a DataError, and the worker comes back for the next file."""
    path = tmp_path / "tiny.aedat4"
    path.write_bytes(davis[:14] + b"\xff\xff\xff\xd0")
    with pytest.raises(DataError, match=r"crashed \(SIGABRT\)"):
        aedat4.decode_isolated(str(path))
    small = tmp_path / "small.aedat4"
    small.write_bytes(aedat4.first_packets(davis, 4))
    events, size = aedat4.decode_isolated(str(small))
    assert size == (320, 240) and len(events) > 1000


@pytest.mark.parametrize("cut", [20, 100, 2334, 5000, 28000])
def test_truncated_aedat4(tmp_path, davis, cut):
    path = tmp_path / "cut.aedat4"
    path.write_bytes(davis[:cut])
    with pytest.raises(DataError, match="cut.aedat4: (truncated|AEDAT4 header)"):
        read_events(path)


def test_seeded_bit_flips_in_a_real_aedat4(tmp_path, davis):
    small = aedat4.first_packets(davis, 4)
    rng = random.Random(14)
    outcomes = set()
    for i in range(40):
        b = bytearray(small)
        pos = rng.randrange(14, 2400) if i % 2 else rng.randrange(len(b))
        b[pos] ^= 1 << rng.randrange(8)
        path = tmp_path / f"flip{i}.aedat4"
        path.write_bytes(bytes(b))
        try:
            rec = read_events(path)
            assert rec.events.dtype == EVENT_DTYPE and len(rec.events) > 0
            outcomes.add("accepted")
        except DataError as exc:
            assert str(path) in str(exc)
            outcomes.add("refused")
    assert outcomes == {"accepted", "refused"}


@FAST
@given(data=st.binary(max_size=64), pos=st.integers(0, 30000), keep=st.integers(0, 40000))
def test_property_aedat4_mutations_never_escape(tmp_path, davis, data, pos, keep):
    small = aedat4.first_packets(davis, 3)
    b = small[:pos] + data + small[pos + len(data):]
    path = tmp_path / "m.aedat4"
    path.write_bytes(b[:keep])
    try:
        read_events(path)
    except DataError:
        pass


@FAST
@given(raw=st.binary(max_size=200))
def test_property_nmnist_bin_bytes(tmp_path, raw):
    pytest.importorskip("tonic", reason="N-MNIST .bin is read through tonic (the data extra)")
    path = tmp_path / "r.bin"
    path.write_bytes(raw)
    try:
        rec = read_events(path)
        assert rec.events.dtype == EVENT_DTYPE and rec.sensor_size == (34, 34, 2)
    except DataError:
        pass


_DTYPES = st.sampled_from(["<i1", "<i2", "<i4", "<i8", "<u2", "<u8", "<f4", "<f8", "?", "U2", "S3"])


@FAST
@given(fields=st.lists(st.tuples(st.sampled_from("xytpq"), _DTYPES), max_size=5, unique_by=lambda f: f[0]),
       n=st.integers(0, 5), shape2d=st.booleans(), seed=st.integers(0, 2**31))
def test_property_npy_arrays(tmp_path, fields, n, shape2d, seed):
    dt = np.dtype(fields) if fields else np.dtype("<f8")
    arr = np.zeros((n, 2) if shape2d else n, dt)
    raw = np.random.default_rng(seed).integers(0, 256, arr.nbytes, dtype=np.uint8).tobytes()
    arr = np.frombuffer(raw, dt).reshape(arr.shape).copy() if arr.nbytes else arr
    path = _save(tmp_path, "a.npy", arr)
    try:
        rec = read_events(path)
    except DataError:
        return
    # accepted: every value stored is the value in the file (nothing cast away)
    for f in "xyt":
        assert np.array_equal(rec.events[f], arr[f].astype(np.int64))
    assert np.array_equal(rec.events["p"], arr["p"].astype(np.int64))
