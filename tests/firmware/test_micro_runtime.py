"""The micro:bit profile's device code (firmware_py/micro_link.py, micro_net.py, micro_main.py) against the
definitions it re-implements for the 9 KB heap: link.py's frames and session (same bytes in, same bytes out),
converters/intsim.learn_samples (bit-exact predictions, spike counts, learned weights, bank, saturations),
the checkpoint image that `snn-edge pull` reads, and the constants of link.py, errors.py and board_main.py."""
from __future__ import annotations

import struct
import types

import numpy as np
import pytest

from converters import intsim
from converters.blob import intmodel_to_blob
from converters.checkpoint import apply_board_checkpoint
from converters.intmodel import IntLayer, IntModel, default_learn
from edge.data import frames_of
from edge.generator import generate_dataset
from firmware_py import board_main, errors
from firmware_py import link as L
from firmware_py import micro_frame as mf
from firmware_py import micro_link as ml
from firmware_py import micro_main as mm
from firmware_py import micro_net as mn
from firmware_py.binning import BinSpec
from host_tools.micro_flash import micro_spec
from host_tools.minify import minify_source

SPEC = BinSpec(34, 34, 10_000, 30, 4)         # built-in data, 8x8x2 = 128 inputs


def test_constants_are_the_shared_ones():
    assert ml.VERSION == L.PROTOCOL_VERSION
    assert (ml.MAX_PAYLOAD, ml.WINDOW) == (board_main.MICROBIT_MAX_PAYLOAD, board_main.MICROBIT_WINDOW)
    assert (ml.HELLO, ml.ACK, ml.INFO, ml.ERROR, ml.NAK) == (L.HELLO, L.ACK, L.INFO, L.ERROR, L.NAK)
    assert (ml.E_NO_SESSION, ml.E_BAD_PAYLOAD, ml.E_UNKNOWN_TYPE, ml.E_HANDLER) == \
        (L.E_NO_SESSION, L.E_BAD_PAYLOAD, L.E_UNKNOWN_TYPE, L.E_HANDLER)
    # the request types and error codes micro_main.handle names by number
    assert (L.LOAD_MODEL, L.EVENTS, L.END_SAMPLE, L.GET_STATS, L.GET_WEIGHTS, L.PUT_WEIGHTS, L.CHECKPOINT,
            L.RESET) == (2, 3, 4, 5, 6, 7, 8, 9)
    assert (L.RESULT, L.STATS, L.WEIGHTS) == (0x82, 0x83, 0x84)
    assert (errors.E_UNSUPPORTED, errors.E_BAD_EVENT, errors.E_BAD_LABEL, errors.E_NO_MODEL) == (3, 5, 6, 7)


def test_frames_are_link_py_frames():
    golden = {(3, 5, bytes.fromhex("03C0DB0041")): "c0 db de 05 05 00 bb db de db dc db dd 00 41 e9 44 2d cb c0",
              (1, 0, b""): "c0 01 00 00 00 16 fc 6b 96 0f c0", (0x80, 255, b""): "c0 80 ff 00 00 1a 04 b8 a3 54 c0"}
    for (t, s, p), wire in golden.items():
        assert ml.encode(t, s, p).hex(" ") == wire
    rng = np.random.default_rng(0)
    for _ in range(200):
        p = rng.integers(0, 256, int(rng.integers(0, 33)), dtype=np.uint8).tobytes()
        t, s = int(rng.integers(0, 256)), int(rng.integers(0, 256))
        assert ml.encode(t, s, p) == L.encode_frame(t, s, p)


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
            raise ml.Err(errors.E_NO_MODEL, "no model loaded")
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


@pytest.mark.parametrize("seed", range(6))
def test_same_bytes_in_same_bytes_out_as_link_py(seed):
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
    micro = mf.Link(twin_h.handle, twin_h.hello(), micro_out.append, 1234)
    cuts = sorted(rng.choice(len(stream), 60, replace=False))    # the UART delivers arbitrary pieces
    for a, b in zip([0] + cuts, cuts + [len(stream)]):
        if b > a:
            micro.feed(stream[a:b])
    assert micro_out == ref_out and len(ref_out) > 50
    assert (micro.frames, micro.crc_errors, micro.framing_errors) == \
        (deframer.frames, deframer.crc_errors, deframer.framing_errors)
    assert micro.duplicates == session.duplicates
    assert twin_h.labels == ref_h.labels


