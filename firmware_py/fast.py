"""Optional fast kernels for the hot loops: the network's, SOLSA's full traces, and the event path.

Same signatures and same bits as the plain loops they stand in for (tests run both on the same inputs and
compare every state bit):
- rows: runtime.accumulate_rows(W, n_out, idx, vals, n, acc) (the sum of the weight rows of the active
  inputs); Arm boards: inline Thumb assembler (rows_thumb); other MicroPython ports: an @micropython.viper kernel (machine-word integers; safe because the exporter
  bounds every scalar-decay layer's sum below 2**30, NUMERICS.md §1, so nothing can wrap); CPython: numpy
  (guarded import; int64 products, exact). Layers with per-input decays sum traces up to 2**19 * 127 * n_in,
  which may pass 31 bits: runtime.py always uses the plain kernel for them;
- lif: runtime.layer_step's neuron update; solsa_full: learning.Solsa.after_step's e/G loop; tick:
  fixedpoint.Bank.tick (the learning banks' xorshift32); filter: noise_filter.NoiseFilter.apply;
- the event path, viper only: decode (link.EventBatch.decode_into), events_bad (Device.add_events' check),
  bin (binning.Binner.add_many with its slot logic), copy (link.Deframer's byte copy without slices).
`best_*()` pick what this interpreter has (None: the caller keeps its plain loop).
"""
try:
    import micropython
    _VIPER = hasattr(micropython, "viper")
except ImportError:
    micropython = None  # type: ignore[assignment]  # CPython: no viper
    _VIPER = False

rows_viper = None
solsa_full_viper = None
lif_viper = None
events_bad_viper = None
bin_viper = None
decode_viper = None
copy_viper = None
tick_viper = None
filter_viper = None


def _viper_source(src):
    """A kernel's source for this port. A ptr32 load gives a machine word: on a 64-bit port it is
    zero-extended, so a negative int32 item needs its sign restored (each `v = SIGNED(v)` line below); on
    a 32-bit port the word is already signed, and the 64-bit fix cannot even be written there (0x7FFFFFFF
    is not a small int: ViperTypeError), so those lines go."""
    import sys
    wide = sys.maxsize > 0x7FFFFFFF
    out = []
    for line in src.split("\n"):
        if " = SIGNED(" not in line:
            out.append(line)
        elif wide:
            indent = line[:len(line) - len(line.lstrip())]
            name = line.strip().split(" ")[0]
            out.append("%sif %s > 0x7FFFFFFF:" % (indent, name))
            out.append("%s    %s = %s - 0x7FFFFFFF - 0x7FFFFFFF - 2" % (indent, name, name))
    return "\n".join(out)


