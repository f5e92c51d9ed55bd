"""IntModel -> ONNX that onnxruntime's CPU provider runs bit-exactly (docs/NUMERICS.md).

The file holds:
- typed initialisers `L{l}_W` (int8 [N_in, N_out]), `L{l}_a_syn` (int32 [] or [N_in]), `L{l}_a_mem`,
  `L{l}_theta`, `L{l}_shift` (int32 []), `L{l}_spiking` (bool []), and the rule's integer
  hyper-parameters `learn_<name>` (int64 []);
- `metadata_props` `snn_edge.*`: format, numerics version, layer kinds and weight exponents, input range,
  binning, rule name/version/seed, provenance;
- model-local functions in domain `snn_edge` whose bodies are standard ops: `CubaLifStep` /
  `CubaLifStepFiltered` (one layer), `NetworkStep` (the step graph), `ApplyUpdate` (stochastic-rounding
  weight update, §7), `ReadoutDeltaLearnStep` or `SolsaLearnStep` (one step of forward + rule, §9/§10);
  a board recognises them by name and runs its own kernels;
- the main graph: the sequence graph, a Scan of `NetworkStep` over T, outputting every step's spikes and
  states, the scores and the predicted class. The initialisers it does not compute with (the rule's `learn_*`,
  GEM's learning tables, constants the layer kind does not use) are also outputs of the main graph, passed
  through unchanged: the file carries them for the board (firmware_py/onnx_reader.py reads the main graph's
  initialisers) and for the learning step, and onnxruntime would otherwise drop each with a "Removing
  initializer" warning. Declaring them overridable inputs instead draws another warning and disables constant
  folding; moving them elsewhere would break the board's reader.
`step_model` and `learn_model` wrap the file's functions into runnable graphs (the step graph alone, and
a Scan of the learning step) for onnxruntime; they add no semantics of their own.

Only ops the CPU provider implements for the dtypes used: MatMulInteger (uint8 x int8 -> int32), int32/
int64 Add/Sub/Mul/Div (truncating)/Mod (floor)/Clip/Max/Abs/Where/Greater/Equal, MatMul int64, uint32/
uint64 BitShift and BitwiseXor (xorshift32), ReduceSum, Cast, Scan, If, ArgMax.
"""
from __future__ import annotations

import json

import numpy as np
import onnx
from onnx import TensorProto as TP
from onnx import helper, numpy_helper

from converters import intsim
from converters.intmodel import IntModel, validate
from edge.atomic import write_atomic
from edge.errors import SnnEdgeError
from firmware_py import fixedpoint as fp

DOMAIN = "snn_edge"
OPSET = 18
IR_VERSION = 9
FORMAT_VERSION = 1
RULE_VERSION = 1
PRODUCER = "snn-edge"
OPSETS = [helper.make_opsetid("", OPSET), helper.make_opsetid(DOMAIN, 1)]


class Body:
    """Builds a list of nodes with unique names and cached constants (one per function/graph)."""

    def __init__(self, prefix: str, tag: str = ""):
        self.nodes: list[onnx.NodeProto] = []
        self.prefix = prefix
        self.tag = tag          # sub-graph bodies (If branches, Scan bodies) get a tag: names stay SSA-unique
        self.n = 0
        self.consts: dict = {}

    def tmp(self, hint: str = "t") -> str:
        self.n += 1
        return f"{self.tag}{hint}_{self.n}"

    def op(self, op_type: str, inputs, n_out: int = 1, domain: str = "", hint: str | None = None, **attrs):
        outs = [self.tmp(hint or op_type.lower()) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op_type, list(inputs), outs, name=f"{self.prefix}/{outs[0]}",
                                           domain=domain, **attrs))
        return outs[0] if n_out == 1 else outs

    def named(self, op_type: str, inputs, outputs, domain: str = "", **attrs):
        self.nodes.append(helper.make_node(op_type, list(inputs), list(outputs),
                                           name=f"{self.prefix}/{outputs[0]}", domain=domain, **attrs))

    def add_all(self, xs, out: str | None = None) -> str:
        """Sum of several tensors by chained Add (ONNX Sum has no integer kernels)."""
        acc = xs[0]
        for i, x in enumerate(xs[1:]):
            if out is not None and i == len(xs) - 2:
                self.named("Add", [acc, x], [out])
                return out
            acc = self.op("Add", [acc, x])
        if out is not None:
            self.named("Identity", [acc], [out])
            return out
        return acc

    def const(self, value, dtype) -> str:
        key = (repr(value), np.dtype(dtype).str)
        if key not in self.consts:
            name = self.tmp("c")
            self.nodes.append(helper.make_node("Constant", [], [name], name=f"{self.prefix}/{name}",
                                               value=numpy_helper.from_array(np.array(value, dtype=dtype), name)))
            self.consts[key] = name
        return self.consts[key]

    # -- integer helpers (NUMERICS.md §0) --
    def clip(self, x: str, lo: int, hi: int, dtype) -> tuple[str, str]:
        """(clamped x, saturation count as int64 [])."""
        y = self.op("Clip", [x, self.const(lo, dtype), self.const(hi, dtype)])
        changed = self.op("Cast", [self.op("Not", [self.op("Equal", [y, x])])], to=TP.INT64)
        return y, self.op("ReduceSum", [changed], keepdims=0)

    def clip_rows(self, x: str, m: int, dtype) -> tuple[str, str]:
        """Clamp to [-m, m]; count per batch row (axis 1 summed) -> int64 [B]."""
        y = self.op("Clip", [x, self.const(-m, dtype), self.const(m, dtype)])
        changed = self.op("Cast", [self.op("Not", [self.op("Equal", [y, x])])], to=TP.INT64)
        return y, self.op("ReduceSum", [changed, self.const([1], np.int64)], keepdims=0)

    def mul_q12(self, x: str, a: str, dtype) -> str:
        """trunc(x * a / 4096): ONNX integer Div truncates toward zero."""
        return self.op("Div", [self.op("Mul", [x, a]), self.const(fp.Q_ONE, dtype)])

    def pow2(self, k: str, dtype) -> str:
        """2**k for a non-negative integer scalar tensor k (BitShift is unsigned-only)."""
        one = self.const(1, np.uint64)
        sh = self.op("BitShift", [one, self.op("Cast", [k], to=TP.UINT64)], direction="LEFT")
        return self.op("Cast", [sh], to=TP.INT32 if dtype == np.int32 else TP.INT64)

    def floor_shift(self, y: str, k: str) -> str:
        """floor(y / 2**k) for int64 y: (y - Mod(y, 2**k)) / 2**k, Mod with fmod=0 is floor-signed."""
        p = self.pow2(k, np.int64)
        return self.op("Div", [self.op("Sub", [y, self.op("Mod", [y, p], fmod=0)]), p])


