"""The micro:bit profile's device code (firmware_py/micro_link.py, micro_net.py, micro_sample.py, micro_events.py,
micro_main.py) against the definitions it re-implements for the 9 KB heap: link.py's frames and session (same
bytes in, same answers out; ERROR: the same code, shorter messages), converters/intsim.learn_samples (bit-exact
predictions, spike counts, learned weights, bank, saturations), the readout that `snn-edge pull` reads back,
and the constants of link.py, errors.py and board_main.py; and the minified program flash writes."""
from __future__ import annotations

import gc
import importlib
import struct
import sys
import types

import numpy as np
import pytest

from converters import intsim
from converters.blob import intmodel_to_blob
from converters.intmodel import IntLayer, IntModel, default_learn
from edge.data import frames_of
from edge.errors import SnnEdgeError
from edge.generator import generate_dataset
from firmware_py import board_main, errors
from firmware_py import link as L
from firmware_py import micro_link as ml
from firmware_py.binning import BinSpec
from host_tools.micro_flash import apply_readout, micro_files, micro_program, micro_spec

SPEC = BinSpec(34, 34, 10_000, 30, 4)         # built-in data, 8x8x2 = 128 inputs
MICRO = ("micro_model", "firmware_py.micro_net", "firmware_py.micro_sample", "firmware_py.micro_events",
         "firmware_py.micro_main")


def test_constants_are_the_shared_ones():
    assert ml.VERSION == L.PROTOCOL_VERSION
    assert (ml.MAX_PAYLOAD, ml.WINDOW) == (board_main.MICROBIT_MAX_PAYLOAD, board_main.MICROBIT_WINDOW)
    assert ml.LONGEST == 2 * (ml.MAX_PAYLOAD + L.OVERHEAD)
    # the message types, session and error codes the micro modules name by number
    assert (L.HELLO, L.EVENTS, L.END_SAMPLE, L.GET_STATS, L.GET_WEIGHTS) == (1, 3, 4, 5, 6)
    assert (L.ACK, L.INFO, L.RESULT, L.STATS, L.WEIGHTS, L.ERROR, L.NAK) == (0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86)
    assert (L.E_NO_SESSION, L.E_BAD_PAYLOAD) == (0xC8, 0xC9)
    assert (errors.E_UNSUPPORTED, errors.E_BAD_EVENT, errors.E_BAD_LABEL) == (3, 5, 6)


def test_frames_are_link_py_frames():
    golden = {(3, 5, bytes.fromhex("03C0DB0041")): "c0 db de 05 05 00 bb db de db dc db dd 00 41 e9 44 2d cb c0",
              (1, 0, b""): "c0 01 00 00 00 16 fc 6b 96 0f c0", (0x80, 255, b""): "c0 80 ff 00 00 1a 04 b8 a3 54 c0"}
    for (t, s, p), wire in golden.items():
        assert ml.enc(t, s, p).hex(" ") == wire
    rng = np.random.default_rng(0)
    for _ in range(200):
        p = rng.integers(0, 256, int(rng.integers(0, 300)), dtype=np.uint8).tobytes()
        t, s = int(rng.integers(0, 256)), int(rng.integers(0, 256))
        assert ml.enc(t, s, p) == L.encode_frame(t, s, p)


class TwinHandler:
    """One behaviour behind both interfaces: link.DeviceSession's handler methods and micro_link's handle."""

    def __init__(self):
        self.checkpoints = 0
        self.labels = []

    def hello(self):
        return b"twin"

    def end_of_sample(self, label):
        self.labels.append(label)
        return label % 7, 3, [label & 0xFF, len(self.labels)]

    def get_stats(self):
        return [("labels", len(self.labels)), ("checkpoints", self.checkpoints)]

    def checkpoint(self):
        self.checkpoints += 1

    def reset(self):
        raise errors.DeviceError(errors.E_NO_MODEL, "no model loaded")

    def handle(self, mtype, payload):
        if mtype == L.END_SAMPLE:
            return L.RESULT, L.pack_result(*self.end_of_sample(struct.unpack_from("<h", payload, 0)[0]))
        if mtype == L.GET_STATS:
            return L.STATS, L.pack_stats(self.get_stats())
        if mtype == L.CHECKPOINT:
            self.checkpoint()
            return L.ACK, b""
        if mtype == L.RESET:
            raise Exception(bytes((errors.E_NO_MODEL,)) + b"no model loaded")
        return L.ERROR, L.pack_error(L.E_UNKNOWN_TYPE, "unknown request type %d" % mtype)


