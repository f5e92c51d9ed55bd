"""Neuron layers as pure step functions with explicit state, plus their whole-window forms.

CubaLIF (current-based LIF, exponential synapse, soft reset by subtraction), per layer:
    I[t] = a_syn * I[t-1] + s_in[t] @ W
    V[t] = a_mem * V[t-1] + I[t];  s[t] = V[t] > theta;  V[t] -= theta * s[t]
With a per-input synaptic decay a_syn [N_in] the synapse filters each input first:
    x[t] = a_syn * x[t-1] + s_in[t];  I[t] = x[t] @ W
(the two forms agree when a_syn is uniform, since the filter is linear). The leaky readout is the
same without spike and reset.

HardResetPSC (the neuron of NA, Yang, Zhang & Li, ICML 2021; a neuron kind of its own, NetworkSpec.neuron =
"hard_reset_psc"): no synaptic filter on the current, a hard reset to 0, and the layer passes on the
post-synaptic current (PSC) of its spikes instead of the spikes:
    u[t] = a_mem * v[t-1] + a_in[t] @ W;  s[t] = u[t] > theta;  v[t] = u[t] * (1 - s[t])
    a[t] = a_syn * a[t-1] + (1 - a_syn) * s[t]
(the authors' tau_m, tau_s are a_mem = 1 - 1/tau_m, a_syn = 1 - 1/tau_s; a_in is the PSC of the layer
below, or the input spikes for the first layer).

A step is `(inputs, state, params) -> (outputs, state')` as in Norse's functional API. Training runs
a whole window at once: the network is feed-forward, so each layer's input currents for all T steps
are one product (a GEMM, or a gather-sum of weight rows over the input events), and only the cheap
element-wise recurrence is a Python loop over T.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from edge.model import LayerParams


class CubaLIFState(NamedTuple):
    i: np.ndarray  # synaptic current [B, N_out] (or filtered inputs [B, N_in] with per-input decay)
    v: np.ndarray  # membrane potential after reset [B, N_out]


def initial_state(params: LayerParams, batch: int, dtype=np.float32) -> CubaLIFState:
    n_in, n_out = params.W.shape
    n_i = n_in if params.a_syn.ndim == 1 else n_out
    return CubaLIFState(np.zeros((batch, n_i), dtype), np.zeros((batch, n_out), dtype))


def _synapse_step(s_in: np.ndarray, i: np.ndarray, params: LayerParams) -> tuple[np.ndarray, np.ndarray]:
    """(new synaptic state, current into the membrane) for one step."""
    if params.a_syn.ndim == 1:
        x = params.a_syn * i + s_in
        return x, x @ params.W
    i = params.a_syn * i + s_in @ params.W
    return i, i


def cuba_lif_step(s_in: np.ndarray, state: CubaLIFState, params: LayerParams):
    """One step of Dense + CubaLIF: s_in [B, N_in] -> (spikes [B, N_out] float 0/1, state')."""
    i, current = _synapse_step(s_in.astype(params.W.dtype, copy=False), state.i, params)
    v = params.a_mem * state.v + current
    spikes = (v > params.theta).astype(v.dtype)
    v = v - params.theta * spikes
    return spikes, CubaLIFState(i, v)


def leaky_readout_step(s_in: np.ndarray, state: CubaLIFState, params: LayerParams):
    """One step of Dense + leaky integrator (no spike, no reset): -> (membrane [B, N_out], state')."""
    i, current = _synapse_step(s_in.astype(params.W.dtype, copy=False), state.i, params)
    v = params.a_mem * state.v + current
    return v, CubaLIFState(i, v)


class HardResetState(NamedTuple):
    v: np.ndarray  # membrane potential after the (hard) reset [B, N_out]
    a: np.ndarray  # post-synaptic current passed to the next layer [B, N_out]


def hard_reset_initial_state(params: LayerParams, batch: int, dtype=np.float32) -> HardResetState:
    n_out = params.W.shape[1]
    return HardResetState(np.zeros((batch, n_out), dtype), np.zeros((batch, n_out), dtype))


def hard_reset_psc_step(a_in: np.ndarray, state: HardResetState, params: LayerParams):
    """One step of Dense + HardResetPSC: a_in [B, N_in] -> (psc [B, N_out], spikes [B, N_out], state')."""
    u = params.a_mem * state.v + a_in.astype(params.W.dtype, copy=False) @ params.W
    spikes = (u > params.theta).astype(u.dtype)
    a = params.a_syn * state.a + (1 - params.a_syn) * spikes
    return a, spikes, HardResetState(u * (1 - spikes), a)


# ---------------------------------------------------------------------------------------------
# Input currents over a whole window: dense GEMM or event gather-sum, same numbers.

# Below this fraction of non-zero inputs, on inputs at least EVENT_MIN_INPUTS wide, the event kernel
# (a scipy CSR product: a gather-sum of weight rows over the events, in compiled code) beats the BLAS
# product. Measured on the 2-core dev machine (OpenBLAS 1 thread, T*B = 960 rows, 128 outputs,
# currents + weight gradient incl. building the input): 2312 inputs dense 20-26 ms, events 7 at 1%
# density, 16 at 4%, 19 at 8%, 23 at 15%. In whole training epochs on N-MNIST (benchmarks/
# train_throughput.py, samples per CPU second): 2312 inputs (4-5% dense) 1.7x faster with events;
# 578 inputs (8-10% dense) no faster (3,000 either way), so they keep the GEMM and its exact results
# (the two kernels sum in different orders: float32 results differ in the last bits).
EVENT_DENSITY_CROSSOVER = 0.12
EVENT_MIN_INPUTS = 1000
METHODS = ("auto", "dense", "events")


def choose_method(density: float, method: str = "auto", n_inputs: int = EVENT_MIN_INPUTS) -> str:
    if method != "auto":
        return method
    return "events" if density < EVENT_DENSITY_CROSSOVER and n_inputs >= EVENT_MIN_INPUTS else "dense"


def density(x: np.ndarray) -> float:
    return float(np.count_nonzero(x)) / max(1, x.size)


def to_events(x2d: np.ndarray, dtype=np.float32):
    """The non-zeros of a [R, N] input matrix as a scipy CSR matrix of `dtype` (values kept: counts work).

    Built from the flat non-zero positions directly: scipy's own dense-to-CSR conversion took ~40 ms
    on a 960 x 2312 N-MNIST batch, this ~5 ms.
    """
    from scipy.sparse import csr_matrix

    n_rows, n_cols = x2d.shape
    flat = np.flatnonzero(x2d != 0)  # row-major positions; on a bool array ~2x faster than on uint8
    indptr = np.searchsorted(flat, np.arange(n_rows + 1) * n_cols)  # where each row's events start
    values = x2d.reshape(-1)[flat].astype(dtype)
    return csr_matrix((values, flat % n_cols, indptr), shape=(n_rows, n_cols))


def event_currents(ev, W: np.ndarray) -> np.ndarray:
    """[R, N_out] = for every row, the sum of W's rows at its events times their values.

    scipy's CSR product does exactly that gather-sum in compiled code (events x N_out multiply-adds),
    without materialising the gathered rows as a numpy gather + reduceat did.
    """
    return np.asarray(ev @ W)


def event_weight_grad(ev, grad_current: np.ndarray, n_in: int) -> np.ndarray:
    """dL/dW [N_in, N_out] = X^T @ grad_current, summed over the events only."""
    assert ev.shape[1] == n_in
    return np.asarray(ev.T @ grad_current)


class WindowInput:
    """A layer's input for a whole window, flattened to [T*B, N_in], in the form its kernel wants."""

    def __init__(self, x: np.ndarray, dtype, method: str = "auto"):
        self.shape = x.shape  # (T, B, N_in)
        flat = x.reshape(-1, x.shape[-1])
        self.method = choose_method(density(flat), method, x.shape[-1])
        self.events = None  # scipy CSR matrix for the event kernel
        self.dense: np.ndarray | None = None
        if self.method == "events":
            self.events = to_events(flat, dtype)
        else:
            self.dense = flat.astype(dtype, copy=False)

    def currents(self, W: np.ndarray) -> np.ndarray:
        """[T, B, N_out] input currents s_in[t] @ W for every step."""
        T, B, _ = self.shape
        out = event_currents(self.events, W) if self.events is not None else self.dense @ W
        return out.reshape(T, B, W.shape[1])

    def weight_grad(self, grad_current: np.ndarray) -> np.ndarray:
        g = grad_current.reshape(-1, grad_current.shape[-1])
        if self.events is not None:
            return event_weight_grad(self.events, g, self.shape[-1])
        assert self.dense is not None
        return self.dense.T @ g


# ---------------------------------------------------------------------------------------------
# Whole-window recurrences (element-wise; one Python iteration per time step).

def synaptic_filter_window(x: np.ndarray, a_syn: np.ndarray, dtype) -> np.ndarray:
    """Per-input synaptic traces x_f[t] = a_syn * x_f[t-1] + x[t] for x [T, B, N_in]."""
    out = x.astype(dtype)  # a fresh array, filtered in place
    for t in range(1, out.shape[0]):
        out[t] += a_syn * out[t - 1]
    return out


def synaptic_current_window(c: np.ndarray, a_syn) -> np.ndarray:
    """I[t] = a_syn * I[t-1] + c[t], in place on c [T, B, N_out]."""
    for t in range(1, c.shape[0]):
        c[t] += a_syn * c[t - 1]
    return c


def lif_membrane_window(current: np.ndarray, a_mem, theta, spike_fn=None, reset_spikes=None):
    """Membrane and spikes of CubaLIF for currents [T, B, N]: -> (V before reset [T,B,N], spikes).

    spike_fn=None is the Heaviside step (what runs); a smooth spike function (gradient checks)
    is applied to V - theta and its value is what gets subtracted by the reset.
    reset_spikes [T, B, N], when given, is subtracted instead of the spikes: held fixed while the
    parameters move, it is the finite-difference twin of a detached reset (reset_grad=False).
    """
    T = current.shape[0]
    v_pre = np.empty_like(current)
    spikes = np.empty_like(current)
    v = np.zeros_like(current[0])
    for t in range(T):
        np.multiply(v, a_mem, out=v_pre[t])
        v_pre[t] += current[t]
        if spike_fn is None:
            np.greater(v_pre[t], theta, out=spikes[t])
        else:
            spikes[t] = spike_fn(v_pre[t] - theta)
        np.multiply(spikes[t] if reset_spikes is None else reset_spikes[t], theta, out=v)
        np.subtract(v_pre[t], v, out=v)
    return v_pre, spikes


def leaky_membrane_window(current: np.ndarray, a_mem) -> np.ndarray:
    """V[t] = a_mem * V[t-1] + I[t] for currents [T, B, N] (a new array; BPTT still needs I)."""
    v = current.copy()
    for t in range(1, v.shape[0]):
        v[t] += a_mem * v[t - 1]
    return v


def hard_reset_membrane_window(current: np.ndarray, a_mem, theta, v0=None):
    """HardResetPSC membranes for currents [T, B, N]: -> (u before reset [T,B,N], spikes [T,B,N]).

    v0: the membrane after reset before the first step (zeros by default); NA's re-simulation of a
    neighbour starts from the middle of a window with it.
    """
    u = np.empty_like(current)
    spikes = np.empty_like(current)
    v = np.zeros_like(current[0]) if v0 is None else np.array(v0, dtype=current.dtype)
    for t in range(current.shape[0]):  # also for one neuron, current [T]: no out= into 0-d slices
        u[t] = a_mem * v + current[t]
        spikes[t] = u[t] > theta
        v = u[t] * (1 - spikes[t])
    return u, spikes


def psc_window(spikes: np.ndarray, a_syn) -> np.ndarray:
    """a[t] = a_syn * a[t-1] + (1 - a_syn) * s[t] over spikes [T, ...] (a new array)."""
    a = (1 - a_syn) * spikes
    for t in range(1, a.shape[0]):
        a[t] += a_syn * a[t - 1]
    return a
