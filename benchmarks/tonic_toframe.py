"""Our binning against tonic's ToFrame on every real N-MNIST recording. Prints ONE JSON line.

    python benchmarks/tonic_toframe.py [--data ../shared/data/nmnist-small]

Counts per 10 ms bin (34x34, two polarities, no downsampling, T = 40 so nothing is cut) from edge.transforms.to_frames,
against ToFrame(time_window=10 ms) with start_time=0 and include_incomplete=True (expected: all equal), tonic's
defaults, and start_time=0 alone. tests/edge/test_tonic.py checks every third recording in the suite.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT / ".." / "shared" / "data" / "nmnist-small"))
    args = ap.parse_args()
    import tonic

    from edge.events import read_events, read_tonic_dataset
    from edge.transforms import to_frames
    from firmware_py.binning import COUNT, BinSpec
    T, dt, n = 40, 10_000, 2 * 34 * 34
    spec = BinSpec(34, 34, dt_us=dt, n_steps=T, mode=COUNT)
    variants = {
        "start0_incomplete": tonic.transforms.ToFrame(sensor_size=(34, 34, 2), time_window=dt, start_time=0,
                                                      include_incomplete=True),
        "default": tonic.transforms.ToFrame(sensor_size=(34, 34, 2), time_window=dt),
        "start0_only": tonic.transforms.ToFrame(sensor_size=(34, 34, 2), time_window=dt, start_time=0),
    }
    equal = dict.fromkeys(variants, 0)
    ds = read_tonic_dataset("NMNIST", args.data)
    t0 = time.perf_counter()
    for i in range(len(ds)):
        events, _ = ds[i]
        ours = to_frames(read_events(ds.data[i]).events, spec)
        for name, transform in variants.items():
            fr = transform(events).reshape(-1, n)
            equal[name] += bool(len(fr) <= T and ours[len(fr):].sum() == 0
                                and np.array_equal(ours[:len(fr)], np.minimum(fr, 255)))
    print(json.dumps({"recordings": len(ds), **{f"equal_toframe_{k}": v for k, v in equal.items()},
                      "seconds": round(time.perf_counter() - t0, 1), "tonic": tonic.__version__}))


if __name__ == "__main__":
    main()
