"""The host's fast bit-exact integer simulator: docs/NUMERICS.md vectorised with numpy.

Forward over a batch X [T, B, N_in] and the on-device learning rules (readout delta rule, SOLSA) for
one stream. Every formula mirrors a primitive of `firmware_py/fixedpoint.py` (tests check them against
each other and against the golden vectors). Products are int64; the weight products use float64 BLAS,
which is exact here because every partial sum is an integer below 2**53 (|x| < 2**19, |W| <= 127,
N_in < 2**26).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from converters.intmodel import IntLayer, IntModel
from edge.errors import SnnEdgeError
from firmware_py import fixedpoint as fp

MASK32 = np.uint64(fp.MASK32)


# ---- vectorised primitives (NUMERICS.md §0, §6, §7) -------------------------------------------

def mul_q12(x: np.ndarray, a) -> np.ndarray:
    """trunc(x * a / 4096) elementwise (fixedpoint.mul_q12)."""
    p = np.asarray(x, np.int64) * np.asarray(a, np.int64)
    return np.where(p >= 0, p >> fp.Q, -((-p) >> fp.Q))


def trunc_div_pow2(x: np.ndarray, k: int) -> np.ndarray:
    return np.where(x >= 0, x >> k, -((-x) >> k))


def scale_pow2(x: np.ndarray, k: int) -> np.ndarray:
    return x << k if k >= 0 else trunc_div_pow2(x, -k)


def sat(x: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    """(x clamped to [-m, m], saturation count per batch row [B]) for a batched x [B, ...]."""
    y = np.clip(x, -m, m)
    return y, (y != x).reshape(x.shape[0], -1).sum(axis=1)


def sat1(x: np.ndarray, m: int) -> tuple[np.ndarray, int]:
    """(x clamped to [-m, m], total saturation count) for one stream's array."""
    y = np.clip(x, -m, m)
    return y, int((y != x).sum())