def test_two_ctrl_c_break_the_loop():
    micro = mf.Link(TwinHandler().handle, b"", lambda b: None, 1)
    micro.feed(b"\xc0ab\x03")                  # one 0x03: a dropped frame, not a break
    with pytest.raises(KeyboardInterrupt):
        micro.feed(b"\x03")                   # the second in a row, in the next read
    with pytest.raises(KeyboardInterrupt):
        micro.feed(b"\xc0\x03\x03")


def test_minified_modules_are_the_same_program():
    import ast
    from pathlib import Path
    for name in ("micro_link.py", "micro_frame.py", "micro_net.py", "micro_main.py"):
        src = (Path(mm.__file__).parent / name).read_text()
        small = minify_source(src, name)
        assert len(small) < 0.6 * len(src)
        compile(small, name, "exec")
        assert '"""' not in small and "#" not in small.replace("'#'", "")
        # same top-level definitions, same attribute names
        names = lambda t: sorted(n.name for n in ast.parse(t).body if hasattr(n, "name"))  # noqa: E731
        attrs = lambda t: sorted({n.attr for n in ast.walk(ast.parse(t)) if isinstance(n, ast.Attribute)})  # noqa: E731
        assert names(small) == names(src) and attrs(small) == attrs(src)


def _model(rng, rule="readout_delta"):
    W0 = rng.integers(-30, 60, (128, 28)).astype(np.int8)
    W1 = rng.integers(-60, 60, (28, 10)).astype(np.int8)
    layers = [IntLayer(W0, np.array(2048, np.int32), 3277, 1500, 6, 6),
              IntLayer(W1, np.array(2048, np.int32), 3277, 800, 6, 6)]
    return IntModel(layers, 1, SPEC.as_tuple(), default_learn(rule, 3))


def _spec_module(blob):
    spec = types.ModuleType("micro_model")
    exec(micro_spec(blob), spec.__dict__)
    return spec


def _stream(h, recs, labels):
    results = []
    for r, label in zip(recs, labels):
        ev = r.events
        for k in range(0, len(ev), 4):
            e = ev[k:k + 4]
            payload = L.pack_events(int(e["t"][0]), [int(v) for v in e["x"]], [int(v) for v in e["y"]],
                                    [int(v) for v in e["t"]], [int(v) for v in e["p"]])
            assert h.handle(L.EVENTS, payload) == (L.ACK, b"")
        rtype, payload = h.handle(L.END_SAMPLE, struct.pack("<h", int(label)))
        assert rtype == L.RESULT
        results.append(L.unpack_result(payload))
    return results


def _pull(h):
    image = b""
    while True:
        rtype, p = h.handle(L.GET_WEIGHTS, struct.pack("<II", len(image), 28))
        total = struct.unpack_from("<I", p)[0]
        image += p[4:]
        if len(image) >= total:
            return image


@pytest.mark.parametrize("rule", ["readout_delta", "none"])
def test_micro_runtime_is_bit_exact_with_intsim(rule, tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    model = _model(rng, rule)
    recs = generate_dataset(1, seed=1)[:6]
    X = np.stack([frames_of(r, SPEC) for r in recs])
    y = np.array([r.label for r in recs])
    y[2] = -1                                             # an unlabelled sample: inference only
    learned, preds, scores, nsat, ls = intsim.learn_samples(model, X, y) if rule != "none" else \
        (model, intsim.run(model, X.transpose(1, 0, 2)).predictions, intsim.run(model, X.transpose(1, 0, 2)).scores,
         0, None)
    blob = intmodel_to_blob(model)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "model.blob").write_bytes(blob)
    spec = _spec_module(blob)
    h = mm.Handler(spec)
    h.link = mf.Link(h.handle, mm.DESCRIPTION, lambda b: None, 1)
    results = _stream(h, recs, y)
    assert [r[0] for r in results] == list(preds)
    assert [r[2] for r in results] == [list(s) for s in scores]
    assert sum(s.sum() for s in scores) > 50                 # the network is not silent
    W = np.array(list(h.net.W), np.int8).reshape(28, 10)
    assert (W == learned.layers[-1].W).all()
    if rule != "none":
        assert (W != model.layers[-1].W).any()              # it learned
        assert [hi << 16 | lo for hi, lo in zip(h.net.hi, h.net.lo)] == [int(v) for v in ls.lanes]
    assert h.net.nsat == nsat
    # what `snn-edge pull` reads back
    adapted = apply_board_checkpoint(model, _pull(h))
    assert (adapted.layers[-1].W == learned.layers[-1].W).all() and (adapted.layers[0].W == model.layers[0].W).all()
    stats = dict(L.unpack_stats(h.handle(L.GET_STATS, b"")[1]))
    assert (stats["samples"], stats["labelled"], stats["events"]) == (6, 5, sum(len(r.events) for r in recs))
    assert stats["correct"] == sum(int(p == t) for p, t in zip(preds, y) if t >= 0)
    # learning lives in RAM on the micro:bit: CHECKPOINT is refused with its code
    with pytest.raises(ml.Err) as e:
        h.handle(L.CHECKPOINT, b"")
    assert e.value.args[0] == errors.E_UNSUPPORTED


