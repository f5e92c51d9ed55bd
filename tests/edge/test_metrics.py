"""Metrics, losses, optimiser and schedule: checked against values worked out independently."""
from __future__ import annotations

import math

import numpy as np
import pytest

from edge import losses, metrics, plots
from edge.errors import SnnEdgeError
from edge.optim import Adam, scheduled_lr


def test_accuracy_and_nll_by_hand():
    logits = np.array([[2.0, 0.0], [0.0, 1.0], [3.0, 3.0]])
    y = np.array([0, 0, 1])
    assert metrics.accuracy(logits, y) == pytest.approx(1 / 3)  # argmax of a tie is class 0
    expected = -(math.log(math.e ** 2 / (math.e ** 2 + 1)) + math.log(1 / (1 + math.e)) + math.log(0.5)) / 3
    assert metrics.nll(logits, y) == pytest.approx(expected)


def test_ece_zero_for_calibrated_and_gap_for_overconfident():
    # 10 samples at confidence 0.8 with 8 correct: calibrated, ECE 0
    p = 0.8
    logit = math.log(p / (1 - p))
    logits = np.tile([logit, 0.0], (10, 1))
    y = np.array([0] * 8 + [1] * 2)
    assert metrics.expected_calibration_error(logits, y) == pytest.approx(0.0, abs=1e-12)
    # the same confidence with 5 correct: ECE = |0.5 - 0.8|
    y = np.array([0] * 5 + [1] * 5)
    assert metrics.expected_calibration_error(logits, y) == pytest.approx(0.3)
    rel = metrics.reliability(logits, y, n_bins=10)
    assert rel.count.sum() == 10 and rel.count[7] == 10  # 0.8 falls in (0.7, 0.8]


def test_confusion_matrix():
    cm = metrics.confusion_matrix(np.array([0, 1, 1, 2]), np.array([0, 1, 2, 2]), 3)
    np.testing.assert_array_equal(cm, [[1, 0, 0], [0, 1, 0], [0, 1, 1]])


@pytest.mark.parametrize("name", ["ce", "mse_count"])
def test_loss_gradients_match_finite_differences(name):
    rng = np.random.default_rng(0)
    logits = rng.uniform(0, 10, (4, 5))
    y = np.array([0, 3, 4, 1])
    _, grad = losses.compute_loss(name, logits, y, n_steps=30)
    eps = 1e-6
    for idx in np.ndindex(logits.shape):
        hi, lo = logits.copy(), logits.copy()
        hi[idx] += eps
        lo[idx] -= eps
        num = (losses.compute_loss(name, hi, y, 30)[0] - losses.compute_loss(name, lo, y, 30)[0]) / (2 * eps)
        assert grad[idx] == pytest.approx(num, rel=1e-5, abs=1e-8)


def test_unknown_loss_is_refused():
    with pytest.raises(SnnEdgeError, match="loss"):
        losses.compute_loss("hinge", np.zeros((1, 2)), np.array([0]), 1)


def test_adam_first_steps_by_hand():
    """Adam's first step moves each parameter by lr * sign(grad); weight decay is decoupled."""
    w = np.array([1.0, -2.0], np.float32)
    opt = Adam(lr=0.1, weight_decay=0.5)
    opt.step({"w": (w, np.array([3.0, -0.5], np.float32))}, decay={"w"})
    np.testing.assert_allclose(w, [1.0 * 0.95 - 0.1, -2.0 * 0.95 + 0.1], rtol=1e-5)
    b = np.array(0.5, np.float32)
    opt2 = Adam(lr=0.01)
    opt2.step({"b": (b, np.array(2.0, np.float32))})
    opt2.step({"b": (b, np.array(2.0, np.float32))})
    assert b.shape == () and float(b) == pytest.approx(0.5 - 0.02, rel=1e-5)


def test_adam_state_round_trip():
    w = np.ones(3, np.float32)
    a = Adam(lr=0.01)
    a.step({"w": (w, np.arange(3, dtype=np.float32))})
    b = Adam(lr=0.01)
    b.load_state_dict(a.state_dict())
    w2 = w.copy()
    a.step({"w": (w, np.ones(3, np.float32))})
    b.step({"w": (w2, np.ones(3, np.float32))})
    np.testing.assert_array_equal(w, w2)


def test_schedules():
    assert scheduled_lr(1.0, 0, 10, "cosine") == pytest.approx(1.0)
    assert scheduled_lr(1.0, 9, 10, "cosine") == pytest.approx(0.05)
    assert scheduled_lr(1.0, 15, 30, "step", step_every=10, step_gamma=0.5) == 0.5
    assert scheduled_lr(1.0, 0, 10, "constant", warmup_epochs=1) == 0.5
    with pytest.raises(SnnEdgeError, match="lr-schedule"):
        scheduled_lr(1.0, 0, 10, "exp")


def test_plots_write_png(tmp_path):
    rng = np.random.default_rng(1)
    logits = rng.standard_normal((50, 4))
    y = rng.integers(0, 4, 50)
    plots.reliability_diagram(metrics.reliability(logits, y), tmp_path / "rel.png")
    plots.confusion_matrix(metrics.confusion_matrix(logits.argmax(1), y, 4), tmp_path / "cm.png")
    plots.training_curves([{"epoch": 0, "train_loss": 1.0, "train_acc": 0.3, "val_nll": 1.1, "val_acc": 0.2},
                           {"epoch": 1, "train_loss": 0.8, "train_acc": 0.5, "val_nll": 0.9, "val_acc": 0.4}],
                          tmp_path / "curve.png")
    for name in ("rel.png", "cm.png", "curve.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob(".plot-*"))  # no temp files left behind
