"""The CubaLIF engine: whole-window forms equal the step functions; both current kernels agree."""
from __future__ import annotations

import numpy as np
import pytest

from edge import bptt
from edge.model import LayerParams, NetworkSpec, init_params
from edge.neurons import (CubaLIFState, WindowInput, choose_method, cuba_lif_step, event_currents,
                          event_weight_grad, initial_state, leaky_readout_step, to_events)


def _layer(W, a_syn=0.5, a_mem=0.8, theta=1.0) -> LayerParams:
    f = np.float32
    return LayerParams(np.asarray(W, f), np.asarray(a_syn, f), np.array(a_mem, f), np.array(theta, f))


def test_single_neuron_trajectory_by_hand():
    """One input, weight 0.6, a_syn 0.5, a_mem 0.8, theta 1: worked out on paper."""
    p = _layer([[0.6]])
    state = initial_state(p, batch=1)
    s_in = np.array([[1]], np.uint8)
    expected = [  # (I, V before reset, spike)
        (0.6, 0.6, 0.0),
        (0.9, 0.8 * 0.6 + 0.9, 1.0),              # 1.38 > 1: spike, V -> 0.38
        (1.05, 0.8 * 0.38 + 1.05, 1.0),           # 1.354 -> 0.354
        (1.125, 0.8 * 0.354 + 1.125, 1.0),        # 1.4082 -> 0.4082
    ]
    for i_exp, v_pre, spike in expected:
        out, state = cuba_lif_step(s_in, state, p)
        assert out[0, 0] == spike
        np.testing.assert_allclose(state.i[0, 0], i_exp, rtol=1e-6)
        np.testing.assert_allclose(state.v[0, 0], v_pre - spike * 1.0, rtol=1e-5)


def _step_loop(spec: NetworkSpec, params, X):
    """Reference: the network as a loop of pure step functions."""
    T, B, _ = X.shape
    states = [initial_state(p, B) for p in params]
    outs = []
    for t in range(T):
        s = X[t]
        for i, p in enumerate(params):
            if i == spec.n_layers - 1 and spec.readout == "membrane":
                s, states[i] = leaky_readout_step(s, states[i], p)
            else:
                s, states[i] = cuba_lif_step(s, states[i], p)
        outs.append(s)
    outs = np.stack(outs)
    return outs.mean(0) if spec.readout == "membrane" else outs.sum(0)


@pytest.mark.parametrize("readout", ["spikes", "membrane"])
@pytest.mark.parametrize("learn_syn_decay", [False, True])
def test_window_forward_equals_step_functions(readout, learn_syn_decay):
    rng = np.random.default_rng(3)
    spec = NetworkSpec(sizes=(40, 24, 6), readout=readout, a_syn=(0.6, 0.7), a_mem=0.85, theta=0.4,
                       learn_syn_decay=learn_syn_decay)
    params = init_params(spec, rng)
    if learn_syn_decay:  # make the per-input decays really differ
        params[0].a_syn[:] = rng.uniform(0.2, 0.9, 40).astype(np.float32)
    for p in params:
        p.W *= 3
    X = (rng.random((15, 5, 40)) < 0.2).astype(np.uint8)
    fwd = bptt.forward(spec, params, X)
    ref = _step_loop(spec, params, X)
    if readout == "spikes":
        assert fwd.layer_spikes[0].sum() > 0  # the test exercises spikes and resets
        np.testing.assert_array_equal(fwd.logits, ref)
    else:
        np.testing.assert_allclose(fwd.logits, ref, rtol=1e-5, atol=1e-5)


def test_uniform_per_input_decay_equals_scalar_decay():
    """The per-input synaptic filter with all decays equal is the scalar exponential synapse."""
    rng = np.random.default_rng(4)
    scalar = NetworkSpec(sizes=(30, 12, 4), a_syn=0.7, theta=0.3)
    per_input = NetworkSpec(sizes=(30, 12, 4), a_syn=0.7, theta=0.3, learn_syn_decay=True)
    p_scalar = init_params(scalar, np.random.default_rng(0), dtype=np.float64)
    p_input = init_params(per_input, np.random.default_rng(0), dtype=np.float64)
    X = (rng.random((20, 4, 30)) < 0.3).astype(np.uint8)
    a = bptt.forward(scalar, p_scalar, X, smooth=True)
    b = bptt.forward(per_input, p_input, X, smooth=True)
    np.testing.assert_allclose(a.logits, b.logits, rtol=1e-10)


@pytest.mark.parametrize("counts", [False, True])
def test_event_gather_sum_equals_dense_gemm(counts):
    rng = np.random.default_rng(5)
    W = rng.standard_normal((200, 33)).astype(np.float32)
    X = (rng.random((12, 8, 200)) < 0.05).astype(np.uint8)
    X[3, 2, :] = 0  # an empty row: the segment sums must leave it at zero
    if counts:
        X *= rng.integers(1, 5, X.shape).astype(np.uint8)
    dense = WindowInput(X, np.float32, "dense")
    events = WindowInput(X, np.float32, "events")
    assert events.events is not None and dense.dense is not None
    np.testing.assert_allclose(events.currents(W), dense.currents(W), rtol=1e-5, atol=1e-5)
    g = rng.standard_normal((12, 8, 33)).astype(np.float32)
    np.testing.assert_allclose(events.weight_grad(g), dense.weight_grad(g), rtol=1e-4, atol=1e-4)


def test_event_kernels_on_empty_input():
    ev = to_events(np.zeros((6, 10), np.uint8))
    W = np.ones((10, 3), np.float32)
    assert not event_currents(ev, W).any()
    assert not event_weight_grad(ev, np.ones((6, 3), np.float32), 10).any()


def test_network_gradients_same_with_either_kernel():
    rng = np.random.default_rng(6)
    spec = NetworkSpec(sizes=(100, 20, 5), a_syn=0.5, a_mem=0.8, theta=0.5)
    params = init_params(spec, rng)
    X = (rng.random((10, 6, 100)) < 0.05).astype(np.uint8)
    d = rng.standard_normal((6, 5)).astype(np.float32)
    grads = {}
    for method in ("dense", "events"):
        fwd = bptt.forward(spec, params, X, method=method)
        assert fwd.records[0].inputs.method == method
        grads[method] = bptt.backward(spec, params, fwd, d)
    for gd, ge in zip(grads["dense"], grads["events"]):
        for name in gd:
            np.testing.assert_allclose(gd[name], ge[name], rtol=1e-4, atol=1e-5)


def test_auto_kernel_choice_follows_density():
    assert choose_method(0.0005) == "events"
    assert choose_method(0.5) == "dense"
    assert choose_method(0.5, "events") == "events"
    assert choose_method(0.05, n_inputs=2312) == "events" and choose_method(0.05, n_inputs=578) == "dense"
    sparse = np.zeros((4, 2, 1000), np.uint8)
    sparse[0, 0, :3] = 1
    assert WindowInput(sparse, np.float32).method == "events"
    assert WindowInput(np.ones((4, 2, 10), np.uint8), np.float32).method == "dense"


def test_initial_state_shapes():
    p = _layer(np.zeros((7, 3)), a_syn=np.full(7, 0.5))
    st = initial_state(p, batch=2)
    assert isinstance(st, CubaLIFState) and st.i.shape == (2, 7) and st.v.shape == (2, 3)
