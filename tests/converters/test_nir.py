"""NIR export/import: a round trip keeps the integer model exactly and the float weights/time constants."""
import numpy as np
import pytest

from converters import intsim
from converters.nir_io import export_nir, import_nir
from edge.errors import SnnEdgeError
from tests.converters.helpers import random_input, small_model

CASES = [dict(), dict(per_input_last=True), dict(kind="integrator"), dict(kind="integrator", per_input_last=True),
         dict(rule="solsa", factorised=1)]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_nir_round_trip_keeps_the_integer_model(case, tmp_path):
    model = small_model(np.random.default_rng(20), **case)
    model.binning = (34, 34, 10000, 30, 2, (0, 0, 10, 4), 0)     # 2 x 5 x 2 = the model's 20 inputs
    model.meta = {"why": "nir test"}
    export_nir(model, tmp_path / "m.nir")
    spec, params, back = import_nir(tmp_path / "m.nir")
    assert back is not None
    for a, b in zip(model.layers, back.layers):
        assert (a.W == b.W).all() and (a.a_syn == b.a_syn).all()
        assert (a.a_mem, a.theta, a.shift, a.w_exp, a.kind) == (b.a_mem, b.theta, b.shift, b.w_exp, b.kind)
    assert back.learn.params == model.learn.params and back.binning == model.binning and back.meta == model.meta
    # float side: weights, decays (time constants) and thresholds as the integer model means them
    for L, p in zip(model.layers, params):
        np.testing.assert_allclose(p.W, L.W * 2.0 ** -L.w_exp, rtol=1e-6)
        np.testing.assert_allclose(p.a_syn, L.a_syn / 4096, rtol=1e-6)
        np.testing.assert_allclose(p.a_mem, L.a_mem / 4096, rtol=1e-6)
        if L.kind == "lif":
            np.testing.assert_allclose(p.theta, L.theta * 2.0 ** -(L.w_exp + L.shift), rtol=1e-6)
    assert spec.readout == model.readout
    X = random_input(np.random.default_rng(21), model, 10, 2)
    assert (intsim.run(model, X).scores == intsim.run(back, X).scores).all()


def test_foreign_nir_without_our_metadata_imports_as_float(tmp_path):
    import nir
    W = np.arange(6, dtype=np.float64).reshape(2, 3) / 10   # NIR: [N_out, N_in]
    dt = 1e-3
    tau_syn, tau_mem = dt / (1 - 0.5), dt / (1 - 0.8)
    g = nir.NIRGraph(nodes={
        "input": nir.Input({"input": np.array([3])}), "fc": nir.Linear(W),
        "lif": nir.CubaLIF(tau_syn=np.full(2, tau_syn), tau_mem=np.full(2, tau_mem), r=np.full(2, tau_mem / dt),
                           v_leak=np.zeros(2), v_threshold=np.full(2, 1.5), v_reset=np.zeros(2),
                           w_in=np.full(2, tau_syn / dt)),
        "output": nir.Output({"output": np.array([2])})},
        edges=[("input", "fc"), ("fc", "lif"), ("lif", "output")])
    nir.write(tmp_path / "f.nir", g)
    spec, params, int_model = import_nir(tmp_path / "f.nir", dt=dt)
    assert int_model is None and spec.sizes == (3, 2)
    np.testing.assert_allclose(params[0].W, W.T, rtol=1e-6)
    np.testing.assert_allclose([params[0].a_syn, params[0].a_mem, params[0].theta], [0.5, 0.8, 1.5], rtol=1e-6)


def test_unsupported_nir_node_is_named(tmp_path):
    import nir
    g = nir.NIRGraph(nodes={
        "input": nir.Input({"input": np.array([4])}),
        "conv": nir.Conv1d(input_shape=4, weight=np.ones((1, 1, 2)), stride=1, padding=0, dilation=1, groups=1,
                           bias=np.zeros(1)),
        "output": nir.Output({"output": np.array([3])})},
        edges=[("input", "conv"), ("conv", "output")], type_check=False)
    nir.write(tmp_path / "c.nir", g)
    with pytest.raises(SnnEdgeError, match=r"node 'conv' is a NIR Conv1d; expected one of"):
        import_nir(tmp_path / "c.nir")


