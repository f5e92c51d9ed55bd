"""SOLSA's enhancements one at a time, and DECOLLE as the established non-BPTT online baseline (issue 18).

    python benchmarks/solsa_ablations.py [--epochs 3] [--seeds 0,1,2] [--hidden 128] [--out FILE.md]

Prints a markdown table on stderr (and into --out) and ONE JSON line on stdout. Data: ../shared/data/
nmnist-small through the protocol split (edge.data.split_three_way: 602 train / 199 validation / 199
test, stratified, fixed); network 578-H-10, leaky (membrane) readout, T = 30, batch 16, Adam with
the cosine schedule. Short runs: --epochs epochs per run (3 by default: far from converged, so the
numbers compare variants at a small budget, they are not final accuracies). Each run keeps its
best-validation epoch; the table reports its TEST accuracy as the seed mean with a 95 % interval
(edge.metrics.accuracy_interval95) and the number of seeds. Choices made on validation only: the
early-stop margin (EARLY_STOP_MARGINS) and DECOLLE's learning rate (DECOLLE_LRS), seed 0.
Memory: edge.memory_meter's learning state for one stream at T = 30 (tests/edge/test_solsa.py and
test_decolle.py check it equals the arrays the rules allocate).

Variants (SOLSA's base: scheduled update every k = 10 steps, learned synaptic time constants, the
reset path in the traces, early stop off; each row changes one thing):
  solsa                 base
  solsa early stop      a sample stops learning once its label leads the running readout by a margin
  solsa k=1 / k=30      scheduled update every step / once per window (T = 30)
  solsa fixed tau       synaptic decays fixed (no adaptive synapse filter)
  solsa no reset path   factorised traces, the reset not differentiated
  decolle               edge/rules/decolle.py (Kaiser, Mostafa & Neftci 2020)
  bptt                  surrogate-gradient BPTT on the same network (memory grows with T)
"""
from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edge import memory_meter  # noqa: E402
from edge.data import NMNIST_SPEC, load_frames, split_three_way  # noqa: E402
from edge.metrics import accuracy, accuracy_interval95  # noqa: E402
from edge.model import NetworkSpec, init_params  # noqa: E402
from edge.rules import make_rule  # noqa: E402
from edge.train import FitConfig, fit, predict_logits  # noqa: E402

NMNIST = REPO / ".." / "shared" / "data" / "nmnist-small"
EARLY_STOP_MARGINS = (5.0, 20.0)   # membrane units of the accumulated readout
DECOLLE_LRS = (1e-3, 3e-3)
BASE_NET = {"readout": "membrane", "reset_grad": True, "learn_syn_decay": True}
BASE_OPTIONS = {"optimizer": "adam", "k_update": 10, "early_stop": 0.0}

# name -> (rule, lr, options, network flags)
VARIANTS = {
    "solsa": ("solsa", 1e-3, {}, {}),
    "solsa early stop": ("solsa", 1e-3, {"early_stop": None}, {}),   # margin picked on validation
    "solsa k=1": ("solsa", 1e-3, {"k_update": 1}, {}),
    "solsa k=30": ("solsa", 1e-3, {"k_update": 30}, {}),
    "solsa fixed tau": ("solsa", 1e-3, {}, {"learn_syn_decay": False}),
    "solsa no reset path": ("solsa", 1e-3, {}, {"reset_grad": False}),
    "decolle": ("decolle", None, {}, {"reset_grad": False, "learn_syn_decay": False}),  # lr picked on validation
    "bptt": ("bptt", 2e-3, {}, {"reset_grad": False, "learn_syn_decay": False}),
}


def learning_state_bytes(rule: str, spec: NetworkSpec, T: int) -> int:
    layers = list(zip(spec.sizes[:-1], spec.sizes[1:]))
    if rule == "solsa":
        return sum(memory_meter.solsa_bytes(a, b, T, spec.reset_grad, spec.learn_syn_decay).total for a, b in layers)
    if rule == "decolle":
        return sum(memory_meter.decolle_bytes(a, b, T, spec.n_classes, i < len(layers) - 1).total
                   for i, (a, b) in enumerate(layers))
    return sum(memory_meter.bptt_bytes(a, b, T, spec.learn_syn_decay).total for a, b in layers)


