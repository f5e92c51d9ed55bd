"""Multi-sample GEM learning for probabilistic SNNs (Jang & Simeone, ICASSP 2021; arXiv 2007.11894).

The network is edge/probabilistic.py's GLM layers: the inputs and the last layer are visible (the
last layer clamped to the target spike train in training), every other layer is hidden and samples,
independently in each of K compartments that share the weights.

Per compartment k and neuron, the eligibility trace of log p(own spike | u) (three-factor rule):
    e_k[t] = kappa * e_k[t-1] + (s_k[t] - sigmoid(u_k[t])) * pre[t]     (pre: presynaptic trace,
                                                                          1 for the bias, fb for w_fb)
The global per-compartment learning signal is the normalised importance weight
    w_k[t] = softmax_k(ll_k[t]),  ll_k[t] = log-likelihood of the visible neurons up to step t,
and the update is theta += lr * sum_t sum_k w_k[t] e_k[t], the gradient of the generalised-EM
(importance-weighted) bound log (1/K) sum_k p(visible | hidden_k); K = 1 gives w = 1, the
single-sample rule. kappa is each layer's a_mem (as in docs/NUMERICS.md section 11).

Two forms, the same numbers: `online_gradients` runs step by step with only bounded state (what the
device does); the training loop uses `window_gradients`, which regroups the same sum after the
window (sum_t w[t] sum_{tau<=t} kappa^(t-tau) g[tau] = sum_tau g[tau] c[tau], c[tau] = w[tau] +
kappa c[tau+1]) into one GEMM per layer. The update is applied once per sample window (k_update = T).

docs/NUMERICS.md section 11 is the integer form with one exponential kernel (kernel="exponential",
n_basis=1 here): every layer probabilistic, hidden layers sampling per compartment (K * N firing
lanes), per-compartment eligibility traces of W, bias and w_fb in every layer (decay a_mem,
x * (s - sigmoid(u))), importance weights from the running visible log-likelihood (reset at each
sample start; softmax via EXP_LUT), G accumulated every labelled step, bias and w_fb learned.
"""
from __future__ import annotations

import numpy as np

from edge.errors import SnnEdgeError
from edge.model import LayerParams, NetworkSpec
from edge.optim import Adam
from edge.probabilistic import (GLMLayerParams, Kernels, LayerWindow, draw_uniforms, importance_weights,
                                iw_log_likelihood, layer_window, network_window, presynaptic_traces,
                                running_log_likelihood, sigmoid, spike_log_prob, target_spikes, vote)
from edge.rules import register_rule
from edge.rules.base import LearningRule

VOTES = ("majority", "counts")
VOTE_FLOOR = 1e-3  # vote fractions are floored so log-probabilities stay finite (NLL of a 0-vote class)


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


def backward_weights(w: np.ndarray, kappa: float) -> np.ndarray:
    """c[t] = w[t] + kappa * c[t+1]: how much the gradient of step t counts in all later updates."""
    c = np.array(w, copy=True)
    for t in range(c.shape[0] - 2, -1, -1):
        c[t] += kappa * c[t + 1]
    return c


def layer_gradient(win: LayerWindow, c: np.ndarray) -> dict[str, np.ndarray]:
    """Ascent direction for one layer: sum_t sum_k c[t,k] (s - sigmoid(u)) x pre, summed over the batch."""
    D = c[..., None] * (win.s - sigmoid(win.u))          # [T, B, K, N_out]
    nb, T, B, Kp, n_in = win.pre.shape
    Dk = D.sum(axis=2, keepdims=True) if Kp == 1 else D  # a shared presynaptic trace: sum compartments first
    flat = Dk.reshape(-1, D.shape[-1])
    GW = np.stack([win.pre[b].reshape(-1, n_in).T @ flat for b in range(nb)])
    return {"W": GW, "bias": D.sum(axis=(0, 1, 2)), "w_fb": (win.fb * D).sum(axis=(0, 1, 2))}


def window_gradients(params: list[GLMLayerParams], wins: list[LayerWindow], ll_decay: float = 1.0):
    """(per-layer gradient dicts, importance weights [T, B, K], running visible log-lik [T, B, K])."""
    ll = running_log_likelihood(wins[-1], ll_decay)
    w = importance_weights(ll)
    grads = [layer_gradient(win, backward_weights(w, float(p.a_mem))) for p, win in zip(params, wins)]
    return grads, w, ll


