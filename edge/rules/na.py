"""NA, backpropagated neighbourhood aggregation, as its authors define it (Yang, Zhang & Li, ICML 2021,
arXiv 2107.06861; their code and poster are described in ../shared/docs/SEEDS.md, read to understand, not copied).

Neuron (edge/neurons.py, NetworkSpec.neuron = "hard_reset_psc"): per layer, with the current I[t] = a_in[t] @ W,
    u[t] = a_mem v[t-1] + I[t],  s[t] = H(u[t] - theta),  v[t] = u[t] (1 - s[t])   (hard reset to 0)
    a[t] = a_syn a[t-1] + (1 - a_syn) s[t]                                           (what the layer passes on)
the authors' tau_m = 5, tau_s = 2 are a_mem = 0.8, a_syn = 0.5 (the snn-edge train defaults).

Method (the poster's four steps, in this neuron's terms):
1. Finite difference along a neighbour: for a neighbour waveform u_k of the neuron's present waveform u,
   f_k = (L(u_k) - L(u)) / d(u, u_k), with the loss change linearised in the layer's output:
   L(u_k) - L(u) ~= e . (a_k - a) = e_s . (s_k - s), e = dL/da and e_s = dL/ds its transpose through the PSC filter
   (exact when L is linear in the spikes, as for the output layer of a count loss with its gradient frozen).
2. Distance: d(u, u') = || u' [-] u ||_2, where [-] recovers the input-current perturbation that turns u into u'
   under the reset dynamics (`recover_perturbation`; [+], `perturb`, adds one and re-simulates).
3. Aggregation by least squares: rows of O are the unit directions (u_k [-] u) / d_k, grad_I L = pinv(O) f
   (`least_squares_gradient`).
4. Neighbours: u_k is the waveform whose spike at step k is flipped with the least change of u[k] (u_k[k] = theta:
   just not firing, or just firing and reset), and the chain effect re-simulated to the end of the window with
   the same input currents (`flip_neighbour`): a removed spike leaves the membrane up, a new one resets it, and
   later spikes move accordingly.
Since the re-simulation uses the same currents after step k, u_k [-] u is (theta - u[k]) e_k: O is diagonal,
and the least-squares gradient is per step, dL/dI[k] = (L(u_k) - L(u)) / (theta - u[k]) (`per_step_gradient`
with distance_power 1 and no clip). The gradient is with respect to the input current of each step; it is
not propagated further back through the membrane in time, because the re-simulation already accounts for
what a change at step k does later. It then flows to the weights, dW = sum_t a_in[t]^T dL/dI[t], and to the
layer below, e_a(below) = dL/dI @ W^T, exactly as through any linear layer.

The authors' code and its training tricks, each an option here:
- per-step form: dL/dI[k] = dL_k * clip(1 / (theta - u[k])^p, -c, c) with p = 3, c = 5 (distance_power,
  distance_clip): a far neighbour counts much less than 1/distance says, and near-threshold ones are clipped;
- per-layer gradient rescaling (layer_rescale): each layer's dL/dI times 1.2 ln(m_out / (mean|g| + 1e-5) + 1.02),
  m_out the output layer's mean |dL/dI| after its own rescale (lifts the lower layers' vanishing gradients);
- AdamW betas (0, 0.999) (beta1), global gradient-norm clip 1 (grad_clip), weights clipped to +-4 (weight_clip).
  (Their learning rate 1e-5 with ExponentialLR 0.985 is not an option: the shared fit loop owns the schedule.)
- the loss: their kernel loss on the output PSCs (loss "kernel": sum_t 1/2 (a_target[t] - a[t])^2, the label's
  target the PSC of a spike at every step, the others 0), or softmax cross-entropy on the output spike counts
  ("ce", the project's default), or the count MSE ("mse_count").

Defaults: the authors' settings, except the loss (ce). On N-MNIST (nmnist-small, 801 train / 199 validation,
edge.data.split_stratified(y, 0.2, seed 0), T = 30 steps of 10 ms, 578-128-10, lr 2e-3 cosine, 15 epochs,
seeds 0-2) the best validation accuracy was 0.930 / 0.935 / 0.930 with beta1 0 and both clips, 0.899 / 0.899 /
0.915 with Adam's beta1 0.9 and no clips, 0.764 / 0.759 / 0.739 with the kernel loss; seed 0 with the least-squares
form (distance_power 1, no clip) 0.734 and without layer rescaling 0.910, both with beta1 0.9 and no clips
(the same split tuned them: there is no test split yet).

Cost: the neighbour of every (step, neuron) is re-simulated to the end of the window: T(T+1)/2 element-wise
steps over [B, N] per layer, on top of the forward pass.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from edge import bptt
from edge.errors import SnnEdgeError
from edge.losses import LOSSES as COUNT_LOSSES
from edge.losses import compute_loss
from edge.model import LayerParams, NetworkSpec
from edge.neurons import METHODS, hard_reset_membrane_window, psc_window
from edge.optim import Adam
from edge.rules import register_rule
from edge.rules.base import LearningRule
from edge.spike_trains import anticausal_filter

NEURON = "hard_reset_psc"
LOSSES = COUNT_LOSSES + ("kernel",)


# ---------------------------------------------------------------------------------------------
# One layer of neurons: neighbours, distances, aggregation (pure functions of [T, ...] arrays).

def flip_neighbour(current: np.ndarray, u: np.ndarray, spikes: np.ndarray, a_mem, theta, k: int):
    """(u_k, s_k): the waveform whose spike at step k is flipped, re-simulated to the end of the window.

    current, u, spikes [T, ...]: the present input currents, membranes (before reset) and spikes. u_k[k] = theta,
    the nearest potential with the other spike state; its membrane after step k is then theta if the spike was
    removed (no reset) and 0 if one was added (reset); the later steps run with the same currents.
    """
    u_k, s_k = u.copy(), spikes.copy()
    u_k[k] = theta
    s_k[k] = 1 - spikes[k]
    if k + 1 < u.shape[0]:
        u_k[k + 1:], s_k[k + 1:] = hard_reset_membrane_window(current[k + 1:], a_mem, theta, v0=theta * spikes[k])
    return u_k, s_k


def flip_loss_changes(current: np.ndarray, u: np.ndarray, spikes: np.ndarray, a_mem, theta,
                      e_s: np.ndarray) -> np.ndarray:
    """dL_k = e_s . (s_k - s) for the flip neighbour of every step k: -> [T, ...] (step k at index k)."""
    out = np.empty_like(u)
    for k in range(u.shape[0]):
        _, s_k = flip_neighbour(current, u, spikes, a_mem, theta, k)
        out[k] = np.sum(e_s * (s_k - spikes), axis=0)
    return out


def perturb(current: np.ndarray, delta: np.ndarray, a_mem, theta):
    """[+]: the waveform (u, s) of the neuron driven by current + delta (re-simulated from the start)."""
    return hard_reset_membrane_window(current + delta, a_mem, theta)


def recover_perturbation(u: np.ndarray, spikes: np.ndarray, u2: np.ndarray, spikes2: np.ndarray, a_mem) -> np.ndarray:
    """[-]: the input-current perturbation that turns (u, s) into (u2, s2) under the hard-reset dynamics.

    The current of a waveform is I[t] = u[t] - a_mem v[t-1], v = u (1 - s) the membrane after reset.
    """
    def currents(u_, s_):
        v_prev = np.zeros_like(u_)
        v_prev[1:] = (u_ * (1 - s_))[:-1]
        return u_ - a_mem * v_prev

    return currents(u2, spikes2) - currents(u, spikes)


def membrane_distance(u, spikes, u2, spikes2, a_mem) -> float:
    """d(u, u2) = || u2 [-] u ||_2: how far apart two waveforms are in input currents, not in potentials."""
    return float(np.linalg.norm(recover_perturbation(u, spikes, u2, spikes2, a_mem)))


def least_squares_gradient(perturbations: np.ndarray, loss_changes: np.ndarray) -> np.ndarray:
    """grad = pinv(O) f for neighbours given by their input perturbations [K, T] and loss changes [K].

    Rows of O are the unit directions to the neighbours, f their finite differences dL_k / d_k.
    """
    d = np.linalg.norm(perturbations, axis=1)
    if np.any(d == 0):
        raise SnnEdgeError("NA least squares: a neighbour equal to the present waveform has no direction")
    return np.linalg.pinv(perturbations / d[:, None]) @ (loss_changes / d)


def per_step_gradient(loss_changes: np.ndarray, u: np.ndarray, theta, power: int = 1, clip: float = 0.0) -> np.ndarray:
    """dL/dI[k] = dL_k * clip(1 / (theta - u[k])^power, -clip, clip) (clip 0: none; power 1, clip 0: least squares)."""
    gap = theta - u
    gap = np.where(gap == 0, np.finfo(u.dtype).eps, gap)  # u exactly at theta: its neighbour is (almost) 0 away
    factor = 1.0 / gap ** power
    if clip > 0:
        np.clip(factor, -clip, clip, out=factor)
    return loss_changes * factor


def layer_rescale_factor(mean_abs: float, output_mean_abs: float) -> float:
    """The authors' per-layer rescale: 1.2 ln(m_out / (mean|g| + 1e-5) + 1.02)."""
    return 1.2 * float(np.log(output_mean_abs / (mean_abs + 1e-5) + 1.02))


