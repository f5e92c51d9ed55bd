"""SOLSA: forward-only online learning of weights and synaptic time constants (Zhang, Jin, Fang, Qiu 2023).

Network: the engine's Dense + CubaLIF stack (edge/neurons.py), each layer written with an input
trace (synaptic filter) x[t] = a_syn * x[t-1] + s_in[t], current I = x @ W, membrane
P[t] = a_mem V[t-1] + I[t] (P: potential before reset), s = H(P - theta), V = P - theta s.
(A scalar a_syn filters every input alike: the same network as the engine's I-form.)

Everything this rule keeps is a function of the past only and does not grow with T:
  forward-mode trace of dP/dW  e[t] = a_mem * e~[t-1] + x[t]                    (e~: after the reset)
  reset path (spec.reset_grad)  e~[t] = e[t] * (1 - theta * h[t]),  h = surrogate'(P - theta)
     -> per synapse [N_in, N_out], because h differs per output neuron ("full" traces);
     without it e is the same for every output and factorises to one trace per input [N_in].
  synaptic-decay traces (adaptive synapse filter, spec.learn_syn_decay): q = dx/da_syn and
     r[t] = a_mem r[t-1] + q[t], so dP_j/da_i = W_ij r_i (exact without the reset path).
Learning signal: the instantaneous loss of step t. Spiking readout: target spike train (the label
neuron fires every step, the others stay silent), L_t = 1/2 sum_j (tgt_j - s_j)^2, so
ell = tgt - s; leaky readout: L_t = CE(softmax(V[t]), y), ell = onehot - softmax(V[t]).
phi = h * ell is the negative dL_t/dP; hidden layers get ell = phi_above @ W_above^T (the output
error broadcast through the layer weights at the same step: no backward pass in time).
Accumulate G += e^T phi (and Ga += r * (phi @ W^T)) each step; apply every k_update steps
(scheduled weight update); a sample stops learning once its label leads the running readout by
`early_stop` (spikes, or membrane units) - the "early stop" enhancement.
docs/NUMERICS.md section 10 is the integer form of this rule, for the last layer only
(learn_layers="last" here); its reset path (10.5b, NUMERICS_VERSION 2) is apply_reset_factor
quantised: after the step's G, every step, factor 1 - theta h. The two agree within 15% on the
accumulated G and Ga with the reset path off and on (tests/edge/test_solsa.py; measured 5-12%,
all of it from spikes that the integer truncation flips).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from edge import surrogate
from edge.errors import SnnEdgeError
from edge.losses import softmax
from edge.model import LayerParams, NetworkSpec
from edge.optim import Adam
from edge.rules import register_rule
from edge.rules.base import LearningRule

MAX_DECAY = 0.995  # same bounds as the BPTT rule: a decay of 1 never forgets
OPTIMIZERS = ("sgd", "adam")


class SolsaLayerState(NamedTuple):
    x: np.ndarray          # [B, N_in] input trace (synaptic filter output)
    v: np.ndarray          # [B, N_out] membrane after reset
    e: np.ndarray          # [B, N_in, N_out] (reset path) or [B, N_in]: dP/dW (after last reset)
    q: np.ndarray | None   # [B, N_in] dx/da_syn (learned synaptic decays only)
    r: np.ndarray | None   # [B, N_in] a_mem-filtered q


class SolsaStep(NamedTuple):
    """What one layer's forward step hands to the credit step."""
    out: np.ndarray        # spikes [B, N_out] (0/1) or membrane of the leaky readout
    v_pre: np.ndarray      # P[t] [B, N_out]
    h: np.ndarray          # surrogate derivative at P - theta (ones for the readout)


def initial_layer_state(p: LayerParams, batch: int, full: bool, learn_a: bool, dtype=np.float32):
    n_in, n_out = p.W.shape
    e = np.zeros((batch, n_in, n_out) if full else (batch, n_in), dtype)
    q = np.zeros((batch, n_in), dtype) if learn_a else None
    r = np.zeros((batch, n_in), dtype) if learn_a else None
    return SolsaLayerState(np.zeros((batch, n_in), dtype), np.zeros((batch, n_out), dtype), e, q, r)


