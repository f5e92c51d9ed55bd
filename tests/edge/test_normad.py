"""Multi-layer NormAD: the update direction is a first-order descent direction of the membrane-potential
error, the propagated hidden error follows the spike-time chain rule, and XOR converges exactly."""
from __future__ import annotations

import numpy as np
import pytest

from edge import bptt
from edge.errors import SnnEdgeError
from edge.model import NetworkSpec, init_params
from edge.rules import make_rule
from edge.rules.normad import filtered_inputs, normad_step
from edge.spike_trains import random_mapping_task, van_rossum_distance, xor_task


def _net(seed=1, T=30, sizes=(12, 8, 2)):
    spec = NetworkSpec(sizes=sizes, a_syn=0.5, a_mem=0.8, theta=1.0)
    rng = np.random.default_rng(seed)
    params = init_params(spec, rng, dtype=np.float64)
    for p in params:
        p.W[:] = rng.normal(0.3, 0.5, p.W.shape)
    X = (rng.random((T, 3, sizes[0])) < 0.15).astype(np.uint8)
    S_des = (rng.random((T, 3, sizes[-1])) < 0.08).astype(np.float64)
    return spec, params, X, S_des


def _membrane_error(spec, params, X, S_des, e, margin=0.2):
    """J = 1/2 sum |e| (V_des - P)^2 at the erroneous steps, V_des = theta + margin * e (NormAD's cost)."""
    P = bptt.forward(spec, params, X).records[-1].v_pre
    v_des = params[-1].theta + margin * e
    return 0.5 * float(np.sum(np.abs(e) * (v_des - P) ** 2)), P


def test_output_direction_reduces_the_membrane_error_to_first_order():
    spec, params, X, S_des = _net()
    step = normad_step(spec, params, X, S_des)
    e = step.errors[-1]
    assert np.count_nonzero(e) >= 5  # the test needs several wrong steps
    J0, P0 = _membrane_error(spec, params, X, S_des, e)
    eps = 1e-6
    moved = [p.copy() for p in params]
    moved[-1].W += eps * step.directions[-1]
    J1, P1 = _membrane_error(spec, moved, X, S_des, e)
    # Spikes did not move, so the membrane is linear in W here: NormAD's d[t] predicts its change.
    assert np.array_equal(bptt.forward(spec, moved, X).layer_spikes[-1], step.fwd.layer_spikes[-1])
    d_hidden = step.fwd.layer_spikes[-2]
    d = filtered_inputs(d_hidden, params[-1].a_syn, float(params[-1].a_mem))
    predicted = np.einsum("tbi,ij->tbj", d, eps * step.directions[-1])
    np.testing.assert_allclose(P1 - P0, predicted, rtol=1e-6, atol=1e-12)
    slope = (J1 - J0) / eps
    assert slope < 0  # a descent direction of the membrane-potential error
    # ... and every erroneous step's membrane moves the right way on its own share of the update.
    for t, b, j in zip(*np.nonzero(e)):
        share = np.zeros_like(step.directions[-1])
        unit = d[t, b] / np.linalg.norm(d[t, b])
        share[:, j] = e[t, b, j] * unit / X.shape[1]
        assert e[t, b, j] * (d[t, b] @ share[:, j]) > 0


def test_pseudo_hidden_error_is_the_value_of_a_new_spike_times_its_closeness_to_threshold():
    # Add a hidden spike by hand at a silent step and compare the output membrane change, weighed by the
    # output error, with G of the derivation; the pseudo error is G times psi(V - theta).
    spec, params, X, S_des = _net(seed=4, sizes=(12, 3, 1))
    step = normad_step(spec, params, X, S_des, hidden_error="pseudo", width=0.2)
    hidden = step.fwd.layer_spikes[0]
    out = params[1]
    e_out = step.errors[1]
    checked = 0
    for t, b, j in np.argwhere(hidden == 0)[:12]:
        moved = hidden.copy()
        moved[t, b, j] = 1.0
        dV = filtered_inputs(moved, out.a_syn, float(out.a_mem)) - filtered_inputs(hidden, out.a_syn, float(out.a_mem))
        gain = float(np.sum(e_out[:, b, :] * np.einsum("ti,ij->tj", dV[:, b, :], out.W)))
        v = step.fwd.records[0].v_pre[t, b, j]
        psi = 1.0 / (1.0 + abs(v - params[0].theta) / 0.2) ** 2
        assert step.errors[0][t, b, j] == pytest.approx(psi * gain, rel=1e-9, abs=1e-12)
        checked += gain != 0
    assert checked >= 3


def test_hidden_error_is_the_spike_time_chain_rule():
    # Move the hidden spike one step earlier by hand and compare the
    # output membrane change with what backpropagate_error assumed.
    spec, params, X, S_des = _net(seed=4, sizes=(12, 3, 1))
    step = normad_step(spec, params, X, S_des, hidden_error="spike_time")
    hidden = step.fwd.layer_spikes[0]
    lone = (hidden[1:] > 0) & (hidden[:-1] == 0)  # a spike whose previous step is free to take it
    t_s, b, j = (int(v) for v in np.argwhere(lone)[0])
    t_s += 1
    moved = hidden.copy()
    moved[t_s, b, j], moved[t_s - 1, b, j] = 0.0, 1.0
    out = params[1]
    dV = (filtered_inputs(moved, out.a_syn, float(out.a_mem)) - filtered_inputs(hidden, out.a_syn, float(out.a_mem)))
    dV = np.einsum("tbi,ij->tbj", dV, out.W)[:, b, :]
    e_out = step.errors[1][:, b, :]
    gain = float(np.sum(e_out * dV))  # how much moving that spike earlier helps the output error
    v_pre = step.fwd.records[0].v_pre[:, b, j]
    v_prev = v_pre[t_s - 1] - params[0].theta * hidden[t_s - 1, b, j]
    slope = max(v_pre[t_s] - v_prev, 0.1 * params[0].theta)
    assert step.errors[0][t_s, b, j] == pytest.approx(gain / slope, rel=1e-9, abs=1e-12)
    assert np.all(step.errors[0][hidden == 0] == 0)  # silent steps carry no hidden error


