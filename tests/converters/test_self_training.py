"""intsim.self_train_samples (and its guard) against firmware_py.device.Device under CPython, bit for bit."""
import numpy as np
import pytest

from converters import intsim
from converters.blob import intmodel_to_blob
from edge.errors import SnnEdgeError
from firmware_py import guard as fguard
from firmware_py import memory
from firmware_py.binning import BinSpec, event_slot
from firmware_py.device import Device
from firmware_py.errors import DeviceError
from tests.converters.helpers import small_model

T = 12
BINNING = (5, 2, 1000, T, 1, (0, 0, 5, 2), 0)      # 5x2 sensor, 2 polarities: 20 inputs


def _samples(rng, n, density=40):
    """n samples of random events and the frames [n, T, 20] the one binning definition gives them."""
    spec = BinSpec(*BINNING)
    events, X = [], np.zeros((n, T, spec.n_inputs), np.uint8)
    for s in range(n):
        k = int(rng.integers(density // 2, density))
        ev = (rng.integers(0, 5, k).tolist(), rng.integers(0, 2, k).tolist(),
              sorted(rng.integers(0, T * 1000, k).tolist()), rng.integers(0, 2, k).tolist())
        for x, y, t, p in zip(*ev):
            slot = event_slot(spec, x, y, t, p)
            if slot is not None:
                X[s, slot[0], slot[1]] = 1
        events.append(ev)
    return events, X


def _model(rule, seed=3, **kw):
    m = small_model(np.random.default_rng(seed), rule=rule, **kw)
    m.binning = BINNING
    return m


def _device_run(model, events, gate, guard=None):
    d = Device(self_train_gate=gate, guard=guard)
    d.load_model(intmodel_to_blob(model))
    preds, confs = [], []
    for ev in events:
        d.begin_sample()
        d.add_events(*ev)
        cls, _, conf = d.end_sample(None)
        preds.append(cls)
        confs.append(conf)
    return d, preds, confs


def _same(d, host, preds, confs, h_preds, h_confs, nsat, ls):
    from firmware_py.store import persistent_banks
    assert preds == h_preds.tolist() and confs == h_confs.tolist()
    for L, H in zip(d.net.model.layers, host.layers):       # every layer (SOLSA may learn them all)
        assert list(L.W) == H.W.reshape(-1).tolist()
        if L.per_input:
            assert list(L.a_syn) == H.a_syn.tolist()
    assert list(d.rule.lanes) == [int(v) for v in ls.lanes]
    host_banks = [ls.hidden_lanes[l].tolist() for l in sorted(ls.hidden_lanes)] + [ls.lanes.tolist()]
    assert [list(b) for b in persistent_banks(d.rule)] == host_banks
    assert d.stats()["nsat"] == nsat


@pytest.mark.parametrize("rule,kw", [("readout_delta", {}), ("solsa", {"factorised": 0}),
                                     ("solsa", {"factorised": 1, "per_input_last": True})])
def test_self_training_matches_the_device_bit_for_bit(rule, kw):
    model = _model(rule, **kw)
    events, X = _samples(np.random.default_rng(5), 24)
    gate = 40
    d, preds, confs = _device_run(model, events, gate)
    host, h_preds, h_confs, trained, nsat, ls = intsim.self_train_samples(model, X, gate)
    assert 0 < trained.sum() < len(X), "the gate should pass some samples and stop others"
    assert d.stats()["self_trained"] == int(trained.sum())
    assert not np.array_equal(host.layers[-1].W, model.layers[-1].W), "self-training should move the weights"
    _same(d, host, preds, confs, h_preds, h_confs, nsat, ls)


@pytest.mark.parametrize("params,expect,learn_all", [
    ({"warmup": 4, "period": 5, "conf_drop": 255, "rate_band": 1 << 16, "share_rise": 256}, "learn", 0),
    ({"warmup": 4, "period": 5, "conf_drop": 0, "rate_band": 0, "share_rise": 0}, "frozen", 0),
    # SOLSA on every layer (NUMERICS.md §10.8): the snapshot and the rollback cover every layer and bank
    ({"warmup": 4, "period": 5, "conf_drop": 255, "rate_band": 1 << 16, "share_rise": 256}, "learn", 1),
    ({"warmup": 4, "period": 5, "conf_drop": 0, "rate_band": 0, "share_rise": 0}, "frozen", 1)])
def test_guarded_self_training_matches_the_device_bit_for_bit(params, expect, learn_all):
    model = _model("solsa", factorised=0, learn_all=learn_all)
    events, X = _samples(np.random.default_rng(6), 30)
    d, preds, confs = _device_run(model, events, 0, params)
    g = fguard.Guard(model.layers[-1].n_out, **params)
    host, h_preds, h_confs, trained, nsat, ls = intsim.self_train_samples(model, X, 0, g)
    _same(d, host, preds, confs, h_preds, h_confs, nsat, ls)
    assert d.guard.state() == g.state() and g.state()["phase"] == expect
    assert not trained[:params["warmup"] - 1].any(), "no self-training during the warm-up"
    if expect == "learn":
        assert g.snapshots == (30 - 4) // 5 and g.rollbacks == 0 and trained[4:].all()
    else:
        # frozen at the first block's end: the weights are the warm-up's (the snapshot), nothing learned after
        assert g.rollbacks == 1 and g.why != 0
        frozen_at = 4 + 5
        assert not trained[frozen_at - 1:].any() and trained[4:frozen_at - 1].all()
        assert all(np.array_equal(H.W, L.W) for H, L in zip(host.layers, model.layers))


def test_guard_rolls_back_to_the_last_good_snapshot():
    """A block that degrades restores the weights of the last good block's end, not the initial ones."""
    g = fguard.Guard(3, warmup=2, period=2, conf_drop=10, rate_band=1 << 16, share_rise=256)
    seen = [g.observe(c, [1, 1, 1], conf) for c, conf in ((0, 200), (1, 200))]
    assert seen == [fguard.SKIP, fguard.SNAPSHOT] and g.phase == fguard.LEARN
    assert [g.observe(2, [1, 1, 1], 200), g.observe(0, [1, 1, 1], 195)] == [fguard.LEARN_OK, fguard.SNAPSHOT]
    assert [g.observe(1, [1, 1, 1], 150), g.observe(2, [1, 1, 1], 150)] == [fguard.LEARN_OK, fguard.ROLLBACK]
    assert g.phase == fguard.FROZEN and g.why == 1 and g.observe(0, [1, 1, 1], 255) == fguard.SKIP
    # class collapse alone (same confidence and rate) trips the share check
    g = fguard.Guard(2, warmup=4, period=4, conf_drop=255, rate_band=1 << 16, share_rise=32)
    for c in (0, 1, 0, 1):
        g.observe(c, [2, 2], 100)
    assert [g.observe(0, [2, 2], 100) for _ in range(4)][-1] == fguard.ROLLBACK and g.why == 4


@pytest.mark.parametrize("learn_all", [0, 1])
def test_snapshot_bytes_are_in_the_memory_plan(learn_all):
    model = _model("solsa", factorised=0, learn_all=learn_all)
    d = Device(self_train_gate=0, guard={})
    d.load_model(intmodel_to_blob(model))
    dims = [(L.n_in, L.n_out, L.per_input) for L in d.net.model.layers]
    held = memory.held(d.net, d.rule, d.binner, True)
    banks = d.snapshot.hi + d.snapshot.lo
    arrays = sum(len(c) * c.itemsize for c in d.snapshot.copies) + sum(2 * len(b) for b in banks)
    overhead = memory.OBJ_OVERHEAD * (len(d.snapshot.copies) + len(banks))
    assert fguard.snapshot_bytes(dims, [0, 1] if learn_all else [1]) == arrays + overhead
    assert held["guard"] == arrays + overhead + fguard.guard_bytes(model.layers[-1].n_out) > 0
    assert d.stats()["memory"]["guard"] == held["guard"]
    no_guard = memory.breakdown(dims, "solsa", model.learn.params, 0)
    assert memory.breakdown(dims, "solsa", model.learn.params, 0, guard=True)["model"] == \
        no_guard["model"] + held["guard"]


def test_bad_guard_and_gate_are_refused_clearly():
    with pytest.raises(DeviceError, match="unknown parameter 'window'"):
        Device(guard={"window": 3})
    with pytest.raises(DeviceError, match=r"period=0: expected an integer in \[1, 4096\]"):
        Device(guard={"period": 0})
    model = _model("solsa")
    with pytest.raises(SnnEdgeError, match="gate 300"):
        intsim.self_train_samples(model, np.zeros((1, T, 20), np.uint8), 300)
    with pytest.raises(SnnEdgeError, match="rule 'none'"):
        intsim.self_train_samples(_model("none"), np.zeros((1, T, 20), np.uint8), 0)


@pytest.mark.parametrize("interp", ["micropython", "micropython32"])
def test_guarded_self_training_under_micropython_matches_the_host(interp, tmp_path):
    """The guard's decisions, snapshot and rollback on the real MicroPython ports (32-bit: 31-bit small ints)."""
    import json

    from tests.firmware.conftest import run_script
    model = _model("solsa", factorised=0)
    events, X = _samples(np.random.default_rng(6), 30)
    params = {"warmup": 4, "period": 5, "conf_drop": 0, "rate_band": 0, "share_rise": 0}
    (tmp_path / "m.blob").write_bytes(intmodel_to_blob(model))
    (tmp_path / "ev.json").write_text(json.dumps(events))
    got = json.loads(run_script(interp, "guard_mpy.py", str(tmp_path / "m.blob"), str(tmp_path / "ev.json"), "0",
                                json.dumps(params)))
    g = fguard.Guard(model.layers[-1].n_out, **params)
    host, preds, confs, trained, nsat, ls = intsim.self_train_samples(model, X, 0, g)
    assert got["preds"] == preds.tolist() and got["confs"] == confs.tolist()
    assert got["W"] == host.layers[-1].W.reshape(-1).tolist() and got["lanes"] == [int(v) for v in ls.lanes]
    assert got["guard"] == g.state() and g.state()["phase"] == "frozen"
    assert got["nsat"] == nsat and got["self_trained"] == int(trained.sum()) > 0
