"""The micro:bit's integer runtime: NUMERICS.md §4-§7 and §9 for the one network shape its ~9 KB heap runs.

Why not firmware_py/runtime.py + learning.py + blob.py: their code alone is several times that heap. This
module keeps their semantics for the micro profile's models and nothing more:
- two LIF layers with scalar synaptic decays, binary input (the bitmap that micro_main bins EVENTS into),
  spike-count readout; learning: none or the readout delta rule (§9, §7) on the second layer;
- the frozen first layer's weights stay in the flashed model.blob (layout: firmware_py/blob.py) and each
  step reads the rows of its active inputs from there (the port has no seek: the file is read from the
  start, in buffer-sized chunks, up to the last active row); only the learned layer's weights are in RAM;
- the model's numbers are constants of the generated micro_model.py (host_tools/micro_flash.micro_spec,
  from the blob through the device's own reader), which the flash-time minifier inlines into this code:
  no parser, no dictionary, no name of them on the board's heap; only the generator bank stays a tuple;
- xorshift32 runs on 16-bit halves: the lanes would otherwise be ints above 2**30, which this port keeps on
  the heap (a product of a 20-bit state and a Q12 decay can pass 2**30 too, but is garbage at once).
tests/firmware/test_micro_runtime.py checks it bit for bit against converters/intsim.learn_samples
(predictions, spike counts, learned weights and bank, saturation count), under CPython (the repo modules
and the minified program flash writes).
"""
from array import array

import micro_model as M  # type: ignore[import-not-found]  # generated at flash time (tests write one)

SMAX = 524287           # the 20-bit state range

NS = 0                  # saturations (states and weights clamped), as intsim counts them


def fopen(o):
    """model.blob opened and read up to byte o (the port has no seek)."""
    f = open("model.blob", "rb")
    while o > 0:
        o -= len(f.read(min(o, 64)))
    return f


# The model's data, allocated as soon as this module (imported first) is compiled, while the heap is
# still in one piece: allocated after the other modules' compiles, the 480-byte bitmap found no hole.
HI = list(M.BHI)                        # the readout rule's generator lanes (xorshift32), high and low 16 bits
LO = list(M.BLO)
B = array("b", bytes(M.PER * M.NH))     # a chunk of frozen first-layer rows
BM = bytearray(M.STEPS * M.NB)          # the sample's input: one bit per input and time step
W = array("b", bytes(M.NH * M.NO))      # the learned layer, row-major (n_in, n_out)
f = fopen(M.OFF1)
f.readinto(W)
f.close()


def mq(x, a):
    """mul_q12(x, a), a in [0, 4096]: trunc(x * a / 4096) (products above 2**30 are heap ints here, garbage
    at once)."""
    return x * a >> 12 if x >= 0 else -(-x * a >> 12)


def sat(v, m):
    """v clamped to [-m, m], counting the saturation (NS)."""
    global NS
    if v > m or v < -m:
        NS += 1
        return m if v > 0 else -m
    return v


def lif(a, I, V, asyn, amem, th, sh):
    """§4 for one layer given its summed input weights a; -> the indices of the neurons that spiked."""
    o = []
    for j in range(len(a)):
        v = sat(mq(I[j], asyn) + (a[j] << sh), SMAX)
        I[j] = v
        v = sat(v + mq(V[j], amem), SMAX)
        if v > th:
            o.append(j)
            v -= th
        V[j] = v
    return o


def update(y, pre, post):
    """§9 with §7: W += sround(pre x clamp(target - post, +-127) * lr_m, lr_s), one generator tick per
    input row (every lane ticks; lane j rounds class j)."""
    e = []
    for j in range(M.NO):
        d = (M.TGH if j == y else M.TGL) - post[j]
        e.append(-127 if d < -127 else 127 if d > 127 else d)
    for i in range(M.NH):
        g = pre[i] * M.LRM
        for j in range(M.NO + 1):       # xorshift32 (13, 17, 5) on the halves of lane j
            h = HI[j]
            l = LO[j]
            h ^= (h << 13 | l >> 3) & 65535
            l ^= l << 13 & 65535
            l ^= h >> 1
            h ^= (h << 5 | l >> 11) & 65535
            l ^= l << 5 & 65535
            HI[j] = h
            LO[j] = l
            if j < M.NO:                # the rounding bits: the lane's top lr_s bits (1 <= lr_s <= 16)
                W[i * M.NO + j] = sat(W[i * M.NO + j] + (g * e[j] + (h >> 16 - M.LRS) >> M.LRS), 127)


def rows(t):
    """The summed frozen-layer rows of the inputs active at step t (BM), read from model.blob."""
    a = [0] * M.NH
    f = None
    r = -M.PER                      # the first row in B
    for q in range(M.NB):
        v = BM[t * M.NB + q]
        i = q << 3
        while v:
            if v & 1:               # input i is active: add its row
                if f is None:
                    f = fopen(M.OFF0)
                while i >= r + M.PER:
                    r += M.PER
                    f.readinto(B)
                for j in range(M.NH):
                    a[j] += B[(i - r) * M.NH + j]
            v >>= 1
            i += 1
    if f:
        f.close()
    return a
