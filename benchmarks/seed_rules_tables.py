"""One command for the seed-rule tables and curves (issue 8: multi-layer NormAD and NA):

    python benchmarks/seed_rules_tables.py --out runs/seed_rules [--part all|normad|nmnist]

writes into --out:
  results.jsonl        one JSON line per run (the numbers behind the tables); runs already there are
                       skipped, so an interrupted command continues where it stopped
  tables.md            NormAD: spike XOR (2 weight layers), random input -> random target spike trains
                       (3 weight layers: fraction learned, epochs to convergence), NormAD vs a ReSuMe-
                       style rule side by side (1 weight layer, epochs to convergence);
                       N-MNIST: NA (the authors', edge/rules/na.py, on its hard-reset PSC neuron), the
                       bell-surrogate rule, surrogate BPTT without / with the reset-path term, T = 5 and 30,
                       same network and budget, per seed: best/last validation accuracy and seconds
  normad_van_rossum.png   mean van Rossum distance per epoch (XOR, random mapping, NormAD vs ReSuMe)
  nmnist_curves.png       validation accuracy per epoch, NA vs BPTT, T = 5 and T = 30

Encodings of the spike-time tasks: edge/spike_trains.py (module doc). N-MNIST: ../shared/data/
nmnist-small via edge.data.load_frames, T = 30 with the default 10 ms bins (edge.data.NMNIST_SPEC),
T = 5 with 60 ms bins (the same 300 ms); the protocol split edge.data.split_three_way (600 train /
200 validation / 200 test, stratified, fixed): each run keeps its best-validation epoch, and the
tables report that model's TEST accuracy as the seed mean with a 95 % interval (edge.metrics.
accuracy_interval95) and the number of seeds. Network 578-128-10, spiking readout, cross-entropy on
counts, AdamW lr 2e-3 cosine, batch 32 (the snn-edge train defaults).
"""
from __future__ import annotations

import os

# One BLAS thread per run: on 2 shared cores a multi-threaded BLAS makes these small GEMMs far slower.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from edge import bptt
from edge.model import NetworkSpec, init_params
from edge.rules import make_rule
from edge.spike_trains import random_mapping_task, resume_update, van_rossum_distance, xor_task

DEFAULT_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "nmnist-small"
NMNIST_METHODS = {  # name -> (rule, reset_grad)
    "bptt": ("bptt", False),
    "bptt+reset": ("bptt", True),
    "na": ("na", True),                          # the authors' NA on its own hard-reset PSC neuron
    "bell-surrogate": ("bell-surrogate", True),  # the rule first built as "na" from the abstract
}


# ---------------------------------------------------------------------------------------------
# NormAD spike-time tasks

def spike_task_network(sizes, a_syn, a_mem, seed, mu, sd):
    """A float32 network with W ~ N(mu, sd) per layer: an init under which every layer fires."""
    spec = NetworkSpec(sizes=sizes, a_syn=a_syn, a_mem=a_mem, theta=1.0)
    rng = np.random.default_rng(seed)
    params = init_params(spec, rng)
    for p, m, s in zip(params, mu, sd):
        p.W[:] = rng.normal(m, s, p.W.shape)
    return spec, params, rng


def train_spike_trains(rule_name, spec, params, rng, X, S, epochs, lr, hidden_lr_scale=1.0, a_hat=0.0,
                       vr_tau=5.0, resume_tau=5.0, anneal=0.0, hidden_error="pseudo"):
    """Present the patterns one by one, in a new order each epoch, until every output train is exact.

    rule_name: "normad" (edge.rules.normad) or "resume" (edge.spike_trains.resume_update on the last
    layer only, learning window resume_tau steps). anneal > 0: every rate is lr / (1 + epoch / anneal).
    -> (epochs to convergence or None, van Rossum per epoch (tau vr_tau), final fraction exact).
    """
    normad = make_rule("normad", lr=lr, hidden_lr_scale=hidden_lr_scale, a_hat=a_hat, vr_tau=vr_tau,
                       hidden_error=hidden_error)
    normad.init(spec, params, rng)
    curve, converged = [], None
    for epoch in range(epochs):
        if anneal > 0:
            normad.set_lr(lr / (1.0 + epoch / anneal))
        exact, vr = 0, 0.0
        for k in rng.permutation(len(X)):
            xb, sb = X[k][:, None], S[k][:, None].astype(np.float32)
            if rule_name == "normad":
                m = normad.train_spike_trains(params, xb, sb)
                exact, vr = exact + m["exact"], vr + m["van_rossum"]
            else:
                fwd = bptt.forward(spec, params, xb)
                out = fwd.layer_spikes[-1]
                err = sb - out
                exact += int(np.all(err == 0))
                vr += float(van_rossum_distance(out, sb, vr_tau).mean())
                layer_in = xb if spec.n_layers == 1 else fwd.layer_spikes[-2]
                params[-1].W += (normad.lr * resume_update(layer_in, err, tau=resume_tau)).astype(np.float32)
        curve.append(vr / len(X))
        if exact == len(X):  # nothing changed during a whole epoch: every pattern is exact and stays so
            converged = epoch + 1
            break
    out = bptt.forward(spec, params, np.ascontiguousarray(X.transpose(1, 0, 2))).layer_spikes[-1]
    learned = float(np.all(out == S.transpose(1, 0, 2), axis=(0, 2)).mean())
    return converged, curve, learned


