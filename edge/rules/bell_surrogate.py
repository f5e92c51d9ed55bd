"""bell-surrogate: surrogate BPTT whose spike derivative is a distance-weighted average of single-step spike
finite differences (a bell-shaped function of P - theta), with the reset path kept.

This rule was first built as "NA" from the NA paper's abstract alone (Yang, Zhang & Li, ICML 2021). It is
not the authors' NA (that is edge/rules/na.py: spike-flip neighbours re-simulated to the end of the window,
hard-reset neurons passing post-synaptic currents): here a neighbour moves the membrane at one step only,
there is no chain effect, and the result is a closed-form surrogate derivative h(P - theta) used by the
ordinary BPTT pass. It is kept under its own name as one more surrogate-gradient variant. What follows
is its original description.

Surrogate BPTT differentiates a smooth stand-in for the spike. NA instead asks, for every neuron and
time step, what actually happens to the loss when the present membrane potential P[t] is moved to
nearby waveforms P + delta e_t: most neighbours fire exactly as before (finite difference 0), the ones
past the threshold flip the spike (finite difference 1/delta for the spike, plus the reset that
follows it). Averaging those finite differences over the neighbourhood, weighted by how far each
neighbour is, gives d s/d P; the rest of the backward pass is the same hand-written BPTT.

Our construction (the paper's full text was not reachable from the build machine, only its abstract;
this is our reading of "aggregating finite differences of the loss over multiple perturbed membrane
potential waveforms in the neighbourhood of the present membrane potential ... utilizing a new
membrane potential distance function"):

* Neighbourhood of P[t]: 2K waveforms P + delta_k e_t with delta_k = +-radius*theta*(k - 1/2)/K,
  k = 1..K (a symmetric midpoint grid, so no neighbour sits on P itself).
* Finite difference of the loss for neighbour k, linearised downstream of the spike:
      dL_k = (dL/ds[t] - theta dL/dV[t]) * ds_k + dL/dV[t] * delta_k,
      ds_k = H(P[t] + delta_k - theta) - H(P[t] - theta)
  (dL/ds[t] arrives from the layers above, dL/dV[t] is this neuron's own future, and the
  -theta dL/dV[t] term is the reset the flipped spike causes: NA always keeps the reset path).
  Dividing by delta_k and averaging gives dL/dP[t] = dL/dV[t] + (dL/ds[t] - theta dL/dV[t]) h[t] with
      h[t] = sum_k w_k ds_k / delta_k / sum_k w_k,
  i.e. exactly BPTT with reset path and the spike derivative h, which is what edge/bptt.backward's
  `spike_derivative` hook accepts.
* Membrane-potential distance: the Euclidean distance between two waveforms counts the theta jump of
  the reset a flipped spike causes, so every spike-flipping neighbour would look far away and weigh
  nothing. The distance used here compares the free (reset-removed) waveforms: a perturbation delta
  at step t decays as delta*a_mem^tau in the membrane, so
      D(P, P + delta e_t) = |delta| * sqrt(sum_{tau=0}^{T-1-t} a_mem^(2 tau)),
  and w_k = exp(-D_k^2 / (2 (sigma*theta)^2)). Perturbations late in the window (which persist for
  fewer steps) count as closer.

Defaults (radius 4 theta, sigma 2 theta, 16 points a side) were chosen on the N-MNIST validation split
(T = 5, seed 0, 10 epochs; benchmarks/seed_rules_tables.py): with radius 1 theta most output neurons
start further than the radius from their threshold, no neighbour can make them fire, their finite
differences are all 0 and training stalls (21% accuracy), the "dead neuron" failure; a neighbourhood
a few thresholds wide reaches them.

Cost: h needs only P - theta and a per-step table, a few element-wise passes and one gather over
[T, B, N]; a batch costs the same BPTT plus that (measured: 1.5-2.5x BPTT, benchmarks/seed_rules.py).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from edge import bptt
from edge.errors import SnnEdgeError
from edge.losses import compute_loss
from edge.rules import register_rule
from edge.rules.bptt import BPTTRule


def neighbourhood(radius: float, points: int, sigma: float, theta: float, a_mem: float, n_steps: int):
    """(deltas [K] > 0 ascending, weights [T, K]) of one side of the symmetric neighbourhood.

    The other side is -deltas with the same weights (the distance depends on |delta| only).
    """
    if not (radius > 0 and sigma > 0 and points >= 1):
        raise SnnEdgeError(f"rule bell-surrogate: radius > 0, sigma > 0 and points >= 1 expected; got radius={radius}, "
                           f"sigma={sigma}, points={points}")
    deltas = radius * theta * (np.arange(points, dtype=np.float64) + 0.5) / points
    remaining = n_steps - np.arange(n_steps)  # steps a perturbation at t persists within the window
    kappa = np.sqrt(_geometric_sum(float(a_mem) ** 2, remaining))
    distance = deltas[None, :] * kappa[:, None]
    weights = np.exp(-0.5 * (distance / (sigma * theta)) ** 2)
    return deltas, weights


def _geometric_sum(r: float, n: np.ndarray) -> np.ndarray:
    """sum_{tau < n} r^tau, elementwise over n."""
    n = np.asarray(n, dtype=np.float64)
    if abs(1.0 - r) < 1e-12:
        return n
    return (1.0 - r ** n) / (1.0 - r)


def na_spike_derivative(v_pre: np.ndarray, theta, a_mem, radius: float = 4.0, points: int = 16,
                        sigma: float = 2.0) -> np.ndarray:
    """h [T, B, N]: the weighted average of spike finite differences over the neighbourhood of P[t].

    A neighbour at +-delta flips the spike iff it crosses the threshold: delta > theta - P (P not
    firing) or -delta <= theta - P (P firing). Either way ds/delta = 1/delta > 0, so
    h = sum over the neighbours with delta past |P - theta| of w/delta, over the sum of all 2K weights.
    """
    theta = float(theta)
    T = v_pre.shape[0]
    deltas, weights = neighbourhood(radius, points, sigma, theta, float(a_mem), T)
    # tail[t, j] = sum_{k >= j} w[t, k] / delta_k, with tail[t, K] = 0 (no neighbour reaches that far).
    per = weights / deltas[None, :]
    tail = np.zeros((T, points + 1))
    tail[:, :points] = np.cumsum(per[:, ::-1], axis=1)[:, ::-1]
    total = 2.0 * weights.sum(axis=1)  # both sides of the neighbourhood
    table = (tail / total[:, None]).astype(v_pre.dtype)
    x = v_pre - theta
    # The grid is uniform, delta_k = step * (k + 1/2), so the first neighbour that reaches the threshold
    # is arithmetic: not firing (x <= 0) flips iff delta_k > -x, firing iff delta_k >= x.
    q = np.abs(x) * (points / (radius * theta)) - 0.5
    j = np.where(x > 0, np.ceil(q), np.floor(q) + 1.0)
    j = np.clip(j, 0, points, out=j).astype(np.intp)
    rows = np.broadcast_to(np.arange(T).reshape((T,) + (1,) * (x.ndim - 1)), x.shape)
    return table[rows, j]


@register_rule
class BellSurrogateRule(BPTTRule):
    name = "bell-surrogate"
    OPTIONS = {
        **BPTTRule.OPTIONS,
        "radius": (float, 4.0, "neighbourhood half-width, in units of the layer threshold"),
        "points": (int, 16, "neighbours on each side of the present potential"),
        "sigma": (float, 2.0, "width of the distance weighting, in units of the layer threshold"),
    }

    def init(self, spec, params, rng) -> None:
        super().init(spec, params, rng)
        neighbourhood(self.options["radius"], self.options["points"], self.options["sigma"], 1.0, 0.5, 1)
        # The finite difference of a flipped spike includes the reset it causes: keep that path.
        self.backward_spec = dataclasses.replace(spec, reset_grad=True)

    def spike_derivative(self, params):
        o = self.options

        def h(layer: int, v_pre: np.ndarray, theta) -> np.ndarray:
            return na_spike_derivative(v_pre, theta, params[layer].a_mem, o["radius"], o["points"], o["sigma"])

        return h

    def gradients(self, params, X, y):
        fwd = bptt.forward(self.spec, params, X, method=self.options["method"])
        bptt.check_finite(fwd, "forward pass")
        loss, d_logits = compute_loss(self.options["loss"], fwd.logits, y, X.shape[0])
        grads = bptt.backward(self.backward_spec, params, fwd, d_logits, self.spike_derivative(params))
        return fwd, loss, grads
