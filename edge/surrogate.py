"""Surrogate derivatives for the spike non-linearity, each paired with its exact primitive.

Training uses the Heaviside step forward and `derivative` backward. The primitive is the smooth
function whose true derivative is that surrogate: running the forward pass with it instead of the
step gives a differentiable model whose exact gradient is what the hand-written BPTT computes, which
is how the gradient checks compare against finite differences.

The slopes follow snnTorch's conventions so the same number means the same curve there:
fast_sigmoid(slope=k): 1 / (1 + k|x|)^2         (snnTorch surrogate.fast_sigmoid)
arctan(slope=a):       (a/2) / (1 + (pi a x / 2)^2)   (snnTorch surrogate.atan)
triangle(slope=k):     k * max(0, 1 - k|x|)     (integrates to 1, width 1/k each side)
"""
from __future__ import annotations

import math

import numpy as np

from edge.errors import SnnEdgeError


def _fast_sigmoid_derivative(x, slope):
    d = np.abs(x)
    d *= slope
    d += 1.0
    np.square(d, out=d)
    np.reciprocal(d, out=d)
    return d


def _fast_sigmoid_primitive(x, slope):
    # d/dx [x / (1 + k|x|)] = 1 / (1 + k|x|)^2; shifted to lie in (0, 1) around 0.5 like a probability.
    return 0.5 + x / (1.0 + slope * np.abs(x))


def _arctan_derivative(x, slope):
    z = (math.pi / 2.0 * slope) * x
    np.square(z, out=z)
    z += 1.0
    return (slope / 2.0) / z


def _arctan_primitive(x, slope):
    return 0.5 + np.arctan((math.pi / 2.0 * slope) * x) / math.pi


def _triangle_derivative(x, slope):
    return slope * np.maximum(0.0, 1.0 - slope * np.abs(x))


def _triangle_primitive(x, slope):
    # Integral of k * max(0, 1 - k|u|) from -inf to x: a piecewise quadratic from 0 to 1.
    z = np.clip(slope * x, -1.0, 1.0)
    return np.where(z < 0, 0.5 * (1.0 + z) ** 2, 1.0 - 0.5 * (1.0 - z) ** 2)


SURROGATES = {
    "fast_sigmoid": (_fast_sigmoid_derivative, _fast_sigmoid_primitive),
    "arctan": (_arctan_derivative, _arctan_primitive),
    "triangle": (_triangle_derivative, _triangle_primitive),
}


def check_surrogate(name: str, slope: float) -> None:
    if name not in SURROGATES:
        raise SnnEdgeError(f"surrogate: expected one of {sorted(SURROGATES)}, got {name!r}")
    if not (isinstance(slope, (int, float)) and math.isfinite(slope) and slope > 0):
        raise SnnEdgeError(f"surrogate slope: expected a positive finite number, got {slope!r}")


def derivative(name: str, x: np.ndarray, slope: float) -> np.ndarray:
    """Surrogate d spike / d x at x = V - theta; a new array with x's dtype."""
    out = SURROGATES[name][0](np.array(x, copy=True), slope)
    return out.astype(x.dtype, copy=False)


def primitive(name: str, x: np.ndarray, slope: float) -> np.ndarray:
    """The smooth spike function whose exact derivative is the surrogate (gradient checks)."""
    return np.asarray(SURROGATES[name][1](x, slope), dtype=x.dtype)
