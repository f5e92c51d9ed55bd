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
tests/firmware/test_micro_profile.py checks it bit for bit against converters/intsim.learn_samples
(predictions, spike counts, learned weights and bank, saturation count), under CPython and the unix
MicroPython.
"""
import struct
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
CHUNK = 224             # bytes of frozen weight rows read at a time


def mq(x, a):
    """mul_q12(x, a), a in [0, 4096]: trunc(x * a / 4096), every intermediate below 2**30."""
    neg = x < 0
    if neg:
        x = -x
    if x < 262144:
        x = x * a >> 12
    else:               # x = 64 h + l: floor((64 h a + l a) / 4096) = (h a + (l a >> 6)) >> 6
        x = ((x >> 6) * a + ((x & 63) * a >> 6)) >> 6
    return -x if neg else x


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


class Layer:
    pass


class Net:
    """The flashed model: `spec` is the module that `snn-edge flash` generates from model.blob
    (host_tools/micro_flash.py: binning, rule parameters, initial bank, each layer's constants and the
    offset of its weights in the blob); the last layer's weights are read into RAM, the others stay."""

    def __init__(self, spec, path="model.blob"):
        self.spec = spec
        self.path = path
        self.layers = []
        for n_in, n_out, a_syn, a_mem, theta, shift, off in spec.LAYERS:
            L = Layer()
            L.n_in, L.n_out, L.a_syn, L.a_mem, L.theta, L.shift, L.off = n_in, n_out, a_syn, a_mem, theta, shift, off
            L.W = None
            L.buf = array("b", bytearray(max(1, CHUNK // n_out) * n_out))
            self.layers.append(L)
        L.W = array("b", bytearray(L.n_in * L.n_out))
        f = self.open_at(L.off)
        f.readinto(L.W)
        f.close()
        L.buf = None
        self.reset()

    def open_at(self, off):
        """The blob opened and read up to byte `off` (the port has no seek)."""
        f = open(self.path, "rb")
        while off > 0:
            off -= len(f.read(min(off, CHUNK)))
        return f

    def reset(self):
        """Learning back to power-on (the bank as flashed), counters cleared; the weights stay."""
        self.hi = list(self.spec.BANK[0])
        self.lo = list(self.spec.BANK[1])
        self.nsat = self.updates = self.synops = self.ms = 0

    def rows(self, L, idx, acc):
        """acc[j] += W[i, j] for the active inputs idx (sorted): from RAM, or read from the file."""
        n = L.n_out
        W = L.W
        if W is None:
            if not idx:
                return
            f = self.open_at(L.off)
            W = L.buf
            per = len(W) // n
            first = -per
        k = 0
        while k < len(idx):
            i = idx[k]
            if L.W is None:
                if i >= first + per:
                    while i >= first + per:
                        first += per
                        f.readinto(W)
                i -= first
            base = i * n
            for j in range(n):
                acc[j] += W[base + j]
            k += 1
        if L.W is None:
            f.close()

    def step(self, L, idx):
        """§4 for one layer on its active inputs; -> the indices of the neurons that spiked."""
        n = L.n_out
        acc = [0] * n
        self.rows(L, idx, acc)
        self.synops += len(idx) * n
        I = L.I
        V = L.V
        out = []
        for j in range(n):
            v = mq(I[j], L.a_syn) + (acc[j] << L.shift)
            if v > SMAX or v < -SMAX:
                v = SMAX if v > 0 else -SMAX
                self.nsat += 1
            I[j] = v
            v += mq(V[j], L.a_mem)
            if v > SMAX or v < -SMAX:
                v = SMAX if v > 0 else -SMAX
                self.nsat += 1
            if v > L.theta:
                out.append(j)
                v -= L.theta
            V[j] = v
        return out

    def update(self, label):
        """§9 with §7: W += sround(pre x clamp(target - post, +-127) * lr_m, lr_s); n_in ticks."""
        p = self.spec.P
        L = self.layers[-1]
        n = L.n_out
        err = [0] * n
        if label >= 0:
            for j in range(n):
                e = (p["tgt_hi"] if j == label else p["tgt_lo"]) - self.post[j]
                err[j] = -127 if e < -127 else 127 if e > 127 else e
        s = p["lr_s"]
        hi = self.hi
        lo = self.lo
        W = L.W
        for i in range(L.n_in):
            tick(hi, lo)
            g = self.pre[i] * p["lr_m"]
            base = i * n
            for j in range(n):      # top lr_s bits of the lane: r >> (32 - lr_s), on halves
                r = 0 if s <= 0 else hi[j] >> 16 - s if s <= 16 else hi[j] << s - 16 | lo[j] >> 32 - s
                w = W[base + j] + (g * err[j] + r >> s)
                if w > 127 or w < -127:
                    w = 127 if w > 0 else -127
                    self.nsat += 1
                W[base + j] = w
        self.updates += 1
        self.pre = [0] * L.n_in
        self.post = [0] * n

    def run(self, bitmap, label):
        """The binned sample (bitmap: n_steps rows of ceil(n_in / 8) bytes) from the zero state,
        learning when label >= 0; -> per-class spike counts."""
        t0 = ticks_ms()
        last = self.layers[-1]
        for L in self.layers:
            L.I = [0] * L.n_out
            L.V = [0] * L.n_out
        counts = [0] * last.n_out
        self.pre = [0] * last.n_in
        self.post = [0] * last.n_out
        nb = (self.layers[0].n_in + 7) >> 3
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
            for L in self.layers:
                if L is last and label >= 0:
                    for i in idx:
                        self.pre[i] += 1
                idx = self.step(L, idx)
            for j in idx:
                counts[j] += 1
                self.post[j] += 1
            if label >= 0 and (t + 1) % self.spec.P["k_update"] == 0:
                self.update(label)
        self.ms += ticks_diff(ticks_ms(), t0)
        return counts
