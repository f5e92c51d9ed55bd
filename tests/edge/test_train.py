"""Training loop, checkpoints, resume, bad input, and the `snn-edge train` / `eval` commands."""
from __future__ import annotations

import json

import numpy as np
import pytest

from edge.data import BuiltinSource, NMNIST_SPEC, load_frames, split_stratified
from edge.errors import SnnEdgeError
from edge.model import (LayerParams, NetworkSpec, check_params, init_params, load_checkpoint, parse_arch,
                        save_checkpoint)
from edge.rules import get_rule_class, make_rule, rule_names
from edge.rules.base import LearningRule
from edge.train import FitConfig, fit


@pytest.fixture(scope="module")
def builtin_data():
    """The project's synthetic DVS generator (not real data): 20 per class, N-MNIST geometry."""
    X, y, _ = load_frames(BuiltinSource(n_per_class=20, seed=0), NMNIST_SPEC, progress=False)
    tr, va = split_stratified(y, 0.2, 0)
    return X[tr], y[tr], X[va], y[va]


def _spec(**kw):
    base = dict(sizes=(578, 64, 10), a_syn=0.5, a_mem=0.8, binning=NMNIST_SPEC.as_tuple())
    base.update(kw)
    return NetworkSpec(**base)


# --- arch and checkpoints ---------------------------------------------------------------------

def test_parse_arch():
    assert parse_arch("578-128-10") == (578, 128, 10)
    assert parse_arch(" 34-5 ") == (34, 5)
    for bad in ("578", "578-x-10", "578--10", "578-0-10", ""):
        with pytest.raises(SnnEdgeError, match="--arch"):
            parse_arch(bad)


def test_checkpoint_round_trip(tmp_path):
    spec = _spec(learn_syn_decay=True, reset_grad=True, readout="membrane")
    params = init_params(spec, np.random.default_rng(0))
    path = tmp_path / "m.ckpt"
    save_checkpoint(path, spec, params, {"note": "hi", "moments": np.arange(4.0)})
    spec2, params2, extra = load_checkpoint(path)
    assert spec2 == spec and spec2.binning == NMNIST_SPEC.as_tuple()
    for a, b in zip(params, params2):
        for name in LayerParams.NAMES:
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
            assert getattr(b, name).dtype == np.float32
    assert params2[0].a_syn.shape == (578,) and params2[0].a_mem.shape == ()
    assert extra["note"] == "hi"
    np.testing.assert_array_equal(extra["moments"], np.arange(4.0))
    with np.load(path) as npz:  # the documented layout, read without our loader
        assert {"L0_W", "L0_a_syn", "L0_a_mem", "L0_theta", "L1_W", "spec"} <= set(npz.files)
        assert json.loads(str(npz["spec"]))["network"]["sizes"] == [578, 64, 10]
    assert [p.name for p in tmp_path.iterdir()] == ["m.ckpt"]  # the temp file was renamed away


def test_bad_checkpoints(tmp_path):
    with pytest.raises(SnnEdgeError, match="not found"):
        load_checkpoint(tmp_path / "none.ckpt")
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"not a zip")
    with pytest.raises(SnnEdgeError, match="junk.ckpt"):
        load_checkpoint(junk)
    spec = _spec()
    other = _spec(sizes=(578, 32, 10))
    with pytest.raises(SnnEdgeError, match=r"L0_W has shape \(578, 64\), expected \(578, 32\)"):
        check_params(other, init_params(spec, np.random.default_rng(0)))


def test_spec_validation():
    with pytest.raises(SnnEdgeError, match="a_mem"):
        NetworkSpec(sizes=(4, 2), a_mem=1.0)
    with pytest.raises(SnnEdgeError, match="readout"):
        NetworkSpec(sizes=(4, 2), readout="rate")
    with pytest.raises(SnnEdgeError, match="surrogate"):
        NetworkSpec(sizes=(4, 2), surrogate="relu")
    with pytest.raises(SnnEdgeError, match="theta: expected 2 per-layer values, got 3"):
        NetworkSpec(sizes=(4, 3, 2), theta=(1.0, 1.0, 1.0))


# --- rule registry ------------------------------------------------------------------------------

def test_rule_registry_and_options():
    assert "bptt" in rule_names()
    rule = make_rule("bptt", lr="0.01", grad_clip=1)
    assert isinstance(rule, LearningRule) and rule.options["lr"] == 0.01 and rule.options["grad_clip"] == 1.0
    assert get_rule_class("bptt").name == "bptt"
    with pytest.raises(SnnEdgeError, match="--rule"):
        make_rule("backprop")
    with pytest.raises(SnnEdgeError, match="unknown option 'momentum'"):
        make_rule("bptt", momentum=0.9)
    with pytest.raises(SnnEdgeError, match="expected float"):
        make_rule("bptt", lr="fast")


# --- training -----------------------------------------------------------------------------------

def test_fit_learns_the_builtin_data(builtin_data, tmp_path):
    Xtr, ytr, Xva, yva = builtin_data
    spec = _spec()
    params = init_params(spec, np.random.default_rng(0))
    before = [p.copy() for p in params]
    result = fit(make_rule("bptt", lr=2e-3), spec, params, (Xtr, ytr), (Xva, yva),
                 FitConfig(epochs=8, progress=False, curve_png=str(tmp_path / "curve.png")))
    assert len(result.history) == 8
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    # 10 classes: chance is 0.1; this small synthetic set over-fits (train 0.7) but must generalise some
    assert result.history[-1]["train_acc"] >= 0.5, result.history
    assert result.best_val_acc >= 0.25, result.history
    assert not np.array_equal(before[0].W, params[0].W)
    assert (tmp_path / "curve.png").stat().st_size > 1000


