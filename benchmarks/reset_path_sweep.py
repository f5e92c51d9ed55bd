"""Does the reset-path term widen the range of learning rates that train? (issue 18, point 5)

The claim under test (Yukun Yang 2020, arXiv 2011.09964, abstract; ../shared/docs/SEEDS.md): surrogate
back-propagation that keeps the temporal dependency the reset introduces between steps is more robust to
the learning rate. Here: surrogate BPTT (edge/bptt.py, fast-sigmoid slope 10) with and without the
reset-path term (NetworkSpec.reset_grad; our neuron resets softly, so the term is -theta * h[t] * dL/dV[t]),
the same network, data, batches and initialisation, over a grid of learning rates (1e-4 .. 1e-1) and several seeds.

    python benchmarks/reset_path_sweep.py [--out runs/reset_path] [--tasks toy,nmnist] [--seeds 0,1,2]

Tasks (each on its own stratified 80/20 train/validation split, edge.data.split_stratified seed 0; the
validation accuracy is what is reported, nothing here is tuned on it):
  toy     the built-in synthetic DVS generator (edge.generator, 10 classes of moving shapes),
          60 recordings per class, T = 30 steps of 10 ms, 578-64-10, 15 epochs
  nmnist  ../shared/data/nmnist-small (1,000 real recordings), T = 30 steps of 10 ms, 578-128-10, 12 epochs
AdamW with a constant learning rate (no schedule, so the rate is the rate), batch 32, cross-entropy on
spike counts. A learning rate "trains" when the seed-mean best validation accuracy reaches 90 % of the best
seed mean of that task (over both variants and all rates); the JSON line gives, per task and variant, the
accuracy per rate, the span of rates that train (in decades), and the seed-paired difference with minus
without per rate (mean, and on how many seeds the term helped / hurt).

Writes --out/results.jsonl (one line per run; runs already there are skipped, so an interrupted command
continues), --out/reset_path_sweep.png (accuracy against learning rate, both curves, one panel per task)
and prints one JSON line.
"""
from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import seed_rules_tables as tables  # noqa: E402  (shared helpers: N-MNIST binning, atomic PNG writes)

from edge.data import BuiltinSource, load_frames, split_stratified  # noqa: E402
from edge.model import NetworkSpec, init_params  # noqa: E402
from edge.rules import make_rule  # noqa: E402
from edge.train import FitConfig, fit  # noqa: E402

LRS = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)
TASKS = {  # name -> (time steps, hidden units, epochs)
    "toy": (30, 64, 15),
    "nmnist": (30, 128, 12),
}
TRAINS_FRACTION = 0.9


def task_data(task: str, data: str):
    T = TASKS[task][0]
    bins = tables.nmnist_bin_spec(T)
    source = BuiltinSource(n_per_class=60, seed=0) if task == "toy" else data
    X, y, _ = load_frames(source, bins, progress=False)
    tr, va = split_stratified(y, 0.2, seed=0)
    return bins, (X[tr], y[tr]), (X[va], y[va])


def run(task: str, bins, train, val, lr: float, seed: int, reset: bool) -> dict:
    _, hidden, epochs = TASKS[task]
    spec = NetworkSpec(sizes=(bins.n_inputs, hidden, 10), reset_grad=reset, binning=bins.as_tuple())
    params = init_params(spec, np.random.default_rng(seed))
    rule = make_rule("bptt", lr=lr)
    t0 = time.perf_counter()
    try:
        res = fit(rule, spec, params, train, val, FitConfig(epochs=epochs, batch_size=32, seed=seed,
                                                             lr_schedule="constant", progress=False))
        best, last, curve, failed = res.best_val_acc, res.history[-1]["val_acc"], [h["val_acc"] for h in res.history], None
    except Exception as exc:  # a diverging run (NaN membranes) is a run that did not train: record it as such
        best, last, curve, failed = 0.0, 0.0, [], str(exc)
    return dict(task=task, lr=lr, seed=seed, reset=reset, T=bins.n_steps, hidden=hidden, epochs=epochs,
                n_train=len(train[1]), n_val=len(val[1]), best_val_acc=best, last_val_acc=last, val_acc=curve,
                failed=failed, seconds=round(time.perf_counter() - t0, 2))


