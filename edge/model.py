"""The float network: its spec, its parameters, and checkpoints (docs/CONTRACTS.md, "Float network").

A network is a stack of Dense + CubaLIF layers; the last one is either counted as spikes
(readout="spikes") or a leaky non-spiking integrator (readout="membrane"). The spec holds everything
needed to rebuild the network and its input transform; the parameters are plain float32 arrays so
the quantiser, the exporter and every learning rule share them.
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge.errors import SnnEdgeError
from edge.npz_files import load_npz, save_npz
from edge.surrogate import check_surrogate

READOUTS = ("spikes", "membrane")
NEURONS = ("cuba_lif", "hard_reset_psc")  # edge/neurons.py: every other module runs cuba_lif only
CHECKPOINT_FORMAT = 1


def parse_arch(text: str) -> tuple[int, ...]:
    """'578-128-10' -> (578, 128, 10): at least an input and an output size, all positive."""
    parts = str(text).strip().split("-")
    try:
        sizes = tuple(int(p) for p in parts)
    except ValueError:
        raise SnnEdgeError(f"--arch: expected sizes joined by '-' such as 578-128-10, got {text!r}") from None
    if len(sizes) < 2 or any(s <= 0 for s in sizes):
        raise SnnEdgeError(f"--arch: expected at least two positive sizes such as 578-128-10, got {text!r}")
    return sizes


def _per_layer(value, n_layers: int, name: str) -> tuple[float, ...]:
    values = (value,) * n_layers if isinstance(value, (int, float, np.number)) else tuple(value)
    if len(values) != n_layers:
        raise SnnEdgeError(f"NetworkSpec.{name}: expected {n_layers} per-layer values, got {len(values)}")
    return tuple(float(v) for v in values)


@dataclass
class NetworkSpec:
    """Everything needed to rebuild the network; JSON-serialisable.

    a_syn, a_mem, theta: per-layer initial constants (decays in [0, 1), thresholds > 0).
    learn_syn_decay: layer synaptic decays become per-input vectors [N_in] and are trained (SOLSA);
    learn_mem_decay / learn_threshold: train the scalar a_mem / theta of each layer too.
    reset_grad: keep the gradient path through the soft reset (False detaches it, as snnTorch does).
    neuron: "cuba_lif" (everything: surrogate BPTT, SOLSA, export, boards) or "hard_reset_psc" (NA's neuron:
    hard reset, layers pass post-synaptic currents; float engine and rule na only).
    binning: firmware_py.binning.BinSpec.as_tuple() of the input transform, or None.
    """

    sizes: tuple[int, ...] = (578, 128, 10)
    readout: str = "spikes"
    a_syn: Any = 0.5   # a float for every layer, or one per layer; stored as a tuple of floats
    a_mem: Any = 0.8
    theta: Any = 1.0
    learn_syn_decay: bool = False
    learn_mem_decay: bool = False
    learn_threshold: bool = False
    surrogate: str = "fast_sigmoid"
    slope: float = 10.0
    reset_grad: bool = False
    binning: tuple | None = None
    neuron: str = "cuba_lif"

    def __post_init__(self):
        self.sizes = tuple(int(s) for s in self.sizes)
        if len(self.sizes) < 2 or any(s <= 0 for s in self.sizes):
            raise SnnEdgeError(f"NetworkSpec.sizes: expected >= 2 positive sizes, got {self.sizes}")
        n = self.n_layers
        self.a_syn = _per_layer(self.a_syn, n, "a_syn")
        self.a_mem = _per_layer(self.a_mem, n, "a_mem")
        self.theta = _per_layer(self.theta, n, "theta")
        for name in ("a_syn", "a_mem"):
            for v in getattr(self, name):
                if not 0.0 <= v < 1.0:
                    raise SnnEdgeError(f"NetworkSpec.{name}: expected decays in [0, 1), got {v}")
        if any(not t > 0 for t in self.theta):
            raise SnnEdgeError(f"NetworkSpec.theta: expected positive thresholds, got {self.theta}")
        if self.readout not in READOUTS:
            raise SnnEdgeError(f"NetworkSpec.readout: expected one of {READOUTS}, got {self.readout!r}")
        check_surrogate(self.surrogate, self.slope)
        if self.neuron not in NEURONS:
            raise SnnEdgeError(f"NetworkSpec.neuron: expected one of {NEURONS}, got {self.neuron!r}")
        if self.neuron == "hard_reset_psc" and self.learn_syn_decay:
            raise SnnEdgeError("NetworkSpec: learn_syn_decay (per-input synaptic decays) needs neuron 'cuba_lif'")
        self.slope = float(self.slope)
        if self.binning is not None:
            self.binning = _tuplify(self.binning)

    @property
    def n_layers(self) -> int:
        return len(self.sizes) - 1

    @property
    def n_inputs(self) -> int:
        return self.sizes[0]

    @property
    def n_classes(self) -> int:
        return self.sizes[-1]

    @property
    def arch(self) -> str:
        return "-".join(str(s) for s in self.sizes)

    def to_dict(self) -> dict:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, d: dict, where: str = "spec") -> "NetworkSpec":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise SnnEdgeError(f"{where}: unknown NetworkSpec fields {sorted(unknown)}")
        return cls(**d)


def _tuplify(x):
    return tuple(_tuplify(v) for v in x) if isinstance(x, (list, tuple)) else x


@dataclass
class LayerParams:
    """One Dense + CubaLIF layer: W [N_in, N_out]; a_syn [] or [N_in]; a_mem []; theta []; all float32."""

    W: np.ndarray
    a_syn: np.ndarray
    a_mem: np.ndarray
    theta: np.ndarray

    NAMES = ("W", "a_syn", "a_mem", "theta")

    def arrays(self) -> dict[str, np.ndarray]:
        return {n: getattr(self, n) for n in self.NAMES}

    def copy(self) -> "LayerParams":
        return LayerParams(*(getattr(self, n).copy() for n in self.NAMES))

    def astype(self, dtype) -> "LayerParams":
        return LayerParams(*(getattr(self, n).astype(dtype) for n in self.NAMES))


def init_params(spec: NetworkSpec, rng: np.random.Generator, dtype=np.float32) -> list[LayerParams]:
    """W ~ U(-1/sqrt(N_in), 1/sqrt(N_in)) (torch.nn.Linear's default), decays and thresholds from spec."""
    params = []
    for i in range(spec.n_layers):
        n_in, n_out = spec.sizes[i], spec.sizes[i + 1]
        bound = 1.0 / np.sqrt(n_in)
        W = rng.uniform(-bound, bound, size=(n_in, n_out)).astype(dtype)
        a_syn = np.full((n_in,) if spec.learn_syn_decay else (), spec.a_syn[i], dtype=dtype)
        params.append(LayerParams(W, a_syn, np.array(spec.a_mem[i], dtype=dtype),
                                  np.array(spec.theta[i], dtype=dtype)))
    return params


def check_params(spec: NetworkSpec, params: list[LayerParams], where: str = "params") -> None:
    """Shapes must match the spec: a checkpoint of another architecture is refused here."""
    if len(params) != spec.n_layers:
        raise SnnEdgeError(f"{where}: expected {spec.n_layers} layers for {spec.arch}, got {len(params)}")
    for i, p in enumerate(params):
        n_in, n_out = spec.sizes[i], spec.sizes[i + 1]
        want = {"W": (n_in, n_out), "a_syn": (n_in,) if spec.learn_syn_decay else (), "a_mem": (), "theta": ()}
        for name, shape in want.items():
            got = getattr(p, name).shape
            if got != shape:
                raise SnnEdgeError(f"{where}: L{i}_{name} has shape {got}, expected {shape} for {spec.arch}")


def save_checkpoint(path, spec: NetworkSpec, params: list[LayerParams], extra: dict | None = None) -> None:
    """One .npz: L{i}_W/a_syn/a_mem/theta, `spec` (JSON: network + JSON-able extra), extra arrays.

    Array values in `extra` (optimiser moments, ...) are stored as `extra.<key>` entries so a
    resumed run continues bit for bit. Written to a temp file in the same folder, then renamed.
    """
    check_params(spec, params, where=str(path))
    extra = dict(extra or {})
    arrays: dict[str, np.ndarray] = {}
    for i, p in enumerate(params):
        for name, value in p.arrays().items():
            arrays[f"L{i}_{name}"] = np.asarray(value, dtype=np.float32)
    json_extra = {}
    for key, value in extra.items():
        if isinstance(value, np.ndarray):
            arrays[f"extra.{key}"] = value
        else:
            json_extra[key] = value
    header = {"format": CHECKPOINT_FORMAT, "network": spec.to_dict(), "extra": json_extra}
    save_npz(path, arrays, "spec", header)


# LayerParams subclasses that carry extra per-layer arrays (rule-specific neurons): the name of an
# extra array -> "module:Class". load_checkpoint rebuilds that class when the file holds L0_<name>.
LAYER_TYPES = {"W_lat": "edge.probabilistic:PoolGLMLayerParams",   # checked first: it extends the next
               "W_more": "edge.probabilistic:GLMLayerParams"}


def _layer_class(data: dict) -> type[LayerParams]:
    import importlib

    for array, target in LAYER_TYPES.items():
        if f"L0_{array}" in data:
            module, name = target.split(":")
            return getattr(importlib.import_module(module), name)
    return LayerParams


def load_checkpoint(path) -> tuple[NetworkSpec, list[LayerParams], dict[str, Any]]:
    """(spec, params, extra) from save_checkpoint's file; SnnEdgeError on anything unusable."""
    path = os.fspath(path)
    data, header = load_npz(path, "spec", "snn-edge checkpoint")
    if header.get("format") != CHECKPOINT_FORMAT:
        raise SnnEdgeError(f"{path}: checkpoint format {header.get('format')!r}, expected {CHECKPOINT_FORMAT}")
    spec = NetworkSpec.from_dict(header["network"], where=f"{path}: spec")
    params = []
    layer_cls = _layer_class(data)
    for i in range(spec.n_layers):
        try:
            params.append(layer_cls(*(data[f"L{i}_{n}"].astype(np.float32) for n in layer_cls.NAMES)))
        except KeyError as exc:
            raise SnnEdgeError(f"{path}: missing array {exc.args[0]}") from None
    check_params(spec, params, where=path)
    extra = dict(header.get("extra", {}))
    for key, value in data.items():
        if key.startswith("extra."):
            extra[key[len("extra."):]] = value
    return spec, params, extra
