"""Reverse-mode BPTT for the Dense + CubaLIF stack, written by hand in numpy.

Forward (per layer, whole window; see edge/neurons.py):
    c[t] = s_in[t] @ W;  I[t] = a_syn I[t-1] + c[t];  P[t] = a_mem V[t-1] + I[t]   (P: V before reset)
    s[t] = H(P[t] - theta)   (surrogate derivative h[t] = sg(P[t] - theta) backward)
    V[t] = P[t] - theta s[t]
Backward, with gV[t] = dL/dV[t] (after reset) flowing from step t+1 as a_mem * gP[t+1]:
    gP[t] = gV[t] + (gs[t] - rg * theta * gV[t]) h[t]        rg = 1 keeps the reset path (reset_grad)
    gI[t] = gP[t] + a_syn gI[t+1];  dW = sum_t s_in[t]^T gI[t];  gs_in[t] = gI[t] W^T
    d a_mem = sum_t gP[t] V[t-1];  d a_syn = sum_t gI[t] I[t-1]
    d theta = -sum_t (gP[t] - gV[t]) - sum_t gV[t] s[t]   (through the spike and through the reset)
Per-input synaptic decay filters the inputs instead: x[t] = a_syn x[t-1] + s_in[t], I[t] = x[t] @ W,
so gx[t] = gI[t] W^T + a_syn gx[t+1], d a_syn = sum_{t,b} gx[t] x[t-1], gs_in[t] = gx[t].

The layers are feed-forward, so the products over the whole window (currents, dW, gs_in) are one
GEMM or event gather-sum each; only the element-wise recurrences loop over T.
`smooth=True` replaces the step by the surrogate's primitive: then this gradient is exact, which is
what tests/edge/test_bptt_gradcheck.py checks against central finite differences in float64.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge import surrogate
from edge.errors import SnnEdgeError
from edge.model import LayerParams, NetworkSpec
from edge.neurons import (WindowInput, hard_reset_membrane_window, leaky_membrane_window, lif_membrane_window,
                          psc_window, synaptic_current_window, synaptic_filter_window)


@dataclass
class LayerRecord:
    """What the backward pass needs from one layer's forward pass."""

    inputs: WindowInput          # s_in (or the filtered x with per-input decay), flattened
    filtered: bool               # per-input synaptic decay: inputs holds x[t], not s_in[t]
    current: np.ndarray          # I[t] [T, B, N_out]
    v_pre: np.ndarray            # P[t] (LIF) or V[t] (leaky readout)
    spikes: np.ndarray | None    # s[t], None for the leaky readout


@dataclass
class ForwardResult:
    logits: np.ndarray                  # [B, C]: spike counts, or the time-mean readout membrane
    records: list[LayerRecord]
    layer_spikes: list[np.ndarray]      # output of every layer [T, B, N] (membrane for the readout)
    layer_psc: list[np.ndarray] | None = None  # hard_reset_psc only: what each layer passes on [T, B, N]


def forward(spec: NetworkSpec, params: list[LayerParams], X: np.ndarray, *,
            smooth: bool = False, method: str = "auto",
            reset_spikes: list[np.ndarray] | None = None) -> ForwardResult:
    """Run the network over a window X [T, B, N_in] (uint8 spikes/counts, or float).

    smooth / reset_spikes: gradient checks only (see the module doc and lif_membrane_window).
    spec.neuron "hard_reset_psc" runs NA's neuron instead (edge/neurons.py): hard reset, each layer passes on
    the post-synaptic current of its spikes, no synaptic filter on the current.
    """
    if X.ndim != 3 or X.shape[2] != spec.n_inputs:
        raise SnnEdgeError(f"input: expected [T, B, {spec.n_inputs}] spikes, got shape {X.shape}")
    if spec.neuron == "hard_reset_psc":
        if smooth or reset_spikes is not None:
            raise SnnEdgeError("forward: smooth / reset_spikes are gradient checks of the cuba_lif neuron")
        return _forward_hard_reset(spec, params, X, method)
    dtype = params[0].W.dtype
    spike_fn = (lambda x: surrogate.primitive(spec.surrogate, x, spec.slope)) if smooth else None
    records, outputs = [], []
    layer_in = X
    for i, p in enumerate(params):
        if p.a_syn.ndim == 1:
            inputs = WindowInput(synaptic_filter_window(layer_in, p.a_syn, dtype), dtype, "dense")
            current = inputs.currents(p.W)
        else:
            inputs = WindowInput(layer_in, dtype, method)
            current = synaptic_current_window(inputs.currents(p.W), p.a_syn)
        if i == spec.n_layers - 1 and spec.readout == "membrane":
            v = leaky_membrane_window(current, p.a_mem)
            records.append(LayerRecord(inputs, p.a_syn.ndim == 1, current, v, None))
            outputs.append(v)
        else:
            v_pre, spikes = lif_membrane_window(current, p.a_mem, p.theta, spike_fn,
                                                None if reset_spikes is None else reset_spikes[i])
            records.append(LayerRecord(inputs, p.a_syn.ndim == 1, current, v_pre, spikes))
            outputs.append(spikes)
            layer_in = spikes
    last = outputs[-1]
    logits = last.mean(axis=0) if spec.readout == "membrane" else last.sum(axis=0)
    return ForwardResult(logits, records, outputs)


