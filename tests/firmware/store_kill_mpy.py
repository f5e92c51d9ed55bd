"""Persistence under kill: runs under MicroPython (and CPython) from the repo root.

Usage: micropython tests/firmware/store_kill_mpy.py FW_PATH ROOT write-model NEW.blob
       micropython tests/firmware/store_kill_mpy.py FW_PATH ROOT write-weights
       micropython tests/firmware/store_kill_mpy.py FW_PATH ROOT boot
write-*: after every filesystem operation prints "OP <n> <name>" and waits for a line on stdin (the
test kills the process there). write-weights boots the stored model, changes its last layer's weights
(W[k] = 7) and checkpoints them. boot: prints "MODEL <crc>" and "W0 <first weight of the last layer>"
of what a board would load at power-on, or "NO MODEL".
"""
import sys

sys.path.insert(0, ".")
if sys.argv[1] != ".":
    sys.path.insert(0, sys.argv[1])
from firmware_py.device import Device  # noqa: E402
from firmware_py.store import Store  # noqa: E402

root = sys.argv[2]
mode = sys.argv[3]
count = [0]


def hook(name):
    count[0] += 1
    print("OP %d %s" % (count[0], name))
    try:
        sys.stdout.flush()
    except AttributeError:
        pass
    sys.stdin.readline()


if mode == "write-model":
    with open(sys.argv[4], "rb") as f:
        data = f.read()
    Store(root, hook, chunk=1024).save_model(data)
    print("DONE")
elif mode == "write-weights":
    dev = Device(store=Store(root, None, chunk=256))
    dev.boot()
    W = dev.net.model.layers[-1].W
    for k in range(len(W)):
        W[k] = 7
    dev.store.hook = hook
    dev.checkpoint()
    print("DONE")
else:
    dev = Device(store=Store(root))
    if dev.boot():
        print("MODEL %d" % dev.model_crc)
        print("W0 %d" % dev.net.model.layers[-1].W[0])
    else:
        print("NO MODEL")