def exact_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Integer product through float64 BLAS: exact while every partial sum stays below 2**53."""
    return np.rint(a.astype(np.float64) @ b.astype(np.float64)).astype(np.int64)


def xorshift32(s: np.ndarray) -> np.ndarray:
    s = s ^ ((s << np.uint64(13)) & MASK32)
    s = s ^ (s >> np.uint64(17))
    return s ^ ((s << np.uint64(5)) & MASK32)


def draw_bits(r: np.ndarray, k: int) -> np.ndarray:
    if k <= 0:
        return np.zeros(r.shape, np.int64)
    return (r >> np.uint64(32 - k)).astype(np.int64)


# ---- forward (§4) ------------------------------------------------------------------------------

@dataclass
class LayerState:
    I: np.ndarray   # [B, N_out] int64
    V: np.ndarray   # [B, N_out] int64
    x: np.ndarray   # [B, N_in] int64 (per-input decay) or [B, 0]


def initial_state(model: IntModel, batch: int) -> list[LayerState]:
    return [LayerState(np.zeros((batch, L.n_out), np.int64), np.zeros((batch, L.n_out), np.int64),
                       np.zeros((batch, L.n_in if L.per_input else 0), np.int64)) for L in model.layers]


def layer_step(L: IntLayer, s_in: np.ndarray, st: LayerState):
    """One step of one layer for a batch: -> (spikes uint8 [B, N_out], vpre, new state, nsat [B])."""
    s_in = s_in.astype(np.int64)
    if L.per_input:
        x, n0 = sat(mul_q12(st.x, L.a_syn.astype(np.int64)) + (s_in << fp.TRACE_FRAC), fp.STATE_MAX)
        I, n1 = sat(scale_pow2(exact_matmul(x, L.W), L.shift - fp.TRACE_FRAC), fp.STATE_MAX)
    else:
        x, n0 = st.x, 0
        I, n1 = sat(mul_q12(st.I, int(L.a_syn)) + (exact_matmul(s_in, L.W) << L.shift), fp.STATE_MAX)
    vpre, n2 = sat(mul_q12(st.V, L.a_mem) + I, fp.STATE_MAX)
    if L.kind == "lif":
        spikes = (vpre > L.theta)
        V = vpre - L.theta * spikes
    else:
        spikes = np.zeros(vpre.shape, bool)
        V = vpre
    return spikes.astype(np.uint8), vpre, LayerState(I, V, x), n0 + n1 + n2


def network_step(model: IntModel, s_in: np.ndarray, states: list[LayerState]):
    """One step of the network: -> (spikes per layer, vpre per layer, new states, nsat [B])."""
    spikes, vpres, new, nsat = [], [], [], 0
    x = s_in
    for L, st in zip(model.layers, states):
        s, vp, st2, n = layer_step(L, x, st)
        spikes.append(s)
        vpres.append(vp)
        new.append(st2)
        nsat = nsat + n
        x = s
    return spikes, vpres, new, nsat


@dataclass
class SimResult:
    spikes: list[np.ndarray]    # per layer [T, B, N] uint8
    V: list[np.ndarray]         # per layer [T, B, N] int32 (after reset)
    I: list[np.ndarray]         # per layer [T, B, N] int32
    nsat: np.ndarray            # [T, B] int64, cumulative
    scores: np.ndarray          # [B, C] int64: spike counts, or summed membrane (integrator)

    @property
    def predictions(self) -> np.ndarray:
        return np.argmax(self.scores, axis=1)  # ties -> lowest index (NUMERICS.md §5)


def check_input(model: IntModel, X: np.ndarray, where: str = "input") -> None:
    n_in = model.layers[0].n_in
    if X.ndim != 3 or X.shape[2] != n_in:
        raise SnnEdgeError(f"{where}: expected spikes [T, B, {n_in}], got shape {list(X.shape)}")
    if X.size and (X.min() < 0 or X.max() > model.in_max):
        raise SnnEdgeError(f"{where}: input values must be in [0, {model.in_max}], got "
                           f"[{X.min()}, {X.max()}]")


def run(model: IntModel, X: np.ndarray) -> SimResult:
    """The integer forward pass over a window X [T, B, N_in] (uint8) from the zero state, every step recorded.

    Layer by layer over the whole window (the network is feed-forward within a step, so this is the same
    arithmetic as `network_step` applied step by step): each layer's spike currents for all T steps are one
    exact BLAS product, and only the element-wise recurrences loop over t.
    """
    if model.probabilistic:
        return run_gem(model, X)
    check_input(model, X)
    T, B, _ = X.shape
    spikes, V, I = [], [], []
    nsat = np.zeros((T, B), np.int64)
    layer_in = X
    for L in model.layers:
        s_all = np.zeros((T, B, L.n_out), np.uint8)
        V_all = np.zeros((T, B, L.n_out), np.int32)
        I_all = np.zeros((T, B, L.n_out), np.int32)
        if L.per_input:
            xs = np.empty((T, B, L.n_in), np.int64)
            x = np.zeros((B, L.n_in), np.int64)
            a = L.a_syn.astype(np.int64)
            for t in range(T):
                x, n = sat(mul_q12(x, a) + (layer_in[t].astype(np.int64) << fp.TRACE_FRAC), fp.STATE_MAX)
                xs[t] = x
                nsat[t] += n
            cur = exact_matmul(xs.reshape(T * B, L.n_in), L.W).reshape(T, B, L.n_out)
        else:
            cur = exact_matmul(layer_in.reshape(T * B, L.n_in), L.W).reshape(T, B, L.n_out) << L.shift
        i_state = np.zeros((B, L.n_out), np.int64)
        v_state = np.zeros((B, L.n_out), np.int64)
        for t in range(T):
            if L.per_input:
                i_state, n1 = sat(scale_pow2(cur[t], L.shift - fp.TRACE_FRAC), fp.STATE_MAX)
            else:
                i_state, n1 = sat(mul_q12(i_state, int(L.a_syn)) + cur[t], fp.STATE_MAX)
            vpre, n2 = sat(mul_q12(v_state, L.a_mem) + i_state, fp.STATE_MAX)
            nsat[t] += n1 + n2
            if L.kind == "lif":
                fire = vpre > L.theta
                v_state = vpre - L.theta * fire
                s_all[t] = fire
            else:
                v_state = vpre
            V_all[t] = v_state
            I_all[t] = i_state
        spikes.append(s_all)
        V.append(V_all)
        I.append(I_all)
        layer_in = s_all
    last = model.layers[-1]
    scores = (V[-1].astype(np.int64).sum(axis=0) if last.kind == "integrator"
              else spikes[-1].astype(np.int64).sum(axis=0))
    return SimResult(spikes, V, I, np.cumsum(nsat, axis=0), scores)


# ---- learning (§7, §9, §10), one stream ------------------------------------------------------

@dataclass
class LearnState:
    """Everything the on-device rule keeps between steps (B = 1)."""
    lanes: np.ndarray                      # uint64 [N_out + 1], values < 2**32
    t: int = 0                             # step index since the sample start
    nsat: int = 0                          # saturations of the rule (clamps of W / a_syn / traces)
    arrays: dict = field(default_factory=dict)
    hidden_lanes: dict = field(default_factory=dict)   # SOLSA learn_all: layer -> its bank (like lanes)


def hidden_layers(model: IntModel) -> range:
    """The hidden layers that learn: all of them with SOLSA's learn_all (NUMERICS.md §10.8), else none."""
    if model.learn.rule == "solsa" and model.learn.get("learn_all"):
        return range(len(model.layers) - 1)
    return range(0)


HIDDEN_ARRAYS = ("x", "p", "G", "q", "r", "Ga")    # §10.8 state of hidden layer l: arrays["h{l}_" + name]


