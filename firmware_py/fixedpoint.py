"""Integer primitives of docs/NUMERICS.md: the one definition every executor shares.

Pure Python (no numpy), runs unchanged on MicroPython and CPython. On a 32-bit MicroPython an int of 2**30
or more is a heap object, so what the device calls in its hot loops (mul_q12, Bank, sround_mul,
apply_update) never forms one: same results, nothing allocated. The numpy simulator
(converters/intsim.py) vectorises these same formulas and is tested against this module; the golden
vectors in tests/golden/ are generated from it. Section numbers refer to docs/NUMERICS.md.
"""

from array import array

NUMERICS_VERSION = 2

MASK32 = 0xFFFFFFFF
W_BITS = 8
W_MAX = 127                      # int8 weights, symmetric: -128 never appears
STATE_BITS = 20
STATE_MAX = (1 << (STATE_BITS - 1)) - 1   # 524287
TRACE_BITS = 20
TRACE_MAX = (1 << (TRACE_BITS - 1)) - 1
GRAD_BITS = 24
GRAD_MAX = (1 << (GRAD_BITS - 1)) - 1
Q = 12
Q_ONE = 1 << Q                   # 4096 = 1.0 in Q12
A_MAX = Q_ONE                    # decays in [0, 4096]
A_LEARN_MAX = Q_ONE - 1          # a learned decay stays below 1
TRACE_FRAC = 6                   # one input spike adds 64 to an input trace
SIG_LUT_SIZE = 256
ZERO_SEED_STATE = 0x6D2B79F5     # xorshift32 must never hold 0
LANE_MUL = 0x9E3779B9
LANE_WARMUP = 4
Q_MASK = Q_ONE - 1
SPLIT = 1 << 18                  # |x| below this: x * a (a <= 4096) stays below 2**30, a small int everywhere
SPLIT_G = 1 << 21                # |g| below this: g * lr_m (lr_m < 256) plus a 28-bit draw stays below 2**30
DELTA_MAX = 1 << 21              # sround_mul's results are clipped here: beyond any 20-bit value plus a delta


# ---- §0 arithmetic -------------------------------------------------------------------------