def layer_forward_step(s_in: np.ndarray, st: SolsaLayerState, p: LayerParams, spec: NetworkSpec,
                       readout: bool) -> tuple[SolsaStep, SolsaLayerState]:
    """Forward one step and advance the traces to dP[t]/dW (before this step's reset factor)."""
    x_prev = st.x
    x = p.a_syn * x_prev + s_in
    v_pre = p.a_mem * st.v + x @ p.W
    if readout:
        out, v, h = v_pre, v_pre, np.ones_like(v_pre)
    else:
        out = (v_pre > p.theta).astype(v_pre.dtype)
        v = v_pre - p.theta * out
        h = surrogate.derivative(spec.surrogate, v_pre - p.theta, spec.slope)
    e = p.a_mem * st.e + (x[:, :, None] if st.e.ndim == 3 else x)
    q = r = None
    if st.q is not None:
        q = p.a_syn * st.q + x_prev           # d x[t] / d a_syn = x[t-1] + a_syn dx[t-1]/da_syn
        r = p.a_mem * st.r + q
    return SolsaStep(out, v_pre, h), SolsaLayerState(x, v, e, q, r)


def apply_reset_factor(st: SolsaLayerState, step: SolsaStep, p: LayerParams, readout: bool) -> SolsaLayerState:
    """e~ = e * (1 - theta h): the soft reset V = P - theta H(P - theta) seen through the surrogate."""
    if readout or st.e.ndim != 3:
        return st
    return st._replace(e=st.e * (1.0 - p.theta * step.h)[:, None, :])


def output_signal(out: np.ndarray, y: np.ndarray, readout: bool) -> tuple[np.ndarray, np.ndarray]:
    """(ell = -dL_t/d out [B, C], L_t per sample [B]) for the instantaneous loss of one step."""
    onehot = np.zeros_like(out)
    onehot[np.arange(len(y)), y] = 1.0
    if readout:
        prob = softmax(out.astype(np.float64))
        loss = -np.log(np.maximum(prob[np.arange(len(y)), y], 1e-300))
        return (onehot - prob).astype(out.dtype), loss
    ell = onehot - out
    return ell, 0.5 * np.sum(ell.astype(np.float64) ** 2, axis=1)


