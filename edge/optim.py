"""Adam with decoupled weight decay (AdamW), updating parameter arrays in place, plus LR schedules.

The moments live in plain arrays keyed like the checkpoint (`L{i}_{name}`) so a checkpoint can carry
them and a resumed run continues bit for bit.
"""
from __future__ import annotations

import math

import numpy as np

from edge.errors import SnnEdgeError


class Adam:
    def __init__(self, lr: float = 2e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0):
        if not lr > 0 or not 0 <= betas[0] < 1 or not 0 <= betas[1] < 1 or weight_decay < 0:
            raise SnnEdgeError(f"Adam: lr > 0, betas in [0, 1), weight_decay >= 0 expected; got "
                               f"lr={lr}, betas={betas}, weight_decay={weight_decay}")
        self.lr = float(lr)
        self.b1, self.b2 = (float(b) for b in betas)
        self.eps = float(eps)
        self.weight_decay = float(weight_decay)
        self.steps = 0
        self.m: dict[str, np.ndarray] = {}
        self.v: dict[str, np.ndarray] = {}

    def step(self, named: dict[str, tuple[np.ndarray, np.ndarray]], decay: set[str] | frozenset[str] = frozenset()) -> None:
        """named: key -> (parameter array, its gradient); parameters are updated in place.

        Weight decay is applied only to the keys in `decay` (weights, not decays or thresholds).
        """
        self.steps += 1
        c1 = 1.0 - self.b1 ** self.steps
        c2 = 1.0 - self.b2 ** self.steps
        step_size = self.lr / c1
        for key, (param, grad) in named.items():
            m = self.m.get(key)
            if m is None:
                m = self.m[key] = np.zeros_like(param)
                self.v[key] = np.zeros_like(param)
            v = self.v[key]
            m *= self.b1
            m += (1.0 - self.b1) * grad
            v *= self.b2
            v += (1.0 - self.b2) * np.square(grad)
            if key in decay and self.weight_decay:
                param *= 1.0 - self.lr * self.weight_decay
            denom = np.sqrt(v / c2)
            denom += self.eps
            param -= (step_size * m / denom).astype(param.dtype, copy=False)

    def state_dict(self) -> dict:
        out = {"adam.steps": np.array(self.steps)}
        for key in self.m:
            out[f"adam.m.{key}"] = self.m[key]
            out[f"adam.v.{key}"] = self.v[key]
        return out

    def load_state_dict(self, state: dict) -> None:
        self.steps = int(state["adam.steps"])
        self.m = {k[len("adam.m."):]: np.array(v) for k, v in state.items() if k.startswith("adam.m.")}
        self.v = {k[len("adam.v."):]: np.array(v) for k, v in state.items() if k.startswith("adam.v.")}


SCHEDULES = ("constant", "cosine", "step")


def scheduled_lr(base_lr: float, epoch: int, n_epochs: int, schedule: str = "cosine",
                 warmup_epochs: int = 0, min_factor: float = 0.05, step_every: int = 10,
                 step_gamma: float = 0.5) -> float:
    """Learning rate for a 0-based epoch: optional linear warm-up, then constant/cosine/step decay."""
    if schedule not in SCHEDULES:
        raise SnnEdgeError(f"--lr-schedule: expected one of {SCHEDULES}, got {schedule!r}")
    if epoch < warmup_epochs:
        return base_lr * (epoch + 1) / (warmup_epochs + 1)
    if schedule == "constant":
        return base_lr
    if schedule == "step":
        return base_lr * step_gamma ** ((epoch - warmup_epochs) // step_every)
    span = max(1, n_epochs - warmup_epochs - 1)
    frac = min(1.0, (epoch - warmup_epochs) / span)
    return base_lr * (min_factor + (1.0 - min_factor) * 0.5 * (1.0 + math.cos(math.pi * frac)))
