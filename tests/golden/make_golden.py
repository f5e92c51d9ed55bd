"""Generate tests/golden/*.json from hand-written cases and firmware_py/fixedpoint.py.

Run from the repo root: `python tests/golden/make_golden.py`. The JSON files are committed; tests check
that regenerating gives the same content (so the files cannot drift from fixedpoint.py) and run every
executor (numpy intsim, onnxruntime, the firmware runtime) against them.
"""
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))

from firmware_py import fixedpoint as fp  # noqa: E402

# Hand-written edge cases: signs, zero, the truncation boundary, full-range values.
MUL_CASES = [(0, 4096), (1, 4095), (-1, 4095), (4097, 2048), (-4097, 2048), (524287, 4096),
             (-524287, 4096), (524287, 4095), (-524287, 4095), (100, 3891), (-100, 3891),
             (-4096, 1), (-4095, 1), (12345, -2048), (-12345, -2048), (7, 0), (-7, 0)]
TRUNC_CASES = [(7, 2), (-7, 2), (-8, 2), (0, 5), (-1, 4096), (524287, 64), (-524287, 64)]
SCALE_CASES = [(5, 3), (-5, 3), (100, -3), (-100, -3), (-1, -1), (1, -1), (0, -6), (-65, -6)]
SAT_CASES = [(0, 20), (524287, 20), (524288, 20), (-524288, 20), (-524287, 20), (2 ** 40, 20),
             (-(2 ** 40), 24)]
SEEDS = [0, 1, 42, 0xFFFFFFFF, 2 ** 32, -1, 123456789]
SROUND_CASES = [(10, 2, 0), (10, 2, 1), (10, 2, 2), (-10, 2, 0), (-10, 2, 1), (-10, 2, 3),
                (-1, 4, 0), (-1, 4, 1), (0, 0, 0), (3, 0, 0)]
# (h, theta, sg_shift): no surrogate, peak, partial, exactly 0, and the clamp at 0 (NUMERICS.md §10.5b)
RESET_FACTOR_CASES = [(0, 5000, 4), (4096, 5000, 4), (2048, 8191, 1), (1, 1, 0), (4095, 4097, 0),
                      (4096, 4096, 0), (4096, 524287, 0), (3000, 524287, 7)]
SIG_INDEX_CASES = [(0, 4), (-1, 4), (15, 4), (16, 4), (-16, 4), (-17, 4), (10 ** 6, 4), (-10 ** 6, 4),
                   (2047, 4), (2048, 4)]


def primitives():
    return {
        "mul_q12": [[x, a, fp.mul_q12(x, a)] for x, a in MUL_CASES],
        "trunc_div": [[x, d, fp.trunc_div(x, d)] for x, d in TRUNC_CASES],
        "scale_pow2": [[x, k, fp.scale_pow2(x, k)] for x, k in SCALE_CASES],
        "sat": [[x, b, fp.sat(x, (1 << (b - 1)) - 1)] for x, b in SAT_CASES],
        "xorshift32": [[seed, _stream(seed, 6)] for seed in SEEDS],
        "lane_seeds": [[seed, n, fp.lane_seeds(seed, n)] for seed, n in [(0, 3), (7, 4), (2 ** 31, 2)]],
        "bits": [[r, k, fp.bits(r, k)] for r, k in [(0xFFFFFFFF, 1), (0x80000000, 1), (0x12345678, 16),
                                                     (0x12345678, 0), (0x12345678, 32)]],
        "sround": [[y, k, r, fp.sround(y, k, r)] for y, k, r in SROUND_CASES],
        "sigmoid_lut": fp.sigmoid_lut(),
        "logsig_lut": fp.logsig_lut(),
        "exp_lut": fp.exp_lut(),
        "sigmoid_index": [[u, k, fp.sigmoid_index(u, k)] for u, k in SIG_INDEX_CASES],
        "apply_update": _update_case(),
        "solsa_reset_factor": [[h, th, sg, fp.solsa_reset_factor(h, th, sg)] for h, th, sg in RESET_FACTOR_CASES],
    }


def _stream(seed, n):
    s = fp.seed_state(seed)
    out = []
    for _ in range(n):
        s = fp.xorshift32(s)
        out.append(s)
    return out


def _update_case():
    n_in, n_out = 3, 2
    W = [120, -120, 5, -5, 0, 1]
    G = [5000, -5000, 37, -37, 0, 1000000]
    a_syn = [4000, 10, 2000]
    Ga = [100000, -100000, 3]
    lanes = fp.lane_seeds(99, n_out + 1)
    case = {"n_in": n_in, "n_out": n_out, "W": list(W), "G": G, "lr_m": 3, "lr_s": 6,
            "a_syn": list(a_syn), "Ga": Ga, "lra_m": 1, "lra_s": 4, "seed": 99}
    nsat = fp.apply_update(W, n_in, n_out, G, 3, 6, lanes, a_syn, Ga, 1, 4)
    case.update({"W_out": W, "a_syn_out": a_syn, "lanes_out": lanes, "nsat": nsat})
    return case


# A tiny 2-layer network: 6 inputs (count mode) -> 4 LIF (scalar a_syn) -> 3 LIF (per-input a_syn).
NET = {
    "layers": [
        {"n_in": 6, "n_out": 4, "kind": "lif", "a_syn": 3277, "a_mem": 3686, "theta": 7200, "shift": 5,
         "W": [[40, -12, 90, 0], [127, 3, -127, 60], [-50, 70, 20, 20],
               [0, 0, 0, 127], [15, -90, 33, -1], [64, 64, -64, 8]]},
        {"n_in": 4, "n_out": 3, "kind": "lif", "a_syn": [2048, 3900, 100, 4095], "a_mem": 3000,
         "theta": 2500, "shift": 3,
         "W": [[100, -20, 5], [-127, 127, 60], [30, 30, -30], [77, -8, 101]]},
    ],
    "inputs": [[0, 1, 0, 0, 0, 0], [3, 0, 2, 0, 0, 1], [0, 0, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1],
               [0, 255, 0, 0, 0, 0], [0, 0, 0, 255, 255, 0], [2, 0, 0, 0, 9, 0], [0, 0, 0, 0, 0, 0],
               [0, 0, 0, 0, 0, 0], [1, 0, 0, 0, 0, 0]],
}


def build_layers(net):
    layers = []
    for L in net["layers"]:
        flat = [w for row in L["W"] for w in row]
        a_syn = list(L["a_syn"]) if isinstance(L["a_syn"], list) else L["a_syn"]
        layers.append(fp.Layer(flat, L["n_in"], L["n_out"], a_syn, L["a_mem"], L["theta"], L["shift"],
                               L["kind"]))
    return layers


def forward_case():
    layers = build_layers(NET)
    states = [fp.layer_state(L) for L in layers]
    steps = []
    total = 0
    for s_in in NET["inputs"]:
        spikes, vpres, nsat = fp.network_step(layers, s_in, states)
        total += nsat
        steps.append({
            "spikes": spikes, "vpre": vpres, "nsat": total,
            "I": [list(st["I"]) for st in states], "V": [list(st["V"]) for st in states],
            "x": [list(st["x"]) for st in states],
        })
    return {"network": NET, "steps": steps}


def write_json(path, obj):
    text = json.dumps(obj, indent=1, sort_keys=True) + "\n"
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def generate():
    return {"primitives.json": primitives(), "forward_2layer.json": forward_case()}


if __name__ == "__main__":
    for name, obj in generate().items():
        write_json(os.path.join(HERE, name), obj)
        print("wrote", os.path.join(HERE, name))
