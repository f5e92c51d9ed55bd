"""SOLSA (edge/rules/solsa.py): forward pass, traces against brute force, updates against finite differences."""
from __future__ import annotations

import numpy as np
import pytest

from edge import bptt
from edge.errors import SnnEdgeError
from edge.model import NetworkSpec, init_params
from edge.neurons import lif_membrane_window, synaptic_filter_window
from edge.rules import make_rule
from edge.rules.solsa import apply_reset_factor, initial_layer_state, layer_forward_step

FD_EPS = 1e-6


def _net(sizes=(6, 4), readout="spikes", learn_syn_decay=True, reset_grad=True, seed=3, gain=3.0):
    spec = NetworkSpec(sizes=sizes, readout=readout, a_syn=0.6, a_mem=0.8, theta=0.5,
                       learn_syn_decay=learn_syn_decay, reset_grad=reset_grad, slope=4.0)
    rng = np.random.default_rng(seed)
    params = init_params(spec, rng, dtype=np.float64)
    for p in params:
        p.W *= gain  # enough drive that neurons cross threshold and resets happen
    if learn_syn_decay:
        params[0].a_syn[:] = rng.uniform(0.3, 0.9, sizes[0])
    X = (rng.random((9, 2, sizes[0])) < 0.35).astype(np.uint8)
    y = np.array([1, 3 % sizes[-1]])
    return spec, params, X, y


def _run_traces(spec, p, X):
    """Drive one layer with layer_forward_step and record e (before the reset factor), q, r, h."""
    st = initial_layer_state(p, X.shape[1], full=spec.reset_grad, learn_a=spec.learn_syn_decay, dtype=np.float64)
    rec = {"e": [], "q": [], "r": [], "h": [], "x": [], "s": []}
    for t in range(X.shape[0]):
        step, st = layer_forward_step(X[t].astype(np.float64), st, p, spec, readout=False)
        for k, v in (("e", st.e), ("q", st.q), ("r", st.r), ("h", step.h), ("x", st.x), ("s", step.out)):
            rec[k].append(np.array(v, copy=True))
        st = apply_reset_factor(st, step, p, readout=False)
    return {k: np.array(v) for k, v in rec.items()}


@pytest.mark.parametrize("learn", [False, True])
def test_forward_matches_engine(learn):
    spec, params, X, y = _net(sizes=(6, 5, 4), learn_syn_decay=learn)
    rule = make_rule("solsa", optimizer="sgd", lr=0.0, lr_syn=0.0)
    rule.init(spec, params, np.random.default_rng(0))
    states = rule.initial_state(params, X.shape[1])
    counts = 0
    for t in range(X.shape[0]):
        out, _, states = rule.step(params, states, X[t].astype(np.float64), y, np.ones(2))
        counts = counts + out
    np.testing.assert_allclose(counts, bptt.forward(spec, params, X).logits)
    assert counts.sum() > 0, "the test network must spike"


