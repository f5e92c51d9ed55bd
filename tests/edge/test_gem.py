"""GEM (edge/rules/gem.py) and the probabilistic GLM neurons (edge/probabilistic.py)."""
from __future__ import annotations

import numpy as np
import pytest

from edge.errors import SnnEdgeError
from edge.model import NetworkSpec, init_params, load_checkpoint, save_checkpoint
from edge.probabilistic import (GLMLayerParams, Kernels, draw_uniforms, fir_window, importance_weights,
                                iw_log_likelihood, network_window, presynaptic_traces, raised_cosine_basis,
                                spike_log_prob, vote)
from edge.rules import make_rule
from edge.rules.gem import online_gradients, window_gradients


def _net(K=3, kernel="raised_cosine", n_basis=2, sizes=(7, 5, 3), seed=0, **options):
    spec = NetworkSpec(sizes=sizes, a_mem=0.7, a_syn=0.6)
    rng = np.random.default_rng(seed)
    params = init_params(spec, rng, dtype=np.float64)
    rule = make_rule("gem", k_train=K, kernel=kernel, n_basis=n_basis, kernel_len=4, fb_len=3, **options)
    rule.init(spec, params, rng)
    for p in params:
        p.W *= 3.0  # hidden neurons spike often enough that compartments differ
        p.bias[:] = -0.5
    X = (rng.random((6, 2, sizes[0])) < 0.4).astype(np.uint8)
    y = np.array([0, 2])
    return spec, params, rule, X, y


def test_raised_cosine_basis_and_fir_filter_by_brute_force():
    B = raised_cosine_basis(3, 8)
    assert B.shape == (3, 8) and np.all(B >= 0) and np.all(B <= 1)
    assert B[0, 0] == pytest.approx(1.0) and B[-1, -1] == pytest.approx(1.0)  # bumps peak at their centres
    rng = np.random.default_rng(1)
    s = (rng.random((10, 2, 4)) < 0.5).astype(np.float64)
    out = fir_window(s, B[1], 0, np.float64)
    brute = np.zeros_like(s)
    for t in range(10):
        for d in range(8):
            if t - d >= 0:
                brute[t] += B[1, d] * s[t - d]
    np.testing.assert_allclose(out, brute)


@pytest.mark.parametrize("kernel,n_basis", [("raised_cosine", 2), ("exponential", 1)])
def test_traces_match_brute_force(kernel, n_basis):
    """Eligibility traces of the step form equal their explicit sums over the history."""
    spec, params, rule, X, y = _net(K=2, kernel=kernel, n_basis=n_basis)
    U = draw_uniforms(np.random.default_rng(5), X.shape[0], X.shape[1], 2, spec.sizes)
    wins = network_window(params, X, rule.kernels, U, y)
    p, win = params[0], wins[0]
    pre = presynaptic_traces(X.astype(np.float64)[:, :, None, :], p, rule.kernels)
    np.testing.assert_allclose(win.pre, pre)
    if kernel == "exponential":
        brute = np.zeros_like(pre[0])
        for t in range(X.shape[0]):
            for tau in range(t + 1):
                brute[t] += p.a_syn ** (t - tau) * X[tau][:, None, :]
        np.testing.assert_allclose(pre[0], brute)
    # potential recomputed from its definition
    fbk = rule.kernels.feedback()
    for t in range(X.shape[0]):
        fb = sum(fbk[d] * win.s[t - 1 - d] for d in range(len(fbk)) if t - 1 - d >= 0)
        u = sum(pre[b, t] @ p.basis_weights()[b] for b in range(n_basis)) + p.w_fb * fb + p.bias
        np.testing.assert_allclose(win.u[t], np.broadcast_to(u, win.u[t].shape))
    # the accumulated update with unit importance weights equals sum_t sum_tau<=t kappa^(t-tau) g[tau]
    G, _ = online_gradients(params, X, y, rule.kernels, [u[:, :, :1] for u in U], single_sample=True)
    U1 = [u[:, :, :1] for u in U]
    w1 = network_window(params, X, rule.kernels, U1, y)[0]
    d = w1.s - 1.0 / (1.0 + np.exp(-w1.u))
    kappa = float(p.a_mem)
    brute_bias = sum(kappa ** (t - tau) * d[tau].sum(axis=(0, 1)) for t in range(6) for tau in range(t + 1))
    np.testing.assert_allclose(G[0]["bias"], brute_bias)


@pytest.mark.parametrize("kernel,n_basis", [("raised_cosine", 2), ("exponential", 1)])
def test_window_form_equals_forward_only_form(kernel, n_basis):
    spec, params, rule, X, y = _net(K=3, kernel=kernel, n_basis=n_basis)
    U = draw_uniforms(np.random.default_rng(5), X.shape[0], X.shape[1], 3, spec.sizes)
    wins = network_window(params, X, rule.kernels, U, y)
    assert not np.array_equal(wins[0].s[:, :, 0], wins[0].s[:, :, 1]), "compartments must sample differently"
    grads, w, ll = window_gradients(params, wins)
    G, ll_online = online_gradients(params, X, y, rule.kernels, U)
    np.testing.assert_allclose(ll[-1], ll_online, rtol=1e-12)
    for g, Gi in zip(grads, G):
        for key in ("W", "bias", "w_fb"):
            np.testing.assert_allclose(g[key], Gi[key], rtol=1e-10, atol=1e-12)


