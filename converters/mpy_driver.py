"""Run firmware_py.runtime on binned frames and print every step's spikes and states (MicroPython script).

Usage (from the repo root): micropython -X heapsize=8M converters/mpy_driver.py model.json frames.bin [scores]
model.json: {"layers": [{"W": [flat row-major], "n_in", "n_out", "a_syn": int or [n_in], "a_mem", "theta",
"shift", "w_exp", "kind": 0 lif / 1 integrator}], "in_max", "S", "T", "N"}; frames.bin: S*T*N bytes.
Output: one line per (sample, step, layer): "spike indices|V values|I values" (comma-separated), then
"nsat <n>" after each step. With the third argument `scores`: only the device's readout, one line per sample,
"class|per-class measure" (comma-separated), what `snn-edge eval --executor micropython` scores. converters/verify.py parses it and compares it with the numpy simulator; the
script imports only firmware_py, so the board's own arithmetic is what runs.
"""
import json
import sys

sys.path.insert(0, ".")
from firmware_py import runtime as rt  # noqa: E402


def main():
    with open(sys.argv[1]) as fh:
        spec = json.load(fh)
    layers = []
    for d in spec["layers"]:
        layers.append(rt.Layer(d["W"], d["n_in"], d["n_out"], d["a_syn"], d["a_mem"], d["theta"], d["shift"],
                               d["w_exp"], d["kind"]))
    spec["layers"] = None       # free the JSON weight lists before running (board-sized heaps)
    net = rt.Network(rt.Model(layers, spec["in_max"]))
    S, T, N = spec["S"], spec["T"], spec["N"]
    with open(sys.argv[2], "rb") as fh:
        frames = fh.read()
    out = sys.stdout
    scores_only = len(sys.argv) > 3 and sys.argv[3] == "scores"
    for s in range(S):
        net.reset()
        for t in range(T):
            base = (s * T + t) * N
            net.step_frame(frames[base:base + N])
            if scores_only:
                continue
            for st in net.states:
                out.write(",".join([str(j) for j in sorted(st.spiking())]) + "|" + ",".join([str(v) for v in st.V])
                          + "|" + ",".join([str(v) for v in st.I]) + "\n")
            out.write("nsat %d\n" % net.nsat)
        if scores_only:
            cls, measure = net.readout()
            out.write("%d|%s\n" % (cls, ",".join([str(v) for v in measure])))


main()
