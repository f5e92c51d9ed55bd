"""Probabilistic (GLM/SRM) spiking neurons with K compartments, for the GEM rule (Jang & Simeone 2021).

Neuron j of a layer, compartment k, step t:
    u[t,k,j] = sum_b sum_i W_b[i,j] * (a_b * s_in_i)[t]  +  w_fb[j] * (a_fb * s_j^k)[t]  +  bias[j]
    P(s[t,k,j] = 1) = sigmoid(u[t,k,j])
a_b are the synaptic basis kernels over the presynaptic spike history (raised cosines on a log time
axis; or one exponential kernel x = a_syn x + s, the device form of docs/NUMERICS.md section 11),
a_fb the self-feedback kernel over the neuron's own past spikes (lags >= 1: a neuron cannot see its
own current spike). Kernel kinds:
  raised_cosine  ours: bumps evenly spaced on log(lag + 1) over lags 0..length-1, feed-forward from
                 lag 0 like the rest of the project (deterministic layers, binning and device pass
                 spikes within the step); feedback fb_decay ** (lag - 1).
  pillow08       the GEM authors' (Jang & Simeone 2021, hrjang357/multi-sample-SNN utils/filters.py,
                 "raised_cosine_pillow_08"; Pillow et al. 2008): a_b[d] = (1 + cos(clip(pi mu log(d + 1)
                 - b pi / 2, -pi, pi))) / 2 for d = 0..length-1 applied at lag d + 1 (their one-step
                 synaptic delay), mu = 1.5, 8 bases of length 10; feedback: one basis of the same family
                 (b = 0: the previous step only), length 10. Kernels.authors() is that set.
  exponential    one kernel x[t] = a_syn x[t-1] + s[t] (the integer/device form).

K compartments share every weight and sample independent spike trains. Visible neurons are the
inputs (always the data) and the last layer (clamped to the target spike train in training: the
label neuron fires every step, the others never; sampled at inference); all other layers are hidden
and sample. A layer's parameters are a `GLMLayerParams` (a LayerParams with the extra arrays, so the
engine's fit loop copies and checkpoints them): W is basis 0, W_more the other bases, bias, w_fb;
a_syn is the exponential kernel's decay, a_mem the eligibility-trace decay kappa of the rule.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from edge.errors import SnnEdgeError
from edge.model import LayerParams
from edge.neurons import synaptic_filter_window

KERNELS = ("raised_cosine", "exponential", "pillow08")


@dataclass
class GLMLayerParams(LayerParams):
    W_more: np.ndarray   # [n_basis - 1, N_in, N_out] weights of basis kernels 1.. (W is basis 0)
    bias: np.ndarray     # [N_out]
    w_fb: np.ndarray     # [N_out] weight of the self-feedback kernel

    NAMES = LayerParams.NAMES + ("W_more", "bias", "w_fb")  # type: ignore[assignment]  # extends the base

    def copy(self) -> "GLMLayerParams":
        return type(self)(*(getattr(self, n).copy() for n in self.NAMES))

    def astype(self, dtype) -> "GLMLayerParams":
        return type(self)(*(getattr(self, n).astype(dtype) for n in self.NAMES))

    @property
    def n_basis(self) -> int:
        return 1 + self.W_more.shape[0]

    def basis_weights(self) -> np.ndarray:
        """[n_basis, N_in, N_out] (a new array)."""
        return np.concatenate([self.W[None], self.W_more], axis=0)


@dataclass
class PoolGLMLayerParams(GLMLayerParams):
    """A GLM layer of the GEM authors' recurrent pool (topology="pool"): besides the feed-forward input,
    lateral weights from the layer's other neurons, and (the last layer only) weights straight from the
    network's inputs. Hidden neurons: inputs + other hidden; outputs: inputs + hidden + other outputs;
    nothing from the outputs back to the hidden neurons (hrjang357/multi-sample-SNN, the topology of
    training_utils.make_network_parameters)."""
    W_lat: np.ndarray    # [n_basis, N_out, N_out] lateral weights, lags >= 1; diagonal 0 (w_fb is the self-loop)
    W_skip: np.ndarray   # [n_basis, N_skip, N_out] from the network inputs (N_skip = 0 but in the last layer)

    NAMES = GLMLayerParams.NAMES + ("W_lat", "W_skip")  # type: ignore[assignment]


@dataclass(frozen=True)
class Kernels:
    """The fixed kernel shapes of a probabilistic network (hyper-parameters, not learned)."""
    kind: str = "raised_cosine"
    n_basis: int = 2
    length: int = 8          # lags 0..length-1 of the synaptic basis (raised cosines)
    fb_length: int = 8       # lags 1..fb_length of the self-feedback kernel
    fb_decay: float = 0.6    # feedback kernel a_fb[d] = fb_decay ** (d - 1) (not pillow08)
    mu: float = 1.5          # pillow08 compression of the log time axis

    def __post_init__(self):
        if self.kind not in KERNELS:
            raise SnnEdgeError(f"GEM kernel: expected one of {KERNELS}, got {self.kind!r}")
        if self.kind == "exponential" and self.n_basis != 1:
            raise SnnEdgeError(f"GEM kernel 'exponential': n_basis must be 1, got {self.n_basis}")
        if self.n_basis < 1 or self.length < 1 or self.fb_length < 1 or not 0 <= self.fb_decay < 1:
            raise SnnEdgeError(f"GEM kernels: expected n_basis, length, fb_length >= 1 and fb_decay in "
                               f"[0, 1), got {self}")

    @classmethod
    def authors(cls) -> "Kernels":
        """The GEM authors' defaults: 8 Pillow-2008 raised cosines of 10 steps, mu 1.5, one-step delay."""
        return cls("pillow08", 8, 10, 10, mu=1.5)

    @property
    def first_lag(self) -> int:
        """Lag of the first feed-forward kernel value: 1 for the authors' one-step synaptic delay."""
        return 1 if self.kind == "pillow08" else 0

    def basis(self) -> np.ndarray:
        """[n_basis, length] kernel values at lags first_lag .. first_lag + length - 1."""
        if self.kind == "pillow08":
            return pillow08_basis(self.n_basis, self.length, self.mu)
        return raised_cosine_basis(self.n_basis, self.length)

    def basis_by_lag(self) -> np.ndarray:
        """[n_basis, first_lag + length] kernel values at lags 0.. (zeros before the first lag)."""
        return np.concatenate([np.zeros((self.n_basis, self.first_lag)), self.basis()], axis=1)

    def lateral_by_lag(self) -> np.ndarray:
        """[n_basis, 1 + length] the basis shifted to lags >= 1 (lateral connections of the pool: a
        neuron sees the others' past spikes, never their present ones)."""
        return np.concatenate([np.zeros((self.n_basis, 1)), self.basis()], axis=1)

    def feedback(self) -> np.ndarray:
        """Self-feedback kernel at lags 1..fb_length."""
        if self.kind == "pillow08":
            return pillow08_basis(1, self.fb_length, self.mu)[0]
        return self.fb_decay ** np.arange(self.fb_length, dtype=np.float64)