def normad_runs(seeds, quick=False, done=frozenset()):
    """Yield (key, record) for every NormAD/ReSuMe run of the tables not in `done`."""
    ep = 60 if quick else 400
    for seed in seeds:
        X, S, _ = xor_task(seed=seed)
        for variant, hs, hidden_error in hidden_variants(XOR_HIDDEN_LR_SCALE):
            if f"xor/{variant}/{seed}" in done:
                continue
            spec, params, rng = spike_task_network((X.shape[2], 20, 1), 0.5, 0.8, seed, (0.05, 0.1), (0.3, 0.3))
            w0 = [p.W.copy() for p in params]
            t0 = time.perf_counter()
            conv, curve, learned = train_spike_trains("normad", spec, params, rng, X, S, ep, XOR_LR, hs,
                                                      anneal=ANNEAL, hidden_error=hidden_error)
            yield f"xor/{variant}/{seed}", dict(task="xor", rule=variant, seed=seed, layers=2, lr=XOR_LR,
                                                 hidden_lr_scale=hs, anneal=ANNEAL, hidden_error=hidden_error,
                                                 weight_change=_weight_change(params, w0), epochs_to_exact=conv,
                                                 fraction_learned=learned, van_rossum=curve,
                                                 seconds=time.perf_counter() - t0)
        # NormAD vs ReSuMe-style, one trainable layer (the setting of the single-layer comparison).
        X, S = random_mapping_task(n_patterns=5, n_in=100, n_out=1, n_steps=100, rate=0.02, n_target_spikes=4,
                                   min_isi=10, t_min=10, seed=seed)
        # ReSuMe's learning window: tau 5 steps (the synaptic time constant) and 10 (the membrane one).
        for rule_name, lrs, tau in (("normad", (0.01, 0.03, 0.1), None), ("resume", (0.003, 0.01, 0.03), 5.0),
                                    ("resume", (0.001, 0.003, 0.01), 10.0)):
            for lr in lrs:
                key = f"single/{rule_name}{'-tau10' if tau == 10.0 else ''}/{lr}/{seed}"
                if key in done:
                    continue
                spec, params, rng = spike_task_network((100, 1), 0.8, 0.9, seed + 100, (0.0,), (0.1,))
                t0 = time.perf_counter()
                conv, curve, learned = train_spike_trains(rule_name, spec, params, rng, X, S, ep, lr, a_hat=0.6,
                                                          resume_tau=tau or 5.0)
                yield key, dict(task="single-layer mapping", rule=rule_name, lr=lr, seed=seed, layers=1,
                                resume_tau=tau, epochs_to_exact=conv, fraction_learned=learned, van_rossum=curve,
                                seconds=time.perf_counter() - t0)
        # Three weight layers: random input patterns -> random target trains.
        X, S = random_mapping_task(n_patterns=DEEP["patterns"], n_in=DEEP["n_in"], n_out=1, n_steps=DEEP["T"],
                                   rate=DEEP["rate"], n_target_spikes=DEEP["spikes"], min_isi=10, t_min=10, seed=seed)
        for variant, hs, hidden_error in hidden_variants(DEEP["hidden_lr_scale"]):
            if f"deep/{variant}/{seed}" in done:
                continue
            spec, params, rng = spike_task_network((DEEP["n_in"], DEEP["hidden"], DEEP["hidden"], 1), DEEP["a_syn"],
                                                   DEEP["a_mem"], seed + 200, DEEP["mu"], DEEP["sd"])
            w0 = [p.W.copy() for p in params]
            t0 = time.perf_counter()
            conv, curve, learned = train_spike_trains("normad", spec, params, rng, X, S, ep, DEEP["lr"], hs,
                                                      a_hat=DEEP["a_hat"], anneal=ANNEAL, hidden_error=hidden_error)
            yield f"deep/{variant}/{seed}", dict(task="3-layer mapping", rule=variant, seed=seed, layers=3,
                                                 lr=DEEP["lr"], hidden_lr_scale=hs, anneal=ANNEAL,
                                                 hidden_error=hidden_error, weight_change=_weight_change(params, w0),
                                                 epochs_to_exact=conv,
                                                 fraction_learned=learned, van_rossum=curve,
                                                 seconds=time.perf_counter() - t0)


