"""Measure what the firmware's code costs in heap on a board kind: the figures `plan` uses.

    python -m host_tools.calibrate --target cortex-m3        # one JSON line: {"rom": ..., "fs": ...}
    python -m host_tools.calibrate --target unix

For each placement of the bytecode the kind supports it starts a fresh simulated board, puts the
firmware there (the ROMFS image for "rom", .mpy files on its filesystem for "fs", as `snn-edge flash`
does), soft-resets it, and measures in its raw REPL what importing what main.py imports adds to
gc.mem_alloc() after a collection, and the largest block left free. host_tools/boards.py holds the
result; tests/host_tools/test_boards.py re-measures and fails when the code has grown past it.
"""
from __future__ import annotations

import argparse
import json

MEASURE = """\
import gc
gc.collect()
_a = gc.mem_alloc()
import firmware_py.handler
from firmware_py import board_main
gc.collect()
print(gc.mem_alloc() - _a, board_main.largest_free_block(gc.mem_free()))
"""


def _measure(port: str, kind, placement: str) -> dict:
    from host_tools.boards import probe
    from host_tools.cmd_board import _put_all
    from host_tools.firmware_files import firmware_items, manifest
    from host_tools.link import open_serial
    from host_tools.transport import PROFILES, RawRepl
    ser = open_serial(port)
    try:
        repl = RawRepl(ser, PROFILES[kind.pacing], timeout=30)
        repl.enter()
        facts = probe(repl)
        items = firmware_items(march=kind.native_arch or facts.arch)
        if placement == "rom":
            if facts.rom_manifest != manifest(items):
                raise RuntimeError("the board's ROMFS does not hold this firmware build")
            repl.exec("import os\nfor _n in os.listdir('firmware_py') if 'firmware_py' in os.listdir() else []:\n"
                      " os.remove('firmware_py/' + _n)")
        else:
            repl.mkdir("firmware_py")
            _put_all(repl, items)
        repl.soft_reset()
        code, block = (int(v) for v in repl.exec(MEASURE).split())
        return {"code": code, "largest_block_after": block, "heap": facts.heap}
    finally:
        ser.close()


def measure(target: str) -> dict:
    """{"rom": {...}, "fs": {...}} for the kind's simulated board (only the placements it supports)."""
    import tempfile

    from host_tools.boards import kind as board_kind
    from host_tools.virtual_board import CortexM3Board, VirtualBoard
    kind = board_kind(target)
    out = {}
    if target == "cortex-m3":
        for placement in ("rom", "fs"):
            with CortexM3Board(kind.default_heap, romfs=placement == "rom") as board:
                out[placement] = _measure(board.path, kind, placement)
    elif target == "unix":
        with tempfile.TemporaryDirectory() as folder, VirtualBoard(folder, heap="192K") as board:
            out["fs"] = _measure(board.path, kind, "fs")
    else:
        raise SystemExit(f"--target {target}: no simulated board to measure on (cortex-m3, unix)")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", default="cortex-m3", choices=("cortex-m3", "unix"))
    args = ap.parse_args(argv)
    print(json.dumps({"target": args.target, **measure(args.target)}, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
