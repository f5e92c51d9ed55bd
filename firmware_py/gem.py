"""GEM on the device: probabilistic GLM layers with K compartments and the multi-sample GEM rule
(docs/NUMERICS.md §8, §11), integer, bit-exact with converters/intsim.py (run_gem, gem_learn_step).

Rows r = 0..K-1 are the K compartments of the one stream the device runs. Per sample the state (input
traces x, feedback traces f) starts at zero and the firing banks are re-seeded (lane r * N_out + j of
lane_seeds(fire_seed + l, K * N_out)), so a sample's draws do not depend on the samples before it; the
learning banks (lane_seeds(learn_seed + l, N_out + 1)) carry over, as in learning.py. The sigmoid,
log-sigmoid and exp tables come from the model file (float32-only ports cannot rebuild them exactly).
"""
from firmware_py import fixedpoint as fp
from firmware_py.errors import DeviceError, E_MODEL_FORMAT
from firmware_py.runtime import accumulate_rows, fill, zeros

TABLES = ("sigmoid_lut", "logsig_lut", "exp_lut")


class GlmNetwork:
    """Forward pass of a probabilistic model (§11 steps 1-5), event-driven on layer 0's input."""

    def __init__(self, model):
        for name in TABLES:
            t = model.tables.get(name)
            if t is None or len(t) != fp.SIG_LUT_SIZE:
                raise DeviceError(E_MODEL_FORMAT, "GEM model: table %s missing or not %d entries"
                                  % (name, fp.SIG_LUT_SIZE))
        self.model = model
        self.K = model.compartments
        self.SIG = model.tables["sigmoid_lut"]
        self.LOGSIG = model.tables["logsig_lut"]
        self.EXP = model.tables["exp_lut"]
        K = self.K
        self.x = [zeros("i", K * L.n_in) for L in model.layers]
        self.f = [zeros("i", K * L.n_out) for L in model.layers]
        self.f_prev = [zeros("i", K * L.n_out) for L in model.layers]
        self.idx = [zeros("i", K * L.n_out) for L in model.layers]
        self.P = [zeros("i", K * L.n_out) for L in model.layers]
        self.s = [bytearray(K * L.n_out) for L in model.layers]
        # firing banks: re-seeded at every sample (from the states kept in the Bank: nothing allocated)
        self.lanes = [fp.Bank(model.fire_seed + l, K * model.layers[l].n_out) for l in range(len(model.layers))]
        width = 0
        for L in model.layers:
            width = max(width, L.n_in)
        self.nz = zeros("i", width)
        self.nzv = zeros("i", width)
        self.acc = [0] * max(L.n_out for L in model.layers)
        self.counts = zeros("i", model.n_classes)
        self.nsat = 0
        self.clamp = None          # label the last layer is clamped to during a learning pass
        self.states = []           # (runtime.Network's per-layer states: none here, see begin_sample)
        self.begin_sample()

    def begin_sample(self):
        K = self.K
        for l in range(len(self.model.layers)):
            fill(self.x[l], 0)
            fill(self.f[l], 0)
            self.lanes[l].reseed()
        fill(self.counts, 0)

    def reset(self):
        self.begin_sample()
        self.nsat = 0

    def step(self, idx, vals, n, dense):
        """One step of every layer for every compartment; dense: layer 0's inputs as an [n_in] sequence
        (the input traces are decayed densely anyway; idx[:n], vals[:n] are the same inputs, unused here)."""
        layers = self.model.layers
        last = len(layers) - 1
        decay = fp.decay
        smax = fp.STATE_MAX
        frac = fp.TRACE_FRAC
        SIG = self.SIG
        nz = self.nz
        nzv = self.nzv
        acc = self.acc
        nsat = 0
        for l in range(last + 1):
            L = layers[l]
            n_in = L.n_in
            n_out = L.n_out
            a = L.a_syn
            x = self.x[l]
            f = self.f[l]
            fprev = self.f_prev[l]
            ix = self.idx[l]
            P = self.P[l]
            s = self.s[l]
            bank = self.lanes[l]
            bank.tick()                  # every lane of the firing bank ticks once per step (§11.4)
            draw = bank.hi               # bits(lane, 16): its high half
            sh = L.shift - frac
            clamp = self.clamp if l == last else None
            below = self.s[l - 1] if l > 0 else None
            for r in range(self.K):
                xb = r * n_in
                m = 0
                for i in range(n_in):
                    v = decay(x[xb + i], a)
                    if below is None:
                        v += dense[i] << frac
                    elif below[r * n_in + i]:
                        v += 1 << frac
                    if v > smax:
                        v = smax
                        nsat += 1
                    elif v < -smax:
                        v = -smax
                        nsat += 1
                    x[xb + i] = v
                    if v:
                        nz[m] = i
                        nzv[m] = v
                        m += 1
                accumulate_rows(L.W, n_out, nz, nzv, m, acc)   # traces: sums may pass 31 bits
                ob = r * n_out
                for j in range(n_out):
                    fj = f[ob + j]
                    u = fp.scale_pow2(acc[j], sh) + fp.trunc_div(L.w_fb[j] * fj, 64) + L.bias[j]
                    if u > smax:
                        u = smax
                        nsat += 1
                    elif u < -smax:
                        u = -smax
                        nsat += 1
                    q = (u >> L.sig_shift) + 128
                    q = 0 if q < 0 else (255 if q > 255 else q)
                    ix[ob + j] = q
                    p = SIG[q]
                    P[ob + j] = p
                    if clamp is not None:
                        sj = 1 if j == clamp else 0
                    else:
                        sj = 1 if draw[ob + j] < p else 0
                    s[ob + j] = sj
                    fprev[ob + j] = fj
                    v = decay(fj, L.a_fb) + (sj << frac)
                    if v > smax:
                        v = smax
                        nsat += 1
                    elif v < -smax:
                        v = -smax
                        nsat += 1
                    f[ob + j] = v
        self.nsat += nsat
        s = self.s[last]
        c = self.counts
        n_out = layers[last].n_out
        for r in range(self.K):
            for j in range(n_out):
                if s[r * n_out + j]:
                    c[j] += 1

    def readout(self):
        m = list(self.counts)
        best = 0
        for j in range(1, len(m)):
            if m[j] > m[best]:
                best = j
        return best, m


