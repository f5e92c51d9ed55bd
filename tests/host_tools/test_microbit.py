"""The QEMU micro:bit (MicroPython 1.9.2 on an emulated nRF51): the raw REPL transport with the
micro:bit profile (32-byte writes every 5 ms, no raw-paste, no hashlib, no os.rename) writes a file,
verifies it and reads it back; and the link's CRC-32 and byte stuffing, sent there function by
function from firmware_py/link.py (the whole module is above the 1.9.2 compiler's ~3 KB limit), give
the host's bytes."""
from __future__ import annotations

import ast
import zlib
from pathlib import Path

import pytest

from firmware_py import link as L

from host_tools.link import open_serial
from host_tools.transport import PROFILES, RawRepl
from host_tools.virtual_board import MicrobitBoard

pytestmark = [pytest.mark.microbit, pytest.mark.slow]


@pytest.fixture(scope="module")
def microbit():
    why = MicrobitBoard.missing()
    if why:
        pytest.skip(why)
    with MicrobitBoard() as mb:
        ser = open_serial(mb.path)
        repl = RawRepl(ser, PROFILES["microbit"], timeout=20)
        repl.enter()
        yield repl
        ser.close()


def test_flash_verify_and_read_back_on_the_microbit(microbit):
    repl = microbit
    assert b"micro:bit" in repl.exec("import os\nprint(os.uname().machine)")
    assert repl.use_raw_paste is False or repl.exec("print(1)") == b"1\r\n"
    data = bytes(range(256)) + b"snn-edge\r\n" * 30            # binary, and bigger than one write
    assert repl.put("t.bin", data) is True                       # written in pieces, verified
    assert repl.use_raw_paste is False                          # 1.9.2 has no raw-paste: detected
    assert repl.read_file("t.bin") == data
    assert repl.put("t.bin", data) is False                      # unchanged: skipped
    repl.remove("t.bin")
    assert "t.bin" not in repl.listdir()


def _link_source(*names):
    """The named top-level functions of the link's modules (link.py and its CRC, crc.py), as source."""
    found = {}
    for module in ("crc.py", "link.py"):
        src = (Path(__file__).resolve().parents[2] / "firmware_py" / module).read_text()
        found.update({n.name: ast.get_source_segment(src, n) for n in ast.parse(src).body
                      if isinstance(n, ast.FunctionDef) and n.name in names})
    return [found[n] for n in names]


def test_link_crc_and_stuffing_run_unchanged_on_micropython_1_9_2(microbit):
    repl = microbit
    repl.exec("import gc\ngc.collect()")
    repl.exec("_END_B=b'\\xc0'\n_ESC_B=b'\\xdb'\n_INTR_B=b'\\x03'")
    for code in _link_source("_crc32_tables", "crc32_halves", "crc32_py", "stuff"):
        repl.exec(code)
    repl.exec("_TABLES = _crc32_tables()")
    data = bytes(range(200)) + b"\x03\xc0\xdb"
    assert int(repl.exec("print(crc32_py(b'123456789'))")) == 0xCBF43926
    assert int(repl.exec(f"print(crc32_py({data!r}))")) == zlib.crc32(data)
    frame = data[:37] + b"\x03\xc0\xdb"                       # a micro:bit-sized frame
    stuffed = repl.exec(f"import gc\ngc.collect()\nprint(list(stuff({frame!r})))")
    assert ast.literal_eval(stuffed.decode()) == list(L.stuff(frame))
    assert 0x03 not in L.stuff(data) and 0xC0 not in L.stuff(data)
    assert int(repl.exec("import gc\ngc.collect()\nprint(gc.mem_free())")) > 4000