def credit_step(steps: list[SolsaStep], params: list[LayerParams],
                ell_out: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per layer (phi = h * ell [B, N_out], psi = phi @ W^T [B, N_in]), computed from the top layer down."""
    out: list[tuple[np.ndarray, np.ndarray]] = []
    ell = ell_out
    for i in range(len(steps) - 1, -1, -1):
        phi = steps[i].h * ell
        psi = phi @ params[i].W.T
        out.append((phi, psi))
        ell = psi  # x of layer i = filtered spikes of layer i-1: dx[t]/ds[t] = 1
    return out[::-1]


def accumulate(G: np.ndarray, Ga: np.ndarray | None, st: SolsaLayerState, phi: np.ndarray, psi: np.ndarray):
    """G += sum_b e[b] * phi[b]; Ga += sum_b r[b] * psi[b] (both ascent directions: -dL/dparam)."""
    if st.e.ndim == 3:
        G += np.einsum("bij,bj->ij", st.e, phi, optimize=True)
    else:
        G += st.e.T @ phi
    if Ga is not None and st.r is not None:
        Ga += np.einsum("bi,bi->i", st.r, psi)


@register_rule
class SolsaRule(LearningRule):
    name = "solsa"
    OPTIONS = {
        **LearningRule.OPTIONS,
        # defaults picked on the nmnist-small validation split (benchmarks/online_rules_tables.py)
        "lr": (float, 1e-3, "base learning rate (scheduled by edge.train.fit)"),
        "k_update": (int, 10, "scheduled update: apply the accumulated update every k steps"),
        "early_stop": (float, 0.0, "a sample stops learning once its label leads the running readout "
                                   "by this margin (spikes or membrane units; 0: off)"),
        "lr_syn": (float, 1e-3, "learning rate of the per-input synaptic decays (adaptive filter)"),
        "optimizer": (str, "adam", f"one of {OPTIMIZERS}: adam on the host; the device runs plain SGD"),
        "grad_clip": (float, 0.0, "clip each scheduled update's L2 norm per layer (0: off)"),
        "learn_layers": (str, "all", "all, or last (what the device's integer SOLSA adapts)"),
    }

    def init(self, spec: NetworkSpec, params: list[LayerParams], rng: np.random.Generator) -> None:
        super().init(spec, params, rng)
        if spec.learn_mem_decay or spec.learn_threshold:
            raise SnnEdgeError("rule solsa: learns W and per-input synaptic decays only; "
                               "learn_mem_decay / learn_threshold must be off")
        if self.options["k_update"] < 1:
            raise SnnEdgeError(f"rule solsa: k_update: expected >= 1, got {self.options['k_update']}")
        if self.options["optimizer"] not in OPTIMIZERS:
            raise SnnEdgeError(f"rule solsa: optimizer: expected one of {OPTIMIZERS}, "
                               f"got {self.options['optimizer']!r}")
        if self.options["learn_layers"] not in ("all", "last"):
            raise SnnEdgeError(f"rule solsa: learn_layers: expected all or last, "
                               f"got {self.options['learn_layers']!r}")
        self.first_learned = spec.n_layers - 1 if self.options["learn_layers"] == "last" else 0
        self.full = bool(spec.reset_grad)
        self.learn_a = bool(spec.learn_syn_decay)
        self.G = [np.zeros_like(p.W) for p in params]
        self.Ga = [np.zeros_like(p.a_syn) if self.learn_a else None for p in params]
        self.adam = Adam(lr=self.lr) if self.options["optimizer"] == "adam" else None
        self.updates = 0

    def set_lr(self, lr: float) -> None:
        super().set_lr(lr)
        adam = getattr(self, "adam", None)  # set_lr may come before init
        if adam is not None:
            adam.lr = self.lr

    def is_readout(self, i: int) -> bool:
        return i == self.spec.n_layers - 1 and self.spec.readout == "membrane"

    def initial_state(self, params: list[LayerParams], batch: int) -> list[SolsaLayerState]:
        dtype = params[0].W.dtype
        return [initial_layer_state(p, batch, self.full, self.learn_a, dtype) for p in params]

    def step(self, params, states, s_in, y, active):
        """One time step of forward + learning for the batch: -> (output, L_t [B], states')."""
        steps = []
        layer_in = s_in
        for i, p in enumerate(params):
            st, states[i] = layer_forward_step(layer_in, states[i], p, self.spec, self.is_readout(i))
            steps.append(st)
            layer_in = st.out
        ell, loss = output_signal(steps[-1].out, y, self.is_readout(len(params) - 1))
        ell *= active[:, None]
        for i, (phi, psi) in enumerate(credit_step(steps, params, ell)):
            if i >= self.first_learned:
                accumulate(self.G[i], self.Ga[i], states[i], phi, psi)
            states[i] = apply_reset_factor(states[i], steps[i], params[i], self.is_readout(i))
        return steps[-1].out, loss, states

    def apply_update(self, params: list[LayerParams], batch: int) -> None:
        """The scheduled update: parameters move by the batch-mean accumulated ascent direction."""
        clip = self.options["grad_clip"]
        for i, p in enumerate(params):
            if i < self.first_learned:
                continue
            G = self.G[i] / batch
            if clip > 0:
                norm = float(np.linalg.norm(G))
                if norm > clip:
                    G *= clip / norm
            if not np.isfinite(G).all():
                raise SnnEdgeError(f"rule solsa: NaN/inf in the accumulated update of layer {i} W")
            if self.adam is not None:
                self.adam.step({f"L{i}_W": (p.W, -G)})
            else:
                p.W += (self.lr * G).astype(p.W.dtype, copy=False)
            Ga = self.Ga[i]
            if Ga is not None:
                p.a_syn += (self.options["lr_syn"] * Ga / batch).astype(p.a_syn.dtype, copy=False)
                np.clip(p.a_syn, 0.0, MAX_DECAY, out=p.a_syn)
                Ga[...] = 0
            self.G[i][...] = 0
        self.updates += 1

    def train_batch(self, params: list[LayerParams], X: np.ndarray, y: np.ndarray) -> dict[str, float]:
        T, B, _ = X.shape
        states = self.initial_state(params, B)
        dtype = params[0].W.dtype
        score = np.zeros((B, self.spec.n_classes), np.float64)
        active = np.ones(B, dtype)
        margin = self.options["early_stop"]
        loss_sum = 0.0
        k = self.options["k_update"]
        for t in range(T):
            out, loss, states = self.step(params, states, X[t].astype(dtype), y, active)
            loss_sum += float(loss.mean())
            score += out
            if margin > 0:
                others = score.copy()
                others[np.arange(B), y] = -np.inf
                lead = score[np.arange(B), y] - others.max(axis=1)
                active = np.where(lead >= margin, 0.0, active).astype(dtype)
            if (t + 1) % k == 0:
                self.apply_update(params, B)
        pred = score.argmax(axis=1)
        return {"loss": loss_sum / T, "correct": int((pred == y).sum()), "n": int(B)}

    def state_dict(self) -> dict[str, np.ndarray]:
        out = {f"G{i}": g for i, g in enumerate(self.G)}
        out.update({f"Ga{i}": g for i, g in enumerate(self.Ga) if g is not None})
        if self.adam is not None:
            out.update(self.adam.state_dict())
        return out

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        for i in range(len(self.G)):
            if f"G{i}" in state:
                self.G[i][...] = state[f"G{i}"]
            Ga = self.Ga[i]
            if Ga is not None and f"Ga{i}" in state:
                Ga[...] = state[f"Ga{i}"]
        if self.adam is not None and "adam.steps" in state:
            self.adam.load_state_dict(state)