def initial_learn_state(model: IntModel) -> LearnState:
    L = model.layers[-1]
    lanes = np.array(fp.lane_seeds(model.learn.seed + len(model.layers) - 1, L.n_out + 1), np.uint64)
    z = lambda *shape: np.zeros(shape, np.int64)  # noqa: E731
    rule = model.learn.rule
    if rule == "readout_delta":
        arrays = {"pre": z(L.n_in), "post": z(L.n_out)}
    elif rule == "solsa":
        full = model.learn.get("factorised") == 0
        # "e": eligibility [N_in, N_out] (full) or the pre-trace p [N_in] (factorised)
        arrays = {"x": z(L.n_in), "e": z(L.n_in, L.n_out) if full else z(L.n_in), "G": z(L.n_in, L.n_out),
                  "q": z(L.n_in), "r": z(L.n_in), "Ga": z(L.n_in)}
    else:
        raise SnnEdgeError(f"learning rule {rule!r}: the model has no on-device rule to run")
    hidden = {}
    for l in hidden_layers(model):
        H = model.layers[l]
        for name in HIDDEN_ARRAYS:
            arrays[f"h{l}_{name}"] = z(H.n_in, H.n_out) if name == "G" else z(H.n_in)
        hidden[l] = np.array(fp.lane_seeds(model.learn.seed + l, H.n_out + 1), np.uint64)
    return LearnState(lanes, 0, 0, arrays, hidden)


def sample_start(model: IntModel, ls: LearnState | None) -> LearnState:
    """The rule's state at a sample start (NUMERICS.md §5): traces and accumulators zero, the learning
    banks and the saturation count carried over from `ls` (None: the first sample)."""
    fresh = initial_learn_state(model)
    if ls is not None:
        fresh.lanes, fresh.nsat, fresh.hidden_lanes = ls.lanes, ls.nsat, ls.hidden_lanes
    return fresh


def apply_update(L: IntLayer, G: np.ndarray, lr_m: int, lr_s: int, lanes: np.ndarray,
                 Ga: np.ndarray | None = None, lra_m: int = 0, lra_s: int = 0):
    """§7 vectorised over lanes (fixedpoint.apply_update): -> (W', a_syn', lanes', nsat)."""
    R = np.empty((L.n_in, lanes.size), np.uint64)
    s = lanes
    for i in range(L.n_in):           # tick i = row i; lanes are independent, so each tick is a vector op
        s = xorshift32(s)
        R[i] = s
    n_out = L.n_out
    W = L.W.astype(np.int64) + ((G * lr_m + draw_bits(R[:, :n_out], lr_s)) >> lr_s)
    Wc = np.clip(W, -fp.W_MAX, fp.W_MAX)
    nsat = int((Wc != W).sum())
    a_syn = L.a_syn
    if Ga is not None and L.per_input:
        a = L.a_syn.astype(np.int64) + ((Ga * lra_m + draw_bits(R[:, n_out], lra_s)) >> lra_s)
        ac = np.clip(a, 0, fp.A_LEARN_MAX)
        nsat += int((ac != a).sum())
        a_syn = ac.astype(np.int32)
    return Wc.astype(np.int8), a_syn, s, nsat


def reset_factor(h: np.ndarray, theta: int, sg_shift: int) -> np.ndarray:
    """§10.5b, vectorised fp.solsa_reset_factor: max(0, 4096 - (h * theta) >> (12 + sg_shift))."""
    return np.maximum(0, fp.Q_ONE - ((h.astype(np.int64) * int(theta)) >> (fp.Q + sg_shift)))


def back_signal(W: np.ndarray, phi: np.ndarray) -> np.ndarray:
    """§10.6 psi[i] = floor_shift(sum_j W[i, j] * phi[j], 7): a layer's post factor seen by its inputs."""
    return exact_matmul(W, phi) >> 7


def syn_decay_traces(A: dict, prefix: str, L: IntLayer, x_prev: np.ndarray, phi: np.ndarray) -> int:
    """§10.6 for one layer with per-input a_syn: q, r and Ga in A[prefix + name]; returns saturations."""
    q, n1 = sat1(mul_q12(A[prefix + "q"], L.a_syn.astype(np.int64)) + x_prev, fp.TRACE_MAX)
    r, n2 = sat1(mul_q12(A[prefix + "r"], L.a_mem) + q, fp.TRACE_MAX)
    Ga, n3 = sat1(A[prefix + "Ga"] + mul_q12(r, back_signal(L.W, phi)), fp.GRAD_MAX)
    A[prefix + "q"], A[prefix + "r"], A[prefix + "Ga"] = q, r, Ga
    return n1 + n2 + n3


def rule_input_trace(A: dict, key: str, L: IntLayer, s_in: np.ndarray, x_fwd: np.ndarray) -> tuple[np.ndarray, int]:
    """§10: a layer's input trace x: its own forward x with per-input a_syn (mirrored in A so every executor
    reports the same rule state), else the rule's trace of its input with the scalar a_syn."""
    if L.per_input:
        A[key] = x_fwd.copy()
        return A[key], 0
    x, n = sat1(mul_q12(A[key], int(L.a_syn)) + (s_in.astype(np.int64) << fp.TRACE_FRAC), fp.STATE_MAX)
    A[key] = x
    return x, n