def trunc_div(x, d):
    """x / d truncated toward zero (d > 0), like ONNX integer Div and C '/'."""
    if x >= 0:
        return x // d
    return -((-x) // d)


def floor_shift(x, k):
    """x / 2**k rounded toward minus infinity (Python's >>)."""
    return x >> k


def mul_q12(x, a):
    """x * a / 4096 truncated toward zero: negative values decay to 0 like positive ones.

    |x| < 2**20 and |a| <= 4096 here, so x * a can reach 2**31: on a 32-bit MicroPython an int of 2**30 or
    more is a heap object, so a large |x| is split at bit 12 (x = xh * 4096 + xl, exact:
    (x * a) >> 12 == xh * a + ((xl * a) >> 12) for x, a >= 0) and nothing is ever allocated."""
    if a < 0:
        return -mul_q12(x, -a)
    if x >= 0:
        if x < SPLIT:
            return (x * a) >> Q
        return (x >> Q) * a + (((x & Q_MASK) * a) >> Q)
    x = -x
    if x < SPLIT:
        return -((x * a) >> Q)
    return -((x >> Q) * a + (((x & Q_MASK) * a) >> Q))


def decay(x, a):
    """Q12 decay of a state value; a in [0, 4096]."""
    return mul_q12(x, a)


def scale_pow2(x, k):
    """x * 2**k for k >= 0, else x / 2**-k truncated toward zero."""
    if k >= 0:
        return x << k
    return trunc_div(x, 1 << (-k))


def sat(x, m):
    """Clamp x to [-m, m] (symmetric)."""
    if x > m:
        return m
    if x < -m:
        return -m
    return x


def clamp(x, lo, hi):
    if x < lo:
        return lo
    if x > hi:
        return hi
    return x


def solsa_reset_factor(h, theta, sg_shift):
    """§10.5b: Q12 factor 1 - theta * surrogate' of the soft reset, max(0, .) so it never flips a sign.

    h is the Q12 triangle surrogate (peak 4096, half-width 4096 << sg_shift state units), i.e.
    surrogate' = h / 2**(24 + sg_shift) per state unit; h * theta < 2**31, so a large theta is split at
    bit 12 (h * theta >> 12 == h * (theta >> 12) + (h * (theta & 4095) >> 12), exact) to stay small."""
    if theta < SPLIT:
        r = Q_ONE - ((h * theta) >> (Q + sg_shift))
    else:
        r = Q_ONE - ((h * (theta >> Q) + ((h * (theta & Q_MASK)) >> Q)) >> sg_shift)
    return r if r > 0 else 0


def surrogate_shift(theta):
    """The sg_shift that makes SOLSA's h fall from 4096 at theta to 0 at |Vpre - theta| = 2 theta:
    max(0, bit_length(2 theta) - 12) (§10.8.2; the last layer's default sg_shift). A loop, not
    int.bit_length, which MicroPython lacks."""
    n = 0
    v = 2 * theta
    while v > 0:
        v >>= 1
        n += 1
    return n - Q if n > Q else 0


def q12_from_float(alpha):
    """Host helper: a float decay/fraction in [0, 1] as Q12, round half up."""
    v = int(alpha * Q_ONE + 0.5)
    return clamp(v, 0, A_MAX)


# ---- §6 xorshift32 --------------------------------------------------------------------------

def xorshift32(s):
    """One step of Marsaglia's xorshift32 (13, 17, 5); the new state is also the output."""
    s ^= (s << 13) & MASK32
    s ^= s >> 17
    s ^= (s << 5) & MASK32
    return s


def seed_state(seed):
    """A valid (non-zero) generator state from any integer seed: the zero-seed rule."""
    s = seed & MASK32
    if s == 0:
        s = ZERO_SEED_STATE
    return s


def lane_seeds(seed, n):
    """States of a bank of n independent lanes (§6): lane k mixes k into the seed, then warms up."""
    out = []
    for k in range(n):
        s = seed_state((seed ^ (((k + 1) * LANE_MUL) & MASK32)) & MASK32)
        for _ in range(LANE_WARMUP):
            s = xorshift32(s)
        out.append(s)
    return out


def bits(r, k):
    """Top k bits of a 32-bit draw (k in 0..32)."""
    if k <= 0:
        return 0
    return r >> (32 - k)


def tick(lanes):
    """Advance every lane once (in place); returns the list of draws."""
    for k in range(len(lanes)):
        lanes[k] = xorshift32(lanes[k])
    return lanes


class Bank:
    """A bank of n xorshift32 lanes (§6) as the device holds it: each 32-bit state as two 16-bit halves
    (array 'H'), so that a tick and a draw never form an int of 2**30 or more. Indexing reads and writes
    the 32-bit states (checkpoints, reports: those may allocate); `list(bank)` gives them all."""

    def __init__(self, seed, n):
        self.seed = seed
        self.hi = array("H", bytes(2 * n))
        self.lo = array("H", bytes(2 * n))
        states = lane_seeds(seed, n)       # big ints on a 32-bit port: once, here, never per sample
        for k in range(n):
            self[k] = states[k]
        self.hi0 = array("H", self.hi)      # the seeded states, for reseed()
        self.lo0 = array("H", self.lo)
        self.kernel = None

    def use_kernel(self, kernel):
        """Tick with a fast kernel (fast.tick_viper: same bits), or None for the loop below."""
        self.kernel = kernel

    def reseed(self):
        """Back to lane_seeds(seed, n) (what `reset`, and GEM's firing banks at every sample, do)."""
        hi = self.hi
        lo = self.lo
        hi0 = self.hi0
        lo0 = self.lo0
        for k in range(len(hi)):
            hi[k] = hi0[k]
            lo[k] = lo0[k]

    def __len__(self):
        return len(self.hi)

    def __getitem__(self, k):
        return (self.hi[k] << 16) | self.lo[k]

    def __setitem__(self, k, v):
        self.hi[k] = (v >> 16) & 0xFFFF
        self.lo[k] = v & 0xFFFF

    def tick(self):
        """xorshift32 (13, 17, 5) on every lane, in halves: every intermediate is below 2**29."""
        hi = self.hi
        lo = self.lo
        if self.kernel is not None:
            self.kernel(hi, lo, len(hi))
            return
        for k in range(len(hi)):
            h = hi[k]
            lw = lo[k]
            h ^= ((h << 13) | (lw >> 3)) & 0xFFFF       # s ^= s << 13
            lw ^= (lw << 13) & 0xFFFF
            lw ^= h >> 1                                # s ^= s >> 17
            h ^= ((h << 5) | (lw >> 11)) & 0xFFFF       # s ^= s << 5
            lw ^= (lw << 5) & 0xFFFF
            hi[k] = h
            lo[k] = lw

    def bits(self, k, nb):
        """bits(lane k, nb): the top nb bits of its state, nb in 0..30 (a small int)."""
        if nb <= 0:
            return 0
        if nb <= 16:
            return self.hi[k] >> (16 - nb)
        return (self.hi[k] << (nb - 16)) | (self.lo[k] >> (32 - nb))


def bank_of(states):
    """A Bank holding the given 32-bit lane states (and reseeding to them)."""
    b = Bank(1, 0)
    b.hi = array("H", bytes(2 * len(states)))
    b.lo = array("H", bytes(2 * len(states)))
    for k in range(len(states)):
        b[k] = states[k]
    b.hi0 = array("H", b.hi)
    b.lo0 = array("H", b.lo)
    return b


# ---- §7 stochastic rounding -----------------------------------------------------------------

def sround(y, k, r):
    """floor((y + r) / 2**k), r a k-bit uniform draw: unbiased rounding of y / 2**k."""
    return (y + r) >> k


def sround_mul(g, m, s, r):
    """sround(g * m, s, r) for |g| < 2**24, 0 <= m < 256, s in 0..30 and r a draw of s bits, without an
    int of 2**30 or more: g * m + r is formed only when it stays small; otherwise g * m is split at bit 12
    (g * m = yh * 4096 + yl, 0 <= yl < 4096; exact). When s < 12 a result of magnitude DELTA_MAX - 4096 or
    more may come back as +-DELTA_MAX: every caller adds it to a value of at most 20 bits and clamps to
    20 bits or less, so the outcome and the saturation count are the same."""
    if -SPLIT_G < g < SPLIT_G and s <= 28:
        return (g * m + r) >> s
    yh = (g >> Q) * m
    yl = (g & Q_MASK) * m
    yh += yl >> Q
    yl &= Q_MASK
    if s >= Q:
        return (yh + (r >> Q) + ((yl + (r & Q_MASK)) >> Q)) >> (s - Q)
    lim = DELTA_MAX >> (Q - s)
    if yh >= lim:
        return DELTA_MAX
    if yh < -lim:
        return -DELTA_MAX
    return (yh << (Q - s)) + ((yl + r) >> s)


def apply_update(W, n_in, n_out, G, lr_m, lr_s, lanes, a_syn=None, Ga=None, lra_m=0, lra_s=0):
    """§7: W (flat row-major, in place) += sround(G * lr_m, lr_s); optional per-input a_syn too.

    `lanes` is the layer's learning bank of n_out + 1 lanes (a Bank, or a list of 32-bit states),
    advanced in place by n_in ticks. Returns the number of clamps that changed a value (saturation count).
    G is flat row-major, or an object whose `row(i)` hands out row i (n_out items) or None when the row is
    all zeros: a zero G moves no weight (sround(0) = r >> s = 0 since r < 2**s), so only the bank ticks.
    """
    bank = lanes if isinstance(lanes, Bank) else bank_of(lanes)
    bits = bank.bits
    tick = bank.tick
    row_of = getattr(G, "row", None)
    nsat = 0
    g = G
    gb = 0
    for i in range(n_in):
        tick()
        base = i * n_out
        if row_of is None:
            gb = base
        else:
            g = row_of(i)
        if g is not None:
            for j in range(n_out):
                w = W[base + j] + sround_mul(g[gb + j], lr_m, lr_s, bits(j, lr_s))
                if w > W_MAX:
                    w = W_MAX
                    nsat += 1
                elif w < -W_MAX:
                    w = -W_MAX
                    nsat += 1
                W[base + j] = w
        if a_syn is not None and Ga is not None:
            a = a_syn[i] + sround_mul(Ga[i], lra_m, lra_s, bits(n_out, lra_s))
            if a > A_LEARN_MAX:
                a = A_LEARN_MAX
                nsat += 1
            elif a < 0:
                a = 0
                nsat += 1
            a_syn[i] = a
    if bank is not lanes:
        for k in range(len(lanes)):
            lanes[k] = bank[k]
    return nsat


# ---- §8 lookup tables -----------------------------------------------------------------------

def sigmoid_lut():
    """SIG[k] = P(spike) in 1/65536 for potential (k - 128 + 0.5) / 16 (IEEE double, host side)."""
    import math
    out = []
    for k in range(SIG_LUT_SIZE):
        z = (k - 128 + 0.5) / 16.0
        out.append(min(65535, int(math.floor(65536.0 / (1.0 + math.exp(-z)) + 0.5))))
    return out


def logsig_lut():
    """LOGSIG[k] = ln(sigmoid((k - 128 + 0.5) / 16)) in 1/256 nat (<= 0)."""
    import math
    out = []
    for k in range(SIG_LUT_SIZE):
        z = (k - 128 + 0.5) / 16.0
        out.append(int(math.floor(256.0 * -math.log(1.0 + math.exp(-z)) + 0.5)))
    return out


def exp_lut():
    """EXP_LUT[k] = exp(-k / 16) in 1/65536."""
    import math
    return [int(math.floor(65536.0 * math.exp(-k / 16.0) + 0.5)) for k in range(SIG_LUT_SIZE)]


def sigmoid_index(u, sig_shift):
    """Table index of a potential u in state units (floor shift, clamped to the table)."""
    return clamp((u >> sig_shift) + 128, 0, SIG_LUT_SIZE - 1)


# ---- §4 one layer step (reference: clear, not fast) -----------------------------------------

class Layer:
    """Integer parameters of one layer; W is a flat row-major list [n_in * n_out]."""

    def __init__(self, W, n_in, n_out, a_syn, a_mem, theta, shift, kind="lif"):
        self.W = W
        self.n_in = n_in
        self.n_out = n_out
        self.a_syn = a_syn            # int, or list [n_in] (per-input decay)
        self.a_mem = a_mem
        self.theta = theta
        self.shift = shift            # F
        self.kind = kind

    def per_input(self):
        return isinstance(self.a_syn, list)


def layer_state(layer):
    """Zero state: I, V [n_out], x [n_in] (only used with per-input decay)."""
    x = [0] * layer.n_in if layer.per_input() else []
    return {"I": [0] * layer.n_out, "V": [0] * layer.n_out, "x": x}


def layer_step(layer, s_in, st):
    """§4 for one layer. s_in: list of n_in ints >= 0. Updates st in place.

    Returns (s_out list of 0/1, Vpre list, n_saturations).
    """
    n_out = layer.n_out
    W = layer.W
    nsat = 0
    cur = [0] * n_out
    if not layer.per_input():
        for i in range(layer.n_in):
            c = s_in[i]
            if c:
                base = i * n_out
                for j in range(n_out):
                    cur[j] += c * W[base + j]
        for j in range(n_out):
            v = decay(st["I"][j], layer.a_syn) + (cur[j] << layer.shift)
            y = sat(v, STATE_MAX)
            if y != v:
                nsat += 1
            st["I"][j] = y
    else:
        x = st["x"]
        for i in range(layer.n_in):
            v = decay(x[i], layer.a_syn[i]) + (s_in[i] << TRACE_FRAC)
            y = sat(v, STATE_MAX)
            if y != v:
                nsat += 1
            x[i] = y
            if y:
                base = i * n_out
                for j in range(n_out):
                    cur[j] += y * W[base + j]
        for j in range(n_out):
            v = scale_pow2(cur[j], layer.shift - TRACE_FRAC)
            y = sat(v, STATE_MAX)
            if y != v:
                nsat += 1
            st["I"][j] = y
    s_out = [0] * n_out
    vpre = [0] * n_out
    for j in range(n_out):
        v = decay(st["V"][j], layer.a_mem) + st["I"][j]
        y = sat(v, STATE_MAX)
        if y != v:
            nsat += 1
        vpre[j] = y
        if layer.kind == "lif" and y > layer.theta:
            s_out[j] = 1
            y -= layer.theta
        st["V"][j] = y
    return s_out, vpre, nsat


def network_step(layers, s_in, states):
    """One step of the whole network (§4, layers in order). Returns (spikes per layer, vpre per layer, nsat)."""
    spikes = []
    vpres = []
    nsat = 0
    x = s_in
    for l in range(len(layers)):
        s, vp, n = layer_step(layers[l], x, states[l])
        spikes.append(s)
        vpres.append(vp)
        nsat += n
        x = s
    return spikes, vpres, nsat
