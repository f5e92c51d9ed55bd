"""The device's integer network: model in RAM, explicit state, event-driven step, readout.

Runs unchanged on MicroPython (>= 1.9.2: no f-strings, no bytes.hex) and CPython. The semantics are
docs/NUMERICS.md §2-§5 and the arithmetic is firmware_py/fixedpoint.py's; this module only organises it
so that the work per step is proportional to the active inputs (the sum of the weight rows of the
active inputs), with weights in one array('b') block per layer and state in preallocated arrays.
"""
from array import array

from firmware_py import fixedpoint as fp
from firmware_py.errors import DeviceError, E_MODEL_FORMAT
# the one allocator of the runtime's arrays (reserved at power-on when main.py asked for them)
from firmware_py.prealloc import zeros  # noqa: F401  (re-exported: the rest of the firmware imports it here)

KIND_LIF = 0
KIND_INTEGRATOR = 1
KIND_PROB = 2            # probabilistic GLM layer (GEM, NUMERICS.md §11): firmware_py/gem.py runs it
KIND_NAMES = ("lif", "integrator", "prob")

def fill(a, v):
    for k in range(len(a)):
        a[k] = v


class Layer:
    """Integer parameters of one layer (NUMERICS.md §2). W: array('b') [n_in * n_out], row-major,
    so the weight row of input i is the contiguous slice [i * n_out, (i + 1) * n_out)."""

    def __init__(self, W, n_in, n_out, a_syn, a_mem, theta, shift, w_exp=0, kind=KIND_LIF):
        if len(W) != n_in * n_out:
            raise DeviceError(E_MODEL_FORMAT, "layer W: expected %d weights (%d x %d), got %d"
                              % (n_in * n_out, n_in, n_out, len(W)))
        if not isinstance(W, array):
            W = array("b", W)
        self.W = W
        self.n_in = n_in
        self.n_out = n_out
        if isinstance(a_syn, int):
            self.a_syn = a_syn
            self.per_input = False
        else:
            if len(a_syn) != n_in:
                raise DeviceError(E_MODEL_FORMAT, "layer a_syn: expected %d per-input decays, got %d"
                                  % (n_in, len(a_syn)))
            self.a_syn = a_syn if isinstance(a_syn, array) else array("i", a_syn)
            self.per_input = True
        self.a_mem = a_mem
        self.theta = theta
        self.shift = shift
        self.w_exp = w_exp
        self.kind = kind


class Model:
    """A whole integer model: layers, input range, binning, learning rule and its integer parameters."""

    def __init__(self, layers, in_max=1, binning=None, rule="none", seed=1, params=None, tables=None,
                 meta=None, compartments=1, fire_seed=0):
        self.layers = layers
        self.in_max = in_max
        self.binning = binning        # (sensor_w, sensor_h, dt_us, n_steps, downsample, crop, mode) or None
        self.rule = rule
        self.seed = seed
        self.params = params if params is not None else {}
        self.tables = tables if tables is not None else {}   # e.g. "sig": array('H') [256] for GEM
        self.meta = meta if meta is not None else {}
        self.compartments = compartments   # K (probabilistic models)
        self.fire_seed = fire_seed         # seed of the firing banks (probabilistic models)

    @property
    def probabilistic(self):
        return self.layers[0].kind == KIND_PROB

    @property
    def n_inputs(self):
        return self.layers[0].n_in

    @property
    def n_classes(self):
        return self.layers[-1].n_out