class Gem:
    """§11 learning: per-compartment eligibility traces of every layer, the visible log-likelihood of
    each compartment, importance weights from EXP_LUT, accumulated gradients, scheduled update of W,
    bias and w_fb through each layer's learning bank."""

    name = "gem"
    PARAMS = ("k_update", "lr_m", "lr_s", "lrb_m", "lrb_s", "ll_decay")
    clamps = True          # the learning pass clamps the last layer to the label (the observed neurons)

    def __init__(self, net, params, seed):
        for n in self.PARAMS:
            if n not in params:
                raise DeviceError(E_MODEL_FORMAT, "gem: missing parameter %s" % n)
        self.net = net
        self.p = params
        self.seed = seed
        K = net.K
        self.eW = [zeros("i", K * L.n_in * L.n_out) for L in net.model.layers]
        self.eb = [zeros("i", K * L.n_out) for L in net.model.layers]
        self.ef = [zeros("i", K * L.n_out) for L in net.model.layers]
        self.GW = [zeros("i", L.n_in * L.n_out) for L in net.model.layers]
        self.Gb = [zeros("i", L.n_out) for L in net.model.layers]
        self.Gf = [zeros("i", L.n_out) for L in net.model.layers]
        self.ll = [0] * K
        self.w = [0] * K
        self.wn = [0] * K
        self.g = [0] * max(L.n_out for L in net.model.layers)
        self.banks = None
        self.nsat = 0
        self.updates = 0
        self.reset()

    @property
    def lanes(self):      # the last layer's bank (what learning.py rules call lanes)
        return self.banks[-1]

    def reset(self):
        if self.banks is None:
            self.banks = [fp.Bank(self.seed + l, L.n_out + 1) for l, L in enumerate(self.net.model.layers)]
        for bank in self.banks:
            bank.reseed()
        self.begin_sample()

    def begin_sample(self):
        for group in (self.eW, self.eb, self.ef, self.GW, self.Gb, self.Gf):
            for a in group:
                fill(a, 0)
        for r in range(len(self.ll)):
            self.ll[r] = 0

    def before_step(self):
        pass

    def after_step(self, t, label):
        net = self.net
        layers = net.model.layers
        K = net.K
        decay = fp.decay
        mul = fp.mul_q12
        tm = fp.TRACE_MAX
        gm = fp.GRAD_MAX
        n = 0
        if label is not None:
            g = self.g
            for l in range(len(layers)):
                L = layers[l]
                n_in = L.n_in
                n_out = L.n_out
                a = L.a_mem
                x = net.x[l]
                s = net.s[l]
                P = net.P[l]
                fprev = net.f_prev[l]
                eW = self.eW[l]
                eb = self.eb[l]
                ef = self.ef[l]
                for r in range(K):
                    ob = r * n_out
                    for j in range(n_out):
                        g[j] = (s[ob + j] << 12) - (P[ob + j] >> 4)
                    for j in range(n_out):
                        v = decay(eb[ob + j], a) + mul(64, g[j])
                        if v > tm or v < -tm:
                            v = tm if v > 0 else -tm
                            n += 1
                        eb[ob + j] = v
                        v = decay(ef[ob + j], a) + mul(fprev[ob + j], g[j])
                        if v > tm or v < -tm:
                            v = tm if v > 0 else -tm
                            n += 1
                        ef[ob + j] = v
                    xb = r * n_in
                    eb0 = r * n_in * n_out
                    for i in range(n_in):
                        xi = x[xb + i]
                        base = eb0 + i * n_out
                        for j in range(n_out):
                            v = eW[base + j]
                            if v == 0 and xi == 0:
                                continue
                            v = decay(v, a) + mul(xi, g[j])
                            if v > tm or v < -tm:
                                v = tm if v > 0 else -tm
                                n += 1
                            eW[base + j] = v
            # visible log-likelihood of each compartment (last layer), importance weights
            L = layers[-1]
            n_out = L.n_out
            s = net.s[-1]
            ix = net.idx[-1]
            LOGSIG = net.LOGSIG
            ll = self.ll
            for r in range(K):
                acc = 0
                for j in range(n_out):
                    q = ix[r * n_out + j]
                    acc += LOGSIG[q] if s[r * n_out + j] else LOGSIG[255 - q]
                v = mul(ll[r], self.p["ll_decay"]) + acc
                if v > gm or v < -gm:
                    v = gm if v > 0 else -gm
                    n += 1
                ll[r] = v
            m = max(ll)
            w = self.w
            tot = 0
            for r in range(K):
                w[r] = self_exp(net.EXP, (m - ll[r]) >> 4)
                tot += w[r]
            wn = self.wn
            for r in range(K):
                wn[r] = (w[r] * 4096) // tot
            for l in range(len(layers)):
                L = layers[l]
                n += _accumulate(self.GW[l], self.eW[l], wn, L.n_in * L.n_out, K)
                n += _accumulate(self.Gb[l], self.eb[l], wn, L.n_out, K)
                n += _accumulate(self.Gf[l], self.ef[l], wn, L.n_out, K)
        if (t + 1) % self.p["k_update"] == 0:
            n += self.update()
        self.nsat += n

    def update(self):
        p = self.p
        n = 0
        for l in range(len(self.net.model.layers)):
            L = self.net.model.layers[l]
            bank = self.banks[l]
            n += fp.apply_update(L.W, L.n_in, L.n_out, self.GW[l], p["lr_m"], p["lr_s"], bank)
            n += _update_vector(L.bias, self.Gb[l], p["lrb_m"], p["lrb_s"], bank)
            n += _update_vector(L.w_fb, self.Gf[l], p["lrb_m"], p["lrb_s"], bank)
            fill(self.GW[l], 0)
            fill(self.Gb[l], 0)
            fill(self.Gf[l], 0)
        self.updates += 1
        return n

    def state_bytes(self):
        dims = [(L.n_in, L.n_out, False) for L in self.net.model.layers]
        return gem_state_bytes(dims, self.net.K)


