"""The numpy integer simulator against the pure-Python definition (firmware_py/fixedpoint.py)."""
import json
from pathlib import Path

import numpy as np
import pytest

from converters import intsim
from converters.intmodel import IntLayer, IntModel, validate
from edge.errors import SnnEdgeError
from firmware_py import fixedpoint as fp
from tests.converters.helpers import random_input, small_model

GOLDEN = Path(__file__).resolve().parents[1] / "golden"


def golden_model():
    G = json.loads((GOLDEN / "forward_2layer.json").read_text())
    layers = [IntLayer(np.array(L["W"], np.int8), np.array(L["a_syn"], np.int32), L["a_mem"], L["theta"],
                       L["shift"], 0, L["kind"]) for L in G["network"]["layers"]]
    return IntModel(layers, in_max=255), G


def test_intsim_matches_forward_golden_vectors():
    model, G = golden_model()
    X = np.array(G["network"]["inputs"], np.uint8)[:, None, :]
    res = intsim.run(model, X)
    assert res.nsat[-1, 0] > 0, "the golden case is meant to exercise saturation"
    for t, want in enumerate(G["steps"]):
        for l in range(2):
            assert res.spikes[l][t, 0].tolist() == want["spikes"][l]
            assert res.V[l][t, 0].tolist() == want["V"][l]
            assert res.I[l][t, 0].tolist() == want["I"][l]
        assert res.nsat[t, 0] == want["nsat"]


def test_vectorised_primitives_match_fixedpoint():
    rng = np.random.default_rng(1)
    x = rng.integers(-(2 ** 20), 2 ** 20, 2000)
    a = rng.integers(-4096, 4097, 2000)
    assert intsim.mul_q12(x, a).tolist() == [fp.mul_q12(int(u), int(v)) for u, v in zip(x, a)]
    for k in (-7, -1, 0, 3):
        assert intsim.scale_pow2(x, k).tolist() == [fp.scale_pow2(int(u), k) for u in x]
    s = np.array(fp.lane_seeds(5, 7), np.uint64)
    ref = fp.lane_seeds(5, 7)
    for _ in range(50):
        s = intsim.xorshift32(s)
        ref = [fp.xorshift32(v) for v in ref]
    assert s.tolist() == ref


def test_solsa_reset_factor_matches_golden_and_fixedpoint():
    """§10.5b: the vectorised reset factor equals fp.solsa_reset_factor (golden cases and random ones)."""
    cases = json.loads((GOLDEN / "primitives.json").read_text())["solsa_reset_factor"]
    for h, theta, sg, want in cases:
        assert intsim.reset_factor(np.array([h]), theta, sg).tolist() == [want]
    assert any(want == 0 for *_, want in cases) and any(0 < want < 4096 for *_, want in cases)
    rng = np.random.default_rng(2)
    h = rng.integers(0, 4097, 500)
    for theta, sg in ((1, 0), (5000, 0), (5000, 4), (524287, 0), (524287, 8)):
        got = intsim.reset_factor(h, theta, sg)
        assert got.tolist() == [fp.solsa_reset_factor(int(v), theta, sg) for v in h]
        assert got.min() >= 0 and got.max() <= fp.Q_ONE


@pytest.mark.parametrize("per_input", [False, True])
def test_intsim_matches_fixedpoint_reference_on_random_networks(per_input):
    rng = np.random.default_rng(2)
    model = small_model(rng, per_input_last=per_input, in_max=255)
    X = random_input(rng, model, 25, 3)
    res = intsim.run(model, X)
    for b in range(3):
        layers = [fp.Layer([int(w) for w in L.W.reshape(-1)], L.n_in, L.n_out,
                           [int(a) for a in L.a_syn] if L.per_input else int(L.a_syn), L.a_mem, L.theta,
                           L.shift, L.kind) for L in model.layers]
        states = [fp.layer_state(L) for L in layers]
        total = 0
        for t in range(25):
            spikes, _, n = fp.network_step(layers, [int(v) for v in X[t, b]], states)
            total += n
            for l in range(2):
                assert res.spikes[l][t, b].tolist() == spikes[l]
                assert res.V[l][t, b].tolist() == states[l]["V"]
                assert res.I[l][t, b].tolist() == states[l]["I"]
            assert res.nsat[t, b] == total
    assert sum(int(s.sum()) for s in res.spikes) > 0


def test_apply_update_matches_fixedpoint():
    rng = np.random.default_rng(3)
    model = small_model(rng, per_input_last=True)
    L = model.layers[-1]
    G = rng.integers(-(2 ** 20), 2 ** 20, (L.n_in, L.n_out))
    Ga = rng.integers(-(2 ** 20), 2 ** 20, L.n_in)
    lanes = fp.lane_seeds(9, L.n_out + 1)
    W_ref = [int(w) for w in L.W.reshape(-1)]
    a_ref = [int(a) for a in L.a_syn]
    n_ref = fp.apply_update(W_ref, L.n_in, L.n_out, [int(g) for g in G.reshape(-1)], 3, 9, lanes, a_ref,
                            [int(g) for g in Ga], 2, 11)
    W, a, lanes_np, n = intsim.apply_update(L, G, 3, 9, np.array(fp.lane_seeds(9, L.n_out + 1), np.uint64),
                                            Ga, 2, 11)
    assert W.reshape(-1).tolist() == W_ref and a.tolist() == a_ref and lanes_np.tolist() == lanes
    assert n == n_ref and n > 0


