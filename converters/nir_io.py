"""NIR export/import: float interchange with snnTorch, Norse, Rockpool, Sinabs, Lava (lossy).

NIR describes continuous-time neurons; a discrete decay `a` per step of length dt maps to
`tau = dt / (1 - a)` (`a = 1 - dt / tau` back), with `r = tau_mem / dt` and `w_in = tau_syn / dt` so
that one step of the NIR model is `I = a_syn I + W s`, `V = a_mem V + I`.

The dt the time constants are written for is NIR_DT = 1e-4 s, not the model's real bin length: snnTorch 1.0
reads and writes every NIR file at a fixed dt of 1e-4 (its import_from_nir takes no dt and asserts
`r == tau_mem / 1e-4`), while Norse's from_nir takes dt as an argument. One file then loads in both:
`snntorch.import_nir.import_from_nir(g)` and `norse.torch.from_nir(g, dt=1e-4, reset_method=reset_subtract)`.
The real bin length stays in the graph metadata (`binning`). A foreign file without our metadata is read at
dt = 1e-4 too (snnTorch's files); Norse's own exports need the dt they were written with.
What NIR cannot say, and why the trip is lossy: our reset is soft (subtract theta; NIR's CubaLIF resets
to v_reset), our weights are int8 with a power-of-two scale, decays are Q12, and the state saturates.
Those integer details ride along in node metadata (`snn_edge` JSON), so a file we wrote imports back to
the identical IntModel; a foreign file imports as a float network (weights and time constants kept).

Per layer:            scalar synaptic decay          per-input synaptic decay
  spiking (lif)       Linear -> CubaLIF              LI (per input) -> Linear -> LIF
  integrator readout  Linear -> LI (syn) -> LI (mem)  LI (per input) -> Linear -> LI (mem)
"""
from __future__ import annotations

import json
import os
import tempfile

import numpy as np

from converters.intmodel import IntLayer, IntModel, LearnSpec, validate
from edge.errors import SnnEdgeError
from firmware_py import fixedpoint as fp

# The time step NIR time constants are written for, and read with when the file does not say: snnTorch 1.0's
# fixed dt (snntorch/export_nir.py and import_nir.py hard-code dt = 1e-4).
NIR_DT = 1e-4


def _tau(a: np.ndarray, dt: float) -> np.ndarray:
    a = np.asarray(a, np.float64)
    with np.errstate(divide="ignore"):
        return np.where(a >= 1.0, np.inf, dt / (1.0 - a))


def _decay(tau: np.ndarray, dt: float) -> np.ndarray:
    return 1.0 - dt / np.asarray(tau, np.float64)


def _checked_decay(tau, dt: float, name: str, field: str, where: str) -> np.ndarray:
    """The decay per step of a time constant read from a file; a time constant shorter than dt (or not positive)
    means the file was written for another dt, which the error names."""
    tau = np.asarray(tau, np.float64)
    a = _decay(tau, dt)
    if not np.all(np.isfinite(a)) or np.any(a < 0) or np.any(a >= 1):
        bad = tau.reshape(-1)[0] if tau.size else tau
        raise SnnEdgeError(f"{where}: node {name!r} {field}={float(bad):.3g} s gives a decay per step of "
                           f"{float(np.reshape(a, -1)[0]):.3g} at dt={dt:g} s (expected 0 <= decay < 1): the file's "
                           f"time constants were written for another dt; pass it (snn-edge import --nir-dt SECONDS, "
                           f"import_nir(path, dt=...)); snnTorch writes dt=1e-4, Norse's to_nir its dt argument "
                           f"(default 1e-3)")
    return a