def self_exp(EXP, k):
    return EXP[255 if k > 255 else k]


def _accumulate(G, e, wn, size, K):
    """G[k] = sat(G[k] + sum_r mul_q12(e[r * size + k], wn[r]), 24); returns the saturation count."""
    mul = fp.mul_q12
    gm = fp.GRAD_MAX
    n = 0
    for k in range(size):
        acc = 0
        for r in range(K):
            v = e[r * size + k]
            if v:
                acc += mul(v, wn[r])
        if acc:
            v = G[k] + acc
            if v > gm or v < -gm:
                v = gm if v > 0 else -gm
                n += 1
            G[k] = v
    return n


def _update_vector(vec, G, lr_m, lr_s, bank):
    """One more tick of the bank: vec[j] += sround(G[j] * lr_m, lr_s) with lane j, clamped to 20 bits."""
    bank.tick()
    smax = fp.STATE_MAX
    sround_mul = fp.sround_mul
    bits = bank.bits
    n = 0
    for j in range(len(vec)):
        v = vec[j] + sround_mul(G[j], lr_m, lr_s, bits(j, lr_s))
        if v > smax or v < -smax:
            v = smax if v > 0 else -smax
            n += 1
        vec[j] = v
    return n


def gem_state_bytes(dims, K):
    """Bytes of GEM learning state for layers dims [(n_in, n_out, _)] with K compartments."""
    b = 4 * K * 2      # ll, wn
    for n_in, n_out, _ in dims:
        b += 4 * (K * n_in * n_out + 2 * K * n_out)      # eW, eb, ef
        b += 4 * (n_in * n_out + 2 * n_out)              # GW, Gb, Gf
        b += 4 * (n_out + 1)                             # learning bank
    return b