def test_per_input_decays_and_thresholds_are_trained(builtin_data):
    Xtr, ytr, _, _ = builtin_data
    spec = _spec(learn_syn_decay=True, learn_mem_decay=True, learn_threshold=True)
    params = init_params(spec, np.random.default_rng(0))
    fit(make_rule("bptt"), spec, params, (Xtr[:64], ytr[:64]), None, FitConfig(epochs=1, progress=False))
    assert np.unique(params[0].a_syn).size > 1
    assert float(params[0].a_mem) != 0.8 and float(params[0].theta) != 1.0
    assert 0 <= params[0].a_syn.min() and params[0].a_syn.max() < 1


class _InterruptedBPTT(get_rule_class("bptt")):
    """BPTT that is interrupted (as by Ctrl-C) when it is asked for batch number `stop_at`."""

    def __init__(self, stop_at: int, **options):
        super().__init__(**options)
        self.stop_at, self.calls = stop_at, 0

    def train_batch(self, params, X, y):
        self.calls += 1
        if self.calls == self.stop_at:
            raise KeyboardInterrupt
        return super().train_batch(params, X, y)


def test_resume_is_bit_identical(builtin_data, tmp_path):
    Xtr, ytr, Xva, yva = builtin_data
    Xtr, ytr = Xtr[:96], ytr[:96]  # 3 batches per epoch
    spec = _spec(learn_syn_decay=True)
    config = dict(epochs=4, progress=False, seed=5)
    straight = init_params(spec, np.random.default_rng(1))
    full = fit(make_rule("bptt", weight_decay=1e-3), spec, straight, (Xtr, ytr), (Xva, yva), FitConfig(**config))
    ckpt = tmp_path / "run.ckpt"
    part = init_params(spec, np.random.default_rng(1))
    with pytest.raises(KeyboardInterrupt):  # stopped at the first batch of epoch 3
        fit(_InterruptedBPTT(7, weight_decay=1e-3), spec, part, (Xtr, ytr), (Xva, yva),
            FitConfig(checkpoint=str(ckpt), **config))
    spec2, best, extra = load_checkpoint(ckpt)
    assert extra["train_state"]["epoch"] == 1  # epochs 0 and 1 were saved
    resumed = init_params(spec2, np.random.default_rng(99))
    again = fit(make_rule("bptt", weight_decay=1e-3), spec2, resumed, (Xtr, ytr), (Xva, yva),
                FitConfig(**config), resume=(best, extra))
    for a, b in zip(straight, resumed):
        for name in LayerParams.NAMES:
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert [h["train_loss"] for h in again.history] == [h["train_loss"] for h in full.history]
    assert again.best_epoch == full.best_epoch
    for a, b in zip(full.params, again.params):
        np.testing.assert_array_equal(a.W, b.W)


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_nan_stops_with_layer_and_step_and_keeps_checkpoint(builtin_data, tmp_path):
    Xtr, ytr, Xva, yva = builtin_data
    spec = _spec()
    params = init_params(spec, np.random.default_rng(0))
    ckpt = tmp_path / "m.ckpt"
    fit(make_rule("bptt"), spec, params, (Xtr[:32], ytr[:32]), (Xva, yva),
        FitConfig(epochs=1, progress=False, checkpoint=str(ckpt)))
    saved = ckpt.read_bytes()
    params[1].W[:, 3] = np.inf  # layer 1 blows up as soon as layer 0 spikes
    with pytest.raises(SnnEdgeError, match=r"epoch 1, batch 1: forward pass: NaN/inf in layer 1 membrane "
                                           r"at time step \d+; last good checkpoint kept"):
        fit(make_rule("bptt"), spec, params, (Xtr[:32], ytr[:32]), (Xva, yva),
            FitConfig(epochs=1, progress=False, checkpoint=str(ckpt)))
    assert ckpt.read_bytes() == saved


def test_fit_refuses_mismatched_data(builtin_data):
    Xtr, ytr, _, _ = builtin_data
    spec = _spec(sizes=(2312, 16, 10))
    with pytest.raises(SnnEdgeError, match=r"expected \[S, T, 2312\] frames for --arch 2312-16-10"):
        fit(make_rule("bptt"), spec, init_params(spec, np.random.default_rng(0)), (Xtr, ytr))
    spec = _spec(sizes=(578, 16, 5))
    with pytest.raises(SnnEdgeError, match="labels"):
        fit(make_rule("bptt"), spec, init_params(spec, np.random.default_rng(0)), (Xtr, ytr))


class _FrozenRule(LearningRule):
    """A rule that never changes the network: validation can never improve."""

    name = "frozen"

    def train_batch(self, params, X, y):
        return {"loss": 1.0, "correct": 0, "n": len(y)}


def test_early_stop_after_patience_epochs_without_improvement(builtin_data, tmp_path):
    Xtr, ytr, Xva, yva = builtin_data
    spec = _spec()
    params = init_params(spec, np.random.default_rng(0))
    result = fit(_FrozenRule(), spec, params, (Xtr[:32], ytr[:32]), (Xva, yva),
                 FitConfig(epochs=10, patience=2, progress=False, checkpoint=str(tmp_path / "m.ckpt")))
    assert result.stopped_early and len(result.history) == 3 and result.best_epoch == 0
    assert load_checkpoint(tmp_path / "m.ckpt")[2]["train_state"]["stale"] == 2