def _forward_hard_reset(spec: NetworkSpec, params: list[LayerParams], X: np.ndarray, method: str) -> ForwardResult:
    dtype = params[0].W.dtype
    records, outputs, pscs = [], [], []
    layer_in = X
    for i, p in enumerate(params):
        inputs = WindowInput(layer_in, dtype, method)
        current = inputs.currents(p.W)
        if i == spec.n_layers - 1 and spec.readout == "membrane":
            v = leaky_membrane_window(current, p.a_mem)
            records.append(LayerRecord(inputs, False, current, v, None))
            outputs.append(v)
            continue
        u, spikes = hard_reset_membrane_window(current, p.a_mem, p.theta)
        records.append(LayerRecord(inputs, False, current, u, spikes))
        outputs.append(spikes)
        layer_in = psc_window(spikes, p.a_syn)
        pscs.append(layer_in)
    last = outputs[-1]
    logits = last.mean(axis=0) if spec.readout == "membrane" else last.sum(axis=0)
    return ForwardResult(logits, records, outputs, pscs)


def check_finite(result: ForwardResult, where: str = "forward") -> None:
    """Raise naming the first layer and time step where NaN/inf appeared in a membrane.

    The membranes are checked, not only the logits: a NaN membrane never crosses the threshold,
    so it would silently stop spiking instead of showing up in the counts.
    """
    for i, rec in enumerate(result.records):
        if np.isfinite(rec.v_pre.sum()):  # one cheap reduction per layer; inf/NaN survive the sum
            continue
        bad = ~np.isfinite(rec.v_pre).reshape(rec.v_pre.shape[0], -1).all(axis=1)
        if bad.any():
            raise SnnEdgeError(f"{where}: NaN/inf in layer {i} membrane at time step {int(np.argmax(bad))}")
        raise SnnEdgeError(f"{where}: layer {i} membranes overflow float range")
    if not np.isfinite(result.logits).all():
        raise SnnEdgeError(f"{where}: NaN/inf in the output logits")


def _shift_prev(x: np.ndarray) -> np.ndarray:
    """x[t-1] with zeros at t = 0 (the state before the window)."""
    out = np.empty_like(x)
    out[0] = 0
    out[1:] = x[:-1]
    return out


def backward(spec: NetworkSpec, params: list[LayerParams], fwd: ForwardResult,
             d_logits: np.ndarray, spike_derivative=None) -> list[dict[str, np.ndarray]]:
    """Gradients of the loss w.r.t. every parameter, given dL/dlogits [B, C]: one dict per layer.

    spike_derivative(layer_index, v_pre [T,B,N], theta) -> h [T,B,N], when given, replaces the
    surrogate derivative d s / d P with one computed from the whole membrane waveform (the NA rule,
    edge/rules/na.py); None uses spec.surrogate.
    """
    if spec.neuron != "cuba_lif":
        raise SnnEdgeError(f"surrogate BPTT is written for the cuba_lif neuron; neuron {spec.neuron!r} is "
                           "trained by rule na (edge/rules/na.py)")
    T = fwd.records[0].current.shape[0]
    d_logits = d_logits.astype(params[0].W.dtype, copy=False)
    if spec.readout == "membrane":
        g_out = np.broadcast_to(d_logits / T, (T,) + d_logits.shape)
    else:
        g_out = np.broadcast_to(d_logits, (T,) + d_logits.shape)
    grads: list[dict[str, np.ndarray]] = [None] * spec.n_layers  # type: ignore[list-item]
    for i in range(spec.n_layers - 1, -1, -1):
        p, rec = params[i], fwd.records[i]
        g = {}
        if rec.spikes is None:
            g_p = _leaky_backward(g_out, p.a_mem)
            g["theta"] = np.zeros_like(p.theta)
            g["a_mem"] = np.asarray(np.vdot(g_p[1:], rec.v_pre[:-1]), dtype=p.a_mem.dtype)
        else:
            h = None if spike_derivative is None else spike_derivative(i, rec.v_pre, p.theta)
            g_p, g["a_mem"], g["theta"] = _lif_backward(spec, p, rec, g_out, h)
        g["W"], g["a_syn"], g_out = _synapse_backward(p, rec, g_p, need_input_grad=i > 0)
        grads[i] = g
    return grads


