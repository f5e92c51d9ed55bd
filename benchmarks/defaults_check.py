"""Do the CLI defaults of each rule generalise? `snn-edge train --rule R` on the protocol split, scored on test.

    python benchmarks/defaults_check.py [--rules bptt,solsa,na,gem] [--seeds 0,1] [--part test|val]
                                        [--data ../shared/data/nmnist-small] [--out-dir runs/defaults_check]
                                        [-- EXTRA TRAIN OPTIONS]

Every run is exactly `snn-edge train --data D --rule R --protocol-split --seed S` with nothing else set (the
defaults under test), plus any options after `--` (how the validation sweep that chose the defaults was run:
`--part val -- --readout membrane`). Training uses the train part of the fixed 60/20/20 split
(edge.data.split_three_way), the best-validation epoch is kept, and that checkpoint is scored on the part
named by --part through `snn-edge eval`'s own code. --part val is for tuning; --part test (the default) is
for measuring the chosen defaults once.

Prints one JSON line: per rule, the mean accuracy on the part with its 95 % interval over seeds
(edge.metrics.accuracy_interval95), the per-seed accuracies and best-validation figures, the seconds, and
the full settings the runs used (the rule's options and the network as saved in the checkpoint).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from edge.metrics import accuracy_interval95
from edge.model import load_checkpoint
from host_tools.cmd_train import _float_logits, train_from_args, train_parser

RULES = ("bptt", "solsa", "na", "gem")


def run_one(rule: str, seed: int, data: str, part: str, out_dir: Path, extra: list[str]) -> dict:
    ckpt = out_dir / f"{rule}_seed{seed}.ckpt"
    argv = ["--data", data, "--rule", rule, "--protocol-split", "--seed", str(seed), "--out", str(ckpt),
            "--no-progress", *extra]
    t0 = time.time()
    fit = train_from_args(train_parser().parse_args(argv), None)
    seconds = time.time() - t0
    eval_args = SimpleNamespace(checkpoint=str(ckpt), data=data, split=part, limit=None, no_progress=True,
                                transform=[], out_dir=str(out_dir))
    logits, y, _, _ = _float_logits(eval_args)
    spec, _, extra_ck = load_checkpoint(ckpt)
    return {"seed": seed, "acc": float((logits.argmax(axis=1) == y).mean()), "n": int(len(y)),
            "best_val_acc": fit.best_val_acc, "best_epoch": fit.best_epoch + 1, "seconds": round(seconds, 1),
            "rule": extra_ck["rule"], "network": {"arch": spec.arch, "readout": spec.readout,
                                                   "a_syn": spec.a_syn, "a_mem": spec.a_mem,
                                                   "neuron": spec.neuron, "reset_grad": spec.reset_grad,
                                                   "learn_syn_decay": spec.learn_syn_decay},
            "train": {k: extra_ck["fit"][k] for k in ("epochs", "batch_size", "lr_schedule")}}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1:]
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rules", default=",".join(RULES))
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--part", default="test", choices=("test", "val"))
    ap.add_argument("--data", default="../shared/data/nmnist-small")
    ap.add_argument("--out-dir", default="runs/defaults_check")
    args = ap.parse_args(argv)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    seeds = [int(s) for s in args.seeds.split(",")]
    result = {"benchmark": "defaults_check", "part": args.part, "extra_options": extra, "rules": {}}
    for rule in args.rules.split(","):
        runs = [run_one(rule, s, args.data, args.part, out_dir, extra) for s in seeds]
        for r in runs:
            print(f"{rule} seed {r['seed']}: {args.part} {r['acc']:.4f} (best val {r['best_val_acc']:.4f} at epoch "
                  f"{r['best_epoch']}, {r['seconds']} s)", file=sys.stderr, flush=True)
        summary = accuracy_interval95([r["acc"] for r in runs], runs[0]["n"])
        result["rules"][rule] = {
            "acc": round(summary.mean, 4), "ci95": [round(summary.low, 4), round(summary.high, 4)],
            "interval": summary.method, "seeds": seeds, "per_seed": [round(r["acc"], 4) for r in runs],
            "best_val_acc": [round(r["best_val_acc"], 4) for r in runs],
            "best_epoch": [r["best_epoch"] for r in runs], "seconds": [r["seconds"] for r in runs],
            "n": runs[0]["n"], "settings": {"rule": runs[0]["rule"], "network": runs[0]["network"],
                                            "train": runs[0]["train"]}}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
