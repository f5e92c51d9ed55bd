"""The viper event kernels against the plain Python paths they replace, on random input (MicroPython).

Usage: micropython tests/firmware/check_event_kernels_mpy.py FW_PATH
- fast.decode_viper vs link.EventBatch.decode_into on random EVENTS payloads (any byte values in the
  event digits, t_base up to the viper limit);
- Binner with fast.bin_viper vs the plain Binner: random events in and out of time order, outside the
  crop, repeats, on count and binary specs and until the slots run out; the same dense frames, slot lists,
  dropped and used counts, and the same MemoryError at the same event.
Prints "ok N" (N cases) or raises.
"""
import sys

sys.path.insert(0, ".")
if sys.argv[1] != ".":
    sys.path.insert(0, sys.argv[1])
from array import array  # noqa: E402

from firmware_py import fast, link  # noqa: E402
from firmware_py.binning import BINARY, COUNT, Binner, BinSpec  # noqa: E402
from firmware_py.handler import _FAST_T_BASE  # noqa: E402

assert fast.decode_viper is not None and fast.bin_viper is not None, "viper kernels did not compile"
seed = [12345]


def rand(n):
    """xorshift-ish LCG kept below 2**30 (no big ints on 32-bit ports)."""
    seed[0] = (seed[0] * 1103515 + 12345) & 0x3FFFFFFF
    return seed[0] % n


def arrays(n):
    return (array("h", bytes(2 * n)), array("h", bytes(2 * n)), array("i", bytes(4 * n)), array("b", bytes(n)))


cases = 0
# -- decoding
for trial in range(200):
    n = rand(170)
    t_base = rand(_FAST_T_BASE + 1) if trial % 3 else rand(1000)
    head = bytearray()
    link.put_digits(t_base, 5, head)
    link.put_digits(n, 2, head)
    body = bytearray(6 * n)
    for k in range(6 * n):
        body[k] = rand(256) if trial % 2 else 4 + rand(128)
    batch = link.EventBatch().bind(memoryview(bytes(head) + bytes(body)))
    a = arrays(n)
    b = arrays(n)
    batch.decode_into(*a)
    fast.decode_viper(batch.data, n, batch.t_base, *b)
    for j in range(4):
        assert list(a[j]) == list(b[j]), ("decode", trial, j)
    cases += 1

# -- binning
for trial in range(120):
    w = 20 + rand(30)
    h = 20 + rand(30)
    spec = BinSpec(w, h, 1000 + rand(9000), 5 + rand(30), downsample=1 + rand(3),
                   crop=(rand(4), rand(4), w - rand(8), h - rand(8)), mode=COUNT if trial % 2 else BINARY)
    slots = 10 + rand(400) if trial % 4 == 0 else 3072
    plain = Binner(spec, slots)
    viper = Binner(spec, slots)
    viper.use_kernel(fast.bin_viper)
    full = [None, None]
    for batch_no in range(1 + rand(6)):
        n = 1 + rand(300)
        xs, ys, ts, ps = arrays(n)
        t = rand(spec.dt_us * spec.n_steps)
        for e in range(n):
            xs[e] = rand(w)
            ys[e] = rand(h)
            ps[e] = rand(2)
            # mostly in time order, some late, some beyond the window
            t = t + rand(400) if rand(10) else rand(spec.dt_us * spec.n_steps + 5000)
            ts[e] = t
            if rand(8) == 0 and e:       # a repeat of the previous pixel
                xs[e] = xs[e - 1]
                ys[e] = ys[e - 1]
        for k, b in enumerate((plain, viper)):
            if full[k] is None:
                try:
                    b.add_many(xs, ys, ts, ps, n)
                except MemoryError:
                    full[k] = batch_no
    assert full[0] == full[1], ("slots ran out at different batches", trial, full)
    assert plain.used == viper.used and plain.dropped == viper.dropped, ("counts", trial)
    for j in range(plain.used):
        assert (plain.neuron[j], plain.step[j], plain.count[j], plain.nxt[j]) == \
               (viper.neuron[j], viper.step[j], viper.count[j], viper.nxt[j]), ("slot", trial, j)
    assert list(plain.head) == list(viper.head) and list(plain.latest) == list(viper.latest), ("lists", trial)
    assert plain.dense() == viper.dense(), ("frames", trial)
    cases += 1
print("ok", cases)
