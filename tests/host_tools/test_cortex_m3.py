"""The emulated Cortex-M3 (QEMU MPS2-AN385, MicroPython 1.29, 32-bit, ../shared/boards) as a target:
board-sim starts it with this package's firmware in ROMFS, `flash` writes only the model and main.py
there and confirms from the board's INFO that it runs the model; on a bare board it copies .mpy files,
and when the board cannot load the model it says so with the board's own error."""
from __future__ import annotations

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


def test_flash_writes_only_the_model_when_the_romfs_holds_the_firmware_and_confirms_the_boot(tmp_path):
    from host_tools.cmd_board import flash
    blob = _blob(tmp_path, 64)
    with CortexM3Board(192 * 1024) as board:
        report = flash(board.path, str(blob), log=lambda *a: None)
    assert report["target"] == "cortex-m3" and report["placement"] == "rom"
    assert sorted(report["written"]) == ["main.py", "model.blob"]
    boot = report["boot"]
    assert boot["model"] == "578-64-10" and boot["rule"] == "readout_delta"
    assert 0 < boot["block"] <= boot["free"] < boot["heap"] <= 192 * 1024


def test_flash_says_when_the_board_cannot_load_the_model_quoting_the_board(tmp_path):
    """A bare board (firmware as .mpy files on its filesystem: 58 KB of heap for the code instead of 23 KB)
    flashed as if its code sat in ROMFS: the plan's assumption is wrong, the board runs out of heap while
    loading, and flash says so with the board's message and what the plan had assumed."""
    from edge.errors import SnnEdgeError
    from host_tools.cmd_board import flash
    blob = _blob(tmp_path, 200)
    with CortexM3Board(192 * 1024, romfs=False) as board:
        with pytest.raises(SnnEdgeError) as err:
            flash(board.path, str(blob), placement="rom", log=lambda *a: None)
    msg = str(err.value)
    assert "does not run the model" in msg and "out of heap loading model.blob" in msg, msg
    assert "plan said: fits" in msg and "code in ROMFS" in msg, msg
