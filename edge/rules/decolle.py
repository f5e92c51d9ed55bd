"""DECOLLE: deep continuous local learning (Kaiser, Mostafa & Neftci, "Synaptic Plasticity Dynamics for
Deep Continuous Local Learning (DECOLLE)", Frontiers in Neuroscience 14:424, 2020; arXiv 1811.10766).

The established non-BPTT online rule that SOLSA's "+14.2 % over other non-BPTT online rules" claim is
measured against here (benchmarks/solsa_ablations.py). It runs on the same Dense + CubaLIF network as
every other rule and behind the same interface (edge.rules.base.LearningRule).

DECOLLE as its authors define it, in this network's terms (layer l, step t):
- each hidden layer has a FIXED random local readout R_l [N_l, C] (never trained) and its own loss at
  every step, L_l[t] = 1/2 || onehot(y) - s_l[t] R_l ||^2 (the paper's mean-squared readout error);
- credit stays inside the layer: no error travels to lower layers and nothing is propagated in time
  (dL_l/dW_l = (R_l (onehot - y_l)) * h_l x P_l, h_l the surrogate derivative at the membrane, P_l the
  presynaptic trace filtered by the synaptic and the membrane decays: SOLSA's factorised trace);
- the reset is not differentiated (the paper's refractory term is detached); time constants are fixed;
- the parameters are updated at every step (k_update = 1; the paper updates every step after a burn-in).
The last layer is the network's own output: its local loss is the output loss every rule here uses
(cross-entropy of the leaky readout, or the target spike train of a spiking readout; the same
`output_signal` as SOLSA), so `predict` is the engine's. Ours, not the paper's: the optimiser (Adam
by default; the paper uses Adamax), no burn-in (a window here is 30 steps), readout scale 1/sqrt(N_l).

What DECOLLE keeps per stream: one trace per input of each layer (factorised: it does not grow with T),
plus the fixed readouts; see edge.memory_meter.decolle_bytes.
"""
from __future__ import annotations

import numpy as np

from edge.errors import SnnEdgeError
from edge.model import LayerParams, NetworkSpec
from edge.optim import Adam
from edge.rules import register_rule
from edge.rules.base import LearningRule
from edge.rules.solsa import OPTIMIZERS, initial_layer_state, layer_forward_step, output_signal


def local_readouts(spec: NetworkSpec, rng: np.random.Generator, dtype=np.float32) -> list[np.ndarray]:
    """Fixed random readouts R_l [N_l, C] of the hidden layers, U(-1/sqrt(N_l), 1/sqrt(N_l))."""
    C = spec.n_classes
    return [(rng.uniform(-1, 1, (n, C)) / np.sqrt(n)).astype(dtype) for n in spec.sizes[1:-1]]


def local_error(s: np.ndarray, R: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(-dL/ds [B, N] through the fixed readout, L per sample [B]) of L = 1/2 ||onehot - s R||^2."""
    readout = s @ R
    err = -readout
    err[np.arange(len(y)), y] += 1.0
    return err @ R.T, 0.5 * np.sum(err.astype(np.float64) ** 2, axis=1)


@register_rule
class DecolleRule(LearningRule):
    name = "decolle"
    OPTIONS = {
        **LearningRule.OPTIONS,
        "lr": (float, 1e-3, "base learning rate (scheduled by edge.train.fit)"),
        "k_update": (int, 1, "apply the accumulated update every k steps (DECOLLE: every step)"),
        "optimizer": (str, "adam", f"one of {OPTIMIZERS}"),
        "readout_seed": (int, 0, "seed of the fixed random local readouts"),
    }

    def init(self, spec: NetworkSpec, params: list[LayerParams], rng: np.random.Generator) -> None:
        super().init(spec, params, rng)
        if spec.learn_syn_decay or spec.learn_mem_decay or spec.learn_threshold:
            raise SnnEdgeError("rule decolle: learns W only (fixed time constants): learn_syn_decay, "
                               "learn_mem_decay and learn_threshold must be off")
        if self.options["k_update"] < 1:
            raise SnnEdgeError(f"rule decolle: k_update: expected >= 1, got {self.options['k_update']}")
        if self.options["optimizer"] not in OPTIMIZERS:
            raise SnnEdgeError(f"rule decolle: optimizer: expected one of {OPTIMIZERS}, "
                               f"got {self.options['optimizer']!r}")
        self.readouts = local_readouts(spec, np.random.default_rng(self.options["readout_seed"]), params[0].W.dtype)
        self.G = [np.zeros_like(p.W) for p in params]
        self.adam = Adam(lr=self.lr) if self.options["optimizer"] == "adam" else None

    def set_lr(self, lr: float) -> None:
        super().set_lr(lr)
        adam = getattr(self, "adam", None)
        if adam is not None:
            adam.lr = self.lr

    def is_readout(self, i: int) -> bool:
        return i == self.spec.n_layers - 1 and self.spec.readout == "membrane"

    def step(self, params, states, s_in, y):
        """Forward one step; each layer adds its local gradient to G. -> (output, output loss [B], states)."""
        layer_in = s_in
        last = len(params) - 1
        for i, p in enumerate(params):
            step, states[i] = layer_forward_step(layer_in, states[i], p, self.spec, self.is_readout(i))
            if i == last:
                ell, loss = output_signal(step.out, y, self.is_readout(i))
            else:
                ell, _ = local_error(step.out, self.readouts[i], y)
            self.G[i] += states[i].e.T @ (step.h * ell)   # factorised trace [B, N_in] x [B, N_out]
            layer_in = step.out
        return step.out, loss, states

    def apply_update(self, params, batch: int) -> None:
        for i, p in enumerate(params):
            G = self.G[i] / batch
            if not np.isfinite(G).all():
                raise SnnEdgeError(f"rule decolle: NaN/inf in the update of layer {i} W")
            if self.adam is not None:
                self.adam.step({f"L{i}_W": (p.W, -G)})
            else:
                p.W += (self.lr * G).astype(p.W.dtype, copy=False)
            self.G[i][...] = 0

    def train_batch(self, params, X, y) -> dict[str, float]:
        T, B, _ = X.shape
        dtype = params[0].W.dtype
        states = [initial_layer_state(p, B, False, False, dtype) for p in params]
        score = np.zeros((B, self.spec.n_classes))
        loss_sum = 0.0
        for t in range(T):
            out, loss, states = self.step(params, states, X[t].astype(dtype), y)
            score += out
            loss_sum += float(loss.mean())
            if (t + 1) % self.options["k_update"] == 0:
                self.apply_update(params, B)
        return {"loss": loss_sum / T, "correct": int((score.argmax(axis=1) == y).sum()), "n": int(B)}

    def state_dict(self) -> dict[str, np.ndarray]:
        out = {f"G{i}": g for i, g in enumerate(self.G)}
        out.update({f"R{i}": r for i, r in enumerate(self.readouts)})
        if self.adam is not None:
            out.update(self.adam.state_dict())
        return out

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        for i in range(len(self.G)):
            if f"G{i}" in state:
                self.G[i][...] = state[f"G{i}"]
        for i in range(len(self.readouts)):
            if f"R{i}" in state:
                self.readouts[i][...] = state[f"R{i}"]
        if self.adam is not None and "adam.steps" in state:
            self.adam.load_state_dict(state)
