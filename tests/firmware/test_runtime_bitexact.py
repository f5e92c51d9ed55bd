"""The device runtime vs the host's integer simulator (intsim) and onnxruntime, on real N-MNIST recordings.

The device side runs tests/firmware/run_device_mpy.py under the real MicroPython unix port (and CPython):
it decodes the .bin recordings itself and sends the events to Device in batches, so the board's own
binning is on the path. The host side bins with edge.transforms (the vectorised twin of that binning)
and runs intsim; onnxruntime runs the exported graphs. Everything must be identical: per-sample classes
and spike counts, saturation counts, and after on-device learning the last layer's weights (and a_syn).
Per-sample semantics on both sides: the network state and the rule's traces start at zero for every
sample; the rule's generator bank carries over (NUMERICS.md §4, §7).
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from converters import intsim
from converters.blob import intmodel_to_blob
from converters.intmodel import IntLayer, IntModel, LearnSpec, default_learn
from firmware_py.binning import BinSpec, COUNT

from .conftest import MICROPYTHONS, run_script

N_SAMPLES = 100          # the board's interpreter: the 100 samples
N_CPYTHON = 30           # the same code under CPython: a shorter run keeps the suite fast
BINARY_SPEC = (34, 34, 10000, 30, 2, (0, 0, 34, 34), 0)
COUNT_SPEC = (34, 34, 10000, 30, 2, (0, 0, 34, 34), COUNT)


def _recordings(root, n):
    """n recordings, the first n // 10 of each digit (fixed order: digit-interleaved)."""
    per = -(-n // 10)
    folders = [sorted((root / "Train" / str(d)).glob("*.bin"))[:per] for d in range(10)]
    out = []
    for k in range(per):
        for d in range(10):
            if k < len(folders[d]) and len(out) < n:
                out.append((folders[d][k], d))
    return out


_FRAMES: dict = {}


def _frames(items, binning):
    """Host-binned frames [S, T, N_in] and labels (memoised: several tests bin the same recordings)."""
    key = (tuple((str(f), d) for f, d in items), binning)
    if key not in _FRAMES:
        _FRAMES[key] = _bin(items, binning)
    X, y = _FRAMES[key]
    return X.copy(), y.copy()


def _bin(items, binning):
    from edge.data import frames_of
    from edge.events import read_events
    spec = BinSpec(*binning[:5], crop=binning[5], mode=binning[6])
    return np.stack([frames_of(read_events(f, d), spec) for f, d in items]), np.array([d for _, d in items])


def make_model(kind: str, rule: str, seed: int = 0) -> IntModel:
    """578-32-10 integer models with spiking activity on real N-MNIST (random weights, fixed seed)."""
    rng = np.random.default_rng(seed)
    W0 = rng.integers(-60, 61, (578, 32)).astype(np.int8)
    W1 = rng.integers(-60, 61, (32, 10)).astype(np.int8)
    learn = default_learn("solsa" if rule == "solsa_all" else rule) if rule != "none" else LearnSpec()
    if rule == "solsa_all":       # NUMERICS.md §10.8: every layer learns
        learn.params.update(learn_all=1, lrh_s=10)
    if kind == "scalar":
        layers = [IntLayer(W0, np.array(3000, np.int32), 3500, 1500, 4, 5),
                  IntLayer(W1, np.array(3000, np.int32), 3500, 1500, 4, 5)]
        return IntModel(layers, 1, BINARY_SPEC, learn)
    if kind == "per_input":   # count-mode input, per-input synaptic decays on both layers (SOLSA learns a_syn)
        a0 = rng.integers(1500, 4000, 578).astype(np.int32)
        a1 = rng.integers(1500, 4000, 32).astype(np.int32)
        layers = [IntLayer((W0 // 4).astype(np.int8), a0, 3500, 3000, 3, 5),
                  IntLayer(W1, a1, 3500, 1500, 4, 5)]
        return IntModel(layers, 255, COUNT_SPEC, learn)
    if kind == "integrator":
        layers = [IntLayer(W0, np.array(3000, np.int32), 3500, 1500, 4, 5),
                  IntLayer(W1, np.array(3000, np.int32), 3500, 1500, 4, 5, "integrator")]
        return IntModel(layers, 1, BINARY_SPEC, learn)
    raise ValueError(kind)


def host_infer(model, X):
    res = intsim.run(model, np.ascontiguousarray(X.transpose(1, 0, 2)))
    return res.predictions, res.scores, res.nsat[-1]


def host_learn(model, X, y):
    """intsim over the samples with the device's per-sample semantics; returns (model', preds, counts, nsat, ls)."""
    return intsim.learn_samples(model, X, y)


@pytest.fixture(scope="module")
def data(nmnist_small):
    items = _recordings(nmnist_small, N_SAMPLES)
    return items


def _device(tmp_path, model, items, mode, interp, heap="192K", path=None, kernel="plain", fact=-1):
    blob = tmp_path / "m.blob"
    blob.write_bytes(intmodel_to_blob(model))
    lst = tmp_path / "list.txt"
    lst.write_text("".join(f"{f} {d}\n" for f, d in items))
    out = tmp_path / f"out-{interp}-{mode}-{kernel}.json"
    run_script(interp, "run_device_mpy.py", str(blob), str(lst), str(out), mode, kernel, str(fact),
               heap=heap if interp in MICROPYTHONS else None, path=path)
    return _report(out, len(items))


def _report(out, n):
    """run_device_mpy.py's output file: per-sample results, the final state, banks, a_syn and weights."""
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    final = lines[n]
    final["results"] = lines[:n]
    k = n + 1 + final["n_banks"]
    final["banks"] = lines[n + 1:k]
    final["a_syn_layers"] = []
    for size in final["a_syn_sizes"]:          # an int, or ceil(size / 64) pieces of per-input decays
        if size == 0:
            final["a_syn_layers"].append(lines[k])
            k += 1
        else:
            pieces = -(-size // 64)
            final["a_syn_layers"].append([a for piece in lines[k:k + pieces] for a in piece])
            k += pieces
    flat = [w for piece in lines[k:] for w in piece]
    final["W_layers"] = []
    for size in final["sizes"]:
        final["W_layers"].append(flat[:size])
        flat = flat[size:]
    final["W"] = final["W_layers"][-1]
    return final


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["scalar", "per_input", "integrator"])
def test_inference_bit_exact_with_intsim_micropython_and_cpython(tmp_path, data, mpy_tree, kind):
    model = make_model(kind, "none")
    X, y = _frames(data, model.binning)
    preds, scores, nsat = host_infer(model, X)
    assert scores.sum() != 0, "the test model must be active on real data"
    heap = "192K"
    for interp in ("micropython", "micropython32", "cpython"):
        got = _device(tmp_path, model, data, "infer", interp, heap=heap,
                      path=mpy_tree if interp in MICROPYTHONS else None)
        assert [r[0] for r in got["results"]] == preds.tolist(), interp
        assert np.array_equal(np.array([r[1] for r in got["results"]]), scores), interp
        assert got["nsat"] == int(nsat.sum()), interp


@pytest.mark.slow
@pytest.mark.parametrize("kind,rule,fact,heap", [("scalar", "readout_delta", -1, "192K"),
                                                 ("integrator", "readout_delta", -1, "192K"),
                                                 ("scalar", "solsa", 0, "192K"), ("per_input", "solsa", 1, "256K"),
                                                 # count-mode events + per-input decays: the 64-bit unix
                                                 # port (8-byte pointers) needs more than 192K
                                                 ("per_input", "solsa", 0, "256K"),
                                                 # every layer learns (§10.8): 578-32 hidden and 32-10;
                                                 # (64-bit heap, 32-bit heap): a 32-bit board's 192K
                                                 ("scalar", "solsa_all", 0, ("256K", "192K")),
                                                 ("per_input", "solsa_all", 1, ("320K", "256K"))])
def test_learning_100_samples_bit_exact_with_intsim(tmp_path, data, mpy_tree, kind, rule, fact, heap):
    model = make_model(kind, rule)
    if fact >= 0:
        model.learn.params["factorised"] = fact
    X, y = _frames(data, model.binning)
    learned = list(intsim.hidden_layers(model)) + [len(model.layers) - 1]
    n_mpy = N_SAMPLES if len(learned) == 1 else 40      # every layer learning: 40 samples keep CI short
    for interp, n in (("micropython", n_mpy), ("micropython32", n_mpy), ("cpython", N_CPYTHON)):
        m2, preds, scores, nsat, ls = host_learn(model, X[:n], y[:n])
        for l in learned:
            changed = int((m2.layers[l].W != model.layers[l].W).sum())
            assert changed > 0, f"learning must move layer {l}'s weights for this test to mean anything"
        h = heap if isinstance(heap, str) else heap[interp == "micropython32"]
        got = _device(tmp_path, model, data[:n], "learn", interp, heap=h,
                      path=mpy_tree if interp in MICROPYTHONS else None)
        for l in range(len(model.layers)):
            W = np.array(got["W_layers"][l], np.int8).reshape(m2.layers[l].W.shape)
            assert np.array_equal(W, m2.layers[l].W), \
                f"{interp}: layer {l}: {int((W != m2.layers[l].W).sum())} weights differ"
            if m2.layers[l].per_input:
                assert got["a_syn_layers"][l] == m2.layers[l].a_syn.tolist(), (interp, l)
        assert [r[0] for r in got["results"]] == preds.tolist(), interp
        assert np.array_equal(np.array([r[1] for r in got["results"]]), scores), interp
        assert got["lanes"] == ls.lanes.tolist(), interp
        if ls.hidden_lanes:
            assert got["banks"] == [ls.hidden_lanes[l].tolist() for l in sorted(ls.hidden_lanes)] \
                + [ls.lanes.tolist()], interp
        assert got["nsat"] == nsat, interp


@pytest.mark.slow
@pytest.mark.parametrize("kind,rule", [("scalar", "none"), ("scalar", "solsa"), ("scalar", "solsa_all")])
def test_fast_kernels_give_the_same_bits(tmp_path, data, mpy_tree, kind, rule):
    """viper (MicroPython) and numpy (CPython) kernels vs intsim on the same 100 recordings (40 when every
    layer learns: the banks' tick kernel on the hidden layer's 33 lanes x 578 rows per update)."""
    model = make_model(kind, rule)
    data = data if rule != "solsa_all" else data[:40]
    X, y = _frames(data, model.binning)
    if rule == "none":
        preds, scores, nsat = host_infer(model, X)
        Ws = [L.W for L in model.layers]
    else:
        m2, preds, scores, nsat, _ = host_learn(model, X, y)
        Ws = [L.W for L in m2.layers]
    mode = "infer" if rule == "none" else "learn"
    for interp in ("micropython", "micropython32", "cpython"):
        # 256K: the viper kernels' machine code sits in the heap, twice as big on the 64-bit port
        got = _device(tmp_path, model, data, mode, interp, kernel="fast", heap="256K",
                      path=mpy_tree if interp in MICROPYTHONS else None)
        assert np.array_equal(np.array([r[1] for r in got["results"]]), scores), interp
        for l, W in enumerate(Ws):
            assert np.array_equal(np.array(got["W_layers"][l], np.int8).reshape(W.shape), W), (interp, l)
        assert got["nsat"] == int(np.sum(nsat)), interp


GEM_SPEC = (34, 34, 10000, 30, 4, (0, 0, 32, 32), 0)     # 8 x 8 x 2 = 128 inputs


def make_gem_model(seed: int = 0, K: int = 2) -> IntModel:
    """128-16-10 probabilistic (GLM) model with K compartments: GEM learns every layer."""
    rng = np.random.default_rng(seed)
    layers = []
    for n_in, n_out in ((128, 16), (16, 10)):
        layers.append(IntLayer(rng.integers(-60, 61, (n_in, n_out)).astype(np.int8), np.array(3000, np.int32),
                               3600, 1, 4, 5, "prob", rng.integers(-3000, 1000, n_out).astype(np.int32),
                               rng.integers(-2000, 500, n_out).astype(np.int32), 3000, 8))
    learn = default_learn("gem")
    learn.params["k_update"] = 10
    return IntModel(layers, 1, GEM_SPEC, learn, {}, K, 7)


def host_gem(model, X, y):
    """intsim per sample: a free pass (the prediction), then the clamped learning pass."""
    m = model.copy()
    banks = intsim.initial_gem_learn_state(m).arrays["banks"]
    preds, scores, nsat, rule_nsat = [], [], 0, 0
    for s in range(X.shape[0]):
        res = intsim.run(m, np.ascontiguousarray(X[s][:, None, :]))
        preds.append(int(res.predictions[0]))
        scores.append(res.scores[0])
        nsat += int(res.nsat[-1].sum())
        ls = intsim.initial_gem_learn_state(m)
        ls.arrays["banks"] = banks
        states = intsim.initial_glm_state(m, m.compartments)
        for t in range(X.shape[1]):
            steps, states, ls = intsim.gem_learn_step(m, X[s, t], states, ls, int(y[s]))
            nsat += int(sum(o.nsat.sum() for o in steps))
        banks = ls.arrays["banks"]
        rule_nsat += ls.nsat
    return m, np.array(preds), np.array(scores), nsat + rule_nsat, banks


@pytest.mark.slow
def test_gem_100_samples_bit_exact_with_intsim(tmp_path, data, mpy_tree):
    model = make_gem_model()
    X, y = _frames(data, model.binning)
    for interp, n in (("micropython", N_SAMPLES), ("micropython32", N_SAMPLES), ("cpython", N_CPYTHON)):
        m2, preds, scores, nsat, banks = host_gem(model, X[:n], y[:n])
        assert scores.sum() > 0 and len(set(preds.tolist())) > 1, "the GEM test model must be active"
        assert (m2.layers[-1].W != model.layers[-1].W).any() and (m2.layers[0].W != model.layers[0].W).any()
        # the 64-bit port's objects are twice a 32-bit board's: 256K there, 192K on the 32-bit port
        got = _device(tmp_path, model, data[:n], "learn", interp, heap="256K" if interp == "micropython" else "192K",
                      path=mpy_tree if interp in MICROPYTHONS else None)
        W = np.array(got["W"], np.int8).reshape(m2.layers[-1].W.shape)
        assert np.array_equal(W, m2.layers[-1].W), f"{interp}: {int((W != m2.layers[-1].W).sum())} weights differ"
        assert [r[0] for r in got["results"]] == preds.tolist(), interp
        assert np.array_equal(np.array([r[1] for r in got["results"]]), scores), interp
        assert got["lanes"] == banks[-1].tolist(), interp
        assert got["nsat"] == nsat, interp


@pytest.mark.slow
def test_onnx_file_read_on_micropython_equals_the_blob(tmp_path, data, mpy_tree):
    """The board reading the .onnx file itself (firmware_py/onnx_reader.py) learns exactly as from the blob.
    The .onnx file (graphs and functions included) is held in RAM while it is parsed: 256K on this port."""
    from converters.onnx_export import to_onnx
    model = make_model("per_input", "solsa")
    items = data[:20]
    onnx_path = tmp_path / "m.onnx"
    onnx_path.write_bytes(to_onnx(model).SerializeToString())
    lst = tmp_path / "list.txt"
    lst.write_text("".join(f"{f} {d}\n" for f, d in items))
    out_onnx = tmp_path / "onnx.json"
    run_script("micropython", "run_device_mpy.py", str(onnx_path), str(lst), str(out_onnx), "learn",
               heap="256K", path=mpy_tree)
    from_blob = _device(tmp_path, model, items, "learn", "micropython", heap="256K", path=mpy_tree)
    from_onnx = _report(out_onnx, len(items))
    assert [r[1] for r in from_onnx["results"]] == [r[1] for r in from_blob["results"]]
    assert from_onnx["W_layers"] == from_blob["W_layers"]
    assert from_onnx["a_syn"] == from_blob["a_syn"]
