"""Events/s read + binned on the real N-MNIST recordings, and the vectorised denoise vs tonic's, in one run.

Prints one JSON line. Usage: python benchmarks/data_throughput.py [--data ../shared/data/nmnist-small] [--limit N]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


from edge.events import list_folder_dataset, read_events
from edge.transforms import denoise, to_frames
from firmware_py.binning import Binner, BinSpec

DEFAULT_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "nmnist-small"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--limit", type=int, default=1000)
    ap.add_argument("--filter-us", type=int, default=10_000)
    args = ap.parse_args()
    import tonic.functional as tf

    items = list_folder_dataset(args.data)[: args.limit]
    spec = BinSpec(34, 34, 10_000, 30, downsample=2)
    read_events(items[0][0])  # first call imports tonic; not part of the measurement

    t0 = time.perf_counter()
    recs = [read_events(f, label) for f, label in items]
    t_read = time.perf_counter() - t0
    n_events = sum(len(r.events) for r in recs)
    t0 = time.perf_counter()
    for r in recs:
        to_frames(r.events, spec)
    t_bin = time.perf_counter() - t0

    sub = recs[: min(200, len(recs))]
    t0 = time.perf_counter()
    for r in sub:
        tf.denoise_numpy(r.events, args.filter_us)
    t_tonic = time.perf_counter() - t0
    t0 = time.perf_counter()
    for r in sub:
        denoise(r.events, args.filter_us)
    t_ours = time.perf_counter() - t0

    board_sub = recs[:20]
    t0 = time.perf_counter()
    for r in board_sub:
        b = Binner(spec)
        b.add_many(r.events["x"].tolist(), r.events["y"].tolist(), r.events["t"].tolist(), r.events["p"].tolist())
    t_board = time.perf_counter() - t0
    board_events = sum(len(r.events) for r in board_sub)

    print(json.dumps({
        "benchmark": "data_throughput",
        "recordings": len(recs),
        "events": n_events,
        "read_events_per_s": round(n_events / t_read),
        "bin_events_per_s": round(n_events / t_bin),
        "read_and_bin_events_per_s": round(n_events / (t_read + t_bin)),
        "firmware_binner_cpython_events_per_s": round(board_events / t_board),
        "denoise_recordings": len(sub),
        "denoise_tonic_s": round(t_tonic, 4),
        "denoise_ours_s": round(t_ours, 4),
        "denoise_speedup_vs_tonic": round(t_tonic / t_ours, 2),
    }))


if __name__ == "__main__":
    main()