XOR_LR = 0.05
XOR_HIDDEN_LR_SCALE = 0.2
ANNEAL = 50.0  # every NormAD rate is lr / (1 + epoch / 50) on the multi-layer tasks (edge/rules/normad.py, 4.)


def hidden_variants(hidden_lr_scale):
    """(name, hidden rate scale, hidden error) of the multi-layer runs: every layer learning with the pseudo
    hidden error (the rule's default), the first (spike-time) hidden error, and the hidden layers frozen."""
    return (("normad", hidden_lr_scale, "pseudo"), ("normad-spike-time", hidden_lr_scale, "spike_time"),
            ("normad-output-only", 0.0, "pseudo"))


def _weight_change(params, w0) -> list[float]:
    """||W - W0|| / ||W0|| per layer: how much each layer learned."""
    return [round(float(np.linalg.norm(p.W - w) / np.linalg.norm(w)), 4) for p, w in zip(params, w0)]


# The 3-weight-layer task: 100 inputs at 20 Hz (1 ms steps) -> 100 -> 100 -> 1, four target spikes in
# 100 ms per pattern. Init sd per layer chosen so the hidden layers fire at ~3% and ~5% per step.
DEEP = dict(patterns=3, n_in=100, T=100, rate=0.02, spikes=4, hidden=100, a_syn=0.8, a_mem=0.9,
            mu=(0.0, 0.0, 0.0), sd=(0.07, 0.07, 0.02), lr=0.01, hidden_lr_scale=0.3, a_hat=0.6)


# ---------------------------------------------------------------------------------------------
# N-MNIST: NA vs surrogate BPTT

def nmnist_bin_spec(T: int):
    from firmware_py.binning import BinSpec

    return BinSpec(34, 34, dt_us=300_000 // T, n_steps=T, downsample=2)


def nmnist_runs(data, steps, seeds, epochs, done=frozenset()):
    from edge import metrics
    from edge.data import load_frames, split_three_way
    from edge.train import FitConfig, fit, predict_logits

    for T in steps:
        bins = nmnist_bin_spec(T)
        X, y, names = load_frames(data, bins, progress=False)
        split = split_three_way(y, names)
        tr, va, te = split.train, split.val, split.test
        for seed in seeds:
            for method, (rule_name, reset_grad) in NMNIST_METHODS.items():
                key = f"nmnist-3way/T{T}/{method}/{seed}"  # runs of the old two-way split are not reused
                if key in done:
                    continue
                rule = make_rule(rule_name, lr=2e-3)
                spec = rule.adapt_spec(NetworkSpec(sizes=(bins.n_inputs, 128, 10), reset_grad=reset_grad,
                                                   binning=bins.as_tuple()))
                params = init_params(spec, np.random.default_rng(seed))
                cfg = FitConfig(epochs=epochs, batch_size=32, seed=seed, progress=False)
                t0 = time.perf_counter()
                res = fit(rule, spec, params, (X[tr], y[tr]), (X[va], y[va]), cfg)
                test_acc = metrics.accuracy(predict_logits(rule, res.params, X[te]), y[te])
                yield key, dict(task="nmnist", T=T, method=method, seed=seed, epochs=epochs,
                                n_train=len(tr), n_val=len(va), n_test=len(te), test_acc=test_acc,
                                split="edge.data.split_three_way",
                                best_val_acc=res.best_val_acc, last_val_acc=res.history[-1]["val_acc"],
                                val_acc=[h["val_acc"] for h in res.history], seconds=time.perf_counter() - t0)


# ---------------------------------------------------------------------------------------------
# Tables and plots

def _write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save_fig(plt, fig, path: Path) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".png")
    os.close(fd)
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def _fmt_epochs(v):
    return "not in budget" if v is None else str(v)


def _mean_std(values):
    v = np.asarray(values, dtype=float)
    return f"{v.mean():.3f} ± {v.std():.3f}" if len(v) > 1 else f"{v.mean():.3f}"


def _label(r: dict) -> str:
    if r["rule"] == "resume":  # runs before the tau field existed used the 5-step window
        return f"resume (window {r.get('resume_tau') or 5.0:g} steps)"
    return r["rule"]


