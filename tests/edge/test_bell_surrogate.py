"""bell-surrogate (the rule first built as "NA" from the paper's abstract): its spike derivative is a weighted average of real finite
differences, and its gradient approaches the true finite difference as the neighbourhood shrinks."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from edge import bptt
from edge.errors import SnnEdgeError
from edge.losses import cross_entropy
from edge.model import NetworkSpec, init_params
from edge.rules import make_rule
from edge.rules.bell_surrogate import na_spike_derivative, neighbourhood


def test_spike_derivative_is_the_weighted_average_of_spike_finite_differences():
    rng = np.random.default_rng(0)
    T, theta, a_mem, radius, points, sigma = 7, 1.3, 0.8, 0.9, 5, 0.4
    v = rng.normal(theta, 0.8, size=(T, 3, 11))
    h = na_spike_derivative(v, theta, a_mem, radius, points, sigma)
    deltas, weights = neighbourhood(radius, points, sigma, theta, a_mem, T)
    for t in range(T):
        for idx in np.ndindex(v.shape[1:]):
            p = v[(t,) + idx]
            s0 = float(p > theta)
            fd = [((p + sgn * d > theta) - s0) / (sgn * d) * w
                  for d, w in zip(deltas, weights[t]) for sgn in (1.0, -1.0)]
            assert h[(t,) + idx] == pytest.approx(sum(fd) / (2 * weights[t].sum()), rel=1e-12, abs=1e-15)
    assert (h >= 0).all() and h.max() > 0
    far = np.abs(v - theta) > radius * theta
    assert (h[far] == 0).all()  # no neighbour reaches the threshold: the spike cannot change


def _tiny(seed=3, T=8):
    spec = NetworkSpec(sizes=(6, 5, 3), readout="membrane", a_syn=0.5, a_mem=0.8, theta=1.0)
    rng = np.random.default_rng(seed)
    params = init_params(spec, rng, dtype=np.float64)
    params[0].W[:] = rng.normal(0.35, 0.5, params[0].W.shape)
    X = (rng.random((T, 4, 6)) < 0.4).astype(np.uint8)
    y = rng.integers(0, 3, 4)
    return spec, params, X, y


def _loss(spec, params, X, y):
    fwd = bptt.forward(spec, params, X)
    return cross_entropy(fwd.logits, y)[0], fwd.layer_spikes[0]


def test_bell_surrogate_gradient_approaches_the_true_finite_difference_as_the_neighbourhood_shrinks():
    spec, params, X, y = _tiny()
    fwd = bptt.forward(spec, params, X)
    assert fwd.layer_spikes[0].sum() > 0
    # The true derivative exists here: a tiny change of W0 moves no spike (checked), so the loss is
    # smooth around this point and central differences give it.
    eps = 1e-6
    true = np.zeros_like(params[0].W)
    for idx in np.ndindex(true.shape):
        plus = [p.copy() for p in params]
        minus = [p.copy() for p in params]
        plus[0].W[idx] += eps
        minus[0].W[idx] -= eps
        (lp, sp), (lm, sm) = _loss(spec, plus, X, y), _loss(spec, minus, X, y)
        assert np.array_equal(sp, fwd.layer_spikes[0]) and np.array_equal(sm, fwd.layer_spikes[0])
        true[idx] = (lp - lm) / (2 * eps)
    # The closest any neuron comes to its threshold: neighbourhoods narrower than that flip no spike.
    margin = float(np.abs(fwd.records[0].v_pre - params[0].theta).min())
    assert margin > 1e-3
    errors = {}
    for radius in (1.0, 0.3, 2.0 * margin, 0.5 * margin, 0.05 * margin):
        rule = make_rule("bell-surrogate", radius=radius, points=6, sigma=0.5)
        rule.init(spec, params, np.random.default_rng(0))
        _, _, grads = rule.gradients(params, X, y)
        errors[radius] = float(np.abs(grads[0]["W"] - true).max())
    scale = max(1.0, float(np.abs(true).max()))
    # Wide neighbourhoods include spike flips, whose finite differences are not the local slope ...
    assert min(errors[1.0], errors[0.3], errors[2.0 * margin]) > 1e-3 * scale, errors
    # ... and once the neighbourhood no longer reaches a threshold, NA is the true derivative.
    assert errors[0.5 * margin] < 1e-6 * scale and errors[0.05 * margin] < 1e-6 * scale, errors


def test_bell_surrogate_gradient_equals_the_aggregate_of_true_loss_differences_across_a_spike_flip():
    # One hidden neuron sits 0.3 below threshold at step 2; input 0 spikes only then, so its weight is a
    # perturbation of P[2] alone, and the readout is linear, so every finite difference is exact.
    T, theta = 6, 1.0
    spec = NetworkSpec(sizes=(2, 1, 1), readout="membrane", a_syn=(0.0, 0.0), a_mem=(0.5, 0.5), theta=theta)
    params = init_params(spec, np.random.default_rng(0), dtype=np.float64)
    params[0].W[:] = [[0.0], [0.7]]
    params[1].W[:] = [[1.0]]
    X = np.zeros((T, 1, 2), np.uint8)
    X[2, 0, :] = 1
    c = np.array([[1.0]])  # L = logits: linear

    def loss(w_probe):
        p = [q.copy() for q in params]
        p[0].W[0, 0] = w_probe
        return float((bptt.forward(spec, p, X).logits * c).sum())

    # Radii up to 0.6 reach P[2] = 0.7 but not the later potentials (0.35, 0.175, ...) nor 0 at t < 2.
    for radius, points in ((0.5, 4), (0.6, 8), (0.2, 3)):
        rule = make_rule("bell-surrogate", radius=radius, points=points, sigma=0.6)
        rule.init(spec, params, np.random.default_rng(0))
        fwd = bptt.forward(spec, params, X)
        grads = bptt.backward(rule.backward_spec, params, fwd, c, rule.spike_derivative(params))
        deltas, weights = neighbourhood(radius, points, 0.6, theta, 0.5, T)
        l0 = loss(0.0)
        fd = sum(w * (loss(s * d) - l0) / (s * d) for d, w in zip(deltas, weights[2]) for s in (1.0, -1.0))
        assert grads[0]["W"][0, 0] == pytest.approx(fd / (2 * weights[2].sum()), rel=1e-10)
    # radius 0.2 cannot reach the threshold: NA then gives the local derivative of the smooth path.
    eps = 1e-7
    assert grads[0]["W"][0, 0] == pytest.approx((loss(eps) - loss(-eps)) / (2 * eps), rel=1e-6)


def test_bell_surrogate_trains_and_rejects_bad_options():
    spec, params, X, y = _tiny()
    params = [p.astype(np.float32) for p in params]
    rule = make_rule("bell-surrogate", lr=0.02)
    rule.init(spec, params, np.random.default_rng(0))
    first = rule.train_batch(params, X, y)["loss"]
    for _ in range(30):
        last = rule.train_batch(params, X, y)["loss"]
    assert last < first
    bad = make_rule("bell-surrogate", radius=-1.0)
    with pytest.raises(SnnEdgeError, match="radius"):
        bad.init(spec, params, np.random.default_rng(0))
    assert dataclasses.replace(spec, reset_grad=True) == rule.backward_spec