class LayerState:
    """Explicit state of one layer (§4): I, V [n_out], input trace x [n_in] when a_syn is per-input,
    plus per-step scratch, all preallocated (a step allocates nothing): acc, vpre, the dense spikes s, and
    the spiking indices out[:nout] (the next layer's active inputs)."""

    def __init__(self, layer):
        self.I = zeros("i", layer.n_out)
        self.V = zeros("i", layer.n_out)
        self.x = zeros("i", layer.n_in) if layer.per_input else None
        # per-input path: the non-zero traces of this step (indices, values), preallocated
        self.nz = zeros("i", layer.n_in) if layer.per_input else None
        self.nzv = zeros("i", layer.n_in) if layer.per_input else None
        # acc: int32 array for scalar-decay layers (bounded below 2**30 by the exporter, so viper kernels
        # can use it), a list for per-input layers (their sums may pass 31 bits)
        self.acc = [0] * layer.n_out if layer.per_input else zeros("i", layer.n_out)
        self.vpre = zeros("i", layer.n_out)
        self.s = bytearray(layer.n_out)
        self.out = zeros("H", layer.n_out)
        self.nout = 0
        # a fast neuron-update kernel's view of the layer (fast.lif_viper): n_out, a_syn, F, a_mem, theta, lif
        self.vec = None
        if not layer.per_input:
            self.vec = zeros("i", 6)
            for k, v in enumerate((layer.n_out, layer.a_syn, layer.shift, layer.a_mem, layer.theta,
                                   1 if layer.kind == KIND_LIF else 0)):
                self.vec[k] = v

    def reset(self):
        fill(self.I, 0)
        fill(self.V, 0)
        if self.x is not None:
            fill(self.x, 0)
        fill(self.vpre, 0)
        fill(self.s, 0)
        self.nout = 0

    def spiking(self):
        """The indices of this step's spikes, as a list (allocates: checks and reports, not the loop)."""
        return list(self.out[:self.nout])


def accumulate_rows(W, n_out, idx, vals, n, acc):
    """acc[j] = sum_{k < n} vals[k] * W[idx[k], j]: the sum of the weight rows of the active inputs
    (the plain path; firmware_py/fast.py has viper and numpy kernels with the same bits)."""
    for j in range(n_out):
        acc[j] = 0
    for k in range(n):
        base = idx[k] * n_out
        c = vals[k]
        if c == 1:
            for j in range(n_out):
                acc[j] += W[base + j]
        else:
            for j in range(n_out):
                acc[j] += c * W[base + j]


def layer_step(L, st, idx, vals, n, dense, rows=accumulate_rows, lif=None):
    """§4 for one layer, event-driven. idx[:n]: the active input indices (any order), vals[:n]: their
    values (>= 1); dense: the same inputs as a dense [n_in] sequence (the per-input path visits every
    input anyway; the layer below's spikes s, or the binner's frame).

    Updates st in place (I, V, x, vpre, s, out, nout) and returns the number of saturations.
    `rows` is the row-accumulation kernel (plain, viper or numpy: same bits); `lif`, when given, the
    neuron-update kernel of scalar-decay layers (fast.lif_viper: the loops below, same bits).
    """
    n_out = L.n_out
    acc = st.acc
    I = st.I
    decay = fp.decay
    smax = fp.STATE_MAX
    nsat = 0
    if not L.per_input:
        rows(L.W, n_out, idx, vals, n, acc)
        if lif is not None:
            r = lif(I, st.V, st.vpre, st.s, st.out, acc, st.vec)
            st.nout = r >> 16
            return r & 0xFFFF
        a = L.a_syn
        F = L.shift
        for j in range(n_out):
            v = decay(I[j], a) + (acc[j] << F)
            if v > smax:
                v = smax
                nsat += 1
            elif v < -smax:
                v = -smax
                nsat += 1
            I[j] = v
    else:
        # Per-input decay: the input trace x is the state and is decayed densely (§4); the current is
        # recomputed from every non-zero trace, so this path is O(n_in * n_out) by definition.
        x = st.x
        a_syn = L.a_syn
        frac = fp.TRACE_FRAC
        nz = st.nz
        nzv = st.nzv
        m = 0
        for i in range(L.n_in):
            v = decay(x[i], a_syn[i]) + (dense[i] << frac)
            if v > smax:
                v = smax
                nsat += 1
            elif v < -smax:
                v = -smax
                nsat += 1
            x[i] = v
            if v:
                nz[m] = i
                nzv[m] = v
                m += 1
        accumulate_rows(L.W, n_out, nz, nzv, m, acc)     # plain: fast kernels assume 31-bit sums
        sh = L.shift - frac
        for j in range(n_out):
            v = fp.scale_pow2(acc[j], sh)
            if v > smax:
                v = smax
                nsat += 1
            elif v < -smax:
                v = -smax
                nsat += 1
            I[j] = v
    V = st.V
    vpre = st.vpre
    s = st.s
    out = st.out
    a = L.a_mem
    theta = L.theta
    lif = L.kind == KIND_LIF
    nout = 0
    for j in range(n_out):
        v = decay(V[j], a) + I[j]
        if v > smax:
            v = smax
            nsat += 1
        elif v < -smax:
            v = -smax
            nsat += 1
        vpre[j] = v
        if lif and v > theta:
            s[j] = 1
            out[nout] = j
            nout += 1
            v -= theta
        else:
            s[j] = 0
        V[j] = v
    st.nout = nout
    return nsat


