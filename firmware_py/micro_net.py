"""The micro:bit's integer runtime: NUMERICS.md §4-§7 and §9 for the models that fit its ~9 KB heap.

Why not firmware_py/runtime.py + learning.py + blob.py: their code alone is several times that heap. This
module keeps their semantics for the micro profile's models and nothing more:
- LIF layers with a scalar synaptic decay, binary input (bitmap), spike-count readout;
- learning: none, or the readout delta rule (§9, §7) on the last layer;
- the frozen layers' weights stay in the flashed model.blob (layout: firmware_py/blob.py) and each step
  reads the rows of its active inputs from there (the port has no seek: the file is read from the start,
  in chunks, up to the last active row); only the last layer's weights are in RAM (it learns);
- the blob's header is parsed on the host at flash time (host_tools/micro_flash.py writes micro_model.py:
  the constants, the initial generator bank, the weight offsets), so no parser takes the board's heap;
- products of a 20-bit state and a Q12 decay can pass 2**30, which is a heap-allocated int on this port:
  mq() splits them; xorshift32 runs on 16-bit halves for the same reason.
tests/firmware/test_micro_runtime.py checks it bit for bit against converters/intsim.learn_samples
(predictions, spike counts, learned weights and bank, saturation count), under CPython (the repo modules
and the minified program flash would write).
"""
from array import array

try:
    from utime import ticks_diff, ticks_ms
except ImportError:     # CPython (the host's tests)
    import time

    def ticks_ms():  # type: ignore[no-redef, misc]
        return int(time.monotonic() * 1000)

    def ticks_diff(a, b):  # type: ignore[no-redef, misc]
        return a - b

SMAX = 524287           # the 20-bit state range
CHUNK = 128             # bytes of frozen weight rows read at a time


def mq(x, a):
    """mul_q12(x, a), a in [0, 4096]: trunc(x * a / 4096), every intermediate below 2**30."""
    if x < 0:
        return -mq(-x, a)
    if x < 262144:
        return x * a >> 12
    # x = 64 h + l: floor((64 h a + l a) / 4096) = (h a + (l a >> 6)) >> 6
    return ((x >> 6) * a + ((x & 63) * a >> 6)) >> 6


def tick(hi, lo):
    """xorshift32 (13, 17, 5) once on every lane, each lane held as 16-bit halves."""
    for k in range(len(hi)):
        h = hi[k]
        l = lo[k]
        h ^= (h << 13 | l >> 3) & 0xFFFF
        l ^= l << 13 & 0xFFFF
        l ^= h >> 1
        h ^= (h << 5 | l >> 11) & 0xFFFF
        hi[k] = h
        lo[k] = l ^ l << 5 & 0xFFFF


def open_at(path, off):
    """The file opened and read up to byte `off` (the port has no seek)."""
    f = open(path, "rb")
    while off > 0:
        off -= len(f.read(min(off, CHUNK)))
    return f


