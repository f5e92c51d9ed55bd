"""Spike-time tasks for spike-train-to-spike-train learning (NormAD): encodings, the van Rossum
distance, causal/anti-causal exponential filters, and the ReSuMe-style baseline rule.

Time is discrete (one step = one bin, think 1 ms); a spike train is a 0/1 array with time on axis 0,
like every spike tensor in the project ([T, N] per sample, [T, B, N] per batch).

Encodings (documented here because the results depend on them):

* XOR (`xor_task`): each logical input A, B drives its own group of `group` afferents; logical 0 and
  logical 1 are two fixed random spike patterns of that group (Poisson, `rate` spikes per step,
  frozen by the seed), so the four input patterns are [pattern_A(a) | pattern_B(b) | bias], where the
  bias group fires the same frozen pattern in every trial (it lets the neurons fire for A=B=0 too).
  The target is one output spike train per class: XOR = 1 -> spikes at `targets[1]` steps,
  XOR = 0 -> spikes at `targets[0]` steps. Converged means the output train equals the target train
  exactly, step for step, for all four patterns.
* Random mapping (`random_mapping_task`): `n_patterns` frozen Poisson input patterns, each with its
  own random target train of `n_target_spikes` spikes per output neuron, at least `min_isi` steps
  apart and not before `t_min` (the first steps cannot be reached by any input yet).
* Class labels (`label_targets`): for classification with NormAD, the label neuron's target fires
  every `period` steps from `period - 1` on and every other output neuron is silent.
"""
from __future__ import annotations

import numpy as np

from edge.errors import SnnEdgeError
from edge.neurons import synaptic_filter_window


def causal_filter(x: np.ndarray, decay, dtype=np.float64) -> np.ndarray:
    """y[t] = decay * y[t-1] + x[t] along axis 0 (decay scalar, or one per last-axis entry).

    A scalar decay is one product with the lower-triangular matrix of decay^(t - tau) (one BLAS call instead of
    a Python loop over T: NormAD filters every layer's inputs and errors at every update).
    """
    if np.ndim(decay) == 0:
        x = np.asarray(x, dtype=dtype)
        return (_decay_matrix(x.shape[0], float(decay), dtype) @ x.reshape(x.shape[0], -1)).reshape(x.shape)
    return synaptic_filter_window(x, decay, dtype)


def _decay_matrix(n_steps: int, decay: float, dtype) -> np.ndarray:
    lag = np.arange(n_steps)[:, None] - np.arange(n_steps)[None, :]
    return np.where(lag >= 0, decay ** np.maximum(lag, 0).astype(dtype), 0.0).astype(dtype)


def anticausal_filter(x: np.ndarray, decay, dtype=np.float64) -> np.ndarray:
    """y[t] = x[t] + decay * y[t+1] along axis 0: the transpose of causal_filter (errors flow back)."""
    return causal_filter(np.asarray(x)[::-1], float(decay), dtype)[::-1]


def van_rossum_distance(a: np.ndarray, b: np.ndarray, tau: float = 10.0, dt: float = 1.0) -> np.ndarray:
    """van Rossum (2001) distance between spike trains a, b [T, ...] -> [...].

    Both trains are convolved with exp(-t/tau) (causal, discrete), and
    D = sqrt(dt / tau * sum_t (f_a[t] - f_b[t])^2). One unmatched spike gives about 1/sqrt(2) for
    tau >> dt; identical trains give 0.
    """
    if a.shape != b.shape:
        raise SnnEdgeError(f"van_rossum_distance: spike trains of different shapes {a.shape} and {b.shape}")
    if not tau > 0:
        raise SnnEdgeError(f"van_rossum_distance: tau must be positive, got {tau}")
    diff = causal_filter(np.asarray(a, np.float64) - np.asarray(b, np.float64), np.exp(-dt / tau))
    return np.sqrt(dt / tau * np.sum(diff ** 2, axis=0))


def poisson_pattern(rng: np.random.Generator, n_steps: int, n: int, rate: float) -> np.ndarray:
    """A frozen Poisson pattern [T, n] uint8 with `rate` spikes per step per afferent."""
    if not 0 < rate < 1:
        raise SnnEdgeError(f"poisson_pattern: rate per step must lie in (0, 1), got {rate}")
    return (rng.random((n_steps, n)) < rate).astype(np.uint8)