def _leaky_backward(g_out: np.ndarray, a_mem) -> np.ndarray:
    """dL/dV[t] for V[t] = a_mem V[t-1] + I[t] given the direct gradients g_out[t]."""
    g = np.array(g_out, copy=True)
    for t in range(g.shape[0] - 2, -1, -1):
        g[t] += a_mem * g[t + 1]
    return g


def _lif_backward(spec: NetworkSpec, p: LayerParams, rec: LayerRecord, g_s: np.ndarray, h=None):
    """-> (dL/dP [T,B,N], d a_mem, d theta) for one CubaLIF layer given dL/ds[t] (h: d s/d P override)."""
    assert rec.spikes is not None
    theta, a_mem = p.theta, p.a_mem
    if h is None:
        h = surrogate.derivative(spec.surrogate, rec.v_pre - theta, spec.slope)
    T = h.shape[0]
    g_p = np.empty_like(h)
    g_v = np.zeros_like(h[0])
    if spec.reset_grad:
        tmp = np.empty_like(g_v)
        for t in range(T - 1, -1, -1):
            np.multiply(g_v, theta, out=tmp)
            np.subtract(g_s[t], tmp, out=tmp)
            tmp *= h[t]
            np.add(g_v, tmp, out=g_p[t])
            np.multiply(g_p[t], a_mem, out=g_v)
    else:
        np.multiply(g_s, h, out=g_p)  # the spike path does not depend on gV: precompute it
        for t in range(T - 2, -1, -1):
            g_p[t] += a_mem * g_p[t + 1]
    g_v_all = np.empty_like(g_p)  # gV[t] = a_mem gP[t+1], gV[T-1] = 0
    np.multiply(g_p[1:], a_mem, out=g_v_all[:-1])
    g_v_all[-1] = 0
    d_theta = -(g_p.sum(dtype=np.float64) - g_v_all.sum(dtype=np.float64)) - np.vdot(g_v_all, rec.spikes)
    v_post_prev = _shift_prev(rec.v_pre - theta * rec.spikes)
    d_a_mem = np.vdot(g_p, v_post_prev)
    return g_p, np.asarray(d_a_mem, dtype=a_mem.dtype), np.asarray(d_theta, dtype=theta.dtype)


def _synapse_backward(p: LayerParams, rec: LayerRecord, g_i: np.ndarray, need_input_grad: bool):
    """From dL/dI[t] (direct, before the synaptic recurrence) -> (dW, d a_syn, dL/ds_in)."""
    T, B, _ = g_i.shape
    if not rec.filtered:
        g_c = np.array(g_i, copy=True)  # total dL/dI[t] = dL/dc[t]
        for t in range(T - 2, -1, -1):
            g_c[t] += p.a_syn * g_c[t + 1]
        d_a_syn = np.asarray(np.vdot(g_c[1:], rec.current[:-1]), dtype=p.a_syn.dtype)
        d_w = rec.inputs.weight_grad(g_c)
        g_in = (g_c.reshape(T * B, -1) @ p.W.T).reshape(T, B, -1) if need_input_grad else None
        return d_w, d_a_syn, g_in
    x = rec.inputs.dense  # filtered inputs x[t], [T*B, N_in]
    assert x is not None, "per-input decay always uses the dense kernel"
    d_w = x.T @ g_i.reshape(T * B, -1)
    g_x = (g_i.reshape(T * B, -1) @ p.W.T).reshape(T, B, -1)
    for t in range(T - 2, -1, -1):
        g_x[t] += p.a_syn * g_x[t + 1]
    x3 = x.reshape(T, B, -1)
    d_a_syn = np.einsum("tbn,tbn->n", g_x[1:], x3[:-1]).astype(p.a_syn.dtype)
    return d_w, d_a_syn, g_x if need_input_grad else None
