"""The runtime on the emulated Cortex-M3 (QEMU MPS2-AN385, MicroPython 1.29, 32-bit) on its own clock; ONE JSON line.

Under `-icount shift=3` QEMU counts one instruction as 8 ns (about 125 M instructions/s): an approximation of an
RP2040/STM32F4-class core at one instruction per cycle, without caches, flash wait states or bus contention.
The board's `time.ticks_us()` then measures device time, which the link loop accumulates per request kind
(STATS busy_events_ms: EVENTS decoding and binning; busy_sample_ms: END_SAMPLE, the network and the learning
rule), together with the heap bytes each kind of request allocated (STATS alloc_*).

1. The README's N-MNIST model: a float network (default 578-128-10) trained with BPTT on the training split of
   ../shared/data/nmnist-small (8 epochs), quantised once per rule (inference only, readout delta, SOLSA with
   full and with factorised traces, SOLSA on every layer; GEM needs a probabilistic network whose plan is reported).
2. For each kernel set (plain Python, viper): a 192K board with the firmware in ROMFS; for each rule
   `snn-edge flash` writes the model (timed: the emulated UART) and confirms the boot (free heap, largest
   free block); N validation recordings are streamed (labelled for the learning rules) and STATS read.
3. Every answer is compared with converters.intsim (learn_samples for the rules): bit_exact.

Per configuration: device ms per sample (all the board's work on a sample's frames: the link's deframing,
CRCs and answers, decoding and binning the events, the network and the rule; each part also on its own),
real-time factor (recording duration / device time: >= 1 is real time), synaptic events/s (active inputs x
hidden + hidden spikes x classes, from intsim), free heap and largest free block after boot, flash seconds;
bytes the board's loop allocates per sample after a warm-up one (everything it does for the sample's frames,
also split into the EVENTS and END_SAMPLE requests), from a second, metered run (metered_alloc).

    python benchmarks/device_cortex_m3.py [--samples 10] [--arch 578-128-10] [--icount 3]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from converters import intsim  # noqa: E402
from converters.blob import intmodel_to_blob  # noqa: E402
from converters.intmodel import default_learn  # noqa: E402
from converters.quantize import quantize  # noqa: E402
from edge.data import NMNIST_SPEC, load_frames, split_stratified  # noqa: E402
from edge.events import read_events  # noqa: E402
from firmware_py import memory  # noqa: E402
from host_tools.cmd_board import flash  # noqa: E402
from host_tools.link import connect, open_serial  # noqa: E402
from host_tools.virtual_board import CortexM3Board  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "nmnist-small"
RULES = {  # name: (rule, SOLSA traces, SOLSA on every layer: NUMERICS.md §10.8)
    "inference": ("none", None, 0),
    "readout_delta": ("readout_delta", None, 0),
    "solsa_full": ("solsa", 0, 0),
    "solsa_factorised": ("solsa", 1, 0),
    "solsa_all": ("solsa", 0, 1),
}
K_UPDATE_ALL = 5     # every layer learning: the hidden window of benchmarks/device_adaptation.py


def train_model(arch: str, X, y, train):
    from edge.model import NetworkSpec, init_params
    from edge.rules import make_rule
    from edge.train import FitConfig, fit
    spec = NetworkSpec(sizes=tuple(int(v) for v in arch.split("-")), readout="spikes",
                       binning=NMNIST_SPEC.as_tuple())
    params = init_params(spec, np.random.default_rng(0))
    res = fit(make_rule("bptt"), spec, params, (X[train], y[train]), None, FitConfig(epochs=8, progress=False, seed=0))
    return spec, res.params


def synaptic_events(model, X) -> int:
    """Weight-row elements added over the samples: active inputs x hidden + hidden spikes x next layer."""
    res = intsim.run(model, np.ascontiguousarray(X.transpose(1, 0, 2)))
    total = int((X > 0).sum()) * model.layers[0].n_out
    for l in range(1, len(model.layers)):
        total += int(res.spikes[l - 1].sum()) * model.layers[l].n_out
    return total


def run_rule(board, blob: Path, kernels: str, recs, labels, learn: bool) -> dict:
    """Flash, stream the recordings, read STATS: device time and answers (the loop not metered)."""
    t0 = time.monotonic()
    report = flash(board.path, str(blob), log=lambda *a: None, kernels=kernels)
    flash_s = time.monotonic() - t0
    ser = open_serial(board.path)
    try:
        link = connect(ser)
        answers = []
        for rec, label in zip(recs, labels):
            e = rec.events
            link.send_events(e["x"], e["y"], e["t"], e["p"])
            r = link.end_of_sample(int(label) if learn else -1)
            answers.append((r.cls, list(r.counts)))
        stats = link.get_stats()
    finally:
        ser.close()
    return {"flash_s": flash_s, "boot": report["boot"], "stats": stats, "answers": answers}


def metered_alloc(board, blob: Path, kernels: str, recs, labels, learn: bool) -> dict:
    """Heap bytes the board's loop allocates per sample, everything it does for a sample's frames
    (reads, deframing, CRCs, the requests, the answers): flashed with `--meter-alloc` (gc.mem_alloc()
    three times per frame; it slows the loop, so the timing runs go without it), one warm-up sample, then
    STATS three times: s0 and s1 back to back, the other samples, s2. A STATS request's own bytes are
    counted as the board's "other" requests (subtracted); what its frame costs beyond that (the reads,
    its long answer's encoding) is the loop's growth from s0 to s1 less the "other" growth, and is
    subtracted once more from s1 to s2, which holds exactly one such STATS frame (s1's)."""
    flash(board.path, str(blob), log=lambda *a: None, kernels=kernels, meter=True)
    ser = open_serial(board.path)
    try:
        link = connect(ser)

        def sample(rec, label):
            e = rec.events
            link.send_events(e["x"], e["y"], e["t"], e["p"])
            link.end_of_sample(int(label) if learn else -1)

        sample(recs[0], labels[0])
        s0 = link.get_stats()
        s1 = link.get_stats()
        for rec, label in zip(recs[1:], labels[1:]):
            sample(rec, label)
        s2 = link.get_stats()
    finally:
        ser.close()
    n = len(recs) - 1

    def grew(a, b, key):
        return b[key] - a[key]

    stats_frame = grew(s0, s1, "alloc_loop_bytes") - grew(s0, s1, "alloc_other_bytes")
    loop = grew(s1, s2, "alloc_loop_bytes") - grew(s1, s2, "alloc_other_bytes") - stats_frame
    return {"alloc_bytes_per_sample": round(loop / n),
            "alloc_events_requests_per_sample": round(grew(s1, s2, "alloc_events_bytes") / n),
            "alloc_end_sample_per_sample": round(grew(s1, s2, "alloc_sample_bytes") / n),
            "alloc_reads_with_collection": grew(s0, s2, "alloc_collected"), "alloc_samples": n}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=10)
    ap.add_argument("--arch", default="578-128-10")
    ap.add_argument("--icount", type=int, default=3)
    ap.add_argument("--heap", type=int, default=192 * 1024)
    ap.add_argument("--kernels", default="plain,fast", help="kernel sets to run, comma-separated (plain, fast)")
    ap.add_argument("--rules", default=",".join(RULES), help=f"rules to run, comma-separated ({', '.join(RULES)})")
    args = ap.parse_args()
    kernel_sets = [k for k in args.kernels.split(",") if k]
    rules = [r for r in args.rules.split(",") if r]
    bad = [k for k in kernel_sets if k not in ("plain", "fast")] + [r for r in rules if r not in RULES]
    if bad or not kernel_sets or not rules:
        ap.error(f"--kernels/--rules: unknown or empty {bad}")
    why = CortexM3Board.missing()
    if why:
        raise SystemExit(why)
    X, y, names = load_frames(str(DATA), NMNIST_SPEC, progress=False)
    train, val = split_stratified(y, 0.2, 0)
    spec, params = train_model(args.arch, X, y, train)
    calib = np.ascontiguousarray(X[train[:100]].transpose(1, 0, 2))
    pick = val[: args.samples]
    recs = [read_events(DATA / names[i], int(y[i])) for i in pick]
    labels = y[pick]
    Xs = X[pick]
    duration_s = float(np.mean([(r.events["t"].max() - r.events["t"].min()) / 1e6 for r in recs]))
    out: dict = {"board": "cortex-m3 (QEMU mps2-an385, MicroPython 1.29)", "heap": args.heap,
                 "icount_shift": args.icount, "arch": args.arch, "samples": len(recs),
                 "recording_s": round(duration_s, 4), "runs": []}
    models = {}
    for name in dict.fromkeys(["inference"] + rules):
        rule, fact, learn_all = RULES[name]
        learn = default_learn(rule)
        if fact is not None:
            learn.params["factorised"] = fact
        if learn_all:
            learn.params.update(learn_all=1, k_update=K_UPDATE_ALL)
        models[name] = quantize(spec, params, calib, calibrate_theta=False, learn=learn)
    ops = synaptic_events(models["inference"], Xs)
    dims = [(L.n_in, L.n_out, False) for L in models["inference"].layers]
    gem = memory.breakdown(dims, "gem", {}, compartments=2, n_steps=NMNIST_SPEC.n_steps)
    out["gem_plan"] = {"fits": False if gem["model"] > args.heap else True, "model_bytes": gem["model"],
                       "note": "GEM needs a probabilistic network; K=2 compartments of this size"}
    with tempfile.TemporaryDirectory() as tmp:
        for kernels in kernel_sets:
            with CortexM3Board(args.heap, icount=args.icount) as board:
                for name in rules:
                    model = models[name]
                    learn = name != "inference"
                    blob = Path(tmp) / f"{name}.blob"
                    blob.write_bytes(intmodel_to_blob(model))
                    r = run_rule(board, blob, kernels, recs, labels, learn)
                    if learn:
                        _, preds, scores, _, _ = intsim.learn_samples(model, Xs, labels)
                    else:
                        res = intsim.run(model, np.ascontiguousarray(Xs.transpose(1, 0, 2)))
                        preds, scores = res.predictions, res.scores
                    st = r["stats"]
                    n = st["samples"]
                    # all the loop's work on the bytes it read (deframing, CRCs, the requests, the answers)
                    # but the requests that are not samples (HELLO, GET_STATS)
                    device_ms = (st["busy_loop_ms"] - st["busy_other_ms"]) / n
                    run = {"kernels": kernels, "rule": name,
                           "device_ms_per_sample": round(device_ms, 1),
                           "events_ms_per_sample": round(st["busy_events_ms"] / n, 1),
                           "network_ms_per_sample": round(st["busy_sample_ms"] / n, 1),
                           "link_ms_per_sample": round((st["busy_loop_ms"] - st["busy_events_ms"]
                                                        - st["busy_sample_ms"] - st["busy_other_ms"]) / n, 1),
                           "real_time_factor": round(duration_s * 1000 / device_ms, 3),
                           "free_after_boot": r["boot"].get("free"), "largest_block_after_boot": r["boot"].get("block"),
                           "flash_s": round(r["flash_s"], 2),
                           "bit_exact": [a[0] for a in r["answers"]] == list(map(int, preds))
                           and [a[1] for a in r["answers"]] == np.minimum(scores, 0xFFFF).tolist()}
                    run.update(metered_alloc(board, blob, kernels, recs[:4], labels[:4], learn))
                    if name == "inference":
                        run["synaptic_events_per_s"] = round(ops / (len(recs) * device_ms / 1000))
                    out["runs"].append(run)
                    print(f"{kernels} {name}: {run}", file=sys.stderr, flush=True)
    fast_inf = [r for r in out["runs"] if r["kernels"] == "fast" and r["rule"] == "inference"]
    if fast_inf:
        out["inference_real_time_fast"] = fast_inf[0]["real_time_factor"] >= 1
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
