"""The one interface every learning rule implements, so `edge.train.fit` and the CLI drive them all.

A rule owns its optimiser/traces/RNG state, never the parameters: `train_batch` updates the
`LayerParams` list it is given in place (BPTT: forward, backward, Adam; SOLSA: updates weights and
per-input synaptic decays during its forward pass every k steps; GEM: its own probabilistic
neurons, `predict` overridden; NA/NormAD: different gradient estimates on the same network).

Options: each rule declares OPTIONS {name: (type, default, help)}; the CLI maps `--lr`, `--loss`,
`--weight-decay` and any `--set NAME=VALUE` onto them, and the values are saved in the checkpoint.
Everything a resumed run needs to continue bit for bit (moments, traces, RNG state) goes through
state_dict/load_state_dict as numpy arrays.
"""
from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from edge import bptt
from edge.errors import SnnEdgeError
from edge.model import LayerParams, NetworkSpec


class LearningRule:
    name: ClassVar[str] = "base"
    spec: NetworkSpec  # bound by init(); rules use it only after that
    OPTIONS: ClassVar[dict[str, tuple[type, Any, str]]] = {
        "lr": (float, 2e-3, "base learning rate (scheduled by edge.train.fit)"),
    }

    def __init__(self, **options: Any):
        self.options: dict[str, Any] = {k: v[1] for k, v in self.OPTIONS.items()}
        for key, value in options.items():
            if key not in self.OPTIONS:
                raise SnnEdgeError(f"rule {self.name!r}: unknown option {key!r}; "
                                   f"known: {', '.join(sorted(self.OPTIONS))}")
            self.options[key] = self._cast(key, value)
        self.lr = float(self.options["lr"])

    def _cast(self, key: str, value: Any) -> Any:
        kind = self.OPTIONS[key][0]
        if kind is bool and isinstance(value, str):
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
        try:
            return kind(value)
        except (TypeError, ValueError):
            raise SnnEdgeError(f"rule {self.name!r}: option {key}: expected {kind.__name__}, "
                               f"got {value!r}") from None

    # --- lifecycle -------------------------------------------------------------------------
    def adapt_spec(self, spec: NetworkSpec) -> NetworkSpec:
        """The network this rule trains, given the one asked for (the CLI calls it before init_params).

        Default: unchanged. A rule with a neuron of its own (NA: hard_reset_psc) swaps it in here.
        """
        return spec

    def init(self, spec: NetworkSpec, params: list[LayerParams], rng: np.random.Generator) -> None:
        """Bind to a network before the first batch: allocate optimiser state, traces, RNGs."""
        self.spec = spec

    def set_lr(self, lr: float) -> None:
        """Called by fit at the start of every epoch with the scheduled learning rate."""
        self.lr = float(lr)

    def train_batch(self, params: list[LayerParams], X: np.ndarray, y: np.ndarray) -> dict[str, float]:
        """Learn from one batch X [T, B, N_in] uint8, y [B]; update params in place.

        Returns at least {"loss": mean loss, "correct": correct predictions, "n": batch size}.
        """
        raise NotImplementedError

    def predict(self, params: list[LayerParams], X: np.ndarray) -> np.ndarray:
        """Class scores [B, C] (softmax of these is the predicted distribution).

        Default: the deterministic CubaLIF network's readout (spike counts or mean membrane).
        """
        return bptt.forward(self.spec, params, X).logits

    def state_dict(self) -> dict[str, np.ndarray]:
        return {}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        pass

    def config(self) -> dict[str, Any]:
        """JSON-able description saved in checkpoints."""
        return {"name": self.name, "options": dict(self.options)}
