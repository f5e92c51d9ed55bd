"""Surrogate-gradient BPTT: forward over the window, hand-written backward (edge/bptt.py), AdamW."""
from __future__ import annotations

import numpy as np

from edge import bptt
from edge.errors import SnnEdgeError
from edge.losses import LOSSES, compute_loss
from edge.model import LayerParams, NetworkSpec
from edge.neurons import METHODS
from edge.optim import Adam
from edge.rules import register_rule
from edge.rules.base import LearningRule

# Decays stay strictly below 1 (a decay of 1 never forgets) and thresholds strictly positive.
MAX_DECAY = 0.995
MIN_THETA = 1e-2


@register_rule
class BPTTRule(LearningRule):
    name = "bptt"
    OPTIONS = {
        **LearningRule.OPTIONS,
        "weight_decay": (float, 0.0, "decoupled (AdamW) weight decay on W"),
        "loss": (str, "ce", f"one of {LOSSES}: softmax cross-entropy on the readout, or count MSE"),
        "grad_clip": (float, 0.0, "clip the global gradient norm to this (0: off)"),
        "method": (str, "auto", f"input-current kernel, one of {METHODS} (auto: by input density)"),
    }

    def init(self, spec: NetworkSpec, params: list[LayerParams], rng: np.random.Generator) -> None:
        super().init(spec, params, rng)
        if self.options["loss"] not in LOSSES:
            raise SnnEdgeError(f"rule bptt: loss: expected one of {LOSSES}, got {self.options['loss']!r}")
        if self.options["method"] not in METHODS:
            raise SnnEdgeError(f"rule bptt: method: expected one of {METHODS}, got {self.options['method']!r}")
        if self.options["loss"] == "mse_count" and spec.readout != "spikes":
            raise SnnEdgeError("rule bptt: loss mse_count needs readout 'spikes'")
        self.adam = Adam(lr=self.lr, weight_decay=self.options["weight_decay"])

    def set_lr(self, lr: float) -> None:
        super().set_lr(lr)
        self.adam.lr = self.lr

    def trainable(self) -> tuple[str, ...]:
        names = ["W"]
        if self.spec.learn_syn_decay:
            names.append("a_syn")
        if self.spec.learn_mem_decay:
            names.append("a_mem")
        if self.spec.learn_threshold:
            names.append("theta")
        return tuple(names)

    def gradients(self, params: list[LayerParams], X: np.ndarray, y: np.ndarray):
        """(forward result, loss, per-layer gradient dicts) for one batch."""
        fwd = bptt.forward(self.spec, params, X, method=self.options["method"])
        bptt.check_finite(fwd, "forward pass")
        loss, d_logits = compute_loss(self.options["loss"], fwd.logits, y, X.shape[0])
        return fwd, loss, bptt.backward(self.spec, params, fwd, d_logits)

    def train_batch(self, params: list[LayerParams], X: np.ndarray, y: np.ndarray) -> dict[str, float]:
        fwd, loss, grads = self.gradients(params, X, y)
        named, decayed = {}, set()
        for i, (p, g) in enumerate(zip(params, grads)):
            for name in self.trainable():
                if not np.isfinite(g[name]).all():
                    raise SnnEdgeError(f"backward pass: NaN/inf in the gradient of layer {i} {name}")
                named[f"L{i}_{name}"] = (getattr(p, name), g[name])
            decayed.add(f"L{i}_W")
        clip = self.options["grad_clip"]
        if clip > 0:
            norm = float(np.sqrt(sum(float(np.vdot(g, g)) for _, g in named.values())))
            if norm > clip:
                named = {k: (p, g * np.float32(clip / norm)) for k, (p, g) in named.items()}
        self.adam.step(named, decay=decayed)
        for p in params:
            np.clip(p.a_syn, 0.0, MAX_DECAY, out=p.a_syn)
            np.clip(p.a_mem, 0.0, MAX_DECAY, out=p.a_mem)
            np.maximum(p.theta, MIN_THETA, out=p.theta)
        pred = fwd.logits.argmax(axis=1)
        return {"loss": loss, "correct": int((pred == y).sum()), "n": int(len(y))}

    def state_dict(self) -> dict[str, np.ndarray]:
        return self.adam.state_dict()

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        self.adam.load_state_dict(state)
