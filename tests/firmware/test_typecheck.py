"""firmware_py type-checks against MicroPython's own stubs, not CPython's standard library.

mypy runs with a custom typeshed made of `micropython-stdlib-stubs` (MicroPython's reduced stdlib) plus the
unix port's module stubs (`micropython-unix-stubs`: gc, micropython, time, binascii, ...), so a call that
exists in CPython but not on the board is a type error here.
"""
from __future__ import annotations

import importlib.metadata as md
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO


def _dist(name: str):
    try:
        return md.distribution(name)
    except md.PackageNotFoundError:
        pytest.skip(f"{name} is not installed (it is in the test extra)")


def micropython_typeshed(dest: Path) -> Path:
    """dest/stdlib = MicroPython's stdlib stubs + the unix port's modules, with a VERSIONS entry for each."""
    stdlib_dist, unix_dist = _dist("micropython-stdlib-stubs"), _dist("micropython-unix-stubs")
    stdlib = Path(stdlib_dist.locate_file("stdlib"))
    out = dest / "stdlib"
    shutil.copytree(stdlib, out, symlinks=True)
    versions = (out / "VERSIONS").read_text().splitlines()
    known = {line.split(":")[0].strip() for line in versions if ":" in line}
    extra = {str(f).split("/")[0] for f in unix_dist.files if str(f).endswith(".pyi")}
    extra |= {str(f).split("/")[0] for f in stdlib_dist.files if str(f).startswith("_mpy_shed/")}
    for top in sorted(extra):
        src = Path((unix_dist if (Path(unix_dist.locate_file(top))).exists() else stdlib_dist).locate_file(top))
        target = out / top
        if target.exists() or target.is_symlink():
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            else:
                target.unlink()
        target.symlink_to(src)
        module = top[:-4] if top.endswith(".pyi") else top
        if module not in known:
            versions.append(f"{module}: 3.0-")
    (out / "VERSIONS").write_text("\n".join(versions) + "\n")
    import mypy  # mypy itself needs its mypy_extensions stub next to any custom stdlib
    shutil.copytree(Path(mypy.__file__).parent / "typeshed" / "stubs", dest / "stubs")
    return dest


def test_firmware_type_checks_against_micropython_stubs(tmp_path):
    pytest.importorskip("mypy")
    typeshed = micropython_typeshed(tmp_path / "typeshed")
    proc = subprocess.run([sys.executable, "-m", "mypy", "--custom-typeshed-dir", str(typeshed),
                           "--no-site-packages", "--follow-imports=silent", "--no-error-summary",
                           # rawrepl.py is the host's CPython stand-in for a board's REPL, never flashed
                           "--exclude", "firmware_py/rawrepl.py", "firmware_py"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_a_cpython_only_call_is_caught(tmp_path):
    """The check is not vacuous: time.perf_counter is CPython's; MicroPython's time has ticks_us instead."""
    pytest.importorskip("mypy")
    typeshed = micropython_typeshed(tmp_path / "typeshed")
    bad = tmp_path / "bad.py"
    bad.write_text("import time\ntime.perf_counter()\n")
    proc = subprocess.run([sys.executable, "-m", "mypy", "--custom-typeshed-dir", str(typeshed),
                           "--no-site-packages", str(bad)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and "perf_counter" in proc.stdout, proc.stdout
