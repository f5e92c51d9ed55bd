"""The integer model: one spec that every integer executor reads (docs/NUMERICS.md §2).

`IntModel` holds int8 weights and the integer constants of every layer, the input range, the binning
and, optionally, the integer hyper-parameters of an on-device learning rule. It is saved as a small
.npz (temp file + rename) and checked by `validate`, which refuses anything outside the widths that
NUMERICS.md declares (this is where "weights overflow the declared width" is caught).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

from edge.errors import SnnEdgeError
from edge.npz_files import load_npz, save_npz
from firmware_py import fixedpoint as fp
from firmware_py.binning import BinSpec
from firmware_py.blob import MAX_STEPS, rule_conflict, rule_params

KINDS = ("lif", "integrator", "prob")
RULES = ("none", "readout_delta", "solsa", "gem")
INTMODEL_FORMAT = 1

# Integer hyper-parameters of each rule and their allowed ranges (NUMERICS.md §7, §9, §10): the device's
# table (firmware_py/blob.py rule_params), which its readers check at load, so host and board agree.
RULE_PARAMS = {r: rule_params(r) for r in RULES if r != "none"}


@dataclass
class IntLayer:
    W: np.ndarray            # int8 [N_in, N_out]
    a_syn: np.ndarray        # int32 [] or [N_in], Q12
    a_mem: int               # Q12
    theta: int               # state units
    shift: int               # F: a spike current is acc << F
    w_exp: int               # real weight ~ W * 2**-w_exp (informational)
    kind: str = "lif"
    # probabilistic (GLM) layers only, NUMERICS.md §11:
    bias: np.ndarray | None = None     # int32 [N_out], state units
    w_fb: np.ndarray | None = None     # int32 [N_out], state units per (64 = one spike) of feedback trace
    a_fb: int = 0                      # Q12 decay of the self-feedback trace
    sig_shift: int = 0                 # 2**sig_shift state units = 1/16 real unit

    @property
    def n_in(self) -> int:
        return int(self.W.shape[0])

    @property
    def n_out(self) -> int:
        return int(self.W.shape[1])

    @property
    def per_input(self) -> bool:
        return self.a_syn.ndim == 1


@dataclass
class LearnSpec:
    rule: str = "none"
    seed: int = 1
    params: dict = field(default_factory=dict)

    def get(self, name: str) -> int:
        return int(self.params[name])


@dataclass
class IntModel:
    layers: list[IntLayer]
    in_max: int = 1                       # 1 for binary inputs, 255 for count inputs
    binning: tuple | None = None
    learn: LearnSpec = field(default_factory=LearnSpec)
    meta: dict = field(default_factory=dict)   # provenance (float spec, calibration), JSON-able
    compartments: int = 1                 # K (probabilistic models)
    fire_seed: int = 0                    # seed of the firing banks (probabilistic models)

    @property
    def probabilistic(self) -> bool:
        return self.layers[0].kind == "prob"

    @property
    def sizes(self) -> tuple[int, ...]:
        return (self.layers[0].n_in,) + tuple(L.n_out for L in self.layers)

    @property
    def readout(self) -> str:
        return "membrane" if self.layers[-1].kind == "integrator" else "spikes"

    def copy(self) -> "IntModel":
        cp = lambda a: None if a is None else a.copy()  # noqa: E731
        layers = [IntLayer(L.W.copy(), L.a_syn.copy(), L.a_mem, L.theta, L.shift, L.w_exp, L.kind, cp(L.bias),
                           cp(L.w_fb), L.a_fb, L.sig_shift) for L in self.layers]
        return IntModel(layers, self.in_max, self.binning, LearnSpec(self.learn.rule, self.learn.seed,
                                                                     dict(self.learn.params)),
                        json.loads(json.dumps(self.meta)), self.compartments, self.fire_seed)


def _check_int(where: str, value, lo: int, hi: int) -> int:
    try:
        v = int(value)
    except (TypeError, ValueError):
        raise SnnEdgeError(f"{where}: expected an integer in [{lo}, {hi}], got {value!r}") from None
    if v != value or not lo <= v <= hi:
        raise SnnEdgeError(f"{where}: expected an integer in [{lo}, {hi}], got {value!r}")
    return v


def validate(model: IntModel, where: str = "model") -> None:
    """Every field within NUMERICS.md's widths; raises SnnEdgeError naming the field otherwise."""
    if not model.layers:
        raise SnnEdgeError(f"{where}: no layers")
    if model.in_max not in (1, 255):
        raise SnnEdgeError(f"{where}: in_max must be 1 (binary) or 255 (counts), got {model.in_max}")
    n_prev = model.layers[0].n_in
    for l, L in enumerate(model.layers):
        w = f"{where}: layer {l}"
        if L.W.ndim != 2 or L.W.shape[0] != n_prev:
            raise SnnEdgeError(f"{w} W: expected shape [{n_prev}, N_out], got {list(L.W.shape)}")
        if L.W.dtype != np.int8:
            raise SnnEdgeError(f"{w} W: expected dtype int8, got {L.W.dtype}")
        if (L.W == -128).any():
            raise SnnEdgeError(f"{w} W: -128 is outside the symmetric int8 range [-127, 127]")
        if L.a_syn.shape not in ((), (L.n_in,)):
            raise SnnEdgeError(f"{w} a_syn: expected shape [] or [{L.n_in}], got {list(L.a_syn.shape)}")
        if L.a_syn.size and (L.a_syn.min() < 0 or L.a_syn.max() > fp.A_MAX):
            raise SnnEdgeError(f"{w} a_syn: expected Q12 decays in [0, 4096], got range "
                               f"[{L.a_syn.min()}, {L.a_syn.max()}]")
        _check_int(f"{w} a_mem", L.a_mem, 0, fp.A_MAX)
        _check_int(f"{w} theta", L.theta, 1, fp.STATE_MAX)
        _check_int(f"{w} shift", L.shift, 0, 24)
        _check_int(f"{w} w_exp", L.w_exp, -64, 64)
        if L.kind not in KINDS:
            raise SnnEdgeError(f"{w} kind: expected one of {KINDS}, got {L.kind!r}")
        if L.kind == "integrator" and l != len(model.layers) - 1:
            raise SnnEdgeError(f"{w} kind: only the last layer may be an integrator")
        if (L.kind == "prob") != (model.layers[0].kind == "prob"):
            raise SnnEdgeError(f"{w} kind: {L.kind!r}, but a probabilistic (GEM) model has every layer 'prob'")
        if L.kind == "prob":
            if L.per_input:
                raise SnnEdgeError(f"{w} a_syn: probabilistic layers have one kernel decay, got shape "
                                   f"{list(L.a_syn.shape)}")
            for name in ("bias", "w_fb"):
                arr = getattr(L, name)
                if arr is None or arr.shape != (L.n_out,) or arr.dtype != np.int32:
                    raise SnnEdgeError(f"{w} {name}: expected int32 [{L.n_out}], got "
                                       f"{None if arr is None else (arr.dtype, list(arr.shape))}")
                if np.abs(arr.astype(np.int64)).max(initial=0) > fp.STATE_MAX:
                    raise SnnEdgeError(f"{w} {name}: values beyond the 20-bit state range +-{fp.STATE_MAX}")
            _check_int(f"{w} a_fb", L.a_fb, 0, fp.A_MAX)
            _check_int(f"{w} sig_shift", L.sig_shift, 0, 30)
        in_max = model.in_max if l == 0 else 1
        col = np.abs(L.W.astype(np.int64)).sum(axis=0).max() if L.n_in else 0
        if not L.per_input and L.kind != "prob" and col * in_max * (1 << L.shift) >= (1 << 30):
            raise SnnEdgeError(
                f"{w} W: weights overflow the declared width: max column sum |W| * in_max * 2**shift = "
                f"{col} * {in_max} * 2**{L.shift} = {col * in_max << L.shift}, expected < 2**30")
        n_prev = L.n_out
    if model.binning is not None:       # the device refuses a model whose binning it cannot run: so does the host
        try:
            spec = BinSpec(*model.binning)
        except (TypeError, ValueError) as exc:
            raise SnnEdgeError(f"{where}: binning {model.binning!r}: {exc}") from None
        _check_int(f"{where}: binning n_steps", spec.n_steps, 1, MAX_STEPS)
        if spec.n_inputs != model.layers[0].n_in:
            raise SnnEdgeError(f"{where}: binning gives {spec.n_inputs} inputs, layer 0 takes {model.layers[0].n_in}")
    if model.probabilistic:
        _check_int(f"{where}: compartments", model.compartments, 1, 1024)
        _check_int(f"{where}: fire_seed", model.fire_seed, 0, fp.MASK32)
    rule = model.learn.rule
    if rule not in RULES:
        raise SnnEdgeError(f"{where}: learning rule {rule!r}, expected one of {RULES}")
    if rule != "none":
        _check_int(f"{where}: learn seed", model.learn.seed, 0, fp.MASK32)
        want = RULE_PARAMS[rule]
        missing = set(want) - set(model.learn.params)
        extra = set(model.learn.params) - set(want)
        if missing or extra:
            raise SnnEdgeError(f"{where}: {rule} parameters: missing {sorted(missing)}, unknown {sorted(extra)}")
        for name, (lo, hi) in want.items():
            _check_int(f"{where}: {rule}.{name}", model.learn.params[name], lo, hi)
        conflict = rule_conflict(rule, model.learn.params)
        if conflict:
            raise SnnEdgeError(f"{where}: {conflict}")
        if rule == "solsa" and model.layers[-1].kind != "lif":
            raise SnnEdgeError(f"{where}: solsa needs a spiking (lif) last layer, got {model.layers[-1].kind}")
        if (rule == "gem") != model.probabilistic:
            raise SnnEdgeError(f"{where}: rule {rule} {'needs' if rule == 'gem' else 'cannot run on'} a "
                               f"probabilistic (GEM) model")


