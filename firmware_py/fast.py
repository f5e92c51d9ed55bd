"""Optional fast kernels for the hot loop (the sum of the weight rows of the active inputs).

Same signature and same bits as runtime.accumulate_rows(W, n_out, idx, vals, n, acc):
- MicroPython: an @micropython.viper kernel (machine-word integers; safe because the exporter bounds
  every scalar-decay layer's sum below 2**30, NUMERICS.md §1, so nothing can wrap);
- CPython: a numpy kernel (guarded import; int64 products, exact).
Layers with per-input decays sum traces up to 2**19 * 127 * n_in, which may pass 31 bits: runtime.py
always uses the plain kernel for them. `best_rows()` picks what this interpreter has; tests run the
plain and the fast path on the same inputs and compare every state bit.
"""
try:
    import micropython
    _VIPER = hasattr(micropython, "viper")
except ImportError:
    micropython = None
    _VIPER = False

rows_viper = None
if micropython is not None:
    try:
        exec("""
@micropython.viper
def rows_viper(W, n_out: int, idx, vals, n: int, acc):
    w = ptr8(W)
    a = ptr32(acc)
    for j in range(n_out):
        a[j] = 0
    for k in range(n):
        base = int(idx[k]) * n_out
        c = int(vals[k])
        if c == 1:
            for j in range(n_out):
                v = int(w[base + j])
                if v > 127:
                    v -= 256
                a[j] += v
        else:
            for j in range(n_out):
                v = int(w[base + j])
                if v > 127:
                    v -= 256
                a[j] += c * v
""", globals())
    except (SyntaxError, NameError, AttributeError, ImportError):
        rows_viper = None      # a port built without the native emitters

try:
    import numpy as _np
except ImportError:
    _np = None


def rows_numpy(W, n_out, idx, vals, n, acc):
    """numpy kernel: vals[:n] @ W[idx[:n], :] in int64, written into acc."""
    if n == 0:
        for j in range(n_out):
            acc[j] = 0
        return
    Wm = _np.frombuffer(W, dtype=_np.int8).reshape(-1, n_out)
    ix = _np.asarray(idx[:n], dtype=_np.intp)
    v = _np.asarray(vals[:n], dtype=_np.int64)
    out = v @ Wm[ix].astype(_np.int64)
    for j in range(n_out):
        acc[j] = int(out[j])


def best_rows():
    """The fastest available kernel with the plain path's bits (the plain one if nothing else)."""
    if rows_viper is not None:
        return rows_viper
    if _np is not None:
        return rows_numpy
    from firmware_py.runtime import accumulate_rows
    return accumulate_rows
