"""Classification metrics from class scores: accuracy, NLL, expected calibration error, confusion."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edge.losses import log_softmax


def accuracy(logits: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(logits.argmax(axis=1) == y)) if len(y) else float("nan")


def nll(logits: np.ndarray, y: np.ndarray) -> float:
    """Mean negative log-likelihood of the labels under softmax(logits), in nats."""
    logp = log_softmax(logits.astype(np.float64))
    return float(-logp[np.arange(len(y)), y].mean())


@dataclass
class Reliability:
    """Per confidence bin: mean confidence, accuracy and count (bins of equal width on [0, 1])."""

    edges: np.ndarray
    confidence: np.ndarray
    accuracy: np.ndarray
    count: np.ndarray

    @property
    def ece(self) -> float:
        """Expected calibration error: sum over bins of |accuracy - confidence| weighted by count."""
        n = self.count.sum()
        if n == 0:
            return float("nan")
        gap = np.abs(self.accuracy - self.confidence)
        return float(np.sum(np.where(self.count > 0, gap, 0.0) * self.count) / n)


def reliability(logits: np.ndarray, y: np.ndarray, n_bins: int = 15) -> Reliability:
    probs = np.exp(log_softmax(logits.astype(np.float64)))
    conf = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == y).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # bin k holds conf in (edges[k], edges[k+1]]; confidence is always > 0 (>= 1/C)
    which = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)
    count = np.bincount(which, minlength=n_bins).astype(np.int64)
    safe = np.maximum(count, 1)
    return Reliability(edges,
                       np.bincount(which, weights=conf, minlength=n_bins) / safe,
                       np.bincount(which, weights=correct, minlength=n_bins) / safe,
                       count)


def expected_calibration_error(logits: np.ndarray, y: np.ndarray, n_bins: int = 15) -> float:
    return reliability(logits, y, n_bins).ece


def confusion_matrix(pred: np.ndarray, y: np.ndarray, n_classes: int) -> np.ndarray:
    """[true class, predicted class] counts."""
    return np.bincount(y * n_classes + pred, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def summary(logits: np.ndarray, y: np.ndarray, n_bins: int = 15) -> dict[str, Any]:
    return {"accuracy": accuracy(logits, y), "nll": nll(logits, y),
            "ece": expected_calibration_error(logits, y, n_bins), "n": int(len(y))}


@dataclass(frozen=True)
class SeedSummary:
    """Test accuracy over seeds: mean, 95 % interval, number of seeds (and test recordings per run)."""
    mean: float
    low: float
    high: float
    n_seeds: int
    n_test: int
    method: str   # "t over seeds" (n_seeds >= 2) or "Wilson" (one seed: binomial over test recordings)

    def text(self) -> str:
        return f"{self.mean:.3f} [{self.low:.3f}, {self.high:.3f}] (n={self.n_seeds})"


def accuracy_interval95(accuracies, n_test: int) -> SeedSummary:
    """95 % interval of the mean test accuracy of independent seeds.

    Two or more seeds: Student-t over the seed accuracies (seed-to-seed variation, which includes the
    training noise). One seed: the Wilson score interval of a binomial over the n_test recordings
    (the test-set sampling noise only), since one value has no spread.
    """
    from scipy import stats

    acc = np.asarray(list(accuracies), dtype=np.float64)
    if acc.size == 0 or n_test < 1:
        raise ValueError(f"accuracy_interval95: expected >= 1 accuracy and n_test >= 1, got {acc.size}, {n_test}")
    m = float(acc.mean())
    if acc.size >= 2:
        half = float(stats.t.ppf(0.975, acc.size - 1) * acc.std(ddof=1) / np.sqrt(acc.size))
        return SeedSummary(m, m - half, m + half, int(acc.size), int(n_test), "t over seeds")
    z = float(stats.norm.ppf(0.975))
    centre = (m + z * z / (2 * n_test)) / (1 + z * z / n_test)
    half = z * np.sqrt(m * (1 - m) / n_test + z * z / (4 * n_test ** 2)) / (1 + z * z / n_test)
    return SeedSummary(m, float(centre - half), float(centre + half), 1, int(n_test), "Wilson")