def tables(results: dict) -> str:
    rows = list(results.values())
    out = ["# Seed rules: NormAD and NA (issue 8)", ""]
    spike = [r for r in rows if r["task"] != "nmnist"]
    if spike:
        out += ["## NormAD spike-time tasks (epochs to exact target trains; budget in results.jsonl)", "",
                "| task | rule | lr | hidden lr scale | seed | weight layers | epochs to exact | fraction learned | "
                "last-epoch van Rossum | relative weight change per layer | seconds |",
                "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in spike:
            lr = r.get("lr", {"xor": XOR_LR, "3-layer mapping": DEEP["lr"]}.get(r["task"], ""))
            out.append(f"| {r['task']} | {_label(r)} | {lr} | {r.get('hidden_lr_scale', '')} | "
                       f"{r['seed']} | {r['layers']} | {_fmt_epochs(r['epochs_to_exact'])} | "
                       f"{r['fraction_learned']:.2f} | {r['van_rossum'][-1]:.3f} | "
                       f"{', '.join(f'{v:.3f}' for v in r.get('weight_change', []))} | {r['seconds']:.1f} |")
        out.append("")
        out += ["### Summary per task and variant (every learning rate tried)", "",
                "| task | rule | lr | seeds converged | mean epochs to exact (converged) | mean fraction learned |",
                "|---|---|---|---|---|---|"]
        for task in ("xor", "single-layer mapping", "3-layer mapping"):
            for label, lr in sorted({(_label(r), r.get("lr")) for r in spike if r["task"] == task}, key=str):
                rs = [r for r in spike if r["task"] == task and _label(r) == label and r.get("lr") == lr]
                ok = [r["epochs_to_exact"] for r in rs if r["epochs_to_exact"] is not None]
                lr_text = lr if lr is not None else {"xor": XOR_LR, "3-layer mapping": DEEP["lr"]}.get(task, "")
                out.append(f"| {task} | {label} | {lr_text} | {len(ok)}/{len(rs)} | "
                           f"{np.mean(ok) if ok else float('nan'):.1f} | "
                           f"{np.mean([r['fraction_learned'] for r in rs]):.2f} |")
        out.append("")
        single = [r for r in spike if r["task"] == "single-layer mapping"]
        if single:
            out += ["### NormAD vs ReSuMe-style, best learning rate per rule", "",
                    "(mean epochs to exact over the seeds that converged)", "",
                    "| rule | best lr | converged runs | mean epochs to exact |", "|---|---|---|---|"]
            for label in sorted({_label(r) for r in single}):
                best = None
                for lr in sorted({r["lr"] for r in single if _label(r) == label}):
                    rs = [r for r in single if _label(r) == label and r["lr"] == lr]
                    ok = [r["epochs_to_exact"] for r in rs if r["epochs_to_exact"] is not None]
                    score = (len(ok), -np.mean(ok) if ok else 0.0)
                    if best is None or score > best[0]:
                        best = (score, lr, len(ok), len(rs), np.mean(ok) if ok else float("nan"))
                if best:
                    out.append(f"| {label} | {best[1]} | {best[2]}/{best[3]} | {best[4]:.1f} |")
            out.append("")
    nm = [r for r in rows if r["task"] == "nmnist"]
    if nm:
        from edge.metrics import accuracy_interval95

        nm = [r for r in nm if "test_acc" in r]  # runs of the old two-way split have no test accuracy
        out += [f"## N-MNIST (nmnist-small, {nm[0].get('n_train', '?') if nm else '?'} train / "
                f"{nm[0].get('n_val', '?') if nm else '?'} validation / {nm[0].get('n_test', '?') if nm else '?'} "
                "test, edge.data.split_three_way): NA vs surrogate BPTT", "",
                "Test accuracy of each run's best-validation epoch: seed mean [95 % interval] (n = seeds).", "",
                "| T | method | seeds | epochs | TEST acc [95 % CI] (n) | best val acc | seconds per run |",
                "|---|---|---|---|---|---|---|"]
        for T in sorted({r["T"] for r in nm}):
            for method in NMNIST_METHODS:
                rs = [r for r in nm if r["T"] == T and r["method"] == method]
                if rs:
                    ci = accuracy_interval95([r["test_acc"] for r in rs], rs[0]["n_test"])
                    out.append(f"| {T} | {method} | {','.join(str(r['seed']) for r in rs)} | {rs[0]['epochs']} | "
                               f"{ci.text()} | {_mean_std([r['best_val_acc'] for r in rs])} | "
                               f"{np.mean([r['seconds'] for r in rs]):.1f} |")
        out.append("")
    return "\n".join(out)


def _plotted_variants(runs: list[dict]) -> list[tuple[str, float | None]]:
    """(label, lr) pairs to draw: every variant, but only the best learning rate of each rule."""
    best: dict[str, tuple] = {}
    for label, lr in sorted({(_label(r), r.get("lr")) for r in runs}, key=str):
        rs = [r for r in runs if _label(r) == label and r.get("lr") == lr]
        ok = [r["epochs_to_exact"] for r in rs if r["epochs_to_exact"] is not None]
        score = (len(ok), -float(np.mean(ok)) if ok else -np.inf, -float(np.mean([r["van_rossum"][-1] for r in rs])))
        if label not in best or score > best[label][0]:
            best[label] = (score, lr)
    return [(label, v[1]) for label, v in sorted(best.items())]


def plots(results: dict, out: Path) -> None:
    rows = list(results.values())
    plt = _plt()
    spike = [r for r in rows if r["task"] != "nmnist"]
    if spike:
        tasks = sorted({r["task"] for r in spike})
        fig, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 3.8), squeeze=False)
        for ax, task in zip(axes[0], tasks):
            runs = [r for r in spike if r["task"] == task]
            for i, (label, lr) in enumerate(_plotted_variants(runs)):
                group = [r for r in runs if _label(r) == label and r.get("lr") == lr]
                n = max(len(r["van_rossum"]) for r in group)
                # A converged run stops: every train is exact and stays so, its distance stays 0.
                curves = np.array([r["van_rossum"] + [0.0] * (n - len(r["van_rossum"])) for r in group])
                ax.plot(np.arange(1, n + 1), curves.mean(axis=0), color=f"C{i}", lw=1,
                        label=f"{label}" + (f" lr={lr}" if lr is not None else "") + f" ({len(group)} seeds)")
            ax.set_title(task)
            ax.set_xlabel("epoch")
            ax.set_ylabel("van Rossum distance (tau 5 steps), seed mean")
            ax.set_xscale("log")
            ax.legend(fontsize=7)
        _save_fig(plt, fig, out / "normad_van_rossum.png")
    nm = [r for r in rows if r["task"] == "nmnist" and "test_acc" in r]  # the protocol split's runs only
    if nm:
        steps = sorted({r["T"] for r in nm})
        fig, axes = plt.subplots(1, len(steps), figsize=(5 * len(steps), 3.8), squeeze=False)
        for ax, T in zip(axes[0], steps):
            for i, method in enumerate(NMNIST_METHODS):
                for r in (r for r in nm if r["T"] == T and r["method"] == method):
                    ax.plot(np.arange(1, len(r["val_acc"]) + 1), r["val_acc"], color=f"C{i}", lw=1,
                            label=method if r["seed"] == min(x["seed"] for x in nm) else None)
            ax.set_title(f"N-MNIST, T = {T}")
            ax.set_xlabel("epoch")
            ax.set_ylabel("validation accuracy")
            ax.legend()
        _save_fig(plt, fig, out / "nmnist_curves.png")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/seed_rules", help="output folder (runs/ is git-ignored)")
    ap.add_argument("--part", default="all", choices=("all", "normad", "nmnist"))
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--steps", default="5,30", help="N-MNIST time steps T")
    ap.add_argument("--epochs", type=int, default=20, help="N-MNIST epochs per run (the shared budget)")
    ap.add_argument("--quick", action="store_true", help="short budgets (smoke run)")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = out / "results.jsonl"
    results: dict = {}
    if log.exists():
        for line in log.read_text().splitlines():
            if line.strip():
                rec = json.loads(line)
                results[rec["key"]] = rec
    seeds = [int(s) for s in args.seeds.split(",")]
    gens = []
    if args.part in ("all", "normad"):
        gens.append(normad_runs(seeds, args.quick, set(results)))
    if args.part in ("all", "nmnist"):
        if not Path(args.data).is_dir():
            print(f"N-MNIST part skipped: {args.data} not found")
        else:
            gens.append(nmnist_runs(args.data, [int(s) for s in args.steps.split(",")], seeds,
                                    3 if args.quick else args.epochs, set(results)))
    for gen in gens:
        for key, rec in gen:
            rec["key"] = key
            results[key] = rec
            with open(log, "a") as fh:
                fh.write(json.dumps(rec) + "\n")
            print(key, {k: v for k, v in rec.items() if k not in ("van_rossum", "val_acc", "key")}, flush=True)
            _write(out / "tables.md", tables(results))
    _write(out / "tables.md", tables(results))
    plots(results, out)
    print(f"wrote {out / 'tables.md'} and the PNGs in {out}")


if __name__ == "__main__":
    main()