def _function(name: str, inputs, outputs, body: Body) -> onnx.FunctionProto:
    return helper.make_function(DOMAIN, name, list(inputs), list(outputs), body.nodes, OPSETS)


# ---- one layer, one step (§4) ------------------------------------------------------------------

def _lif_tail(b: Body, I: str, V: str, a_mem: str, theta: str, spiking: str):
    """Membrane, threshold, soft reset; I, V int32 [B, N]."""
    v_raw = b.op("Add", [b.mul_q12(V, a_mem, np.int32), I])
    vpre, n_v = b.clip_rows(v_raw, fp.STATE_MAX, np.int32)
    fire = b.op("And", [b.op("Greater", [vpre, theta]), spiking])
    V2 = b.op("Sub", [vpre, b.op("Mul", [theta, b.op("Cast", [fire], to=TP.INT32)])])
    s_out = b.op("Cast", [fire], to=TP.UINT8)
    return s_out, vpre, V2, n_v


def _spike_current(b: Body, s_in: str, W: str) -> str:
    """acc = s_in @ W exactly (int32), for uint8 inputs up to 255: onnxruntime's x86 u8 x s8 GEMM adds pairs of
    products in saturating int16 (pmaddubsw), which is exact only for inputs up to 127; so the input is split
    into its low 7 bits and its top bit, s = lo + 128 * hi, and the two products are added in int32."""
    hi = b.op("BitShift", [s_in, b.const(7, np.uint8)], direction="RIGHT")
    lo = b.op("Mod", [s_in, b.const(128, np.uint8)])
    acc_hi = b.op("Mul", [b.op("MatMulInteger", [hi, W]), b.const(128, np.int32)])
    return b.op("Add", [b.op("MatMulInteger", [lo, W]), acc_hi])


def lif_step_function() -> onnx.FunctionProto:
    b = Body("CubaLifStep")
    acc = _spike_current(b, "s_in", "W")
    cur = b.op("Mul", [acc, b.pow2("shift", np.int32)])
    i_raw = b.op("Add", [b.mul_q12("I", "a_syn", np.int32), cur])
    I2, n_i = b.clip_rows(i_raw, fp.STATE_MAX, np.int32)
    s_out, vpre, V2, n_v = _lif_tail(b, I2, "V", "a_mem", "theta", "spiking")
    b.named("Identity", [s_out], ["s_out"])
    b.named("Identity", [vpre], ["vpre"])
    b.named("Identity", [I2], ["I_out"])
    b.named("Identity", [V2], ["V_out"])
    b.named("Add", [n_i, n_v], ["nsat"])
    return _function("CubaLifStep", ["s_in", "W", "a_syn", "a_mem", "theta", "shift", "spiking", "I", "V"],
                     ["s_out", "vpre", "I_out", "V_out", "nsat"], b)


def lif_step_filtered_function() -> onnx.FunctionProto:
    b = Body("CubaLifStepFiltered")
    x_in = b.op("Mul", [b.op("Cast", ["s_in"], to=TP.INT32), b.const(1 << fp.TRACE_FRAC, np.int32)])
    x_raw = b.op("Add", [b.mul_q12("x", "a_syn", np.int32), x_in])
    x2, n_x = b.clip_rows(x_raw, fp.STATE_MAX, np.int32)
    acc = b.op("MatMul", [b.op("Cast", [x2], to=TP.INT64), b.op("Cast", ["W"], to=TP.INT64)])
    k = b.op("Sub", [b.op("Cast", ["shift"], to=TP.INT64), b.const(fp.TRACE_FRAC, np.int64)])
    zero = b.const(0, np.int64)
    up = b.pow2(b.op("Max", [k, zero]), np.int64)
    down = b.pow2(b.op("Max", [b.op("Neg", [k]), zero]), np.int64)
    i_raw = b.op("Div", [b.op("Mul", [acc, up]), down])           # scale_pow2: one of up/down is 1
    I64, n_i = b.clip_rows(i_raw, fp.STATE_MAX, np.int64)
    I2 = b.op("Cast", [I64], to=TP.INT32)
    s_out, vpre, V2, n_v = _lif_tail(b, I2, "V", "a_mem", "theta", "spiking")
    b.named("Identity", [s_out], ["s_out"])
    b.named("Identity", [vpre], ["vpre"])
    b.named("Identity", [I2], ["I_out"])
    b.named("Identity", [V2], ["V_out"])
    b.named("Identity", [x2], ["x_out"])
    b.add_all([n_x, n_i, n_v], "nsat")
    return _function("CubaLifStepFiltered",
                     ["s_in", "W", "a_syn", "a_mem", "theta", "shift", "spiking", "x", "V"],
                     ["s_out", "vpre", "I_out", "V_out", "x_out", "nsat"], b)


# ---- names shared by the network-level functions -------------------------------------------------

def param_names(model: IntModel) -> list[str]:
    out = []
    for l in range(len(model.layers)):
        out += [f"L{l}_W", f"L{l}_a_syn", f"L{l}_a_mem", f"L{l}_theta", f"L{l}_shift", f"L{l}_spiking"]
    return out


def state_names(model: IntModel) -> list[str]:
    """Per layer: I, V and (per-input decay) x; all int32 [B, N]."""
    out = []
    for l, L in enumerate(model.layers):
        out += [f"L{l}_I", f"L{l}_V"] + ([f"L{l}_x"] if L.per_input else [])
    return out


def network_step_function(model: IntModel) -> onnx.FunctionProto:
    """Step graph: (s_in uint8 [B, N_in], params, states) -> (spikes and vpre per layer, states', nsat [B])."""
    b = Body("NetworkStep")
    x = "s_in"
    outs_s, outs_vpre, outs_state, nsats = [], [], [], []
    for l, L in enumerate(model.layers):
        p = [f"L{l}_W", f"L{l}_a_syn", f"L{l}_a_mem", f"L{l}_theta", f"L{l}_shift", f"L{l}_spiking"]
        if L.per_input:
            s, vp, I, V, xo, n = b.op("CubaLifStepFiltered", [x] + p + [f"L{l}_x", f"L{l}_V"], n_out=6,
                                      domain=DOMAIN, hint=f"L{l}")
            new = [I, V, xo]
        else:
            s, vp, I, V, n = b.op("CubaLifStep", [x] + p + [f"L{l}_I", f"L{l}_V"], n_out=5, domain=DOMAIN,
                                  hint=f"L{l}")
            new = [I, V]
        outs_s.append(s)
        outs_vpre.append(vp)
        outs_state += new
        nsats.append(n)
        x = s
    names_out = ([f"L{l}_s" for l in range(len(model.layers))] + [f"L{l}_vpre" for l in range(len(model.layers))]
                 + [f"{n}_out" for n in state_names(model)])
    for src, dst in zip(outs_s + outs_vpre + outs_state, names_out):
        b.named("Identity", [src], [dst])
    b.add_all(nsats, "nsat")
    return _function("NetworkStep", ["s_in"] + param_names(model) + state_names(model), names_out + ["nsat"], b)