class Network:
    """A model plus its state: step() runs all layers for one time step, readout over a sample (§5)."""

    def __init__(self, model, rows=accumulate_rows, lif=None):
        self.model = model
        self.rows = rows
        self.lif = lif                  # fast.best_lif() with the fast kernels (scalar-decay layers)
        self.states = [LayerState(L) for L in model.layers]
        n = model.n_classes
        self.counts = zeros("i", n)     # spike counts (lif readout)
        self.score = [0] * n            # sum_t V (integrator readout; may pass 31 bits on long samples)
        self.nsat = 0                   # NUMERICS.md §0 saturation counter (reset() zeroes it)
        # the last layer's active inputs at this step (for learning): idx[:n], vals[:n], dense
        self.last_idx = self.last_vals = self.last_dense = None
        self.last_n = 0
        self.first_dense = None         # layer 0's dense input at this step (SOLSA learning every layer)
        self.ones = bytearray(b"\x01" * max(L.n_out for L in model.layers))   # the values of 0/1 spikes

    def reset(self):
        for st in self.states:
            st.reset()
        self.begin_sample()
        self.nsat = 0

    def begin_sample(self):
        fill(self.counts, 0)
        for j in range(len(self.score)):
            self.score[j] = 0

    def step(self, idx, vals, n, dense):
        """One time step of every layer in order (§4); idx[:n], vals[:n] (and dense) are layer 0's active
        inputs."""
        layers = self.model.layers
        last = len(layers) - 1
        ones = self.ones
        self.first_dense = dense
        for l in range(last + 1):
            st = self.states[l]
            if l == last:
                self.last_idx = idx
                self.last_vals = vals
                self.last_n = n
                self.last_dense = dense
            self.nsat += layer_step(layers[l], st, idx, vals, n, dense, self.rows, self.lif)
            idx = st.out
            vals = ones
            n = st.nout
            dense = st.s
        st = self.states[last]
        if layers[last].kind == KIND_LIF:
            c = self.counts
            out = st.out
            for k in range(st.nout):
                c[out[k]] += 1
        else:
            V = st.V
            sc = self.score
            for j in range(len(sc)):
                sc[j] += V[j]

    def step_frame(self, frame):
        """step() on a dense input frame [n_in] (host checks and tests: this one allocates)."""
        idx = array("H", [i for i in range(len(frame)) if frame[i]])
        self.step(idx, bytearray([frame[i] for i in idx]), len(idx), frame)

    def readout(self):
        """(class, per-class measure): argmax of spike counts or summed potentials, ties to the lowest."""
        if self.model.layers[-1].kind == KIND_LIF:
            m = list(self.counts)
        else:
            m = list(self.score)
        best = 0
        for j in range(1, len(m)):
            if m[j] > m[best]:
                best = j
        return best, m


def confidence(measure):
    """Confidence of a readout in [0, 255]: the margin between the best and second-best class,
    relative to the best (counts) or to the spread (potentials). 0 when tied or silent."""
    n = len(measure)
    if n < 2:
        return 255
    b1 = None
    b2 = None
    for v in measure:
        if b1 is None or v > b1:
            b2 = b1
            b1 = v
        elif b2 is None or v > b2:
            b2 = v
    lo = min(measure)
    span = b1 - lo
    if span <= 0:
        return 0
    c = (b1 - b2) * 255 // span
    return 255 if c > 255 else c
