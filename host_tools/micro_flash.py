"""The micro profile of `snn-edge flash` (the QEMU or a real micro:bit): what goes to the board.

- micro_model.py, generated here from the model's blob through the device's own reader (firmware_py/blob.py):
  the binning, the rule's parameters, the initial generator bank (fixedpoint.lane_seeds), each layer's
  constants and the offset of its weights in model.blob, and the constant sections of the checkpoint image
  with their CRC. The board then parses nothing (firmware_py/micro_net.py says why);
- the micro modules (micro_link, micro_frame, micro_net, micro_main), minified as one program
  (host_tools/minify.minify_program) and imported one by one by main.py;
- model.blob itself (the frozen layers' rows are read from it at every step) and main.py.
A model the micro runtime cannot run is refused (check_micro_model) before anything is written.
Not wired into `snn-edge flash --profile microbit`: the program does not fit the board's heap
(docs/MICROBIT.md, benchmarks/microbit_heap.py).
"""
from __future__ import annotations

import struct
import zlib

from edge.errors import SnnEdgeError
from firmware_py.blob import BytesSource

MODULES = ("micro_link", "micro_frame", "micro_net", "micro_main")     # import order: each needs the last
# main.py imports the modules one by one with a collection in between (the compiler's parse tree of one
# module is garbage after its import) and without line-number tables (opt_level 3: smaller bytecode).
MAIN_PY = ("import gc\nimport micropython\nmicropython.opt_level(3)\n"
           + "".join(f"import {m}\ngc.collect()\n" for m in MODULES)
           + "import micro_model\ngc.collect()\nmicro_main.main(micro_model)\n")


class _Recorder(BytesSource):
    """A BytesSource that remembers where each int8 block (a layer's W) starts."""

    def __init__(self, data):
        super().__init__(data)
        self.w_offsets: list[int] = []

    def readinto_typed(self, buf, nbytes, tc):
        if tc == "b":
            self.w_offsets.append(self.pos)
        return super().readinto_typed(buf, nbytes, tc)


def _crc_state(data: bytes) -> tuple[int, int]:
    """The CRC-32 of data before its final inversion, as (low, high) 16-bit halves."""
    c = zlib.crc32(data) ^ 0xFFFFFFFF
    return c & 0xFFFF, c >> 16


def check_micro_model(m, where: str) -> None:
    """Refuse what the micro runtime does not implement, naming it."""
    problems = []
    if m.in_max != 1 or m.binning is None or m.binning[6] != 0:
        problems.append("binary binned input (in_max 1, binning mode 0)")
    if m.rule not in ("none", "readout_delta"):
        problems.append(f"learning rule none or readout_delta (got {m.rule})")
    for l, L in enumerate(m.layers):
        if L.kind != 0 or L.per_input:
            problems.append(f"LIF layers with a scalar a_syn (layer {l} is not)")
    if m.tables:
        problems.append("no lookup tables")
    if problems:
        raise SnnEdgeError(f"model {where}: the micro:bit profile runs " + "; ".join(problems))


def micro_spec(blob: bytes, where: str = "model") -> str:
    """The source of micro_model.py for this blob."""
    from firmware_py import blob as fblob
    from firmware_py import fixedpoint as fp
    rec = _Recorder(blob)
    m = fblob.load(rec, len(blob))
    check_micro_model(m, where)
    crc = struct.unpack("<I", blob[-4:])[0]
    sw, sh, dt, steps, ds, crop, _ = m.binning
    layers = []
    image: list = [b"SNNC" + struct.pack("<HIH", 2, crc, len(m.layers))]
    for L, off in zip(m.layers, rec.w_offsets):
        layers.append((L.n_in, L.n_out, L.a_syn, L.a_mem, L.theta, L.shift, off))
        head = struct.pack("<IIB", L.n_in, L.n_out, 0)
        image[-1] += head
        if L is not m.layers[-1]:
            image += [(off, L.n_in * L.n_out), b""]
    image = [p for p in image if p != b""]
    const = b"".join(p if isinstance(p, bytes) else blob[p[0]:p[0] + p[1]] for p in image)
    if m.rule == "none":
        bank, banks, params = ((), ()), b"\x00\x00", {}
    else:
        lanes = fp.lane_seeds(m.seed + len(m.layers) - 1, m.layers[-1].n_out + 1)
        bank = (tuple(s >> 16 for s in lanes), tuple(s & 0xFFFF for s in lanes))
        banks, params = struct.pack("<HH", 1, len(lanes)), dict(m.params)
    return (f"BIN = {(sw, sh, dt, steps, ds) + tuple(crop)!r}\nP = {params!r}\nBANK = {bank!r}\n"
            f"BANKS = {banks!r}\nLAYERS = {tuple(layers)!r}\nIMAGE = {tuple(image)!r}\n"
            f"CRC_HEAD = {_crc_state(const)!r}\nCRC_MODEL = {crc!r}\n")


def micro_program() -> tuple[dict[str, str], dict[str, str]]:
    """({file name: source} of the micro modules and main.py, minified as one program; the renaming)."""
    from host_tools.cmd_board import REPO
    from host_tools.minify import minify_program
    sources = {m: (REPO / "firmware_py" / f"{m}.py").read_text() for m in MODULES}
    sources["main"] = MAIN_PY
    files, mapping = minify_program(sources, keep={"main"})
    return {name + ".py": src for name, src in files.items()}, mapping


def micro_files(blob: bytes, where: str = "model") -> list[tuple[str, bytes]]:
    """(name, bytes) of everything the micro profile writes, in order (main.py last)."""
    program = micro_program()[0]
    main = program.pop("main.py")
    files = [(n, s.encode()) for n, s in program.items()]
    files.append(("micro_model.py", micro_spec(blob, where).encode()))
    files.append(("model.blob", blob))
    files.append(("main.py", main.encode()))
    return files
