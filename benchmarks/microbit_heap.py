"""What the micro profile's code costs on the QEMU micro:bit's heap (MicroPython 1.9.2), one JSON line.

The minified program that `flash --profile microbit` would write (host_tools/micro_flash.micro_program,
for the 128-16-10 model of tests/firmware/test_micro_runtime.py) is cut at its top-level definitions (classes at their methods) into modules of at most --piece bytes,
which are imported one by one, heap measured (gc.mem_free after gc.collect) before and after each:
the persistent cost of the code, and where the heap runs out. Pieces do not run (their names are not
linked up); importing them compiles and defines exactly the code the board would hold.

    python benchmarks/microbit_heap.py [--piece 500]
"""
from __future__ import annotations

import argparse
import ast
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from host_tools.link import open_serial  # noqa: E402
from host_tools.micro_flash import micro_program  # noqa: E402
from host_tools.transport import PROFILES, RawRepl, RemoteError  # noqa: E402
from host_tools.virtual_board import MicrobitBoard  # noqa: E402
from converters.blob import intmodel_to_blob  # noqa: E402
from benchmarks.microbit import reference_model  # noqa: E402  # the model the tests run

FOREIGN_MODULES = {"struct", "array", "utime", "gc", "micropython"}


def pieces(program: dict[str, str], limit: int) -> list[tuple[list[str], str]]:
    """([labels], source) modules of at most `limit` bytes (one definition may exceed it)."""
    parts = []
    for name, src in program.items():
        for node in ast.parse(src).body:
            seg = ast.get_source_segment(src, node)
            if isinstance(node, ast.ClassDef) and len(seg) > limit:
                for m in node.body:
                    body = ast.get_source_segment(src, m)
                    parts.append((f"{name}:{node.name}.{getattr(m, 'name', '?')}",
                                  "class X:\n " + body.replace("\n", "\n ")))
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]
                if all(m in FOREIGN_MODULES for m in mods):
                    parts.append((f"{name}:import", seg))
            else:
                parts.append((f"{name}:{getattr(node, 'name', 'statement')}", seg))
    out: list[tuple[list[str], str]] = []
    for label, seg in parts:
        if out and len(out[-1][1]) + len(seg) < limit:
            out[-1][0].append(label)
            out[-1] = (out[-1][0], out[-1][1] + "\n" + seg)
        else:
            out.append(([label], seg))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--piece", type=int, default=500, help="largest module written, bytes of source")
    args = ap.parse_args()
    why = MicrobitBoard.missing()
    if why:
        print(json.dumps({"skipped": why}))
        return 0
    program = micro_program(intmodel_to_blob(reference_model()))[0]
    program.pop("main.py")
    mods = pieces(program, args.piece)
    rows = []
    with MicrobitBoard() as mb:
        ser = open_serial(mb.path)
        repl = RawRepl(ser, PROFILES["microbit"], timeout=60)
        repl.enter()
        repl.exec("import micropython\nmicropython.opt_level(3)")
        for i, (_, src) in enumerate(mods):
            repl.write_file(f"q{i}.py", (src + "\n").encode(), atomic=False)
        free = int(repl.exec("import gc\ngc.collect()\nprint(gc.mem_free())"))
        start, failed = free, None
        for i, (labels, src) in enumerate(mods):
            try:
                now = int(repl.exec(f"import gc\ngc.collect()\nimport q{i}\ngc.collect()\nprint(gc.mem_free())"))
            except RemoteError as exc:
                failed = {"piece": labels, "error": str(exc).splitlines()[0]}
                break
            rows.append({"piece": labels, "source_bytes": len(src), "heap_bytes": free - now})
            free = now
        qstr = repl.exec("import micropython\nmicropython.qstr_info()").decode().strip()
        ser.close()
    imported = sum(r["source_bytes"] for r in rows)
    print(json.dumps({"heap_free_at_prompt": start, "program_source_bytes": sum(map(len, program.values())),
                      "imported_source_bytes": imported, "imported_heap_bytes": start - free,
                      "heap_per_source_byte": round((start - free) / imported, 2) if imported else None,
                      "heap_free_after": free, "out_of_heap_at": failed, "qstr_info": qstr,
                      "pieces": rows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