# One string per kernel: a module's string constants are heap objects when it is loaded from an .mpy file,
# and a scattered heap has room for several small ones sooner than for one of 7 KB.
_KERNELS = (
"""@micropython.viper
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
""",
"""@micropython.viper
def events_bad_viper(xs, ys, ts, ps, n: int, w: int, h: int) -> int:
    # Device.add_events' check: the index of the first event outside the w x h sensor, with p not 0/1 or
    # t < 0, else -1. xs, ys: array('h'), ts: array('i'), ps: array('b') (the handler's decoded batch);
    # unsigned loads make a negative x, y or p large, so they fail the range tests too.
    px = ptr16(xs)
    py = ptr16(ys)
    pt = ptr32(ts)
    pp = ptr8(ps)
    for e in range(n):
        t = pt[e]
        t = SIGNED(t)
        if px[e] >= w or py[e] >= h or pp[e] > 1 or t < 0:
            return e
    return -1
""",
"""@micropython.viper
def filter_viper(xs, ys, ts, ps, n: int, last, geo) -> int:
    # noise_filter.NoiseFilter.apply: keep an event when a 4-neighbour pixel fired less than geo[2] us before
    # it; kept events move to the front; every event marks its pixel (last[x * h + y] = t + 1). geo = [w, h, ft]
    px = ptr16(xs)
    py = ptr16(ys)
    pt = ptr32(ts)
    pp = ptr8(ps)
    pl = ptr32(last)
    pg = ptr32(geo)
    w = pg[0]
    h = pg[1]
    ft = pg[2]
    kept = 0
    for i in range(n):
        x = int(px[i])
        y = int(py[i])
        t = pt[i]
        q = x * h + y
        keep = 0
        if x > 0:
            v = pl[q - h]
            if v != 0 and t - v + 1 < ft:
                keep = 1
        if keep == 0 and x < w - 1:
            v = pl[q + h]
            if v != 0 and t - v + 1 < ft:
                keep = 1
        if keep == 0 and y > 0:
            v = pl[q - 1]
            if v != 0 and t - v + 1 < ft:
                keep = 1
        if keep == 0 and y < h - 1:
            v = pl[q + 1]
            if v != 0 and t - v + 1 < ft:
                keep = 1
        pl[q] = t + 1
        if keep != 0:
            px[kept] = x
            py[kept] = y
            pt[kept] = t
            pp[kept] = pp[i]
            kept += 1
    return kept
""",
"""@micropython.viper
def tick_viper(hi, lo, n: int):
    # fixedpoint.Bank.tick: xorshift32 (13, 17, 5) on n lanes held as 16-bit halves (every value < 2**29)
    ph = ptr16(hi)
    pl = ptr16(lo)
    for k in range(n):
        h = ph[k]
        lw = pl[k]
        h ^= ((h << 13) | (lw >> 3)) & 0xFFFF
        lw ^= (lw << 13) & 0xFFFF
        lw ^= h >> 1
        h ^= ((h << 5) | (lw >> 11)) & 0xFFFF
        lw ^= (lw << 5) & 0xFFFF
        ph[k] = h
        pl[k] = lw
""",
"""@micropython.viper
def copy_viper(dst, d0: int, src, s0: int, k: int):
    # dst[d0:d0 + k] = src[s0:s0 + k] for the link's deframer (link.Deframer._put), without the two
    # memoryview slices (heap objects) a slice assignment makes; the caller keeps both ranges in bounds
    pd = ptr8(dst)
    ps = ptr8(src)
    for i in range(k):
        pd[d0 + i] = ps[s0 + i]
""",
"""@micropython.viper
def decode_viper(d, count: int, t_base: int, xs, ys, ts, ps):
    # link.EventBatch.decode_into for a payload d (its header already checked by bind): event i's six
    # base-128 digits (each + DIGIT_OFFSET 4; 66052 = 4 * (1 + 128 + 16384)) into x, y array('h'),
    # t array('i'), p array('b'). The caller keeps t_base + 2**19 below 2**30 (small ints throughout).
    pd = ptr8(d)
    px = ptr16(xs)
    py = ptr16(ys)
    pt = ptr32(ts)
    pp = ptr8(ps)
    k = 7
    for i in range(count):
        lo = int(pd[k]) + (int(pd[k + 1]) << 7) + (int(pd[k + 2]) << 14) - 66052
        hi = int(pd[k + 3]) + (int(pd[k + 4]) << 7) + (int(pd[k + 5]) << 14) - 66052
        px[i] = lo & 0x7FF
        py[i] = hi & 0x7FF
        pt[i] = t_base + (lo >> 11) + ((hi >> 12) << 10)
        pp[i] = (hi >> 11) & 1
        k += 6
""",
"""@micropython.viper
def bin_viper(xs, ys, ts, ps, n: int, geo, latest, step, count, neuron, nxt, head) -> int:
    # binning.Binner.add_many + _count for n checked events, slots included (the same lists, in the same
    # order): geo = [cx, cy, cw, ch, f, out_w, out_h, dt, n_steps, dropped, used, slots] (array('i');
    # dropped and used are updated). Returns -1, or the index of the first event that found every slot
    # taken (the events before it are counted, as the plain path's MemoryError leaves them).
    px = ptr16(xs)
    py = ptr16(ys)
    pt = ptr32(ts)
    pp = ptr8(ps)
    pg = ptr32(geo)
    pl = ptr16(latest)
    pst = ptr16(step)
    pc = ptr8(count)
    pn = ptr16(neuron)
    pnx = ptr16(nxt)
    phd = ptr16(head)
    cx = pg[0]
    cx = SIGNED(cx)
    cy = pg[1]
    cy = SIGNED(cy)
    cw = pg[2]
    ch = pg[3]
    f = pg[4]
    out_w = pg[5]
    out_h = pg[6]
    dt = pg[7]
    n_steps = pg[8]
    used = pg[10]
    slots = pg[11]
    dropped = 0
    for e in range(n):
        xc = int(px[e]) - cx
        yc = int(py[e]) - cy
        t = pt[e]
        t = SIGNED(t)
        k = t // dt
        if xc < 0 or yc < 0 or xc >= cw or yc >= ch or k >= n_steps:
            dropped += 1
            continue
        xd = xc // f
        yd = yc // f
        if xd >= out_w or yd >= out_h:
            dropped += 1
            continue
        nn = (int(pp[e]) * out_h + yd) * out_w + xd
        sl = int(pl[nn])
        fresh = 1
        if sl != 0xFFFF:
            ks = int(pst[sl])
            if ks == k:
                c = int(pc[sl])
                if c < 255:
                    pc[sl] = c + 1
                continue
            if ks > k:
                fresh = 0
        s = 0xFFFF
        if fresh == 0:
            # an event out of time order: search step k's list
            s = int(phd[k])
            while s != 0xFFFF and int(pn[s]) != nn:
                s = int(pnx[s])
        if s == 0xFFFF:
            if used >= slots:
                pg[9] = pg[9] + dropped
                pg[10] = used
                return e
            s = used
            used += 1
            pn[s] = nn
            pst[s] = k
            pc[s] = 0
            pnx[s] = phd[k]
            phd[k] = s
            if fresh:
                pl[nn] = s
        c = int(pc[s])
        if c < 255:
            pc[s] = c + 1
    pg[9] = pg[9] + dropped
    pg[10] = used
    return -1
""",
"""@micropython.viper
def lif_viper(I, V, vpre, s, out, acc, vec) -> int:
    # NUMERICS.md §4 steps 2-4 for a scalar-decay layer after the row sums acc (runtime.layer_step's loops):
    # vec = [n_out, a_syn, F, a_mem, theta, lif] (array('i')); I, V, vpre, acc: array('i'); s: bytearray;
    # out: array('H'). Returns the saturation count + (number of spikes << 16). Products stay below 2**31:
    # |I|, |V| < 2**19, decays <= 4096; a current acc << F beyond +-2 * 524287 saturates whatever I held,
    # so it is never shifted (a layer outside the exporter's bound cannot wrap the machine word).
    pI = ptr32(I)
    pV = ptr32(V)
    pP = ptr32(vpre)
    pa = ptr32(acc)
    pv = ptr32(vec)
    ps = ptr8(s)
    po = ptr16(out)
    n_out = pv[0]
    a = pv[1]
    F = pv[2]
    am = pv[3]
    theta = pv[4]
    lif = pv[5]
    m = 524287
    lim = (m + m) >> F
    nsat = 0
    nout = 0
    for j in range(n_out):
        v = pI[j]
        v = SIGNED(v)
        if v >= 0:
            v = (v * a) >> 12
        else:
            v = 0 - (((0 - v) * a) >> 12)
        c = pa[j]
        c = SIGNED(c)
        if c > lim:
            v = m + 1
        elif c < 0 - lim:
            v = 0 - m - 1
        else:
            v = v + (c << F)
        if v > m:
            v = m
            nsat += 1
        elif v < 0 - m:
            v = 0 - m
            nsat += 1
        pI[j] = v
        w = pV[j]
        w = SIGNED(w)
        if w >= 0:
            w = (w * am) >> 12
        else:
            w = 0 - (((0 - w) * am) >> 12)
        w = w + v
        if w > m:
            w = m
            nsat += 1
        elif w < 0 - m:
            w = 0 - m
            nsat += 1
        pP[j] = w
        if lif and w > theta:
            ps[j] = 1
            po[nout] = j
            nout += 1
            w = w - theta
        else:
            ps[j] = 0
        pV[j] = w
    return nsat + (nout << 16)
""",
"""@micropython.viper
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
""",
)

