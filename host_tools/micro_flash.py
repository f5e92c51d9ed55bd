"""The micro profile of `snn-edge flash` (the QEMU or a real micro:bit): what goes to the board, whether it fits,
and how `snn-edge pull` puts the board's learned layer back into the model.

- micro_model.py, generated here from the model's blob through the device's own reader (firmware_py/blob.py):
  the binning, the rule's parameters, each layer's constants and the offset of its weights in model.blob as
  UPPER_CASE int constants, which the minifier inlines into the code; the initial generator bank as tuples;
- the micro modules (micro_link, micro_net, micro_sample, micro_events, micro_main) and main.py (which imports them one by one and runs
  the link loop), minified as one program with micro_model.py (host_tools/minify.minify_program);
- model.blob itself (the frozen first layer's rows are read from it at every step).
A model the micro runtime cannot run is refused (check_micro_model), and so is a program whose code and data
the heap model below says exceed the board's heap (check_fit), before anything is written.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge.errors import SnnEdgeError

# The heap model, measured on the QEMU micro:bit (Debian's MicroPython 1.9.2 hex): the program for the
# 128-16-10 reference model (built-in binning 8x8x2, 30 steps, readout_delta) of REF_CODE bytes of minified
# source with REF_DATA bytes of model data (MicroModel.data_bytes) leaves REF_FREE bytes of heap after it
# loaded (GET_STATS heap_free, after gc.collect: docs/MICROBIT.md has the command); other programs and
# models are scaled from it by HEAP_PER_SOURCE_BYTE and their data.
REF_CODE, REF_DATA, REF_FREE = 5725, 1360, 1936
HEAP_PER_SOURCE_BYTE = 1.27     # heap kept per byte of minified source imported (benchmarks/microbit_heap.py)
HEAP_MARGIN = 900               # what a sample needs while it runs: run()'s state lists, frames, file objects
ROW_CHUNK = 32                  # bytes of frozen rows read at a time (micro_net.B)

MODULES = ("micro_model", "micro_link", "micro_net", "micro_sample", "micro_events", "micro_main")  # import order: biggest first
# main.py imports the modules one by one with a collection in between (the compiler's parse tree of one
# module is garbage after its import, and the biggest needs the heap whole) and without line-number tables
# (opt_level 3: smaller bytecode), then serves the UART with Ctrl-C as data until the host's break (two 0x03
# in a row: micro_link raises KeyboardInterrupt); a MemoryError while serving drops the frame in hand (the
# host retransmits it). micro_main's import connects the link to the handler and the UART.
# Ctrl-C is data from the first line on: a 0x03 inside a host's hello (its nonce or CRC) while the modules
# compile would otherwise abort the import and leave the board at the REPL. (The imports stay at the top
# level: the minifier drops the one of micro_model, whose constants it inlines.)
MAIN_PY = ("import gc\nimport micropython\nmicropython.opt_level(3)\nmicropython.kbd_intr(-1)\n"
           + "".join(f"import {m}\ngc.collect()\n" for m in MODULES)
           + "from microbit import uart\nmicro_link.WR = uart.write\n"
           "try:\n while 1:\n  d = uart.read()\n  if d:\n   micro_link.feed(d)\n"
           "except KeyboardInterrupt:\n pass\nfinally:\n micropython.kbd_intr(3)\n")


def check_micro_model(m, where: str) -> None:
    """Refuse what the micro runtime does not implement, naming it."""
    problems = []
    if m.in_max != 1 or m.binning is None or m.binning[6] != 0:
        problems.append("binary binned input (in_max 1, binning mode 0)")
    if len(m.layers) != 2:
        problems.append(f"two layers, a frozen one and a readout (got {len(m.layers)})")
    if m.rule not in ("none", "readout_delta"):
        problems.append(f"learning rule none or readout_delta (got {m.rule})")
    elif m.rule == "readout_delta" and not 1 <= m.params["lr_s"] <= 16:
        problems.append(f"readout_delta with lr_s in 1..16 (got {m.params['lr_s']})")
    for l, L in enumerate(m.layers):
        if L.kind != 0 or L.per_input:
            problems.append(f"LIF layers with a scalar a_syn (layer {l} is not)")
    if m.layers[-1].n_out < 2:
        problems.append("at least two classes")
    if m.tables:
        problems.append("no lookup tables")
    if problems:
        raise SnnEdgeError(f"model {where}: the micro:bit profile runs " + "; ".join(problems))


@dataclass
class MicroModel:
    """What the board holds for a model: micro_model.py's constants and the RAM its data takes."""
    const: dict
    bank: tuple

    @property
    def data_bytes(self) -> int:
        """Heap of the model's data on the board: the learned layer, the row chunk and the bitmap
        (byte arrays), the bank and run()'s per-sample state (lists of small ints: 4 bytes an item)."""
        c = self.const
        arrays = c["NH"] * c["NO"] + c["PER"] * c["NH"] + c["STEPS"] * c["NB"]
        lists = 2 * len(self.bank[0]) + 3 * c["NH"] + 5 * c["NO"]
        return arrays + 16 * 3 + 4 * lists + 16 * 10


