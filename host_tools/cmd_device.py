"""`snn-edge plan MODEL --heap 192K`: will the model and its on-device learning state fit the board?

The figure is firmware_py.memory's, the same formula the runtime reports from RAM (weights, state,
learning traces, event buffer, firmware). For SOLSA it picks full eligibility traces when they fit,
else the factorised ones (O(N_in + N_out) traces), and says which.
"""
from __future__ import annotations

import json

from edge.errors import SnnEdgeError


def parse_size(text: str) -> int:
    t = text.strip().upper().removesuffix("B")
    mul = 1
    if t.endswith("K"):
        mul, t = 1024, t[:-1]
    elif t.endswith("M"):
        mul, t = 1024 * 1024, t[:-1]
    try:
        v = int(float(t) * mul)
    except ValueError:
        raise SnnEdgeError(f"--heap: expected a size like 192K, 65536 or 2M, got {text!r}") from None
    if v <= 0:
        raise SnnEdgeError(f"--heap: expected a positive size, got {text!r}")
    return v


def register(sub) -> None:
    p = sub.add_parser("plan", help="check that a model (and its learning state) fits a board's heap",
                       description=__doc__)
    p.add_argument("model", help="model .onnx, device .blob, or integer model .npz")
    p.add_argument("--heap", default="192K", help="the board's heap, e.g. 64K, 192K (default 192K)")
    p.add_argument("--slots", type=int, default=None,
                   help="event buffer budget: active (step, input) pairs per sample (default 2048)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_plan)


def plan_model(model, heap: int, slots: int | None = None) -> dict:
    from firmware_py import memory
    dims = [(L.n_in, L.n_out, L.per_input) for L in model.layers]
    params = {k: int(v) for k, v in model.learn.params.items()}
    fits, b, variant = memory.plan(dims, model.learn.rule, params, heap,
                                   memory.DEFAULT_SLOTS if slots is None else slots, 0,
                                   int(getattr(model, "compartments", 1)))
    out = {"fits": fits, "heap": heap, "rule": model.learn.rule, "breakdown": b,
           "sizes": [dims[0][0]] + [d[1] for d in dims]}
    if variant is not None:
        out["solsa_traces"] = variant
        other = memory.breakdown(dims, "solsa", params, 1 if variant == "full" else 0,
                                 memory.DEFAULT_SLOTS if slots is None else slots)
        out["alternative_total"] = other["total"]
    return out


def cmd_plan(args) -> int:
    from converters.blob import load_any_model
    model = load_any_model(args.model)
    r = plan_model(model, parse_size(args.heap), args.slots)
    if args.json:
        print(json.dumps(r, sort_keys=True))
    else:
        b = r["breakdown"]
        print(f"model {args.model}: {'-'.join(map(str, r['sizes']))}, rule {r['rule']}"
              + (f" ({r['solsa_traces']} SOLSA traces)" if "solsa_traces" in r else ""))
        for k in ("weights", "state", "traces", "buffers", "firmware"):
            print(f"  {k:<9}{b[k]:>10,d} bytes")
        print(f"  {'total':<9}{b['total']:>10,d} bytes of a {r['heap']:,d}-byte heap: "
              + ("fits" if r["fits"] else "DOES NOT FIT"))
    return 0 if r["fits"] else 1