def save_intmodel(path, model: IntModel) -> None:
    """One .npz: L{l}_W/a_syn and a JSON header with everything else; temp file + rename."""
    validate(model, str(path))
    arrays = {}
    layers = []
    for l, L in enumerate(model.layers):
        arrays[f"L{l}_W"] = L.W
        arrays[f"L{l}_a_syn"] = L.a_syn.astype(np.int32)
        layers.append({"a_mem": int(L.a_mem), "theta": int(L.theta), "shift": int(L.shift),
                       "w_exp": int(L.w_exp), "kind": L.kind})
        if L.kind == "prob":
            arrays[f"L{l}_bias"] = L.bias
            arrays[f"L{l}_w_fb"] = L.w_fb
            layers[-1].update(a_fb=int(L.a_fb), sig_shift=int(L.sig_shift))
    header = {"format": INTMODEL_FORMAT, "numerics_version": fp.NUMERICS_VERSION, "layers": layers,
              "in_max": model.in_max, "binning": model.binning,
              "learn": {"rule": model.learn.rule, "seed": model.learn.seed, "params": model.learn.params},
              "meta": model.meta, "compartments": model.compartments, "fire_seed": model.fire_seed}
    save_npz(path, arrays, "header", header)


def _tuplify(x):
    return tuple(_tuplify(v) for v in x) if isinstance(x, (list, tuple)) else x


