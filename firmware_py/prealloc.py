"""Zero-filled arrays that need no more heap than themselves, and a pool of them reserved at power-on.

The board's biggest allocations are the model's arrays (a 578-120-10 layer's weights are one 69 KB
array). MicroPython cannot make an array of n zeros without a temporary: array(tc, bytearray(k)) copies
the k bytes, so `zeros` grows the array in place from a 1 KB zero block instead (MicroPython extends a
block in place when the blocks after it are free). That works on a fresh heap; once the firmware's code
is imported the heap is scattered (measured on the 140 KB Cortex-M3: 120 KB free, the largest run 95 KB,
and a growing 69 KB array still ran into a live object and had to move at twice its size), so main.py
(written by `snn-edge flash`, which knows the model) reserves the model's big arrays *first*, before it
imports anything else: `reserve([("b", 69360), ...])`. The runtime's allocations then take them from the
pool (`zeros` returns a reserved array of that type and length when there is one).

This module is imported before the rest of the firmware: it imports nothing of it.
"""
import gc
from array import array

GROW = 1024          # bytes: arrays bigger than this are grown in place from a zero block of this size
ITEMSIZE = {"b": 1, "B": 1, "h": 2, "H": 2, "i": 4, "I": 4}
_pool = []  # type: list  # (typecode, array) reserved and not yet taken (MicroPython arrays have no .typecode)


def _small(typecode, nbytes):
    raw = bytearray(nbytes)
    try:
        return array(typecode, raw)          # MicroPython: raw bytes become the items
    except TypeError:
        a = array(typecode)                  # CPython refuses bytes for non-'B' typecodes
        a.frombytes(bytes(raw))
        return a


def grow(typecode, n):
    """A new zero-filled array of n items, its peak heap use the array plus GROW bytes."""
    size = ITEMSIZE[typecode]
    if n * size <= GROW or not hasattr(gc, "mem_free"):
        return _small(typecode, n * size)      # small, or CPython (no fixed heap to spare: no collection)
    # Collect first: garbage still counts as used, so growth would run into it and then have to move the
    # whole array at once (twice its size for a moment) into the space a collection frees.
    gc.collect()
    block = _small(typecode, GROW)
    a = _small(typecode, 0)
    step = len(block)
    while len(a) + step <= n:
        a.extend(block)
    if len(a) < n:
        a.extend(_small(typecode, (n - len(a)) * size))
    return a


def zeros(typecode, n):
    """A zero-filled array of n items: a reserved one when the pool holds one of that type and length
    (never written before: still zeros), else a new one."""
    for k in range(len(_pool)):
        tc, a = _pool[k]
        if tc == typecode and len(a) == n:
            _pool.pop(k)
            return a
    return grow(typecode, n)


def reserve(specs):
    """Allocate arrays for [(typecode, n), ...], biggest first, into the pool; returns how many were
    reserved (a heap too small for one stops there: loading then reports what does not fit)."""
    order = sorted(specs, key=lambda s: -s[1] * ITEMSIZE[s[0]])
    done = 0
    try:
        for tc, n in order:
            _pool.append((tc, grow(tc, n)))
            done += 1
    except MemoryError:
        gc.collect()
    return done


def reserved_bytes():
    """Item bytes of the reserved arrays not yet taken (the model's fit check counts them as free)."""
    total = 0
    for tc, a in _pool:
        total += len(a) * ITEMSIZE[tc]
    return total


def release():
    """Give back what was reserved and not taken (a stored model that did not load)."""
    del _pool[:]
    gc.collect()
