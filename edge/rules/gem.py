"""Multi-sample GEM learning for probabilistic SNNs (Jang & Simeone, ICASSP 2021; arXiv 2102.03280).

The network is edge/probabilistic.py's GLM layers: the inputs and the last layer are visible (the
last layer clamped to the target spike train in training), every other layer is hidden and samples,
independently in each of K compartments that share the weights.

The rule as its authors define it (hrjang357/multi-sample-SNN, `--mode gem`; ../shared/docs/SEEDS.md),
per compartment k and step t, ONE kappa (option `kappa`, their default 0.05) for both recursions:
    e_k[t] = kappa e_k[t-1] + (s_k[t] - sigmoid(u_k[t])) pre[t]   (eligibility; pre: presynaptic trace,
                                                                    1 for the bias, fb for w_fb)
    v_k[t] = kappa v_k[t-1] + sum_{output j} log p(s_kj[t] | u_kj[t])   (discounted visible log-lik)
    w_k[t] = softmax_k(v_k[t])                                      (importance weights)
    theta += lr * sum_k w_k[t] e_k[t]                               (hidden and output neurons alike)
kappa is stored as each layer's a_mem (the eligibility decay of docs/NUMERICS.md section 11, which the
integer export reads); the integer rule's `ll_decay` is the same kappa in Q12.

Two update schedules (option `update`):
  step    the authors' and the device's form: the update is applied at every time step, plain SGD,
          parameters change inside the window (their code: one example at a time, batch_size 1).
  window  the batched form: the same per-step directions summed over the window with the parameters
          frozen, one update per batch (SGD or Adam). `window_gradients` regroups that sum after the
          window (sum_t w[t] sum_{tau<=t} kappa^(t-tau) g[tau] = sum_tau g[tau] c[tau], c[tau] = w[tau] +
          kappa c[tau+1]) into one GEMM per layer; `online_gradients` is the same sum forward-only with
          explicit per-compartment traces (bounded state: what the device keeps).
The step form computes sum_k w_k[t] e_k[t] from the last H steps' (pre, s - sigmoid(u)) instead of
explicit traces (H: kappa^H < 1e-12, 10 steps at kappa 0.05), one GEMM per layer and step; with
the parameters frozen it sums to exactly `window_gradients` (tests/edge/test_gem_authors.py).

The single-sample reference (option form="mb1", K = 1; the authors' `mb1` mode, training_utils.
train_ml_online) is NOT GEM with K = 1 (which gives hidden neurons no learning signal beyond their own
likelihood): hidden-neuron updates are scaled by the learning signal v[t] minus a per-parameter
baseline b = <e^2 v> / (<e^2> + 1e-7), both averages discounted by kappa (their beta = kappa); output
updates are e. Not reproduced from their code: step 0 of every example is presented twice and
updates the shared parameters K + 1 extra times (init_ml_vars); here every step is presented once.

Differences that remain options, not defaults: their kernels (kernel="pillow08", 8 bases of length 10,
one-step synaptic delay; ours: raised_cosine from lag 0), their initialisation (init="authors": every
weight, bias and feedback weight U(-0.1, 0.1); ours keeps the engine's W, bias -2, feedback -1), their
recurrent pool (topology="pool": lateral weights among each layer's neurons at lags >= 1 and the
inputs straight to the last layer, edge.probabilistic.PoolGLMLayerParams; ours: the layered stack,
the only form with an integer/device counterpart). Measured (benchmarks/gem_authors.py, one epoch):
per-step SGD learns on the pool and collapses to one class on the layered stack, where at
initialisation the hidden spikes barely depend on the input and per-example updates follow the
last label.

docs/NUMERICS.md section 11 is the integer form with one exponential kernel (kernel="exponential",
n_basis=1 here): every layer probabilistic, hidden layers sampling per compartment (K * N firing
lanes), per-compartment eligibility traces of W, bias and w_fb in every layer (decay a_mem = kappa,
x * (s - sigmoid(u))), importance weights from the running visible log-likelihood (discount ll_decay,
reset at each sample start; softmax via EXP_LUT), G accumulated every labelled step and applied every
k_update steps (k_update = 1: the step form), bias and w_fb learned.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from edge.errors import SnnEdgeError
from edge.model import LayerParams, NetworkSpec
from edge.optim import Adam
from edge.probabilistic import (KERNELS, GLMLayerParams, Kernels, PoolGLMLayerParams, LayerWindow, draw_uniforms, importance_weights,
                                iw_log_likelihood, layer_window, mean_log_likelihood, network_window,
                                presynaptic_traces, running_log_likelihood, sigmoid, spike_log_prob,
                                target_spikes, vote)
from edge.rules import register_rule
from edge.rules.base import LearningRule

VOTES = ("majority", "counts")
VOTE_FLOOR = 1e-3  # vote fractions are floored so log-probabilities stay finite (NLL of a 0-vote class)
UPDATES = ("window", "step")
FORMS = ("gem", "mb1")
INITS = ("ours", "authors")
TOPOLOGIES = ("layered", "pool")
LL_ESTIMATORS = ("iw", "mean")
HORIZON_TOL = 1e-12   # the step form drops eligibility terms weighted below kappa^H < this
BASELINE_EPS = 1e-7   # the authors' guard in b = num / (den + eps)


def to_glm_params(params: list[LayerParams], kernels: Kernels, rng: np.random.Generator,
                  bias_init: float, fb_init: float) -> list[GLMLayerParams]:
    """GLM layers from a fresh engine parameter list (W kept as basis 0; other bases drawn like W)."""
    out = []
    for p in params:
        if isinstance(p, GLMLayerParams):
            if p.n_basis != kernels.n_basis:
                raise SnnEdgeError(f"GEM: parameters have {p.n_basis} basis kernels, options say {kernels.n_basis}")
            out.append(p)
            continue
        n_in, n_out = p.W.shape
        bound = 1.0 / np.sqrt(n_in * kernels.n_basis)
        W_more = rng.uniform(-bound, bound, (kernels.n_basis - 1, n_in, n_out)).astype(p.W.dtype)
        out.append(GLMLayerParams(p.W / np.sqrt(kernels.n_basis), p.a_syn, p.a_mem, p.theta, W_more,
                                  np.full(n_out, bias_init, p.W.dtype), np.full(n_out, fb_init, p.W.dtype)))
    return out


def authors_glm_params(params: list[LayerParams], kernels: Kernels, rng: np.random.Generator,
                       magnitude: float = 0.1) -> list[GLMLayerParams]:
    """GLM layers initialised as the GEM authors do (SNN.py): every feed-forward weight of every basis,
    every bias and every feedback weight U(-magnitude, magnitude) (their weights_magnitude 0.1)."""
    out = []
    for p in params:
        n_in, n_out = p.W.shape
        dt = p.W.dtype
        u = lambda *shape: rng.uniform(-magnitude, magnitude, shape).astype(dt)  # noqa: E731
        out.append(GLMLayerParams(u(n_in, n_out), p.a_syn, p.a_mem, p.theta, u(kernels.n_basis - 1, n_in, n_out),
                                  u(n_out), u(n_out)))
    return out


def to_pool_params(params: list[GLMLayerParams], kernels: Kernels, rng: np.random.Generator,
                   magnitude: float | None) -> list[PoolGLMLayerParams]:
    """The authors' recurrent pool on the layered stack: every layer gets lateral weights W_lat (its
    other neurons, lags >= 1, diagonal 0), the last layer also W_skip from the network inputs.
    magnitude: U(-m, m) as the authors initialise; None: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) per basis."""
    n_net_in = params[0].W.shape[0]
    out = []
    for i, p in enumerate(params):
        if isinstance(p, PoolGLMLayerParams):
            out.append(p)
            continue
        n_out = p.W.shape[1]
        n_skip = n_net_in if (i == len(params) - 1 and len(params) > 1) else 0
        nb = kernels.n_basis

        def draw(n_in):
            m = magnitude if magnitude is not None else 1.0 / np.sqrt(max(n_in, 1) * nb)
            return rng.uniform(-m, m, (nb, n_in, n_out)).astype(p.W.dtype)
        W_lat = draw(n_out)
        W_lat[:, np.arange(n_out), np.arange(n_out)] = 0.0
        out.append(PoolGLMLayerParams(*(getattr(p, n) for n in GLMLayerParams.NAMES), W_lat, draw(n_skip)))
    return out

def backward_weights(w: np.ndarray, kappa: float) -> np.ndarray:
    """c[t] = w[t] + kappa * c[t+1]: how much the gradient of step t counts in all later updates."""
    c = np.array(w, copy=True)
    for t in range(c.shape[0] - 2, -1, -1):
        c[t] += kappa * c[t + 1]
    return c


def _basis_gradient(pre: np.ndarray, D: np.ndarray) -> np.ndarray:
    """[nb, N_in, N_out] sum over steps, batch, compartments of pre x D; pre [nb, T', B, Kp, N_in]."""
    nb, _, _, Kp, n_in = pre.shape
    Dk = D.sum(axis=2, keepdims=True) if Kp == 1 else D  # a shared presynaptic trace: sum compartments first
    flat = Dk.reshape(-1, D.shape[-1])
    return np.stack([pre[b].reshape(-1, n_in).T @ flat for b in range(nb)])


def weighted_gradient(pre: np.ndarray, D: np.ndarray, fb: np.ndarray, lat: np.ndarray | None = None,
                      skip_pre: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """sum over steps, batch and compartments of D x (pre, 1, fb[, lat, skip_pre]): pre [nb, T', B, Kp, N_in],
    D and fb [T', B, K, N_out] (D already holds the weights times (s - sigmoid(u))); lat and skip_pre:
    the pool topology's lateral and input traces (W_lat's diagonal stays 0: w_fb is the self-loop)."""
    out = {"W": _basis_gradient(pre, D), "bias": D.sum(axis=(0, 1, 2)), "w_fb": (fb * D).sum(axis=(0, 1, 2))}
    if lat is not None:
        GL = _basis_gradient(lat, D)
        GL[:, np.arange(GL.shape[1]), np.arange(GL.shape[1])] = 0.0
        out["W_lat"] = GL
        out["W_skip"] = (_basis_gradient(skip_pre, D) if skip_pre is not None
                         else np.zeros((pre.shape[0], 0, D.shape[-1]), D.dtype))
    return out


def layer_gradient(win: LayerWindow, c: np.ndarray) -> dict[str, np.ndarray]:
    """Ascent direction for one layer: sum_t sum_k c[t,k] (s - sigmoid(u)) x pre, summed over the batch."""
    return weighted_gradient(win.pre, c[..., None] * (win.s - sigmoid(win.u)), win.fb, win.lat, win.skip_pre)


def window_gradients(params: list[GLMLayerParams], wins: list[LayerWindow], ll_decay: float = 1.0):
    """(per-layer gradient dicts, importance weights [T, B, K], running visible log-lik [T, B, K])."""
    ll = running_log_likelihood(wins[-1], ll_decay)
    w = importance_weights(ll)
    grads = [layer_gradient(win, backward_weights(w, float(p.a_mem))) for p, win in zip(params, wins)]
    return grads, w, ll


# ---- one time step of the whole network, for the step-by-step forms ---------------------------

class LayerStep(NamedTuple):
    pre: np.ndarray   # [nb, B, Kp, N_in] presynaptic traces of this step
    s: np.ndarray     # [B, K, N_out]
    u: np.ndarray     # [B, K, N_out]
    fb: np.ndarray    # [B, K, N_out] feedback trace used in u
    d: np.ndarray     # [B, K, N_out] s - sigmoid(u): the per-neuron factor of grad log p
    lat: np.ndarray | None = None       # [nb, B, K, N_out] lateral traces (pool topology)
    skip_pre: np.ndarray | None = None  # [nb, B, 1, N_skip] network-input traces (pool, last layer)


class StreamState(NamedTuple):
    hist_in: np.ndarray   # [first_lag + length, B, Kp, N_in] input spikes at lags 0.. (FIR kernels)
    x_exp: np.ndarray     # [B, Kp, N_in] exponential input trace (kernel "exponential")
    hist_own: np.ndarray  # [fb_length, B, K, N_out] own spikes at lags 1..
    hist_lat: np.ndarray  # [length, B, K, N_out] the layer's spikes at lags 1.. (pool topology)


def initial_stream(params: list[GLMLayerParams], kernels: Kernels, B: int, K: int) -> list[StreamState]:
    """Zero state; layer 0's input is the data, the same for every compartment (Kp = 1)."""
    dtype = params[0].W.dtype
    L = kernels.first_lag + kernels.length
    out = []
    for i, p in enumerate(params):
        n_in, n_out = p.W.shape
        Kp = 1 if i == 0 else K
        out.append(StreamState(np.zeros((L, B, Kp, n_in), dtype), np.zeros((B, Kp, n_in), dtype),
                               np.zeros((kernels.fb_length, B, K, n_out), dtype),
                               np.zeros((kernels.length if isinstance(p, PoolGLMLayerParams) else 0, B, K, n_out),
                                        dtype)))
    return out


def network_step(params: list[GLMLayerParams], kernels: Kernels, states: list[StreamState], x_t: np.ndarray,
                 uniforms_t: list[np.ndarray], clamp_t: np.ndarray | None):
    """All layers at one step: x_t [B, N_in]; uniforms_t per layer [B, K, N_out]; clamp_t [B, N_out] the
    target of the last layer (training) or None. -> (list of LayerStep, new states). Same numbers as
    network_window at that step."""
    dtype = params[0].W.dtype
    basis = kernels.basis_by_lag()
    lat_kernel = kernels.lateral_by_lag()
    fbk = kernels.feedback()
    layer_in = x_t.astype(dtype)[:, None, :]
    outs, new = [], []
    for i, (p, st) in enumerate(zip(params, states)):
        hist_in = np.roll(st.hist_in, 1, axis=0)
        hist_in[0] = layer_in
        x_exp = st.x_exp
        if kernels.kind == "exponential":
            x_exp = p.a_syn * x_exp + layer_in
            pre = x_exp[None]
        else:
            pre = np.einsum("bl,lxkn->bxkn", basis, hist_in)       # [nb, B, Kp, N_in]
        fb = np.einsum("l,lxkn->xkn", fbk, st.hist_own)
        u = pre[0] @ p.W + p.w_fb * fb + p.bias
        for b in range(1, p.n_basis):
            u = u + pre[b] @ p.W_more[b - 1]
        lat = skip_pre = None
        if isinstance(p, PoolGLMLayerParams):
            lat = np.einsum("bl,lxkn->bxkn", lat_kernel[:, 1:], st.hist_lat)
            u = u + sum(lat[b] @ p.W_lat[b] for b in range(p.n_basis))
            if p.W_skip.shape[1]:
                skip_pre = outs[0].pre if outs else pre   # the network inputs' traces (layer 0's)
                u = u + sum(skip_pre[b] @ p.W_skip[b] for b in range(p.n_basis))
        u = np.broadcast_to(u, uniforms_t[i].shape)
        if clamp_t is not None and i == len(params) - 1:
            s = np.broadcast_to(clamp_t[:, None, :], u.shape).astype(dtype)
        else:
            s = (uniforms_t[i] < sigmoid(u)).astype(dtype)
        hist_own = np.roll(st.hist_own, 1, axis=0)
        hist_own[0] = s
        hist_lat = st.hist_lat
        if hist_lat.shape[0]:
            hist_lat = np.roll(hist_lat, 1, axis=0)
            hist_lat[0] = s
        outs.append(LayerStep(pre, s, u, fb, s - sigmoid(u), lat, skip_pre))
        new.append(StreamState(hist_in, x_exp, hist_own, hist_lat))
        layer_in = s
    return outs, new


def horizon(kappa: float, T: int) -> int:
    """Steps of eligibility kept by the step form: kappa^(H) < HORIZON_TOL (at most T)."""
    if kappa <= 0:
        return 1
    return int(min(T, 1 + np.ceil(np.log(HORIZON_TOL) / np.log(kappa)))) if kappa < 1 else T


def step_direction(past: list[LayerStep], w_t: np.ndarray, kappa: float) -> dict[str, np.ndarray]:
    """sum_k w_k[t] e_k[t] summed over the batch, from the last steps `past` (oldest first):
    e_k[t] = sum_tau kappa^(t - tau) (s - sigmoid(u))[tau] x pre[tau]."""
    n = len(past)
    coef = kappa ** np.arange(n - 1, -1, -1, dtype=np.float64)
    D = np.stack([q.d for q in past]) * (coef[:, None, None, None] * w_t[None, :, :, None])
    lat = np.stack([q.lat for q in past], axis=1) if past[0].lat is not None else None
    skip = np.stack([q.skip_pre for q in past], axis=1) if past[0].skip_pre is not None else None
    return weighted_gradient(np.stack([q.pre for q in past], axis=1), D.astype(past[0].d.dtype),
                             np.stack([q.fb for q in past]), lat, skip)


class Mb1Traces(NamedTuple):
    """Explicit eligibility traces of one layer (K = 1) and the learning-signal baseline's running sums."""
    e: dict
    num: dict
    den: dict


def initial_mb1(params: list[GLMLayerParams], B: int) -> list[Mb1Traces]:
    out = []
    for p in params:
        n_in, n_out = p.W.shape
        shapes = {"W": (B, p.n_basis, n_in, n_out), "bias": (B, n_out), "w_fb": (B, n_out)}
        if isinstance(p, PoolGLMLayerParams):
            shapes.update(W_lat=(B,) + p.W_lat.shape, W_skip=(B,) + p.W_skip.shape)
        out.append(Mb1Traces(*({k: np.zeros(v, p.W.dtype) for k, v in shapes.items()} for _ in range(3))))
    return out


def mb1_step(tr: Mb1Traces, q: LayerStep, v: np.ndarray, kappa: float, hidden: bool):
    """The authors' single-sample rule for one layer at one step (K = 1; v [B] the discounted visible
    log-likelihood). -> (direction summed over the batch, traces). The traces are updated in place."""
    d = q.d[:, 0]                                                   # [B, N_out]
    g = {"W": np.einsum("bxn,xo->xbno", q.pre[:, :, 0], d), "bias": d, "w_fb": q.fb[:, 0] * d}
    if q.lat is not None:
        g["W_lat"] = np.einsum("bxn,xo->xbno", q.lat[:, :, 0], d)
        n = d.shape[-1]
        g["W_lat"][:, :, np.arange(n), np.arange(n)] = 0.0   # the diagonal is w_fb's
        g["W_skip"] = (np.einsum("bxn,xo->xbno", q.skip_pre[:, :, 0], d) if q.skip_pre is not None
                       else np.zeros_like(tr.e["W_skip"]))   # no skip weights below the last layer
    out = {}
    for k, gk in g.items():
        e = tr.e[k]
        e *= kappa
        e += gk
        if not hidden:
            out[k] = e.sum(axis=0)
            continue
        vb = v.astype(e.dtype).reshape((-1,) + (1,) * (e.ndim - 1))  # v over e's trailing axes
        e2 = e * e
        num, den = tr.num[k], tr.den[k]
        num *= kappa
        num += e2 * vb
        den *= kappa
        den += e2
        out[k] = ((vb - num / (den + BASELINE_EPS)) * e).sum(axis=0)
    return out, tr


def online_gradients(params: list[GLMLayerParams], X: np.ndarray, y: np.ndarray, kernels: Kernels,
                     uniforms: list[np.ndarray], ll_decay: float = 1.0, single_sample: bool = False):
    """The window's accumulated update, computed forward-only step by step with explicit
    per-compartment traces e_k (bounded state: what the device keeps), parameters frozen.

    single_sample=True: no importance weights, G += e (K must be 1).
    """
    T, B, _ = X.shape
    K = uniforms[0].shape[2]
    if single_sample and K != 1:
        raise SnnEdgeError(f"single-sample rule: expected K = 1, got {K}")
    if any(isinstance(p, PoolGLMLayerParams) for p in params):
        raise SnnEdgeError("online_gradients: explicit traces are the layered (device) form; the pool "
                           "topology runs through window_gradients or the step form")
    dtype = params[0].W.dtype
    states = initial_stream(params, kernels, B, K)
    e = [{"W": np.zeros((B, K, p.n_basis) + p.W.shape, dtype), "bias": np.zeros((B, K, p.W.shape[1]), dtype),
          "w_fb": np.zeros((B, K, p.W.shape[1]), dtype)} for p in params]
    G = [{"W": np.zeros((p.n_basis,) + p.W.shape, dtype), "bias": np.zeros(p.W.shape[1], dtype),
          "w_fb": np.zeros(p.W.shape[1], dtype)} for p in params]
    ll = np.zeros((B, K))
    tgt = target_spikes(y, T, params[-1].W.shape[1], dtype)
    for t in range(T):
        outs, states = network_step(params, kernels, states, X[t], [u[t] for u in uniforms], tgt[t])
        for i, (p, q) in enumerate(zip(params, outs)):
            kappa = float(p.a_mem)
            pre = np.broadcast_to(np.moveaxis(q.pre, 0, 2), (B, K) + np.moveaxis(q.pre, 0, 2).shape[2:])
            e[i]["W"] = kappa * e[i]["W"] + pre[..., None] * q.d[:, :, None, None, :]
            e[i]["bias"] = kappa * e[i]["bias"] + q.d
            e[i]["w_fb"] = kappa * e[i]["w_fb"] + q.fb * q.d
        ll = ll_decay * ll + spike_log_prob(outs[-1].s, outs[-1].u).sum(axis=-1)
        w = np.ones_like(ll) if single_sample else importance_weights(ll)
        for i in range(len(params)):
            G[i]["W"] += np.einsum("bk,bkxij->xij", w, e[i]["W"])
            G[i]["bias"] += np.einsum("bk,bkj->j", w, e[i]["bias"])
            G[i]["w_fb"] += np.einsum("bk,bkj->j", w, e[i]["w_fb"])
    return G, ll


@register_rule
class GemRule(LearningRule):
    name = "gem"
    OPTIONS = {
        **LearningRule.OPTIONS,
        "lr": (float, 1e-2, "base learning rate (picked on the nmnist-small validation split)"),
        "k_train": (int, 5, "compartments K sampled in training"),
        "k_infer": (int, 5, "compartments K_I sampled at inference"),
        "vote": (str, "majority", f"one of {VOTES}: majority vote of compartments, or averaged counts"),
        "kappa": (float, 0.05, "decay of the eligibility traces AND discount of the visible log-likelihood "
                               "(one value, as the authors; their default 0.05)"),
        "update": (str, "window", f"one of {UPDATES}: one update per batch window (batched form), or every "
                                  "time step (the authors' and the device's online form)"),
        "form": (str, "gem", f"one of {FORMS}: importance-weighted GEM, or the authors' single-sample rule "
                             "with a learning-signal baseline (K = 1; their mb1 mode)"),
        "kernel": (str, "raised_cosine", f"synaptic kernels, one of {KERNELS} (pillow08: the authors')"),
        "n_basis": (int, 2, "basis kernels per synapse (authors: 8)"),
        "kernel_len": (int, 8, "steps covered by the basis kernels (authors: 10)"),
        "fb_len": (int, 8, "steps covered by the self-feedback kernel (authors: 10)"),
        "kernel_mu": (float, 1.5, "pillow08: compression of the log time axis (authors: 1.5)"),
        "init": (str, "ours", f"one of {INITS}: ours (engine W, bias_init, fb_init) or the authors' "
                              "(every weight, bias, feedback weight U(-init_scale, init_scale))"),
        "init_scale": (float, 0.1, "init=authors: half-width of the uniform initialisation"),
        "topology": (str, "layered", f"one of {TOPOLOGIES}: the layered stack, or the authors' recurrent pool "
                                     "(lateral weights in every layer, inputs straight to the outputs too)"),
        "ll_estimator": (str, "iw", f"one of {LL_ESTIMATORS}: log mean_k p (importance-weighted, ours) or "
                                    "mean_k log p (the authors')"),
        "optimizer": (str, "adam", "sgd (what the device and the authors run) or adam"),
        "bias_init": (float, -2.0, "init=ours: initial bias of every neuron (sigmoid(-2) = 0.12 spikes/step)"),
        "fb_init": (float, -1.0, "init=ours: initial self-feedback weight (negative: refractoriness)"),
        "seed": (int, 0, "sampling seed (training batches and inference)"),
    }

    def init(self, spec: NetworkSpec, params: list[LayerParams], rng: np.random.Generator) -> None:
        super().init(spec, params, rng)
        o = self.options
        if o["k_train"] < 1 or o["k_infer"] < 1:
            raise SnnEdgeError(f"rule gem: k_train and k_infer must be >= 1, got {o['k_train']}, {o['k_infer']}")
        for key, allowed in (("vote", VOTES), ("optimizer", ("sgd", "adam")), ("update", UPDATES),
                             ("form", FORMS), ("init", INITS), ("ll_estimator", LL_ESTIMATORS),
                             ("topology", TOPOLOGIES)):
            if o[key] not in allowed:
                raise SnnEdgeError(f"rule gem: {key}: expected one of {allowed}, got {o[key]!r}")
        if not 0 <= o["kappa"] < 1:
            raise SnnEdgeError(f"rule gem: kappa: expected a value in [0, 1), got {o['kappa']}")
        if o["form"] == "mb1" and o["k_train"] != 1:
            raise SnnEdgeError(f"rule gem: form=mb1 is the single-sample rule: expected k_train=1, got {o['k_train']}")
        self.kernels = Kernels(o["kernel"], o["n_basis"], o["kernel_len"], o["fb_len"], mu=o["kernel_mu"])
        # Parameters become GLM layers in place, so fit's copies and checkpoints carry the extra arrays.
        if o["init"] == "authors" and not all(isinstance(p, GLMLayerParams) for p in params):
            params[:] = authors_glm_params(params, self.kernels, rng, o["init_scale"])
        else:
            params[:] = to_glm_params(params, self.kernels, rng, o["bias_init"], o["fb_init"])
        if o["topology"] == "pool":
            params[:] = to_pool_params(params, self.kernels, rng, o["init_scale"] if o["init"] == "authors" else None)
        elif any(isinstance(p, PoolGLMLayerParams) for p in params):
            raise SnnEdgeError("rule gem: the parameters are a pool (W_lat, W_skip): set topology=pool")
        for p in params:  # kappa lives in a_mem: the eligibility decay the integer export reads
            p.a_mem[...] = o["kappa"]
        self.adam = Adam(lr=self.lr) if o["optimizer"] == "adam" else None
        self.batches = 0

    def set_lr(self, lr: float) -> None:
        super().set_lr(lr)
        adam = getattr(self, "adam", None)  # set_lr may come before init
        if adam is not None:
            adam.lr = self.lr

    def _check(self, params) -> None:
        if not all(isinstance(p, GLMLayerParams) for p in params):
            raise SnnEdgeError("rule gem: parameters lack the GLM arrays (W_more, bias, w_fb): "
                               "expected a checkpoint written by a GEM training run")

    def _uniforms(self, T: int, B: int, K: int, dtype):
        rng = np.random.default_rng([self.options["seed"], 1, self.batches])
        return draw_uniforms(rng, T, B, K, self.spec.sizes, dtype)

    def gradients(self, params, X, y, K: int | None = None):
        """(gradients, importance weights, running log-lik, windows) for one batch, with K compartments,
        parameters frozen over the window (the batched form's ascent direction, summed over the batch)."""
        K = K or self.options["k_train"]
        T, B, _ = X.shape
        U = self._uniforms(T, B, K, params[0].W.dtype)
        self._last_uniforms = U
        wins = network_window(params, X, self.kernels, U, y)
        grads, w, ll = window_gradients(params, wins, self.options["kappa"])
        return grads, w, ll, wins

    def _apply(self, params, grads, B: int) -> None:
        """theta += lr * (ascent direction / B) (SGD), or one Adam step on its negative."""
        named = {}
        for i, (p, g) in enumerate(zip(params, grads)):
            pairs = [("W", g["W"][0]), ("W_more", g["W"][1:]), ("bias", g["bias"]), ("w_fb", g["w_fb"])]
            pairs += [(k, g[k]) for k in ("W_lat", "W_skip") if k in g]
            for key, value in pairs:
                if not np.isfinite(value.sum()):  # one reduction: NaN/inf survive the sum
                    raise SnnEdgeError(f"rule gem: NaN/inf in the update of layer {i} {key}")
                named[f"L{i}_{key}"] = (getattr(p, key), value)
        if self.adam is not None:
            self.adam.step({k: (param, (-value / B).astype(param.dtype)) for k, (param, value) in named.items()})
        else:
            for param, value in named.values():
                param += (self.lr / B) * value.astype(param.dtype, copy=False)

    def stream(self, params, X, y, apply_each_step: bool):
        """The step-by-step forms (update=step, or form=mb1): -> (directions summed over the window, or
        None when applied at every step; visible log-lik per step [T, B, K]; spikes of the last hidden
        layer [T, B, K, N]; uniforms). apply_each_step: parameters move after every step; otherwise
        they stay frozen."""
        o = self.options
        K = o["k_train"]
        T, B, _ = X.shape
        dtype = params[0].W.dtype
        U = self._uniforms(T, B, K, dtype)
        tgt = target_spikes(y, T, self.spec.n_classes, dtype)
        kappa = float(o["kappa"])
        H = horizon(kappa, T)
        states = initial_stream(params, self.kernels, B, K)
        mb1 = initial_mb1(params, B) if o["form"] == "mb1" else None
        past: list[list[LayerStep]] = [[] for _ in params]
        total = None
        v = np.zeros((B, K))
        step_ll = np.zeros((T, B, K))
        hidden = []
        for t in range(T):
            outs, states = network_step(params, self.kernels, states, X[t], [u[t] for u in U], tgt[t])
            step_ll[t] = spike_log_prob(outs[-1].s, outs[-1].u).sum(axis=-1)
            v = kappa * v + step_ll[t]
            if len(outs) > 1:
                hidden.append(outs[-2].s)
            if mb1 is not None:
                dirs = []
                for i, q in enumerate(outs):
                    g, mb1[i] = mb1_step(mb1[i], q, v[:, 0], kappa, hidden=i < len(outs) - 1)
                    dirs.append(g)
            else:
                w = importance_weights(v)
                dirs = []
                for i, q in enumerate(outs):
                    past[i] = (past[i] + [q])[-H:]
                    dirs.append(step_direction(past[i], w, kappa))
            if apply_each_step:
                self._apply(params, dirs, B)
            elif total is None:
                total = [{k: a.copy() for k, a in g.items()} for g in dirs]
            else:
                for acc, g in zip(total, dirs):
                    for k in acc:
                        acc[k] += g[k]
        self._last_uniforms = U
        return total, step_ll, (np.stack(hidden) if hidden else None), U

    def train_batch(self, params, X, y) -> dict[str, float]:
        self._check(params)
        o = self.options
        T, B, _ = X.shape
        if o["update"] == "window" and o["form"] == "gem":
            grads, _, _, wins = self.gradients(params, X, y)
            self._apply(params, grads, B)
            step_ll = spike_log_prob(wins[-1].s, wins[-1].u).sum(axis=-1)
            hidden = wins[-2].s if len(wins) > 1 else None
            U = self._last_uniforms
        else:
            grads, step_ll, hidden, U = self.stream(params, X, y, apply_each_step=o["update"] == "step")
            if o["update"] == "window":
                self._apply(params, grads, B)
        self.batches += 1
        # training accuracy: let the output layer run free on the same hidden samples (the clamped
        # target's own feedback would otherwise decide the class) and take the compartments' vote
        net_in = X.astype(params[0].W.dtype)[:, :, None, :]
        layer_in = hidden if hidden is not None else net_in
        free = layer_window(layer_in, params[-1], self.kernels, U[-1],
                            skip_in=net_in if isinstance(params[-1], PoolGLMLayerParams) else None)
        votes = vote(free.s.sum(axis=0), sigmoid(free.u).sum(axis=0), self.spec.n_classes)
        loss = -float(np.mean(iw_log_likelihood(step_ll.sum(axis=0))))
        return {"loss": loss / T, "correct": int((votes.argmax(axis=1) == y).sum()), "n": int(B)}

    def sample_outputs(self, params, X: np.ndarray, K: int, seed_key: int = 2):
        """Free-running network (outputs sampled too): (counts [B, K, C], expected counts [B, K, C])."""
        T, B, _ = X.shape
        rng = np.random.default_rng([self.options["seed"], seed_key])
        U = draw_uniforms(rng, T, B, K, self.spec.sizes, params[0].W.dtype)
        out = network_window(params, X, self.kernels, U, None)[-1]
        return out.s.sum(axis=0), sigmoid(out.u).sum(axis=0)

    def predict(self, params, X: np.ndarray) -> np.ndarray:
        """log of the predicted class distribution [B, C]: vote fractions of K_I compartments
        (majority) or their averaged spike counts, normalised; floored at VOTE_FLOOR."""
        self._check(params)
        C = self.spec.n_classes
        counts, expected = self.sample_outputs(params, X, self.options["k_infer"])
        if self.options["vote"] == "majority":
            prob = vote(counts, expected, C)
        else:
            mean = counts.mean(axis=1)
            total = mean.sum(axis=1, keepdims=True)
            prob = np.where(total > 0, mean / np.maximum(total, 1e-12), 1.0 / C)
        prob = np.maximum(prob, VOTE_FLOOR)
        return np.log(prob / prob.sum(axis=1, keepdims=True))

    def log_likelihood(self, params, X: np.ndarray, y: np.ndarray, K: int) -> np.ndarray:
        """[B] estimate from K compartments of log p(target spikes | input), nats: importance-weighted
        log mean_k p (ll_estimator=iw) or the authors' mean_k log p (ll_estimator=mean)."""
        self._check(params)
        T, B, _ = X.shape
        rng = np.random.default_rng([self.options["seed"], 3])
        U = draw_uniforms(rng, T, B, K, self.spec.sizes, params[0].W.dtype)
        wins = network_window(params, X, self.kernels, U, y)
        ll = running_log_likelihood(wins[-1], 1.0)[-1]
        return iw_log_likelihood(ll) if self.options["ll_estimator"] == "iw" else mean_log_likelihood(ll)

    def state_dict(self) -> dict[str, np.ndarray]:
        out = {"batches": np.array(self.batches)}
        if self.adam is not None:
            out.update(self.adam.state_dict())
        return out

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        self.batches = int(state.get("batches", 0))
        if self.adam is not None and "adam.steps" in state:
            self.adam.load_state_dict(state)


__all__ = ["GemRule", "window_gradients", "online_gradients", "to_glm_params", "authors_glm_params",
           "presynaptic_traces", "network_step", "step_direction", "mb1_step"]
