"""Bytes of learning state per layer: SOLSA (full / factorised), GEM and BPTT, as a function of T.

"Learning state" is what a rule keeps, for one input stream (batch 1), beyond the forward state of
the network (input traces, membranes) and its parameters; optimiser moments are left out (the
device runs plain SGD; Adam would add the same 2 x parameters to every rule). Per layer, N_in -> N_out:

BPTT (edge/bptt.py, what its forward pass records for the backward pass, then the gradients):
  window       T * (N_in + 3 N_out)     layer input (or filtered input) + I, P, s for every step
  accumulators N_in N_out (+ N_in)      dL/dW (+ dL/da_syn, per-input decays)
SOLSA (edge/rules/solsa.py): no window, nothing grows with T
  traces       N_in N_out  (full: reset path)  or  N_in  (factorised), + 2 N_in (q, r) for a_syn
  accumulators N_in N_out (+ N_in)      G (+ Ga), applied every k_update steps
DECOLLE (edge/rules/decolle.py): no window, factorised traces, fixed random local readouts
  traces       N_in                      one a_mem-filtered input trace per input
  readout      N_out C (hidden layers)   the fixed random readout R_l (counted with the traces)
  accumulators N_in N_out               G, applied every k_update steps
GEM (edge/rules/gem.py), K compartments, n_basis kernels:
  traces       K (n_basis N_in N_out + 2 N_out) + K    eligibility of W, bias, w_fb; running log-lik
  accumulators n_basis N_in N_out + 2 N_out
Counts are in elements times `itemsize` (4: float32 on the host, int32 on the device).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LayerMemory:
    rule: str
    n_in: int
    n_out: int
    T: int
    window: int        # bytes that grow with T
    traces: int        # bytes of per-stream traces of fixed size
    accumulators: int  # bytes of gradient accumulators

    @property
    def total(self) -> int:
        return self.window + self.traces + self.accumulators


def bptt_bytes(n_in: int, n_out: int, T: int, learn_a: bool = False, itemsize: int = 4) -> LayerMemory:
    return LayerMemory("bptt", n_in, n_out, T, itemsize * T * (n_in + 3 * n_out), 0,
                       itemsize * (n_in * n_out + (n_in if learn_a else 0)))


def solsa_bytes(n_in: int, n_out: int, T: int, full: bool = True, learn_a: bool = True,
                itemsize: int = 4) -> LayerMemory:
    traces = (n_in * n_out if full else n_in) + (2 * n_in if learn_a else 0)
    acc = n_in * n_out + (n_in if learn_a else 0)
    return LayerMemory("solsa-full" if full else "solsa-factorised", n_in, n_out, T, 0,
                       itemsize * traces, itemsize * acc)


def decolle_bytes(n_in: int, n_out: int, T: int, n_classes: int, hidden: bool, itemsize: int = 4) -> LayerMemory:
    """hidden: the layer has a fixed random readout to n_classes (every layer but the last)."""
    return LayerMemory("decolle", n_in, n_out, T, 0, itemsize * (n_in + (n_out * n_classes if hidden else 0)),
                       itemsize * n_in * n_out)


def gem_bytes(n_in: int, n_out: int, T: int, K: int, n_basis: int = 2, itemsize: int = 4) -> LayerMemory:
    per_comp = n_basis * n_in * n_out + 2 * n_out
    return LayerMemory(f"gem-K{K}", n_in, n_out, T, 0, itemsize * (K * per_comp + K),
                       itemsize * (n_basis * n_in * n_out + 2 * n_out))


def network_table(sizes: tuple[int, ...], Ts=(10, 30, 100, 300), K_values=(1, 5, 10), n_basis: int = 2,
                  learn_a: bool = True, itemsize: int = 4) -> list[dict]:
    """Rows {rule, T, bytes per layer, total} for every rule on a network of `sizes`."""
    rows = []
    layers = list(zip(sizes[:-1], sizes[1:]))
    for T in Ts:
        tables = {"bptt": [bptt_bytes(a, b, T, learn_a, itemsize) for a, b in layers],
                  "solsa-full": [solsa_bytes(a, b, T, True, learn_a, itemsize) for a, b in layers],
                  "solsa-factorised": [solsa_bytes(a, b, T, False, learn_a, itemsize) for a, b in layers],
                  "decolle": [decolle_bytes(a, b, T, sizes[-1], i < len(layers) - 1, itemsize)
                              for i, (a, b) in enumerate(layers)]}
        for K in K_values:
            tables[f"gem-K{K}"] = [gem_bytes(a, b, T, K, n_basis, itemsize) for a, b in layers]
        for name, per_layer in tables.items():
            rows.append({"rule": name, "T": T, "layers": [m.total for m in per_layer],
                         "window": sum(m.window for m in per_layer),
                         "total": sum(m.total for m in per_layer)})
    return rows


def markdown(rows: list[dict], sizes: tuple[int, ...]) -> str:
    """A markdown table: one row per rule, one column per T, bytes in KiB (and the BPTT ratio)."""
    Ts = sorted({r["T"] for r in rows})
    rules = list(dict.fromkeys(r["rule"] for r in rows))
    by = {(r["rule"], r["T"]): r for r in rows}
    head = "| rule | " + " | ".join(f"T={T}: KiB (vs BPTT)" for T in Ts) + " |"
    lines = [f"Learning state for one stream, network {'-'.join(map(str, sizes))} (float32):", "",
             head, "|---" * (len(Ts) + 1) + "|"]
    for rule in rules:
        cells = []
        for T in Ts:
            r, b = by[(rule, T)], by[("bptt", T)]
            cells.append(f"{r['total'] / 1024:.1f} ({100.0 * (r['total'] / b['total'] - 1):+.0f}%)")
        lines.append(f"| {rule} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # python -m edge.memory_meter: the table for the default N-MNIST network
    print(markdown(network_table((578, 128, 10)), (578, 128, 10)))
