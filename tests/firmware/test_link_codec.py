"""The link's frame codec and device session: CPython property tests, and the same checks
(tests/firmware/check_link_mpy.py) under the real MicroPython unix port at board heap sizes."""
from __future__ import annotations

import zlib

import pytest
from hypothesis import given, settings, strategies as st

from firmware_py import link as L
from tests.firmware.conftest import run_script


# the small heap: 64K on the 32-bit port (a board's), 96K on the 64-bit port (its objects are twice as big)
@pytest.mark.parametrize("interp,heap", [("cpython", None), ("micropython", "192K"), ("micropython", "96K"),
                                         ("micropython32", "64K")])
def test_link_checks_under_each_interpreter(interp, heap, request):
    path = request.getfixturevalue("mpy_tree") if heap != "192K" else None
    out = run_script(interp, "check_link_mpy.py", heap=heap, path=path)
    lines = out.strip().splitlines()
    assert lines[-1].startswith("OK "), out
    assert int(lines[-1].split()[1]) > 600       # every bit-flip case ran
    if interp != "cpython":
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
    xs, ys, ps = [0, 33, L.EVENT_MAX_XY], [0, 7, L.EVENT_MAX_XY], [1, 0, 1]
    ts = [500, 600, 500 + L.EVENT_MAX_DT]
    b = L.EventBatch().bind(L.pack_events(500, xs, ys, ts, ps))
    assert [b.event(i) for i in range(b.count)] == list(zip(xs, ys, ts, ps))
    for bad in ([1], [1], [500 + L.EVENT_MAX_DT + 1], [0]), ([L.EVENT_MAX_XY + 1], [1], [500], [0]), \
               ([1], [1], [499], [0]), ([1], [1], [500], [2]):
        with pytest.raises(ValueError):
            L.pack_events(500, *bad)
    with pytest.raises(ValueError, match="expected 13"):
        L.EventBatch().bind(L.pack_events(0, [1], [1], [1], [0])[:-1])
    with pytest.raises(ValueError, match="header byte 0"):
        L.EventBatch().bind(b"\x00" + L.pack_events(0, [1], [1], [1], [0])[1:])


events_strategy = st.integers(0, L.EVENT_MAX_T_BASE - L.EVENT_MAX_DT).flatmap(lambda t_base: st.tuples(
    st.just(t_base), st.lists(st.tuples(st.integers(0, L.EVENT_MAX_XY), st.integers(0, L.EVENT_MAX_XY),
                                        st.integers(t_base, t_base + L.EVENT_MAX_DT), st.integers(0, 1)),
                              max_size=50)))


@settings(max_examples=200, deadline=None)
@given(events_strategy)
def test_events_payload_round_trips_and_needs_no_escape(case):
    """Protocol 2's EVENTS payloads: every field range round-trips, the host's numpy packer gives the
    board's bytes, and no byte is END, ESC or INTR, so the frame body crosses unstuffed."""
    import numpy as np
    from host_tools.link import pack_events_array
    t_base, events = case
    xs, ys, ts, ps = (list(c) for c in zip(*events)) if events else ([], [], [], [])
    payload = L.pack_events(t_base, xs, ys, ts, ps)
    assert payload == pack_events_array(t_base, np.array(xs, int), np.array(ys, int), np.array(ts, int),
                                        np.array(ps, int))
    assert not {L.END, L.ESC, L.INTR} & set(payload)
    b = L.EventBatch().bind(payload)
    assert b.t_base == t_base and [b.event(i) for i in range(b.count)] == events


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 255), st.binary(max_size=400)), min_size=1, max_size=6),
       st.lists(st.integers(0, 2), max_size=6), st.integers(1, 700), st.data())
def test_body_fast_path_equals_exact_decoding(frames, faults, chunk, data):
    """The deframer's body mode (length-directed copy, judged at its END) delivers exactly what exact
    decoding would: frames with escapes, lost bytes, stray END/0x03 inside a body, any read sizes."""
    wire = bytearray()
    for seq, payload in frames:
        wire += L.encode_frame(L.EVENTS, seq, payload)
    for f in faults:
        k = data.draw(st.integers(0, len(wire) - 1))
        if f == 0:
            del wire[k]                    # a lost byte
        elif f == 1:
            wire.insert(k, L.END)          # a stray delimiter
        else:
            wire.insert(k, L.INTR)         # one Ctrl-C of noise
    got = []
    d = L.Deframer(400, lambda t, s, p: got.append((s, bytes(p))))
    i = 0
    while i < len(wire):
        n = min(chunk, d.want()) if data.draw(st.booleans()) else chunk
        d.feed(bytes(wire[i:i + n]))
        i += n
    reference = []
    ref = L.Deframer(400, lambda t, s, p: reference.append((s, bytes(p))))
    for b in wire:                          # one byte at a time: never enters body mode
        ref.feed(bytes([b]))
    assert got == reference
    if not faults:
        assert got == [(s & 0xFF, p) for s, p in frames]


def test_stats_and_result_payloads_round_trip():
    items = [("samples", 3), ("mem_free", -1), ("hash", 2**31 - 1)]
    assert L.unpack_stats(L.pack_stats(items)) == items
    assert L.unpack_result(L.pack_result(-1, 200, [0, 65535, 7])) == (-1, 200, [0, 65535, 7])