# ---- learning (§7, §9, §10) ------------------------------------------------------------------

def apply_update_name(model: IntModel, l: int) -> str:
    """ApplyUpdate for the last layer, ApplyUpdateL{l} for a hidden one (SOLSA learn_all: its own shapes)."""
    return "ApplyUpdate" if l == len(model.layers) - 1 else f"ApplyUpdateL{l}"


def apply_update_function(model: IntModel, l: int | None = None) -> onnx.FunctionProto:
    """(W int8, a_syn int32, G int64 [N_in, N_out], Ga int64 [N_in], lanes uint32 [N_out+1], lr_m, lr_s,
    lra_m, lra_s int64 []) -> (W', a_syn', lanes', nsat int64 []) for layer l (default: the last). The bank
    ticks once per row."""
    l = len(model.layers) - 1 if l is None else l
    L = model.layers[l]
    name = apply_update_name(model, l)
    b = Body(name)
    sb = Body(f"{name}/tick", tag="tick_")       # Scan body: one xorshift32 step of every lane
    s1 = sb.op("BitwiseXor", ["s", sb.op("BitShift", ["s", sb.const(13, np.uint32)], direction="LEFT")])
    s2 = sb.op("BitwiseXor", [s1, sb.op("BitShift", [s1, sb.const(17, np.uint32)], direction="RIGHT")])
    sb.named("BitwiseXor", [s2, sb.op("BitShift", [s2, sb.const(5, np.uint32)], direction="LEFT")], ["s_next"])
    sb.named("Identity", ["s_next"], ["r"])
    vi = helper.make_tensor_value_info
    tick = helper.make_graph(sb.nodes, "tick", [vi("s", TP.UINT32, [L.n_out + 1]), vi("g_row", TP.INT64, [L.n_out])],
                             [vi("s_next", TP.UINT32, [L.n_out + 1]), vi("r", TP.UINT32, [L.n_out + 1])])
    lanes_out, R = b.op("Scan", ["lanes", "G"], n_out=2, body=tick, num_scan_inputs=1, hint="tick")
    R64 = b.op("Cast", [R], to=TP.UINT64)

    def draws(cols_from: int, cols_to: int, k: str) -> str:
        sl = b.op("Slice", [R64, b.const([cols_from], np.int64), b.const([cols_to], np.int64),
                            b.const([1], np.int64)])
        shift = b.op("Cast", [b.op("Sub", [b.const(32, np.int64), k])], to=TP.UINT64)
        return b.op("Cast", [b.op("BitShift", [sl, shift], direction="RIGHT")], to=TP.INT64)

    y = b.op("Add", [b.op("Mul", ["G", "lr_m"]), draws(0, L.n_out, "lr_s")])
    w_new = b.op("Add", [b.op("Cast", ["W"], to=TP.INT64), b.floor_shift(y, "lr_s")])
    w_c, n_w = b.clip(w_new, -fp.W_MAX, fp.W_MAX, np.int64)
    b.named("Cast", [w_c], ["W_out"], to=TP.INT8)
    b.named("Identity", [lanes_out], ["lanes_out"])
    if L.per_input and model.learn.rule == "solsa":   # only SOLSA learns the synaptic decays
        ya = b.op("Add", [b.op("Mul", ["Ga", "lra_m"]),
                          b.op("Squeeze", [draws(L.n_out, L.n_out + 1, "lra_s"), b.const([1], np.int64)])])
        a_new = b.op("Add", [b.op("Cast", ["a_syn"], to=TP.INT64), b.floor_shift(ya, "lra_s")])
        a_c, n_a = b.clip(a_new, 0, fp.A_LEARN_MAX, np.int64)
        b.named("Cast", [a_c], ["a_syn_out"], to=TP.INT32)
        b.named("Add", [n_w, n_a], ["nsat"])
    else:
        b.named("Identity", ["a_syn"], ["a_syn_out"])
        b.named("Identity", [n_w], ["nsat"])
    return _function(name, ["W", "a_syn", "G", "Ga", "lanes", "lr_m", "lr_s", "lra_m", "lra_s"],
                     ["W_out", "a_syn_out", "lanes_out", "nsat"], b)


def rule_state_names(model: IntModel) -> list[str]:
    """The rule's state (B = 1, int64) in the learning step's signature, after W, a_syn, lanes, t, nsat
    (SOLSA learn_all: then each hidden layer's, h{l}_x ... h{l}_Ga, NUMERICS.md §10.8)."""
    if model.learn.rule == "readout_delta":
        return ["pre", "post"]
    return ["x", "e", "G", "q", "r", "Ga"] + [f"h{l}_{k}" for l in intsim.hidden_layers(model)
                                              for k in intsim.HIDDEN_ARRAYS]


def hidden_learned(model: IntModel) -> list[tuple[str, int]]:
    """(name, ONNX type) of what each learning hidden layer carries besides its traces: W, a_syn, its bank."""
    return [(f"h{l}_{k}", ty) for l in intsim.hidden_layers(model)
            for k, ty in (("W", TP.INT8), ("a_syn", TP.INT32), ("lanes", TP.UINT32))]


def rule_state_shapes(model: IntModel) -> dict[str, list[int]]:
    L = model.layers[-1]
    if model.learn.rule == "readout_delta":
        return {"pre": [L.n_in], "post": [L.n_out]}
    full = model.learn.get("factorised") == 0
    out = {"x": [L.n_in], "e": [L.n_in, L.n_out] if full else [L.n_in], "G": [L.n_in, L.n_out], "q": [L.n_in],
           "r": [L.n_in], "Ga": [L.n_in]}
    for l in intsim.hidden_layers(model):
        H = model.layers[l]
        out.update({f"h{l}_{k}": ([H.n_in, H.n_out] if k == "G" else [H.n_in]) for k in intsim.HIDDEN_ARRAYS})
        out.update({f"h{l}_W": [H.n_in, H.n_out], f"h{l}_a_syn": list(H.a_syn.shape), f"h{l}_lanes": [H.n_out + 1]})
    return out


