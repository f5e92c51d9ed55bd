"""NIR both ways against the real snnTorch 1.0 and Norse 1.1 (the `interop` extra): our file loads in their
importers as they are, and what snnTorch exports imports through `snn-edge import` and the model commands."""
import json

import numpy as np
import pytest

from converters.nir_io import NIR_DT, export_nir, nir_float_network
from host_tools.cli import main
from tests.converters.helpers import random_input, small_model

REASON = "needs the interop extra (pip install -e '.[interop]': torch 2.13.0 CPU, snntorch, norse)"
torch = pytest.importorskip("torch", reason=REASON)
snn = pytest.importorskip("snntorch", reason=REASON)
norse_torch = pytest.importorskip("norse.torch", reason=REASON)
nir = pytest.importorskip("nir", reason=REASON)


def _float_spikes(spec, params, X):
    """Output spikes [T, B, C] of our float engine (edge.neurons) on X [T, B, N]."""
    from edge.neurons import cuba_lif_step, initial_state
    states = [initial_state(p, X.shape[1], np.float64) for p in params]
    out = []
    for x_t in X.astype(np.float64):
        h = x_t
        for i, p in enumerate(params):
            h, states[i] = cuba_lif_step(h, states[i], p.astype(np.float64))
        out.append(h)
    return np.stack(out)


def _run_torch(step, X):
    x = torch.from_numpy(X.astype(np.float32))
    with torch.no_grad():
        return np.stack([step(x[t]).numpy() for t in range(x.shape[0])])


def test_our_file_loads_in_snntorch_with_our_constants(tmp_path):
    model = small_model(np.random.default_rng(30))
    export_nir(model, tmp_path / "m.nir")
    from snntorch.import_nir import import_from_nir
    net = import_from_nir(nir.read(tmp_path / "m.nir"))   # asserts r == tau_mem / 1e-4 inside: no edits
    lifs = [m for m in net.modules() if isinstance(m, snn.Synaptic)]
    fcs = [m for m in net.modules() if isinstance(m, torch.nn.Linear)]
    assert len(lifs) == len(fcs) == 2
    for L, lif, fc in zip(model.layers, lifs, fcs):
        np.testing.assert_allclose(fc.weight.detach().numpy(), (L.W * 2.0 ** -L.w_exp).T, rtol=1e-6)
        np.testing.assert_allclose(float(lif.alpha), L.a_syn / 4096, rtol=1e-5)
        np.testing.assert_allclose(float(lif.beta), L.a_mem / 4096, rtol=1e-5)
        np.testing.assert_allclose(float(lif.threshold), L.theta * 2.0 ** -(L.w_exp + L.shift), rtol=1e-5)


def test_our_file_in_norse_spikes_as_we_do(tmp_path):
    """Norse's from_nir with its documented dt and reset arguments: the same output spikes, step by step."""
    from norse.torch.functional.reset import reset_subtract
    model = small_model(np.random.default_rng(31))
    export_nir(model, tmp_path / "m.nir")
    spec, params, _ = nir_float_network(tmp_path / "m.nir")
    X = random_input(np.random.default_rng(32), model, 30, 16)
    ours = _float_spikes(spec, params, X)
    net = norse_torch.from_nir(nir.read(tmp_path / "m.nir"), dt=NIR_DT, reset_method=reset_subtract)
    state = [None]

    def step(x):
        out, state[0] = net(x, state[0])
        return out
    theirs = _run_torch(step, X)
    assert ours.sum() > 20, "the test network must spike to compare anything"
    np.testing.assert_array_equal(theirs, ours)


def _snntorch_net(neuron: str, rng, sizes=(578, 16, 10)):
    layers = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        fc = torch.nn.Linear(n_in, n_out, bias=False)
        with torch.no_grad():
            fc.weight.copy_(torch.from_numpy(rng.uniform(-0.3, 0.5, (n_out, n_in)).astype(np.float32)))
        common = dict(beta=torch.full((n_out,), 0.8), threshold=torch.full((n_out,), 1.5), init_hidden=True,
                      reset_delay=False)
        lif = (snn.Synaptic(alpha=torch.full((n_out,), 0.6), **common) if neuron == "synaptic"
               else snn.Leaky(**common))
        layers += [fc, lif]
    return torch.nn.Sequential(*layers)


@pytest.mark.parametrize("neuron", ["synaptic", "leaky"])
def test_snntorch_export_imports_with_its_constants(neuron, tmp_path, capsys):
    from edge.model import load_checkpoint
    from snntorch.export_nir import export_to_nir
    net = _snntorch_net(neuron, np.random.default_rng(33))
    nir.write(tmp_path / "s.nir", export_to_nir(net, torch.zeros(1, 578), ignore_dims=[0]))
    assert main(["import", str(tmp_path / "s.nir"), "-o", str(tmp_path / "s.ckpt")]) == 0
    assert "wrote" in capsys.readouterr().out
    spec, params, _ = load_checkpoint(tmp_path / "s.ckpt")
    assert spec.sizes == (578, 16, 10) and spec.readout == "spikes" and spec.binning is not None
    fcs = [m for m in net if isinstance(m, torch.nn.Linear)]
    for p, fc in zip(params, fcs):
        np.testing.assert_allclose(p.W, fc.weight.detach().numpy().T, rtol=1e-6)
        np.testing.assert_allclose([p.a_syn, p.a_mem, p.theta], [0.6 if neuron == "synaptic" else 0.0, 0.8, 1.5],
                                   rtol=1e-5, atol=1e-6)


def test_snntorch_file_goes_through_every_model_command(nmnist_small, tmp_path, capsys):
    """eval (float), quantize, export (ONNX, blob, NIR) and eval of the results take snnTorch's file as is."""
    from snntorch.export_nir import export_to_nir
    net = _snntorch_net("synaptic", np.random.default_rng(34))
    f = str(tmp_path / "s.nir")
    nir.write(f, export_to_nir(net, torch.zeros(1, 578), ignore_dims=[0]))
    data = str(nmnist_small)
    capsys.readouterr()
    assert main(["eval", f, "--data", data, "--limit", "20", "--json", "--no-progress"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["n"] == 20 and r["executor"] == "float"
    assert main(["quantize", f, "-o", str(tmp_path / "s.npz"), "--data", data, "--limit", "40", "--calib", "20",
                 "--no-progress"]) == 0
    assert "int8 accuracy" in capsys.readouterr().out
    assert main(["export", f, "-o", str(tmp_path / "s.onnx"), "--data", data, "--limit", "40", "--calib", "20",
                 "--blob", str(tmp_path / "s.blob"), "--nir", str(tmp_path / "again.nir"), "--no-progress"]) == 0
    for name in ("s.onnx", "s.blob", "again.nir"):
        assert (tmp_path / name).exists()
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "s.onnx"), "--data", data, "--limit", "20", "--json", "--no-progress"]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == 20
    # a foreign file carries no integer model: the int executors say what to do instead
    assert main(["eval", f, "--data", data, "--limit", "5", "--executor", "intsim", "--no-progress"]) == 2
    assert "quantize it first" in capsys.readouterr().err
