"""`snn-edge plan MODEL --heap 192K`: will the model and its on-device learning state fit the board?

The figure is firmware_py.memory's, the same formula the runtime reports from RAM (weights, state,
learning traces, event buffer, firmware). For SOLSA it picks full eligibility traces when they fit,
else the factorised ones (O(N_in + N_out) traces), and says which.
"""
from __future__ import annotations

import json

from edge.errors import SnnEdgeError
from host_tools import options as opt


def register(sub) -> None:
    from host_tools.boards import add_target_option
    p = sub.add_parser("plan", help="check that a model (and its learning state) fits a board's heap",
                       description=__doc__)
    p.add_argument("model", help="model .onnx, device .blob, or integer model .npz")
    add_target_option(p, default="serial")
    p.add_argument("--heap", type=opt.size_bytes, default=None,
                   help="the board's heap, e.g. 140K, 192K (default: the target's, "
                                                "else 192K)")
    p.add_argument("--code", choices=("rom", "fs"), default=None,
                   help="where the firmware's bytecode lives: rom (ROMFS, executed in place) or fs (.mpy "
                        "files, loaded into the heap); default: the target's usual place")
    p.add_argument("--slots", type=opt.positive_int, default=None,
                   help="event buffer budget: active (step, input) pairs per sample (default 3072)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_plan)


def plan_model(model, heap: int, slots: int | None = None, kind=None, placement: str | None = None) -> dict:
    """Will `model` fit a board of `kind` (host_tools.boards) with `heap` bytes, its firmware's code in
    `placement` ("rom" or "fs"; default the kind's own)? The firmware's heap cost is the one measured on
    that kind of board (host_tools/calibrate.py)."""
    from firmware_py import memory
    from host_tools.boards import SERIAL
    kind = kind or SERIAL
    placement = placement or kind.placement
    dims = [(L.n_in, L.n_out, L.per_input) for L in model.layers]
    params = {k: int(v) for k, v in model.learn.params.items()}
    slots = memory.DEFAULT_SLOTS if slots is None else slots
    code = kind.code_bytes(placement)
    n_steps = model.binning[3] if model.binning else memory.STEPS_BOUND
    fits, b, variant = memory.plan(dims, model.learn.rule, params, heap, slots, 0,
                                   int(getattr(model, "compartments", 1)), code, n_steps)
    out = {"fits": fits, "heap": heap, "rule": model.learn.rule, "breakdown": b, "target": kind.name,
           "placement": placement, "sizes": [dims[0][0]] + [d[1] for d in dims]}
    if variant is not None:
        out["solsa_traces"] = variant
        other = memory.breakdown(dims, "solsa", params, 1 if variant == "full" else 0, slots, 0, 1, code, n_steps)
        out["alternative_total"] = other["total"]
    return out


def cmd_plan(args) -> int:
    from converters.blob import load_any_model
    from host_tools.boards import kind as board_kind
    kind = board_kind(args.target)
    if kind.micro_profile:
        raise SnnEdgeError("plan --target microbit: the micro profile's build checks its own heap model "
                           "(snn-edge flash --target microbit refuses what does not fit)")
    heap = args.heap or (kind.default_heap or 192 * 1024)
    model = load_any_model(args.model)
    r = plan_model(model, heap, args.slots, kind, args.code)
    if args.json:
        print(json.dumps(r, sort_keys=True))
    else:
        b = r["breakdown"]
        print(f"model {args.model}: {'-'.join(map(str, r['sizes']))}, rule {r['rule']}"
              + (f" ({r['solsa_traces']} SOLSA traces)" if "solsa_traces" in r else "")
              + f"; target {kind.name}, firmware code in {'ROMFS' if r['placement'] == 'rom' else 'the filesystem'}")
        for k in ("weights", "state", "traces", "buffers", "firmware", "headroom"):
            print(f"  {k:<9}{b[k]:>10,d} bytes")
        print(f"  {'total':<9}{b['total']:>10,d} bytes of a {r['heap']:,d}-byte heap: "
              + ("fits" if r["fits"] else "DOES NOT FIT"))
    return 0 if r["fits"] else 1
