"""Drive firmware_py.device.Device over real N-MNIST recordings; runs under MicroPython and CPython.

Usage (from the repo root): micropython -X heapsize=192K tests/firmware/run_device_mpy.py FW_PATH
    MODEL.blob LIST.txt OUT.json [learn|infer] [plain|fast] [factorised: -1|0|1] [N:ref_x:ref_y:ref_dur]
LIST.txt: one "path label" per line. Each recording is decoded here (N-MNIST .bin: 5 bytes per event),
sent to the device in batches of 256 events (as the serial link does) and ended with its label
(learn) or without (infer). OUT.json: one line per sample [class, counts, confidence], then a line
with the saturation count, update count, lanes and a_syn, then a line per learning bank, a line per layer
with its a_syn, then every layer's weights in pieces (layer 0 first).
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

model_path, list_path, out_path = sys.argv[2], sys.argv[3], sys.argv[4]
mode = sys.argv[5] if len(sys.argv) > 5 else "infer"
kernel = sys.argv[6] if len(sys.argv) > 6 else "plain"
fact = int(sys.argv[7]) if len(sys.argv) > 7 else -1
# "N:ref_x:ref_y:ref_dur": align the input over the first N samples first (firmware_py/align.py)
calib = [int(v) for v in sys.argv[8].split(":")] if len(sys.argv) > 8 and sys.argv[8] != "-" else None

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
gc.collect()
if calib is not None:
    dev.calibrate(*calib)

BATCH = 256
xs = array("h", range(BATCH))     # event batches in arrays, as a serial link would decode them
ys = array("h", range(BATCH))
ts = array("i", range(BATCH))
ps = array("b", bytes(BATCH))
nres = 0
outf = open(out_path, "w")        # one JSON line per sample, then the final state: small RAM
with open(list_path) as lf:
    items = [line.split() for line in lf if line.strip()]
for path, label in items:
    dev.begin_sample()
    with open(path, "rb") as f:
        while True:
            raw = f.read(5 * BATCH)        # the recording is streamed, never held whole
            n = len(raw) // 5
            if n == 0:
                break
            decode_nmnist(raw, n, xs, ys, ts, ps)
            if n == BATCH:
                dev.add_events(xs, ys, ts, ps)
            else:
                dev.add_events(xs[:n], ys[:n], ts[:n], ps[:n])
    raw = None
    cls, measure, conf = dev.end_sample(int(label) if mode == "learn" else None)
    outf.write(json.dumps([cls, measure, conf]) + "\n")
    nres += 1
    gc.collect()
    if "MEMDEBUG" in sys.argv: print(nres, gc.mem_alloc(), gc.mem_free())

from firmware_py.store import persistent_banks  # noqa: E402

layers = dev.net.model.layers
L = layers[-1]
st = dev.stats()
dev.binner.reset()                 # free the last sample's events before building the report
gc.collect()
banks = persistent_banks(dev.rule)
outf.write(json.dumps({"nsat": st["nsat"], "updates": st["updates"], "memory": st["memory"],
                       "lanes": list(dev.rule.lanes) if dev.rule is not None else [],
                       "a_syn": list(L.a_syn) if L.per_input else L.a_syn,
                       "sizes": [len(H.W) for H in layers], "n_banks": len(banks),
                       "a_syn_sizes": [H.n_in if H.per_input else 0 for H in layers],
                       "align": list(dev.alignment())}) + "\n")
for b in banks:                     # one line each: a board's heap has room for small lines only
    outf.write(json.dumps(list(b)) + "\n")
for H in layers:                    # a_syn: an int, or per-input decays in pieces of 64 (small lines)
    if H.per_input:
        for k in range(0, H.n_in, 64):
            outf.write(json.dumps(list(H.a_syn[k:k + 64])) + "\n")
    else:
        outf.write(json.dumps(H.a_syn) + "\n")
for H in layers:
    for k in range(0, len(H.W), 64):    # every layer's weights in small pieces (one JSON list per line)
        outf.write(json.dumps(list(H.W[k:k + 64])) + "\n")
outf.close()
print("OK", nres)
