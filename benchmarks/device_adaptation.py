"""On-device adaptation to a changed sensor, on real N-MNIST: ONE JSON line (and a markdown table on stderr).

Protocol (edge.data.split_three_way of the 1,000 recordings: 602 train / 199 validation / 199 test): a
578-64-10 network is trained on the train split on the host (numpy BPTT) and quantised. For each sensor change
(edge.shifts, the same knobs as `snn-edge stream --shift`) the shifted validation recordings are the adaptation
stream (at most 200 labelled samples, one pass, the board's per-sample semantics of NUMERICS.md §5) and the
shifted test recordings, never used for adaptation, are evaluated. Per shift and rule: accuracy on the unshifted
test recordings, shifted before adaptation, shifted after, and the recovered fraction
(after - before) / (unshifted - before).

The integer learning runs in converters/intsim, which is bit-exact with the board's firmware (tests/firmware;
the Cortex-M3 end-to-end test streams real recordings with SOLSA and compares the pulled weights), so these are
the board's numbers computed on the host; `snn-edge stream --shift ... --labels` runs the same adaptation on a
board. The rules are the board's: the last layer only (readout delta, SOLSA with full or factorised traces) and
SOLSA on every layer (NUMERICS.md §10.8: full traces on the last layer, factorised on the hidden one); GEM needs
a probabilistic network and is not run here.
`learning_state_fraction_of_bptt`: the rule's learning-state bytes on the board (firmware_py.memory) over what
BPTT keeps to learn the same layers over one recording (edge.memory_meter.bptt_bytes: T steps of activations and
the gradient accumulators).

    python benchmarks/device_adaptation.py [--shift dx=4 --shift rotation=10 ...] [--epochs 8] [--adapt 200] [--tune]

Without --tune every rule runs at the board's default learning rate; with it, each rule's rate is picked per
sensor change on the train split (never on the validation stream or the test recordings).
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
SHIFTS = ["dx=2", "dx=4", "rotation=10", "gain=0.5", "noise=5,hot=3", "time=1.5",
          "dx=2,rotation=5,gain=0.7,noise=2"]
# (row name, board rule, SOLSA's factorised, SOLSA's learn_all: every layer learns, NUMERICS.md §10.8)
RULES = (("readout_delta", "readout_delta", None, 0), ("solsa_last_full", "solsa", 0, 0),
         ("solsa_last_factorised", "solsa", 1, 0), ("solsa_all", "solsa", 0, 1))
# --tune: the learning-rate shifts tried (lr = 2**-lr_s), per rule; every layer: (lr_s, lrh_s) pairs
LR_GRID = {"readout_delta": (6, 8, 10, 12), "solsa": (12, 14, 16, 18),
           "solsa_all": tuple((a, b) for a in (14, 16, 18) for b in (14, 16, 18, 20))}
# every layer learning: 5 steps between updates keeps the hidden layer's window (5 x (578 + 64) words)
# within 10 % of what BPTT keeps for the same layers (edge.memory_meter)
K_UPDATE_ALL = 5


def rule_model(base, rule: str, fact, lr_s=None, n_steps: int = 30, learn_all: int = 0):
    """The quantised network with the board's `rule` (its defaults, or the learning-rate shift lr_s: an int,
    or with learn_all the pair (lr_s, lrh_s)); the readout delta updates once per sample (k_update = the
    binning's n_steps)."""
    m = base.copy()
    m.learn = default_learn(rule)
    if fact is not None:
        m.learn.params["factorised"] = fact
    if rule == "readout_delta":
        m.learn.params["k_update"] = n_steps
    if learn_all:
        m.learn.params.update(learn_all=1, k_update=K_UPDATE_ALL)
    if isinstance(lr_s, tuple):
        m.learn.params["lr_s"], m.learn.params["lrh_s"] = lr_s
    elif lr_s is not None:
        m.learn.params["lr_s"] = lr_s
    auto_rule_params(m)
    return m


def adapt(model, X, y):
    """One labelled pass of the model's rule over X [S, T, N] (device semantics); returns the model."""
    m = model.copy()
    ls = None
    for s in range(X.shape[0]):
        ls = intsim.sample_start(m, ls)
        states = intsim.initial_state(m, 1)
        for t in range(X.shape[1]):
            _, states, ls, _ = intsim.learn_step(m, X[s, t], states, ls, int(y[s]))
    return m


def accuracy(model, X, y) -> float:
    res = intsim.run(model, np.ascontiguousarray(X.transpose(1, 0, 2)))
    return float((res.predictions == y).mean())


def shifted_frames(recordings: dict, idx, text: str, spec, seed: int) -> np.ndarray:
    """Frames of recordings[k] for k in idx as the changed sensor records them (recording k seeded (seed, k))."""
    from edge.data import frames_of
    from edge.shifts import SensorShift, shift_recording
    change = SensorShift.parse(text)
    return np.stack([frames_of(shift_recording(recordings[k], change, np.random.default_rng([seed, k])), spec)
                     for k in idx])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--shift", action="append", help=f"a sensor change (repeatable; default: {SHIFTS})")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--adapt", type=int, default=200, help="labelled adaptation samples at most")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tune", action="store_true",
                    help="pick each rule's learning-rate shift per sensor change on the train split (adapt on 200 "
                         "shifted train recordings, score on 200 others), never on validation or test")
    ap.add_argument("--tune-samples", type=int, default=200, help="train recordings to adapt on, and to score on")
    args = ap.parse_args()
    from edge.data import NMNIST_SPEC, load_frames, split_three_way
    from edge.events import list_folder_dataset, read_events
    from edge.memory_meter import bptt_bytes
    from edge.model import load_checkpoint
    from host_tools.cli import main as cli

    X, y, names = load_frames(args.data, NMNIST_SPEC, progress=False)
    items = list_folder_dataset(Path(args.data))
    assert [f"{p.parent.name}/{p.name}" for p, _ in items] == names, "recording order differs from the frames'"
    split = split_three_way(y, names)
    # A board meets its samples in the order the world makes them, not sorted by class as the split lists
    # them: an online rule fed one class after another forgets the earlier ones (what this benchmark's first
    # version measured). The stream and the tuning sets are random draws, seeded.
    order = np.random.default_rng(args.seed)
    val = order.permutation(split.val)[:args.adapt]
    k = args.tune_samples
    train = order.permutation(split.train)
    tune_a, tune_e = train[:k], train[k:2 * k]
    # read once, shifted anew for every sensor change
    used = np.concatenate([val, split.test] + ([tune_a, tune_e] if args.tune else []))
    recordings = {int(j): read_events(*items[j]) for j in used}
    tmp = Path(tempfile.mkdtemp(prefix="snn-adapt-"))
    ckpt = tmp / "m.ckpt"
    cli(["train", "--data", args.data, "--arch", "578-64-10", "--epochs", str(args.epochs), "--protocol-split",
         "--no-progress", "--out", str(ckpt)])
    spec, params, _ = load_checkpoint(ckpt)
    base = quantize(spec, params, np.ascontiguousarray(X[split.train[:200]].transpose(1, 0, 2)))
    unshifted = accuracy(base, X[split.test], y[split.test])
    n_in, n_out = base.layers[-1].n_in, base.layers[-1].n_out
    bptt = bptt_bytes(n_in, n_out, NMNIST_SPEC.n_steps).total
    bptt_all = sum(bptt_bytes(L.n_in, L.n_out, NMNIST_SPEC.n_steps).total for L in base.layers)
    rows, state, bptt_of = [], {}, {}
    for text in args.shift or SHIFTS:
        Xa = shifted_frames(recordings, val, text, NMNIST_SPEC, args.seed)
        Xt = shifted_frames(recordings, split.test, text, NMNIST_SPEC, args.seed + 1)
        before = accuracy(base, Xt, y[split.test])
        if args.tune:
            # tuned on the train split only: adapt on k shifted train recordings, score on k others
            Ta = shifted_frames(recordings, tune_a, text, NMNIST_SPEC, args.seed + 2)
            Te = shifted_frames(recordings, tune_e, text, NMNIST_SPEC, args.seed + 3)
        for name, rule, fact, learn_all in RULES:
            lr_s = None
            if args.tune:
                scores = {}
                for v in LR_GRID[name if learn_all else rule]:
                    tuned = adapt(rule_model(base, rule, fact, v, NMNIST_SPEC.n_steps, learn_all), Ta, y[tune_a])
                    scores[v] = accuracy(tuned, Te, y[tune_e])
                lr_s = max(scores, key=lambda v: (scores[v], v))     # ties: the smaller rate
            m = rule_model(base, rule, fact, lr_s, NMNIST_SPEC.n_steps, learn_all)
            after = accuracy(adapt(m, Xa, y[val]), Xt, y[split.test])
            lost = unshifted - before
            rows.append({"shift": text, "rule": name, "acc_unshifted": round(unshifted, 4),
                         "acc_shifted_before": round(before, 4), "acc_shifted_after": round(after, 4),
                         "recovered_fraction": round((after - before) / lost, 3) if lost > 0 else None,
                         "adaptation_samples": int(len(val)), "test_samples": int(len(split.test)),
                         "lr_s": int(m.learn.params["lr_s"]), "lr_s_tuned_on_train": bool(args.tune),
                         "learned_layers": "all" if learn_all else "last"})
            if learn_all:
                rows[-1].update(lrh_s=int(m.learn.params["lrh_s"]), k_update=int(m.learn.params["k_update"]))
            dims = [(L.n_in, L.n_out, L.per_input) for L in m.layers]
            state[name] = memory.breakdown(dims, rule, m.learn.params, fact)["traces"]
            bptt_of[name] = bptt_all if learn_all else bptt
            print(f"| {text} | {name} | {unshifted:.3f} | {before:.3f} | {after:.3f} | "
                  f"{rows[-1]['recovered_fraction']} |", file=sys.stderr, flush=True)
    print(json.dumps({"arch": "578-64-10", "split": split.sizes(),
                      "shifts": rows, "learning_state_bytes": state, "bptt_bytes_same_layers": bptt_of,
                      "learning_state_fraction_of_bptt": {k: round(v / bptt_of[k], 4) for k, v in state.items()}}))


if __name__ == "__main__":
    main()