def test_exact_targets_are_a_fixed_point_and_bad_setups_are_refused():
    spec, params, X, _ = _net()
    target = bptt.forward(spec, params, X).layer_spikes[-1]
    step = normad_step(spec, params, X, target)
    assert all(np.all(d == 0) for d in step.directions)
    with pytest.raises(SnnEdgeError, match="readout"):
        make_rule("normad").init(NetworkSpec(sizes=(3, 2), readout="membrane"), params[:1], np.random.default_rng(0))
    with pytest.raises(SnnEdgeError, match="shape"):
        normad_step(spec, params, X, target[:, :, :1])


def _train_until_exact(spec, params, rng, X, S, epochs, anneal=50.0, **options):
    """Online NormAD, one pattern at a time, rates annealed as lr / (1 + epoch / anneal) (the module doc, 4.)."""
    rule = make_rule("normad", **options)
    rule.init(spec, params, rng)
    w0 = [p.W.copy() for p in params]
    for epoch in range(epochs):
        rule.set_lr(options["lr"] / (1.0 + epoch / anneal))
        exact = sum(rule.train_spike_trains(params, X[k][:, None], S[k][:, None].astype(np.float32))["exact"]
                    for k in rng.permutation(len(X)))
        if exact == len(X):
            break
    out = bptt.forward(spec, params, np.ascontiguousarray(X.transpose(1, 0, 2))).layer_spikes[-1]
    return out, [float(np.linalg.norm(p.W - w) / np.linalg.norm(w)) for p, w in zip(params, w0)]


@pytest.mark.parametrize("seed", [3, 4, 5])
def test_two_layer_network_learns_spike_xor_exactly_with_both_layers_learning(seed):
    X, S, _ = xor_task(seed=seed)
    spec = NetworkSpec(sizes=(X.shape[2], 20, 1), a_syn=0.5, a_mem=0.8, theta=1.0)
    rng = np.random.default_rng(seed)
    params = init_params(spec, rng)
    params[0].W[:] = rng.normal(0.05, 0.3, params[0].W.shape)
    params[1].W[:] = rng.normal(0.1, 0.3, params[1].W.shape)
    out, change = _train_until_exact(spec, params, rng, X, S, 150, lr=0.05, hidden_lr_scale=0.2)
    assert np.array_equal(out, S.transpose(1, 0, 2))
    assert np.all(van_rossum_distance(out, S.transpose(1, 0, 2).astype(np.float32)) == 0)
    assert min(change) > 0.03, change  # the hidden layer learned too, not only the output


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_three_layer_network_maps_random_patterns_to_target_trains_with_every_layer_learning(seed):
    # A small version of the benchmark's 3-layer mapping (benchmarks/seed_rules_tables.py DEEP): two frozen
    # Poisson patterns of 40 inputs, 40 steps, 40 -> 30 -> 30 -> 1, two target spikes each.
    X, S = random_mapping_task(n_patterns=2, n_in=40, n_out=1, n_steps=40, rate=0.04, n_target_spikes=2,
                               min_isi=8, t_min=8, seed=seed)
    spec = NetworkSpec(sizes=(40, 30, 30, 1), a_syn=0.8, a_mem=0.9, theta=1.0)
    rng = np.random.default_rng(seed + 200)
    params = init_params(spec, rng)
    for p, sd in zip(params, (0.1, 0.1, 0.04)):
        p.W[:] = rng.normal(0.0, sd, p.W.shape)
    out, change = _train_until_exact(spec, params, rng, X, S, 200, lr=0.03, hidden_lr_scale=0.3, a_hat=0.6)
    assert np.array_equal(out, S.transpose(1, 0, 2))
    assert min(change) > 0.01, change


def test_normad_drives_the_shared_fit_loop_on_class_labels():
    from edge.rules import rule_names
    from edge.train import FitConfig, fit

    assert {"normad", "na"} <= set(rule_names())
    rng = np.random.default_rng(0)
    # Two classes that differ in which half of the inputs is active: learnable by a spiking readout.
    y = np.arange(40) % 2
    X = np.zeros((40, 12, 16), np.uint8)
    for i, label in enumerate(y):
        half = slice(0, 8) if label == 0 else slice(8, 16)
        X[i, :, half] = rng.random((12, 8)) < 0.4
    spec = NetworkSpec(sizes=(16, 10, 2))
    params = init_params(spec, np.random.default_rng(1))
    rule = make_rule("normad", lr=0.05, target_period=2)
    res = fit(rule, spec, params, (X[:32], y[:32]), (X[32:], y[32:]),
              FitConfig(epochs=8, batch_size=8, progress=False, lr_schedule="constant"))
    assert len(res.history) == 8
    assert res.history[-1]["train_loss"] < res.history[0]["train_loss"]  # van Rossum to the label trains
    assert res.best_val_acc == 1.0
