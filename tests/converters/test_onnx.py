"""ONNX export: onnxruntime bit-exact with the numpy simulator, round trip byte-identical, bad input."""
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from converters import onnx_export as ox
from converters import onnx_import as oi
from converters import verify
from converters.intmodel import IntLayer, IntModel
from edge.errors import SnnEdgeError
from tests.converters.helpers import random_input, small_model

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
FORWARD_CASES = [dict(), dict(per_input_last=True), dict(per_input_last=True, kind="integrator"),
                 dict(in_max=255), dict(kind="integrator")]
LEARN_CASES = [dict(rule="readout_delta"), dict(rule="readout_delta", kind="integrator", per_input_last=True),
               dict(rule="solsa", factorised=0), dict(rule="solsa", factorised=1),
               dict(rule="solsa", factorised=0, per_input_last=True),
               dict(rule="solsa", factorised=1, per_input_last=True),
               # §10.8: every layer learns (hidden scalar or per-input decays, one or two hidden layers)
               dict(rule="solsa", factorised=0, learn_all=1),
               dict(rule="solsa", factorised=1, per_input_last=True, per_input_hidden=True, learn_all=1),
               dict(rule="solsa", factorised=0, per_input_hidden=True, learn_all=1, depth=3, in_max=255)]


@pytest.mark.parametrize("case", FORWARD_CASES, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()) or "default")
def test_onnxruntime_forward_is_bit_exact(case):
    rng = np.random.default_rng(10)
    model = small_model(rng, **case)
    proto = ox.to_onnx(model)
    ox.check(proto)
    X = random_input(rng, model, 30, 4)
    r = verify.compare_forward(model, verify.session(proto), X)
    assert r["spike_mismatches"] == 0 and r["state_mismatches"] == 0 and r["prediction_mismatches"] == 0, r
    assert r["spikes_compared"] == 30 * 4 * 12 and r["total_spikes"] > 0


def test_step_graph_runs_alone_and_matches():
    rng = np.random.default_rng(11)
    model = small_model(rng, per_input_last=True)
    proto = ox.to_onnx(model)
    step = ox.step_model(proto, model)
    onnx.checker.check_model(step, full_check=True)
    sess = verify.session(step)
    X = random_input(rng, model, 6, 2)
    from converters import intsim
    ref = intsim.run(model, X)
    states = {n: np.zeros((2, model.layers[int(n[1])].n_in if n.endswith("_x") else model.layers[int(n[1])].n_out),
                          np.int32) for n in ox.state_names(model)}
    for t in range(6):
        out = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"s_in": X[t], **states})))
        states = {n: out[f"{n}_out"] for n in ox.state_names(model)}
        for l in range(2):
            assert (out[f"L{l}_s"] == ref.spikes[l][t]).all()
            assert (states[f"L{l}_V"] == ref.V[l][t]).all()


def test_onnxruntime_matches_forward_golden_vectors():
    G = json.loads((GOLDEN / "forward_2layer.json").read_text())
    layers = [IntLayer(np.array(L["W"], np.int8), np.array(L["a_syn"], np.int32), L["a_mem"], L["theta"],
                       L["shift"], 0, L["kind"]) for L in G["network"]["layers"]]
    model = IntModel(layers, in_max=255)
    out = verify.run_sequence(verify.session(ox.to_onnx(model)), np.array(G["network"]["inputs"], np.uint8)[:, None])
    for t, want in enumerate(G["steps"]):
        for l in range(2):
            assert out[f"L{l}_spikes"][t, 0].tolist() == want["spikes"][l]
            assert out[f"L{l}_V"][t, 0].tolist() == want["V"][l]
            assert out[f"L{l}_I"][t, 0].tolist() == want["I"][l]
        assert out["nsat"][t, 0] == want["nsat"]


@pytest.mark.parametrize("case", LEARN_CASES, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()))
def test_learning_step_is_bit_exact_for_50_steps(case):
    rng = np.random.default_rng(12)
    model = small_model(rng, **case)
    proto = ox.to_onnx(model)
    ox.check(proto)
    X = random_input(rng, model, 50, 1, density=0.4)[:, 0]
    labels = np.full(50, 2)
    labels[:7] = -1
    onnx.checker.check_model(ox.learn_model(proto, model), full_check=True)
    r = verify.compare_learning(model, proto, X, labels)
    assert r["spike_mismatches"] == 0 and r["value_mismatches"] == 0 and r["rule_saturation_mismatch"] == 0, r
    assert r["weights_changed"] > 0, "50 steps should move some weights"