def to_nir_graph(model: IntModel):
    import nir
    validate(model, "model to export as NIR")
    if model.probabilistic:
        raise SnnEdgeError("NIR export: layer 0 kind 'prob': NIR has no probabilistic (GLM/sigmoid-sampling) "
                           "neuron; expected 'lif' or 'integrator' layers")
    dt = NIR_DT
    nodes = {"input": nir.Input({"input": np.array([model.layers[0].n_in])})}
    edges = []
    prev = "input"

    def add(name, node):
        nonlocal prev
        nodes[name] = node
        edges.append((prev, name))
        prev = name

    for l, L in enumerate(model.layers):
        n = L.n_out
        W = L.W.astype(np.float64) * 2.0 ** -L.w_exp
        a_syn = L.a_syn.astype(np.float64) / fp.Q_ONE
        a_mem = L.a_mem / fp.Q_ONE
        theta = L.theta * 2.0 ** -(L.w_exp + L.shift)
        details = {"layer": l, "kind": L.kind, "w_exp": int(L.w_exp), "shift": int(L.shift), "theta": int(L.theta),
                   "a_mem": int(L.a_mem), "a_syn": L.a_syn.tolist(), "reset": "subtract",
                   "state_bits": fp.STATE_BITS}
        meta = {"snn_edge": json.dumps(details, sort_keys=True)}
        tau_mem = np.full(n, float(_tau(a_mem, dt)))
        if L.per_input:
            tau_x = _tau(a_syn, dt)
            add(f"L{l}_filter", nir.LI(tau=tau_x, r=tau_x / dt, v_leak=np.zeros(L.n_in)))
            add(f"L{l}_fc", nir.Linear(W.T.copy(), metadata=meta))
            if L.kind == "lif":
                add(f"L{l}_lif", nir.LIF(tau=tau_mem, r=tau_mem / dt, v_leak=np.zeros(n),
                                         v_threshold=np.full(n, theta), v_reset=np.zeros(n)))
            else:
                add(f"L{l}_mem", nir.LI(tau=tau_mem, r=tau_mem / dt, v_leak=np.zeros(n)))
        else:
            tau_syn = np.full(n, float(_tau(a_syn, dt)))
            add(f"L{l}_fc", nir.Linear(W.T.copy(), metadata=meta))
            if L.kind == "lif":
                add(f"L{l}_lif", nir.CubaLIF(tau_syn=tau_syn, tau_mem=tau_mem, r=tau_mem / dt, v_leak=np.zeros(n),
                                             v_threshold=np.full(n, theta), v_reset=np.zeros(n),
                                             w_in=tau_syn / dt))
            else:
                add(f"L{l}_syn", nir.LI(tau=tau_syn, r=tau_syn / dt, v_leak=np.zeros(n)))
                add(f"L{l}_mem", nir.LI(tau=tau_mem, r=tau_mem / dt, v_leak=np.zeros(n)))
    nodes["output"] = nir.Output({"output": np.array([model.layers[-1].n_out])})
    edges.append((prev, "output"))
    gmeta = {"snn_edge": json.dumps({"dt": dt, "in_max": model.in_max, "binning": model.binning,
                                     "numerics_version": fp.NUMERICS_VERSION, "meta": model.meta,
                                     "learn": {"rule": model.learn.rule, "seed": model.learn.seed,
                                               "params": model.learn.params}}, sort_keys=True)}
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=gmeta)


def export_nir(model: IntModel, path) -> None:
    """Write the NIR file (HDF5) to a temp file in the same folder, then rename."""
    import nir
    graph = to_nir_graph(model)
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".nir-", suffix=".nir", dir=folder)
    os.close(fd)
    try:
        nir.write(tmp, graph)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


# ---- import -----------------------------------------------------------------------------------

SUPPORTED = ("Input", "Output", "Linear", "Affine", "CubaLIF", "LIF", "LI")


def _chain(graph, where: str) -> list[str]:
    """Node names from input to output; the graph must be one feed-forward chain."""
    for name, node in graph.nodes.items():
        kind = type(node).__name__
        if kind not in SUPPORTED:
            raise SnnEdgeError(f"{where}: node {name!r} is a NIR {kind}; expected one of {', '.join(SUPPORTED)} "
                               f"(snn-edge imports Dense + CubaLIF/LIF/LI stacks)")
    nxt: dict[str, str] = {}
    for a, b in graph.edges:
        if a in nxt:
            raise SnnEdgeError(f"{where}: node {a!r} feeds {nxt[a]!r} and {b!r}; expected a single chain")
        nxt[a] = b
    starts = [n for n, node in graph.nodes.items() if type(node).__name__ == "Input"]
    if len(starts) != 1:
        raise SnnEdgeError(f"{where}: expected one Input node, got {len(starts)}")
    order = [starts[0]]
    while order[-1] in nxt:
        order.append(nxt[order[-1]])
        if len(order) > len(graph.nodes):
            raise SnnEdgeError(f"{where}: the edges form a cycle")
    if type(graph.nodes[order[-1]]).__name__ != "Output":
        raise SnnEdgeError(f"{where}: the chain from {starts[0]!r} ends at {order[-1]!r}, expected an Output node")
    if len(order) != len(graph.nodes):
        missing = sorted(set(graph.nodes) - set(order))
        raise SnnEdgeError(f"{where}: nodes {missing} are not on the input-to-output chain")
    return order


