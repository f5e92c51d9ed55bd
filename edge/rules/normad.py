"""Multi-layer NormAD (Anwani & Rajendran, IJCNN 2015; multi-layer: arXiv 1811.10678 /
Neurocomputing 2020): spike-train-to-spike-train learning by Normalized Approximate Descent.

Output layer (the original NormAD). The error is the difference of the desired and the observed spike
trains, e[t] = S_des[t] - S_obs[t] (+1: a spike is missing, the membrane should have been higher;
-1: a spike too many, it should have been lower). The objective is the membrane-potential deviation
at those steps, J = 1/2 sum_t |e[t]| (V_des[t] - V[t])^2, whose descent direction is
sum_t e[t] dV[t]/dW. With the spikes held fixed the reset only subtracts constants, so in this
discrete CubaLIF network dV[t]/dW_ij = d_i[t], the input i filtered by the synapse (a_syn) and by the
neuron's approximate impulse response (decay a_hat: a_mem by default, smaller to mimic the reset).
NormAD normalises each step's vector over the inputs so every erroneous step moves the membrane by the
same amount whatever the input activity:
    dW[:, j] = r_L * sum_t e_j[t] * d[t] / ||d[t]||.

Hidden layers (spatio-temporal error backpropagation). A hidden neuron j influences the layer above
only through the times of its spikes. Raising its membrane P_j at a spike step t_s by dP brings that
spike earlier by dP / slope_j(t_s), the rise of the membrane across the step (the discrete version of
dt_s/dV = -1/V'(t_s); clipped below at min_slope * theta). Moving a spike one step earlier changes the
membrane of neuron m above by W_jm (g[t - t_s + 1] - g[t - t_s]), g the synapse+membrane kernel of the
layer above. So the membrane error of layer l+1 propagated back to the spikes of layer l is
    e_l[j, t_s] = s_j[t_s] / slope_j(t_s) * (G_j[t_s - 1] - G_j[t_s]),
    G_j[tau] = sum_m W_jm sum_{t >= tau} e_{l+1}[m, t] g_{l+1}[t - tau]   (anti-causal filtering),
and layer l learns with the same normalised rule and its own rate r_l. The output errors are +-1 per
wrong step but e_l has an arbitrary scale (it grows with W and 1/slope), so for the update each
sample's e_l is divided by its largest |e_l|: the biggest hidden step then equals one output step and
r_l / r_L is a meaningful ratio (without this, hidden updates swamped the output ones and the 3-layer
task oscillated). Deeper layers repeat the step with the unscaled e_l.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from edge import bptt
from edge.errors import SnnEdgeError
from edge.model import LayerParams, NetworkSpec
from edge.rules import register_rule
from edge.rules.base import LearningRule
from edge.spike_trains import anticausal_filter, causal_filter, label_targets, van_rossum_distance


class NormADStep(NamedTuple):
    directions: list[np.ndarray]   # per layer, the normalised descent direction [N_in, N_out] (batch mean)
    errors: list[np.ndarray]       # per layer, the membrane error e_l [T, B, N_out]
    fwd: bptt.ForwardResult


def filtered_inputs(layer_in: np.ndarray, a_syn, a_hat) -> np.ndarray:
    """d[t] [T, B, N_in]: each input through the synapse and the approximate impulse response."""
    return causal_filter(causal_filter(layer_in, a_syn), a_hat)


def normalised_direction(d: np.ndarray, e: np.ndarray) -> np.ndarray:
    """sum_{t,b} e[t,b,j] d[t,b,:] / ||d[t,b,:]|| -> [N_in, N_out] (steps with no input activity skipped)."""
    norm = np.sqrt(np.einsum("tbi,tbi->tb", d, d))
    unit = d / np.where(norm > 0, norm, 1.0)[..., None]
    T, B, n_in = d.shape
    return unit.reshape(T * B, n_in).T @ e.reshape(T * B, -1)


def spike_slopes(v_pre: np.ndarray, spikes: np.ndarray, theta) -> np.ndarray:
    """Rise of the membrane across each step, P[t] - V[t-1] (V after reset, 0 before the window)."""
    v_post = v_pre - theta * spikes
    prev = np.zeros_like(v_post)
    prev[1:] = v_post[:-1]
    return v_pre - prev


def backpropagate_error(e_above: np.ndarray, p_above: LayerParams, a_hat_above, rec: bptt.LayerRecord,
                        theta, min_slope: float) -> np.ndarray:
    """Membrane error of the layer above [T, B, N_above] -> error at this layer's spikes [T, B, N]."""
    T, B, _ = e_above.shape
    back_mem = anticausal_filter(e_above, a_hat_above)
    g = (back_mem.reshape(T * B, -1) @ p_above.W.T.astype(np.float64)).reshape(T, B, -1)
    G = anticausal_filter(g, p_above.a_syn)
    earlier = np.empty_like(G)          # G[t-1] - G[t]; a spike at step 0 cannot move earlier
    earlier[0] = 0.0
    earlier[1:] = G[:-1] - G[1:]
    spikes = rec.spikes
    if spikes is None or rec.v_pre is None:  # only a leaky readout lacks them, and it is never hidden
        raise SnnEdgeError("rule normad: a hidden layer without spikes (readout 'membrane' is not supported)")
    slope = np.maximum(spike_slopes(rec.v_pre, spikes, theta), min_slope * float(theta))
    return spikes * earlier / slope