def _scenario(rng, n=150):
    """A byte stream as a noisy line delivers it: hellos, in-order, repeated, skipped and corrupted
    requests, garbage between frames, single 0x03 bytes."""
    out = bytearray(b"\x01\x02garbage")
    seq = 0
    nonce = b"abcd"
    for _ in range(n):
        r = rng.random()
        if r < 0.05:
            seq = int(rng.integers(0, 256))
            frame = L.encode_frame(L.HELLO, seq, nonce if rng.random() < 0.7 else b"wxyz")
            seq = (seq + 1) & 0xFF
        else:
            mtype = [L.END_SAMPLE, L.GET_STATS, L.CHECKPOINT, L.RESET, 0x33][int(rng.integers(0, 5))]
            payload = struct.pack("<h", int(rng.integers(-1, 10))) if mtype == L.END_SAMPLE else b""
            s = seq if rng.random() < 0.8 else (seq + int(rng.integers(-3, 4))) & 0xFF
            frame = bytearray(L.encode_frame(mtype, s, payload))
            if s == seq:
                seq = (seq + 1) & 0xFF
            if rng.random() < 0.08:
                frame[int(rng.integers(1, len(frame) - 1))] ^= 1 << int(rng.integers(0, 8))
        out += frame
        if rng.random() < 0.1:
            out += bytes(rng.integers(0, 256, int(rng.integers(1, 6)), dtype=np.uint8).tobytes().replace(b"\x03", b""))
        if rng.random() < 0.03:
            out += b"\x03"
    return bytes(out)


def _frames(wire: bytes) -> list[tuple]:
    """The answers on a wire, ERROR payloads cut to their code (the micro:bit's messages are shorter)."""
    out = []
    d = L.Deframer(4096, lambda t, s, p: out.append((t, s, bytes(p[:1]) if t == L.ERROR else bytes(p))))
    d.feed(wire)
    return out


@pytest.mark.parametrize("seed", range(6))
def test_same_bytes_in_same_answers_out_as_link_py(seed):
    rng = np.random.default_rng(seed)
    stream = _scenario(rng)
    ref_h, twin_h = TwinHandler(), TwinHandler()
    ref_out, micro_out = [], []
    session = L.DeviceSession(ref_h, ml.MAX_PAYLOAD, ml.WINDOW, boot_id=1234)

    def on_frame(t, s, p):
        r = session.on_frame(t, s, p)
        if r is not None:
            ref_out.append(L.encode_frame(*r))
    deframer = L.Deframer(ml.MAX_PAYLOAD, on_frame, break_on_intr=True)
    deframer.feed(stream)
    link = importlib.reload(ml)            # the session lives in the module's globals: a fresh one
    link.H, link.WR = twin_h.handle, micro_out.append
    link.INFO = struct.pack(L.INFO_HEAD, L.PROTOCOL_VERSION, 1234, ml.MAX_PAYLOAD, ml.WINDOW) + twin_h.hello()
    cuts = sorted(rng.choice(len(stream), 60, replace=False))    # the UART delivers arbitrary pieces
    for a, b in zip([0] + cuts, cuts + [len(stream)]):
        if b > a:
            link.feed(stream[a:b])
    assert _frames(b"".join(micro_out)) == _frames(b"".join(ref_out)) and len(ref_out) > 50
    assert any(t == L.ERROR for t, _, _ in _frames(b"".join(ref_out)))     # refusals were compared too
    assert twin_h.labels == ref_h.labels