def solsa_hidden_step(model: IntModel, l: int, s_in: np.ndarray, vpre: np.ndarray, x_fwd: np.ndarray,
                      x_prev: np.ndarray, phi_above: np.ndarray, ls: LearnState) -> tuple[np.ndarray, int]:
    """§10.8.1-5 for hidden layer l at one step: -> (phi_l, saturations). W of the layer above is pre-update."""
    L, A, pre = model.layers[l], ls.arrays, f"h{l}_"
    ell, n = sat1(back_signal(model.layers[l + 1].W, phi_above), fp.Q_ONE)
    h = np.maximum(0, fp.Q_ONE - (np.abs(vpre - L.theta) >> fp.surrogate_shift(int(L.theta))))
    phi = mul_q12(h, ell)
    x, n1 = rule_input_trace(A, pre + "x", L, s_in, x_fwd)
    p, n2 = sat1(mul_q12(A[pre + "p"], L.a_mem) + x, fp.TRACE_MAX)
    A[pre + "p"] = p
    A[pre + "G"] = A[pre + "G"] + mul_q12(p[:, None], phi[None, :])    # no saturation: |G| < 2**23 (§10.8.4)
    n += n1 + n2
    if L.per_input:
        n += syn_decay_traces(A, pre, L, x_prev, phi)
    return phi, n


def learn_step(model: IntModel, s_in: np.ndarray, states: list[LayerState], ls: LearnState, label: int):
    """One step of forward + the model's rule for one stream (s_in [N_in]); label < 0 means unknown.

    Mutates the learned layers of `model` (W, a_syn) at scheduled updates, returns (spikes, states, ls).
    """
    L = model.layers[-1]
    prm = model.learn.params
    x_prev_all = [st.x[0].copy() for st in states]
    x_prev_fwd = x_prev_all[-1]
    spikes, vpres, states, nsat_fwd = network_step(model, s_in[None, :], states)
    s_last_in = (s_in if len(model.layers) == 1 else spikes[-2][0]).astype(np.int64)
    s_out = spikes[-1][0].astype(np.int64)
    vpre = vpres[-1][0]
    A = ls.arrays
    onehot = np.zeros(L.n_out, np.int64)
    if label >= 0:
        onehot[label] = 1
    nsat = 0
    update = (ls.t + 1) % int(prm["k_update"]) == 0
    if model.learn.rule == "readout_delta":
        A["pre"] = A["pre"] + s_last_in
        A["post"] = A["post"] + (s_out if L.kind == "lif" else states[-1].V[0] >> int(prm["v_shift"]))
        if update:
            if label >= 0:
                target = np.where(onehot == 1, int(prm["tgt_hi"]), int(prm["tgt_lo"]))
                err = np.clip(target - A["post"], -127, 127)
            else:
                err = np.zeros(L.n_out, np.int64)
            G = A["pre"][:, None] * err[None, :]
            L.W, L.a_syn, ls.lanes, n = apply_update(L, G, int(prm["lr_m"]), int(prm["lr_s"]), ls.lanes)
            nsat += n
            A["pre"] = np.zeros_like(A["pre"])
            A["post"] = np.zeros_like(A["post"])
    else:  # solsa
        x, n = rule_input_trace(A, "x", L, s_last_in, states[-1].x[0])
        nsat += n
        h = np.maximum(0, fp.Q_ONE - (np.abs(vpre - L.theta) >> int(prm["sg_shift"])))
        ell = (onehot - s_out) if label >= 0 else np.zeros(L.n_out, np.int64)
        phi = h * ell
        if prm["factorised"] == 0:
            e, n = sat1(mul_q12(A["e"], L.a_mem) + x[:, None], fp.TRACE_MAX)
            nsat += n
            A["e"] = e
        else:
            p, n = sat1(mul_q12(A["e"], L.a_mem) + x, fp.TRACE_MAX)
            nsat += n
            A["e"] = p
            e = p[:, None]
        G, n = sat1(A["G"] + mul_q12(e, phi[None, :]), fp.GRAD_MAX)
        nsat += n
        A["G"] = G
        if prm["factorised"] == 0 and prm["reset_path"]:
            # §10.5b: dV/dVpre = 1 - theta sg' through the soft reset, every step, after G used Vpre's e
            A["e"] = mul_q12(A["e"], reset_factor(h, L.theta, int(prm["sg_shift"]))[None, :])
        if L.per_input:
            nsat += syn_decay_traces(A, "", L, x_prev_fwd, phi)
        for l in reversed(hidden_layers(model)):
            s_l = s_in if l == 0 else spikes[l - 1][0]
            phi, n = solsa_hidden_step(model, l, s_l, vpres[l][0], states[l].x[0], x_prev_all[l], phi, ls)
            nsat += n
        if update:
            L.W, L.a_syn, ls.lanes, n = apply_update(L, A["G"], int(prm["lr_m"]), int(prm["lr_s"]), ls.lanes,
                                                     A["Ga"], int(prm["lra_m"]), int(prm["lra_s"]))
            nsat += n
            A["G"] = np.zeros_like(A["G"])
            A["Ga"] = np.zeros_like(A["Ga"])
            for l in hidden_layers(model):
                H, pre = model.layers[l], f"h{l}_"
                H.W, H.a_syn, ls.hidden_lanes[l], n = apply_update(
                    H, A[pre + "G"], int(prm["lrh_m"]), int(prm["lrh_s"]), ls.hidden_lanes[l], A[pre + "Ga"],
                    int(prm["lra_m"]), int(prm["lra_s"]))
                nsat += n
                A[pre + "G"] = np.zeros_like(A[pre + "G"])
                A[pre + "Ga"] = np.zeros_like(A[pre + "Ga"])
    ls.t += 1
    ls.nsat += nsat
    return spikes, states, ls, int(nsat_fwd[0])