def kernel_targets(y: np.ndarray, n_classes: int, n_steps: int, a_syn, dtype=np.float32) -> np.ndarray:
    """[T, B, C]: the label neuron's target is the PSC of a spike at every step, the others 0."""
    target = np.zeros((n_steps, len(y), n_classes), dtype)
    target[:, np.arange(len(y)), y] = psc_window(np.ones((n_steps, 1), dtype), a_syn)
    return target


def spike_gradient(e_a: np.ndarray, a_syn) -> np.ndarray:
    """dL/ds [T, ...] from dL/da through a[t] = a_syn a[t-1] + (1 - a_syn) s[t] (its transpose)."""
    return ((1 - float(a_syn)) * anticausal_filter(e_a, float(a_syn))).astype(e_a.dtype)


# ---------------------------------------------------------------------------------------------
# The network.

@dataclasses.dataclass
class NAStep:
    fwd: bptt.ForwardResult
    loss: float
    grads: list[np.ndarray]          # dL/dW per layer
    current_grads: list[np.ndarray]  # dL/dI per layer [T, B, N] (after rescaling)


def output_loss(spec: NetworkSpec, fwd: bptt.ForwardResult, params: list[LayerParams], y: np.ndarray,
                loss: str) -> tuple[float, np.ndarray]:
    """(loss, dL/d output) where the output is the spike train [T, B, C] (spiking readout) or the readout
    membrane (membrane readout)."""
    T = fwd.records[0].current.shape[0]
    if loss == "kernel":
        if spec.readout != "spikes" or not fwd.layer_psc:
            raise SnnEdgeError("rule na: loss kernel needs readout 'spikes' (the output layer's PSCs; "
                               "--readout spikes)")
        a = fwd.layer_psc[-1]
        diff = a - kernel_targets(y, spec.n_classes, T, params[-1].a_syn, a.dtype)
        B = len(y)
        return float(0.5 * np.sum(diff.astype(np.float64) ** 2) / B), spike_gradient(diff / B, params[-1].a_syn)
    value, d_logits = compute_loss(loss, fwd.logits, y, T)
    if spec.readout == "membrane":
        return value, np.broadcast_to(d_logits / T, (T,) + d_logits.shape)
    return value, np.broadcast_to(d_logits, (T,) + d_logits.shape)  # logits = spike counts: dL/ds[t] = dL/dc


