"""Training throughput and accuracy: the numpy BPTT engine vs snnTorch, same network, same run.

Network: Dense + CubaLIF, 578-128-10 (N-MNIST downsampled 2x) and 2312-128-10 (full resolution),
T = 30 steps of 10 ms, batch 32, Adam with the same cosine schedule, fast-sigmoid surrogate (same
slope), cross-entropy on output spike counts (snnTorch's ce_count_loss), the same initial weights
and the same batch order, on the stratified 80/20 split of the real recordings in
../shared/data/nmnist-small. snnTorch runs `Synaptic` neurons with reset_delay=False (reset in the
same step, gradient through it), which is this engine's CubaLIF with reset_grad=True except after a
membrane left above theta by its reset (snnTorch then needs 2 theta to fire: benchmarks/interop.py), step by
step as in its tutorials. Each side gets --threads (default 2) threads.

Each framework trains in its own fresh process (spawn), so its peak RSS is its own; the two train
epoch by epoch in turn, so only one computes at a time and load from other programs on a shared
machine hits both alike. Prints ONE JSON line. `pip install -e .[bench]` (torch's CPU wheel) for the snnTorch side; without it only ours runs.

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


class OursTrainer:
    """This engine: BPTTRule on the float network, one epoch per call."""

    def __init__(self, data_dir: str, downsample: int, epochs: int, threads: int):
        import numpy as np

        from edge.rules.bptt import BPTTRule

        self.np = np
        self.Xtr, self.ytr, self.Xva, self.yva = _data(data_dir, downsample)
        self.spec, self.params = _initial(self.Xtr.shape[2])
        self.rule = BPTTRule(lr=SETTINGS["lr"])
        self.rule.init(self.spec, self.params, np.random.default_rng(0))
        self.epochs = epochs

    def batch(self, idx):
        self.rule.train_batch(self.params, self.np.ascontiguousarray(self.Xtr[idx].transpose(1, 0, 2)),
                              self.ytr[idx])

    def set_lr(self, lr: float):
        self.rule.set_lr(lr)

    def val_accuracy(self) -> float:
        from edge import metrics
        from edge.train import predict_logits

        return metrics.accuracy(predict_logits(self.rule, self.params, self.Xva, SETTINGS["batch"]), self.yva)

    def extra(self) -> dict:
        from edge import bptt

        x = self.np.ascontiguousarray(self.Xtr[:SETTINGS["batch"]].transpose(1, 0, 2))
        return {"kernels": [r.inputs.method for r in bptt.forward(self.spec, self.params, x).records]}


class SnnTorchTrainer:
    """snnTorch: Synaptic neurons, step by step as in its tutorials, same weights/schedule/batches."""

    def __init__(self, data_dir: str, downsample: int, epochs: int, threads: int):
        import numpy as np
        import snntorch as snn
        import snntorch.functional as SF
        import torch
        from snntorch import surrogate

        torch.set_num_threads(threads)
        self.np, self.torch = np, torch
        self.Xtr, self.ytr, self.Xva, self.yva = _data(data_dir, downsample)
        spec, params = _initial(self.Xtr.shape[2])

        class Net(torch.nn.Module):
            def __init__(self):
                super().__init__()
                grad = surrogate.fast_sigmoid(slope=SETTINGS["slope"])
                neuron = dict(alpha=SETTINGS["a_syn"], beta=SETTINGS["a_mem"], threshold=SETTINGS["theta"],
                              spike_grad=grad, reset_delay=False)
                self.fc1 = torch.nn.Linear(spec.sizes[0], spec.sizes[1], bias=False)
                self.lif1 = snn.Synaptic(**neuron)
                self.fc2 = torch.nn.Linear(spec.sizes[1], spec.sizes[2], bias=False)
                self.lif2 = snn.Synaptic(**neuron)

            def forward(self, x):  # x [T, B, N]
                syn1, mem1 = self.lif1.reset_mem()
                syn2, mem2 = self.lif2.reset_mem()
                out = []
                for t in range(x.shape[0]):
                    spk1, syn1, mem1 = self.lif1(self.fc1(x[t]), syn1, mem1)
                    spk2, syn2, mem2 = self.lif2(self.fc2(spk1), syn2, mem2)
                    out.append(spk2)
                return torch.stack(out)

        self.net = Net()
        with torch.no_grad():  # the same initial weights as ours (torch stores W transposed)
            self.net.fc1.weight.copy_(torch.from_numpy(params[0].W.T.copy()))
            self.net.fc2.weight.copy_(torch.from_numpy(params[1].W.T.copy()))
        self.opt = torch.optim.Adam(self.net.parameters(), lr=SETTINGS["lr"])
        self.loss_fn = SF.ce_count_loss()
        self.versions = {"snntorch": snn.__version__, "torch": torch.__version__, "threads": threads}

    def _x(self, X):
        return self.torch.from_numpy(X.transpose(1, 0, 2).astype(self.np.float32))

    def batch(self, idx):
        loss = self.loss_fn(self.net(self._x(self.Xtr[idx])), self.torch.from_numpy(self.ytr[idx]))
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()

    def set_lr(self, lr: float):
        for g in self.opt.param_groups:
            g["lr"] = lr

    def val_accuracy(self) -> float:
        B, correct = SETTINGS["batch"], 0
        with self.torch.no_grad():
            for b in range(0, len(self.Xva), B):
                pred = self.net(self._x(self.Xva[b:b + B])).sum(0).argmax(1).numpy()
                correct += int((pred == self.yva[b:b + B]).sum())
        return correct / len(self.Xva)

    def extra(self) -> dict:
        return {"versions": self.versions}


TRAINERS = {"ours": OursTrainer, "snntorch": SnnTorchTrainer}


def worker(conn, kind: str, data_dir: str, downsample: int, epochs: int, threads: int) -> None:
    """One framework in its own process; trains one epoch per request so the parent interleaves them.

    --threads caps both sides: torch's intra-op threads, and the BLAS/OpenMP pools numpy (ours) and torch
    load (threadpoolctl), so neither side gets more cores than the other. Measured on the shared 2-core
    machine at load 6-9: torch with 2 threads fell to 20 samples/s where 1 thread gave 200."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=threads):
        _serve(conn, kind, data_dir, downsample, epochs, threads)