def spike_train(n_steps: int, times) -> np.ndarray:
    s = np.zeros(n_steps, np.uint8)
    s[list(times)] = 1
    return s


def xor_task(n_steps: int = 40, group: int = 20, rate: float = 0.05, targets=((29,), (19,)), seed: int = 0):
    """The spike-based XOR task: (X [4, T, 3*group] uint8, S_des [4, T, 1] uint8, labels [4]).

    Rows are (A, B) = (0,0), (0,1), (1,0), (1,1); labels = A xor B; see the module doc for the code.
    """
    rng = np.random.default_rng(seed)
    codes = {(g, bit): poisson_pattern(rng, n_steps, group, rate) for g in "AB" for bit in (0, 1)}
    bias = poisson_pattern(rng, n_steps, group, rate)
    X, S, labels = [], [], []
    for a in (0, 1):
        for b in (0, 1):
            X.append(np.concatenate([codes["A", a], codes["B", b], bias], axis=1))
            S.append(spike_train(n_steps, targets[a ^ b])[:, None])
            labels.append(a ^ b)
    return np.stack(X), np.stack(S), np.array(labels)


def random_target_train(rng: np.random.Generator, n_steps: int, n_spikes: int, min_isi: int, t_min: int):
    """n_spikes distinct times in [t_min, T) at least min_isi apart (rejection sampling)."""
    if t_min + (n_spikes - 1) * min_isi >= n_steps:
        raise SnnEdgeError(f"random target: {n_spikes} spikes {min_isi} steps apart do not fit in "
                           f"steps {t_min}..{n_steps - 1}")
    while True:
        times = np.sort(rng.choice(np.arange(t_min, n_steps), size=n_spikes, replace=False))
        if n_spikes < 2 or np.diff(times).min() >= min_isi:
            return spike_train(n_steps, times)


def random_mapping_task(n_patterns: int = 10, n_in: int = 100, n_out: int = 1, n_steps: int = 100,
                        rate: float = 0.02, n_target_spikes: int = 4, min_isi: int = 10, t_min: int = 10,
                        seed: int = 0):
    """Random input patterns -> random target trains: (X [P, T, n_in] uint8, S_des [P, T, n_out] uint8)."""
    rng = np.random.default_rng(seed)
    X = np.stack([poisson_pattern(rng, n_steps, n_in, rate) for _ in range(n_patterns)])
    S = np.stack([np.stack([random_target_train(rng, n_steps, n_target_spikes, min_isi, t_min)
                            for _ in range(n_out)], axis=1) for _ in range(n_patterns)])
    return X, S


def label_targets(y: np.ndarray, n_classes: int, n_steps: int, period: int) -> np.ndarray:
    """Target trains [T, B, C] for class labels: the label neuron fires every `period` steps."""
    if period < 1:
        raise SnnEdgeError(f"label targets: period must be >= 1 step, got {period}")
    S = np.zeros((n_steps, len(y), n_classes), np.float32)
    S[period - 1::period, np.arange(len(y)), y] = 1.0
    return S


# ---------------------------------------------------------------------------------------------
# ReSuMe-style baseline (Ponulak & Kasinski 2010), for one trainable layer.

def resume_update(layer_in: np.ndarray, error: np.ndarray, a_nonhebb: float = 0.0, A: float = 1.0,
                  tau: float = 5.0) -> np.ndarray:
    """ReSuMe weight change direction dW [N_in, N_out] (before the learning rate), batch-summed.

    dw_i = sum_t e[t] * (a + A * sum_{s >= 0} exp(-s / tau) S_i[t - s]): at every desired spike the
    weights of recently active inputs grow, at every actual spike they shrink, with an STDP-like
    exponential window (the learning window of the original rule), plus a non-Hebbian term a.
    layer_in [T, B, N_in], error = S_des - S_obs [T, B, N_out].
    """
    trace = causal_filter(layer_in, np.exp(-1.0 / tau))
    T, B, n_in = trace.shape
    e = error.reshape(T * B, -1).astype(np.float64)
    dw = A * (trace.reshape(T * B, n_in).T @ e)
    if a_nonhebb:
        dw += a_nonhebb * e.sum(axis=0)[None, :]
    return dw