def load_intmodel(path) -> IntModel:
    data, header = load_npz(path, "header", "integer model")
    try:
        if header.get("format") != INTMODEL_FORMAT:
            raise SnnEdgeError(f"{path}: format {header.get('format')!r}, expected {INTMODEL_FORMAT}")
        if header.get("numerics_version") != fp.NUMERICS_VERSION:
            raise SnnEdgeError(f"{path}: numerics_version {header.get('numerics_version')!r}, "
                               f"expected {fp.NUMERICS_VERSION}")
        layers = []
        for l, d in enumerate(header["layers"]):
            for name in ("W", "a_syn"):
                if f"L{l}_{name}" not in data:
                    raise SnnEdgeError(f"{path}: missing array L{l}_{name}")
            layer = IntLayer(data[f"L{l}_W"], data[f"L{l}_a_syn"].astype(np.int32), int(d["a_mem"]),
                             int(d["theta"]), int(d["shift"]), int(d["w_exp"]), str(d["kind"]))
            if layer.kind == "prob":
                for name in ("bias", "w_fb"):
                    if f"L{l}_{name}" not in data:
                        raise SnnEdgeError(f"{path}: missing array L{l}_{name}")
                layer.bias, layer.w_fb = data[f"L{l}_bias"], data[f"L{l}_w_fb"]
                layer.a_fb, layer.sig_shift = int(d["a_fb"]), int(d["sig_shift"])
            layers.append(layer)
        lr = header["learn"]
        model = IntModel(layers, int(header["in_max"]),
                         None if header["binning"] is None else _tuplify(header["binning"]),
                         LearnSpec(lr["rule"], int(lr["seed"]), {k: int(v) for k, v in lr["params"].items()}),
                         header.get("meta", {}), int(header.get("compartments", 1)),
                         int(header.get("fire_seed", 0)))
    except (KeyError, TypeError, ValueError) as exc:
        raise SnnEdgeError(f"{path}: malformed integer model header ({exc!r})") from None
    validate(model, str(path))
    return model


def default_learn(rule: str, seed: int = 1) -> LearnSpec:
    """Reasonable integer hyper-parameters for a rule (used by `snn-edge quantize --rule`)."""
    if rule == "none":
        return LearnSpec()
    if rule == "readout_delta":
        return LearnSpec(rule, seed, {"k_update": 30, "lr_m": 1, "lr_s": 6, "tgt_hi": 8, "tgt_lo": 0,
                                      "v_shift": 10})
    if rule == "gem":
        return LearnSpec(rule, seed, {"k_update": 30, "lr_m": 1, "lr_s": 10, "lrb_m": 1, "lrb_s": 6,
                                      "ll_decay": 4096})
    if rule == "solsa":
        return LearnSpec(rule, seed, {"k_update": 10, "lr_m": 1, "lr_s": 12, "lra_m": 1, "lra_s": 16,
                                      "sg_shift": 4, "factorised": 0, "reset_path": 1, "learn_all": 0,
                                      "lrh_m": 1, "lrh_s": 14})
    raise SnnEdgeError(f"--rule: expected one of {RULES}, got {rule!r}")
