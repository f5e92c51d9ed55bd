"""The link's frame codec and device session: CPython property tests, and the same checks
(tests/firmware/check_link_mpy.py) under the real MicroPython unix port at board heap sizes."""
from __future__ import annotations

import zlib

import pytest
from hypothesis import given, settings, strategies as st

from firmware_py import link as L
from tests.firmware.conftest import run_script


@pytest.mark.parametrize("interp,heap", [("cpython", None), ("micropython", "192K"), ("micropython", "64K")])
def test_link_checks_under_each_interpreter(interp, heap, request):
    path = request.getfixturevalue("mpy_tree") if heap == "64K" else None
    out = run_script(interp, "check_link_mpy.py", heap=heap, path=path)
    lines = out.strip().splitlines()
    assert lines[-1].startswith("OK "), out
    assert int(lines[-1].split()[1]) > 600       # every bit-flip case ran
    if interp == "micropython":
        heap_line = [ln for ln in lines if ln.startswith("HEAP ")]
        assert heap_line, out
        first, last = map(int, heap_line[0].split()[1:])
        assert first - last < 256


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600))
def test_crc_plain_path_equals_zlib(data):
    assert L.crc32_py(data) == zlib.crc32(data)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 255), st.integers(0, 255), st.binary(max_size=300)), max_size=8),
       st.binary(max_size=40), st.integers(1, 64))
def test_frames_survive_garbage_and_any_chunking(frames, garbage, chunk):
    got = []
    d = L.Deframer(300, lambda t, s, p: got.append((t, s, bytes(p))))
    wire = garbage + b"".join(L.encode_frame(t, s, p) for t, s, p in frames)
    for i in range(0, len(wire), chunk):
        d.feed(wire[i:i + chunk])
    # garbage may swallow nothing that follows its END: every frame after it arrives intact
    assert got == frames
    assert 0x03 not in wire[len(garbage):]


@settings(max_examples=100, deadline=None)
@given(st.binary(min_size=1, max_size=100), st.data())
def test_corrupted_frame_is_never_delivered(payload, data):
    wire = bytearray(L.encode_frame(L.EVENTS, 7, payload))
    n_flips = data.draw(st.integers(1, 6))
    for _ in range(n_flips):
        bit = data.draw(st.integers(0, 8 * len(wire) - 1))
        wire[bit // 8] ^= 1 << (bit % 8)
    got = []
    d = L.Deframer(200, lambda t, s, p: got.append((t, s, bytes(p))))
    d.feed(bytes(wire))
    # either the flips cancelled out, or nothing is delivered
    assert got in ([], [(L.EVENTS, 7, payload)])
    if got:
        assert bytes(wire) == L.encode_frame(L.EVENTS, 7, payload)


def test_event_batch_round_trip():
    xs, ys, ts, ps = [0, 33, 32767], [0, 7, 65535], [500, 600, 500 + 65535], [1, 0, 1]
    b = L.EventBatch().bind(L.pack_events(500, xs, ys, ts, ps))
    assert [b.event(i) for i in range(b.count)] == list(zip(xs, ys, ts, ps))
    with pytest.raises(ValueError):
        L.pack_events(500, [1], [1], [500 + 65536], [0])
    with pytest.raises(ValueError):
        L.EventBatch().bind(L.pack_events(0, [1], [1], [1], [0])[:-1])


def test_stats_and_result_payloads_round_trip():
    items = [("samples", 3), ("mem_free", -1), ("hash", 2**31 - 1)]
    assert L.unpack_stats(L.pack_stats(items)) == items
    assert L.unpack_result(L.pack_result(-1, 200, [0, 65535, 7])) == (-1, 200, [0, 65535, 7])
