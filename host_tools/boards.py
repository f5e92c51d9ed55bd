"""Board kinds: what the host knows about each kind of board it talks to, in one place.

A kind says how to write to the board (pacing), what its heap is by default, which native architecture
its viper kernels are compiled for, where the firmware's bytecode lives (ROMFS, executed in place, or
.mpy files on its filesystem, loaded into the heap), what that costs in heap (measured on the target,
`python -m host_tools.calibrate`), whether the host can start one (board-sim), and how to read what a
board printed when its main program died. `flash`, `stream`, `monitor`, `pull` and `plan` take the kind
with `--target`; the generic "MicroPython board on a serial port" asks the board itself what it is.

Kinds: `unix` (the virtual board: the MicroPython unix port behind a pty, 64-bit), `cortex-m3` (the
emulated MPS2-AN385, 32-bit, ../shared/boards), `microbit` (the QEMU micro:bit and its lean micro
profile) and `serial` (any other MicroPython board).
"""
from __future__ import annotations

import ast
from dataclasses import dataclass, field

from edge.errors import SnnEdgeError


@dataclass(frozen=True)
class CodeCost:
    """Heap the firmware takes once main.py has imported it (gc.mem_alloc after a collection, before the
    model loads), in bytes, for each placement of its bytecode; `runtime`: what the running program holds
    on top of its code and of the model's arrays (memory.py's formula): the link loop's buffers and
    session, the Device, handler and rule objects, the heap's own slack, measured after boot with a model
    loaded; and the word size of the port (object headers and list items are words: 4 bytes on the 32-bit
    boards, 8 on the 64-bit unix port)."""
    rom: int | None
    fs: int
    word: int = 4
    runtime: int = 0


@dataclass(frozen=True)
class BoardKind:
    name: str
    title: str
    pacing: str = "unix"                 # host_tools.transport.PROFILES key
    default_heap: int | None = None      # bytes of GC heap; None: the board says (flash asks it)
    native_arch: str | None = None       # mpy-cross -march for viper kernels; None: the board's own
    placement: str = "fs"                # where its firmware bytecode lives by default: "rom" or "fs"
    cost: CodeCost = field(default_factory=lambda: CodeCost(None, 0))
    micro_profile: bool = False          # runs the lean micro:bit program, not the full runtime
    simulator: str | None = None         # host_tools.virtual_board class that runs one (board-sim)

    def simulate(self, args):
        """Start this kind's simulated board from board-sim's options; returns it (has .path, .stop())."""
        if self.simulator is None:
            raise SnnEdgeError(f"--target {self.name}: there is no simulated board of this kind")
        from host_tools import virtual_board
        return getattr(virtual_board, self.simulator).from_args(args).start()

    def code_bytes(self, placement: str | None = None) -> int:
        """The firmware's heap on this kind: its code (in `placement`) plus what its running program holds."""
        placement = placement or self.placement
        cost = self.cost.rom if placement == "rom" else self.cost.fs
        if cost is None:
            raise SnnEdgeError(f"--target {self.name}: the firmware cannot live in ROMFS on this board kind")
        return cost + self.cost.runtime


# The costs below are what `python -m host_tools.calibrate --target NAME` measured: rerun it after a change
# to what main.py imports or to what the running program allocates (tests/host_tools/test_size_walk.py
# fails when the plan and the Cortex-M3 board disagree).
UNIX = BoardKind("unix", "the virtual board (MicroPython unix port, 64-bit, behind a pty)",
                 default_heap=194304, native_arch="x64", cost=CodeCost(rom=None, fs=113376, word=8, runtime=14161),
                 simulator="VirtualBoard")
# default_heap: the GC heap of the 192K build (gc.mem_free() + gc.mem_alloc()), a little under 192 KiB
CORTEX_M3 = BoardKind("cortex-m3", "the emulated Cortex-M3 (QEMU MPS2-AN385, MicroPython 1.29, 32-bit)",
                      default_heap=192064, native_arch="armv7m", placement="rom",
                      cost=CodeCost(rom=37840, fs=92000, word=4, runtime=9153), simulator="CortexM3Board")