def _one(values, name: str, field: str, where: str) -> float:
    v = np.asarray(values, np.float64).reshape(-1)
    if v.size == 0 or not np.allclose(v, v[0], rtol=1e-9, atol=0):
        raise SnnEdgeError(f"{where}: node {name!r} {field}: expected one value for the whole layer, got "
                           f"{v.size} differing values")
    return float(v[0])


def _zero(values, name: str, field: str, where: str) -> None:
    if values is not None and np.any(np.asarray(values) != 0):
        raise SnnEdgeError(f"{where}: node {name!r} {field}: expected 0 (snn-edge has no leak/reset offset), "
                           f"got {np.asarray(values).reshape(-1)[:3].tolist()}...")


def import_nir(path, dt: float | None = None):
    """-> (NetworkSpec, [LayerParams] float32, IntModel or None). The IntModel is rebuilt exactly when the
    file carries our `snn_edge` metadata on every layer; otherwise it is None (quantise the float network)."""
    import nir

    from edge.model import LayerParams, NetworkSpec
    where = os.fspath(path)
    try:
        graph = nir.read(where, type_check=False)   # our own checks below name the node
    except Exception as exc:  # h5py/KeyError/...: a file that is not NIR
        raise SnnEdgeError(f"{where}: not a readable NIR file ({type(exc).__name__}: {exc})") from None
    gmeta = {}
    if graph.metadata and "snn_edge" in graph.metadata:
        gmeta = json.loads(graph.metadata["snn_edge"])
    dt = float(dt if dt is not None else gmeta.get("dt", NIR_DT))
    order = _chain(graph, where)[1:-1]
    layers, details, readout = [], [], "spikes"
    i = 0
    while i < len(order):
        name = order[i]
        node = graph.nodes[name]
        a_syn = None
        if type(node).__name__ == "LI":      # per-input synaptic filter before the weights
            _zero(node.v_leak, name, "v_leak", where)
            a_syn = _checked_decay(node.tau, dt, name, "tau", where)
            i += 1
            if i >= len(order):
                raise SnnEdgeError(f"{where}: node {name!r} (LI) is not followed by Linear/Affine")
            name = order[i]
            node = graph.nodes[name]
        kind = type(node).__name__
        if kind not in ("Linear", "Affine"):
            raise SnnEdgeError(f"{where}: node {name!r} is {kind}; expected Linear or Affine to start a layer")
        if kind == "Affine":
            _zero(node.bias, name, "bias", where)
        W = np.asarray(node.weight, np.float64).T.copy()
        det = json.loads(node.metadata["snn_edge"]) if node.metadata and "snn_edge" in node.metadata else None
        i += 1
        if i >= len(order):
            raise SnnEdgeError(f"{where}: node {name!r} is not followed by a neuron node")
        nname = order[i]
        neuron = graph.nodes[nname]
        nkind = type(neuron).__name__
        dt_gain = np.ones(W.shape[1])
        if nkind == "CubaLIF" and a_syn is None:
            _zero(neuron.v_leak, nname, "v_leak", where)
            _zero(neuron.v_reset, nname, "v_reset", where)
            a_syn = np.array(_checked_decay(_one(neuron.tau_syn, nname, "tau_syn", where), dt, nname, "tau_syn",
                                            where))
            tau_mem = _one(neuron.tau_mem, nname, "tau_mem", where)
            # fold NIR's input gains into W: one step adds (w_in dt / tau_syn) (r dt / tau_mem) W s
            dt_gain = (np.asarray(neuron.w_in, np.float64) * dt / np.asarray(neuron.tau_syn, np.float64)
                       * np.asarray(neuron.r, np.float64) * dt / tau_mem) * np.ones(W.shape[1])
            theta = _one(neuron.v_threshold, nname, "v_threshold", where)
            i += 1
        elif nkind == "LIF":
            # after a per-input LI filter; or alone (snnTorch's Leaky): a CubaLIF whose synapse does not
            # remember (a_syn = 0: I = W s, V = a_mem V + I)
            if a_syn is None:
                a_syn = np.array(0.0)
            _zero(neuron.v_leak, nname, "v_leak", where)
            _zero(neuron.v_reset, nname, "v_reset", where)
            tau_mem = _one(neuron.tau, nname, "tau", where)
            dt_gain = np.asarray(neuron.r, np.float64) * dt / tau_mem * np.ones(W.shape[1])
            theta = _one(neuron.v_threshold, nname, "v_threshold", where)
            i += 1
        elif nkind == "LI":
            readout = "membrane"
            theta = 1.0
            if a_syn is None:     # LI (synapse) -> LI (membrane)
                _zero(neuron.v_leak, nname, "v_leak", where)
                a_syn = np.array(_checked_decay(_one(neuron.tau, nname, "tau", where), dt, nname, "tau", where))
                gain_syn = np.asarray(neuron.r, np.float64) * dt / np.asarray(neuron.tau, np.float64)
                i += 1
                if i >= len(order) or type(graph.nodes[order[i]]).__name__ != "LI":
                    raise SnnEdgeError(f"{where}: node {nname!r} (LI synapse) must be followed by an LI membrane")
                nname = order[i]
                neuron = graph.nodes[nname]
            else:
                gain_syn = 1.0
            _zero(neuron.v_leak, nname, "v_leak", where)
            tau_mem = _one(neuron.tau, nname, "tau", where)
            dt_gain = gain_syn * np.asarray(neuron.r, np.float64) * dt / tau_mem * np.ones(W.shape[1])
            i += 1
            if i != len(order):
                raise SnnEdgeError(f"{where}: the leaky readout {nname!r} must be the last layer")
        else:
            raise SnnEdgeError(f"{where}: node {nname!r} is {nkind} after {name!r}; expected CubaLIF or LIF "
                               f"(or LI for a readout)")
        W = W * dt_gain[None, :]
        a_mem = float(_checked_decay(tau_mem, dt, nname, "tau_mem" if nkind == "CubaLIF" else "tau", where))
        layers.append(LayerParams(W.astype(np.float32), np.asarray(a_syn, np.float32),
                                  np.array(a_mem, np.float32), np.array(theta, np.float32)))
        details.append(det)
    if not layers:
        raise SnnEdgeError(f"{where}: no Linear/Affine layer found")
    sizes = (layers[0].W.shape[0],) + tuple(p.W.shape[1] for p in layers)
    per_input = [p.a_syn.ndim == 1 for p in layers]
    binning = gmeta.get("binning")
    spec = NetworkSpec(sizes=sizes, readout=readout,
                       a_syn=tuple(float(p.a_syn.mean()) for p in layers),
                       a_mem=tuple(float(p.a_mem) for p in layers), theta=tuple(float(p.theta) for p in layers),
                       learn_syn_decay=all(per_input), binning=binning)
    int_model = None
    if all(d is not None for d in details):
        int_layers = []
        for p, d in zip(layers, details):
            Wq = np.rint(p.W.astype(np.float64) * 2.0 ** d["w_exp"]).astype(np.int8)
            int_layers.append(IntLayer(Wq, np.array(d["a_syn"], np.int32), int(d["a_mem"]), int(d["theta"]),
                                       int(d["shift"]), int(d["w_exp"]), d["kind"]))
        lr = gmeta.get("learn", {"rule": "none", "seed": 1, "params": {}})
        int_model = IntModel(int_layers, int(gmeta.get("in_max", 1)),
                             None if binning is None else _tuplify(binning),
                             LearnSpec(lr["rule"], int(lr["seed"]), {k: int(v) for k, v in lr["params"].items()}),
                             gmeta.get("meta", {}))
        validate(int_model, where)
    return spec, layers, int_model


