"""ONNX graphs of probabilistic (GEM) models, NUMERICS.md §11; used by converters/onnx_export.py.

Functions (domain snn_edge, standard-op bodies):
- `GlmStep(s_in u8 [R, N_in], W, a_syn, shift, bias, w_fb, a_fb, sig_shift, sig_lut, x, f, lanes u32 [R*N_out],
  clamp_on bool [], clamp u8 [R, N_out]) -> (s u8, u i32, idx i64, P i64, f_prev i32, x', f', lanes', nsat [R])`
- `GlmNetworkStep(s_rows, <per layer: W a_syn shift bias w_fb a_fb sig_shift>, sig_lut, <per layer: x f lanes>,
  clamp_on, clamp) -> (per layer s, u, idx, P, f_prev; states'; nsat)`
- `GlmApplyUpdate(W, bias, w_fb, GW, Gb, Gf, lanes, lr_m, lr_s, lrb_m, lrb_s) -> (W', bias', w_fb', lanes', nsat)`
- `GemLearnStep(...)`: forward (last layer clamped when labelled) + traces + importance weights + If(update).
The main graph runs rows R = B * K (compartments of a stream are consecutive rows) and seeds the firing
banks in the graph from `fire_seed` (lane seeding of §6 with int64 arithmetic).
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto as TP
from onnx import helper, numpy_helper

from converters.intmodel import IntModel
from firmware_py import fixedpoint as fp

LAYER_PARAMS = ("W", "a_syn", "shift", "bias", "w_fb", "a_fb", "sig_shift")
LEARN_PARAMS = ("a_mem",)


def _ox():
    from converters import onnx_export as ox
    return ox


def xorshift(b, s: str) -> str:
    s1 = b.op("BitwiseXor", [s, b.op("BitShift", [s, b.const(13, np.uint32)], direction="LEFT")])
    s2 = b.op("BitwiseXor", [s1, b.op("BitShift", [s1, b.const(17, np.uint32)], direction="RIGHT")])
    return b.op("BitwiseXor", [s2, b.op("BitShift", [s2, b.const(5, np.uint32)], direction="LEFT")])


def lane_seeds(b, seed: int, n: str) -> str:
    """§6 lane seeding in the graph: n (int64 []) lanes from an integer seed."""
    k = b.op("Range", [b.const(1, np.int64), b.op("Add", [n, b.const(1, np.int64)]), b.const(1, np.int64)])
    mixed = b.op("Mod", [b.op("Mul", [k, b.const(fp.LANE_MUL, np.int64)]), b.const(1 << 32, np.int64)], fmod=0)
    s = b.op("BitwiseXor", [mixed, b.const(seed & fp.MASK32, np.int64)])
    s = b.op("Where", [b.op("Equal", [s, b.const(0, np.int64)]), b.const(fp.ZERO_SEED_STATE, np.int64), s])
    s = b.op("Cast", [s], to=TP.UINT32)
    for _ in range(fp.LANE_WARMUP):
        s = xorshift(b, s)
    return s


def glm_step_function() -> onnx.FunctionProto:
    ox = _ox()
    b = ox.Body("GlmStep")
    x_in = b.op("Mul", [b.op("Cast", ["s_in"], to=TP.INT32), b.const(1 << fp.TRACE_FRAC, np.int32)])
    x2, n_x = b.clip_rows(b.op("Add", [b.mul_q12("x", "a_syn", np.int32), x_in]), fp.STATE_MAX, np.int32)
    acc = b.op("MatMul", [b.op("Cast", [x2], to=TP.INT64), b.op("Cast", ["W"], to=TP.INT64)])
    k = b.op("Sub", [b.op("Cast", ["shift"], to=TP.INT64), b.const(fp.TRACE_FRAC, np.int64)])
    zero = b.const(0, np.int64)
    up = b.pow2(b.op("Max", [k, zero]), np.int64)
    down = b.pow2(b.op("Max", [b.op("Neg", [k]), zero]), np.int64)
    cur = b.op("Div", [b.op("Mul", [acc, up]), down])
    fb = b.op("Div", [b.op("Mul", [b.op("Cast", ["w_fb"], to=TP.INT64), b.op("Cast", ["f"], to=TP.INT64)]),
                      b.const(1 << fp.TRACE_FRAC, np.int64)])
    u_raw = b.op("Add", [b.op("Add", [cur, fb]), b.op("Cast", ["bias"], to=TP.INT64)])
    u64, n_u = b.clip_rows(u_raw, fp.STATE_MAX, np.int64)
    idx = b.op("Clip", [b.op("Add", [b.floor_shift(u64, b.op("Cast", ["sig_shift"], to=TP.INT64)),
                                     b.const(128, np.int64)]), b.const(0, np.int64), b.const(255, np.int64)])
    P = b.op("Cast", [b.op("Gather", ["sig_lut", idx])], to=TP.INT64)
    lanes2 = xorshift(b, "lanes")
    r16 = b.op("Reshape", [b.op("Cast", [b.op("BitShift", [lanes2, b.const(16, np.uint32)], direction="RIGHT")],
                                to=TP.INT64), b.op("Shape", [u64])])
    # (ORT's Where has no bool kernel: select in int32)
    s = b.op("Cast", [b.op("Where", ["clamp_on", b.op("Cast", ["clamp"], to=TP.INT32),
                                     b.op("Cast", [b.op("Less", [r16, P])], to=TP.INT32)])], to=TP.BOOL)
    f_in = b.op("Mul", [b.op("Cast", [s], to=TP.INT32), b.const(1 << fp.TRACE_FRAC, np.int32)])
    f2, n_f = b.clip_rows(b.op("Add", [b.mul_q12("f", "a_fb", np.int32), f_in]), fp.STATE_MAX, np.int32)
    b.named("Cast", [s], ["s_out"], to=TP.UINT8)
    b.named("Cast", [u64], ["u"], to=TP.INT32)
    b.named("Identity", [idx], ["idx"])
    b.named("Identity", [P], ["P"])
    b.named("Identity", ["f"], ["f_prev"])
    b.named("Identity", [x2], ["x_out"])
    b.named("Identity", [f2], ["f_out"])
    b.named("Identity", [lanes2], ["lanes_out"])
    b.add_all([n_x, n_u, n_f], "nsat")
    return ox._function("GlmStep", ["s_in", "W", "a_syn", "shift", "bias", "w_fb", "a_fb", "sig_shift", "sig_lut",
                                    "x", "f", "lanes", "clamp_on", "clamp"],
                        ["s_out", "u", "idx", "P", "f_prev", "x_out", "f_out", "lanes_out", "nsat"], b)


def param_names(model: IntModel) -> list[str]:
    return [f"L{l}_{p}" for l in range(len(model.layers)) for p in LAYER_PARAMS]


def state_names(model: IntModel) -> list[str]:
    return [f"L{l}_{s}" for l in range(len(model.layers)) for s in ("x", "f", "lanes")]


def network_step_function(model: IntModel) -> onnx.FunctionProto:
    ox = _ox()
    n = len(model.layers)
    b = ox.Body("GlmNetworkStep")
    x = "s_rows"
    outs, new_states, nsats = {k: [] for k in ("s", "u", "idx", "P", "f_prev")}, [], []
    zero_clamp = None
    for l in range(n):
        p = [f"L{l}_{q}" for q in LAYER_PARAMS]
        if l == n - 1:
            on, cl = "clamp_on", "clamp"
        else:
            on = b.const(False, np.bool_)
            zero_clamp = b.op("ConstantOfShape", [b.op("Concat", [b.op("Slice", [b.op("Shape", [x]),
                                                                                 b.const([0], np.int64),
                                                                                 b.const([1], np.int64)]),
                                                                   b.const([model.layers[l].n_out], np.int64)],
                                                             axis=0)],
                                  value=numpy_helper.from_array(np.zeros(1, np.uint8)))
            cl = zero_clamp
        res = b.op("GlmStep", [x] + p + ["sig_lut", f"L{l}_x", f"L{l}_f", f"L{l}_lanes", on, cl], n_out=9,
                   domain=ox.DOMAIN, hint=f"L{l}")
        for key, v in zip(("s", "u", "idx", "P", "f_prev"), res[:5]):
            outs[key].append(v)
        new_states += res[5:8]
        nsats.append(res[8])
        x = res[0]
    names = [f"L{l}_{k}" for k in ("s", "u", "idx", "P", "f_prev") for l in range(n)]
    srcs = [v for k in ("s", "u", "idx", "P", "f_prev") for v in outs[k]]
    for src, dst in zip(srcs + new_states, names + [f"{s}_out" for s in state_names(model)]):
        b.named("Identity", [src], [dst])
    b.add_all(nsats, "nsat")
    return ox._function("GlmNetworkStep", ["s_rows"] + param_names(model) + ["sig_lut"] + state_names(model)
                        + ["clamp_on", "clamp"], names + [f"{s}_out" for s in state_names(model)] + ["nsat"], b)


def apply_update_function() -> onnx.FunctionProto:
    """§11 scheduled update of one layer: the bank ticks N_in times (W), then twice more (bias, w_fb)."""
    ox = _ox()
    b = ox.Body("GlmApplyUpdate")
    sb = ox.Body("GlmApplyUpdate/tick", tag="tick_")
    sb.named("Identity", [xorshift(sb, "s")], ["s_next"])
    sb.named("Identity", ["s_next"], ["r"])
    vi = helper.make_tensor_value_info
    tick = helper.make_graph(sb.nodes, "tick", [vi("s", TP.UINT32, None), vi("g", TP.INT64, None)],
                             [vi("s_next", TP.UINT32, None), vi("r", TP.UINT32, None)])
    drive = b.op("ConstantOfShape", [b.op("Add", [b.op("Slice", [b.op("Shape", ["W"]), b.const([0], np.int64),
                                                                  b.const([1], np.int64)]),
                                                   b.const([2], np.int64)])],
                 value=numpy_helper.from_array(np.zeros(1, np.int64)))
    lanes_out, R = b.op("Scan", ["lanes", drive], n_out=2, body=tick, num_scan_inputs=1, hint="tick")
    R64 = b.op("Cast", [R], to=TP.UINT64)
    n_in = b.op("Slice", [b.op("Shape", ["W"]), b.const([0], np.int64), b.const([1], np.int64)])
    n_out = b.op("Slice", [b.op("Shape", ["W"]), b.const([1], np.int64), b.const([2], np.int64)])

    def draws(rows_from, rows_to, k: str) -> str:
        sl = b.op("Slice", [R64, b.op("Concat", [rows_from, b.const([0], np.int64)], axis=0),
                            b.op("Concat", [rows_to, n_out], axis=0)])
        shift = b.op("Cast", [b.op("Sub", [b.const(32, np.int64), k])], to=TP.UINT64)
        return b.op("Cast", [b.op("BitShift", [sl, shift], direction="RIGHT")], to=TP.INT64)

    def update(value: str, G: str, m: str, s: str, r: str, lo: int, hi: int):
        y = b.op("Add", [b.op("Mul", [G, m]), r])
        new = b.op("Add", [b.op("Cast", [value], to=TP.INT64), b.floor_shift(y, s)])
        return b.clip(new, lo, hi, np.int64)

    one = b.const([1], np.int64)
    w_c, n_w = update("W", "GW", "lr_m", "lr_s", draws(b.const([0], np.int64), n_in, "lr_s"), -fp.W_MAX, fp.W_MAX)
    sq = b.const([0], np.int64)
    rb = b.op("Squeeze", [draws(n_in, b.op("Add", [n_in, one]), "lrb_s"), sq])
    n_in1 = b.op("Add", [n_in, one])
    rf = b.op("Squeeze", [draws(n_in1, b.op("Add", [n_in1, one]), "lrb_s"), sq])
    b_c, n_b = update("bias", "Gb", "lrb_m", "lrb_s", rb, -fp.STATE_MAX, fp.STATE_MAX)
    f_c, n_f = update("w_fb", "Gf", "lrb_m", "lrb_s", rf, -fp.STATE_MAX, fp.STATE_MAX)
    b.named("Cast", [w_c], ["W_out"], to=TP.INT8)
    b.named("Cast", [b_c], ["bias_out"], to=TP.INT32)
    b.named("Cast", [f_c], ["w_fb_out"], to=TP.INT32)
    b.named("Identity", [lanes_out], ["lanes_out"])
    b.add_all([n_w, n_b, n_f], "nsat")
    return ox._function("GlmApplyUpdate", ["W", "bias", "w_fb", "GW", "Gb", "Gf", "lanes", "lr_m", "lr_s", "lrb_m",
                                           "lrb_s"], ["W_out", "bias_out", "w_fb_out", "lanes_out", "nsat"], b)


def rule_state_names(model: IntModel) -> list[str]:
    out = ["ll"]
    for l in range(len(model.layers)):
        out += [f"L{l}_{k}" for k in ("eW", "eb", "ef", "GW", "Gb", "Gf")]
    return out


def learned_names(model: IntModel) -> list[str]:
    return [f"L{l}_{k}" for l in range(len(model.layers)) for k in ("W", "bias", "w_fb", "bank")]


def learn_step_function(model: IntModel) -> onnx.FunctionProto:
    """(s_in u8 [1, N_in], label i64 [], layer params (W, bias, w_fb are the carried learned ones), sig/logsig/exp
    tables, a_mem per layer, learn_*, forward states (K rows), banks, t, rule state) -> (spikes per layer,
    forward states', learned params' and banks', t', rule state', nsat)."""
    ox = _ox()
    n = len(model.layers)
    K = model.compartments
    b = ox.Body("GemLearnStep")
    C = model.layers[-1].n_out
    rows = b.op("Reshape", [b.op("Expand", ["s_in", b.const([K, 1], np.int64)]),
                            b.const([K, model.layers[0].n_in], np.int64)])
    has_label = b.op("GreaterOrEqual", ["label", b.const(0, np.int64)])
    onehot = b.op("Cast", [b.op("Equal", [b.const(np.arange(C), np.int64), "label"])], to=TP.UINT8)
    clamp = b.op("Expand", [b.op("Unsqueeze", [onehot, b.const([0], np.int64)]), b.const([K, C], np.int64)])
    res = b.op("GlmNetworkStep", [rows] + param_names(model) + ["sig_lut"] + state_names(model) + [has_label, clamp],
               n_out=5 * n + 3 * n + 1, domain=ox.DOMAIN, hint="net")
    get = {k: res[i * n:(i + 1) * n] for i, k in enumerate(("s", "u", "idx", "P", "f_prev"))}
    new_states = res[5 * n:8 * n]
    nsat_fwd = res[-1]
    zero = b.const(0, np.int64)
    q_one = b.const(fp.Q_ONE, np.int64)
    mul_q12 = lambda x, a: b.mul_q12(x, a, np.int64)  # noqa: E731
    n_rule = []
    new_rule = {}
    for l in range(n):
        s64 = b.op("Cast", [get["s"][l]], to=TP.INT64)
        g = b.op("Sub", [b.op("Mul", [s64, q_one]), b.op("Div", [get["P"][l], b.const(16, np.int64)])])
        a_mem = b.op("Cast", [f"L{l}_a_mem"], to=TP.INT64)
        x = b.op("Cast", [new_states[3 * l]], to=TP.INT64)
        eW_new = b.op("Add", [mul_q12(f"L{l}_eW", a_mem),
                              mul_q12(b.op("Unsqueeze", [x, b.const([2], np.int64)]),
                                      b.op("Unsqueeze", [g, b.const([1], np.int64)]))])
        eb_new = b.op("Add", [mul_q12(f"L{l}_eb", a_mem), mul_q12(b.const(1 << fp.TRACE_FRAC, np.int64), g)])
        ef_new = b.op("Add", [mul_q12(f"L{l}_ef", a_mem), mul_q12(b.op("Cast", [get["f_prev"][l]], to=TP.INT64), g)])
        for key, raw in (("eW", eW_new), ("eb", eb_new), ("ef", ef_new)):
            v, nv = b.clip(raw, -fp.TRACE_MAX, fp.TRACE_MAX, np.int64)
            new_rule[f"L{l}_{key}"] = b.op("Where", [has_label, v, f"L{l}_{key}"])
            n_rule.append(b.op("Where", [has_label, nv, zero]))
    last = n - 1
    s_last = b.op("Cast", [get["s"][last]], to=TP.BOOL)
    lp = b.op("Where", [s_last, b.op("Gather", ["logsig_lut", get["idx"][last]]),
                        b.op("Gather", ["logsig_lut", b.op("Sub", [b.const(255, np.int64), get["idx"][last]])])])
    step_ll = b.op("ReduceSum", [b.op("Cast", [lp], to=TP.INT64), b.const([1], np.int64)], keepdims=0)
    ll_raw = b.op("Add", [mul_q12("ll", "learn_ll_decay"), step_ll])
    ll_c, n_ll = b.clip(ll_raw, -fp.GRAD_MAX, fp.GRAD_MAX, np.int64)
    ll = b.op("Where", [has_label, ll_c, "ll"])
    n_rule.append(b.op("Where", [has_label, n_ll, zero]))
    diff = b.op("Sub", [b.op("ReduceMax", [ll], keepdims=1), ll])
    k = b.op("Min", [b.floor_shift(diff, b.const(4, np.int64)), b.const(255, np.int64)])
    w = b.op("Cast", [b.op("Gather", ["exp_lut", k])], to=TP.INT64)
    wn = b.op("Div", [b.op("Mul", [w, q_one]), b.op("ReduceSum", [w], keepdims=1)])
    for l in range(n):
        for key, e, axes in (("GW", "eW", [K, 1, 1]), ("Gb", "eb", [K, 1]), ("Gf", "ef", [K, 1])):
            wk = b.op("Reshape", [wn, b.const(axes, np.int64)])
            add = b.op("ReduceSum", [mul_q12(new_rule[f"L{l}_{e}"], wk), b.const([0], np.int64)], keepdims=0)
            v, nv = b.clip(b.op("Add", [f"L{l}_{key}", add]), -fp.GRAD_MAX, fp.GRAD_MAX, np.int64)
            new_rule[f"L{l}_{key}"] = b.op("Where", [has_label, v, f"L{l}_{key}"])
            n_rule.append(b.op("Where", [has_label, nv, zero]))
    new_rule["ll"] = ll
    t1 = b.op("Add", ["t", b.const(1, np.int64)])
    update = b.op("Equal", [b.op("Mod", [t1, "learn_k_update"], fmod=0), zero])
    tb = ox.Body("GemLearnStep/upd", tag="then_")
    eb_ = ox.Body("GemLearnStep/keep", tag="else_")
    then_outs, else_outs, types = [], [], []
    for l in range(n):
        W2, b2, f2, bank2, nu = tb.op("GlmApplyUpdate", [f"L{l}_W", f"L{l}_bias", f"L{l}_w_fb",
                                                         new_rule[f"L{l}_GW"], new_rule[f"L{l}_Gb"],
                                                         new_rule[f"L{l}_Gf"], f"L{l}_bank", "learn_lr_m", "learn_lr_s",
                                                         "learn_lrb_m", "learn_lrb_s"],
                                      n_out=5, domain=ox.DOMAIN, hint=f"apply{l}")
        zeros = [tb.op("Mul", [new_rule[f"L{l}_{key}"], tb.const(0, np.int64)]) for key in ("GW", "Gb", "Gf")]
        then_outs += [W2, b2, f2, bank2] + zeros + [nu]
        for src in [f"L{l}_W", f"L{l}_bias", f"L{l}_w_fb", f"L{l}_bank"] + [new_rule[f"L{l}_{k}"] for k in
                                                                             ("GW", "Gb", "Gf")]:
            o = eb_.tmp("pass")
            eb_.named("Identity", [src], [o])
            else_outs.append(o)
        o = eb_.tmp("zero")
        eb_.named("Identity", [zero], [o])
        else_outs.append(o)
        types += [TP.INT8, TP.INT32, TP.INT32, TP.UINT32, TP.INT64, TP.INT64, TP.INT64, TP.INT64]
    vi = helper.make_tensor_value_info
    th = helper.make_graph(tb.nodes, "update_then", [], [vi(o, t_, None) for o, t_ in zip(then_outs, types)])
    el = helper.make_graph(eb_.nodes, "update_else", [], [vi(o, t_, None) for o, t_ in zip(else_outs, types)])
    upd = b.op("If", [update], n_out=len(then_outs), then_branch=th, else_branch=el, hint="update")
    learned_out, n_upd = [], []
    for l in range(n):
        chunk = upd[8 * l:8 * (l + 1)]
        learned_out += chunk[:4]
        new_rule[f"L{l}_GW"], new_rule[f"L{l}_Gb"], new_rule[f"L{l}_Gf"] = chunk[4:7]
        n_upd.append(chunk[7])
    nsat_rule = b.add_all(n_rule + n_upd)
    outs = ([f"L{l}_s" for l in range(n)] + [f"{s}_out" for s in state_names(model)]
            + [f"{s}_out" for s in learned_names(model)] + ["t_out"] + [f"{r}_out" for r in rule_state_names(model)]
            + ["nsat_fwd", "nsat_rule"])
    srcs = (get["s"] + new_states + learned_out + [t1] + [new_rule[r] for r in rule_state_names(model)]
            + [nsat_fwd, nsat_rule])
    for src, dst in zip(srcs, outs):
        b.named("Identity", [src], [dst])
    inputs = (["s_in", "label"] + param_names(model) + [f"L{l}_a_mem" for l in range(n)]
              + ["sig_lut", "logsig_lut", "exp_lut"] + [f"learn_{k}" for k in sorted(model.learn.params)]
              + state_names(model) + [f"L{l}_bank" for l in range(n)] + ["t"] + rule_state_names(model))
    return ox._function("GemLearnStep", inputs, outs, b)


def initializers(model: IntModel) -> list[onnx.TensorProto]:
    out = []
    for l, L in enumerate(model.layers):
        out += [numpy_helper.from_array(np.asarray(L.bias, np.int32), f"L{l}_bias"),
                numpy_helper.from_array(np.asarray(L.w_fb, np.int32), f"L{l}_w_fb"),
                numpy_helper.from_array(np.array(L.a_fb, np.int32), f"L{l}_a_fb"),
                numpy_helper.from_array(np.array(L.sig_shift, np.int32), f"L{l}_sig_shift")]
    out += [numpy_helper.from_array(np.array(fp.sigmoid_lut(), np.int32), "sigmoid_lut"),
            numpy_helper.from_array(np.array(fp.logsig_lut(), np.int32), "logsig_lut"),
            numpy_helper.from_array(np.array(fp.exp_lut(), np.int32), "exp_lut")]
    return out


def functions(model: IntModel) -> list[onnx.FunctionProto]:
    fs = [glm_step_function(), network_step_function(model)]
    if model.learn.rule == "gem":
        fs += [apply_update_function(), learn_step_function(model)]
    return fs


def sequence_graph(model: IntModel) -> onnx.GraphProto:
    """spikes_in u8 [T, B, N_in] -> per layer spikes/u/f [T, B*K, N] (rows b*K + c), nsat [T, B*K],
    scores [B, C] (spike counts over t and compartments), prediction [B]."""
    ox = _ox()
    n = len(model.layers)
    K = model.compartments
    vi = helper.make_tensor_value_info
    b = ox.Body("sequence")
    shape = b.op("Shape", ["spikes_in"])
    T = b.op("Slice", [shape, b.const([0], np.int64), b.const([1], np.int64)])
    B = b.op("Slice", [shape, b.const([1], np.int64), b.const([2], np.int64)])
    R = b.op("Mul", [B, b.const([K], np.int64)])
    n_in = model.layers[0].n_in
    x4 = b.op("Expand", [b.op("Unsqueeze", ["spikes_in", b.const([2], np.int64)]),
                         b.op("Concat", [T, B, b.const([K, n_in], np.int64)], axis=0)])
    rows_in = b.op("Reshape", [x4, b.op("Concat", [T, R, b.const([n_in], np.int64)], axis=0)])
    init = []
    for l, L in enumerate(model.layers):
        init.append(ox._state_zeros(b, R, L.n_in, np.int32))
        init.append(ox._state_zeros(b, R, L.n_out, np.int32))
        bank = lane_seeds(b, model.fire_seed + l, b.const(K * L.n_out, np.int64))   # one stream's bank
        per_stream = b.op("Expand", [b.op("Unsqueeze", [bank, b.const([0], np.int64)]),
                                     b.op("Concat", [B, b.const([K * L.n_out], np.int64)], axis=0)])
        init.append(b.op("Reshape", [per_stream, b.const([-1], np.int64)]))
    nsat0 = b.op("ConstantOfShape", [R], value=numpy_helper.from_array(np.zeros(1, np.int64)))
    clamp0 = ox._state_zeros(b, R, model.layers[-1].n_out, np.uint8)
    sb = ox.Body("sequence/step", tag="step_")
    snames = state_names(model)
    res = sb.op("GlmNetworkStep", ["s_t"] + param_names(model) + ["sigmoid_lut"] + [f"{s}_in" for s in snames]
                + [sb.const(False, np.bool_), clamp0], n_out=8 * n + 1, domain=ox.DOMAIN, hint="net")
    spikes, us, new_states, nsat = res[:n], res[n:2 * n], res[5 * n:8 * n], res[-1]
    for src, s in zip(new_states, snames):
        sb.named("Identity", [src], [f"{s}_next"])
    sb.named("Add", ["nsat_in", nsat], ["nsat_next"])
    scan_outs = []
    for l in range(n):
        sb.named("Identity", [spikes[l]], [f"L{l}_s_t"])
        sb.named("Identity", [us[l]], [f"L{l}_V_t"])
        sb.named("Identity", [new_states[3 * l + 1]], [f"L{l}_I_t"])
        scan_outs += [vi(f"L{l}_s_t", TP.UINT8, None), vi(f"L{l}_V_t", TP.INT32, None),
                      vi(f"L{l}_I_t", TP.INT32, None)]
    sb.named("Identity", ["nsat_next"], ["nsat_t"])
    types = {"x": TP.INT32, "f": TP.INT32, "lanes": TP.UINT32}
    body = helper.make_graph(
        sb.nodes, "step",
        [vi(f"{s}_in", types[s.split("_", 1)[1]], None) for s in snames] + [vi("nsat_in", TP.INT64, None),
                                                                            vi("s_t", TP.UINT8, None)],
        [vi(f"{s}_next", types[s.split("_", 1)[1]], None) for s in snames] + [vi("nsat_next", TP.INT64, None)]
        + scan_outs + [vi("nsat_t", TP.INT64, None)])
    per_step = []
    for l in range(n):
        per_step += [f"L{l}_spikes", f"L{l}_V", f"L{l}_I"]
    b.named("Scan", init + [nsat0, rows_in], [f"{s}_final" for s in snames] + ["nsat_final"] + per_step + ["nsat"],
            body=body, num_scan_inputs=1)
    C = model.layers[-1].n_out
    counts = b.op("Reshape", [b.op("Cast", [f"L{n - 1}_spikes"], to=TP.INT64),
                              b.op("Concat", [T, B, b.const([K, C], np.int64)], axis=0)])
    b.named("ReduceSum", [counts, b.const([0, 2], np.int64)], ["scores"], keepdims=0)
    b.named("ArgMax", ["scores"], ["prediction"], axis=1, keepdims=0, select_last_index=0)
    outputs = []
    for l, L in enumerate(model.layers):
        outputs += [vi(f"L{l}_spikes", TP.UINT8, ["T", "R", L.n_out]), vi(f"L{l}_V", TP.INT32, ["T", "R", L.n_out]),
                    vi(f"L{l}_I", TP.INT32, ["T", "R", L.n_out])]
    outputs += [vi("nsat", TP.INT64, ["T", "R"]), vi("scores", TP.INT64, ["B", C]), vi("prediction", TP.INT64, ["B"])]
    return helper.make_graph(b.nodes, "snn_edge_sequence", [vi("spikes_in", TP.UINT8, ["T", "B", n_in])], outputs,
                             initializer=ox.initializers(model))


def learn_model(proto: onnx.ModelProto, model: IntModel) -> onnx.ModelProto:
    """A Scan of GemLearnStep over T steps of one stream: inputs spikes_in u8 [T, 1, N_in], labels i64 [T];
    outputs every step's spikes (K rows), forward states, learned params, banks, rule state, nsat."""
    ox = _ox()
    n = len(model.layers)
    K = model.compartments
    vi = helper.make_tensor_value_info
    b = ox.Body("learn")
    kk = b.const([K], np.int64)
    init, types, shapes = [], [], []
    for l, L in enumerate(model.layers):
        init += [ox._state_zeros(b, kk, L.n_in, np.int32), ox._state_zeros(b, kk, L.n_out, np.int32),
                 lane_seeds(b, model.fire_seed + l, b.const(K * L.n_out, np.int64))]
        types += [TP.INT32, TP.INT32, TP.UINT32]
        shapes += [[K, L.n_in], [K, L.n_out], [K * L.n_out]]
    learned = []
    for l, L in enumerate(model.layers):
        learned += [f"L{l}_W", f"L{l}_bias", f"L{l}_w_fb",
                    lane_seeds(b, model.learn.seed + l, b.const(L.n_out + 1, np.int64))]
        types += [TP.INT8, TP.INT32, TP.INT32, TP.UINT32]
        shapes += [[L.n_in, L.n_out], [L.n_out], [L.n_out], [L.n_out + 1]]
    t0 = b.const(0, np.int64)
    types.append(TP.INT64)
    shapes.append([])
    z = lambda *shape: b.op("ConstantOfShape", [b.const(list(shape), np.int64)],  # noqa: E731
                            value=numpy_helper.from_array(np.zeros(1, np.int64)))
    rule_init = [z(K)]
    shapes.append([K])
    for L in model.layers:
        rule_init += [z(K, L.n_in, L.n_out), z(K, L.n_out), z(K, L.n_out), z(L.n_in, L.n_out), z(L.n_out), z(L.n_out)]
        shapes += [[K, L.n_in, L.n_out], [K, L.n_out], [K, L.n_out], [L.n_in, L.n_out], [L.n_out], [L.n_out]]
    types += [TP.INT64] * len(rule_init)
    carried_names = state_names(model) + learned_names(model) + ["t"] + rule_state_names(model)
    carried = [f"{c}_c" for c in carried_names]
    sb = ox.Body("learn/step", tag="step_")
    # the function's parameter inputs: learned W/bias/w_fb come from the carried state
    params = [f"{p}_c" if p.rsplit("_", 1)[-1] in ("W",) or p.endswith("_bias") or p.endswith("_w_fb") else p
              for p in param_names(model)]
    res = sb.op("GemLearnStep", ["s_t", "label_t"] + params + [f"L{l}_a_mem" for l in range(n)]
                + ["sigmoid_lut", "logsig_lut", "exp_lut"] + [f"learn_{k}" for k in sorted(model.learn.params)]
                + [f"{s}_c" for s in state_names(model)] + [f"L{l}_bank_c" for l in range(n)] + ["t_c"]
                + [f"{r}_c" for r in rule_state_names(model)],
                n_out=n + len(carried) + 2, domain=ox.DOMAIN, hint="learn")
    spikes, rest = res[:n], res[n:]
    nexts = [f"{c}_next" for c in carried]
    for src, dst in zip(rest[:len(carried)], nexts):
        sb.named("Identity", [src], [dst])
    scan_names = [f"L{l}_s_t" for l in range(n)] + [f"{c}_t" for c in carried] + ["nsat_fwd_t", "nsat_rule_t"]
    for src, dst in zip(spikes + nexts + list(rest[len(carried):]), scan_names):
        sb.named("Identity", [src], [dst])
    body = helper.make_graph(
        sb.nodes, "learn_step",
        [vi(c, t_, None) for c, t_ in zip(carried, types)] + [vi("s_t", TP.UINT8, None), vi("label_t", TP.INT64, None)],
        [vi(c, t_, None) for c, t_ in zip(nexts, types)] + [vi(f"L{l}_s_t", TP.UINT8, None) for l in range(n)]
        + [vi(f"{c}_t", t_, None) for c, t_ in zip(carried, types)]
        + [vi("nsat_fwd_t", TP.INT64, None), vi("nsat_rule_t", TP.INT64, None)])
    seq_outs = [f"L{l}_spikes" for l in range(n)] + [f"seq_{c}" for c in carried_names] + ["nsat_fwd", "nsat_rule"]
    b.named("Scan", init + learned + [t0] + rule_init + ["spikes_in", "labels"],
            [f"{c}_final" for c in carried] + seq_outs, body=body, num_scan_inputs=2)
    out_types = [TP.UINT8] * n + types + [TP.INT64, TP.INT64]
    out_shapes = [[K, L.n_out] for L in model.layers] + shapes + [[K], []]
    g = helper.make_graph(b.nodes, "snn_edge_gem_learn",
                          [vi("spikes_in", TP.UINT8, ["T", 1, model.layers[0].n_in]), vi("labels", TP.INT64, ["T"])],
                          [vi(o, t_, ["T"] + sh) for o, t_, sh in zip(seq_outs, out_types, out_shapes)],
                          initializer=list(proto.graph.initializer))
    return ox._wrapper(proto, g)
