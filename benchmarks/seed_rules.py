"""The two seed rules of issue 8, one JSON line per rule, each side by side with its baseline:

  normad: spike XOR with 2 weight layers (epochs to exact target trains), and one trainable layer
          mapping 5 random patterns to random target trains, NormAD (lr 0.03, a_hat 0.6) vs the
          ReSuMe-style rule (lr 0.003, 10-step window): epochs to exact, ratio resume/normad.
  na:     N-MNIST (../shared/data/nmnist-small, T = 5, 10 epochs, seed 0) NA (the authors' rule on its
          hard-reset PSC neuron) vs surrogate BPTT (and the bell-surrogate rule) on 578-128-10 networks:
          test accuracy (protocol split, best-validation epoch), validation accuracy and the seconds ratio
          na/bptt.

Usage: python benchmarks/seed_rules.py [--data PATH] [--epochs 10]
The full tables (3 seeds, T = 5 and 30, curves) come from benchmarks/seed_rules_tables.py.
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


sys.path.insert(0, str(Path(__file__).resolve().parent))
import seed_rules_tables as tables  # noqa: E402

from edge.spike_trains import random_mapping_task, xor_task  # noqa: E402


def normad_line(epochs: int = 400) -> dict:
    X, S, _ = xor_task(seed=0)
    spec, params, rng = tables.spike_task_network((X.shape[2], 20, 1), 0.5, 0.8, 0, (0.05, 0.1), (0.3, 0.3))
    t0 = time.perf_counter()
    xor_epochs, _, xor_learned = tables.train_spike_trains("normad", spec, params, rng, X, S, epochs, tables.XOR_LR,
                                                           tables.XOR_HIDDEN_LR_SCALE, anneal=tables.ANNEAL)
    xor_seconds = time.perf_counter() - t0
    X, S = random_mapping_task(n_patterns=5, n_in=100, n_out=1, n_steps=100, rate=0.02, n_target_spikes=4,
                               min_isi=10, t_min=10, seed=0)
    single = {}
    for rule_name, lr in (("normad", 0.03), ("resume", 0.003)):
        spec, params, rng = tables.spike_task_network((100, 1), 0.8, 0.9, 100, (0.0,), (0.1,))
        t0 = time.perf_counter()
        conv, curve, learned = tables.train_spike_trains(rule_name, spec, params, rng, X, S, epochs, lr, a_hat=0.6,
                                                         resume_tau=10.0)
        single[rule_name] = dict(epochs=conv, learned=learned, final_van_rossum=curve[-1],
                                 seconds=time.perf_counter() - t0)
    n_ep, r_ep = single["normad"]["epochs"], single["resume"]["epochs"]
    return {"rule": "normad", "xor_epochs_to_exact": xor_epochs, "xor_fraction_learned": xor_learned,
            "xor_seconds": round(xor_seconds, 2), "budget_epochs": epochs,
            "single_layer_normad_epochs": n_ep, "single_layer_resume_epochs": r_ep,
            "single_layer_resume_fraction_learned": single["resume"]["learned"],
            "single_layer_resume_final_van_rossum": round(single["resume"]["final_van_rossum"], 4),
            "epochs_ratio_resume_over_normad": (None if n_ep is None else
                                                 (r_ep / n_ep if r_ep is not None else f">{epochs / n_ep:.1f}"))}


def na_line(data: str, epochs: int) -> dict:
    if not Path(data).is_dir():
        return {"rule": "na", "skipped": f"N-MNIST not found at {data}"}
    runs = {r["method"]: r for _, r in tables.nmnist_runs(data, [5], [0], epochs)}
    return {"rule": "na", "data": "nmnist-small", "T": 5, "epochs": epochs, "seed": 0,
            "split": "edge.data.split_three_way", "n_test": runs["na"]["n_test"],
            "na_test_acc": round(runs["na"]["test_acc"], 4), "bptt_test_acc": round(runs["bptt"]["test_acc"], 4),
            "bptt_reset_test_acc": round(runs["bptt+reset"]["test_acc"], 4),
            "na_best_val_acc": round(runs["na"]["best_val_acc"], 4),
            "bptt_best_val_acc": round(runs["bptt"]["best_val_acc"], 4),
            "bptt_reset_best_val_acc": round(runs["bptt+reset"]["best_val_acc"], 4),
            "bell_surrogate_best_val_acc": round(runs["bell-surrogate"]["best_val_acc"], 4),
            "na_seconds": round(runs["na"]["seconds"], 2), "bptt_seconds": round(runs["bptt"]["seconds"], 2),
            "seconds_ratio_na_over_bptt": round(runs["na"]["seconds"] / runs["bptt"]["seconds"], 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(tables.DEFAULT_DATA))
    ap.add_argument("--epochs", type=int, default=10, help="N-MNIST epochs for the NA line")
    args = ap.parse_args()
    print(json.dumps(normad_line()), flush=True)
    print(json.dumps(na_line(args.data, args.epochs)), flush=True)


if __name__ == "__main__":
    main()
