"""Training throughput and accuracy: the numpy BPTT engine vs snnTorch, same network, same run.

Network: Dense + CubaLIF, 578-128-10 (N-MNIST downsampled 2x) and 2312-128-10 (full resolution),
T = 30 steps of 10 ms, batch 32, Adam with the same cosine schedule, fast-sigmoid surrogate (same
slope), cross-entropy on output spike counts (snnTorch's ce_count_loss), the same initial weights
and the same batch order, on the stratified 80/20 split of the real recordings in
../shared/data/nmnist-small. snnTorch runs `Synaptic` neurons with reset_delay=False (reset in the
same step, gradient through it), which is this engine's CubaLIF with reset_grad=True, on torch with
2 threads, step by step as in its tutorials.

Each framework trains in its own fresh process (spawn), so its peak RSS is its own. Prints ONE JSON
line. `pip install -e .[bench]` (torch's CPU wheel) for the snnTorch side; without it only ours runs.

    python benchmarks/train_throughput.py [--epochs 30] [--variants 578,2312] [--no-snntorch]
"""
from __future__ import annotations

import argparse
import concurrent.futures
import importlib.util
import json
import multiprocessing
import os
import resource
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = (REPO / ".." / "shared" / "data" / "nmnist-small" / "Train").resolve()
sys.path.insert(0, str(REPO))

SETTINGS = {"hidden": 128, "a_syn": 0.5, "a_mem": 0.8, "theta": 1.0, "slope": 10.0, "lr": 2e-3,
            "batch": 32, "steps": 30, "dt_us": 10_000, "seed": 0, "schedule": "cosine"}


def _data(data_dir: str, downsample: int):
    from edge.data import load_frames, split_stratified
    from firmware_py.binning import BinSpec

    spec = BinSpec(34, 34, dt_us=SETTINGS["dt_us"], n_steps=SETTINGS["steps"], downsample=downsample)
    X, y, _ = load_frames(data_dir, spec, progress=False)
    tr, va = split_stratified(y, 0.2, 0)
    return X[tr], y[tr], X[va], y[va]


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _initial(n_in: int):
    import numpy as np

    from edge.model import NetworkSpec, init_params

    spec = NetworkSpec(sizes=(n_in, SETTINGS["hidden"], 10), readout="spikes", a_syn=SETTINGS["a_syn"],
                       a_mem=SETTINGS["a_mem"], theta=SETTINGS["theta"], surrogate="fast_sigmoid",
                       slope=SETTINGS["slope"], reset_grad=True)
    return spec, init_params(spec, np.random.default_rng(SETTINGS["seed"]))


def run_ours(data_dir: str, downsample: int, epochs: int) -> dict:
    import numpy as np

    from edge import metrics
    from edge.optim import scheduled_lr
    from edge.rules.bptt import BPTTRule
    from edge.train import predict_logits

    Xtr, ytr, Xva, yva = _data(data_dir, downsample)
    spec, params = _initial(Xtr.shape[2])
    rule = BPTTRule(lr=SETTINGS["lr"])
    rule.init(spec, params, np.random.default_rng(0))
    B, train_time, cpu_time, seen, accs = SETTINGS["batch"], 0.0, 0.0, 0, []
    for epoch in range(epochs):
        rule.set_lr(scheduled_lr(SETTINGS["lr"], epoch, epochs, SETTINGS["schedule"]))
        order = np.random.default_rng([SETTINGS["seed"], epoch]).permutation(len(Xtr))
        t0, c0 = time.perf_counter(), time.process_time()
        for b in range(0, len(order), B):
            idx = order[b:b + B]
            rule.train_batch(params, np.ascontiguousarray(Xtr[idx].transpose(1, 0, 2)), ytr[idx])
            seen += len(idx)
        train_time += time.perf_counter() - t0
        cpu_time += time.process_time() - c0
        accs.append(metrics.accuracy(predict_logits(rule, params, Xva, B), yva))
    t0 = time.perf_counter()
    predict_logits(rule, params, Xva, B)
    infer = len(Xva) / (time.perf_counter() - t0)
    methods = [r.inputs.method for r in __import__("edge.bptt", fromlist=["forward"]).forward(
        spec, params, np.ascontiguousarray(Xtr[:B].transpose(1, 0, 2))).records]
    return {"train_samples_per_s": seen / train_time, "train_samples_per_cpu_s": seen / cpu_time,
            "infer_samples_per_s": infer,
            "val_acc_final": accs[-1], "val_acc_best": max(accs), "val_acc_per_epoch": accs,
            "peak_rss_mb": _peak_rss_mb(), "kernels": methods}


