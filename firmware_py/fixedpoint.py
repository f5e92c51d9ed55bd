"""Integer primitives of docs/NUMERICS.md: the one definition every executor shares.

Pure Python (no numpy), runs unchanged on MicroPython and CPython. The numpy simulator
(converters/intsim.py) vectorises these same formulas and is tested against this module; the golden
vectors in tests/golden/ are generated from it. Section numbers refer to docs/NUMERICS.md.
"""

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
    """x * a / 4096 truncated toward zero: negative values decay to 0 like positive ones."""
    if x >= 0:
        return (x * a) >> Q if a >= 0 else -((x * -a) >> Q)
    return -(((-x) * a) >> Q) if a >= 0 else ((-x) * -a) >> Q


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
    surrogate' = h / 2**(24 + sg_shift) per state unit; h * theta < 2**31."""
    r = Q_ONE - ((h * theta) >> (Q + sg_shift))
    return r if r > 0 else 0


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


# ---- §7 stochastic rounding -----------------------------------------------------------------

def sround(y, k, r):
    """floor((y + r) / 2**k), r a k-bit uniform draw: unbiased rounding of y / 2**k."""
    return (y + r) >> k


def apply_update(W, n_in, n_out, G, lr_m, lr_s, lanes, a_syn=None, Ga=None, lra_m=0, lra_s=0):
    """§7: W (flat row-major list, in place) += sround(G * lr_m, lr_s); optional per-input a_syn too.

    `lanes` is the layer's learning bank of n_out + 1 lanes (advanced in place, n_in ticks).
    Returns the number of clamps that changed a value (saturation count).
    """
    nsat = 0
    for i in range(n_in):
        tick(lanes)
        base = i * n_out
        for j in range(n_out):
            w = W[base + j] + sround(G[base + j] * lr_m, lr_s, bits(lanes[j], lr_s))
            if w > W_MAX:
                w = W_MAX
                nsat += 1
            elif w < -W_MAX:
                w = -W_MAX
                nsat += 1
            W[base + j] = w
        if a_syn is not None and Ga is not None:
            a = a_syn[i] + sround(Ga[i] * lra_m, lra_s, bits(lanes[n_out], lra_s))
            if a > A_LEARN_MAX:
                a = A_LEARN_MAX
                nsat += 1
            elif a < 0:
                a = 0
                nsat += 1
            a_syn[i] = a
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
