"""Check firmware_py/fixedpoint.py against the golden JSON; runs under MicroPython and CPython.

Usage: micropython tests/golden/check_golden_mpy.py  (from the repo root). Prints OK n or FAIL lines.
"""
import json
import sys

sys.path.insert(0, ".")
from firmware_py import fixedpoint as fp  # noqa: E402

fails = []
checked = 0


def check(name, got, want):
    global checked
    checked += 1
    if got != want:
        fails.append("%s: got %r want %r" % (name, got, want))


with open("tests/golden/primitives.json") as f:
    P = json.load(f)
for x, a, y in P["mul_q12"]:
    check("mul_q12(%d,%d)" % (x, a), fp.mul_q12(x, a), y)
for x, d, y in P["trunc_div"]:
    check("trunc_div", fp.trunc_div(x, d), y)
for x, k, y in P["scale_pow2"]:
    check("scale_pow2", fp.scale_pow2(x, k), y)
for x, b, y in P["sat"]:
    check("sat", fp.sat(x, (1 << (b - 1)) - 1), y)
for seed, stream in P["xorshift32"]:
    s = fp.seed_state(seed)
    got = []
    for _ in range(len(stream)):
        s = fp.xorshift32(s)
        got.append(s)
    check("xorshift32 seed %r" % seed, got, stream)
for seed, n, want in P["lane_seeds"]:
    check("lane_seeds", fp.lane_seeds(seed, n), want)
for r, k, y in P["bits"]:
    check("bits", fp.bits(r, k), y)
for y, k, r, out in P["sround"]:
    check("sround", fp.sround(y, k, r), out)
for u, k, out in P["sigmoid_index"]:
    check("sigmoid_index", fp.sigmoid_index(u, k), out)
for h, th, sg, out in P["solsa_reset_factor"]:
    check("solsa_reset_factor(%d,%d,%d)" % (h, th, sg), fp.solsa_reset_factor(h, th, sg), out)
U = P["apply_update"]
W = list(U["W"])
a = list(U["a_syn"])
lanes = fp.lane_seeds(U["seed"], U["n_out"] + 1)
n = fp.apply_update(W, U["n_in"], U["n_out"], U["G"], U["lr_m"], U["lr_s"], lanes, a, U["Ga"],
                    U["lra_m"], U["lra_s"])
check("apply_update W", W, U["W_out"])
check("apply_update a", a, U["a_syn_out"])
check("apply_update lanes", lanes, U["lanes_out"])
check("apply_update nsat", n, U["nsat"])

with open("tests/golden/forward_2layer.json") as f:
    G = json.load(f)
layers = []
for L in G["network"]["layers"]:
    flat = [w for row in L["W"] for w in row]
    layers.append(fp.Layer(flat, L["n_in"], L["n_out"], L["a_syn"], L["a_mem"], L["theta"], L["shift"],
                           L["kind"]))
states = [fp.layer_state(L) for L in layers]
total = 0
for t in range(len(G["steps"])):
    spikes, vpres, nsat = fp.network_step(layers, G["network"]["inputs"][t], states)
    total += nsat
    want = G["steps"][t]
    check("step %d spikes" % t, spikes, want["spikes"])
    check("step %d V" % t, [st["V"] for st in states], want["V"])
    check("step %d I" % t, [st["I"] for st in states], want["I"])
    check("step %d x" % t, [st["x"] for st in states], want["x"])
    check("step %d nsat" % t, total, want["nsat"])

for line in fails:
    print("FAIL", line)
print("OK" if not fails else "FAILED", checked)