def na_gradients(spec: NetworkSpec, params: list[LayerParams], X: np.ndarray, y: np.ndarray, *, loss: str = "ce",
                 distance_power: int = 3, distance_clip: float = 5.0, layer_rescale: bool = True,
                 method: str = "auto") -> NAStep:
    """Forward pass of the hard-reset network and NA's weight gradients for a batch X [T, B, N_in], y [B]."""
    if spec.neuron != NEURON:
        raise SnnEdgeError(f"rule na: needs NetworkSpec(neuron={NEURON!r}) (the authors' neuron), got {spec.neuron!r}")
    fwd = bptt.forward(spec, params, X, method=method)
    bptt.check_finite(fwd, "forward pass")
    value, g_out = output_loss(spec, fwd, params, y, loss)  # dL/d(this layer's output) [T, B, N]
    L = spec.n_layers
    grads: list[np.ndarray] = [None] * L  # type: ignore[list-item]
    current_grads: list[np.ndarray] = [None] * L  # type: ignore[list-item]
    out_mean = None
    for i in range(L - 1, -1, -1):
        p, rec = params[i], fwd.records[i]
        if rec.spikes is None:  # leaky membrane readout: linear, its exact gradient
            g_i = bptt._leaky_backward(g_out, p.a_mem)
        else:
            changes = flip_loss_changes(rec.current, rec.v_pre, rec.spikes, p.a_mem, p.theta, g_out)
            g_i = per_step_gradient(changes, rec.v_pre, p.theta, distance_power, distance_clip)
            if layer_rescale:
                mean = float(np.mean(np.abs(g_i)))
                g_i = g_i * np.asarray(layer_rescale_factor(mean, mean if out_mean is None else out_mean), g_i.dtype)
        if out_mean is None:
            out_mean = float(np.mean(np.abs(g_i)))
        g_i = g_i.astype(p.W.dtype, copy=False)
        current_grads[i] = g_i
        grads[i] = rec.inputs.weight_grad(g_i)
        if i > 0:
            T, B, _ = g_i.shape
            e_a = (g_i.reshape(T * B, -1) @ p.W.T).reshape(T, B, -1)
            g_out = spike_gradient(e_a, params[i - 1].a_syn)
    return NAStep(fwd, value, grads, current_grads)