def test_readout_delta_learns_a_label():
    """The rule moves the labelled class's score up: a check that the integer rule is a learning rule."""
    rng = np.random.default_rng(4)
    model = small_model(rng, rule="readout_delta")
    model.learn.params.update(k_update=10, lr_s=3, tgt_hi=6)
    X = random_input(rng, model, 10, 1, density=0.5)[:, 0]
    before = intsim.run(model, X[:, None]).scores[0]
    label = int(np.argmin(before))
    states, ls = None, None
    for _ in range(30):
        _, states, ls = intsim.learn_sequence(model, X, np.full(10, label))
        states, ls.t = None, 0
    after = intsim.run(model, X[:, None]).scores[0]
    assert after[label] > before[label]


def test_validate_refuses_weights_that_overflow_the_declared_width():
    W = np.full((5000, 2), 127, np.int8)
    model = IntModel([IntLayer(W, np.array(3000, np.int32), 3000, 100, 10, 0)], in_max=255)
    with pytest.raises(SnnEdgeError, match=r"layer 0 W: weights overflow the declared width.*expected < 2\*\*30"):
        validate(model)


def test_validate_refuses_minus_128_and_bad_decay():
    rng = np.random.default_rng(5)
    model = small_model(rng)
    model.layers[0].W[0, 0] = -128
    with pytest.raises(SnnEdgeError, match="-128"):
        validate(model)
    model = small_model(rng)
    model.layers[1].a_mem = 5000
    with pytest.raises(SnnEdgeError, match=r"layer 1 a_mem: expected an integer in \[0, 4096\], got 5000"):
        validate(model)


def test_input_outside_declared_range_is_refused():
    rng = np.random.default_rng(6)
    model = small_model(rng)
    X = np.full((3, 1, 20), 2, np.uint8)
    with pytest.raises(SnnEdgeError, match=r"input values must be in \[0, 1\]"):
        intsim.run(model, X)


def test_vectorised_lane_seeding_matches_fixedpoint():
    for seed, n in ((0, 5), (7, 300), (2 ** 32 - 1, 17)):
        assert intsim.lane_seeds(seed, n).tolist() == fp.lane_seeds(seed, n)


def test_gem_firing_follows_the_sigmoid_table():
    """With W = 0 and feedback off, u = bias: the firing rate must match SIG[idx(bias)] / 65536."""
    from tests.converters.helpers import gem_model
    model = gem_model(np.random.default_rng(34), K=50)
    for L in model.layers:
        L.W[:] = 0
        L.w_fb[:] = 0
    L = model.layers[-1]
    L.bias[:] = [-(1 << L.sig_shift) * 16, 0, 1 << L.sig_shift * 1, (1 << L.sig_shift) * 24]
    res = intsim.run(model, np.zeros((200, 1, 20), np.uint8))
    rate = res.spikes[-1].mean(axis=(0, 1))
    idx = np.clip((L.bias.astype(np.int64) >> L.sig_shift) + 128, 0, 255)
    np.testing.assert_allclose(rate, intsim.SIG[idx] / 65536, atol=0.02)


def test_gem_learning_raises_the_labelled_log_likelihood():
    from tests.converters.helpers import gem_model, random_input as rnd
    rng = np.random.default_rng(35)
    model = gem_model(rng, K=4)
    model.learn.params.update(k_update=25, lr_s=4, lrb_s=2)
    X = rnd(rng, model, 25, 1, density=0.4)[:, 0]
    first = last = None
    for epoch in range(8):
        trace, _, ls = intsim.gem_learn_sequence(model, X, np.full(25, 3))
        ll = trace["rule"][-2]["ll"].max()         # the window's log-likelihood before the reset update
        first = ll if first is None else first
        last = ll
    assert last > first


def test_gem_sample_does_not_depend_on_its_batch_position():
    from tests.converters.helpers import gem_model, random_input as rnd
    rng = np.random.default_rng(36)
    model = gem_model(rng)
    X = rnd(rng, model, 15, 3, density=0.4)
    batch = intsim.run(model, X)
    for b in range(3):
        alone = intsim.run(model, X[:, b:b + 1])
        assert (alone.scores[0] == batch.scores[b]).all()
        K = model.compartments
        assert (alone.spikes[0] == batch.spikes[0][:, b * K:(b + 1) * K]).all()


def test_gem_compartments_differ_and_every_layer_accumulates_every_step():
    """§11 (the float rule's review): hidden layers sample per compartment, so the K visible
    log-likelihoods and importance weights differ (K matters); every layer (hidden included) has
    per-compartment eligibility traces; G grows at steps that are not update steps."""
    from tests.converters.helpers import gem_model, random_input as rnd
    rng = np.random.default_rng(37)
    model = gem_model(rng, K=4)
    model.learn.params["k_update"] = 1000            # no update inside the window: G only accumulates
    X = rnd(rng, model, 30, 1, density=0.4)[:, 0]
    trace, _, ls = intsim.gem_learn_sequence(model, X, np.full(30, 1))
    hidden = np.array([s[0] for s in trace["spikes"]]).transpose(1, 0, 2).reshape(4, -1)  # [K, T * N_hidden]
    assert len({tuple(r) for r in hidden.tolist()}) == 4, "each compartment's hidden spike train is its own sample"
    ll = ls.arrays["ll"]
    assert len(set(ll.tolist())) > 1
    wn = ls.arrays["wn"]
    assert wn.sum() <= 4096 and wn.max() > wn.min(), "importance weights must not all be 1/K"
    eW0 = ls.arrays["L0_eW"]
    assert np.abs(eW0).sum() > 0 and not (eW0 == eW0[:1]).all(), "hidden traces per compartment"
    GW0 = [r["L0_GW"] for r in trace["rule"]]
    assert sum(int((a != b).any()) for a, b in zip(GW0[:-1], GW0[1:])) > 20, "hidden G grows every labelled step"