class Net:
    """The flashed model: `spec` is the module that `snn-edge flash` generates from model.blob
    (host_tools/micro_flash.py: binning, rule parameters, initial bank, each layer's constants
    (n_in, n_out, a_syn, a_mem, theta, shift, offset of its weights in the blob)); the last layer's
    weights are read into RAM, the others stay in the file."""

    def __init__(self, spec, path="model.blob"):
        self.spec = spec
        self.path = path
        n_in, n_out = spec.LAYERS[-1][:2]
        self.W = array("b", bytes(n_in * n_out))
        f = open_at(path, spec.LAYERS[-1][6])
        f.readinto(self.W)
        f.close()
        self.bufs = [array("b", bytes(CHUNK // L[1] * L[1])) for L in spec.LAYERS[:-1]]  # whole rows
        self.reset()

    def reset(self):
        """Learning back to power-on (the bank as flashed), counters cleared; the weights stay."""
        self.hi = list(self.spec.BANK[0])
        self.lo = list(self.spec.BANK[1])
        self.nsat = self.updates = self.synops = self.ms = 0

    def step(self, l, idx):
        """§4 for layer l on its active inputs idx (sorted); -> the indices of the neurons that spiked."""
        n_in, n, a_syn, a_mem, theta, shift, off = self.spec.LAYERS[l]
        acc = [0] * n
        last = l == len(self.spec.LAYERS) - 1
        W = self.W if last else self.bufs[l]
        first = 0
        if not last and idx:                 # rows of the frozen layer: read up to the last active one
            f = open_at(self.path, off)
            per = CHUNK // n
            first = -per
        for i in idx:
            if not last:
                while i >= first + per:
                    first += per
                    f.readinto(W)
            base = (i - first) * n
            for j in range(n):
                acc[j] += W[base + j]
        if not last and idx:
            f.close()
        self.synops += len(idx) * n
        I = self.I[l]
        V = self.V[l]
        out = []
        for j in range(n):
            v = mq(I[j], a_syn) + (acc[j] << shift)
            if v > SMAX or v < -SMAX:
                v = SMAX if v > 0 else -SMAX
                self.nsat += 1
            I[j] = v
            v += mq(V[j], a_mem)
            if v > SMAX or v < -SMAX:
                v = SMAX if v > 0 else -SMAX
                self.nsat += 1
            if v > theta:
                out.append(j)
                v -= theta
            V[j] = v
        return out

    def update(self, label):
        """§9 with §7: W += sround(pre x clamp(target - post, +-127) * lr_m, lr_s); n_in ticks."""
        p = self.spec.P
        n_in, n = self.spec.LAYERS[-1][:2]
        err = [0] * n
        if label >= 0:
            for j in range(n):
                e = (p["tgt_hi"] if j == label else p["tgt_lo"]) - self.post[j]
                err[j] = -127 if e < -127 else 127 if e > 127 else e
        s = p["lr_s"]
        hi = self.hi
        lo = self.lo
        W = self.W
        for i in range(n_in):
            tick(hi, lo)
            g = self.pre[i] * p["lr_m"]
            for j in range(n):      # top lr_s bits of the lane: r >> (32 - lr_s), on halves
                r = 0 if s <= 0 else hi[j] >> 16 - s if s <= 16 else hi[j] << s - 16 | lo[j] >> 32 - s
                w = W[i * n + j] + (g * err[j] + r >> s)
                if w > 127 or w < -127:
                    w = 127 if w > 0 else -127
                    self.nsat += 1
                W[i * n + j] = w
        self.updates += 1
        self.pre = [0] * n_in
        self.post = [0] * n

    def run(self, bitmap, label):
        """The binned sample (bitmap: n_steps rows of ceil(n_in / 8) bytes) from the zero state,
        learning when label >= 0; -> per-class spike counts."""
        t0 = ticks_ms()
        layers = self.spec.LAYERS
        top = len(layers) - 1
        self.I = [[0] * L[1] for L in layers]
        self.V = [[0] * L[1] for L in layers]
        counts = [0] * layers[-1][1]
        self.pre = [0] * layers[-1][0]
        self.post = [0] * layers[-1][1]
        nb = (layers[0][0] + 7) >> 3
        for t in range(self.spec.BIN[3]):
            idx = []
            for q in range(nb):
                v = bitmap[t * nb + q]
                i = q << 3
                while v:
                    if v & 1:
                        idx.append(i)
                    v >>= 1
                    i += 1
            for l in range(top + 1):
                if l == top and label >= 0:
                    for i in idx:
                        self.pre[i] += 1
                idx = self.step(l, idx)
            for j in idx:
                counts[j] += 1
                self.post[j] += 1
            if label >= 0 and (t + 1) % self.spec.P["k_update"] == 0:
                self.update(label)
        self.ms += ticks_diff(ticks_ms(), t0)
        return counts