@pytest.mark.parametrize("case", FORWARD_CASES[:2] + LEARN_CASES, ids=str)
def test_export_import_export_is_byte_identical(case, tmp_path):
    model = small_model(np.random.default_rng(13), **case)
    model.meta = {"note": "round trip", "n": 3}
    model.binning = (34, 34, 10000, 30, 2, (0, 0, 10, 4), 0)     # 2 x 5 x 2 = the model's 20 inputs
    first = ox.export(model, tmp_path / "a.onnx")
    again = oi.load_onnx(tmp_path / "a.onnx")
    second = ox.export(again, tmp_path / "b.onnx")
    assert first == second
    assert again.binning == model.binning and again.learn.params == model.learn.params
    assert all((a.W == b.W).all() and (a.a_syn == b.a_syn).all() for a, b in zip(again.layers, model.layers))


def test_truncated_and_garbage_files_are_refused(tmp_path):
    data = ox.export(small_model(np.random.default_rng(14)), tmp_path / "m.onnx")
    (tmp_path / "cut.onnx").write_bytes(data[: len(data) // 2])
    with pytest.raises(SnnEdgeError, match=r"cut.onnx: not a readable ONNX file|cut.onnx: ONNX file has no graph"):
        oi.load_onnx(tmp_path / "cut.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"\xff\xfe not onnx at all")
    with pytest.raises(SnnEdgeError, match="junk.onnx"):
        oi.load_onnx(tmp_path / "junk.onnx")
    with pytest.raises(SnnEdgeError, match="missing.onnx: cannot read"):
        oi.load_onnx(tmp_path / "missing.onnx")


def test_op_outside_the_subset_is_named():
    proto = ox.to_onnx(small_model(np.random.default_rng(15)))
    proto.graph.node.append(helper.make_node("Softmax", ["scores"], ["soft"], name="extra_softmax"))
    with pytest.raises(SnnEdgeError, match=r"node extra_softmax in graph: op Softmax is outside the snn-edge"):
        oi.from_proto(proto, "m.onnx", full_check=False)


def test_wrong_initializer_dtype_is_named():
    proto = ox.to_onnx(small_model(np.random.default_rng(16)))
    inits = proto.graph.initializer
    for i, t in enumerate(inits):
        if t.name == "L1_W":
            w = numpy_helper.to_array(t).astype(np.float32)
            inits[i].CopyFrom(numpy_helper.from_array(w, "L1_W"))
    with pytest.raises(SnnEdgeError, match=r"initializer L1_W: dtype float32, expected int8"):
        oi.from_proto(proto, "m.onnx", full_check=False)


def test_weights_overflowing_the_declared_width_are_refused(tmp_path):
    W = np.full((5000, 2), 127, np.int8)
    model = IntModel([IntLayer(W, np.array(3000, np.int32), 3000, 100, 10, 0)], in_max=255)
    with pytest.raises(SnnEdgeError, match="weights overflow the declared width"):
        ox.export(model, tmp_path / "big.onnx")
    assert not (tmp_path / "big.onnx").exists()


@pytest.mark.parametrize("case", FORWARD_CASES, ids=str)
def test_firmware_runtime_matches_numpy_int(case):
    rng = np.random.default_rng(17)
    model = small_model(rng, **case)
    r = verify.compare_firmware(model, random_input(rng, model, 20, 3))
    assert r["spike_mismatches"] == 0 and r["state_mismatches"] == 0 and r["prediction_mismatches"] == 0, r


@pytest.mark.parametrize("case", LEARN_CASES, ids=str)
def test_firmware_learning_rules_match_numpy_int_for_50_steps(case):
    """firmware_py.learning (written from docs/NUMERICS.md by another hand) agrees with intsim bit for bit."""
    rng = np.random.default_rng(12)
    model = small_model(rng, **case)
    X = random_input(rng, model, 50, 1, density=0.4)[:, 0]
    labels = np.full(50, 2)
    labels[:7] = -1
    r = verify.compare_firmware_learning(model, X, labels)
    assert r["spike_mismatches"] == 0 and r["value_mismatches"] == 0, r
    assert r["weights_changed"] > 0


def test_solsa_reset_factor_clamp_is_bit_exact_in_every_executor(monkeypatch):
    """§10.5b with sg_shift = 0 and theta 5000 > 4096: 1 - theta h can go below 0 and is clamped to 0; the
    per-step traces e of intsim, onnxruntime and firmware_py.learning still agree bit for bit."""
    from converters import intsim
    rng = np.random.default_rng(12)
    model = small_model(rng, rule="solsa", factorised=0, sg_shift=0)
    X = random_input(rng, model, 50, 1, density=0.4)[:, 0]
    labels = np.full(50, 2)
    labels[:7] = -1
    factors = []
    real = intsim.reset_factor
    monkeypatch.setattr(intsim, "reset_factor", lambda h, th, sg: factors.append(real(h, th, sg)) or factors[-1])
    r = verify.compare_learning(model, ox.to_onnx(model), X, labels)
    assert r["spike_mismatches"] == 0 and r["value_mismatches"] == 0 and r["rule_saturation_mismatch"] == 0, r
    f = np.concatenate(factors)
    assert (f == 0).any() and ((f > 0) & (f < 4096)).any(), "the case must reach the clamp and partial factors"
    r = verify.compare_firmware_learning(model, X, labels)
    assert r["spike_mismatches"] == 0 and r["value_mismatches"] == 0, r


def test_firmware_runtime_matches_forward_golden_vectors():
    G = json.loads((GOLDEN / "forward_2layer.json").read_text())
    layers = [IntLayer(np.array(L["W"], np.int8), np.array(L["a_syn"], np.int32), L["a_mem"], L["theta"],
                       L["shift"], 0, L["kind"]) for L in G["network"]["layers"]]
    net = verify.firmware_network(IntModel(layers, in_max=255))
    net.reset()
    for t, want in enumerate(G["steps"]):
        s_in = G["network"]["inputs"][t]
        net.step_frame(s_in)
        for l, st in enumerate(net.states):
            assert sorted(st.spiking()) == [j for j, v in enumerate(want["spikes"][l]) if v]
            assert list(st.V) == want["V"][l] and list(st.I) == want["I"][l]
        assert net.nsat == want["nsat"]


# ---- probabilistic (GEM) models, NUMERICS.md §11 ----

def test_gem_forward_is_bit_exact_with_in_graph_lane_seeding():
    from tests.converters.helpers import gem_model
    rng = np.random.default_rng(30)
    model = gem_model(rng)
    proto = ox.to_onnx(model)
    ox.check(proto)
    X = random_input(rng, model, 30, 3, density=0.4)
    r = verify.compare_forward(model, verify.session(proto), X)
    assert r["spike_mismatches"] == 0 and r["state_mismatches"] == 0 and r["prediction_mismatches"] == 0, r
    assert r["spikes_compared"] == 30 * 3 * 3 * 12 and r["total_spikes"] > 0


def test_gem_learning_is_bit_exact_for_50_steps():
    from tests.converters.helpers import gem_model
    rng = np.random.default_rng(31)
    model = gem_model(rng)
    proto = ox.to_onnx(model)
    onnx.checker.check_model(ox.learn_model(proto, model), full_check=True)
    X = random_input(rng, model, 50, 1, density=0.4)[:, 0]
    labels = np.full(50, 1)
    labels[:6] = -1
    r = verify.compare_learning_gem(model, proto, X, labels)
    assert r["spike_mismatches"] == 0 and r["value_mismatches"] == 0 and r["rule_saturation_mismatch"] == 0, r
    assert r["weights_changed"] > 0


def test_gem_export_import_export_is_byte_identical(tmp_path):
    from tests.converters.helpers import gem_model
    model = gem_model(np.random.default_rng(32))
    first = ox.export(model, tmp_path / "g.onnx")
    back = oi.load_onnx(tmp_path / "g.onnx")
    assert back.compartments == model.compartments and back.fire_seed == model.fire_seed
    assert all((a.bias == b.bias).all() and (a.w_fb == b.w_fb).all() for a, b in zip(back.layers, model.layers))
    assert ox.export(back, tmp_path / "g2.onnx") == first


def test_gem_tampered_sigmoid_table_is_named():
    from tests.converters.helpers import gem_model
    proto = ox.to_onnx(gem_model(np.random.default_rng(33)))
    for t in proto.graph.initializer:
        if t.name == "sigmoid_lut":
            table = numpy_helper.to_array(t).copy()
            table[200] += 1
            t.CopyFrom(numpy_helper.from_array(table, "sigmoid_lut"))
    with pytest.raises(SnnEdgeError, match=r"initializer sigmoid_lut\[200\] = \d+, expected \d+"):
        oi.from_proto(proto, "g.onnx")


def test_imported_model_whose_weights_overflow_the_declared_width_is_refused():
    """A file edited to a state shift that lets the spike current pass 2**30 is refused on import."""
    proto = ox.to_onnx(small_model(np.random.default_rng(18), in_max=255))
    for t in proto.graph.initializer:
        if t.name == "L0_shift":
            t.CopyFrom(numpy_helper.from_array(np.array(20, np.int32), "L0_shift"))
    with pytest.raises(SnnEdgeError, match=r"m.onnx: layer 0 W: weights overflow the declared width.*expected < 2\*\*30"):
        oi.from_proto(proto, "m.onnx")


def test_file_declaring_other_widths_is_refused():
    proto = ox.to_onnx(small_model(np.random.default_rng(19)))
    for p in proto.metadata_props:
        if p.key == "snn_edge.widths":
            p.value = p.value.replace('"state_bits":20', '"state_bits":24')
    with pytest.raises(SnnEdgeError, match=r"snn_edge.widths .*'state_bits': 24.*expected .*'state_bits': 20"):
        oi.from_proto(proto, "m.onnx")


@pytest.mark.skipif(__import__("shutil").which("micropython") is None, reason="micropython binary not installed")
@pytest.mark.parametrize("case", [dict(), dict(per_input_last=True, kind="integrator", in_max=255)], ids=str)
def test_micropython_runtime_matches_numpy_int(case):
    """The fourth executor: firmware_py.runtime under the real MicroPython unix port."""
    rng = np.random.default_rng(40)
    model = small_model(rng, **case)
    r = verify.compare_micropython(model, random_input(rng, model, 20, 3))
    assert r["spikes_compared"] == 20 * 3 * 12
    assert r["spike_mismatches"] == 0 and r["state_mismatches"] == 0, r


@pytest.mark.parametrize("rule", ["none", "readout_delta", "solsa", "gem"])
def test_onnxruntime_sessions_print_no_warning(rule, capfd):
    """A plain onnxruntime session (default logging) on the file, its step graph and its learning graph: no
    "Removing initializer" (nor any other) warning; the constants the inference graph does not compute with
    are passed through as outputs, unchanged."""
    import onnxruntime as ort
    from converters.intmodel import default_learn
    from tests.converters.helpers import gem_model
    rng = np.random.default_rng(50)
    model = gem_model(rng) if rule == "gem" else small_model(rng, rule=rule)
    model.learn = model.learn if rule == "gem" else default_learn(rule, 1)
    proto = ox.to_onnx(model)
    graphs = {"file": proto, "learn": ox.learn_model(proto, model) if rule != "none" else None,
              "step": ox.step_model(proto, model) if rule != "gem" else None}
    capfd.readouterr()
    sessions = {name: ort.InferenceSession(g.SerializeToString(), providers=["CPUExecutionProvider"])
                for name, g in graphs.items() if g is not None}
    err = capfd.readouterr().err
    assert "Removing initializer" not in err and "[W:onnxruntime" not in err, err
    read = ox.names_read(proto.graph)
    outputs = {o.name for o in proto.graph.output}
    assert all(t.name in read or t.name in outputs for t in proto.graph.initializer)
    carried = [t for t in proto.graph.initializer if t.name not in read]
    assert rule == "none" or any(t.name.startswith("learn_") for t in carried)
    got = verify.run_sequence(sessions["file"], random_input(rng, model, 3, 2))
    for t in carried:
        np.testing.assert_array_equal(got[t.name], numpy_helper.to_array(t), err_msg=t.name)