# Inline Thumb assembler for the row sums on Arm cores: one string per kernel, compiled where the port has
# the inline assembler (qemu/stm32/rp2/nrf ports); elsewhere the compile fails and rows_viper serves.
_THUMB_KERNELS = (
"""@micropython.asm_thumb
def _rows_asm(r0, r1, r2, r3):
    # rows on Thumb (Cortex-M0+/M3/M4: RP2040, STM32, nRF), about 10 instructions per weight where viper
    # takes about 70 (measured on the Cortex-M3). r0 = W (int8 rows), r1 = acc (int32), r2 = idx (u16),
    # r3 = ctl (array('i')): [n_out, n, vals address, scratch: W, idx pointer]. acc = 0, then for each
    # active input k: row = W + idx[k] * n_out, acc[j] += sign-extended row[j] * vals[k] (the multiply is
    # skipped when vals[k] is 1, as it is for spikes and binary frames). r4-r7 are saved by the entry code.
    str(r0, [r3, 12])
    ldr(r4, [r3, 0])
    mov(r5, 0)
    mov(r6, r1)
    lsl(r4, r4, 2)
    add(r4, r4, r1)
    label(zero)
    cmp(r6, r4)
    bge(zero_done)
    str(r5, [r6, 0])
    add(r6, r6, 4)
    b(zero)
    label(zero_done)
    str(r2, [r3, 16])
    label(outer)
    ldr(r5, [r3, 4])
    cmp(r5, 0)
    ble(done)
    sub(r5, r5, 1)
    str(r5, [r3, 4])
    ldr(r2, [r3, 16])
    ldrh(r4, [r2, 0])
    add(r2, r2, 2)
    str(r2, [r3, 16])
    ldr(r7, [r3, 8])
    ldrb(r0, [r7, 0])
    add(r7, r7, 1)
    str(r7, [r3, 8])
    ldr(r5, [r3, 0])
    mul(r4, r5)
    ldr(r7, [r3, 12])
    add(r4, r4, r7)
    add(r5, r4, r5)
    mov(r6, r1)
    cmp(r0, 1)
    bne(general)
    label(ones)
    ldrb(r7, [r4, 0])
    lsl(r7, r7, 24)
    asr(r7, r7, 24)
    ldr(r2, [r6, 0])
    add(r2, r2, r7)
    str(r2, [r6, 0])
    add(r4, r4, 1)
    add(r6, r6, 4)
    cmp(r4, r5)
    blt(ones)
    b(outer)
    label(general)
    ldrb(r7, [r4, 0])
    lsl(r7, r7, 24)
    asr(r7, r7, 24)
    mul(r7, r0)
    ldr(r2, [r6, 0])
    add(r2, r2, r7)
    str(r2, [r6, 0])
    add(r4, r4, 1)
    add(r6, r6, 4)
    cmp(r4, r5)
    blt(general)
    b(outer)
    label(done)
""",
"""@micropython.asm_thumb
def _addr(r0):
    # a buffer's address as an int (below 2**30 in the 0x20000000 SRAM of these cores: no allocation)
    mov(r0, r0)
""",
)