def test_board_sim_target_microbit_prints_a_port_with_a_repl():
    import signal
    import subprocess
    import sys
    why = MicrobitBoard.missing()
    if why:
        pytest.skip(why)
    repo = Path(__file__).resolve().parents[2]
    sim = subprocess.Popen([sys.executable, "-m", "host_tools.cli", "board-sim", "--target", "microbit"],
                           cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        path = sim.stdout.readline().strip()
        assert path.startswith("/dev/pts/"), path
        ser = open_serial(path)
        repl = RawRepl(ser, PROFILES["microbit"], timeout=20)
        repl.enter()
        assert repl.exec("print(6*7)").strip() == b"42"
        ser.close()
    finally:
        sim.send_signal(signal.SIGINT)
        sim.wait(10)
    assert sim.returncode == 0


class FlipOneByte:
    """A pyserial port whose `nth` write (the link writes 32-byte pieces on this profile) reaches the board
    with one byte inverted: a frame the board must drop and the host must resend."""

    def __init__(self, ser, nth: int):
        self.ser, self.nth, self.writes, self.flipped = ser, nth, 0, False

    def write(self, data):
        self.writes += 1
        if self.writes == self.nth:
            data = bytearray(data)
            data[len(data) // 2] ^= 0xFF
            self.flipped = True
        return self.ser.write(bytes(data))

    def __getattr__(self, name):
        return getattr(self.ser, name)


def test_flash_stream_learn_and_pull_on_the_microbit_match_the_integer_simulator(tmp_path):
    """The micro profile end to end on the emulated board: `flash --profile microbit` writes the lean program
    and a 128-16-10 model, the host streams labelled built-in samples through a line that corrupts one piece
    of a frame, and the board's answers and the readout pulled back equal converters.intsim.learn_samples."""
    import numpy as np

    from converters import intsim
    from converters.blob import intmodel_to_blob
    from edge.data import frames_of
    from edge.generator import generate_dataset
    from host_tools.cmd_board import flash
    from host_tools.link import connect
    from host_tools.micro_flash import apply_readout
    from tests.firmware.test_micro_runtime import SPEC, _model

    why = MicrobitBoard.missing()
    if why:
        pytest.skip(why)
    model = _model(np.random.default_rng(0))
    blob = tmp_path / "model.blob"
    blob.write_bytes(intmodel_to_blob(model))
    recs = generate_dataset(1, seed=1)[:4]
    y = np.array([r.label for r in recs])
    learned, preds, scores, _, _ = intsim.learn_samples(model, np.stack([frames_of(r, SPEC) for r in recs]), y)
    with MicrobitBoard() as mb:
        report = flash(mb.path, str(blob), target="microbit", log=lambda *a: None)
        assert "main.py" in report["written"] and "model.blob" in report["written"]
        ser = FlipOneByte(open_serial(mb.path), nth=40)
        link = connect(ser, profile="microbit", boot_seconds=30)
        assert (link.info.max_payload, link.info.window) == (32, 48)
        results = []
        for r, label in zip(recs, y):
            link.send_events(r.events["x"], r.events["y"], r.events["t"], r.events["p"])
            results.append(link.end_of_sample(int(label)))
        pulled = apply_readout(model, link.get_weights())
        stats = link.get_stats()
        ser.close()
        # the CLI's pull and monitor on this profile (each opens its own session)
        from converters.blob import load_any_model
        from host_tools.cmd_stream import _poll, pull
        pull(mb.path, str(blob), str(tmp_path / "adapted.onnx"), profile="microbit")
        onnx_readout = load_any_model(tmp_path / "adapted.onnx").layers[-1].W
        row = next(_poll(mb.path, "microbit", 0.0, 5.0, str(blob)))
    assert (onnx_readout == learned.layers[-1].W).all()
    assert row["samples"] == 4 and row["drift"][0] == 0 and row["drift"][1] > 0
    assert ser.flipped and link.counters.retransmits >= 1            # the corrupt piece was resent
    assert [r.cls for r in results] == preds.tolist()
    assert [list(r.counts) for r in results] == [list(s) for s in scores]
    assert (pulled.layers[-1].W == learned.layers[-1].W).all()
    assert (pulled.layers[-1].W != model.layers[-1].W).any()            # it learned on the board
    assert (stats["samples"], stats["labelled"]) == (4, 4) and stats["heap_free"] > 0
