"""The device runtime vs onnxruntime directly (no intsim in between) on real N-MNIST recordings.

Inference: the exported sequence graph's per-sample spike counts and predictions equal the Device's.
Learning: each sample runs the exported learning graph (a Scan of the file's learning-step function)
from the weights and generator lanes the previous sample left, as the device does (state and traces
from zero per sample); after 10 samples the weights, a_syn and lanes equal the Device's.
"""
from __future__ import annotations

import numpy as np
import pytest

from converters.blob import intmodel_to_blob
from converters.onnx_export import learn_model, to_onnx
from converters.verify import initial_lanes, run_sequence, session
from firmware_py.device import Device
from firmware_py.store import persistent_banks

from .test_runtime_bitexact import _frames, _recordings, make_model


def _device_run(model, items, learn):
    from edge.events import read_events
    dev = Device()
    dev.load_model(intmodel_to_blob(model))
    out = []
    for f, d in items:
        ev = read_events(f, d).events
        dev.begin_sample()
        dev.add_events(ev["x"].tolist(), ev["y"].tolist(), ev["t"].tolist(), ev["p"].tolist())
        out.append(dev.end_sample(d if learn else None))
    return dev, out


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["scalar", "per_input", "integrator"])
def test_inference_equals_onnxruntime(nmnist_small, kind):
    items = _recordings(nmnist_small, 40)
    model = make_model(kind, "none")
    X, _ = _frames(items, model.binning)
    got = run_sequence(session(to_onnx(model)), np.ascontiguousarray(X.transpose(1, 0, 2)))
    _, res = _device_run(model, items, False)
    last = len(model.layers) - 1
    if model.layers[-1].kind == "lif":
        ort_scores = got[f"L{last}_spikes"].astype(np.int64).sum(axis=0)
    else:
        ort_scores = got[f"L{last}_V"].astype(np.int64).sum(axis=0)
    assert np.array_equal(np.array([r[1] for r in res]), ort_scores)
    assert [r[0] for r in res] == got["prediction"].tolist()


@pytest.mark.slow
@pytest.mark.parametrize("kind,rule,fact", [("scalar", "readout_delta", 0), ("scalar", "solsa", 0),
                                            ("per_input", "solsa", 1), ("per_input", "solsa_all", 1)])
def test_learning_equals_onnxruntime(nmnist_small, kind, rule, fact):
    """solsa_all: every layer learns (NUMERICS.md §10.8); the hidden layers' W, a_syn and banks carry over
    from sample to sample through the graph's h{l}_lanes0 inputs and the re-exported weights."""
    from converters.intsim import hidden_layers
    items = _recordings(nmnist_small, 10)
    model = make_model(kind, rule)
    if rule.startswith("solsa"):
        model.learn.params["factorised"] = fact
    X, y = _frames(items, model.binning)
    m = model.copy()
    hidden = list(hidden_layers(m))
    lanes = {"lanes0": initial_lanes(m)}
    for s in range(len(items)):
        sess = session(learn_model(to_onnx(m), m))
        names = [o.name for o in sess.get_outputs()]
        out = dict(zip(names, sess.run(None, {"spikes_in": np.ascontiguousarray(X[s][:, None, :]),
                                              "labels": np.full(X.shape[1], y[s], np.int64), **lanes})))
        m.layers[-1].W = out["seq_W"][-1].astype(np.int8)
        m.layers[-1].a_syn = out["seq_a_syn"][-1].astype(np.int32)
        lanes["lanes0"] = out["seq_lanes"][-1].astype(np.uint32)
        for l in hidden:
            m.layers[l].W = out[f"seq_h{l}_W"][-1].astype(np.int8)
            m.layers[l].a_syn = out[f"seq_h{l}_a_syn"][-1].astype(np.int32)
            lanes[f"h{l}_lanes0"] = out[f"seq_h{l}_lanes"][-1].astype(np.uint32)
    dev, _ = _device_run(model, items, True)
    for l in hidden + [len(model.layers) - 1]:
        L = dev.net.model.layers[l]
        W = np.array(list(L.W), np.int8).reshape(m.layers[l].W.shape)
        assert (m.layers[l].W != model.layers[l].W).any(), f"learning must move layer {l}'s weights"
        assert np.array_equal(W, m.layers[l].W), l
        if L.per_input:
            assert list(L.a_syn) == m.layers[l].a_syn.tolist(), l
    assert list(dev.rule.lanes) == lanes["lanes0"].tolist()
    if hidden:      # every learning bank, layer order, as a checkpoint stores them
        assert [list(b) for b in persistent_banks(dev.rule)] == \
            [lanes[f"h{l}_lanes0"].tolist() for l in hidden] + [lanes["lanes0"].tolist()]