def _serve(conn, kind: str, data_dir: str, downsample: int, epochs: int, threads: int) -> None:
    import numpy as np

    from edge.optim import scheduled_lr

    trainer = TRAINERS[kind](data_dir, downsample, epochs, threads)
    B = SETTINGS["batch"]
    while True:
        msg = conn.recv()
        if msg[0] == "epoch":
            epoch = msg[1]
            trainer.set_lr(scheduled_lr(SETTINGS["lr"], epoch, epochs, SETTINGS["schedule"]))
            order = np.random.default_rng([SETTINGS["seed"], epoch]).permutation(len(trainer.Xtr))
            t0, c0 = time.perf_counter(), time.process_time()
            for b in range(0, len(order), B):
                trainer.batch(order[b:b + B])
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            conn.send((len(order), wall, cpu, trainer.val_accuracy()))
        else:  # "finish": inference speed on the validation split, peak memory
            t0 = time.perf_counter()
            trainer.val_accuracy()
            infer = len(trainer.Xva) / (time.perf_counter() - t0)
            conn.send({"infer_samples_per_s": infer, "peak_rss_mb": _peak_rss_mb(), **trainer.extra()})
            return


def compare(kinds: list[str], data_dir: str, downsample: int, epochs: int, threads: int) -> dict:
    """Train every framework epoch by epoch in turn (A, B, A, B, ...): only one computes at a time and
    a burst of load from other programs hits both sides alike. Each runs in a fresh process."""
    ctx = multiprocessing.get_context("spawn")
    procs, conns = {}, {}
    for kind in kinds:
        parent, child = ctx.Pipe()
        procs[kind] = ctx.Process(target=worker, args=(child, kind, data_dir, downsample, epochs, threads))
        procs[kind].start()
        conns[kind] = parent
    totals = {k: {"samples": 0, "wall": 0.0, "cpu": 0.0, "accs": []} for k in kinds}
    try:
        for epoch in range(epochs):
            for kind in kinds:
                conns[kind].send(("epoch", epoch))
                n, wall, cpu, acc = conns[kind].recv()
                t = totals[kind]
                t["samples"] += n
                t["wall"] += wall
                t["cpu"] += cpu
                t["accs"].append(acc)
        out = {}
        for kind in kinds:
            conns[kind].send(("finish",))
            t = totals[kind]
            out[kind] = {"train_samples_per_s": t["samples"] / t["wall"],
                         "train_samples_per_cpu_s": t["samples"] / t["cpu"],
                         "val_acc_final": t["accs"][-1], "val_acc_best": max(t["accs"]),
                         "val_acc_per_epoch": t["accs"], **conns[kind].recv()}
        return out
    finally:
        for proc in procs.values():
            proc.join(timeout=60)
            if proc.is_alive():
                proc.terminate()


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
    ap.add_argument("--threads", type=int, default=2, help="threads of each side (torch; numpy's BLAS)")
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
        kinds = ["ours", "snntorch"] if have_torch else ["ours"]
        entry = {"arch": f"{variant}-{SETTINGS['hidden']}-10",
                 **compare(kinds, args.data, downsample, args.epochs, args.threads)}
        if have_torch:
            ours, theirs = entry["ours"], entry["snntorch"]
            entry["ratio_train"] = round(ours["train_samples_per_s"] / theirs["train_samples_per_s"], 2)
            # per CPU-second: a second view, less sensitive to other programs on a shared machine
            entry["ratio_train_cpu"] = round(ours["train_samples_per_cpu_s"] / theirs["train_samples_per_cpu_s"], 2)
            entry["ratio_infer"] = round(ours["infer_samples_per_s"] / theirs["infer_samples_per_s"], 2)
        for side in kinds:
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
