"""The host side of the link against a misbehaving board (issue 14, point 4): short, odd or absurd answers are
a named LinkError, never struct.error / IndexError / UnicodeDecodeError, and nothing loops without progress."""
from __future__ import annotations

import signal
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_py import link as L
from host_tools.link import (MIN_MAX_PAYLOAD, BoardAnswerError, BoardError, BoardLink, LinkError, decode_error,
                             decode_info, decode_result, decode_stats, decode_weights_chunk)
from tests.host_tools.board_double import InProcessBoard

FAST = settings(max_examples=300, deadline=None)


@pytest.fixture(autouse=True)
def no_hang():
    """A hang is a failure, not a stuck CI job."""
    def fail(*_):
        raise AssertionError("the link looped for more than 10 s")
    old = signal.signal(signal.SIGALRM, fail)
    signal.alarm(10)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


@FAST
@given(st.binary(max_size=80))
def test_property_decoders_raise_only_board_answer_errors(p):
    for decode in (decode_info, decode_result, decode_stats, decode_error,
                   lambda b: decode_weights_chunk(b, 0, None)):
        try:
            decode(p)
        except LinkError:
            pass


@FAST
@given(cls=st.integers(-1, 9), conf=st.integers(0, 255), counts=st.lists(st.integers(0, 65535), min_size=10,
                                                                           max_size=10),
       stats=st.dictionaries(st.text("abcdefghij_", min_size=1, max_size=12), st.integers(-2**31, 2**31 - 1),
                             max_size=6))
def test_property_what_the_firmware_packs_decodes(cls, conf, counts, stats):
    r = decode_result(L.pack_result(cls, conf, counts))
    assert (r.cls, r.confidence, r.counts) == (cls, conf, counts)
    assert decode_stats(L.pack_stats(list(stats.items()))) == stats
    info = decode_info(L.pack_info(7, 1024, 4096, b"runtime x=1"))
    assert (info.max_payload, info.window, info.description) == (1024, 4096, "runtime x=1")


@pytest.mark.parametrize("decode, payload, message", [
    (decode_result, b"\x01", "RESULT answer of 1 bytes"),
    (decode_result, struct.pack("<hBB", 3, 9, 10) + b"\x00" * 4, "declares 10 counts"),
    (decode_result, struct.pack("<hBB", 12, 9, 2) + b"\x00" * 4, "class 12"),
    (decode_stats, b"\x05abc", "declares a 5-byte name"),
    (decode_stats, b"\x02\xff\xfe\x00\x00\x00\x00", "printable ASCII"),
    (decode_stats, b"\x00\x00\x00\x00\x00", "0-byte name"),
    (decode_error, b"", "empty payload"),
    (decode_info, b"\x01\x02", "INFO answer of 2 bytes"),
    (decode_info, L.pack_info(0, 12, 4096, b""), "at most 12 bytes"),
    (decode_info, L.pack_info(0, 0, 0, b""), "at most 0 bytes"),
])
def test_short_or_odd_payloads_are_named(decode, payload, message):
    with pytest.raises(BoardAnswerError, match=message):
        decode(payload)


def test_weights_chunks_are_bounded_and_consistent():
    with pytest.raises(BoardAnswerError, match="declares 1073741824 bytes"):
        decode_weights_chunk(struct.pack("<I", 1 << 30) + b"x", 0, None)
    with pytest.raises(BoardAnswerError, match="total changed from 10 to 11"):
        decode_weights_chunk(struct.pack("<I", 11) + b"x", 4, 10)
    with pytest.raises(BoardAnswerError, match="run past the declared total"):
        decode_weights_chunk(struct.pack("<I", 3) + b"xyzw", 0, None)
    assert decode_weights_chunk(struct.pack("<I", 3) + b"xyz", 0, None) == (3, b"xyz")
    with pytest.raises(BoardAnswerError, match="2 bytes at offset 0, expected 3"):   # a drip: no progress bound
        decode_weights_chunk(struct.pack("<I", 100) + b"xy", 0, None, asked=3)
    assert decode_weights_chunk(struct.pack("<I", 100) + b"xy", 98, 100, asked=3) == (100, b"xy")


