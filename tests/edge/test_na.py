"""NA as its authors define it: for one neuron, the NA quantity of a spike flip is the exact loss difference of
that flip divided by the membrane-potential distance; least squares over the flip neighbours is the per-step
form; the rule trains through the shared fit loop and the CLI on its own hard-reset neuron."""
from __future__ import annotations

import numpy as np
import pytest

from edge import bptt
from edge.errors import SnnEdgeError
from edge.model import NetworkSpec, init_params
from edge.neurons import hard_reset_initial_state, hard_reset_membrane_window, hard_reset_psc_step, psc_window
from edge.rules import make_rule
from edge.rules.na import (flip_loss_changes, flip_neighbour, kernel_targets, least_squares_gradient,
                           membrane_distance, na_gradients, perturb, per_step_gradient, recover_perturbation,
                           spike_gradient)

A_MEM, A_SYN, THETA = 0.8, 0.5, 1.0


def _neuron(seed=0, T=14):
    """Currents [T] of one neuron that fires several times, and its waveform."""
    rng = np.random.default_rng(seed)
    current = rng.uniform(-0.2, 0.75, T)
    u, s = hard_reset_membrane_window(current, A_MEM, THETA)
    assert 2 <= s.sum() <= T - 3  # flips both ways are exercised
    return current, u, s


def test_step_and_window_forms_of_the_hard_reset_neuron_agree():
    rng = np.random.default_rng(1)
    spec = NetworkSpec(sizes=(6, 4, 3), neuron="hard_reset_psc", a_syn=A_SYN, a_mem=A_MEM, theta=THETA)
    params = init_params(spec, rng, dtype=np.float64)
    for p in params:
        p.W[:] = rng.normal(0.5, 0.6, p.W.shape)
    X = (rng.random((9, 2, 6)) < 0.5).astype(np.uint8)
    fwd = bptt.forward(spec, params, X)
    states = [hard_reset_initial_state(p, 2, np.float64) for p in params]
    for t in range(9):
        a_in = X[t]
        for i, p in enumerate(params):
            a_in, s, states[i] = hard_reset_psc_step(a_in, states[i], p)
            np.testing.assert_array_equal(s, fwd.layer_spikes[i][t])
            np.testing.assert_allclose(a_in, fwd.layer_psc[i][t], rtol=1e-12)
    assert fwd.layer_spikes[0].sum() > 0 and np.array_equal(fwd.logits, fwd.layer_spikes[-1].sum(axis=0))
    with pytest.raises(SnnEdgeError, match="cuba_lif"):
        bptt.backward(spec, params, fwd, np.zeros((2, 3)))


@pytest.mark.parametrize("seed", [0, 4])
def test_na_quantity_of_a_flip_is_the_exact_loss_difference_over_the_distance(seed):
    current, u, s = _neuron(seed)
    T = len(current)
    c = np.random.default_rng(seed + 10).normal(size=T)

    def loss(spikes):  # linear in the PSC the neuron passes on: e . delta a is then exact
        return float(c @ psc_window(spikes, A_SYN))

    e_s = spike_gradient(c, A_SYN)  # dL/ds through the PSC filter
    changes = flip_loss_changes(current, u, s, A_MEM, THETA, e_s)
    for k in range(T):
        # The flip as an input perturbation: move u[k] to the threshold (just past it for a new spike).
        delta = np.zeros(T)
        delta[k] = THETA - u[k] + (1e-12 if s[k] == 0 else 0.0)
        u_p, s_p = perturb(current, delta, A_MEM, THETA)
        u_k, s_k = flip_neighbour(current, u, s, A_MEM, THETA, k)
        np.testing.assert_array_equal(s_p, s_k)  # the re-simulated chain effect is the neuron's own
        assert s_k[k] != s[k]
        distance = membrane_distance(u, s, u_k, s_k, A_MEM)
        assert distance == pytest.approx(abs(THETA - u[k]), rel=1e-12)
        exact = (loss(s_p) - loss(s)) / np.linalg.norm(delta)
        assert changes[k] / distance == pytest.approx(exact, rel=1e-7, abs=1e-12)
    assert np.any(changes != 0)
    # Some flips change later spikes too (the chain effect): the test covers more than one spike moving.
    assert any(np.abs(flip_neighbour(current, u, s, A_MEM, THETA, k)[1] - s).sum() > 1 for k in range(T))


