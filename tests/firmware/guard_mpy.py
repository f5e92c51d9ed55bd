"""Self-training with the guard on firmware_py.device.Device; runs under MicroPython and CPython.

Usage (from the repo root): micropython tests/firmware/guard_mpy.py FW_PATH MODEL.blob EVENTS.json GATE GUARD.json
EVENTS.json: a list of samples [xs, ys, ts, ps]. Prints one JSON line: predictions, confidences, the last
layer's weights, the bank, the guard's state and the saturation count.
"""
import json
import sys

sys.path.insert(0, ".")
if sys.argv[1] != ".":
    sys.path.insert(0, sys.argv[1])
from firmware_py.device import Device  # noqa: E402

with open(sys.argv[3]) as f:
    samples = json.load(f)
dev = Device(self_train_gate=int(sys.argv[4]), guard=json.loads(sys.argv[5]))
with open(sys.argv[2], "rb") as f:
    dev.load_model(f.read(), False)
preds = []
confs = []
for xs, ys, ts, ps in samples:
    dev.begin_sample()
    dev.add_events(xs, ys, ts, ps)
    cls, measure, conf = dev.end_sample(None)
    preds.append(cls)
    confs.append(conf)
st = dev.stats()
print(json.dumps({"preds": preds, "confs": confs, "W": list(dev.net.model.layers[-1].W), "lanes": list(dev.rule.lanes),
                  "guard": st["guard"], "nsat": st["nsat"], "self_trained": st["self_trained"]}))