def read_micro_model(blob: bytes, where: str = "model") -> MicroModel:
    """The micro profile's view of a blob, through the device's own reader."""
    from firmware_py import blob as fblob
    from firmware_py import fixedpoint as fp
    from firmware_py.blob import BytesSource

    offsets: list[int] = []

    class Recorder(BytesSource):        # remembers where each int8 block (a layer's W) starts
        def readinto_typed(self, buf, nbytes, tc):
            if tc == "b":
                offsets.append(self.pos)
            return super().readinto_typed(buf, nbytes, tc)

    m = fblob.load(Recorder(blob), len(blob))
    check_micro_model(m, where)
    sw, sh, dt, steps, ds, (cx, cy, cw, ch), _ = m.binning
    L0, L1 = m.layers
    p = dict(m.params) if m.rule == "readout_delta" else {}
    const = {"NI": L0.n_in, "NH": L0.n_out, "NO": L1.n_out,
             "AS0": int(L0.a_syn), "AM0": L0.a_mem, "TH0": L0.theta, "SH0": L0.shift, "OFF0": offsets[0],
             "AS1": int(L1.a_syn), "AM1": L1.a_mem, "TH1": L1.theta, "SH1": L1.shift, "OFF1": offsets[1],
             "PER": max(1, ROW_CHUNK // L0.n_out), "NB": (L0.n_in + 7) >> 3, "STEPS": steps,
             "SW": sw, "SH": sh, "DT": dt, "DS": ds, "CX": cx, "CY": cy,
             "GW": cw // ds, "GH": ch // ds, "XW": cw // ds * ds, "YH": ch // ds * ds,
             "LEARN": int(bool(p)), "LRM": p.get("lr_m", 0), "LRS": p.get("lr_s", 1),
             "TGH": p.get("tgt_hi", 0), "TGL": p.get("tgt_lo", 0), "KUP": p.get("k_update", 1)}
    if 2 * const["GW"] * const["GH"] != L0.n_in:
        raise SnnEdgeError(f"model {where}: its binning gives {2 * const['GW'] * const['GH']} inputs, "
                           f"its first layer takes {L0.n_in}")
    lanes = fp.lane_seeds(m.seed + len(m.layers) - 1, L1.n_out + 1) if p else [0] * (L1.n_out + 1)
    return MicroModel(const, (tuple(s >> 16 for s in lanes), tuple(s & 0xFFFF for s in lanes)))


def micro_spec(blob: bytes, where: str = "model") -> str:
    """The source of micro_model.py for this blob."""
    mm = read_micro_model(blob, where)
    return "".join(f"{k} = {int(v)}\n" for k, v in mm.const.items()) + f"BHI = {mm.bank[0]!r}\nBLO = {mm.bank[1]!r}\n"


def micro_program(blob: bytes, where: str = "model") -> tuple[dict[str, str], dict[str, str]]:
    """({file name: source} of micro_model.py, the micro modules and main.py, minified as one program;
    the renaming {old name: new name})."""
    from host_tools.cmd_board import REPO
    from host_tools.minify import minify_program
    sources = {m: (REPO / "firmware_py" / f"{m}.py").read_text() for m in MODULES if m != "micro_model"}
    sources["micro_model"] = micro_spec(blob, where)
    sources["main"] = MAIN_PY
    files, mapping = minify_program(sources, keep={"main"})
    return {name + ".py": src for name, src in files.items()}, mapping


@dataclass
class Fit:
    code_bytes: int         # minified source, main.py included
    data_bytes: int
    margin: int

    @property
    def free_after_load(self) -> int:
        return round(REF_FREE - (self.code_bytes - REF_CODE) * HEAP_PER_SOURCE_BYTE - (self.data_bytes - REF_DATA))

    @property
    def fits(self) -> bool:
        return self.free_after_load >= self.margin


def estimate_fit(program: dict[str, str], blob: bytes, where: str = "model") -> Fit:
    return Fit(sum(len(s) for s in program.values()), read_micro_model(blob, where).data_bytes, HEAP_MARGIN)


def micro_files(blob: bytes, where: str = "model") -> list[tuple[str, bytes]]:
    """(name, bytes) of everything the micro profile writes, in order (main.py last); refuses (SnnEdgeError)
    a model or a program the board cannot hold."""
    program = micro_program(blob, where)[0]
    fit = estimate_fit(program, blob, where)
    if not fit.fits:
        raise SnnEdgeError(
            f"model {where}: does not fit the micro:bit's heap: {fit.code_bytes} bytes of code and {fit.data_bytes} "
            f"of model data would leave ~{fit.free_after_load} bytes, a sample needs ~{fit.margin}; not flashed "
            "(try fewer hidden neurons or time steps)")
    main = program.pop("main.py")
    files = [(n, s.encode()) for n, s in program.items()]
    files.append(("model.blob", blob))
    files.append(("main.py", main.encode()))
    return files


def apply_readout(base, data: bytes, where: str = "board weights"):
    """A copy of the flashed IntModel `base` with the board's learned readout layer (GET_WEIGHTS of the
    micro profile: the last layer's int8 weights, row-major)."""
    from converters.intmodel import validate
    W = base.layers[-1].W
    if len(data) != W.size:
        raise SnnEdgeError(f"{where}: the board sent {len(data)} bytes of readout weights, the model's readout "
                           f"has {W.size} (was the board flashed with this model?)")
    adapted = base.copy()
    adapted.layers[-1].W[...] = np.frombuffer(data, dtype=np.int8).reshape(W.shape)
    validate(adapted, where)
    return adapted