def pillow08_basis(n_basis: int, length: int, mu: float = 1.5) -> np.ndarray:
    """[n_basis, length] the GEM authors' raised cosines (Pillow et al. 2008 form):
    a_b[d] = (1 + cos(clip(pi mu log(d + 1) - b pi / 2, -pi, pi))) / 2, d = 0..length-1.
    Basis 0 is 1 at d = 0 and 0 after (with mu = 1.5); later bases are wider bumps further back."""
    d = np.arange(length, dtype=np.float64)
    phase = np.pi * mu * np.log(d + 1.0)[None, :] - (np.arange(n_basis) * np.pi / 2)[:, None]
    return 0.5 * (1.0 + np.cos(np.clip(phase, -np.pi, np.pi)))


def raised_cosine_basis(n_basis: int, length: int) -> np.ndarray:
    """[n_basis, length] raised cosines on a log-time axis over lags 0..length-1, each peaking at 1.

    Centres are evenly spaced on log(lag + 1) from lag 0 to lag length-1, each bump spanning two
    spacings, so early lags get narrow kernels and late lags wide ones (Pillow et al. 2008).
    """
    lags = np.log(np.arange(length, dtype=np.float64) + 1.0)
    if n_basis == 1:
        return np.ones((1, length)) if length == 1 else (0.5 * (1 + np.cos(np.pi * lags / lags[-1])))[None]
    centres = np.linspace(0.0, lags[-1], n_basis)
    spacing = centres[1] - centres[0]
    z = np.clip((lags[None, :] - centres[:, None]) * np.pi / (2 * spacing), -np.pi, np.pi)
    return 0.5 * (1.0 + np.cos(z))