def _syn_decay(b: Body, L_a_syn: str, a_mem: str, q: str, r: str, Ga: str, x_prev: str, W: str, phi: str):
    """§10.6 in the graph: (q', r', Ga', [saturation counts])."""
    a_vec = b.op("Cast", [L_a_syn], to=TP.INT64)
    q2, n_q = b.clip(b.op("Add", [b.mul_q12(q, a_vec, np.int64), x_prev]), -fp.TRACE_MAX, fp.TRACE_MAX, np.int64)
    r2, n_r = b.clip(b.op("Add", [b.mul_q12(r, a_mem, np.int64), q2]), -fp.TRACE_MAX, fp.TRACE_MAX, np.int64)
    psi = _back_signal(b, W, phi)
    Ga2, n_ga = b.clip(b.op("Add", [Ga, b.mul_q12(r2, psi, np.int64)]), -fp.GRAD_MAX, fp.GRAD_MAX, np.int64)
    return q2, r2, Ga2, [n_q, n_r, n_ga]


def _back_signal(b: Body, W: str, phi: str) -> str:
    """§10.6 psi = floor_shift(W @ phi, 7)."""
    return b.floor_shift(b.op("MatMul", [b.op("Cast", [W], to=TP.INT64), phi]), b.const(7, np.int64))


RULE_FUNCTION = {"readout_delta": "ReadoutDeltaLearnStep", "solsa": "SolsaLearnStep"}