def run_snntorch(data_dir: str, downsample: int, epochs: int, threads: int) -> dict:
    import numpy as np
    import snntorch as snn
    import snntorch.functional as SF
    import torch
    from snntorch import surrogate

    from edge.optim import scheduled_lr

    torch.set_num_threads(threads)
    Xtr, ytr, Xva, yva = _data(data_dir, downsample)
    spec, params = _initial(Xtr.shape[2])

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            grad = surrogate.fast_sigmoid(slope=SETTINGS["slope"])
            self.fc1 = torch.nn.Linear(spec.sizes[0], spec.sizes[1], bias=False)
            self.lif1 = snn.Synaptic(alpha=SETTINGS["a_syn"], beta=SETTINGS["a_mem"], threshold=SETTINGS["theta"],
                                     spike_grad=grad, reset_delay=False)
            self.fc2 = torch.nn.Linear(spec.sizes[1], spec.sizes[2], bias=False)
            self.lif2 = snn.Synaptic(alpha=SETTINGS["a_syn"], beta=SETTINGS["a_mem"], threshold=SETTINGS["theta"],
                                     spike_grad=grad, reset_delay=False)

        def forward(self, x):  # x [T, B, N]
            syn1, mem1 = self.lif1.reset_mem()
            syn2, mem2 = self.lif2.reset_mem()
            out = []
            for t in range(x.shape[0]):
                spk1, syn1, mem1 = self.lif1(self.fc1(x[t]), syn1, mem1)
                spk2, syn2, mem2 = self.lif2(self.fc2(spk1), syn2, mem2)
                out.append(spk2)
            return torch.stack(out)

    net = Net()
    with torch.no_grad():  # the same initial weights as ours (torch stores W transposed)
        net.fc1.weight.copy_(torch.from_numpy(params[0].W.T.copy()))
        net.fc2.weight.copy_(torch.from_numpy(params[1].W.T.copy()))
    opt = torch.optim.Adam(net.parameters(), lr=SETTINGS["lr"])
    loss_fn = SF.ce_count_loss()
    B, train_time, cpu_time, seen, accs = SETTINGS["batch"], 0.0, 0.0, 0, []

    def evaluate():
        correct = 0
        with torch.no_grad():
            for b in range(0, len(Xva), B):
                x = torch.from_numpy(Xva[b:b + B].transpose(1, 0, 2).astype(np.float32))
                correct += int((net(x).sum(0).argmax(1).numpy() == yva[b:b + B]).sum())
        return correct / len(Xva)

    for epoch in range(epochs):
        for g in opt.param_groups:
            g["lr"] = scheduled_lr(SETTINGS["lr"], epoch, epochs, SETTINGS["schedule"])
        order = np.random.default_rng([SETTINGS["seed"], epoch]).permutation(len(Xtr))
        t0, c0 = time.perf_counter(), time.process_time()
        for b in range(0, len(order), B):
            idx = order[b:b + B]
            x = torch.from_numpy(Xtr[idx].transpose(1, 0, 2).astype(np.float32))
            loss = loss_fn(net(x), torch.from_numpy(ytr[idx]))
            opt.zero_grad()
            loss.backward()
            opt.step()
            seen += len(idx)
        train_time += time.perf_counter() - t0
        cpu_time += time.process_time() - c0
        accs.append(evaluate())
    t0 = time.perf_counter()
    evaluate()
    infer = len(Xva) / (time.perf_counter() - t0)
    return {"train_samples_per_s": seen / train_time, "train_samples_per_cpu_s": seen / cpu_time,
            "infer_samples_per_s": infer,
            "val_acc_final": accs[-1], "val_acc_best": max(accs), "val_acc_per_epoch": accs,
            "peak_rss_mb": _peak_rss_mb(), "versions": {"snntorch": snn.__version__, "torch": torch.__version__},
            "threads": threads}


