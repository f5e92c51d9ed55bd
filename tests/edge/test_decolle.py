"""DECOLLE (edge/rules/decolle.py): local fixed-readout losses per layer, no error across layers or time."""
from __future__ import annotations

import numpy as np
import pytest

from edge import bptt, surrogate
from edge.errors import SnnEdgeError
from edge.model import NetworkSpec, init_params
from edge.rules import make_rule


def test_hidden_update_is_the_local_readout_gradient_and_the_output_update_is_solsas():
    spec = NetworkSpec(sizes=(9, 6, 3), readout="membrane", a_syn=0.6, a_mem=0.7)
    rng = np.random.default_rng(0)
    params = init_params(spec, rng, dtype=np.float64)
    params[0].W *= 4.0
    X = (rng.random((5, 2, 9)) < 0.5).astype(np.uint8)
    y = np.array([1, 2])
    rule = make_rule("decolle", k_update=10 ** 6)
    rule.init(spec, params, rng)
    rule.train_batch(params, X, y)
    # reference: the engine's forward, then sum_t P[t]^T (h[t] * (onehot - s R) R^T) written out
    fwd = bptt.forward(spec, params, X, method="dense")
    s_h = fwd.layer_spikes[0]
    R = rule.readouts[0]
    onehot = np.eye(3)[y]
    x = np.zeros((2, 9))
    P = np.zeros((2, 9))
    ref = np.zeros((9, 6))
    for t in range(5):
        x = 0.6 * x + X[t]
        P = 0.7 * P + x
        h = surrogate.derivative(spec.surrogate, fwd.records[0].v_pre[t] - 1.0, spec.slope)
        ref += P.T @ (h * ((onehot - s_h[t] @ R) @ R.T))
    np.testing.assert_allclose(rule.G[0], ref, rtol=1e-10, atol=1e-12)
    assert np.abs(rule.G[0]).sum() > 0
    # the output layer gets exactly SOLSA's update without the reset path (same output signal)
    solsa = make_rule("solsa", k_update=10 ** 6)
    solsa.init(NetworkSpec(sizes=(9, 6, 3), readout="membrane", a_syn=0.6, a_mem=0.7), params, rng)
    solsa.train_batch(params, X, y)
    np.testing.assert_allclose(rule.G[1], solsa.G[1], rtol=1e-10, atol=1e-12)
    assert not np.allclose(rule.G[0], solsa.G[0])  # hidden: local readout, not the error from above


def test_learns_a_small_task_and_memory_meter_matches():
    from edge import memory_meter

    rng = np.random.default_rng(0)
    n_in, T = 20, 12
    templates = rng.random((3, T, n_in)) < 0.25
    y = rng.integers(0, 3, 60)
    X = (templates[y] ^ (rng.random((60, T, n_in)) < 0.03)).astype(np.uint8).transpose(1, 0, 2)
    spec = NetworkSpec(sizes=(n_in, 16, 3), readout="membrane")
    params = init_params(spec, np.random.default_rng(1))
    rule = make_rule("decolle", lr=3e-3)
    rule.init(spec, params, np.random.default_rng(0))
    for _ in range(15):
        for b in range(0, 60, 10):
            rule.train_batch(params, X[:, b:b + 10], y[b:b + 10])
    assert float(np.mean(rule.predict(params, X).argmax(axis=1) == y)) > 0.9
    held = sum(p.W.shape[0] * 4 for p in params) + sum(R.nbytes for R in rule.readouts) + sum(G.nbytes for G in rule.G)
    meter = sum(memory_meter.decolle_bytes(a, b, T, 3, i < spec.n_layers - 1).total
                for i, (a, b) in enumerate(zip(spec.sizes[:-1], spec.sizes[1:])))
    assert held == meter


def test_bad_options_are_refused():
    spec = NetworkSpec(sizes=(4, 3, 2), learn_syn_decay=True)
    with pytest.raises(SnnEdgeError, match="fixed time constants"):
        make_rule("decolle").init(spec, init_params(spec, np.random.default_rng(0)), np.random.default_rng(0))
    spec = NetworkSpec(sizes=(4, 3, 2))
    with pytest.raises(SnnEdgeError, match="k_update"):
        make_rule("decolle", k_update=0).init(spec, init_params(spec, np.random.default_rng(0)), np.random.default_rng(0))
