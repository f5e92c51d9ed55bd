"""Bytes the Device allocates per sample, measured with the GC off (MicroPython; CPython has no gc.mem_alloc).

Usage (from the repo root): micropython -X heapsize=256K tests/firmware/alloc_mpy.py FW_PATH MODEL.blob
    LIST.txt [learn|infer] [plain|fast] [factorised: -1|0|1]
Each recording of LIST.txt ("path label" per line) is decoded into arrays first (the decoding is the
link's or the sensor driver's work, not the Device's), then sent to the Device in batches of 256 events
as the link does, and ended with its label (learn) or without (infer). The first sample warms up (lazy
allocations: the binner's buffers, the rule's scratch); for every later one the GC is disabled around
add_events + end_sample and gc.mem_alloc() is read before and after. Prints one JSON line:
{"alloc": [bytes per measured sample], "classes": [...]}.
"""
import json
import sys

sys.path.insert(0, ".")
if sys.argv[1] != ".":
    sys.path.insert(0, sys.argv[1])
import gc  # noqa: E402
from array import array  # noqa: E402

from firmware_py.recordings import decode_nmnist  # noqa: E402
from firmware_py.device import Device  # noqa: E402
from firmware_py.errors import E_OK  # noqa: E402

model_path, list_path = sys.argv[2], sys.argv[3]
mode = sys.argv[4] if len(sys.argv) > 4 else "infer"
kernel = sys.argv[5] if len(sys.argv) > 5 else "plain"
fact = int(sys.argv[6]) if len(sys.argv) > 6 else -1

rows = None
if kernel == "fast":
    from firmware_py import fast
    rows = fast.best_rows()
dev = Device(rows=rows, factorised=None if fact < 0 else fact)
with open(model_path, "rb") as f:
    data = f.read()
code, res = dev.call("load_model", data, False)
if code != E_OK:
    print("load failed", code, res)
    sys.exit(1)
data = None

BATCH = 256
with open(list_path) as lf:
    items = [line.split() for line in lf if line.strip()]


def decoded(path):
    """The recording as batches of (xs, ys, ts, ps) arrays of at most BATCH events."""
    out = []
    with open(path, "rb") as f:
        while True:
            raw = f.read(5 * BATCH)
            n = len(raw) // 5
            if n == 0:
                break
            xs = array("h", bytes(2 * n))
            ys = array("h", bytes(2 * n))
            ts = array("i", bytes(4 * n))
            ps = array("b", bytes(n))
            decode_nmnist(raw, n, xs, ys, ts, ps)
            out.append((xs, ys, ts, ps))
    return out


alloc = []
classes = []
for s, (path, label) in enumerate(items):
    batches = decoded(path)
    gc.collect()
    gc.disable()
    before = gc.mem_alloc()
    dev.begin_sample()
    for xs, ys, ts, ps in batches:
        dev.add_events(xs, ys, ts, ps)
    cls, measure, conf = dev.end_sample(int(label) if mode == "learn" else None)
    after = gc.mem_alloc()
    gc.enable()
    if s > 0:
        alloc.append(after - before)
    classes.append(cls)
    batches = None
print(json.dumps({"alloc": alloc, "classes": classes}))