@register_rule
class NARule(LearningRule):
    name = "na"
    OPTIONS = {
        **LearningRule.OPTIONS,
        "loss": (str, "ce", f"one of {LOSSES}: count cross-entropy, count MSE, or the authors' kernel loss on PSCs"),
        "distance_power": (int, 3, "per-step form: dL_k / (theta - u)^p (authors' code 3; 1 is the least-squares one)"),
        "distance_clip": (float, 5.0, "clip of 1/(theta - u)^p to +-this (authors 5; 0: none)"),
        "layer_rescale": (bool, True, "the authors' per-layer gradient rescaling towards the output layer's size"),
        "beta1": (float, 0.0, "AdamW beta1 (authors 0; 0.9 is Adam's usual)"),
        "weight_decay": (float, 0.0, "decoupled (AdamW) weight decay on W"),
        "grad_clip": (float, 1.0, "clip the global gradient norm to this (authors 1; 0: off)"),
        "weight_clip": (float, 4.0, "clip every weight to +-this after each update (authors 4; 0: off)"),
        "method": (str, "auto", f"input-current kernel, one of {METHODS}"),
    }

    def adapt_spec(self, spec: NetworkSpec) -> NetworkSpec:
        return dataclasses.replace(spec, neuron=NEURON)

    def init(self, spec: NetworkSpec, params: list[LayerParams], rng: np.random.Generator) -> None:
        super().init(spec, params, rng)
        o = self.options
        if spec.neuron != NEURON:
            raise SnnEdgeError(f"rule na: needs NetworkSpec(neuron={NEURON!r}) (rule.adapt_spec(spec) sets it), "
                               f"got {spec.neuron!r}")
        if spec.learn_mem_decay or spec.learn_threshold:
            raise SnnEdgeError("rule na: learns the weights only (learn_mem_decay / learn_threshold are not defined)")
        if o["loss"] not in LOSSES:
            raise SnnEdgeError(f"rule na: loss: expected one of {LOSSES}, got {o['loss']!r}")
        if o["method"] not in METHODS:
            raise SnnEdgeError(f"rule na: method: expected one of {METHODS}, got {o['method']!r}")
        if o["distance_power"] < 1 or o["distance_clip"] < 0 or o["weight_clip"] < 0 or o["grad_clip"] < 0:
            raise SnnEdgeError(f"rule na: distance_power >= 1 and distance_clip, weight_clip, grad_clip >= 0 "
                               f"expected; got {o['distance_power']}, {o['distance_clip']}, {o['weight_clip']}, "
                               f"{o['grad_clip']}")
        self.adam = Adam(lr=self.lr, betas=(o["beta1"], 0.999), weight_decay=o["weight_decay"])

    def set_lr(self, lr: float) -> None:
        super().set_lr(lr)
        self.adam.lr = self.lr

    def step(self, params: list[LayerParams], X: np.ndarray, y: np.ndarray) -> NAStep:
        o = self.options
        return na_gradients(self.spec, params, X, y, loss=o["loss"], distance_power=o["distance_power"],
                            distance_clip=o["distance_clip"], layer_rescale=o["layer_rescale"], method=o["method"])

    def train_batch(self, params: list[LayerParams], X: np.ndarray, y: np.ndarray) -> dict[str, float]:
        st = self.step(params, X, y)
        grads = st.grads
        for i, g in enumerate(grads):
            if not np.isfinite(g).all():
                raise SnnEdgeError(f"rule na: NaN/inf in the gradient of layer {i} W")
        clip = self.options["grad_clip"]
        if clip > 0:
            norm = float(np.sqrt(sum(float(np.vdot(g, g)) for g in grads)))
            if norm > clip:
                grads = [g * np.float32(clip / norm) for g in grads]
        self.adam.step({f"L{i}_W": (p.W, g) for i, (p, g) in enumerate(zip(params, grads))},
                       decay={f"L{i}_W" for i in range(len(params))})
        if self.options["weight_clip"] > 0:
            for p in params:
                np.clip(p.W, -self.options["weight_clip"], self.options["weight_clip"], out=p.W)
        pred = st.fwd.logits.argmax(axis=1)
        return {"loss": st.loss, "correct": int((pred == y).sum()), "n": int(len(y))}

    def state_dict(self) -> dict[str, np.ndarray]:
        return self.adam.state_dict()

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        self.adam.load_state_dict(state)
