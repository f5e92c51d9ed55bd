"""NIR interchange with the standard tools, measured: prediction agreement on real N-MNIST recordings.

Directions and peers (every number is the fraction of the recordings on which both sides predict the same
class, the class being the output neuron with the most spikes, the first on ties as both numpy and torch do):

  export_to_snntorch_agree   our NIR file -> snntorch.import_nir.import_from_nir(nir.read(f)), as is,
                             vs our integer model (what snn-edge deploys; the file carries it exactly)
  export_to_norse_agree      our NIR file -> norse.torch.from_nir(g, dt=1e-4, reset_method=reset_subtract)
                             (the documented arguments of Norse's importer: the file's dt and our reset)
  ..._vs_float_agree         the same peer vs our float engine on the float network the file describes
  snntorch_to_import_agree   a network trained in snnTorch (Linear + Synaptic; and Linear + Leaky, key
                             ..._leaky_...) -> snntorch.export_nir.export_to_nir -> nir.write -> snn-edge import
                             (converters.nir_io) run on our float engine, vs snnTorch running the same network

Diagnostics beside them. NIR 1.0 has no subtractive reset (CubaLIF resets to v_reset) and snnTorch's importer
hard-codes reset_mechanism="zero"; export_to_snntorch_subtract_reset_agree rebuilds the imported neurons with
reset_mechanism="subtract", reset_delay=False. That still differs from our neuron: snnTorch computes the
reset of step t from the membrane left after step t-1's reset, so after a membrane above 2 theta (still above
theta once reset) the next spike needs more than 2 theta, where ours needs theta.
snntorch_rule_model_agree (and snntorch_*_to_import_rule_model_agree) run that rule (snntorch_rule_predictions,
numpy) on the same float network (the imported one) against snnTorch itself: 1.0 means the gap is the
neuron's rule, not the file. export_to_norse_default_agree calls
from_nir(g) with no arguments (dt=1e-3, reset to v_reset).

Networks: 578-128-10 (N-MNIST 2x downsampled, 30 steps of 10 ms). Ours: trained by our BPTT engine for
--epochs on the stratified 80/20 split of ../shared/data/nmnist-small, quantised (calibration on the training
split). snnTorch's: trained by snnTorch (ce_count_loss, Adam) for --peer-epochs from the same initial weights.
The recordings compared are the first --n of the validation split. Needs `pip install -e .[interop]`.
Prints ONE JSON line.

    python benchmarks/interop.py [--n 100] [--epochs 8] [--peer-epochs 6]
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = (REPO / ".." / "shared" / "data" / "nmnist-small" / "Train").resolve()
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

SETTINGS = {"hidden": 128, "a_syn": 0.5, "a_mem": 0.8, "theta": 1.0, "lr": 2e-3, "batch": 32, "seed": 0}


def load_split(data_dir: str):
    from edge.data import load_frames, split_stratified
    from host_tools.cmd_convert import default_binning
    from firmware_py.binning import BinSpec

    binning = default_binning()
    X, y, _ = load_frames(data_dir, BinSpec(*binning), progress=False)
    tr, va = split_stratified(y, 0.2, 0)
    return binning, X[tr], y[tr], X[va], y[va]


def time_major(X: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(X.transpose(1, 0, 2))


# ---- our side --------------------------------------------------------------------------------------

def train_ours(binning, Xtr, ytr, Xva, yva, epochs: int, a_syn: float):
    from edge.model import NetworkSpec, init_params
    from edge.rules import make_rule
    from edge.train import FitConfig, fit

    spec = NetworkSpec(sizes=(Xtr.shape[2], SETTINGS["hidden"], 10), readout="spikes", a_syn=a_syn,
                       a_mem=SETTINGS["a_mem"], theta=SETTINGS["theta"], binning=binning)
    params = init_params(spec, np.random.default_rng(SETTINGS["seed"]))
    rule = make_rule("bptt")
    result = fit(rule, spec, params, (Xtr, ytr), (Xva, yva),
                 FitConfig(epochs=epochs, batch_size=SETTINGS["batch"], seed=SETTINGS["seed"], progress=False))
    return spec, result.params


def quantize_ours(spec, params, Xtr):
    from converters.quantize import quantize
    return quantize(spec, params, time_major(Xtr[:200]))


def float_predictions(spec, params, X) -> np.ndarray:
    """Our float engine (the BPTT rule's forward pass) on samples X [S, T, N]."""
    from edge.rules import make_rule
    from edge.train import predict_logits

    rule = make_rule("bptt")
    rule.init(spec, params, np.random.default_rng(0))
    return predict_logits(rule, params, X).argmax(axis=1)


def int_predictions(model, X) -> np.ndarray:
    from converters import intsim
    return np.asarray(intsim.run(model, time_major(X)).predictions)


# ---- peers -----------------------------------------------------------------------------------------

def torch_counts(step, X) -> np.ndarray:
    """Output spike counts [S, C] of a stateful torch network called once per time step (`step(x_t)`)."""
    import torch

    x = torch.from_numpy(time_major(X).astype(np.float32))
    with torch.no_grad():
        counts = sum(step(x[t]) for t in range(x.shape[0]))
    return counts.numpy()


def snntorch_predictions(net, X) -> np.ndarray:
    """An snnTorch network with init_hidden state (as import_from_nir builds it), fresh state first."""
    import snntorch.utils

    snntorch.utils.reset(net)

    def step(x):
        out = net(x)
        return out[0] if isinstance(out, tuple) else out
    return torch_counts(step, X).argmax(axis=1)


def norse_predictions(net, X) -> np.ndarray:
    state = [None]

    def step(x):
        out, state[0] = net(x, state[0])
        return out
    return torch_counts(step, X).argmax(axis=1)


def with_subtractive_reset(net):
    """Diagnostic only: snnTorch's imported Synaptic neurons rebuilt with reset_mechanism='subtract'."""
    import snntorch as snn

    for name, mod in list(net.named_children()):
        if isinstance(mod, snn.Synaptic):
            setattr(net, name, snn.Synaptic(alpha=mod.alpha.clone(), beta=mod.beta.clone(),
                                            threshold=mod.threshold.clone(), init_hidden=True,
                                            reset_mechanism="subtract", reset_delay=False))
    return net


def snntorch_network(sizes, neuron: str, params0):
    """Linear + Synaptic (or Leaky) layers in snnTorch, per-neuron constants (export_to_nir needs their
    sizes), reset by subtraction right after the spike (reset_delay=False)."""
    import snntorch as snn
    import torch
    from snntorch import surrogate

    layers = []
    for l, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        fc = torch.nn.Linear(n_in, n_out, bias=False)
        with torch.no_grad():
            fc.weight.copy_(torch.from_numpy(params0[l].W.T.copy()))
        common = dict(beta=torch.full((n_out,), SETTINGS["a_mem"]), threshold=torch.full((n_out,), SETTINGS["theta"]),
                      spike_grad=surrogate.fast_sigmoid(slope=10.0), init_hidden=True, reset_delay=False)
        if neuron == "synaptic":
            lif = snn.Synaptic(alpha=torch.full((n_out,), SETTINGS["a_syn"]), **common)
        else:
            lif = snn.Leaky(**common)
        layers += [fc, lif]
    return torch.nn.Sequential(*layers)


def train_snntorch(net, Xtr, ytr, epochs: int) -> None:
    import snntorch.functional as SF
    import snntorch.utils
    import torch

    opt = torch.optim.Adam(net.parameters(), lr=SETTINGS["lr"])
    loss_fn = SF.ce_count_loss()
    rng = np.random.default_rng(SETTINGS["seed"])
    for _ in range(epochs):
        order = rng.permutation(len(Xtr))
        for b in range(0, len(order), SETTINGS["batch"]):
            idx = order[b:b + SETTINGS["batch"]]
            x = torch.from_numpy(time_major(Xtr[idx]).astype(np.float32))
            snntorch.utils.reset(net)
            spikes = torch.stack([net(x[t]) for t in range(x.shape[0])])
            loss = loss_fn(spikes, torch.from_numpy(ytr[idx]).long())
            opt.zero_grad()
            loss.backward()
            opt.step()


def snntorch_rule_predictions(params, X) -> np.ndarray:
    """Diagnostic: snnTorch 1.0's Synaptic/Leaky update with reset_mechanism="subtract", reset_delay=False
    (snntorch/_neurons/synaptic.py forward) in numpy: the reset term r comes from the membrane kept after the
    previous step's reset, and the spike test subtracts it first, so s = [V > (1 + r) theta], V -= theta s."""
    h = time_major(X).astype(np.float64)
    for p in params:
        W, th = p.W.astype(np.float64), float(p.theta)
        cur = np.zeros((h.shape[1], W.shape[1]))
        mem = np.zeros_like(cur)
        out = []
        for x_t in h:
            carried = mem > th
            cur = float(p.a_syn) * cur + x_t @ W
            v = float(p.a_mem) * mem + cur
            spikes = v > th * (1 + carried)
            mem = v - th * spikes
            out.append(spikes.astype(np.float64))
        h = np.stack(out)
    return h.sum(axis=0).argmax(axis=1)


def agree(a, b) -> float:
    return round(float(np.mean(np.asarray(a) == np.asarray(b))), 4)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--n", type=int, default=100, help="validation recordings compared")
    ap.add_argument("--epochs", type=int, default=8, help="epochs of our training")
    ap.add_argument("--peer-epochs", type=int, default=6, help="epochs of snnTorch's training")
    args = ap.parse_args(argv)
    if not Path(args.data).is_dir():
        print(json.dumps({"benchmark": "interop", "error": f"data not found: {args.data}"}))
        return 1
    missing = [m for m in ("torch", "snntorch", "norse") if importlib.util.find_spec(m) is None]
    if missing:
        print(json.dumps({"benchmark": "interop", "error": f"not installed: {', '.join(missing)} "
                          "(pip install -e '.[interop]')"}))
        return 1

    import nir
    import norse.torch
    import snntorch
    import torch
    from norse.torch.functional.reset import reset_subtract
    from snntorch.export_nir import export_to_nir
    from snntorch.import_nir import import_from_nir

    from converters.nir_io import NIR_DT, export_nir, nir_float_network

    torch.set_num_threads(1)
    torch.manual_seed(SETTINGS["seed"])
    t0 = time.time()
    binning, Xtr, ytr, Xva, yva = load_split(args.data)
    Xc, yc = Xva[: args.n], yva[: args.n]
    out = {"benchmark": "interop", "recordings": int(len(Xc)), "data": str(args.data)}
    tmp = tempfile.mkdtemp(prefix="interop-")

    # our export -> peers
    spec, params = train_ours(binning, Xtr, ytr, Xva, yva, args.epochs, SETTINGS["a_syn"])
    model = quantize_ours(spec, params, Xtr)
    ours = int_predictions(model, Xc)
    path = os.path.join(tmp, "ours.nir")
    export_nir(model, path)
    out["ours_accuracy"] = agree(ours, yc)
    graph = nir.read(path)
    # the float network the file describes, on our engine: the peers run float, so "_vs_float" compares like
    # with like; float vs int is the file's lossy part (int8 weights, Q12 decays, saturation)
    fspec, fparams, _ = nir_float_network(path)
    ours_float = float_predictions(fspec, fparams, Xc)
    out["export_float_vs_int_agree"] = agree(ours_float, ours)
    snntorch_as_is = snntorch_predictions(import_from_nir(graph), Xc)
    out["export_to_snntorch_agree"] = agree(snntorch_as_is, ours)
    out["export_to_snntorch_vs_float_agree"] = agree(snntorch_as_is, ours_float)
    subtracting = snntorch_predictions(with_subtractive_reset(import_from_nir(nir.read(path))), Xc)
    out["export_to_snntorch_subtract_reset_agree"] = agree(subtracting, ours)
    norse_pred = norse_predictions(norse.torch.from_nir(nir.read(path), dt=NIR_DT, reset_method=reset_subtract), Xc)
    out["export_to_norse_agree"] = agree(norse_pred, ours)
    out["export_to_norse_vs_float_agree"] = agree(norse_pred, ours_float)
    out["export_to_norse_default_agree"] = agree(norse_predictions(norse.torch.from_nir(nir.read(path)), Xc), ours)
    out["snntorch_rule_model_agree"] = agree(snntorch_rule_predictions(fparams, Xc), subtracting)

    # snnTorch's export -> our import
    for neuron in ("synaptic", "leaky"):
        net = snntorch_network(spec.sizes, neuron, params0=_initial_params(spec))
        train_snntorch(net, Xtr, ytr, args.peer_epochs)
        theirs = snntorch_predictions(net, Xc)
        g = export_to_nir(net, torch.zeros(1, spec.sizes[0]), ignore_dims=[0])
        fpath = os.path.join(tmp, f"snntorch_{neuron}.nir")
        nir.write(fpath, g)
        ispec, iparams, _ = nir_float_network(fpath, binning=binning)
        key = "snntorch_to_import" if neuron == "synaptic" else "snntorch_leaky_to_import"
        out[f"{key}_agree"] = agree(float_predictions(ispec, iparams, Xc), theirs)
        out[f"{key}_rule_model_agree"] = agree(snntorch_rule_predictions(iparams, Xc), theirs)
        out[f"{key}_peer_accuracy"] = agree(theirs, yc)
    out["versions"] = {"snntorch": snntorch.__version__, "norse": _version("norse"), "nir": _version("nir"),
                       "torch": torch.__version__}
    out["goal"] = 0.99
    main_keys = ["export_to_snntorch_agree", "export_to_norse_agree", "snntorch_to_import_agree",
                 "snntorch_leaky_to_import_agree"]
    out["below_goal"] = [k for k in main_keys if out[k] < 0.99]
    out["seconds"] = round(time.time() - t0, 1)
    print(json.dumps(out))
    return 0


def _initial_params(spec):
    from edge.model import init_params
    return init_params(spec, np.random.default_rng(SETTINGS["seed"]))


def _version(dist: str) -> str:
    from importlib import metadata
    return metadata.version(dist)


if __name__ == "__main__":
    sys.exit(main())