def learn_step_function(model: IntModel) -> onnx.FunctionProto:
    """(s_in uint8 [1, N_in], label int64 [], params (last layer's W, a_syn replaced by the learned ones),
    states, lanes uint32, t int64 [], rule state) -> (spikes per layer, states', W', a_syn', lanes', t',
    rule state', nsat_fwd int64 [1], nsat_rule int64 [])."""
    rule = model.learn.rule
    n = len(model.layers)
    last = n - 1
    L = model.layers[-1]
    b = Body(RULE_FUNCTION[rule])
    prm = lambda name: f"learn_{name}"  # noqa: E731
    states = state_names(model)
    params = param_names(model)
    step_outs = b.op("NetworkStep", ["s_in"] + params + states, n_out=2 * n + len(states) + 1, domain=DOMAIN,
                     hint="net")
    spikes, vpres = step_outs[:n], step_outs[n:2 * n]
    new_states, nsat_fwd = step_outs[2 * n:-1], step_outs[-1]
    sq0 = b.const([0], np.int64)
    vec = lambda name: b.op("Cast", [b.op("Squeeze", [name, sq0])], to=TP.INT64)  # noqa: E731  [1,N] -> [N]
    s_last_in = vec("s_in" if n == 1 else spikes[-2])
    s_out = vec(spikes[-1])
    has_label = b.op("GreaterOrEqual", ["label", b.const(0, np.int64)])
    classes = b.const(np.arange(L.n_out), np.int64)
    onehot = b.op("Cast", [b.op("Equal", [classes, "label"])], to=TP.INT64)
    t1 = b.op("Add", ["t", b.const(1, np.int64)])
    update = b.op("Equal", [b.op("Mod", [t1, prm("k_update")], fmod=0), b.const(0, np.int64)])
    W, a_syn = f"L{last}_W", f"L{last}_a_syn"
    zero_i64 = b.const(0, np.int64)
    vi = helper.make_tensor_value_info

    def if_update(then_nodes: Body, then_outs, else_srcs, out_types, hint):
        """If(update) with a then-branch built in `then_nodes` and an else-branch passing values through."""
        eb = Body(f"{b.prefix}/{hint}_else", tag="else_")
        else_outs = []
        for src in else_srcs:
            o = eb.tmp("pass")
            eb.named("Identity", [src], [o])
            else_outs.append(o)
        th = helper.make_graph(then_nodes.nodes, f"{hint}_then", [],
                               [vi(o, ty, None) for o, ty in zip(then_outs, out_types)])
        el = helper.make_graph(eb.nodes, f"{hint}_else", [], [vi(o, ty, None) for o, ty in zip(else_outs, out_types)])
        return b.op("If", [update], n_out=len(then_outs), then_branch=th, else_branch=el, hint=hint)

    if rule == "readout_delta":
        pre = b.op("Add", ["pre", s_last_in])
        if L.kind == "lif":
            meas = s_out
        else:
            V_last = vec(new_states[state_names(model).index(f"L{last}_V")])
            meas = b.floor_shift(V_last, prm("v_shift"))
        post = b.op("Add", ["post", meas])
        tb = Body(f"{b.prefix}/upd", tag="then_")
        target = tb.op("Where", [tb.op("Cast", [onehot], to=TP.BOOL), prm("tgt_hi"), prm("tgt_lo")])
        err = tb.op("Clip", [tb.op("Sub", [target, post]), tb.const(-127, np.int64), tb.const(127, np.int64)])
        err = tb.op("Where", [has_label, err, tb.const(0, np.int64)])
        G = tb.op("Mul", [tb.op("Unsqueeze", [pre, tb.const([1], np.int64)]),
                          tb.op("Unsqueeze", [err, tb.const([0], np.int64)])])
        Ga = tb.op("ConstantOfShape", [tb.const([L.n_in], np.int64)],
                   value=numpy_helper.from_array(np.zeros(1, np.int64)))
        W2, a2, lanes2, n_upd = tb.op("ApplyUpdate", [W, a_syn, G, Ga, "lanes", prm("lr_m"), prm("lr_s"),
                                                      zero_i64, zero_i64], n_out=4, domain=DOMAIN, hint="apply")
        pre0 = tb.op("Mul", [pre, tb.const(0, np.int64)])
        post0 = tb.op("Mul", [post, tb.const(0, np.int64)])
        W3, a3, lanes3, pre3, post3, n3 = if_update(
            tb, [W2, a2, lanes2, pre0, post0, n_upd], [W, a_syn, "lanes", pre, post, zero_i64],
            [TP.INT8, TP.INT32, TP.UINT32, TP.INT64, TP.INT64, TP.INT64], "update")
        rule_out = [pre3, post3]
        nsat_rule = n3
    else:  # solsa
        if L.per_input:
            xi = state_names(model).index(f"L{last}_x")
            x_prev = vec(f"L{last}_x")
            x = vec(new_states[xi])
            n_x = zero_i64
        else:
            x_prev = "x"
            x_raw = b.op("Add", [b.mul_q12(x_prev, b.op("Cast", [a_syn], to=TP.INT64), np.int64),
                                 b.op("Mul", [s_last_in, b.const(1 << fp.TRACE_FRAC, np.int64)])])
            x, n_x = b.clip(x_raw, -fp.STATE_MAX, fp.STATE_MAX, np.int64)
        vpre = vec(vpres[-1])
        theta = b.op("Cast", [f"L{last}_theta"], to=TP.INT64)
        a_mem = b.op("Cast", [f"L{last}_a_mem"], to=TP.INT64)
        dist = b.op("Abs", [b.op("Sub", [vpre, theta])])
        h = b.op("Max", [b.op("Sub", [b.const(fp.Q_ONE, np.int64), b.floor_shift(dist, prm("sg_shift"))]), zero_i64])
        ell = b.op("Where", [has_label, b.op("Sub", [onehot, s_out]), zero_i64])
        phi = b.op("Mul", [h, ell])
        x_col = b.op("Unsqueeze", [x, b.const([1], np.int64)])
        if model.learn.get("factorised") == 0:
            e_raw = b.op("Add", [b.mul_q12("e", a_mem, np.int64), x_col])
            e, n_e = b.clip(e_raw, -fp.TRACE_MAX, fp.TRACE_MAX, np.int64)
            e_use = e
        else:
            p_raw = b.op("Add", [b.mul_q12("e", a_mem, np.int64), x])   # "e" holds the pre-trace p [N_in]
            e, n_e = b.clip(p_raw, -fp.TRACE_MAX, fp.TRACE_MAX, np.int64)
            e_use = b.op("Unsqueeze", [e, b.const([1], np.int64)])
        phi_row = b.op("Unsqueeze", [phi, b.const([0], np.int64)])
        G, n_g = b.clip(b.op("Add", ["G", b.mul_q12(e_use, phi_row, np.int64)]), -fp.GRAD_MAX, fp.GRAD_MAX,
                        np.int64)
        n_rule = [n_x, n_e, n_g]
        if model.learn.get("factorised") == 0 and model.learn.get("reset_path"):
            # §10.5b, after G: rho = max(0, 4096 - (h * theta) >> (12 + sg_shift)); e = decay(e, rho)
            sh = b.op("Add", [prm("sg_shift"), b.const(fp.Q, np.int64)])
            rho = b.op("Max", [b.op("Sub", [b.const(fp.Q_ONE, np.int64),
                                            b.floor_shift(b.op("Mul", [h, theta]), sh)]), zero_i64])
            e = b.mul_q12(e, b.op("Unsqueeze", [rho, b.const([0], np.int64)]), np.int64)
        if L.per_input:
            q, r, Ga, ns = _syn_decay(b, a_syn, a_mem, "q", "r", "Ga", x_prev, W, phi)
            n_rule += ns
        else:
            q, r, Ga = "q", "r", "Ga"
        # §10.8: the hidden layers, top down, from the post factor of the layer above (its W before the update)
        hidden = {}
        phi_above, W_above = phi, W
        for l in reversed(intsim.hidden_layers(model)):
            H, pre = model.layers[l], f"h{l}_"
            ell, n_ell = b.clip(_back_signal(b, W_above, phi_above), -fp.Q_ONE, fp.Q_ONE, np.int64)
            theta_l = b.op("Cast", [f"L{l}_theta"], to=TP.INT64)
            a_mem_l = b.op("Cast", [f"L{l}_a_mem"], to=TP.INT64)
            dist_l = b.op("Abs", [b.op("Sub", [vec(vpres[l]), theta_l])])
            h_l = b.op("Max", [b.op("Sub", [b.const(fp.Q_ONE, np.int64),
                                            b.floor_shift(dist_l, b.const(fp.surrogate_shift(int(H.theta)),
                                                                          np.int64))]), zero_i64])
            phi_l = b.mul_q12(h_l, ell, np.int64)
            n_rule.append(n_ell)
            if H.per_input:
                x_l = vec(new_states[state_names(model).index(f"L{l}_x")])
            else:
                s_in_l = vec("s_in" if l == 0 else spikes[l - 1])
                x_raw = b.op("Add", [b.mul_q12(pre + "x", b.op("Cast", [f"L{l}_a_syn"], to=TP.INT64), np.int64),
                                     b.op("Mul", [s_in_l, b.const(1 << fp.TRACE_FRAC, np.int64)])])
                x_l, n_xl = b.clip(x_raw, -fp.STATE_MAX, fp.STATE_MAX, np.int64)
                n_rule.append(n_xl)
            p_l, n_p = b.clip(b.op("Add", [b.mul_q12(pre + "p", a_mem_l, np.int64), x_l]), -fp.TRACE_MAX,
                              fp.TRACE_MAX, np.int64)
            n_rule.append(n_p)
            G_l = b.op("Add", [pre + "G", b.mul_q12(b.op("Unsqueeze", [p_l, b.const([1], np.int64)]),
                                                    b.op("Unsqueeze", [phi_l, b.const([0], np.int64)]), np.int64)])
            if H.per_input:
                q_l, r_l, Ga_l, ns = _syn_decay(b, f"L{l}_a_syn", a_mem_l, pre + "q", pre + "r", pre + "Ga",
                                                vec(f"L{l}_x"), f"L{l}_W", phi_l)
                n_rule += ns
            else:
                q_l, r_l, Ga_l = pre + "q", pre + "r", pre + "Ga"
            hidden[l] = {"x": x_l, "p": p_l, "G": G_l, "q": q_l, "r": r_l, "Ga": Ga_l}
            phi_above, W_above = phi_l, f"L{l}_W"
        tb = Body(f"{b.prefix}/upd", tag="then_")
        W2, a2, lanes2, n_upd = tb.op("ApplyUpdate", [W, a_syn, G, Ga, "lanes", prm("lr_m"), prm("lr_s"),
                                                      prm("lra_m"), prm("lra_s")], n_out=4, domain=DOMAIN,
                                      hint="apply")
        then_outs = [W2, a2, lanes2, tb.op("Mul", [G, tb.const(0, np.int64)]),
                     tb.op("Mul", [Ga, tb.const(0, np.int64)]), n_upd]
        else_srcs = [W, a_syn, "lanes", G, Ga, zero_i64]
        for l, hs in hidden.items():
            Wh, ah, lh, nh = tb.op(apply_update_name(model, l),
                                   [f"L{l}_W", f"L{l}_a_syn", hs["G"], hs["Ga"], f"h{l}_lanes", prm("lrh_m"),
                                    prm("lrh_s"), prm("lra_m"), prm("lra_s")], n_out=4, domain=DOMAIN,
                                   hint=f"apply{l}")
            then_outs += [Wh, ah, lh, tb.op("Mul", [hs["G"], tb.const(0, np.int64)]),
                          tb.op("Mul", [hs["Ga"], tb.const(0, np.int64)]), nh]
            else_srcs += [f"L{l}_W", f"L{l}_a_syn", f"h{l}_lanes", hs["G"], hs["Ga"], zero_i64]
        upd = if_update(tb, then_outs, else_srcs,
                        [TP.INT8, TP.INT32, TP.UINT32, TP.INT64, TP.INT64, TP.INT64] * (1 + len(hidden)), "update")
        W3, a3, lanes3, G3, Ga3, n3 = upd[:6]
        rule_out = [x, e, G3, q, r, Ga3]
        hidden_out = []
        n_upds = [n3]
        for k, (l, hs) in enumerate(hidden.items()):
            Wh, ah, lh, Gh, Gah, nh = upd[6 * (k + 1):6 * (k + 2)]
            hidden_out.append((l, [Wh, ah, lh]))
            n_upds.append(nh)
            hs["G"], hs["Ga"] = Gh, Gah
        for l in intsim.hidden_layers(model):
            rule_out += [hidden[l][k] for k in intsim.HIDDEN_ARRAYS]
        learned_out = [v for _, vs in sorted(hidden_out) for v in vs]
        nsat_rule = b.add_all(n_rule + n_upds)
    if rule == "readout_delta":
        learned_out = []
    outs = ([f"L{l}_s" for l in range(n)] + [f"{s}_out" for s in states]
            + ["W_out", "a_syn_out", "lanes_out", "t_out"] + [f"{h}_out" for h, _ in hidden_learned(model)]
            + [f"{s}_out" for s in rule_state_names(model)] + ["nsat_fwd", "nsat_rule"])
    srcs = spikes + new_states + [W3, a3, lanes3, t1] + learned_out + rule_out + [nsat_fwd, nsat_rule]
    for src, dst in zip(srcs, outs):
        b.named("Identity", [src], [dst])
    rule_params = [prm(k) for k in sorted(model.learn.params)]
    inputs = (["s_in", "label"] + params + rule_params + states + ["lanes", "t"]
              + [f"h{l}_lanes" for l in intsim.hidden_layers(model)] + rule_state_names(model))
    return _function(RULE_FUNCTION[rule], inputs, outs, b)


