"""On real N-MNIST recordings: quantisation accuracy, and numpy-int vs onnxruntime bit for bit.

The float model is trained here with the project's BPTT rule (edge.train.fit, a few epochs of a small
578-64-10 network: ~10 s on 2 cores); the data is ../shared/data/nmnist-small (skipped when absent).
"""
import dataclasses

import numpy as np
import pytest

from converters import onnx_export as ox
from converters import verify
from converters.intmodel import default_learn
from converters.quantize import compare, format_report, quantize

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def frames(nmnist_frames):
    return nmnist_frames


@pytest.fixture(scope="module")
def trained(nmnist_trained):
    return nmnist_trained


def calib(frames, n=200):
    from tests.conftest import calibration_frames
    return calibration_frames(frames, n)


def test_int8_accuracy_within_one_point_of_float(frames, trained):
    X, y, _, val = frames
    spec, params = trained
    model = quantize(spec, params, calib(frames))
    rep = compare(spec, params, model, X[val], y[val])
    print("\n" + format_report(rep))
    assert rep["float_accuracy"] > 0.5, "the fixture's float model did not train"
    assert rep["int_accuracy"] >= rep["float_accuracy"] - 0.01, format_report(rep)
    assert all(a > 0.95 for a in rep["spike_agreement"] if a is not None)


@pytest.mark.parametrize("readout", ["spikes", "membrane"])
def test_onnxruntime_bit_exact_on_100_real_recordings(frames, trained, readout):
    X, _, _, val = frames
    spec, params = trained
    spec = dataclasses.replace(spec, readout=readout)
    model = quantize(spec, params, calib(frames, 100), calibrate_theta=False)
    proto = ox.to_onnx(model)
    ox.check(proto)
    X100 = np.ascontiguousarray(X[val[:100]].transpose(1, 0, 2))
    r = verify.compare_forward(model, verify.session(proto), X100)
    print("\n" + verify.format_table([("numpy-int vs onnxruntime", r)]))
    assert r["samples"] == 100 and r["steps"] == 30
    assert r["spike_mismatches"] == 0 and r["state_mismatches"] == 0 and r["prediction_mismatches"] == 0, r
    assert r["total_spikes"] > 1000


LEARN = [("readout_delta", {}), ("solsa", {"factorised": 0}), ("solsa", {"factorised": 1})]


@pytest.mark.parametrize("rule,extra", LEARN, ids=[f"{r}{e}" for r, e in LEARN])
@pytest.mark.parametrize("per_input", [False, True], ids=["scalar_a_syn", "per_input_a_syn"])
def test_learning_bit_exact_for_50_steps_on_real_recordings(frames, trained, rule, extra, per_input):
    X, y, _, val = frames
    spec, params = trained
    params = [p.copy() for p in params]
    if per_input:   # a learnable per-input synaptic decay on the last layer (SOLSA's second parameter)
        rng = np.random.default_rng(1)
        params[-1].a_syn = rng.uniform(0.5, 0.95, params[-1].W.shape[0]).astype(np.float32)
    learn = default_learn(rule)
    learn.params.update(extra)
    if rule == "solsa":
        learn.params.update(k_update=5, lr_s=10, lra_s=12)
    else:
        learn.params.update(k_update=10, lr_s=2)
    model = quantize(spec, params, calib(frames, 100), calibrate_theta=False, learn=learn)
    proto = ox.to_onnx(model)
    ox.check(proto)
    two = val[:2]
    stream = np.concatenate([X[two[0]], X[two[1]]])[:50]       # 30 steps of one recording, 20 of the next
    labels = np.concatenate([np.full(30, y[two[0]]), np.full(30, y[two[1]])])[:50]
    r = verify.compare_learning(model, proto, stream, labels)
    assert r["steps"] == 50
    assert r["spike_mismatches"] == 0 and r["value_mismatches"] == 0 and r["rule_saturation_mismatch"] == 0, r
    assert r["weights_changed"] > 0, r


def test_firmware_runtime_matches_numpy_int_on_real_recordings(frames, trained):
    """The third executor (firmware_py.runtime under CPython) on 10 real recordings, every spike/state."""
    X, _, _, val = frames
    spec, params = trained
    model = quantize(spec, params, calib(frames, 100), calibrate_theta=False)
    r = verify.compare_firmware(model, np.ascontiguousarray(X[val[:10]].transpose(1, 0, 2)))
    assert r["spike_mismatches"] == 0 and r["state_mismatches"] == 0 and r["prediction_mismatches"] == 0, r


@pytest.fixture(scope="module")
def gem_int_model(frames):
    """A GEM network in the float engine's own GLM form (edge.rules.gem.to_glm_params, exponential kernel),
    quantised by converters.quantize.quantize_gem; untrained: bit-exactness does not depend on training."""
    from edge.data import NMNIST_SPEC
    from edge.model import NetworkSpec, init_params
    from edge.probabilistic import Kernels
    from edge.rules.gem import to_glm_params
    from converters.quantize import quantize_gem
    spec = NetworkSpec(sizes=(578, 32, 10), binning=NMNIST_SPEC.as_tuple())
    rng = np.random.default_rng(0)
    params = to_glm_params(init_params(spec, rng), Kernels("exponential", 1), rng, -2.0, -1.0)
    options = {"kernel": "exponential", "n_basis": 1, "k_infer": 4, "seed": 3}
    return quantize_gem(spec, params, calib(frames, 50), options, learn=default_learn("gem"))


def test_gem_bit_exact_on_100_real_recordings(frames, gem_int_model):
    X, _, _, val = frames
    proto = ox.to_onnx(gem_int_model)
    ox.check(proto)
    r = verify.compare_forward(gem_int_model, verify.session(proto),
                               np.ascontiguousarray(X[val[:100]].transpose(1, 0, 2)))
    assert r["samples"] == 100 and r["spike_mismatches"] == 0 and r["state_mismatches"] == 0, r
    assert r["prediction_mismatches"] == 0 and r["total_spikes"] > 1000


def test_gem_learning_bit_exact_for_50_steps_on_real_recordings(frames, gem_int_model):
    X, y, _, val = frames
    model = gem_int_model.copy()
    model.learn.params.update(k_update=10)
    stream = np.concatenate([X[val[0]], X[val[1]]])[:50]
    labels = np.concatenate([np.full(30, y[val[0]]), np.full(30, y[val[1]])])[:50]
    r = verify.compare_learning_gem(model, ox.to_onnx(model), stream, labels)
    assert r["spike_mismatches"] == 0 and r["value_mismatches"] == 0 and r["rule_saturation_mismatch"] == 0, r
    assert r["weights_changed"] > 0


@pytest.mark.skipif(__import__("shutil").which("micropython") is None, reason="micropython binary not installed")
def test_micropython_runtime_matches_numpy_int_on_real_recordings(frames, trained):
    X, _, _, val = frames
    spec, params = trained
    model = quantize(spec, params, calib(frames, 100), calibrate_theta=False)
    r = verify.compare_micropython(model, np.ascontiguousarray(X[val[:10]].transpose(1, 0, 2)))
    assert r["spike_mismatches"] == 0 and r["state_mismatches"] == 0, r
