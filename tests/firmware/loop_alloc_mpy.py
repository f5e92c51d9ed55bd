"""Bytes the board's whole loop allocates per sample: board_main.serve() itself (reads, deframing, CRCs,
the session, the handler, the answers) on an in-memory port, with the GC off for the whole run.

Usage (from the repo root): micropython -X heapsize=4M tests/firmware/loop_alloc_mpy.py FW_PATH MODEL.blob
    LIST.txt [learn|infer] [fast|plain]
The host's frames for HELLO and every recording of LIST.txt ("path label" per line: EVENTS batches of at
most 169 events, the 1 KB payloads the runtime's handler takes, then END_SAMPLE) are encoded first. The
port hands serve() those bytes as its blocking reads would and reads gc.mem_alloc() when a sample's first
byte is asked for, so each figure is everything serve() allocated for one sample (the port allocates
nothing itself: it copies with fast.copy_viper, or byte by byte with the plain kernels, where the
firmware's fast module is never imported). The first sample warms up. Prints one JSON line:
{"alloc": [bytes per measured sample], "results": number of RESULT frames answered, "errors": ERROR frames}.
"""
import json
import struct
import sys

sys.path.insert(0, ".")
if sys.argv[1] != ".":
    sys.path.insert(0, sys.argv[1])
import gc  # noqa: E402
from array import array  # noqa: E402

KERNELS = sys.argv[5] if len(sys.argv) > 5 else "fast"
if KERNELS == "fast":
    from firmware_py import fast  # noqa: E402  (before the model: the kernels compile on a fresh heap)
    copy = fast.copy_viper
else:
    def copy(dst, d0, src, s0, k):
        for j in range(k):
            dst[d0 + j] = src[s0 + j]
from firmware_py import board_main, link  # noqa: E402
from firmware_py.handler import make_handler  # noqa: E402
from firmware_py.recordings import decode_nmnist  # noqa: E402

model_path, list_path = sys.argv[2], sys.argv[3]
learn = len(sys.argv) > 4 and sys.argv[4] == "learn"
BATCH = 169

handler = make_handler("", None, KERNELS)
handler.dev.store = None                         # no filesystem writes: the model stays in RAM
with open(model_path, "rb") as f:
    handler.dev.load_model(f.read(), False)
with open(list_path) as lf:
    items = [line.split() for line in lf if line.strip()]


def sample_bytes(path, label, seq):
    """The frames of one recording, as one bytes object; returns (bytes, next seq)."""
    with open(path, "rb") as f:
        raw = f.read()
    n = len(raw) // 5
    xs = array("h", bytes(2 * n))
    ys = array("h", bytes(2 * n))
    ts = array("i", bytes(4 * n))
    ps = array("b", bytes(n))
    decode_nmnist(raw, n, xs, ys, ts, ps)
    out = bytearray()
    for s in range(0, n, BATCH):
        e = s + BATCH if s + BATCH < n else n
        payload = link.pack_events(ts[s], xs[s:e], ys[s:e], ts[s:e], ps[s:e])
        out += link.encode_frame(link.EVENTS, seq, payload)
        seq = (seq + 1) & 0xFF
    out += link.encode_frame(link.END_SAMPLE, seq, struct.pack("<h", int(label) if learn else -1))
    return bytes(out), (seq + 1) & 0xFF


streams = [link.encode_frame(link.HELLO, 0, b"abcd")]
seq = 1
for path, label in items:
    data, seq = sample_bytes(path, label, seq)
    streams.append(data)


class MemoryPort:
    """serve()'s port: reads from the prepared streams (blocking reads of at most `want` bytes), answers
    counted by type. Allocation-free after construction."""

    def __init__(self, streams):
        self.streams = streams
        self.k = 0              # stream
        self.i = 0              # offset in it
        self.marks = []         # gc.mem_alloc() as each sample's stream starts, and at the end
        self.results = 0
        self.errors = 0
        self.marks_at = array("i", bytes(4 * (len(streams) + 1)))
        self.n_marks = 0

    def readinto(self, view, want):
        if self.k < len(self.streams) and self.i == 0 and self.k >= 1:
            self.marks_at[self.n_marks] = gc.mem_alloc()
            self.n_marks += 1
        if self.k >= len(self.streams):
            self.marks_at[self.n_marks] = gc.mem_alloc()
            self.n_marks += 1
            return 0
        s = self.streams[self.k]
        k = len(s) - self.i
        if k > want:
            k = want
        copy(view, 0, s, self.i, k)
        self.i += k
        if self.i == len(s):
            self.k += 1
            self.i = 0
        return k

    def waiting(self):
        return False

    def write(self, data):
        t = data[1] if data[0] == link.END else data[0]
        if t == link.RESULT:
            self.results += 1
        elif t == link.ERROR:
            self.errors += 1


port = MemoryPort(streams)
gc.collect()
gc.disable()
board_main.serve(handler, port, 1024, 8192)
gc.enable()
marks = [port.marks_at[j] for j in range(port.n_marks)]
alloc = [marks[j + 1] - marks[j] for j in range(1, len(marks) - 1)]     # sample 0 warms up
print(json.dumps({"alloc": alloc, "results": port.results, "errors": port.errors}))