# ---- the model file ---------------------------------------------------------------------------

def initializers(model: IntModel) -> list[onnx.TensorProto]:
    out = []
    for l, L in enumerate(model.layers):
        out += [numpy_helper.from_array(np.ascontiguousarray(L.W, np.int8), f"L{l}_W"),
                numpy_helper.from_array(np.asarray(L.a_syn, np.int32), f"L{l}_a_syn"),
                numpy_helper.from_array(np.array(L.a_mem, np.int32), f"L{l}_a_mem"),
                numpy_helper.from_array(np.array(L.theta, np.int32), f"L{l}_theta"),
                numpy_helper.from_array(np.array(L.shift, np.int32), f"L{l}_shift"),
                numpy_helper.from_array(np.array(L.kind == "lif"), f"L{l}_spiking")]
    if model.probabilistic:
        from converters import onnx_gem
        out += onnx_gem.initializers(model)
    for k in sorted(model.learn.params):
        out.append(numpy_helper.from_array(np.array(model.learn.params[k], np.int64), f"learn_{k}"))
    return out


def widths() -> dict[str, int]:
    """The bit widths and fixed-point constants of NUMERICS.md §1 (recorded in every file)."""
    return {"w_bits": fp.W_BITS, "state_bits": fp.STATE_BITS, "trace_bits": fp.TRACE_BITS,
            "grad_bits": fp.GRAD_BITS, "q": fp.Q, "trace_frac": fp.TRACE_FRAC, "sig_lut_size": fp.SIG_LUT_SIZE}


def metadata(model: IntModel) -> dict[str, str]:
    dumps = lambda v: json.dumps(v, sort_keys=True, separators=(",", ":"))  # noqa: E731
    return {
        "snn_edge.format": str(FORMAT_VERSION),
        "snn_edge.numerics_version": str(fp.NUMERICS_VERSION),
        "snn_edge.layers": dumps([{"kind": L.kind, "w_exp": int(L.w_exp)} for L in model.layers]),
        "snn_edge.in_max": str(model.in_max),
        "snn_edge.binning": dumps(model.binning),
        "snn_edge.rule": model.learn.rule,
        "snn_edge.rule_version": str(RULE_VERSION),
        "snn_edge.learn_seed": str(model.learn.seed),
        "snn_edge.meta": dumps(model.meta),
        "snn_edge.widths": dumps(widths()),
        "snn_edge.compartments": str(model.compartments),
        "snn_edge.fire_seed": str(model.fire_seed),
    }


def functions(model: IntModel) -> list[onnx.FunctionProto]:
    if model.probabilistic:
        from converters import onnx_gem
        return onnx_gem.functions(model)
    fs = []
    if any(not L.per_input for L in model.layers):
        fs.append(lif_step_function())
    if any(L.per_input for L in model.layers):
        fs.append(lif_step_filtered_function())
    fs.append(network_step_function(model))
    if model.learn.rule != "none":
        fs += ([apply_update_function(model, l) for l in intsim.hidden_layers(model)]
               + [apply_update_function(model), learn_step_function(model)])
    return fs


def _state_zeros(b: Body, batch: str, n: int, dtype) -> str:
    shape = b.op("Concat", [batch, b.const([n], np.int64)], axis=0)
    return b.op("ConstantOfShape", [shape], value=numpy_helper.from_array(np.zeros(1, dtype)))