MICROBIT = BoardKind("microbit", "the QEMU micro:bit (MicroPython 1.9.2, about 9 KB of heap)",
                     pacing="microbit", default_heap=None, micro_profile=True, simulator="MicrobitBoard")
SERIAL = BoardKind("serial", "a MicroPython board on a serial port (32-bit; asks the board what it is)",
                   cost=CORTEX_M3.cost)

KINDS = {k.name: k for k in (SERIAL, UNIX, CORTEX_M3, MICROBIT)}
# the old --profile values
ALIASES = {"unix": UNIX}


def kind(name: str) -> BoardKind:
    try:
        return KINDS[name]
    except KeyError:
        raise SnnEdgeError(f"--target {name!r}: expected one of {', '.join(KINDS)}") from None


def link_kind(name: str) -> BoardKind:
    """The kind for talking to a board over the link: "auto" is any board that runs the runtime."""
    return SERIAL if name == "auto" else kind(name)


def add_target_option(parser, default: str = "serial", help_extra: str = "") -> None:
    """`--target KIND` (also spelled --profile, its name before board kinds existed)."""
    choices = tuple(KINDS) + (("auto",) if default == "auto" else ())
    parser.add_argument("--target", "--profile", dest="target", choices=choices, default=default,
                        help="board kind: " + "; ".join(f"{k.name}: {k.title}" for k in KINDS.values())
                        + help_extra)


# ---------------------------------------------------------------- what a board says about itself
@dataclass
class BoardFacts:
    machine: str
    mpy: int                     # sys.implementation._mpy (0: the port does not load .mpy files)
    heap: int                    # GC heap in bytes (mem_free + mem_alloc); -1: no declared heap (CPython)
    free: int
    rom_manifest: bytes | None   # /rom/firmware_py/MANIFEST, when its ROMFS holds a firmware build
    fs_firmware: list[str]       # files in firmware_py/ on its filesystem

    @property
    def arch(self) -> str | None:
        from host_tools.firmware_files import ARCH_NAMES
        return ARCH_NAMES.get(self.mpy >> 10)

    @property
    def mpy_version(self) -> tuple[int, int]:
        return self.mpy & 0xFF, (self.mpy >> 8) & 3


PROBE = """\
import sys, gc
gc.collect()
def _r(p):
    try:
        with open(p, 'rb') as f:
            return f.read()
    except OSError:
        return None
def _l(p):
    try:
        import os
        return os.listdir(p)
    except OSError:
        return []
try:
    _h = (gc.mem_free() + gc.mem_alloc(), gc.mem_free())
except AttributeError:
    _h = (-1, -1)
print(repr((sys.implementation._machine if hasattr(sys.implementation, '_machine') else sys.platform,
            getattr(sys.implementation, '_mpy', 0), _h[0], _h[1],
            _r('/rom/firmware_py/MANIFEST'), _l('firmware_py'))))
del _r, _l, _h
"""


def probe(repl) -> BoardFacts:
    """Ask a board at its raw REPL what it is (one exec)."""
    return BoardFacts(*ast.literal_eval(repl.exec(PROBE).decode().strip()))


def detect(facts: BoardFacts) -> BoardKind:
    """The kind of a board that answered the probe: the emulated Cortex-M3 and the unix-port virtual
    board say so in sys.implementation._machine; anything else is a board on a serial port."""
    if facts.machine.startswith("mps2-an385"):
        return CORTEX_M3
    if facts.machine.startswith("linux") and (facts.arch == "x64" or facts.mpy == 0):
        return UNIX          # the virtual board: the 64-bit unix port, or CPython (no .mpy, no heap limit)
    return SERIAL
