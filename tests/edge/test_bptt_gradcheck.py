"""Hand-written BPTT against central finite differences of the same smooth-surrogate model (float64).

With smooth=True the forward spike is the surrogate's primitive, so the BPTT gradient is that
model's exact gradient. reset_grad=False detaches the reset: its finite-difference twin holds the
reset spikes fixed at their values for the unperturbed parameters (what a stop-gradient means).
"""
from __future__ import annotations

import numpy as np
import pytest

from edge import bptt, losses
from edge.model import NetworkSpec, init_params

EPS = 1e-6


def _problem(reset_grad, learn_syn_decay, readout, surrogate="fast_sigmoid", slope=5.0, sizes=(12, 7, 5)):
    spec = NetworkSpec(sizes=sizes, readout=readout, a_syn=0.7, a_mem=0.8, theta=0.5,
                       learn_syn_decay=learn_syn_decay, surrogate=surrogate, slope=slope, reset_grad=reset_grad)
    rng = np.random.default_rng(11)
    params = init_params(spec, rng, dtype=np.float64)
    for p in params:
        p.W *= 4.0  # enough drive that neurons cross threshold and resets matter
    if learn_syn_decay:
        params[0].a_syn[:] = rng.uniform(0.3, 0.9, sizes[0])
    X = (rng.random((8, 3, sizes[0])) < 0.3).astype(np.uint8)
    y = np.array([0, 2, 4])
    return spec, params, X, y


def _loss(spec, params, X, y, frozen):
    fwd = bptt.forward(spec, params, X, smooth=True, reset_spikes=frozen)
    return losses.cross_entropy(fwd.logits, y)[0]


def _numeric_grads(spec, params, X, y, frozen):
    out = []
    for p in params:
        g = {}
        for name in ("W", "a_syn", "a_mem", "theta"):
            arr = getattr(p, name)
            num = np.zeros_like(arr)
            for idx in np.ndindex(arr.shape):
                old = arr[idx]
                arr[idx] = old + EPS
                plus = _loss(spec, params, X, y, frozen)
                arr[idx] = old - EPS
                minus = _loss(spec, params, X, y, frozen)
                arr[idx] = old
                num[idx] = (plus - minus) / (2 * EPS)
            g[name] = num
        out.append(g)
    return out


def _analytic(spec, params, X, y):
    fwd = bptt.forward(spec, params, X, smooth=True)
    _, d = losses.cross_entropy(fwd.logits, y)
    return fwd, bptt.backward(spec, params, fwd, d)


def _max_rel_error(a, b):
    return np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-8)


@pytest.mark.parametrize("readout", ["spikes", "membrane"])
@pytest.mark.parametrize("learn_syn_decay", [False, True])
@pytest.mark.parametrize("reset_grad", [False, True])
def test_gradients_match_finite_differences(reset_grad, learn_syn_decay, readout):
    spec, params, X, y = _problem(reset_grad, learn_syn_decay, readout)
    fwd, grads = _analytic(spec, params, X, y)
    frozen = None if reset_grad else fwd.layer_spikes
    numeric = _numeric_grads(spec, params, X, y, frozen)
    for i, (ga, gn) in enumerate(zip(grads, numeric)):
        for name in ("W", "a_syn", "a_mem", "theta"):
            assert ga[name].shape == gn[name].shape, (i, name)
            if readout == "membrane" and i == spec.n_layers - 1 and name == "theta":
                assert not ga[name].any()  # the leaky readout has no threshold
                continue
            assert np.abs(gn[name]).max() > 1e-6, f"layer {i} {name}: degenerate check, no gradient"
            err = _max_rel_error(ga[name], gn[name])
            assert err < 1e-6, f"layer {i} {name}: relative error {err:.2e}"


@pytest.mark.parametrize("surrogate,slope", [("arctan", 2.0), ("triangle", 0.8)])
def test_other_surrogates_match_finite_differences(surrogate, slope):
    spec, params, X, y = _problem(True, False, "spikes", surrogate=surrogate, slope=slope)
    _, grads = _analytic(spec, params, X, y)
    numeric = _numeric_grads(spec, params, X, y, None)
    for ga, gn in zip(grads, numeric):
        for name in ("W", "a_mem", "theta"):
            # the triangle's primitive has kinks where |k x| = 1: allow a little more there
            assert _max_rel_error(ga[name], gn[name]) < 1e-4, name


def test_reset_grad_switch_changes_the_gradient():
    """Detaching the reset is a real change: its gradient is not the full model's."""
    spec, params, X, y = _problem(False, False, "spikes")
    _, detached = _analytic(spec, params, X, y)
    full_spec, _, _, _ = _problem(True, False, "spikes")
    _, full = _analytic(full_spec, params, X, y)
    numeric_full = _numeric_grads(full_spec, params, X, y, None)
    assert _max_rel_error(full[0]["W"], numeric_full[0]["W"]) < 1e-6
    assert _max_rel_error(detached[0]["W"], numeric_full[0]["W"]) > 1e-3


def test_float32_gradients_follow_float64():
    """The training dtype gives the float64 gradient to float32 precision."""
    spec, params64, X, y = _problem(False, True, "spikes", sizes=(30, 16, 5))
    params32 = [p.astype(np.float32) for p in params64]
    fwd64 = bptt.forward(spec, params64, X)
    fwd32 = bptt.forward(spec, params32, X)
    np.testing.assert_array_equal(fwd64.logits, fwd32.logits)
    d = losses.cross_entropy(fwd64.logits, y)[1]
    g64 = bptt.backward(spec, params64, fwd64, d)
    g32 = bptt.backward(spec, params32, fwd32, d.astype(np.float32))
    for a, b in zip(g32, g64):
        for name in a:
            assert a[name].dtype == np.float32
            np.testing.assert_allclose(a[name], b[name], rtol=1e-3, atol=1e-5)