def test_get_weights_from_a_board_that_drips_bytes_ends():
    """A board whose every WEIGHTS answer carries a few bytes of a large total (found by benchmarks/fuzz.py:
    the session did not end in 20 s) is refused at its first short chunk."""
    drip = struct.pack("<I", 8 << 20) + b"abc"
    link = _session(mutate=lambda t, p: drip if t == L.WEIGHTS else None)
    with pytest.raises(BoardAnswerError, match="3 bytes at offset 0"):
        link.get_weights()


def _session(**board):
    link = BoardLink(InProcessBoard(**board), timeout=0.05, max_retries=3)
    link.hello()
    return link


def test_in_process_board_answers_like_a_board():
    link = _session()
    assert link.send_events([1, 2], [3, 4], [0, 10], [0, 1]) == 1
    r = link.end_of_sample(3)
    assert 0 <= r.cls < 10 and len(r.counts) == 10
    assert link.get_stats()["samples"] == 1


@pytest.mark.parametrize("max_payload", [0, 7, 12])
def test_info_with_a_tiny_max_payload_is_refused_not_looped_on(max_payload):
    with pytest.raises(BoardAnswerError, match=f"at most {max_payload} bytes"):
        _session(max_payload=max_payload)


def test_send_events_never_loops_on_a_payload_that_holds_no_event():
    board = InProcessBoard()
    link = BoardLink(board, max_payload=12, timeout=0.05, max_retries=3)
    link.hello()
    assert link.max_payload == 12
    with pytest.raises(LinkError, match="cannot carry one event"):
        link.send_events([1], [1], [0], [1])
    link.max_payload = MIN_MAX_PAYLOAD                   # one event a frame: slow, but it finishes
    assert link.send_events(np.arange(5), np.arange(5), np.arange(5), np.ones(5, int)) == 5


@pytest.mark.parametrize("rtype, payload, call, message", [
    (L.RESULT, b"\x01\x00", "end_of_sample", "RESULT answer of 2 bytes"),
    (L.RESULT, b"", "end_of_sample", "RESULT answer of 0 bytes"),
    (L.STATS, b"\x09samples", "get_stats", "declares a 9-byte name"),
    (L.STATS, b"\x03\xc3\x28a\x00\x00\x00\x00", "get_stats", "printable ASCII"),
    (L.WEIGHTS, b"\x01", "get_weights", "WEIGHTS answer of 1 bytes"),
    (L.WEIGHTS, struct.pack("<I", 1 << 30) + b"\x00", "get_weights", "declares 1073741824 bytes"),
])
def test_a_board_sending_broken_answers(rtype, payload, call, message):
    link = _session(mutate=lambda t, p: payload if t == rtype else None)
    with pytest.raises(BoardAnswerError, match=message):
        getattr(link, call)()


def test_a_board_answering_with_the_wrong_type_or_an_empty_error():
    link = _session()
    link.ser.session.on_frame = (lambda orig: lambda m, s, p: (L.STATS, s, b"") if m == L.END_SAMPLE
                                 else orig(m, s, p))(link.ser.session.on_frame)
    with pytest.raises(BoardAnswerError, match="answered with type 0x83, expected 0x82"):
        link.end_of_sample(-1)
    link = _session()
    link.ser.session.on_frame = (lambda orig: lambda m, s, p: (L.ERROR, s, b"") if m == L.GET_STATS
                                 else orig(m, s, p))(link.ser.session.on_frame)
    with pytest.raises(BoardAnswerError, match="empty payload"):
        link.get_stats()


def test_a_real_board_error_is_still_a_board_error():
    link = _session()
    with pytest.raises(BoardError, match="label 12 outside"):
        link.end_of_sample(12)