def test_micro_primitives_match_fixedpoint():
    from firmware_py import fixedpoint as fp
    rng = np.random.default_rng(1)
    for x in list(rng.integers(-fp.STATE_MAX - 5000, fp.STATE_MAX + 5000, 3000)) + [0, -1, 262143, 262144, -262144]:
        for a in (0, 1, 2048, 3277, 4095, 4096):
            assert mn.mq(int(x), a) == fp.mul_q12(int(x), a)
    lanes = fp.lane_seeds(12345, 11)
    hi, lo = [s >> 16 for s in lanes], [s & 0xFFFF for s in lanes]
    for _ in range(50):
        fp.tick(lanes)
        mn.tick(hi, lo)
    assert [h << 16 | l for h, l in zip(hi, lo)] == lanes


def test_bad_events_and_labels_are_refused_with_their_codes(tmp_path, monkeypatch):
    blob = intmodel_to_blob(_model(np.random.default_rng(2)))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "model.blob").write_bytes(blob)
    h = mm.Handler(_spec_module(blob))
    with pytest.raises(ml.Err) as e:
        h.handle(L.EVENTS, L.pack_events(0, [40], [1], [5], [0]))
    assert e.value.args[0] == errors.E_BAD_EVENT
    with pytest.raises(ml.Err) as e:
        h.handle(L.END_SAMPLE, struct.pack("<h", 10))
    assert e.value.args[0] == errors.E_BAD_LABEL
    with pytest.raises(ml.Err) as e:
        h.handle(L.PUT_WEIGHTS, b"")
    assert e.value.args[0] == errors.E_UNSUPPORTED


def test_the_minified_program_is_the_same_program(tmp_path, monkeypatch):
    """What `flash --profile microbit` would write (host_tools/micro_flash.micro_program: one program,
    flat imports, constants inlined, every own name renamed) gives the repo modules' results bit for bit."""
    import sys

    from host_tools.micro_flash import micro_program
    files, names = micro_program()
    for n, src in files.items():
        (tmp_path / n).write_text(src)
    model = _model(np.random.default_rng(0))
    blob = intmodel_to_blob(model)
    (tmp_path / "model.blob").write_bytes(blob)
    recs = generate_dataset(1, seed=1)[:4]
    y = [r.label for r in recs]
    monkeypatch.chdir(tmp_path)
    ref = mm.Handler(_spec_module(blob))
    ref.link = mf.Link(ref.handle, mm.DESCRIPTION, lambda b: None, 1)
    expected = _stream(ref, recs, y), _pull(ref)
    utime = types.ModuleType("utime")                   # the port's clock module, on the host's clock
    utime.ticks_ms, utime.ticks_diff = mn.ticks_ms, mn.ticks_diff
    monkeypatch.setitem(sys.modules, "utime", utime)
    monkeypatch.syspath_prepend(str(tmp_path))
    small_main = __import__(names["micro_main"])
    small_frame = __import__(names["micro_frame"])
    h = getattr(small_main, names["Handler"])(_spec_module(blob))
    setattr(h, names["link"], getattr(small_frame, names["Link"])(getattr(h, names["handle"]), b"", lambda b: None, 1))
    handle = getattr(h, names["handle"])
    h.handle = handle
    assert (_stream(h, recs, y), _pull(h)) == expected
    for name in files:
        sys.modules.pop(name[:-3], None)