def online_gradients(params: list[GLMLayerParams], X: np.ndarray, y: np.ndarray, kernels: Kernels,
                     uniforms: list[np.ndarray], ll_decay: float = 1.0, single_sample: bool = False):
    """The same accumulated update, computed forward-only step by step with per-compartment traces.

    single_sample=True is the classic one-sample rule: no importance weights, G += e (K must be 1).
    State kept per layer: input history (kernel length), own spike history, e_k, and ll_k.
    """
    T, B, _ = X.shape
    K = uniforms[0].shape[2]
    if single_sample and K != 1:
        raise SnnEdgeError(f"single-sample rule: expected K = 1, got {K}")
    dtype = params[0].W.dtype
    basis = kernels.basis()
    fbk = kernels.feedback()
    L = kernels.length
    hist_in, hist_own, x_exp, e, G = [], [], [], [], []
    for p in params:
        n_in, n_out = p.W.shape
        hist_in.append(np.zeros((L, B, K, n_in), dtype))         # input spikes at lags 0..L-1
        hist_own.append(np.zeros((kernels.fb_length, B, K, n_out), dtype))  # own spikes at lags 1..
        x_exp.append(np.zeros((B, K, n_in), dtype))
        e.append({"W": np.zeros((B, K, p.n_basis, n_in, n_out), dtype), "bias": np.zeros((B, K, n_out), dtype),
                  "w_fb": np.zeros((B, K, n_out), dtype)})
        G.append({"W": np.zeros((p.n_basis, n_in, n_out), dtype), "bias": np.zeros(n_out, dtype),
                  "w_fb": np.zeros(n_out, dtype)})
    ll = np.zeros((B, K))
    tgt = target_spikes(y, T, params[-1].W.shape[1], dtype)
    for t in range(T):
        layer_in = np.broadcast_to(X[t].astype(dtype)[:, None, :], (B, K, X.shape[2]))
        step_ll = np.zeros((B, K))
        for i, p in enumerate(params):
            hist_in[i] = np.roll(hist_in[i], 1, axis=0)
            hist_in[i][0] = layer_in
            if kernels.kind == "exponential":
                x_exp[i] = p.a_syn * x_exp[i] + layer_in
                pre = x_exp[i][None]
            else:
                pre = np.einsum("bl,lxkn->bxkn", basis, hist_in[i])   # [nb, B, K, N_in]
            fb = np.einsum("l,lxkn->xkn", fbk, hist_own[i])
            Wb = p.basis_weights()
            u = sum(pre[b] @ Wb[b] for b in range(p.n_basis)) + p.w_fb * fb + p.bias
            if i == len(params) - 1:
                s = np.broadcast_to(tgt[t][:, None, :], u.shape).astype(dtype)
                step_ll = spike_log_prob(s, u).sum(axis=-1)  # the visible (last) layer
            else:
                s = (uniforms[i][t] < sigmoid(u)).astype(dtype)
            d = s - sigmoid(u)
            kappa = float(p.a_mem)
            e[i]["W"] = kappa * e[i]["W"] + np.moveaxis(pre, 0, 2)[..., None] * d[:, :, None, None, :]
            e[i]["bias"] = kappa * e[i]["bias"] + d
            e[i]["w_fb"] = kappa * e[i]["w_fb"] + fb * d
            hist_own[i] = np.roll(hist_own[i], 1, axis=0)
            hist_own[i][0] = s
            layer_in = s
        ll = ll_decay * ll + step_ll
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
        "kernel": (str, "raised_cosine", "synaptic kernels: raised_cosine basis, or exponential (device form)"),
        "n_basis": (int, 2, "basis kernels per synapse"),
        "kernel_len": (int, 8, "steps covered by the raised-cosine basis"),
        "fb_len": (int, 8, "steps covered by the self-feedback kernel"),
        "ll_decay": (float, 1.0, "running log-likelihood discount (1: the sample's log-likelihood)"),
        "optimizer": (str, "adam", "sgd (what the device runs) or adam"),
        "bias_init": (float, -2.0, "initial bias of every neuron (sigmoid(-2) = 0.12 spikes/step)"),
        "fb_init": (float, -1.0, "initial self-feedback weight (negative: refractoriness)"),
        "seed": (int, 0, "sampling seed (training batches and inference)"),
    }

    def init(self, spec: NetworkSpec, params: list[LayerParams], rng: np.random.Generator) -> None:
        super().init(spec, params, rng)
        o = self.options
        if o["k_train"] < 1 or o["k_infer"] < 1:
            raise SnnEdgeError(f"rule gem: k_train and k_infer must be >= 1, got {o['k_train']}, {o['k_infer']}")
        if o["vote"] not in VOTES:
            raise SnnEdgeError(f"rule gem: vote: expected one of {VOTES}, got {o['vote']!r}")
        if o["optimizer"] not in ("sgd", "adam"):
            raise SnnEdgeError(f"rule gem: optimizer: expected sgd or adam, got {o['optimizer']!r}")
        if not 0 < o["ll_decay"] <= 1:
            raise SnnEdgeError(f"rule gem: ll_decay: expected a value in (0, 1], got {o['ll_decay']}")
        self.kernels = Kernels(o["kernel"], o["n_basis"], o["kernel_len"], o["fb_len"])
        # Parameters become GLM layers in place, so fit's copies and checkpoints carry the extra arrays.
        params[:] = to_glm_params(params, self.kernels, rng, o["bias_init"], o["fb_init"])
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

    def gradients(self, params, X, y, K: int | None = None):
        """(gradients, importance weights, running log-lik, windows) for one batch, with K compartments."""
        K = K or self.options["k_train"]
        T, B, _ = X.shape
        rng = np.random.default_rng([self.options["seed"], 1, self.batches])
        U = draw_uniforms(rng, T, B, K, self.spec.sizes, params[0].W.dtype)
        self._last_uniforms = U
        wins = network_window(params, X, self.kernels, U, y)
        grads, w, ll = window_gradients(params, wins, self.options["ll_decay"])
        return grads, w, ll, wins

    def train_batch(self, params, X, y) -> dict[str, float]:
        self._check(params)
        T, B, _ = X.shape
        grads, w, ll, wins = self.gradients(params, X, y)
        self.batches += 1
        named = {}
        for i, (p, g) in enumerate(zip(params, grads)):
            for key, value in (("W", g["W"][0]), ("W_more", g["W"][1:]), ("bias", g["bias"]), ("w_fb", g["w_fb"])):
                if not np.isfinite(value).all():
                    raise SnnEdgeError(f"rule gem: NaN/inf in the update of layer {i} {key}")
                named[f"L{i}_{key}"] = (getattr(p, key), (-value / B).astype(p.W.dtype))
        if self.adam is not None:
            self.adam.step(named)
        else:
            for param, neg_grad in named.values():
                param -= self.lr * neg_grad
        # training accuracy: let the output layer run free on the same hidden samples (the clamped
        # target's own feedback would otherwise decide the class) and take the compartments' vote
        layer_in = wins[-2].s if len(wins) > 1 else X.astype(params[0].W.dtype)[:, :, None, :]
        free = layer_window(layer_in, params[-1], self.kernels, self._last_uniforms[-1])
        votes = vote(free.s.sum(axis=0), sigmoid(free.u).sum(axis=0), self.spec.n_classes)
        loss = -float(np.mean(iw_log_likelihood(ll[-1])))
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
        """[B] importance-weighted estimate (K compartments) of log p(target spikes | input), nats."""
        self._check(params)
        T, B, _ = X.shape
        rng = np.random.default_rng([self.options["seed"], 3])
        U = draw_uniforms(rng, T, B, K, self.spec.sizes, params[0].W.dtype)
        wins = network_window(params, X, self.kernels, U, y)
        return iw_log_likelihood(running_log_likelihood(wins[-1], 1.0)[-1])

    def state_dict(self) -> dict[str, np.ndarray]:
        out = {"batches": np.array(self.batches)}
        if self.adam is not None:
            out.update(self.adam.state_dict())
        return out

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        self.batches = int(state.get("batches", 0))
        if self.adam is not None and "adam.steps" in state:
            self.adam.load_state_dict(state)


__all__ = ["GemRule", "window_gradients", "online_gradients", "to_glm_params", "presynaptic_traces"]