def fir_window(s: np.ndarray, kernel: np.ndarray, first_lag: int, dtype) -> np.ndarray:
    """out[t] = sum_d kernel[d] * s[t - d - first_lag] over a window s [T, ...] (zeros before t=0)."""
    out = np.zeros(s.shape, dtype)
    T = s.shape[0]
    for d, k in enumerate(kernel):
        lag = d + first_lag
        if k != 0 and lag < T:
            out[lag:] += k * s[:T - lag]
    return out


def presynaptic_traces(s: np.ndarray, p: GLMLayerParams, kernels: Kernels) -> np.ndarray:
    """[n_basis, T, ...] filtered presynaptic histories of s [T, ..., N_in] (one per basis kernel)."""
    if kernels.kind == "exponential":
        return synaptic_filter_window(s, p.a_syn, p.W.dtype)[None]
    return np.stack([fir_window(s, k, kernels.first_lag, p.W.dtype) for k in kernels.basis()])


def log_sigmoid(u: np.ndarray) -> np.ndarray:
    return -np.logaddexp(0.0, -u)


def sigmoid(u: np.ndarray) -> np.ndarray:
    return np.exp(log_sigmoid(u))


def spike_log_prob(s: np.ndarray, u: np.ndarray) -> np.ndarray:
    """log P(s | u) of Bernoulli(sigmoid(u)) spikes, elementwise."""
    return np.where(s > 0, log_sigmoid(u), log_sigmoid(-u))


class LayerWindow(NamedTuple):
    pre: np.ndarray     # [n_basis, T, B, Kp, N_in] presynaptic traces (Kp = 1: shared by compartments)
    u: np.ndarray       # [T, B, K, N_out]
    s: np.ndarray       # [T, B, K, N_out] spikes (sampled, or the clamped target)
    fb: np.ndarray      # [T, B, K, N_out] feedback-filtered own spike history
    lat: np.ndarray | None = None       # [n_basis, T, B, K, N_out] lateral traces (pool topology)
    skip_pre: np.ndarray | None = None  # [n_basis, T, B, 1, N_skip] traces of the network inputs (pool, last layer)


def layer_window(s_in: np.ndarray, p: GLMLayerParams, kernels: Kernels, uniforms: np.ndarray,
                 clamp: np.ndarray | None = None, skip_in: np.ndarray | None = None) -> LayerWindow:
    """Run one GLM layer over a window for K compartments.

    s_in [T, B, Kp, N_in] (Kp = 1 or K); uniforms [T, B, K, N_out] the random draws (spike when
    draw < sigmoid(u)); clamp [T, B, N_out] observed spikes (visible layer in training) or None;
    skip_in [T, B, 1, N_skip] the network inputs (pool topology, last layer).
    """
    T, B, K, n_out = uniforms.shape
    pre = presynaptic_traces(s_in, p, kernels)
    Wb = p.basis_weights()
    nb, _, _, Kp, n_in = pre.shape
    current = sum((pre[b].reshape(-1, n_in) @ Wb[b]) for b in range(nb)).reshape(T, B, Kp, n_out)
    fb_kernel = kernels.feedback()
    u = np.empty((T, B, K, n_out), p.W.dtype)
    s = np.zeros((T, B, K, n_out), p.W.dtype)
    fb = np.zeros((T, B, K, n_out), p.W.dtype)
    pool = isinstance(p, PoolGLMLayerParams)
    lat = skip_pre = None
    if pool:
        lat_kernel = kernels.lateral_by_lag()
        lat = np.zeros((nb, T, B, K, n_out), p.W.dtype)
        if p.W_skip.shape[1]:
            if skip_in is None:
                raise SnnEdgeError("pool topology: the last layer needs the network inputs (skip_in)")
            skip_pre = presynaptic_traces(skip_in, p, kernels)
            current = current + sum(skip_pre[b].reshape(-1, skip_pre.shape[-1]) @ p.W_skip[b]
                                    for b in range(nb)).reshape(T, B, 1, n_out)
    for t in range(T):
        for d, k in enumerate(fb_kernel):  # own spikes at lags 1..fb_length
            if t - 1 - d >= 0:
                fb[t] += k * s[t - 1 - d]
        u[t] = current[t] + p.w_fb * fb[t] + p.bias
        if pool:
            for d in range(1, lat_kernel.shape[1]):  # the layer's spikes at lags >= 1
                if t - d >= 0:
                    lat[:, t] += lat_kernel[:, d, None, None, None] * s[t - d]
            u[t] += sum(lat[b, t] @ p.W_lat[b] for b in range(nb))
        if clamp is not None:
            s[t] = clamp[t][:, None, :]
        else:
            s[t] = uniforms[t] < sigmoid(u[t])
    return LayerWindow(pre, u, s, fb, lat, skip_pre)


