"""Optional fast kernels for the hot loop (the sum of the weight rows of the active inputs).

Same signature and same bits as runtime.accumulate_rows(W, n_out, idx, vals, n, acc) (and, for SOLSA's
full traces, as the e/G loop of learning.Solsa.after_step):
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
    micropython = None  # type: ignore[assignment]  # CPython: no viper
    _VIPER = False

rows_viper = None
solsa_full_viper = None


def _viper_source():
    """The kernels' source for this port. A ptr32 load gives a machine word: on a 64-bit port it is
    zero-extended, so a negative int32 item needs its sign restored (each `v = SIGNED(v)` line below); on
    a 32-bit port the word is already signed, and the 64-bit fix cannot even be written there (0x7FFFFFFF
    is not a small int: ViperTypeError), so those lines go."""
    import sys
    wide = sys.maxsize > 0x7FFFFFFF
    out = []
    for line in _KERNELS.split("\n"):
        if " = SIGNED(" not in line:
            out.append(line)
        elif wide:
            indent = line[:len(line) - len(line.lstrip())]
            name = line.strip().split(" ")[0]
            out.append("%sif %s > 0x7FFFFFFF:" % (indent, name))
            out.append("%s    %s = %s - 0x7FFFFFFF - 0x7FFFFFFF - 2" % (indent, name, name))
    return "\n".join(out)


_KERNELS = """
@micropython.viper
def rows_viper(W, n_out: int, idx, vals, n: int, acc):
    # idx: array('H') of input indices, vals: bytearray of their values (binning.Binner, runtime.LayerState)
    w = ptr8(W)
    a = ptr32(acc)
    pi = ptr16(idx)
    pv = ptr8(vals)
    for j in range(n_out):
        a[j] = 0
    for k in range(n):
        base = pi[k] * n_out
        c = pv[k]
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


@micropython.viper
def solsa_full_viper(e, G, x, vec) -> int:
    # vec = [n_in, n_out, a_mem, reset_path, phi[n_out], rho[n_out]] (array('i'); rho: the §10.5b reset
    # factor); returns the number of saturations. Products stay below 2**31: |e| < 2**19, a, |phi|, rho <= 4096.
    pe = ptr32(e)
    pg = ptr32(G)
    px = ptr32(x)
    pv = ptr32(vec)
    n_in = pv[0]
    n_out = pv[1]
    a_mem = pv[2]
    reset_path = pv[3]
    m = 524287
    gm = 8388607
    n = 0
    for i in range(n_in):
        xi = px[i]
        xi = SIGNED(xi)
        base = i * n_out
        for j in range(n_out):
            v = pe[base + j]
            if v == 0 and xi == 0:
                continue
            v = SIGNED(v)
            if v >= 0:
                v = (v * a_mem) >> 12
            else:
                v = 0 - (((0 - v) * a_mem) >> 12)
            v += xi
            if v > m:
                v = m
                n += 1
            elif v < 0 - m:
                v = 0 - m
                n += 1
            f = pv[4 + j]
            f = SIGNED(f)
            if f != 0 and v != 0:
                p = v * f
                if p >= 0:
                    p = p >> 12
                else:
                    p = 0 - ((0 - p) >> 12)
                g = pg[base + j]
                g = SIGNED(g)
                g = g + p
                if g > gm:
                    g = gm
                    n += 1
                elif g < 0 - gm:
                    g = 0 - gm
                    n += 1
                pg[base + j] = g
            if reset_path:   # §10.5b: after G, every step
                k = pv[4 + n_out + j]
                if v >= 0:
                    v = (v * k) >> 12
                else:
                    v = 0 - (((0 - v) * k) >> 12)
            pe[base + j] = v
    return n
"""

if micropython is not None:
    try:
        exec(_viper_source(), globals())
    except (SyntaxError, NameError, AttributeError, ImportError):
        rows_viper = None      # a port built without the native emitters
        solsa_full_viper = None

try:
    import numpy as _np  # type: ignore[import-not-found]  # the CPython fast path only
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


def best_solsa_full():
    """The SOLSA full-trace kernel for this interpreter, or None (learning.py's plain loop)."""
    return solsa_full_viper


def best_rows():
    """The fastest available kernel with the plain path's bits (the plain one if nothing else)."""
    if rows_viper is not None:
        return rows_viper
    if _np is not None:
        return rows_numpy
    from firmware_py.runtime import accumulate_rows
    return accumulate_rows
