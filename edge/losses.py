"""Losses on the network's readout, each returning (mean loss over the batch, dL/dlogits).

logits are spike counts [B, C] (readout="spikes") or the time-mean membrane of a leaky readout.
"""
from __future__ import annotations

import numpy as np

from edge.errors import SnnEdgeError


def log_softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def softmax(logits: np.ndarray) -> np.ndarray:
    return np.exp(log_softmax(logits))


def cross_entropy(logits: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """Softmax cross-entropy (snnTorch's ce_count_loss on counts; ce on a membrane readout)."""
    B = logits.shape[0]
    logp = log_softmax(logits.astype(np.float64))
    loss = -logp[np.arange(B), y].mean()
    grad = np.exp(logp)
    grad[np.arange(B), y] -= 1.0
    return float(loss), (grad / B).astype(logits.dtype)


def mse_count(counts: np.ndarray, y: np.ndarray, n_steps: int, correct_rate: float = 0.8,
              incorrect_rate: float = 0.2) -> tuple[float, np.ndarray]:
    """Mean squared error to target counts (snnTorch's mse_count_loss): correct_rate*T for the label."""
    target = np.full(counts.shape, incorrect_rate * n_steps, dtype=np.float64)
    target[np.arange(counts.shape[0]), y] = correct_rate * n_steps
    diff = counts.astype(np.float64) - target
    loss = float(np.mean(diff ** 2))
    return loss, (2.0 * diff / diff.size).astype(counts.dtype)


LOSSES = ("ce", "mse_count")


def compute_loss(name: str, logits: np.ndarray, y: np.ndarray, n_steps: int) -> tuple[float, np.ndarray]:
    if name == "ce":
        return cross_entropy(logits, y)
    if name == "mse_count":
        return mse_count(logits, y, n_steps)
    raise SnnEdgeError(f"loss: expected one of {LOSSES}, got {name!r}")