def run(rule_name, lr, options, net, data, split, hidden, epochs, seed):
    X, y = data
    spec = NetworkSpec(sizes=(X.shape[2], hidden, int(y.max()) + 1), **{**BASE_NET, **net})
    params = init_params(spec, np.random.default_rng(seed))
    opts = {**BASE_OPTIONS, **options} if rule_name == "solsa" else {**{k: v for k, v in options.items()}}
    if rule_name == "decolle":
        opts.setdefault("optimizer", "adam")
    rule = make_rule(rule_name, lr=lr, **opts)
    t0 = time.perf_counter()
    res = fit(rule, spec, params, (X[split.train], y[split.train]), (X[split.val], y[split.val]),
              FitConfig(epochs=epochs, batch_size=16, seed=seed, progress=False))
    seconds = time.perf_counter() - t0
    test_acc = accuracy(predict_logits(rule, res.params, X[split.test]), y[split.test])
    return {"rule": rule_name, "lr": lr, "options": opts, "seed": seed, "best_val_acc": res.best_val_acc,
            "test_acc": test_acc, "seconds": round(seconds, 1),
            "learning_state_bytes": learning_state_bytes(rule_name, spec, X.shape[1]),
            "samples_per_s": round(len(split.train) * len(res.history) / seconds, 1)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(NMNIST))
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--out", default=None, help="also write the markdown table here")
    args = ap.parse_args(argv)
    if not Path(args.data).is_dir():
        print(json.dumps({"benchmark": "solsa_ablations", "skipped": f"N-MNIST not found at {args.data}"}))
        return 0
    X, y, names = load_frames(args.data, NMNIST_SPEC, progress=False)
    split = split_three_way(y, names)
    seeds = [int(s) for s in args.seeds.split(",")]
    rows, runs = [], []
    for name in args.variants.split(","):
        rule_name, lr, options, net = VARIANTS[name]
        # a setting left open (None) is picked on the validation split of seed 0, then every seed runs it
        if rule_name == "decolle" and lr is None:
            tries = [(run(rule_name, v, options, net, (X, y), split, args.hidden, args.epochs, seeds[0]), v)
                     for v in DECOLLE_LRS]
            lr = max(tries, key=lambda r: r[0]["best_val_acc"])[1]
            runs += [dict(r, variant=name, tuning=True) for r, _ in tries]
        if options.get("early_stop", 0.0) is None:
            tries = [(run(rule_name, lr, {**options, "early_stop": m}, net, (X, y), split, args.hidden, args.epochs,
                          seeds[0]), m) for m in EARLY_STOP_MARGINS]
            options = {**options, "early_stop": max(tries, key=lambda r: r[0]["best_val_acc"])[1]}
            runs += [dict(r, variant=name, tuning=True) for r, _ in tries]
        per_seed = [run(rule_name, lr, options, net, (X, y), split, args.hidden, args.epochs, s) for s in seeds]
        runs += [dict(r, variant=name) for r in per_seed]
        ci = accuracy_interval95([r["test_acc"] for r in per_seed], len(split.test))
        rows.append({"variant": name, "lr": lr, "options": per_seed[0]["options"],
                     "test_acc": round(ci.mean, 4), "ci95": [round(ci.low, 4), round(ci.high, 4)],
                     "n_seeds": ci.n_seeds, "best_val_acc": round(float(np.mean([r["best_val_acc"] for r in per_seed])), 4),
                     "learning_state_bytes": per_seed[0]["learning_state_bytes"],
                     "samples_per_s": round(float(np.mean([r["samples_per_s"] for r in per_seed])), 1)})
        print(f"{name}: test {ci.text()}", file=sys.stderr, flush=True)
    lines = [f"SOLSA ablations and DECOLLE, nmnist-small protocol split {split.sizes()}, 578-{args.hidden}-10, "
             f"T = 30, {args.epochs} epochs per run, seeds {args.seeds}", "",
             "| variant | lr | TEST acc [95 % CI] (n seeds) | val acc (best, mean) | learning state (KiB) | "
             "train samples/s |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['variant']} | {r['lr']:g} | {r['test_acc']:.3f} [{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}] "
                     f"({r['n_seeds']}) | {r['best_val_acc']:.3f} | {r['learning_state_bytes'] / 1024:.1f} | "
                     f"{r['samples_per_s']:.1f} |")
    table = "\n".join(lines) + "\n"
    print(table, file=sys.stderr)
    if args.out:
        Path(args.out).write_text(table + "\nRuns (JSON lines):\n\n" + "\n".join(json.dumps(r) for r in runs) + "\n")
    print(json.dumps({"benchmark": "solsa_ablations", "split": split.sizes(), "epochs": args.epochs,
                      "seeds": seeds, "hidden": args.hidden, "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