def summarise(results: list[dict]) -> dict:
    out = {}
    for task in sorted({r["task"] for r in results}):
        rs = [r for r in results if r["task"] == task]
        lrs = sorted({r["lr"] for r in rs})
        mean = {v: {lr: float(np.mean([r["best_val_acc"] for r in rs if r["lr"] == lr and r["reset"] == v]
                                      or [np.nan])) for lr in lrs} for v in (False, True)}
        top = max(a for m in mean.values() for a in m.values() if not math.isnan(a))
        summary = {"T": rs[0]["T"], "hidden": rs[0]["hidden"], "epochs": rs[0]["epochs"],
                   "n_train": rs[0]["n_train"], "n_val": rs[0]["n_val"],
                   "seeds": sorted({r["seed"] for r in rs}), "trains_threshold": round(TRAINS_FRACTION * top, 4)}
        for v, name in ((False, "without_reset_path"), (True, "with_reset_path")):
            ok = [lr for lr in lrs if mean[v][lr] >= TRAINS_FRACTION * top]
            summary[name] = {
                "best_val_acc_by_lr": {f"{lr:g}": round(mean[v][lr], 4) for lr in lrs},
                "lrs_that_train": [f"{lr:g}" for lr in ok],
                "decades_that_train": round(math.log10(max(ok) / min(ok)), 2) if ok else None,
                "failed_runs": sum(1 for r in rs if r["reset"] == v and r["failed"]),
            }
        # Paired by seed (same initialisation and batches): with minus without, per learning rate.
        paired = {}
        for lr in lrs:
            acc = {(r["seed"], r["reset"]): r["best_val_acc"] for r in rs if r["lr"] == lr}
            diffs = [acc[s, True] - acc[s, False] for s in {k[0] for k in acc} if (s, True) in acc and (s, False) in acc]
            if diffs:
                paired[f"{lr:g}"] = {"mean": round(float(np.mean(diffs)), 4), "seeds_better": sum(d > 0 for d in diffs),
                                     "seeds_worse": sum(d < 0 for d in diffs)}
        summary["with_minus_without_by_lr"] = paired
        out[task] = summary
    return out


def plot(results: list[dict], path: Path) -> None:
    plt = tables._plt()
    task_names = sorted({r["task"] for r in results})
    fig, axes = plt.subplots(1, len(task_names), figsize=(5.2 * len(task_names), 3.8), squeeze=False)
    for ax, task in zip(axes[0], task_names):
        rs = [r for r in results if r["task"] == task]
        for i, (v, label) in enumerate(((False, "without reset path"), (True, "with reset path"))):
            lrs = sorted({r["lr"] for r in rs if r["reset"] == v})
            acc = [[r["best_val_acc"] for r in rs if r["reset"] == v and r["lr"] == lr] for lr in lrs]
            ax.errorbar(lrs, [np.mean(a) for a in acc], yerr=[np.std(a) for a in acc], marker="o", capsize=3,
                        color=f"C{i}", label=f"{label} ({len(acc[0]) if acc else 0} seeds)")
        r0 = rs[0]
        ax.set_xscale("log")
        ax.set_ylim(0, 1)
        ax.set_xlabel("learning rate (AdamW, constant)")
        ax.set_ylabel("best validation accuracy, seed mean ± sd")
        ax.set_title(f"{task}: T = {r0['T']}, {r0['hidden']} hidden, {r0['epochs']} epochs")
        ax.legend(fontsize=8)
    tables._save_fig(plt, fig, path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/reset_path", help="output folder (runs/ is git-ignored)")
    ap.add_argument("--tasks", default="toy,nmnist")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--lrs", default=",".join(f"{lr:g}" for lr in LRS))
    ap.add_argument("--data", default=str(tables.DEFAULT_DATA))
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = out / "results.jsonl"
    done = {}
    if log.exists():
        for line in log.read_text().splitlines():
            if line.strip():
                rec = json.loads(line)
                done[rec["key"]] = rec
    seeds = [int(s) for s in args.seeds.split(",")]
    lrs = [float(v) for v in args.lrs.split(",")]
    for task in args.tasks.split(","):
        if task not in TASKS:
            raise SystemExit(f"--tasks: expected names from {sorted(TASKS)}, got {task!r}")
        if task == "nmnist" and not Path(args.data).is_dir():
            print(json.dumps({"task": task, "skipped": f"N-MNIST not found at {args.data}"}), file=sys.stderr)
            continue
        bins, train, val = task_data(task, args.data)
        for seed in seeds:
            for lr in lrs:
                for reset in (False, True):
                    key = f"{task}/{lr:g}/{seed}/{'reset' if reset else 'detached'}"
                    if key in done:
                        continue
                    rec = run(task, bins, train, val, lr, seed, reset)
                    rec["key"] = key
                    done[key] = rec
                    with open(log, "a") as fh:
                        fh.write(json.dumps(rec) + "\n")
                    print(key, rec["best_val_acc"], rec["seconds"], file=sys.stderr, flush=True)
    results = [r for r in done.values() if r["task"] in args.tasks.split(",")]
    if results:
        plot(results, out / "reset_path_sweep.png")
    print(json.dumps({"benchmark": "reset_path_sweep", "trains_fraction": TRAINS_FRACTION,
                      "png": str(out / "reset_path_sweep.png"), **summarise(results)}), flush=True)


if __name__ == "__main__":
    main()