def test_two_ctrl_c_break_the_loop():
    link = importlib.reload(ml)
    link.H, link.WR, link.INFO = TwinHandler().handle, lambda b: None, b""
    link.feed(b"\xc0ab\x03")                  # one 0x03: a dropped frame, not a break
    with pytest.raises(KeyboardInterrupt):
        link.feed(b"\x03")                   # the second in a row, in the next read
    with pytest.raises(KeyboardInterrupt):
        link.feed(b"\xc0\x03\x03")


def _model(rng, rule="readout_delta", hidden=16):
    W0 = rng.integers(-30, 60, (128, hidden)).astype(np.int8)
    W1 = rng.integers(-60, 60, (hidden, 10)).astype(np.int8)
    layers = [IntLayer(W0, np.array(2048, np.int32), 3277, 1500, 6, 6),
              IntLayer(W1, np.array(2048, np.int32), 3277, 800, 6, 6)]
    return IntModel(layers, 1, SPEC.as_tuple(), default_learn(rule, 3))


@pytest.fixture
def board(tmp_path, monkeypatch):
    """load(blob): the micro modules imported afresh as the board imports them: micro_model.py generated
    from the blob, model.blob in the working directory, a port clock."""
    utime = types.ModuleType("utime")
    utime.ticks_us = lambda: 1234                      # the board's clock at boot (INFO's boot id)
    monkeypatch.setitem(sys.modules, "utime", utime)
    monkeypatch.setattr(gc, "mem_free", lambda: -1, raising=False)     # the port's, for GET_STATS
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))

    def forget():
        import firmware_py
        for m in MICRO:
            sys.modules.pop(m, None)
            if m.startswith("firmware_py.") and hasattr(firmware_py, m[12:]):
                delattr(firmware_py, m[12:])      # else `from firmware_py import x` finds the old one

    def load(blob):
        (tmp_path / "model.blob").write_bytes(blob)
        (tmp_path / "micro_model.py").write_text(micro_spec(blob))
        forget()
        importlib.reload(ml)
        main = importlib.import_module("firmware_py.micro_main")
        return main, sys.modules["firmware_py.micro_net"]
    yield load
    forget()


def _stream(handle, recs, labels):
    results = []
    for r, label in zip(recs, labels):
        ev = r.events
        for k in range(0, len(ev), 4):
            e = ev[k:k + 4]
            payload = L.pack_events(int(e["t"][0]), [int(v) for v in e["x"]], [int(v) for v in e["y"]],
                                    [int(v) for v in e["t"]], [int(v) for v in e["p"]])
            assert handle(L.EVENTS, payload) == (L.ACK, b"")
        rtype, payload = handle(L.END_SAMPLE, struct.pack("<h", int(label)))
        assert rtype == L.RESULT
        results.append(L.unpack_result(payload))
    return results


def _pull(handle):
    out = b""
    while True:
        rtype, p = handle(L.GET_WEIGHTS, struct.pack("<II", len(out), 28))
        assert rtype == L.WEIGHTS
        out += p[4:]
        if len(out) >= struct.unpack_from("<I", p)[0]:
            return out