def unit_scaled(e: np.ndarray) -> np.ndarray:
    """e / max|e| per sample: a hidden layer's largest step has the size of one output error step."""
    peak = np.abs(e).max(axis=(0, 2), keepdims=True)
    return e / np.where(peak > 0, peak, 1.0)


def normad_step(spec: NetworkSpec, params: list[LayerParams], X: np.ndarray, S_des: np.ndarray,
                a_hat: tuple[float, ...] | None = None, min_slope: float = 0.1) -> NormADStep:
    """Forward pass and the per-layer NormAD directions for inputs X [T, B, N_in], targets [T, B, N_out]."""
    if spec.readout != "spikes":
        raise SnnEdgeError("rule normad: needs readout 'spikes' (it learns output spike trains)")
    fwd = bptt.forward(spec, params, X)
    bptt.check_finite(fwd, "forward pass")
    out = fwd.layer_spikes[-1]
    if S_des.shape != out.shape:
        raise SnnEdgeError(f"rule normad: target spike trains of shape {S_des.shape}, the network gives {out.shape}")
    a_hat = tuple(float(p.a_mem) for p in params) if a_hat is None else a_hat
    L = spec.n_layers
    errors: list[np.ndarray] = [None] * L  # type: ignore[list-item]
    errors[-1] = S_des.astype(np.float64) - out
    for l in range(L - 2, -1, -1):
        errors[l] = backpropagate_error(errors[l + 1], params[l + 1], a_hat[l + 1], fwd.records[l],
                                        params[l].theta, min_slope)
    B = X.shape[1]
    directions = []
    for l in range(L):
        layer_in = X if l == 0 else fwd.layer_spikes[l - 1]
        d = filtered_inputs(layer_in, params[l].a_syn, a_hat[l])
        e = errors[l] if l == L - 1 else unit_scaled(errors[l])
        directions.append(normalised_direction(d, e) / B)
    return NormADStep(directions, errors, fwd)


@register_rule
class NormADRule(LearningRule):
    name = "normad"
    OPTIONS = {
        "lr": (float, 0.05, "output-layer rate r_L: membrane change per erroneous step, in units of ||d||"),
        "hidden_lr_scale": (float, 1.0, "hidden-layer rate as a multiple of lr (per-layer rates)"),
        "a_hat": (float, 0.0, "decay of the approximate impulse response (0: each layer's a_mem)"),
        "min_slope": (float, 0.1, "lower clip of the membrane rise at a spike, in units of theta"),
        "target_period": (int, 3, "classification: the label neuron's target fires every N steps"),
        "vr_tau": (float, 5.0, "van Rossum time constant (steps) reported as the loss"),
    }

    def init(self, spec: NetworkSpec, params: list[LayerParams], rng: np.random.Generator) -> None:
        super().init(spec, params, rng)
        if spec.readout != "spikes":
            raise SnnEdgeError("rule normad: needs --readout spikes (it learns output spike trains)")
        if not 0.0 <= self.options["a_hat"] < 1.0:
            raise SnnEdgeError(f"rule normad: a_hat must lie in [0, 1), got {self.options['a_hat']}")
        if self.options["min_slope"] <= 0:
            raise SnnEdgeError(f"rule normad: min_slope must be positive, got {self.options['min_slope']}")

    def layer_rates(self) -> list[float]:
        L = self.spec.n_layers
        return [self.lr * (1.0 if l == L - 1 else self.options["hidden_lr_scale"]) for l in range(L)]

    def a_hat(self, params: list[LayerParams]) -> tuple[float, ...]:
        if self.options["a_hat"] > 0:
            return (self.options["a_hat"],) * len(params)
        return tuple(float(p.a_mem) for p in params)

    def train_spike_trains(self, params: list[LayerParams], X: np.ndarray, S_des: np.ndarray) -> dict:
        """One NormAD update from inputs X [T, B, N_in] towards target trains S_des [T, B, N_out]."""
        step = normad_step(self.spec, params, X, S_des, self.a_hat(params), self.options["min_slope"])
        for p, direction, rate in zip(params, step.directions, self.layer_rates()):
            if not np.isfinite(direction).all():
                raise SnnEdgeError("rule normad: NaN/inf in the weight update")
            p.W += (rate * direction).astype(p.W.dtype)
        out = step.fwd.layer_spikes[-1]
        exact = np.all(out == S_des, axis=(0, 2))
        vr = van_rossum_distance(out, S_des, self.options["vr_tau"])
        return {"van_rossum": float(vr.mean()), "exact": int(exact.sum()), "n": int(X.shape[1]), "fwd": step.fwd}

    def train_batch(self, params: list[LayerParams], X: np.ndarray, y: np.ndarray) -> dict[str, float]:
        T = X.shape[0]
        S_des = label_targets(y, self.spec.n_classes, T, self.options["target_period"])
        m = self.train_spike_trains(params, X, S_des)
        pred = m["fwd"].logits.argmax(axis=1)
        return {"loss": m["van_rossum"], "correct": int((pred == y).sum()), "n": int(len(y))}
