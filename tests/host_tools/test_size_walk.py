"""The memory plan against the boards it plans for: a walk over model sizes on the emulated Cortex-M3 with a
140 KB and a 192 KB heap. Every model `plan` approves must boot (flash confirms the board runs it) and learn
a labelled real N-MNIST sample; a model 10 % bigger than the largest one it approves must not run, so the
plan is no more than 10 % short of what the board can really do. The firmware sits in ROMFS, as board-sim
provides it; the rule is SOLSA (the plan picks full or factorised traces, as flash does)."""
from __future__ import annotations

import numpy as np
import pytest

from host_tools.virtual_board import CortexM3Board

pytestmark = pytest.mark.slow
HEAPS = {"140K": 140 * 1024, "192K": 192 * 1024}


def walk_model(n_hidden: int, rule: str = "solsa"):
    """578-H-10 with the README's N-MNIST binning and fixed random int8 weights that spike on real recordings."""
    from converters.intmodel import IntLayer, IntModel, default_learn
    from firmware_py.binning import BinSpec
    rng = np.random.default_rng(n_hidden)
    layers = [IntLayer(rng.integers(-40, 41, (578, n_hidden)).astype(np.int8), np.array(2048, np.int32), 3500,
                       600, 4, 6),
              IntLayer(rng.integers(-40, 41, (n_hidden, 10)).astype(np.int8), np.array(2048, np.int32), 3500,
                       600, 4, 6)]
    return IntModel(layers, 1, BinSpec(34, 34, 10_000, 30, 2).as_tuple(), default_learn(rule))


def plan_for(n_hidden: int, heap: int) -> dict:
    from host_tools.boards import CORTEX_M3
    from host_tools.cmd_device import plan_model
    return plan_model(walk_model(n_hidden), heap, kind=CORTEX_M3, placement="rom")


def largest_approved(heap: int) -> int:
    lo, hi = 1, 1024
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if plan_for(mid, heap)["fits"] else (lo, mid)
    return lo


def gc_heap(board) -> int:
    from host_tools.boards import probe
    from host_tools.link import open_serial
    from host_tools.transport import RawRepl
    ser = open_serial(board.path)
    try:
        repl = RawRepl(ser, timeout=20)
        repl.enter()
        return probe(repl).heap
    finally:
        ser.close()


def runs(board, tmp_path, n_hidden: int, recording, heap: int) -> tuple[bool, str]:
    """(boots and learns one labelled sample, what happened). The SOLSA traces are the ones the plan
    picks for this heap (as flash does), but flash refuses nothing here: the board decides."""
    from converters.blob import intmodel_to_blob
    from edge.errors import SnnEdgeError
    from host_tools.cmd_board import flash, with_factorised_traces
    from host_tools.link import LinkError, connect, open_serial
    blob = tmp_path / f"walk{n_hidden}.blob"
    data = intmodel_to_blob(walk_model(n_hidden))
    if plan_for(n_hidden, heap).get("solsa_traces") == "factorised":
        data = with_factorised_traces(data)
    blob.write_bytes(data)
    try:
        flash(board.path, str(blob), log=lambda *a: None, heap=10 ** 9)
    except SnnEdgeError as exc:
        return False, str(exc).splitlines()[0]
    ser = open_serial(board.path)
    try:
        link = connect(ser)
        e = recording.events
        link.send_events(e["x"], e["y"], e["t"], e["p"])
        link.end_of_sample(int(recording.label))
        stats = link.get_stats()
    except LinkError as exc:
        return False, str(exc).splitlines()[0]
    finally:
        ser.close()
    return stats["updates"] > 0 and stats["labelled"] == 1, f"updates {stats['updates']}"


@pytest.mark.parametrize("heap", list(HEAPS))
def test_every_model_the_plan_approves_runs_and_10_percent_more_does_not(heap, tmp_path, nmnist_small):
    from edge.events import read_events
    why = CortexM3Board.missing()
    if why:
        pytest.skip(why)
    recording = read_events(sorted((nmnist_small / "Train" / "7").glob("*.bin"))[0], 7)
    with CortexM3Board(HEAPS[heap]) as board:
        heap_bytes = gc_heap(board)          # what the board's GC manages (a little less than its build's heap)
    best = largest_approved(heap_bytes)
    need = plan_for(best, heap_bytes)["breakdown"]["total"]
    over = best + 1
    while plan_for(over, heap_bytes)["breakdown"]["total"] < 1.1 * need:
        over += 1
    sizes = sorted({8, best // 2, best})
    table = []
    with CortexM3Board(HEAPS[heap]) as board:
        for h in sizes + [over]:
            ok, what = runs(board, tmp_path, h, recording, heap_bytes)
            table.append((h, plan_for(h, heap_bytes)["fits"], ok, what))
    print(f"\n{heap}: " + "; ".join(f"578-{h}-10 plan {'fits' if f else 'no'}, board {'runs' if ok else 'fails'} "
                                    f"({w})" for h, f, ok, w in table))
    for h, fits, ok, what in table[:-1]:
        assert fits and ok, f"578-{h}-10: the plan approves it on {heap}, but on the board: {what}"
    assert not table[-1][2], f"578-{over}-10 (10 % over the plan's largest, 578-{best}-10) runs on {heap}"