def _tuplify(x):
    return tuple(_tuplify(v) for v in x) if isinstance(x, (list, tuple)) else x


def is_nir_file(path) -> bool:
    """A NIR file is HDF5: told by its signature, whatever its name."""
    try:
        with open(os.fspath(path), "rb") as fh:
            return fh.read(8) == b"\x89HDF\r\n\x1a\n"
    except OSError:
        return False


def nir_float_network(path, dt: float | None = None, binning: tuple | None = None):
    """-> (NetworkSpec, [LayerParams], extra) as edge.model.load_checkpoint gives them, from a NIR file: the
    float network it describes. `binning` (BinSpec.as_tuple()) is used when the file records none (a
    foreign file); it must give as many inputs as the first layer has."""
    import dataclasses

    from firmware_py.binning import BinSpec
    where = os.fspath(path)
    spec, params, _ = import_nir(where, dt)
    if spec.binning is None and binning is not None:
        n_in = BinSpec(*binning).n_inputs
        if n_in != spec.sizes[0]:
            raise SnnEdgeError(f"{where}: the network has {spec.sizes[0]} inputs but the binning gives {n_in} "
                               f"(--sensor/--downsample: inputs = (W/d) x (H/d) x 2 polarities)")
        spec = dataclasses.replace(spec, binning=binning)
    return spec, params, {"meta": {"source": os.path.basename(where)}}