def test_least_squares_over_the_flip_neighbours_is_the_per_step_form():
    current, u, s = _neuron(5)
    T = len(current)
    e_s = np.random.default_rng(2).normal(size=T)
    changes = flip_loss_changes(current, u, s, A_MEM, THETA, e_s)
    perturbations = np.stack([recover_perturbation(u, s, *flip_neighbour(current, u, s, A_MEM, THETA, k), A_MEM)
                              for k in range(T)])
    # [-] recovers a perturbation of step k alone: the chain effect is the dynamics, not extra input.
    np.testing.assert_allclose(perturbations, np.diag(THETA - u), atol=1e-12)
    grad = least_squares_gradient(perturbations, changes)
    np.testing.assert_allclose(grad, per_step_gradient(changes, u, THETA, power=1, clip=0.0), rtol=1e-10)
    # The authors' per-step form weights far neighbours by 1/(theta - u)^3, clipped to +-5.
    code = per_step_gradient(changes, u, THETA, power=3, clip=5.0)
    np.testing.assert_allclose(code, changes * np.clip(1 / (THETA - u) ** 3, -5, 5))


def _two_class_data(n=48, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    X = np.zeros((n, 12, 16), np.uint8)
    for i, label in enumerate(y):
        X[i, :, slice(0, 8) if label == 0 else slice(8, 16)] = rng.random((12, 8)) < 0.4
    return X, y


@pytest.mark.parametrize("options", [{}, {"loss": "kernel"},
                                     {"beta1": 0.9, "grad_clip": 0.0, "weight_clip": 0.0, "layer_rescale": False}])
def test_na_trains_through_the_fit_loop(options):
    from edge.train import FitConfig, fit

    X, y = _two_class_data()
    rule = make_rule("na", lr=0.01, **options)
    spec = rule.adapt_spec(NetworkSpec(sizes=(16, 10, 2)))
    assert spec.neuron == "hard_reset_psc"
    params = init_params(spec, np.random.default_rng(1))
    res = fit(rule, spec, params, (X[:32], y[:32]), (X[32:], y[32:]),
              FitConfig(epochs=6, batch_size=8, progress=False, lr_schedule="constant"))
    assert res.history[-1]["train_loss"] < 0.5 * res.history[0]["train_loss"]
    assert res.best_val_acc == 1.0
    if rule.options["weight_clip"]:
        assert max(float(np.abs(p.W).max()) for p in params) <= rule.options["weight_clip"]


def test_hidden_layer_gradient_flows_through_the_psc_and_the_weights():
    rng = np.random.default_rng(4)
    spec = NetworkSpec(sizes=(6, 5, 3), neuron="hard_reset_psc")
    params = init_params(spec, rng, dtype=np.float64)
    for p in params:
        p.W[:] = rng.normal(0.6, 0.6, p.W.shape)
    X = (rng.random((8, 2, 6)) < 0.5).astype(np.uint8)
    y = np.array([0, 2])
    st = na_gradients(spec, params, X, y, loss="kernel", layer_rescale=False)
    rec, p1 = st.fwd.records[0], params[1]
    # The hidden layer's e_s is the output layer's dL/dI pulled back through W and the PSC filter ...
    e_a = np.einsum("tbm,nm->tbn", st.current_grads[1], p1.W)
    e_s = spike_gradient(e_a, params[0].a_syn)
    changes = flip_loss_changes(rec.current, rec.v_pre, rec.spikes, params[0].a_mem, params[0].theta, e_s)
    expect = per_step_gradient(changes, rec.v_pre, params[0].theta, 3, 5.0)
    np.testing.assert_allclose(st.current_grads[0], expect, rtol=1e-10)
    np.testing.assert_allclose(st.grads[0], np.einsum("tbi,tbn->in", X.astype(float), expect), rtol=1e-10)
    assert np.abs(st.grads[0]).sum() > 0
    # ... and the kernel loss is half the squared distance of the output PSCs to the label's PSC target.
    a = st.fwd.layer_psc[-1]
    target = kernel_targets(y, 3, 8, params[-1].a_syn, np.float64)
    assert st.loss == pytest.approx(0.5 * np.sum((a - target) ** 2) / 2)


def test_bad_setups_are_refused():
    spec = NetworkSpec(sizes=(4, 3, 2))
    params = init_params(spec, np.random.default_rng(0))
    with pytest.raises(SnnEdgeError, match="hard_reset_psc"):
        make_rule("na").init(spec, params, np.random.default_rng(0))
    na_spec = make_rule("na").adapt_spec(spec)
    with pytest.raises(SnnEdgeError, match="loss"):
        make_rule("na", loss="hinge").init(na_spec, params, np.random.default_rng(0))
    with pytest.raises(SnnEdgeError, match="neuron"):
        NetworkSpec(sizes=(4, 2), neuron="izhikevich")
    from converters.quantize import quantize
    with pytest.raises(SnnEdgeError, match="cuba_lif"):
        quantize(na_spec, params, np.zeros((5, 2, 4), np.uint8))