def test_traces_match_brute_force():
    spec, params, X, _ = _net()
    p = params[0]
    rec = _run_traces(spec, p, X)
    assert rec["s"].sum() > 2, "resets must happen for the reset path to matter"
    T, B, n_in = X.shape
    x_direct = synaptic_filter_window(X, p.a_syn, np.float64)
    np.testing.assert_allclose(rec["x"], x_direct)
    e_bf = np.zeros((T, B, n_in, p.W.shape[1]))
    q_bf = np.zeros((T, B, n_in))
    r_bf = np.zeros((T, B, n_in))
    a, am = p.a_syn, float(p.a_mem)
    for t in range(T):
        for tau in range(t + 1):
            # dP[t]/dW_ij: the input trace at tau carried through the membrane decay and every
            # reset factor (1 - theta h[u]) of the steps tau..t-1
            carry = np.ones((B, p.W.shape[1]))
            for u in range(tau, t):
                carry = carry * am * (1.0 - p.theta * rec["h"][u])
            e_bf[t] += x_direct[tau][:, :, None] * carry[:, None, :]
            q_bf[t] += (t - tau) * a ** max(t - tau - 1, 0) * X[tau] * (t > tau)
        for tau in range(t + 1):
            r_bf[t] += am ** (t - tau) * q_bf[tau]
    np.testing.assert_allclose(rec["e"], e_bf, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(rec["q"], q_bf, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(rec["r"], r_bf, rtol=1e-10, atol=1e-12)


def test_trace_is_forward_mode_gradient_of_potential_without_reset_path():
    """Reset path off: e[t] = dP[t]/dW with the reset spikes held fixed (finite differences)."""
    spec, params, X, _ = _net(reset_grad=False)
    p = params[0]
    rec = _run_traces(spec, p, X)
    x = synaptic_filter_window(X, p.a_syn, np.float64)
    _, spikes = lif_membrane_window(x @ p.W, p.a_mem, p.theta)

    def potential(W):
        return lif_membrane_window(x @ W, p.a_mem, p.theta, reset_spikes=spikes)[0]

    i, j = 2, 1
    Wp, Wm = p.W.copy(), p.W.copy()
    Wp[i, j] += FD_EPS
    Wm[i, j] -= FD_EPS
    fd = (potential(Wp) - potential(Wm))[:, :, j] / (2 * FD_EPS)  # [T, B]
    np.testing.assert_allclose(rec["e"][:, :, i], fd, rtol=1e-6, atol=1e-8)


def _readout_loss(spec, params, X, y, t):
    """Instantaneous loss of step t: CE of softmax(V[t]) of a single leaky readout layer."""
    p = params[0]
    x = synaptic_filter_window(X, p.a_syn, np.float64)
    from edge.neurons import leaky_membrane_window
    from edge.losses import cross_entropy

    v = leaky_membrane_window(x @ p.W, p.a_mem)
    return cross_entropy(v[t], y)[0] * len(y)  # summed over the batch, as the rule accumulates


def test_k1_update_equals_finite_difference_gradient():
    """Reset path off, k_update=1: each step's update is -lr * dL_t/dW (and dL_t/da_syn), by FD."""
    spec, params, X, y = _net(sizes=(6, 4), readout="membrane", reset_grad=False, gain=1.0)
    lr, lr_syn = 1e-3, 2e-3
    for t_check in (0, 4, 8):
        rule = make_rule("solsa", optimizer="sgd", lr=lr, lr_syn=lr_syn, k_update=1)
        work = [q.copy() for q in params]
        rule.init(spec, work, np.random.default_rng(0))
        states = rule.initial_state(work, X.shape[1])
        for t in range(t_check + 1):
            before = [q.copy() for q in work]
            # freeze the weights until the step under test, so FD and the traces see one network
            frozen = t < t_check
            _, _, states = rule.step(work, states, X[t].astype(np.float64), y, np.ones(2))
            if frozen:
                for G in rule.G:
                    G[...] = 0
                for Ga in rule.Ga:
                    Ga[...] = 0
            else:
                rule.apply_update(work, X.shape[1])
        dW = (work[0].W - before[0].W) / (-lr / X.shape[1])
        da = (work[0].a_syn - before[0].a_syn) / (-lr_syn / X.shape[1])
        fd_W = np.zeros_like(dW)
        for i in range(dW.shape[0]):
            for j in range(dW.shape[1]):
                pp, pm = [q.copy() for q in params], [q.copy() for q in params]
                pp[0].W[i, j] += FD_EPS
                pm[0].W[i, j] -= FD_EPS
                fd_W[i, j] = (_readout_loss(spec, pp, X, y, t_check) - _readout_loss(spec, pm, X, y, t_check)) / (2 * FD_EPS)
        fd_a = np.zeros_like(da)
        for i in range(da.shape[0]):
            pp, pm = [q.copy() for q in params], [q.copy() for q in params]
            pp[0].a_syn[i] += FD_EPS
            pm[0].a_syn[i] -= FD_EPS
            fd_a[i] = (_readout_loss(spec, pp, X, y, t_check) - _readout_loss(spec, pm, X, y, t_check)) / (2 * FD_EPS)
        np.testing.assert_allclose(dW, fd_W, rtol=1e-5, atol=1e-8)
        np.testing.assert_allclose(da, fd_a, rtol=1e-5, atol=1e-8)


def test_scheduled_update_applies_every_k_steps():
    spec, params, X, y = _net(sizes=(6, 4), reset_grad=True)
    rule = make_rule("solsa", optimizer="sgd", lr=0.05, k_update=4)
    work = [q.copy() for q in params]
    rule.init(spec, work, np.random.default_rng(0))
    states = rule.initial_state(work, X.shape[1])
    changed = []
    for t in range(X.shape[0]):
        before = work[0].W.copy()
        _, _, states = rule.step(work, states, X[t].astype(np.float64), y, np.ones(2))
        if (t + 1) % 4 == 0:
            rule.apply_update(work, X.shape[1])
        changed.append(not np.array_equal(before, work[0].W))
    assert changed == [(t + 1) % 4 == 0 for t in range(X.shape[0])]
    # and train_batch does the same schedule: the same final weights
    other = [q.copy() for q in params]
    rule2 = make_rule("solsa", optimizer="sgd", lr=0.05, k_update=4)
    rule2.init(spec, other, np.random.default_rng(0))
    rule2.train_batch(other, X, y)
    np.testing.assert_allclose(other[0].W, work[0].W)
    np.testing.assert_allclose(rule2.G[0], rule.G[0])  # step 9 is left over, carried to the next batch


def test_early_stop_freezes_learned_samples():
    """A sample stops contributing from the step after its label first leads the running counts."""
    spec, params, X, y = _net(sizes=(6, 4))
    params[0].W[:, y[0]] += 0.5  # the label neuron of sample 0 leads after a few steps
    x1, y1 = X[:, :1], y[:1]
    ref = make_rule("solsa", optimizer="sgd", lr=0.05, k_update=100)
    ref.init(spec, [q.copy() for q in params], np.random.default_rng(0))
    states = ref.initial_state(params, 1)
    score, G_at_lead = np.zeros((1, 4)), None
    for t in range(X.shape[0]):
        out, _, states = ref.step(params, states, x1[t].astype(np.float64), y1, np.ones(1))
        score += out
        others = np.delete(score[0], y1[0])
        if G_at_lead is None and score[0, y1[0]] - others.max() > 0:
            G_at_lead = ref.G[0].copy()
    assert G_at_lead is not None and not np.allclose(G_at_lead, ref.G[0]), "test needs a late lead"
    rule = make_rule("solsa", optimizer="sgd", lr=0.05, k_update=100, early_stop=1e-9)
    rule.init(spec, [q.copy() for q in params], np.random.default_rng(0))
    rule.train_batch([q.copy() for q in params], x1, y1)
    np.testing.assert_allclose(rule.G[0], G_at_lead)


def test_learns_a_small_task_and_rejects_bad_options():
    rng = np.random.default_rng(0)
    n_in, T = 20, 12
    templates = (rng.random((2, T, n_in)) < 0.25)
    y = rng.integers(0, 2, 64)
    X = (templates[y] ^ (rng.random((64, T, n_in)) < 0.03)).astype(np.uint8).transpose(1, 0, 2)
    spec = NetworkSpec(sizes=(n_in, 2), readout="spikes", reset_grad=True, learn_syn_decay=True)
    params = init_params(spec, np.random.default_rng(1))
    rule = make_rule("solsa", optimizer="sgd", lr=0.05, k_update=4)
    rule.init(spec, params, np.random.default_rng(0))
    for _ in range(15):
        m = rule.train_batch(params, X, y)
    assert m["correct"] / m["n"] > 0.9
    assert not np.allclose(params[0].a_syn, 0.5)
    with pytest.raises(SnnEdgeError, match="k_update"):
        make_rule("solsa", k_update=0).init(spec, params, rng)
    with pytest.raises(SnnEdgeError, match="optimizer"):
        make_rule("solsa", optimizer="rmsprop").init(spec, params, rng)
    with pytest.raises(SnnEdgeError, match="learn_layers"):
        make_rule("solsa", learn_layers="first").init(spec, params, rng)


def test_learn_last_layer_only_leaves_hidden_weights():
    spec, params, X, y = _net(sizes=(6, 5, 4))
    rule = make_rule("solsa", optimizer="sgd", lr=0.05, k_update=3, learn_layers="last")
    work = [q.copy() for q in params]
    rule.init(spec, work, np.random.default_rng(0))
    rule.train_batch(work, X, y)
    np.testing.assert_array_equal(work[0].W, params[0].W)
    np.testing.assert_array_equal(work[0].a_syn, params[0].a_syn)
    assert not np.array_equal(work[1].W, params[1].W)


def test_memory_meter_matches_the_arrays_the_rules_hold():
    """edge.memory_meter's counts equal the bytes SOLSA and BPTT actually allocate for one stream."""
    from edge import memory_meter

    sizes, T = (9, 7, 3), 11
    for full, learn in ((True, True), (False, True), (True, False)):
        spec = NetworkSpec(sizes=sizes, reset_grad=full, learn_syn_decay=learn)
        params = init_params(spec, np.random.default_rng(0))  # float32, like training
        rule = make_rule("solsa")
        rule.init(spec, params, np.random.default_rng(0))
        states = rule.initial_state(params, batch=1)
        held = sum(st.e.nbytes + (st.q.nbytes + st.r.nbytes if learn else 0) for st in states)
        held += sum(G.nbytes for G in rule.G) + sum(Ga.nbytes for Ga in rule.Ga if Ga is not None)
        meter = sum(memory_meter.solsa_bytes(a, b, T, full, learn).total for a, b in zip(sizes[:-1], sizes[1:]))
        assert held == meter
    X = (np.random.default_rng(1).random((T, 1, sizes[0])) < 0.5).astype(np.uint8)
    fwd = bptt.forward(spec, params, X, method="dense")
    window = sum(r.inputs.dense.nbytes + r.current.nbytes + r.v_pre.nbytes + r.spikes.nbytes for r in fwd.records)
    grads = bptt.backward(spec, params, fwd, np.ones((1, sizes[-1]), np.float32))
    acc = sum(g["W"].nbytes for g in grads)
    meters = [memory_meter.bptt_bytes(a, b, T, False) for a, b in zip(sizes[:-1], sizes[1:])]
    assert window == sum(m.window for m in meters)
    assert acc == sum(m.accumulators for m in meters)


def _float_and_integer_accumulators(seed: int, reset_path: bool):
    """Run the float rule and docs/NUMERICS.md §10 (converters.intsim, bit-exact with the firmware) on
    the same 30-5 layer read back from its quantised form; -> (spike agreement, G rel. error, Ga rel. error)."""
    from converters import intsim
    from converters.intmodel import default_learn
    from converters.quantize import quantize

    n_in, n_out, T, label = 30, 5, 40, 2
    rng = np.random.default_rng(seed)
    spec = NetworkSpec(sizes=(n_in, n_out), readout="spikes", a_syn=0.75, a_mem=0.8, theta=1.0,
                       learn_syn_decay=True, reset_grad=reset_path, surrogate="triangle", slope=1.0)
    params = init_params(spec, rng, dtype=np.float64)
    p = params[0]
    p.W *= 2.5
    p.a_syn[:] = rng.integers(2000, 3800, n_in) / 4096
    X = (rng.random((T, 1, n_in)) < 0.2).astype(np.uint8)
    learn = default_learn("solsa")
    # accumulate only; the reset path needs the full per-synapse traces
    learn.params.update(k_update=10 ** 4, factorised=0 if reset_path else 1, reset_path=int(reset_path))
    model = quantize(spec, [q.astype(np.float32) for q in params], X, calibrate_theta=False, learn=learn)
    L = model.layers[-1]
    scale = 2.0 ** (L.w_exp + L.shift)  # state units per real unit
    # the float network is the integer one read back: same weights, decays and threshold
    p.W[...] = L.W.astype(np.float64) * 2.0 ** -L.w_exp
    p.a_syn[...] = L.a_syn / 4096
    p.a_mem[...] = L.a_mem / 4096
    p.theta[...] = L.theta / scale
    # integer surrogate h = 4096 * max(0, 1 - c |V - theta|) is the triangle with slope c, over c
    c = scale / 2.0 ** (12 + model.learn.get("sg_shift"))
    spec.slope = c
    states, ls = intsim.initial_state(model, 1), intsim.initial_learn_state(model)
    s_int = []
    for t in range(T):
        spikes, states, ls, _ = intsim.learn_step(model, X[t, 0].astype(np.int64), states, ls, label)
        s_int.append(spikes[-1][0].copy())
    rule = make_rule("solsa", optimizer="sgd", lr=0.0, lr_syn=0.0, k_update=10 ** 4)
    rule.init(spec, params, np.random.default_rng(0))
    st, s_float = rule.initial_state(params, 1), []
    for t in range(T):
        out, _, st = rule.step(params, st, X[t].astype(np.float64), np.array([label]), np.ones(1))
        s_float.append(out[0].copy())
    if reset_path:
        assert rule.G[0].shape == (n_in, n_out) and np.abs(rule.G[0]).sum() > 0
    # units: x carries 64 per spike (TRACE_FRAC), phi_int = 4096/c phi, psi_int = 2**w_exp 32/c psi
    G_int = ls.arrays["G"].astype(np.float64) * c / 64
    Ga_int = ls.arrays["Ga"].astype(np.float64) * 2 * c / 2.0 ** L.w_exp
    return (float(np.mean(np.array(s_int) == np.array(s_float))),
            float(np.linalg.norm(G_int - rule.G[0]) / np.linalg.norm(rule.G[0])),
            float(np.linalg.norm(Ga_int - rule.Ga[0]) / np.linalg.norm(rule.Ga[0])))


@pytest.mark.parametrize("reset_path", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_float_rule_agrees_with_integer_rule(seed, reset_path):
    """The float accumulators G, Ga and the integer ones of docs/NUMERICS.md §10 agree within 15%,
    with the reset path off (factorised traces) and on (full traces, §10.5b). Measured on seeds 0-7:
    G 4.9-12.1% off, 6.2-11.3% on; Ga 4.3-11.5% (both); spikes agree 96.5-99.5%. The gap is the few
    spikes that truncating decays flip. Dropping the reset factor from the integer rule gives 48-59%
    on G (and NUMERICS_VERSION 1's reset path 66-89%, per the review): this test tells them apart."""
    agree, err_G, err_Ga = _float_and_integer_accumulators(seed, reset_path)
    assert agree > 0.95
    assert err_G < 0.15
    assert err_Ga < 0.15