def learn_sequence(model: IntModel, X: np.ndarray, labels: np.ndarray, states=None, ls=None):
    """Run `learn_step` over X [T, N_in] with a label per step ([T], -1 = none); returns a trace dict.

    The trace holds every step's spikes, states, rule arrays and weights: what the bit-exact tests compare.
    """
    states = initial_state(model, 1) if states is None else states
    ls = initial_learn_state(model) if ls is None else ls
    trace = {"spikes": [], "V": [], "I": [], "W": [], "a_syn": [], "lanes": [], "rule": []}
    for t in range(X.shape[0]):
        spikes, states, ls, _ = learn_step(model, X[t], states, ls, int(labels[t]))
        trace["spikes"].append([s[0].copy() for s in spikes])
        trace["V"].append([st.V[0].copy() for st in states])
        trace["I"].append([st.I[0].copy() for st in states])
        trace["W"].append(model.layers[-1].W.copy())
        trace["a_syn"].append(model.layers[-1].a_syn.copy())
        trace["lanes"].append(ls.lanes.copy())
        rule = {k: v.copy() for k, v in ls.arrays.items()}
        for l, lanes in ls.hidden_lanes.items():     # the hidden layers' learned values, as ONNX names them
            H = model.layers[l]
            rule.update({f"h{l}_W": H.W.copy(), f"h{l}_a_syn": H.a_syn.copy(), f"h{l}_lanes": lanes.copy()})
        trace["rule"].append(rule)
    return trace, states, ls


# ---- GEM: probabilistic GLM layers with K compartments (NUMERICS.md §11) -----------------------

SIG = np.array(fp.sigmoid_lut(), np.int64)
LOGSIG = np.array(fp.logsig_lut(), np.int64)
EXP_LUT = np.array(fp.exp_lut(), np.int64)


def lane_seeds(seed: int, n: int) -> np.ndarray:
    """fixedpoint.lane_seeds vectorised: uint64 [n] (values < 2**32)."""
    k = np.arange(1, n + 1, dtype=np.uint64)
    s = (np.uint64(seed & fp.MASK32) ^ ((k * np.uint64(fp.LANE_MUL)) & MASK32)) & MASK32
    s = np.where(s == 0, np.uint64(fp.ZERO_SEED_STATE), s)
    for _ in range(fp.LANE_WARMUP):
        s = xorshift32(s)
    return s


@dataclass
class GlmState:
    x: np.ndarray       # [R, N_in] int64 input trace
    f: np.ndarray       # [R, N_out] int64 self-feedback trace
    lanes: np.ndarray   # [R * N_out] uint64 firing bank