@pytest.mark.parametrize("rule", ["readout_delta", "none"])
def test_micro_runtime_is_bit_exact_with_intsim(rule, board):
    rng = np.random.default_rng(0)
    model = _model(rng, rule)
    recs = generate_dataset(1, seed=1)[:6]
    X = np.stack([frames_of(r, SPEC) for r in recs])
    y = np.array([r.label for r in recs])
    y[2] = -1                                             # an unlabelled sample: inference only
    if rule != "none":
        learned, preds, scores, nsat, ls = intsim.learn_samples(model, X, y)
    else:
        res = intsim.run(model, X.transpose(1, 0, 2))
        learned, preds, scores, nsat, ls = model, res.predictions, res.scores, None, None
    mm, net = board(intmodel_to_blob(model))
    results = _stream(mm.handle, recs, y)
    assert [r[0] for r in results] == list(preds)
    assert [r[2] for r in results] == [list(s) for s in scores]
    assert sum(s.sum() for s in scores) > 50                 # the network is not silent
    W = np.array(list(net.W), np.int8).reshape(16, 10)
    assert (W == learned.layers[-1].W).all()
    if rule != "none":
        assert (W != model.layers[-1].W).any()              # it learned
        assert [hi << 16 | lo for hi, lo in zip(net.HI, net.LO)] == [int(v) for v in ls.lanes]
        assert net.NS == nsat
    # what `snn-edge pull --profile microbit` makes of the board's readout
    adapted = apply_readout(model, _pull(mm.handle))
    assert (adapted.layers[-1].W == learned.layers[-1].W).all() and (adapted.layers[0].W == model.layers[0].W).all()
    stats = dict(L.unpack_stats(mm.handle(L.GET_STATS, b"")[1]))
    assert (stats["samples"], stats["labelled"]) == (6, 5)
    assert stats["correct"] == sum(int(p == t) for p, t in zip(preds, y) if t >= 0)


def test_refusals_carry_their_codes(board):
    mm, _ = board(intmodel_to_blob(_model(np.random.default_rng(2))))
    for mtype, payload, code in [(L.EVENTS, L.pack_events(0, [40], [1], [5], [0]), errors.E_BAD_EVENT),
                                 (L.END_SAMPLE, struct.pack("<h", 10), errors.E_BAD_LABEL),
                                 (L.PUT_WEIGHTS, b"", errors.E_UNSUPPORTED), (L.CHECKPOINT, b"", errors.E_UNSUPPORTED),
                                 (L.RESET, b"", errors.E_UNSUPPORTED), (L.LOAD_MODEL, b"", errors.E_UNSUPPORTED)]:
        with pytest.raises(Exception) as e:
            mm.handle(mtype, payload)
        assert e.value.args[0][0] == code
    with pytest.raises(ValueError):                      # a cut EVENTS payload: the link answers E_BAD_PAYLOAD
        mm.handle(L.EVENTS, L.pack_events(0, [4], [1], [5], [0])[:-3])


def test_models_the_micro_runtime_cannot_run_are_refused():
    rng = np.random.default_rng(3)
    one = _model(rng)
    one.layers = one.layers[:1]
    with pytest.raises(SnnEdgeError, match="two layers"):
        micro_spec(intmodel_to_blob(one))
    with pytest.raises(SnnEdgeError, match="heap"):    # 128-64-10: its code and data exceed the heap
        micro_files(intmodel_to_blob(_model(rng, hidden=64)))


def test_the_minified_program_is_the_same_program(board, tmp_path, monkeypatch):
    """What `flash --profile microbit` writes (host_tools/micro_flash.micro_program: one program, flat
    imports, constants inlined, every own name renamed) gives the repo modules' results bit for bit."""
    model = _model(np.random.default_rng(0))
    blob = intmodel_to_blob(model)
    recs = generate_dataset(1, seed=1)[:4]
    y = [r.label for r in recs]
    mm, _ = board(blob)
    expected = _stream(mm.handle, recs, y), _pull(mm.handle)
    files, names = micro_program(blob)
    small = tmp_path / "small"
    small.mkdir()
    for n, src in files.items():
        (small / n).write_text(src)
    (small / "model.blob").write_bytes(blob)
    monkeypatch.chdir(small)
    monkeypatch.syspath_prepend(str(small))
    assert "micro_model" not in names or names["micro_model"] + ".py" not in files   # constants all inlined
    try:
        handle = getattr(importlib.import_module(names["micro_main"]), names["handle"])
        assert (_stream(handle, recs, y), _pull(handle)) == expected
    finally:
        for n in files:
            sys.modules.pop(n[:-3], None)
