"""Timing driver for benchmarks/device_runtime.py; runs under MicroPython and CPython (repo root).

Usage: micropython benchmarks/device_runtime_mpy.py FW_PATH MODEL.blob LIST.txt learn(0|1) plain|fast
Each recording is decoded into arrays first (not timed: on a board the events arrive from the link or
the sensor), then add_events + end_sample are timed. Prints one JSON line: seconds, samples, steps.
"""
import json
import sys

sys.path.insert(0, ".")
if sys.argv[1] != ".":
    sys.path.insert(0, sys.argv[1])
import gc  # noqa: E402
import time  # noqa: E402
from array import array  # noqa: E402

from firmware_py.recordings import decode_nmnist  # noqa: E402
from firmware_py.device import Device  # noqa: E402

try:
    ticks, diff = time.ticks_us, time.ticks_diff
except AttributeError:
    def ticks():
        return int(time.perf_counter() * 1e6)

    def diff(a, b):
        return a - b

model_path, list_path, learn, kernel = sys.argv[2], sys.argv[3], sys.argv[4] == "1", sys.argv[5]
rows = None
if kernel == "fast":
    from firmware_py import fast
    rows = fast.best_rows()
dev = Device(rows=rows, learn=learn)
with open(model_path, "rb") as f:
    dev.load_model(f.read(), False)
gc.collect()
with open(list_path) as lf:
    items = [line.split() for line in lf if line.strip()]
total_us = 0
for path, label in items:
    with open(path, "rb") as f:
        raw = f.read()
    n = len(raw) // 5
    xs = array("h", range(n))
    ys = array("h", range(n))
    ps = array("b", bytes(n))
    ts = array("i", range(n))
    decode_nmnist(raw, n, xs, ys, ts, ps)
    raw = None
    gc.collect()
    t0 = ticks()
    dev.begin_sample()
    dev.add_events(xs, ys, ts, ps)
    dev.end_sample(int(label) if learn else None)
    total_us += diff(ticks(), t0)
    xs = ys = ps = ts = None
    gc.collect()
print(json.dumps({"seconds": total_us / 1e6, "samples": len(items), "steps": len(items) * dev.binner.spec.n_steps,
                  "updates": dev.stats()["updates"]}))