def initial_glm_state(model: IntModel, rows: int) -> list[GlmState]:
    """Zero traces; every stream's K rows start from the same firing bank lane_seeds(fire_seed + l, K * N_out),
    so a sample's spikes do not depend on its position in a batch (§11)."""
    K = model.compartments
    if rows % K:
        raise SnnEdgeError(f"GEM state: {rows} rows is not a whole number of streams of K = {K} compartments")
    return [GlmState(np.zeros((rows, L.n_in), np.int64), np.zeros((rows, L.n_out), np.int64),
                     np.tile(lane_seeds(model.fire_seed + l, K * L.n_out), rows // K))
            for l, L in enumerate(model.layers)]


@dataclass
class GlmStep:
    s: np.ndarray        # [R, N_out] uint8 spikes (sampled or clamped)
    u: np.ndarray        # potential
    idx: np.ndarray      # sigmoid table index
    P: np.ndarray        # SIG[idx]
    f_prev: np.ndarray   # feedback trace used in u
    nsat: np.ndarray     # [R]


def glm_layer_step(L: IntLayer, s_in: np.ndarray, st: GlmState, clamp: np.ndarray | None = None):
    """§11 steps 1-5 for one layer over rows R: -> (GlmStep, new state)."""
    x, n0 = sat(mul_q12(st.x, int(L.a_syn)) + (s_in.astype(np.int64) << fp.TRACE_FRAC), fp.STATE_MAX)
    fb = trunc_div_pow2(L.w_fb.astype(np.int64) * st.f, fp.TRACE_FRAC)
    u, n1 = sat(scale_pow2(exact_matmul(x, L.W), L.shift - fp.TRACE_FRAC) + fb + L.bias.astype(np.int64),
                fp.STATE_MAX)
    idx = np.clip((u >> L.sig_shift) + 128, 0, fp.SIG_LUT_SIZE - 1)
    P = SIG[idx]
    lanes = xorshift32(st.lanes)
    s = (lanes >> np.uint64(16)).astype(np.int64).reshape(u.shape) < P
    if clamp is not None:
        s = clamp.astype(bool)
    s = s.astype(np.uint8)
    f, n2 = sat(mul_q12(st.f, L.a_fb) + (s.astype(np.int64) << fp.TRACE_FRAC), fp.STATE_MAX)
    return GlmStep(s, u, idx, P, st.f, n0 + n1 + n2), GlmState(x, f, lanes)


def glm_network_step(model: IntModel, s_rows: np.ndarray, states: list[GlmState], clamp_last=None):
    steps, new = [], []
    x = s_rows
    for l, (L, st) in enumerate(zip(model.layers, states)):
        out, st2 = glm_layer_step(L, x, st, clamp_last if l == len(model.layers) - 1 else None)
        steps.append(out)
        new.append(st2)
        x = out.s
    return steps, new


def run_gem(model: IntModel, X: np.ndarray) -> SimResult:
    """Inference of a probabilistic model: rows r = b * K + c. In the result, V holds the potential u and
    I the feedback trace f (per layer [T, B*K, N]); scores are spike counts over t and compartments."""
    check_input(model, X)
    T, B, _ = X.shape
    K = model.compartments
    states = initial_glm_state(model, B * K)
    spikes = [np.zeros((T, B * K, L.n_out), np.uint8) for L in model.layers]
    U = [np.zeros((T, B * K, L.n_out), np.int32) for L in model.layers]
    Fs = [np.zeros((T, B * K, L.n_out), np.int32) for L in model.layers]
    nsat = np.zeros((T, B * K), np.int64)
    total = np.zeros(B * K, np.int64)
    for t in range(T):
        steps, states = glm_network_step(model, np.repeat(X[t], K, axis=0), states)
        for l, (o, st) in enumerate(zip(steps, states)):
            spikes[l][t], U[l][t], Fs[l][t] = o.s, o.u, st.f
            total = total + o.nsat
        nsat[t] = total
    C = model.layers[-1].n_out
    scores = spikes[-1].astype(np.int64).reshape(T, B, K, C).sum(axis=(0, 2))
    return SimResult(spikes, U, Fs, nsat, scores)


def glm_apply_update(L: IntLayer, GW, Gb, Gf, prm: dict, lanes: np.ndarray):
    """§11 scheduled update of one layer: N_in ticks for W (§7), one for bias, one for w_fb."""
    R = np.empty((L.n_in + 2, lanes.size), np.uint64)
    s = lanes
    for i in range(L.n_in + 2):
        s = xorshift32(s)
        R[i] = s
    n = L.n_out
    lr_m, lr_s, lrb_m, lrb_s = (int(prm[k]) for k in ("lr_m", "lr_s", "lrb_m", "lrb_s"))
    W = L.W.astype(np.int64) + ((GW * lr_m + draw_bits(R[:L.n_in, :n], lr_s)) >> lr_s)
    Wc = np.clip(W, -fp.W_MAX, fp.W_MAX)
    b = L.bias.astype(np.int64) + ((Gb * lrb_m + draw_bits(R[L.n_in, :n], lrb_s)) >> lrb_s)
    bc = np.clip(b, -fp.STATE_MAX, fp.STATE_MAX)
    f = L.w_fb.astype(np.int64) + ((Gf * lrb_m + draw_bits(R[L.n_in + 1, :n], lrb_s)) >> lrb_s)
    fc = np.clip(f, -fp.STATE_MAX, fp.STATE_MAX)
    nsat = int((Wc != W).sum() + (bc != b).sum() + (fc != f).sum())
    return Wc.astype(np.int8), bc.astype(np.int32), fc.astype(np.int32), s, nsat


def initial_gem_learn_state(model: IntModel) -> LearnState:
    K = model.compartments
    arrays = {"ll": np.zeros(K, np.int64)}
    banks = []
    for l, L in enumerate(model.layers):
        arrays[f"L{l}_eW"] = np.zeros((K, L.n_in, L.n_out), np.int64)
        arrays[f"L{l}_eb"] = np.zeros((K, L.n_out), np.int64)
        arrays[f"L{l}_ef"] = np.zeros((K, L.n_out), np.int64)
        arrays[f"L{l}_GW"] = np.zeros((L.n_in, L.n_out), np.int64)
        arrays[f"L{l}_Gb"] = np.zeros(L.n_out, np.int64)
        arrays[f"L{l}_Gf"] = np.zeros(L.n_out, np.int64)
        banks.append(lane_seeds(model.learn.seed + l, L.n_out + 1))
    return LearnState(banks[-1], 0, 0, arrays | {"banks": banks})   # .lanes unused by GEM: see "banks"


def gem_learn_step(model: IntModel, s_in: np.ndarray, states: list[GlmState], ls: LearnState, label: int):
    """§11 forward (last layer clamped when labelled) + GEM traces + scheduled update, one stream."""
    K = model.compartments
    prm = model.learn.params
    A = ls.arrays
    last = model.layers[-1]
    clamp = None
    if label >= 0:
        clamp = np.zeros((K, last.n_out), np.uint8)
        clamp[:, label] = 1
    steps, states = glm_network_step(model, np.repeat(s_in[None, :], K, axis=0), states, clamp)
    nsat = 0
    if label >= 0:
        for l, (L, o, st) in enumerate(zip(model.layers, steps, states)):
            g = (o.s.astype(np.int64) << fp.Q) - (o.P >> 4)
            eW, n1 = sat1(mul_q12(A[f"L{l}_eW"], L.a_mem) + mul_q12(st.x[:, :, None], g[:, None, :]), fp.TRACE_MAX)
            eb, n2 = sat1(mul_q12(A[f"L{l}_eb"], L.a_mem) + mul_q12(np.int64(1 << fp.TRACE_FRAC), g),
                          fp.TRACE_MAX)
            ef, n3 = sat1(mul_q12(A[f"L{l}_ef"], L.a_mem) + mul_q12(o.f_prev, g), fp.TRACE_MAX)
            A[f"L{l}_eW"], A[f"L{l}_eb"], A[f"L{l}_ef"] = eW, eb, ef
            nsat += n1 + n2 + n3
        o = steps[-1]
        step_ll = np.where(o.s == 1, LOGSIG[o.idx], LOGSIG[fp.SIG_LUT_SIZE - 1 - o.idx]).sum(axis=1)
        ll, n = sat1(mul_q12(A["ll"], int(prm["ll_decay"])) + step_ll, fp.GRAD_MAX)
        A["ll"] = ll
        nsat += n
        w = EXP_LUT[np.minimum(fp.SIG_LUT_SIZE - 1, (ll.max() - ll) >> 4)]
        wn = (w * fp.Q_ONE) // w.sum()          # non-negative: floor == trunc
        for l in range(len(model.layers)):
            GW, n1 = sat1(A[f"L{l}_GW"] + mul_q12(A[f"L{l}_eW"], wn[:, None, None]).sum(axis=0), fp.GRAD_MAX)
            Gb, n2 = sat1(A[f"L{l}_Gb"] + mul_q12(A[f"L{l}_eb"], wn[:, None]).sum(axis=0), fp.GRAD_MAX)
            Gf, n3 = sat1(A[f"L{l}_Gf"] + mul_q12(A[f"L{l}_ef"], wn[:, None]).sum(axis=0), fp.GRAD_MAX)
            A[f"L{l}_GW"], A[f"L{l}_Gb"], A[f"L{l}_Gf"] = GW, Gb, Gf
            nsat += n1 + n2 + n3
        A["wn"] = wn
    if (ls.t + 1) % int(prm["k_update"]) == 0:
        for l, L in enumerate(model.layers):
            L.W, L.bias, L.w_fb, A["banks"][l], n = glm_apply_update(L, A[f"L{l}_GW"], A[f"L{l}_Gb"],
                                                                      A[f"L{l}_Gf"], prm, A["banks"][l])
            nsat += n
            for k in ("GW", "Gb", "Gf"):
                A[f"L{l}_{k}"] = np.zeros_like(A[f"L{l}_{k}"])
    ls.t += 1
    ls.nsat += nsat
    return steps, states, ls


def gem_learn_sequence(model: IntModel, X: np.ndarray, labels: np.ndarray):
    """`gem_learn_step` over X [T, N_in] with labels [T]; the trace holds every step's spikes, u, f,
    every layer's W/bias/w_fb/bank and the rule's arrays (what the bit-exact tests compare)."""
    states = initial_glm_state(model, model.compartments)
    ls = initial_gem_learn_state(model)
    trace = {"spikes": [], "V": [], "I": [], "W": [], "bias": [], "w_fb": [], "banks": [], "rule": []}
    for t in range(X.shape[0]):
        steps, states, ls = gem_learn_step(model, X[t], states, ls, int(labels[t]))
        trace["spikes"].append([o.s.copy() for o in steps])
        trace["V"].append([o.u.copy() for o in steps])
        trace["I"].append([st.f.copy() for st in states])
        trace["W"].append([L.W.copy() for L in model.layers])
        trace["bias"].append([L.bias.copy() for L in model.layers])
        trace["w_fb"].append([L.w_fb.copy() for L in model.layers])
        trace["banks"].append([b.copy() for b in ls.arrays["banks"]])
        trace["rule"].append({k: v.copy() for k, v in ls.arrays.items() if k not in ("banks", "wn")})
    return trace, states, ls


def learn_samples(model: IntModel, X: np.ndarray, y: np.ndarray):
    """The device's sample semantics (NUMERICS.md §5) over samples X [S, T, N_in] with labels y [S] (-1: none).

    Each sample starts from the zero state with fresh traces; the learning bank, the weights and the saturation
    counter carry over. A sample without a label is inference only (the bank does not tick). Returns
    (learned model copy, predictions [S], per-class scores [S, C], saturation count, final learn state).
    """
    m = model.copy()
    ls = sample_start(m, None)
    preds, scores, nsat = [], [], 0
    for s in range(X.shape[0]):
        ls = sample_start(m, ls)
        states = initial_state(m, 1)
        score = np.zeros(m.layers[-1].n_out, np.int64)
        for t in range(X.shape[1]):
            if y[s] >= 0:
                spikes, states, ls, nf = learn_step(m, X[s, t], states, ls, int(y[s]))
            else:
                spikes, _, states, nf = network_step(m, X[s, t][None, :], states)
                nf = int(np.sum(nf))
            nsat += nf
            score += spikes[-1][0] if m.layers[-1].kind == "lif" else states[-1].V[0]
        preds.append(int(np.argmax(score)))
        scores.append(score)
    return m, np.array(preds), np.array(scores), nsat + ls.nsat, ls


# ---- self-training without labels (the Device's end_sample(None) with a gate), optionally guarded ------

def _learning_pass(m: IntModel, x: np.ndarray, label: int, ls: LearnState):
    """One learning pass of the device over one sample x [T, N_in] from the zero state with fresh traces;
    the bank and the rule's saturation count carry over. Returns (learn state, forward saturations)."""
    ls = sample_start(m, ls)
    states = initial_state(m, 1)
    nsat = 0
    for t in range(x.shape[0]):
        _, states, ls, nf = learn_step(m, x[t], states, ls, label)
        nsat += nf
    return ls, nsat


def _free_pass(m: IntModel, x: np.ndarray):
    """Inference of one sample x [T, N_in] -> (class, per-class measure as ints, forward saturations)."""
    res = run(m, x[:, None, :])
    return int(res.predictions[0]), [int(v) for v in res.scores[0]], int(res.nsat[-1, 0]) if x.shape[0] else 0


def self_train_samples(model: IntModel, X: np.ndarray, gate: int, guard=None, on_sample=None):
    """The device's self-training (firmware_py.device.Device.end_sample without a label), bit for bit.

    For every sample X[s] [T, N_in]: a free pass (the prediction: class, per-class measure, confidence from
    firmware_py.runtime.confidence, the device's one definition); then, when the confidence reaches `gate`,
    a second, learning pass with the predicted class as the label. `guard` (a fresh firmware_py.guard.Guard,
    or None) sees every free pass first and decides as on the device: skip learning (warm-up, frozen), take
    a snapshot of the learned weights and the bank, or restore the snapshot and freeze.
    `on_sample(s, model)` (optional) is called after each sample with the model as it is then.

    Returns (model copy after the stream, predictions [S], confidences [S], self-trained flags [S] bool,
    saturation count (forward passes + rule), final learn state).
    """
    from firmware_py import guard as fguard
    from firmware_py.runtime import confidence

    if model.learn.rule not in ("readout_delta", "solsa"):
        raise SnnEdgeError(f"self-training: rule {model.learn.rule!r} has no host simulation here "
                           "(readout_delta and solsa do)")
    if not isinstance(gate, (int, np.integer)) or not 0 <= gate <= 256:
        raise SnnEdgeError(f"self-training gate {gate!r}: expected an integer confidence in [0, 256] "
                           "(256: never learn)")
    if X.ndim != 3:
        raise SnnEdgeError(f"self-training: expected samples [S, T, N_in], got shape {list(X.shape)}")
    m = model.copy()
    ls = initial_learn_state(m)
    snap = None
    spiking = m.layers[-1].kind == "lif"
    preds, confs, trained, nsat = [], [], [], 0
    for s in range(X.shape[0]):
        cls, measure, nf = _free_pass(m, X[s])
        nsat += nf
        conf = confidence(measure)
        learn = True
        if guard is not None:
            action = guard.observe(cls, measure, conf, spiking)
            if action == fguard.SNAPSHOT:
                snap = ([(L.W.copy(), L.a_syn.copy()) for L in m.layers], ls.lanes.copy(),
                        {l: b.copy() for l, b in ls.hidden_lanes.items()})
            elif action == fguard.ROLLBACK:
                for L, (W, a) in zip(m.layers, snap[0]):
                    L.W, L.a_syn = W.copy(), a.copy()
                ls.lanes = snap[1].copy()
                ls.hidden_lanes = {l: b.copy() for l, b in snap[2].items()}
            learn = fguard.learns(action)
        pseudo = cls if learn and conf >= gate else -1
        if pseudo >= 0:
            ls, nf = _learning_pass(m, X[s], pseudo, ls)
            nsat += nf
        preds.append(cls)
        confs.append(conf)
        trained.append(pseudo >= 0)
        if on_sample is not None:
            on_sample(s, m)
    return m, np.array(preds), np.array(confs), np.array(trained, bool), nsat + ls.nsat, ls