def test_non_uniform_threshold_is_refused(tmp_path):
    model = small_model(np.random.default_rng(22))
    export_nir(model, tmp_path / "m.nir")
    import nir
    g = nir.read(tmp_path / "m.nir")
    g.nodes["L1_lif"].v_threshold = np.array([1.0, 2.0, 1.0, 1.0])
    nir.write(tmp_path / "m2.nir", g)
    with pytest.raises(SnnEdgeError, match=r"node 'L1_lif' v_threshold: expected one value for the whole layer"):
        import_nir(tmp_path / "m2.nir")


def test_not_a_nir_file(tmp_path):
    (tmp_path / "x.nir").write_bytes(b"hello")
    with pytest.raises(SnnEdgeError, match="x.nir: not a readable NIR file"):
        import_nir(tmp_path / "x.nir")


def test_probabilistic_model_is_refused_by_nir_export(tmp_path):
    from tests.converters.helpers import gem_model
    with pytest.raises(SnnEdgeError, match="NIR has no probabilistic"):
        export_nir(gem_model(np.random.default_rng(23)), tmp_path / "g.nir")
    assert not (tmp_path / "g.nir").exists()


def _foreign_graph(neuron_node, n_in=3, n_out=2):
    import nir
    W = np.arange(n_in * n_out, dtype=np.float64).reshape(n_out, n_in) / 10
    return nir.NIRGraph(nodes={"input": nir.Input({"input": np.array([n_in])}), "fc": nir.Linear(W),
                               "lif": neuron_node, "output": nir.Output({"output": np.array([n_out])})},
                        edges=[("input", "fc"), ("fc", "lif"), ("lif", "output")])


def test_linear_then_lif_imports_as_a_synapse_that_does_not_remember(tmp_path):
    """snnTorch's Leaky exports as Linear -> LIF at dt 1e-4: our CubaLIF with a_syn = 0, read at that dt."""
    import nir
    tau = 1e-4 / (1 - 0.75)
    g = _foreign_graph(nir.LIF(tau=np.full(2, tau), r=np.full(2, tau / 1e-4), v_leak=np.zeros(2),
                               v_threshold=np.full(2, 2.0), v_reset=np.zeros(2)))
    nir.write(tmp_path / "leaky.nir", g)
    spec, params, int_model = import_nir(tmp_path / "leaky.nir")
    assert int_model is None and spec.sizes == (3, 2)
    np.testing.assert_allclose([params[0].a_syn, params[0].a_mem, params[0].theta], [0.0, 0.75, 2.0], atol=1e-6)
    np.testing.assert_allclose(params[0].W, np.arange(6).reshape(2, 3).T / 10, rtol=1e-6)


def test_time_constants_for_another_dt_are_refused_naming_dt(tmp_path):
    import nir
    dt = 1e-3   # a file written at Norse's default dt; read at 10 ms, tau_syn = 2 ms would decay below 0
    g = _foreign_graph(nir.CubaLIF(tau_syn=np.full(2, 2 * dt), tau_mem=np.full(2, 5 * dt), r=np.full(2, 5.0),
                                   v_leak=np.zeros(2), v_threshold=np.ones(2), v_reset=np.zeros(2),
                                   w_in=np.full(2, 2.0)))
    nir.write(tmp_path / "f.nir", g)
    with pytest.raises(SnnEdgeError, match=r"node 'lif' tau_syn=0.002 s gives a decay per step of -4 at dt=0.01 s"
                                           r".*written for another dt; pass it \(snn-edge import --nir-dt"):
        import_nir(tmp_path / "f.nir", dt=1e-2)
    spec, params, _ = import_nir(tmp_path / "f.nir", dt=dt)
    np.testing.assert_allclose([params[0].a_syn, params[0].a_mem], [0.5, 0.8], rtol=1e-6)


def test_our_file_is_written_at_snntorchs_dt(tmp_path):
    """snnTorch 1.0 reads every file at dt = 1e-4 and asserts r == tau_mem / 1e-4."""
    import nir
    from converters.nir_io import NIR_DT
    model = small_model(np.random.default_rng(24))
    export_nir(model, tmp_path / "m.nir")
    lif = nir.read(tmp_path / "m.nir").nodes["L0_lif"]
    assert NIR_DT == 1e-4
    np.testing.assert_allclose(lif.r, lif.tau_mem / 1e-4)
    np.testing.assert_allclose(1 - 1e-4 / lif.tau_mem, model.layers[0].a_mem / 4096)
    np.testing.assert_allclose(lif.w_in * 1e-4 / lif.tau_syn, 1.0)
