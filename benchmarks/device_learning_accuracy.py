"""What on-device learning buys, per rule, and what the factorised SOLSA traces cost: ONE JSON line.

Scenario (real N-MNIST, 1,000 recordings, stratified 80/20 split, seed 0): a 578-64-10 network trained on
the host (numpy BPTT, 8 epochs) is quantised; then the sensor moves (every frame shifted by `--shift`
downsampled pixels, i.e. 2x that many sensor pixels) and the board adapts its last layer with labels on
the shifted training split (one pass, per-sample semantics of NUMERICS.md §5), for each rule:
none / readout_delta / SOLSA full traces / SOLSA factorised traces. Accuracy is on the shifted validation
split. The integer learning runs in converters/intsim (bit-exact with the device, see tests/firmware),
so the table is the board's; bytes are firmware_py.memory's learning-state figures.
Usage: python benchmarks/device_learning_accuracy.py [--data ../shared/data/nmnist-small/Train] [--shift 2]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from converters import intsim  # noqa: E402
from converters.intmodel import default_learn  # noqa: E402
from converters.quantize import auto_rule_params, quantize  # noqa: E402
from firmware_py import memory  # noqa: E402

DEFAULT_DATA = ROOT / ".." / "shared" / "data" / "nmnist-small" / "Train"


def shift_frames(X: np.ndarray, s: int) -> np.ndarray:
    """Frames [S, T, 2*17*17] moved right by s downsampled pixels (zeros come in from the left)."""
    if s == 0:
        return X
    F = X.reshape(X.shape[0], X.shape[1], 2, 17, 17)
    out = np.zeros_like(F)
    out[..., s:] = F[..., :-s]
    return out.reshape(X.shape)


def adapt(model, X, y):
    """One labelled pass of the model's rule over X [S, T, N] (device semantics); returns the model."""
    m = model.copy()
    ls = intsim.initial_learn_state(m)
    for s in range(X.shape[0]):
        fresh = intsim.initial_learn_state(m)
        fresh.lanes, fresh.nsat = ls.lanes, ls.nsat
        ls = fresh
        states = intsim.initial_state(m, 1)
        for t in range(X.shape[1]):
            _, states, ls, _ = intsim.learn_step(m, X[s, t], states, ls, int(y[s]))
    return m


def accuracy(model, X, y) -> float:
    res = intsim.run(model, np.ascontiguousarray(X.transpose(1, 0, 2)))
    return float((res.predictions == y).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--shift", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=8)
    args = ap.parse_args()
    from edge.data import NMNIST_SPEC, load_frames, split_stratified
    from edge.model import load_checkpoint
    from host_tools.cli import main as cli

    X, y, _ = load_frames(args.data, NMNIST_SPEC, progress=False)
    tr, va = split_stratified(y, 0.2, 0)
    tmp = Path(tempfile.mkdtemp(prefix="snn-acc-"))
    ckpt = tmp / "m.ckpt"
    cli(["train", "--data", args.data, "--arch", "578-64-10", "--epochs", str(args.epochs), "--no-progress",
         "--out", str(ckpt)])
    spec, params, _ = load_checkpoint(ckpt)
    calib = np.ascontiguousarray(X[tr[:200]].transpose(1, 0, 2))
    base = quantize(spec, params, calib)
    Xs = shift_frames(X, args.shift)
    out = {"arch": "578-64-10", "shift_sensor_px": 2 * args.shift, "train": int(len(tr)), "val": int(len(va)),
           "acc_int_unshifted": round(accuracy(base, X[va], y[va]), 4),
           "acc_int_shifted_no_learning": round(accuracy(base, Xs[va], y[va]), 4)}
    dims = [(L.n_in, L.n_out, L.per_input) for L in base.layers]
    # the learning-rate shift is swept (lr = 2**-lr_s): the default of converters.intmodel.default_learn
    # first, then smaller rates; every value is reported (picking the best on val would be optimistic)
    sweeps = {"readout_delta": (6, 8, 10, 12), "solsa": (12, 14, 16, 18)}
    for name, rule, fact in (("readout_delta", "readout_delta", None), ("solsa_full", "solsa", 0),
                             ("solsa_factorised", "solsa", 1)):
        for lr_s in sweeps[rule]:
            m = base.copy()
            m.learn = default_learn(rule)
            if fact is not None:
                m.learn.params["factorised"] = fact
            if rule == "readout_delta":
                m.learn.params["k_update"] = NMNIST_SPEC.n_steps
            m.learn.params["lr_s"] = lr_s
            auto_rule_params(m)
            adapted = adapt(m, Xs[tr], y[tr])
            out[f"acc_shifted_after_{name}_lr_s{lr_s}"] = round(accuracy(adapted, Xs[va], y[va]), 4)
        out[f"bytes_state_{name}"] = memory.breakdown(dims, rule, m.learn.params, fact)["traces"]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
