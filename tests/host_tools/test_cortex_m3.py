"""The emulated Cortex-M3 (QEMU MPS2-AN385, MicroPython 1.29, 32-bit, ../shared/boards) as a target:
board-sim starts it with this package's firmware in ROMFS, `flash` writes only the model and main.py
there and confirms from the board's INFO that it runs the model; on a bare board it copies .mpy files,
and when the board cannot load the model it says so with the board's own error."""
from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from host_tools.virtual_board import CortexM3Board

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _need_qemu():
    why = CortexM3Board.missing()
    if why:
        pytest.skip(why)


def test_board_sim_cortex_m3_holds_this_firmware_in_romfs():
    from host_tools.boards import CORTEX_M3, detect, probe
    from host_tools.firmware_files import firmware_items, manifest
    from host_tools.link import open_serial
    from host_tools.transport import RawRepl
    sim = subprocess.Popen([sys.executable, "-m", "host_tools.cli", "board-sim", "--target", "cortex-m3",
                            "--heap", "140K"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        path = sim.stdout.readline().strip()
        assert path.startswith("/dev/pts/"), path + sim.stderr.read()
        ser = open_serial(path)
        repl = RawRepl(ser, timeout=20)
        repl.enter()
        facts = probe(repl)
        ser.close()
    finally:
        sim.send_signal(signal.SIGINT)
        sim.wait(20)
    assert sim.returncode == 0
    assert detect(facts) is CORTEX_M3 and facts.arch == "armv7em"     # what the port declares
    assert 140 * 1024 - 4096 < facts.heap <= 140 * 1024
    assert facts.rom_manifest == manifest(firmware_items(march=CORTEX_M3.native_arch))


def _blob(tmp_path, n_hidden, rule="readout_delta"):
    from tests.host_tools.test_cmd_board import _nmnist_sized_blob
    return _nmnist_sized_blob(tmp_path, n_hidden)


def mpremote(port: str, *args: str) -> tuple[int, str]:
    r = subprocess.run([sys.executable, "-m", "mpremote", "connect", port, *args], capture_output=True, text=True,
                       timeout=60)
    return r.returncode, r.stdout + r.stderr


def test_flash_writes_only_the_model_when_the_romfs_holds_the_firmware_and_confirms_the_boot(tmp_path):
    """... and then mpremote, MicroPython's own tool, works on the flashed board as on any other: it breaks
    into the link loop, runs code, copies, lists (with littlefs sizes) and reads files; the host's link then
    restarts the loop, the model still there."""
    from host_tools.cmd_board import flash
    from host_tools.link import connect, open_serial
    blob = _blob(tmp_path, 64)
    note = tmp_path / "note.txt"
    note.write_text("written by mpremote\n" * 20)
    with CortexM3Board(192 * 1024) as board:
        report = flash(board.path, str(blob), log=lambda *a: None)
        assert mpremote(board.path, "exec", "print(6 * 7)") == (0, "42\n")
        assert mpremote(board.path, "fs", "cp", str(note), ":note.txt")[0] == 0
        code, listing = mpremote(board.path, "fs", "ls")
        assert code == 0 and f"{note.stat().st_size} note.txt" in listing and f"{blob.stat().st_size} model.blob" \
            in listing, listing
        assert mpremote(board.path, "fs", "cat", "note.txt") == (0, note.read_text())
        ser = open_serial(board.path)
        try:
            link = connect(ser)
            assert "model=578-64-10" in link.info.description and link.get_stats()["samples"] == 0
        finally:
            ser.close()
    assert report["target"] == "cortex-m3" and report["placement"] == "rom"
    assert sorted(report["written"]) == ["main.py", "model.blob"]
    boot = report["boot"]
    assert boot["model"] == "578-64-10" and boot["rule"] == "readout_delta"
    assert 0 < boot["block"] <= boot["free"] < boot["heap"] <= 192 * 1024


def test_flash_says_when_the_board_cannot_load_the_model_quoting_the_board(tmp_path):
    """A bare board (firmware as .mpy files on its filesystem: 61 KB of heap for the code instead of 24 KB)
    flashed as if its code sat in ROMFS: the plan's assumption is wrong, the board runs out of heap while
    loading, and flash says so with the board's message and what the plan had assumed."""
    from converters.blob import load_any_model
    from edge.errors import SnnEdgeError
    from host_tools.boards import CORTEX_M3
    from host_tools.cmd_board import flash
    from host_tools.cmd_device import plan_model

    def fits_rom(h):       # what the plan says with the code in ROMFS (37 KB less than from .mpy files)
        return plan_model(load_any_model(_blob(tmp_path, h)), CORTEX_M3.default_heap, kind=CORTEX_M3,
                          placement="rom")["fits"]
    h = 100
    while fits_rom(h + 10):
        h += 10
    blob = _blob(tmp_path, h)        # the largest (to 10) the plan approves there
    with CortexM3Board(192 * 1024, romfs=False) as board:
        with pytest.raises(SnnEdgeError) as err:
            flash(board.path, str(blob), placement="rom", log=lambda *a: None)
    msg = str(err.value)
    # the board's own words: its INFO error, or main.py's traceback when loading left no room for the code
    assert re.search(r"does not run the model.*out of heap (loading model\.blob|while allocating the model's "
                     r"state)|main program stopped.*MemoryError", msg, re.S), msg
    assert "plan said: fits" in msg and "code in ROMFS" in msg, msg


def test_flash_stream_30_real_recordings_learning_with_solsa_then_pull_bit_exact(tmp_path, nmnist_small,
                                                                                  nmnist_frames, nmnist_trained):
    """The whole loop a user runs, through the CLI, on the 192K board: flash the trained 578-64-10 N-MNIST
    model with SOLSA, stream 30 labelled real recordings (the board learns from each), pull the weights.
    Every answer and every pulled weight equals converters.intsim run over the same recordings."""
    import json

    import numpy as np

    from converters import intsim
    from converters.blob import intmodel_to_blob, load_any_model
    from converters.intmodel import default_learn
    from converters.quantize import quantize
    from host_tools.stream import samples_from
    from tests.conftest import calibration_frames
    from tests.host_tools.test_stream_e2e import frames, run_cli
    spec, params = nmnist_trained
    learn = default_learn("solsa")
    learn.params.update(factorised=0, k_update=5, lr_s=9)
    model = quantize(spec, params, calibration_frames(nmnist_frames, 100), calibrate_theta=False, learn=learn)
    blob = tmp_path / "m.blob"
    blob.write_bytes(intmodel_to_blob(model))
    samples = samples_from(str(nmnist_small), limit=30, seed=5)
    X, y = frames(samples)
    learned, preds, scores, _, _ = intsim.learn_samples(model, X, y)
    assert (learned.layers[-1].W != model.layers[-1].W).any()          # SOLSA really moves the weights
    with CortexM3Board(192 * 1024) as board:
        r = run_cli("flash", "--port", board.path, blob)
        assert r.returncode == 0 and "boots the model 578-64-10 (rule solsa, full traces)" in r.stdout, r.stderr
        r = run_cli("stream", "--port", board.path, "--data", nmnist_small, "--limit", 30, "--seed", 5, "--labels",
                    "--log", tmp_path / "s.jsonl")
        assert r.returncode == 0, r.stderr
        r = run_cli("pull", "--port", board.path, "--model", blob, "-o", tmp_path / "adapted.npz")
        assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in open(tmp_path / "s.jsonl")]
    answers = [row for row in rows if row["kind"] == "sample"]
    assert [a["cls"] for a in answers] == preds.tolist()
    assert [a["counts"] for a in answers] == np.minimum(scores, 0xFFFF).tolist()
    pulled = load_any_model(tmp_path / "adapted.npz")
    for a, b in zip(pulled.layers, learned.layers):
        assert np.array_equal(a.W, b.W) and np.array_equal(a.a_syn, b.a_syn)
