"""Runtime checks that run unchanged under MicroPython and CPython (from the repo root).

Usage: micropython -X heapsize=64K tests/firmware/check_runtime_mpy.py [FW_PATH [plain|fast]]
Prints one line: "OK <n checks>" or "FAILED <n>" after "FAIL ..." lines. Checks the event-driven runtime
against the golden forward vectors and against fixedpoint's reference network_step on random networks.
"""
import gc
import json
import sys
from array import array

sys.path.insert(0, ".")
if len(sys.argv) > 1 and sys.argv[1] != ".":
    sys.path.insert(0, sys.argv[1])   # a tree of precompiled .mpy files
from firmware_py import fixedpoint as fp  # noqa: E402
from firmware_py import runtime as rt  # noqa: E402

ROWS = rt.accumulate_rows
LIF = None
if len(sys.argv) > 2 and sys.argv[2] == "fast":
    from firmware_py import fast  # noqa: E402
    ROWS = fast.best_rows()
    LIF = fast.best_lif()
    print("lif", "viper" if LIF is not None else "plain")
    print("kernel", "thumb" if ROWS is fast.rows_thumb else "viper" if ROWS is fast.rows_viper
          else "numpy" if ROWS is fast.rows_numpy else "plain")
fails = []
checked = [0]


def check(name, got, want):
    checked[0] += 1
    if got != want:
        fails.append("%s: got %r want %r" % (name, got, want))


def to_rt(L):
    a = L.a_syn if isinstance(L.a_syn, int) else list(L.a_syn)
    kind = rt.KIND_LIF if L.kind == "lif" else rt.KIND_INTEGRATOR
    return rt.Layer(L.W, L.n_in, L.n_out, a, L.a_mem, L.theta, L.shift, 0, kind)


def compare(tag, ref_layers, inputs):
    gc.collect()
    net = rt.Network(rt.Model([to_rt(L) for L in ref_layers]), ROWS, LIF)
    states = [fp.layer_state(L) for L in ref_layers]
    total = 0
    for t in range(len(inputs)):
        spikes, vpres, nsat = fp.network_step(ref_layers, inputs[t], states)
        total += nsat
        net.step_frame(inputs[t])
        for l in range(len(ref_layers)):
            st = net.states[l]
            check("%s t%d L%d V" % (tag, t, l), list(st.V), states[l]["V"])
            check("%s t%d L%d I" % (tag, t, l), list(st.I), states[l]["I"])
            check("%s t%d L%d s" % (tag, t, l), list(st.s), spikes[l])
            check("%s t%d L%d vpre" % (tag, t, l), list(st.vpre), vpres[l])
            if st.x is not None:
                check("%s t%d L%d x" % (tag, t, l), list(st.x), states[l]["x"])
        check("%s t%d nsat" % (tag, t), net.nsat, total)


# 1. golden forward vectors
with open("tests/golden/forward_2layer.json") as f:
    G = json.load(f)
layers = []
for L in G["network"]["layers"]:
    flat = array("b", [w for row in L["W"] for w in row])
    layers.append(fp.Layer(flat, L["n_in"], L["n_out"], L["a_syn"], L["a_mem"], L["theta"], L["shift"],
                           L["kind"]))
net = rt.Network(rt.Model([to_rt(L) for L in layers]), ROWS, LIF)
for t in range(len(G["steps"])):
    net.step_frame(G["network"]["inputs"][t])
    want = G["steps"][t]
    check("golden t%d V" % t, [list(st.V) for st in net.states], want["V"])
    check("golden t%d I" % t, [list(st.I) for st in net.states], want["I"])
    check("golden t%d s" % t, [list(st.s) for st in net.states], want["spikes"])
    check("golden t%d nsat" % t, net.nsat, want["nsat"])

G = None
net = None
layers = None
gc.collect()

# 2. random networks (xorshift32 as the random source: same on both interpreters), incl. saturation
rng = [fp.seed_state(12345)]


def rnd(n):
    rng[0] = fp.xorshift32(rng[0])
    return rng[0] % n


for trial in range(6):
    sizes = [20 + rnd(20), 8 + rnd(10), 3 + rnd(5)]
    ref = []
    for l in range(2):
        n_in, n_out = sizes[l], sizes[l + 1]
        W = array("b", [rnd(255) - 127 for _ in range(n_in * n_out)])
        per_input = (trial + l) % 2 == 1
        a_syn = [rnd(4097) for _ in range(n_in)] if per_input else rnd(4097)
        kind = "integrator" if (l == 1 and trial % 3 == 2) else "lif"
        theta = 1 + rnd(3000 if trial < 4 else 100000)
        shift = rnd(8) if trial < 4 else 12 + rnd(6)     # large shifts drive I, V into saturation
        ref.append(fp.Layer(W, n_in, n_out, a_syn, rnd(4097), theta, shift, kind))
    counts = trial % 2 == 0
    inputs = []
    for t in range(25):
        fr = []
        for i in range(sizes[0]):
            r = rnd(100)
            fr.append((1 + rnd(255) if counts else 1) if r < 15 else 0)
        inputs.append(bytearray(fr))
    compare("random%d" % trial, ref, inputs)

for line in fails[:20]:
    print("FAIL", line)
print("OK %d" % checked[0] if not fails else "FAILED %d" % len(fails))