def test_k1_equals_single_sample_rule():
    spec, params, rule, X, y = _net(K=1)
    U = draw_uniforms(np.random.default_rng(7), X.shape[0], X.shape[1], 1, spec.sizes)
    grads, w, _ = window_gradients(params, network_window(params, X, rule.kernels, U, y))
    assert np.all(w == 1.0)
    G, _ = online_gradients(params, X, y, rule.kernels, U, single_sample=True)
    for g, Gi in zip(grads, G):
        for key in ("W", "bias", "w_fb"):
            np.testing.assert_allclose(g[key], Gi[key], rtol=1e-10, atol=1e-12)
    # and the rule's update with K = 1 is exactly lr * that gradient (plain SGD)
    rule1 = make_rule("gem", k_train=1, kernel_len=4, fb_len=3, optimizer="sgd", lr=0.01)
    work = [p.copy() for p in params]
    rule1.init(spec, work, np.random.default_rng(0))
    before = [p.copy() for p in work]
    grads1, _, _, _ = rule1.gradients(work, X, y)
    rule1.train_batch(work, X, y)
    np.testing.assert_allclose(work[0].W - before[0].W, 0.01 * grads1[0]["W"][0] / 2, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(work[1].bias - before[1].bias, 0.01 * grads1[1]["bias"] / 2, rtol=1e-10)


def test_importance_weights_sum_to_one_and_favour_likely_compartments():
    rng = np.random.default_rng(0)
    ll = rng.normal(0, 50, (6, 4, 10))
    ll[..., 3] += 1000.0  # huge but finite: the softmax must not overflow
    w = importance_weights(ll)
    np.testing.assert_allclose(w.sum(axis=-1), 1.0, rtol=1e-12)
    assert np.all(w >= 0) and np.all(w.argmax(axis=-1) == 3)
    spec, params, rule, X, y = _net(K=5)
    _, w, ll, _ = rule.gradients(params, X, y)
    np.testing.assert_allclose(w.sum(axis=-1), 1.0, rtol=1e-12)
    assert np.array_equal(w.argmax(axis=-1), ll.argmax(axis=-1))


def test_iw_bound_tightens_with_k():
    """log mean_k p_k >= mean_k log p_k (Jensen): the K-sample bound is above the 1-sample one."""
    ll = np.random.default_rng(3).normal(-20, 4, (50, 10))
    assert np.all(iw_log_likelihood(ll) >= ll.mean(axis=1) - 1e-12)
    np.testing.assert_allclose(iw_log_likelihood(ll[:, :1]), ll[:, 0])
    win_s = np.array([[[[1.0, 0.0]]]])
    win_u = np.array([[[[0.3, -1.2]]]])
    np.testing.assert_allclose(spike_log_prob(win_s, win_u), np.log([[[[1 / (1 + np.exp(-0.3)), 1 / (1 + np.exp(-1.2))]]]]))


def test_vote_counts_each_compartment_once():
    counts = np.array([[[3, 1, 0], [0, 2, 2], [1, 1, 1]]], dtype=float)
    expected = np.array([[[2.0, 1, 0], [0, 1.5, 1.9], [0.1, 0.7, 0.3]]])
    np.testing.assert_allclose(vote(counts, expected, 3), [[1 / 3, 1 / 3, 1 / 3]])


def test_learns_and_checkpoints_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    n_in, T = 16, 10
    templates = rng.random((2, T, n_in)) < 0.3
    y = rng.integers(0, 2, 48)
    X = (templates[y] ^ (rng.random((48, T, n_in)) < 0.03)).astype(np.uint8).transpose(1, 0, 2)
    spec = NetworkSpec(sizes=(n_in, 8, 2))
    params = init_params(spec, np.random.default_rng(1))
    rule = make_rule("gem", lr=0.05, k_train=3, k_infer=5)
    rule.init(spec, params, np.random.default_rng(0))
    first = rule.train_batch(params, X, y)
    for _ in range(30):
        m = rule.train_batch(params, X, y)
    assert m["loss"] < first["loss"]  # the (negative) log-likelihood of the target falls
    acc = float(np.mean(rule.predict(params, X).argmax(axis=1) == y))
    assert acc > 0.9
    path = tmp_path / "gem.ckpt"
    save_checkpoint(path, spec, params, {"rule": rule.config()})
    spec2, loaded, extra = load_checkpoint(path)
    assert all(isinstance(p, GLMLayerParams) for p in loaded)
    np.testing.assert_allclose(rule.predict(loaded, X), rule.predict(params, X), rtol=1e-6)


def test_bad_options_are_refused():
    spec = NetworkSpec(sizes=(4, 3, 2))
    params = init_params(spec, np.random.default_rng(0))
    with pytest.raises(SnnEdgeError, match="k_train"):
        make_rule("gem", k_train=0).init(spec, params, np.random.default_rng(0))
    with pytest.raises(SnnEdgeError, match="vote"):
        make_rule("gem", vote="plurality").init(spec, [p.copy() for p in init_params(spec, np.random.default_rng(0))],
                                                np.random.default_rng(0))
    with pytest.raises(SnnEdgeError, match="n_basis"):
        Kernels("exponential", 2)
    with pytest.raises(SnnEdgeError, match="GLM"):
        rule = make_rule("gem")
        rule.init(spec, [p.copy() for p in init_params(spec, np.random.default_rng(0))], np.random.default_rng(0))
        rule.predict(init_params(spec, np.random.default_rng(0)), np.zeros((3, 1, 4), np.uint8))