def test_a_late_duplicate_hello_gets_the_same_info_and_resets_nothing():
    class Tally:
        def hello(self):
            return b"tally"

        def get_stats(self):
            return [("n", 1)]

    s = L.DeviceSession(Tally(), 64, 128, boot_id=7)
    info = s.on_frame(L.HELLO, 0, b"abcd")
    assert info[0] == L.INFO
    assert s.on_frame(L.GET_STATS, 1, b"")[0] == L.STATS
    assert s.on_frame(L.HELLO, 0, b"abcd") == info          # not the STATS payload typed as INFO
    assert s.on_frame(L.GET_STATS, 2, b"")[0] == L.STATS    # the session went on where it was


def test_link_sizes_follow_the_free_heap_and_the_handler():
    from firmware_py.board_main import MAX_PAYLOAD_CAP, link_sizes
    assert link_sizes(4000) == (256, 2048)                    # the floor
    assert link_sizes(100_000) == (4096, 32768)               # 1/16 of the heap per frame, 8 frames
    assert link_sizes(150_000) == (8192, 0xFFFF)              # the window fits INFO's u16
    assert link_sizes(10**7) == (MAX_PAYLOAD_CAP, 0xFFFF)     # capped
    assert link_sizes(10**7, 1024) == (1024, 8192)            # the runtime's handler asks for 1 KB


class ScriptedPort:
    """serve()'s port: reads return one scripted chunk each; waiting() says what the script says."""

    def __init__(self, chunks, waiting):
        self.chunks, self.waits, self.out = list(chunks), list(waiting), []

    def readinto(self, view, want):
        if not self.chunks:
            return 0
        data = self.chunks.pop(0)
        view[:len(data)] = data
        return len(data)

    def waiting(self):
        return self.waits.pop(0) if self.waits else False

    def write(self, data):
        self.out.append(bytes(data))      # what a port sends: the bytes as they are now (a view is reused)


def _answers(port):
    got = []
    d = L.Deframer(256, lambda t, s, p: got.append((t, s)))
    for w in port.out:
        d.feed(w)
    return got


def test_serve_holds_one_ack_while_input_waits_and_never_loses_it():
    """A plain ACK may wait for the next answer (which acknowledges it too), never two in a row, and a
    held one is sent as soon as the input drains: every request stays acknowledged."""
    from firmware_py.board_main import serve
    from firmware_py.counting_handler import make_tally_handler
    events = [L.encode_frame(L.EVENTS, s, L.pack_events(0, [1], [2], [3], [0])) for s in range(1, 6)]
    # reads one frame at a time (the frames are small: whole in one read)
    chunks = [L.encode_frame(L.HELLO, 0, b"abcd")] + events
    # waiting() is asked: after each ACK is made, and at the top of each loop turn while one is held
    port = ScriptedPort(chunks, waiting=[True, True, True, False, False])
    serve(make_tally_handler(), port, 256, 1024)
    answers = _answers(port)
    assert answers[0] == (L.INFO, 0)
    acked = [s for t, s in answers[1:] if t == L.ACK]
    assert acked[-1] == 5                                 # the last request is acknowledged
    assert len(acked) < 5                                 # and some ACKs were carried by later ones
    assert all(b - a <= 2 for a, b in zip([0] + acked, acked))   # never two held in a row


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 255), st.integers(0, 1000), st.binary(max_size=100))
def test_frame_writer_writes_encode_frames_bytes(mtype, seq, payload):
    """The board's preallocated writer gives encode_frame's bytes (reserved bytes escaped, both CRCs)."""
    assert bytes(L.FrameWriter().frame(mtype, seq, payload)) == L.encode_frame(mtype, seq, payload)


def test_a_request_that_runs_out_of_heap_is_answered_with_the_preallocated_error():
    """On a full heap the board cannot format an exception's message: the session answers with
    link.OUT_OF_HEAP, and serve does too when the heap ran out outside the session (here: the first
    answer's write), so the host reports the board's words instead of unanswered retransmissions."""
    from firmware_py.board_main import serve
    from firmware_py.counting_handler import make_tally_handler

    class FullHeap:
        def __init__(self, inner):
            self.inner = inner

        def __getattr__(self, name):
            return getattr(self.inner, name)

        def events(self, batch):
            raise MemoryError("memory allocation failed, allocating 640 bytes")

    s = L.DeviceSession(FullHeap(make_tally_handler()), 256, 1024, boot_id=7)
    assert s.on_frame(L.HELLO, 0, b"abcd")[0] == L.INFO
    rtype, seq, payload = s.on_frame(L.EVENTS, 1, L.pack_events(0, [1], [2], [3], [0]))
    assert (rtype, seq, payload) == (L.ERROR, 1, L.OUT_OF_HEAP)
    assert payload[0] == 4 and b"out of heap" in payload                 # errors.E_NO_MEMORY, and why

    class WriteRunsOutOnce(ScriptedPort):
        failed = False

        def write(self, data):
            if not self.failed and len(self.out) == 1:        # the answer after INFO
                self.failed = True
                raise MemoryError("memory allocation failed, allocating 64 bytes")
            super().write(data)

    port = WriteRunsOutOnce([L.encode_frame(L.HELLO, 0, b"abcd"),
                             L.encode_frame(L.GET_STATS, 1, b"")], waiting=[False])
    serve(make_tally_handler(), port, 256, 1024)
    got = []
    d = L.Deframer(256, lambda t, q, p: got.append((t, q, bytes(p))))
    for w in port.out:
        d.feed(w)
    assert got[0][0] == L.INFO
    assert got[1] == (L.ERROR, 1, L.OUT_OF_HEAP)