def kernel_timings(data_dir: str) -> dict:
    """Input-current kernels on real batches: dense GEMM vs event gather-sum, ms per batch."""
    import numpy as np

    from edge.neurons import WindowInput, density

    out = {}
    for downsample in (2, 1):
        Xtr = _data(data_dir, downsample)[0]
        x = np.ascontiguousarray(Xtr[:SETTINGS["batch"]].transpose(1, 0, 2))
        W = np.random.default_rng(0).standard_normal((x.shape[2], SETTINGS["hidden"])).astype(np.float32)
        row = {"density": round(density(x), 4)}
        for method in ("dense", "events"):
            t0 = time.perf_counter()
            for _ in range(20):
                WindowInput(x, np.float32, method).currents(W)
            row[f"{method}_ms"] = round((time.perf_counter() - t0) / 20 * 1000, 3)
        out[str(x.shape[2])] = row
    return out


def _in_fresh_process(fn, *args):
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
        return pool.submit(fn, *args).result()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--variants", default="578,2312", help="input sizes: 578 (2x downsampled), 2312 (full)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads")
    ap.add_argument("--no-snntorch", action="store_true")
    args = ap.parse_args(argv)
    if not Path(args.data).is_dir():
        print(json.dumps({"benchmark": "train_throughput", "error": f"data not found: {args.data}"}))
        return 1
    # find_spec, not import: torch imported here would be loaded again in every spawned child
    have_torch = (not args.no_snntorch and importlib.util.find_spec("torch") is not None
                  and importlib.util.find_spec("snntorch") is not None)
    result = {"benchmark": "train_throughput", "settings": SETTINGS, "epochs": args.epochs,
              "data": str(args.data), "split": "stratified 80/20, seed 0",
              "load_avg_start": round(os.getloadavg()[0], 2)}
    for variant in args.variants.split(","):
        downsample = {"578": 2, "2312": 1}[variant.strip()]
        ours = _in_fresh_process(run_ours, args.data, downsample, args.epochs)
        entry = {"arch": f"{variant}-{SETTINGS['hidden']}-10", "ours": ours}
        if have_torch:
            theirs = _in_fresh_process(run_snntorch, args.data, downsample, args.epochs, args.threads)
            entry["snntorch"] = theirs
            entry["ratio_train"] = round(ours["train_samples_per_s"] / theirs["train_samples_per_s"], 2)
            # per CPU-second: less sensitive to other work on a shared machine
            entry["ratio_train_cpu"] = round(ours["train_samples_per_cpu_s"] / theirs["train_samples_per_cpu_s"], 2)
            entry["ratio_infer"] = round(ours["infer_samples_per_s"] / theirs["infer_samples_per_s"], 2)
        for side in ("ours", "snntorch"):
            if side in entry:
                for k in ("train_samples_per_s", "train_samples_per_cpu_s", "infer_samples_per_s", "peak_rss_mb"):
                    entry[side][k] = round(entry[side][k], 1)
                entry[side]["val_acc_per_epoch"] = [round(a, 3) for a in entry[side]["val_acc_per_epoch"]]
        result[variant] = entry
    if not have_torch:
        result["snntorch"] = "not installed (pip install -e .[bench])"
    result["kernels_ms_per_batch"] = _in_fresh_process(kernel_timings, args.data)
    result["load_avg_end"] = round(os.getloadavg()[0], 2)  # 2 cores: above ~2 the timings are shared
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