if micropython is not None:
    # One kernel per exec: compiling them together needs one block as big as all of them (7 KB measured),
    # more than a small or scattered heap has. A kernel that does not compile (a port built without the
    # native emitters, no heap left) stays None and its caller keeps the plain loop.
    for _src in _KERNELS:
        try:
            exec(_viper_source(_src), globals())
        except (SyntaxError, NameError, AttributeError, ImportError, MemoryError):
            pass
    for _src in _THUMB_KERNELS:
        try:
            exec(_src, globals())
        except Exception:   # noqa: BLE001 - no inline assembler here (x86, Xtensa, RISC-V): viper serves
            break
    del _src

_rows_asm = globals().get("_rows_asm")
_addr = globals().get("_addr")
_rows_ctl = None


def rows_thumb(W, n_out, idx, vals, n, acc):
    """runtime.accumulate_rows' bits with the Thumb kernel (the 4 registers an assembler function takes
    carry W, acc, idx and a control array with the rest)."""
    c = _rows_ctl
    c[0] = n_out
    c[1] = n
    c[2] = _addr(vals)
    _rows_asm(W, acc, idx, c)


if _rows_asm is not None and _addr is not None:
    from array import array as _array
    _rows_ctl = _array("i", bytes(20))

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


def best_events():
    """(events_bad, bin) kernels for the event path (Device.add_events, Binner.add_many), or None."""
    if bin_viper is None or events_bad_viper is None:
        return None
    return events_bad_viper, bin_viper


def best_copy():
    """The deframer's byte copy (link.Deframer's `copy`), or None (slice assignment)."""
    return copy_viper


def best_decode():
    """The EVENTS payload decoder (handler.DeviceHandler.events), or None (link.EventBatch.decode_into)."""
    return decode_viper


def best_lif():
    """The neuron-update kernel of scalar-decay layers for this interpreter, or None (runtime.py's loops)."""
    return lif_viper


def best_filter():
    """The noise filter's kernel (noise_filter.NoiseFilter.use_kernel), or None (its loop)."""
    return filter_viper


def best_tick():
    """The learning banks' tick (fixedpoint.Bank.use_kernel), or None (Bank.tick's loop)."""
    return tick_viper


def best_solsa_full():
    """The SOLSA full-trace kernel for this interpreter, or None (learning.py's plain loop)."""
    return solsa_full_viper


def best_rows():
    """The fastest available kernel with the plain path's bits (the plain one if nothing else)."""
    if _rows_ctl is not None:
        return rows_thumb
    if rows_viper is not None:
        return rows_viper
    if _np is not None:
        return rows_numpy
    from firmware_py.runtime import accumulate_rows
    return accumulate_rows