def sequence_graph(model: IntModel) -> onnx.GraphProto:
    """Main graph: spikes_in uint8 [T, B, N_in] -> every step's spikes/V/I per layer, cumulative nsat [T, B],
    scores [B, C] (spike counts, or summed membrane), prediction [B]."""
    if model.probabilistic:
        from converters import onnx_gem
        return onnx_gem.sequence_graph(model)
    n = len(model.layers)
    vi = helper.make_tensor_value_info
    b = Body("sequence")
    batch = b.op("Slice", [b.op("Shape", ["spikes_in"]), b.const([1], np.int64), b.const([2], np.int64)])
    init_states = []
    for l, L in enumerate(model.layers):
        init_states += [_state_zeros(b, batch, L.n_out, np.int32), _state_zeros(b, batch, L.n_out, np.int32)]
        if L.per_input:
            init_states.append(_state_zeros(b, batch, L.n_in, np.int32))
    nsat0 = b.op("ConstantOfShape", [batch], value=numpy_helper.from_array(np.zeros(1, np.int64)))
    # Scan body: state (states..., nsat_total), scan input s_t [B, N_in]
    sb = Body("sequence/step", tag="step_")
    snames = state_names(model)
    step_outs = sb.op("NetworkStep", ["s_t"] + param_names(model) + [f"{s}_in" for s in snames],
                      n_out=2 * n + len(snames) + 1, domain=DOMAIN, hint="net")
    spikes, new_states, nsat = step_outs[:n], step_outs[2 * n:-1], step_outs[-1]
    for src, s in zip(new_states, snames):
        sb.named("Identity", [src], [f"{s}_next"])
    sb.named("Add", ["nsat_in", nsat], ["nsat_next"])
    scan_outs = []
    for l in range(n):
        sb.named("Identity", [spikes[l]], [f"L{l}_s_t"])
        sb.named("Identity", [new_states[snames.index(f"L{l}_V")]], [f"L{l}_V_t"])
        sb.named("Identity", [new_states[snames.index(f"L{l}_I")]], [f"L{l}_I_t"])
        scan_outs += [vi(f"L{l}_s_t", TP.UINT8, None), vi(f"L{l}_V_t", TP.INT32, None), vi(f"L{l}_I_t", TP.INT32, None)]
    sb.named("Identity", ["nsat_next"], ["nsat_t"])
    body = helper.make_graph(
        sb.nodes, "step",
        [vi(f"{s}_in", TP.INT32, None) for s in snames] + [vi("nsat_in", TP.INT64, None),
                                                            vi("s_t", TP.UINT8, None)],
        [vi(f"{s}_next", TP.INT32, None) for s in snames] + [vi("nsat_next", TP.INT64, None)]
        + scan_outs + [vi("nsat_t", TP.INT64, None)])
    final = [f"{s}_final" for s in snames] + ["nsat_final"]
    per_step = []
    for l in range(n):
        per_step += [f"L{l}_spikes", f"L{l}_V", f"L{l}_I"]
    per_step.append("nsat")
    b.named("Scan", init_states + [nsat0, "spikes_in"], final + per_step, body=body, num_scan_inputs=1)
    last = model.layers[-1]
    src = f"L{n - 1}_V" if last.kind == "integrator" else f"L{n - 1}_spikes"
    b.named("ReduceSum", [b.op("Cast", [src], to=TP.INT64), b.const([0], np.int64)], ["scores"], keepdims=0)
    b.named("ArgMax", ["scores"], ["prediction"], axis=1, keepdims=0, select_last_index=0)
    outputs = []
    for l, L in enumerate(model.layers):
        outputs += [vi(f"L{l}_spikes", TP.UINT8, ["T", "B", L.n_out]), vi(f"L{l}_V", TP.INT32, ["T", "B", L.n_out]),
                    vi(f"L{l}_I", TP.INT32, ["T", "B", L.n_out])]
    outputs += [vi("nsat", TP.INT64, ["T", "B"]), vi("scores", TP.INT64, ["B", last.n_out]),
                vi("prediction", TP.INT64, ["B"])]
    return helper.make_graph(b.nodes, "snn_edge_sequence",
                             [vi("spikes_in", TP.UINT8, ["T", "B", model.layers[0].n_in])], outputs,
                             initializer=initializers(model))


def names_read(graph: onnx.GraphProto) -> set[str]:
    """Every value name a node of `graph` or of its subgraphs (Scan/If bodies) reads."""
    names: set[str] = set()
    for node in graph.node:
        names.update(node.input)
        for attr in node.attribute:
            for sub in ([attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)):
                names |= names_read(sub)
    return names


def _pass_through_carried_initializers(graph: onnx.GraphProto) -> None:
    """Initialisers no node of the graph reads become graph outputs (the values themselves): see the module doc."""
    used = names_read(graph) | {o.name for o in graph.output}
    graph.output.extend(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
                        for t in graph.initializer if t.name not in used)


def to_onnx(model: IntModel) -> onnx.ModelProto:
    validate(model, "model to export")
    graph = sequence_graph(model)
    _pass_through_carried_initializers(graph)
    m = helper.make_model(graph, opset_imports=OPSETS, functions=functions(model),
                          producer_name=PRODUCER, producer_version=str(FORMAT_VERSION),
                          doc_string="snn-edge integer SNN; semantics: docs/NUMERICS.md")
    m.ir_version = IR_VERSION
    helper.set_model_props(m, metadata(model))
    return m