def target_spikes(y: np.ndarray, T: int, n_out: int, dtype=np.float32) -> np.ndarray:
    """[T, B, n_out] the clamped output: the label neuron fires every step, the others never."""
    tgt = np.zeros((T, len(y), n_out), dtype)
    tgt[:, np.arange(len(y)), y] = 1
    return tgt


def draw_uniforms(rng: np.random.Generator, T: int, B: int, K: int, sizes, dtype=np.float64) -> list[np.ndarray]:
    """One uniform draw per neuron, compartment and step of every layer (drawn up front, so the
    window form and the step-by-step form of the rule see the same samples)."""
    return [rng.random((T, B, K, n)).astype(dtype) for n in sizes[1:]]


def network_window(params: list[GLMLayerParams], X: np.ndarray, kernels: Kernels,
                   uniforms: list[np.ndarray], y: np.ndarray | None) -> list[LayerWindow]:
    """All layers over X [T, B, N_in]; y given: the last layer is clamped to the target (training)."""
    T, B, _ = X.shape
    layer_in = X.astype(params[0].W.dtype)[:, :, None, :]
    out = []
    for i, p in enumerate(params):
        last = i == len(params) - 1
        clamp = target_spikes(y, T, p.W.shape[1], p.W.dtype) if (last and y is not None) else None
        skip_in = X.astype(p.W.dtype)[:, :, None, :] if isinstance(p, PoolGLMLayerParams) else None
        win = layer_window(layer_in, p, kernels, uniforms[i], clamp, skip_in)
        out.append(win)
        layer_in = win.s
    return out


def running_log_likelihood(win: LayerWindow, decay: float = 1.0) -> np.ndarray:
    """[T, B, K] log-likelihood of the visible layer's spikes up to and including step t.

    decay = 1 sums over the window (the sample's log-likelihood); decay < 1 discounts the past,
    v[t] = decay * v[t-1] + log p(s[t]) (the paper's online form).
    """
    ll = spike_log_prob(win.s, win.u).sum(axis=-1)
    if decay == 1.0:
        return np.cumsum(ll, axis=0)
    out = np.array(ll, copy=True)
    for t in range(1, out.shape[0]):
        out[t] += decay * out[t - 1]
    return out


def importance_weights(ll: np.ndarray) -> np.ndarray:
    """Normalised importance weights: softmax over the compartment axis (-1) of log-likelihoods."""
    z = ll - ll.max(axis=-1, keepdims=True)
    w = np.exp(z)
    return w / w.sum(axis=-1, keepdims=True)


def effective_compartments(w: np.ndarray) -> np.ndarray:
    """1 / sum_k w_k^2 of normalised importance weights (compartments on the last axis): K when the
    compartments count equally, 1 when one compartment takes all the weight."""
    return 1.0 / np.sum(np.square(w), axis=-1)


def mean_log_likelihood(ll_final: np.ndarray) -> np.ndarray:
    """mean_k log p(visible | hidden_k) per sample from [B, K] window log-likelihoods: the GEM authors'
    estimator (utils/training_utils.get_log_likelihood averages the output log-probability over
    free-hidden runs). A lower bound in expectation that does not tighten with K (Jensen: it is
    below iw_log_likelihood of the same samples)."""
    return ll_final.mean(axis=-1)


def iw_log_likelihood(ll_final: np.ndarray) -> np.ndarray:
    """log (1/K sum_k p(visible | hidden_k)) per sample from [B, K] window log-likelihoods:
    the importance-weighted estimate of log p(target | input) (a lower bound in expectation,
    tighter as K grows)."""
    m = ll_final.max(axis=-1)
    return m + np.log(np.mean(np.exp(ll_final - m[:, None]), axis=-1))


def vote(counts: np.ndarray, expected: np.ndarray, n_classes: int) -> np.ndarray:
    """[B, C] vote fractions: each compartment votes for its most-spiking class (ties broken by
    its expected count sum_t sigmoid(u), then the lowest index)."""
    B, K, C = counts.shape
    key = counts * (expected.max() + 1.0) + expected  # counts first, expected count as tie-break
    choice = key.argmax(axis=-1)
    out = np.zeros((B, n_classes))
    for k in range(K):
        out[np.arange(B), choice[:, k]] += 1.0
    return out / K
