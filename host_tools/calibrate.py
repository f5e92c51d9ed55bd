"""Measure what the firmware's code costs in heap on a board kind: the figures `plan` uses.

    python -m host_tools.calibrate --target cortex-m3        # one JSON line: {"rom": ..., "fs": ...}
    python -m host_tools.calibrate --target unix

For each placement of the bytecode the kind supports it starts a fresh simulated board, puts the
firmware there (the ROMFS image for "rom", .mpy files on its filesystem for "fs", as `snn-edge flash`
does), soft-resets it, and measures in its raw REPL what importing what main.py imports adds to
gc.mem_alloc() after a collection (fast.py's viper kernels, compiled on the board, included), and the
largest block left free. host_tools/boards.py holds the
result; tests/host_tools/test_size_walk.py fails when the plan it feeds and the board disagree.
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
try:
    from firmware_py import fast
except MemoryError:
    pass
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


def _measure_runtime(port: str, kind, code: int) -> dict:
    """What the running program holds beyond its code and the model's arrays: flash a small SOLSA model
    (578-8-10, the README's binning), read the free heap the board reports after boot (INFO), and subtract
    the code and memory.py's formula for that model."""
    import tempfile
    from pathlib import Path

    import numpy as np

    from converters.blob import intmodel_to_blob
    from converters.intmodel import IntLayer, IntModel, default_learn
    from firmware_py import memory
    from firmware_py.binning import BinSpec
    from host_tools.cmd_board import flash
    rng = np.random.default_rng(8)
    layers = [IntLayer(rng.integers(-40, 41, (578, 8)).astype(np.int8), np.array(2048, np.int32), 3500, 600, 4, 6),
              IntLayer(rng.integers(-40, 41, (8, 10)).astype(np.int8), np.array(2048, np.int32), 3500, 600, 4, 6)]
    model = IntModel(layers, 1, BinSpec(34, 34, 10_000, 30, 2).as_tuple(), default_learn("solsa"))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.blob"
        path.write_bytes(intmodel_to_blob(model))
        boot = flash(port, str(path), log=lambda *a: None, heap=10 ** 9)["boot"]
    dims = [(L.n_in, L.n_out, L.per_input) for L in layers]
    params = {k: int(v) for k, v in model.learn.params.items()}
    arrays = memory.breakdown(dims, "solsa", params, 0, n_steps=30)["model"]
    return {"runtime": boot["heap"] - boot["free"] - code - arrays, "free_after_boot": boot["free"],
            "largest_block_after_boot": boot["block"]}


def measure(target: str) -> dict:
    """{"rom": {...}, "fs": {...}} for the kind's simulated board (only the placements it supports)."""
    import tempfile

    from host_tools.boards import kind as board_kind
    from host_tools.virtual_board import CortexM3Board, VirtualBoard
    kind = board_kind(target)
    out = {}
    if target == "cortex-m3":
        for placement in ("rom", "fs"):
            with CortexM3Board(192 * 1024, romfs=placement == "rom") as board:     # the 192K build
                out[placement] = _measure(board.path, kind, placement)
                if placement == "rom":
                    out[placement].update(_measure_runtime(board.path, kind, out[placement]["code"]))
    elif target == "unix":
        with tempfile.TemporaryDirectory() as folder, VirtualBoard(folder, heap="192K") as board:
            out["fs"] = _measure(board.path, kind, "fs")
            out["fs"].update(_measure_runtime(board.path, kind, out["fs"]["code"]))
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