def check(proto: onnx.ModelProto, where: str = "model") -> None:
    try:
        onnx.checker.check_model(proto, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise SnnEdgeError(f"{where}: onnx.checker (full check) failed: {str(exc).splitlines()[0]}") from None


write_bytes = write_atomic


def export(model: IntModel, path) -> bytes:
    """Write the ONNX file (checked at full check first) atomically; returns its bytes."""
    proto = to_onnx(model)
    check(proto, str(path))
    data = proto.SerializeToString(deterministic=True)
    write_bytes(path, data)
    return data


# ---- runnable wrappers around the file's functions (for onnxruntime) ----------------------------

def _wrapper(proto: onnx.ModelProto, graph: onnx.GraphProto) -> onnx.ModelProto:
    """A runnable model of `graph` with the file's functions; of the file's initialisers it keeps only those the
    graph reads (the step graph has no use for the rule's parameters, the learning graph does)."""
    used = names_read(graph)
    kept = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    m = helper.make_model(graph, opset_imports=OPSETS, functions=list(proto.functions), producer_name=PRODUCER)
    m.ir_version = IR_VERSION
    return m


def step_model(proto: onnx.ModelProto, model: IntModel) -> onnx.ModelProto:
    """The step graph alone: (s_in [B, N_in], states) -> (spikes, vpre, states', nsat)."""
    n = len(model.layers)
    vi = helper.make_tensor_value_info
    snames = state_names(model)
    outs = ([f"L{l}_s" for l in range(n)] + [f"L{l}_vpre" for l in range(n)] + [f"{s}_out" for s in snames]
            + ["nsat"])
    node = helper.make_node("NetworkStep", ["s_in"] + param_names(model) + snames, outs, domain=DOMAIN,
                            name="step")
    types = [TP.UINT8] * n + [TP.INT32] * n + [TP.INT32] * len(snames) + [TP.INT64]
    width = lambda s: model.layers[int(s[1:].split("_")[0])].n_in if s.endswith("_x") else \
        model.layers[int(s[1:].split("_")[0])].n_out  # noqa: E731
    shapes = ([["B", L.n_out] for L in model.layers] * 2 + [["B", width(s)] for s in snames] + [["B"]])
    g = helper.make_graph([node], "snn_edge_step",
                          [vi("s_in", TP.UINT8, ["B", model.layers[0].n_in])]
                          + [vi(s, TP.INT32, ["B", width(s)]) for s in snames],
                          [vi(o, t, sh) for o, t, sh in zip(outs, types, shapes)],
                          initializer=list(proto.graph.initializer))
    return _wrapper(proto, g)


def learn_model(proto: onnx.ModelProto, model: IntModel) -> onnx.ModelProto:
    """A Scan of the learning-step function over T steps (one stream): inputs spikes_in uint8 [T, 1, N_in],
    labels int64 [T], lanes0 uint32 [N_out+1]; outputs every step's spikes, states, W, a_syn, lanes, rule
    state, and the saturation counts."""
    if model.learn.rule == "none":
        raise SnnEdgeError("learning graph: the model has no on-device rule (snn_edge.rule = none)")
    if model.learn.rule == "gem":
        from converters import onnx_gem
        return onnx_gem.learn_model(proto, model)
    n = len(model.layers)
    last = n - 1
    vi = helper.make_tensor_value_info
    snames = state_names(model)
    rnames = rule_state_names(model)
    L = model.layers[-1]
    b = Body("learn")
    one = b.const([1], np.int64)
    init = []
    for l, Ll in enumerate(model.layers):
        init += [_state_zeros(b, one, Ll.n_out, np.int32), _state_zeros(b, one, Ll.n_out, np.int32)]
        if Ll.per_input:
            init.append(_state_zeros(b, one, Ll.n_in, np.int32))
    z = lambda *shape: b.op("ConstantOfShape", [b.const(list(shape), np.int64)],  # noqa: E731
                            value=numpy_helper.from_array(np.zeros(1, np.int64)))
    shapes_of = rule_state_shapes(model)
    rule_init = {r: z(*shapes_of[r]) for r in rnames}
    t0 = b.const(0, np.int64)
    hidden = hidden_learned(model)
    carried = ([f"{s}_c" for s in snames] + ["W_c", "a_syn_c", "lanes_c", "t_c"] + [f"{h}_c" for h, _ in hidden]
               + [f"{r}_c" for r in rnames])
    sb = Body("learn/step", tag="step_")
    params = param_names(model)
    learned = {f"L{last}_W": "W_c", f"L{last}_a_syn": "a_syn_c"}
    for l in intsim.hidden_layers(model):      # SOLSA learn_all: the hidden layers' W, a_syn are carried too
        learned.update({f"L{l}_W": f"h{l}_W_c", f"L{l}_a_syn": f"h{l}_a_syn_c"})
    fn_params = [learned.get(p, p) for p in params]
    rule_params = [f"learn_{k}" for k in sorted(model.learn.params)]
    outs = sb.op(RULE_FUNCTION[model.learn.rule],
                 ["s_t", "label_t"] + fn_params + rule_params + [f"{s}_c" for s in snames] + ["lanes_c", "t_c"]
                 + [f"h{l}_lanes_c" for l in intsim.hidden_layers(model)] + [f"{r}_c" for r in rnames],
                 n_out=n + len(snames) + 4 + len(hidden) + len(rnames) + 2, domain=DOMAIN, hint="learn")
    spikes = outs[:n]
    rest = outs[n:]
    nexts = [f"{c}_next" for c in carried]
    for src, dst in zip(rest[:len(carried)], nexts):
        sb.named("Identity", [src], [dst])
    nsat_fwd, nsat_rule = rest[len(carried):]
    scan_out_names = [f"L{l}_s_t" for l in range(n)] + [f"{c}_t" for c in carried] + ["nsat_fwd_t", "nsat_rule_t"]
    for src, dst in zip(spikes + nexts + [nsat_fwd, nsat_rule], scan_out_names):
        sb.named("Identity", [src], [dst])
    types = ([TP.INT32] * len(snames) + [TP.INT8, TP.INT32, TP.UINT32, TP.INT64] + [ty for _, ty in hidden]
             + [TP.INT64] * len(rnames))
    body = helper.make_graph(
        sb.nodes, "learn_step",
        [vi(c, t, None) for c, t in zip(carried, types)] + [vi("s_t", TP.UINT8, None), vi("label_t", TP.INT64, None)],
        [vi(c, t, None) for c, t in zip(nexts, types)]
        + [vi(f"L{l}_s_t", TP.UINT8, None) for l in range(n)]
        + [vi(f"{c}_t", t, None) for c, t in zip(carried, types)]
        + [vi("nsat_fwd_t", TP.INT64, None), vi("nsat_rule_t", TP.INT64, None)])
    final = [f"{c}_final" for c in carried]
    seq_outs = [f"L{l}_spikes" for l in range(n)] + [f"seq_{c[:-2]}" for c in carried] + ["nsat_fwd", "nsat_rule"]
    hidden_init = []
    lanes_inputs = [vi("lanes0", TP.UINT32, [L.n_out + 1])]
    lanes_defaults = []
    for l in intsim.hidden_layers(model):
        # each hidden bank starts from its seeds unless the caller continues a stream (an overridable input)
        H = model.layers[l]
        hidden_init += [f"L{l}_W", f"L{l}_a_syn", f"h{l}_lanes0"]
        lanes_inputs.append(vi(f"h{l}_lanes0", TP.UINT32, [H.n_out + 1]))
        lanes_defaults.append(numpy_helper.from_array(
            np.array(fp.lane_seeds(model.learn.seed + l, H.n_out + 1), np.uint32), f"h{l}_lanes0"))
    b.named("Scan", init + [f"L{last}_W", f"L{last}_a_syn", "lanes0", t0] + hidden_init
            + [rule_init[r] for r in rnames] + ["spikes_in", "labels"], final + seq_outs, body=body,
            num_scan_inputs=2)
    out_types = [TP.UINT8] * n + types + [TP.INT64, TP.INT64]
    shapes = ([[1, Ll.n_out] for Ll in model.layers]
              + [[1, model.layers[int(s[1:].split("_")[0])].n_in if s.endswith("_x")
                  else model.layers[int(s[1:].split("_")[0])].n_out] for s in snames]
              + [[L.n_in, L.n_out], list(L.a_syn.shape), [L.n_out + 1], []] + [shapes_of[h] for h, _ in hidden]
              + [shapes_of[r] for r in rnames] + [[1], []])
    g = helper.make_graph(b.nodes, "snn_edge_learn",
                          [vi("spikes_in", TP.UINT8, ["T", 1, model.layers[0].n_in]), vi("labels", TP.INT64, ["T"])]
                          + lanes_inputs,
                          [vi(o, t, ["T"] + sh) for o, t, sh in zip(seq_outs, out_types, shapes)],
                          initializer=list(proto.graph.initializer) + lanes_defaults)
    return _wrapper(proto, g)
