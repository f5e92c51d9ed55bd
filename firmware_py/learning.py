"""On-device, forward-only learning rules (docs/NUMERICS.md §7, §9, §10): integer, bit-exact with the host.

Each rule is an object around a runtime.Network with explicit state and four calls:
`begin_sample()` (zero the per-sample traces and accumulators), `before_step()` (what needs the state
*before* this step's forward pass), `after_step(t, label)` (traces, accumulators and, every k_update steps,
the stochastically rounded update of §7), and `state_bytes()` (what the rule holds, for memory.py).
The last layer learns; with SOLSA's learn_all every layer does (§10.8, solsa_hidden.py). The stochastic rounding draws come from each layer's learning bank
(fixedpoint.lane_seeds(seed + l, n_out + 1)), which persists across samples; `reset()` re-seeds it.

Self-training (no labels): see `pseudo_label`. Its risk is confirmation bias: a confident mistake is
learned as if it were true and makes the same mistake more confident next time, so the weights can drift
toward whatever classes the network already prefers (class collapse) without any signal that tells it.
Mitigations used here: a high confidence gate (default 192/255), learning only from the samples that pass
it, and the Device's checkpoint() so a drifted model can be rolled back; no labels means no guarantee.
"""
from firmware_py import fixedpoint as fp
from firmware_py.errors import DeviceError, E_UNSUPPORTED, E_MODEL_FORMAT
from firmware_py.runtime import KIND_LIF, zeros, fill


class _OuterProduct:
    """G[i * n_out + j] = pre[i] * err[j] computed on access, so the delta rule holds no G matrix."""

    def __init__(self, pre, err, n_out):
        self.pre = pre
        self.err = err
        self.n_out = n_out

    def __getitem__(self, k):
        i = k // self.n_out
        return self.pre[i] * self.err[k - i * self.n_out]


def _need(params, names, rule):
    for n in names:
        if n not in params:
            raise DeviceError(E_MODEL_FORMAT, "%s: missing parameter %s" % (rule, n))


class ReadoutDelta:
    """§9: the cheap rule. pre = input counts into the last layer, post = its output measure over the
    window; every k_update steps with a label: G = pre x clamp(target - post), W += sround(G * lr)."""

    name = "readout_delta"
    PARAMS = ("k_update", "lr_m", "lr_s", "tgt_hi", "tgt_lo", "v_shift")

    def __init__(self, net, params, seed):
        _need(params, self.PARAMS, self.name)
        self.net = net
        self.p = params
        self.seed = seed
        self.l = len(net.model.layers) - 1
        L = net.model.layers[self.l]
        self.L = L
        self.pre = zeros("i", L.n_in)
        self.post = [0] * L.n_out
        self.err = [0] * L.n_out
        self.lanes = fp.Bank(seed + self.l, L.n_out + 1)
        self.nsat = 0
        self.updates = 0

    def reset(self):
        self.lanes.reseed()
        self.begin_sample()

    def begin_sample(self):
        fill(self.pre, 0)
        for j in range(len(self.post)):
            self.post[j] = 0

    def before_step(self):
        pass

    def after_step(self, t, label):
        net = self.net
        idx = net.last_idx
        vals = net.last_vals
        pre = self.pre
        for k in range(net.last_n):
            pre[idx[k]] += vals[k]
        st = net.states[self.l]
        post = self.post
        if self.L.kind == KIND_LIF:
            out = st.out
            for k in range(st.nout):
                post[out[k]] += 1
        else:
            vs = self.p["v_shift"]
            V = st.V
            for j in range(len(post)):
                post[j] += V[j] >> vs
        if (t + 1) % self.p["k_update"] == 0:
            self.update(label)

    def update(self, label):
        """Apply and restart the window. Without a label the error is 0: W does not move, but the
        bank still ticks n_in times (§7), so the draws stay aligned with the host whatever the labels."""
        p = self.p
        err = self.err
        for j in range(len(err)):
            if label is None:
                err[j] = 0
            else:
                target = p["tgt_hi"] if j == label else p["tgt_lo"]
                err[j] = fp.clamp(target - self.post[j], -127, 127)
        L = self.L
        self.nsat += fp.apply_update(L.W, L.n_in, L.n_out, _OuterProduct(self.pre, err, L.n_out),
                                     p["lr_m"], p["lr_s"], self.lanes)
        self.updates += 1
        self.begin_sample()

    def state_bytes(self):
        return state_bytes_for(self.name, self.L.n_in, self.L.n_out, self.L.per_input, self.p)


class Solsa:
    """§10: SOLSA on the last layer: eligibility traces (full e [n_in, n_out] or factorised p [n_in]),
    surrogate-weighted learning signal, synaptic-decay gradient through q, r, scheduled update."""

    name = "solsa"
    PARAMS = ("k_update", "lr_m", "lr_s", "lra_m", "lra_s", "sg_shift", "factorised", "reset_path", "learn_all",
              "lrh_m", "lrh_s")

    def __init__(self, net, params, seed, factorised=None):
        _need(params, self.PARAMS, self.name)
        self.net = net
        self.p = params
        self.seed = seed
        self.l = len(net.model.layers) - 1
        L = net.model.layers[self.l]
        if L.kind != KIND_LIF:
            raise DeviceError(E_UNSUPPORTED, "solsa: needs a spiking (lif) last layer")
        self.L = L
        self.factorised = params["factorised"] if factorised is None else factorised
        n_in = L.n_in
        n_out = L.n_out
        # With a scalar a_syn the layer keeps I, not x: the rule keeps its own input trace (§10).
        self.x = None if L.per_input else zeros("i", n_in)
        self.e = zeros("i", n_in) if self.factorised else zeros("i", n_in * n_out)
        self.G = zeros("i", n_in * n_out)
        if L.per_input:   # a_syn is learnable only when it is per-input
            self.q = zeros("i", n_in)
            self.r = zeros("i", n_in)
            self.Ga = zeros("i", n_in)
        else:
            self.q = self.r = self.Ga = None
        self.rho = [0] * n_out      # §10.5b reset factor (Q12) per output, this step
        self.phi = [0] * n_out
        self.full_kernel = None     # fast.solsa_full_viper when the Device asks for fast kernels
        self.vec = None
        self.lanes = fp.Bank(seed + self.l, n_out + 1)
        self.hidden = None          # §10.8: SolsaHidden per hidden layer (index = layer) with learn_all
        self.banks = None           # then every learning bank in layer order (store.persistent_banks)
        self.learned = None         # and the layers it changes (all of them)
        if params["learn_all"]:
            from firmware_py.solsa_hidden import SolsaHidden    # imported only by models that need it
            self.hidden = [SolsaHidden(net, l, params, seed) for l in range(self.l)]
            self.banks = [hl.lanes for hl in self.hidden] + [self.lanes]
            self.learned = list(range(self.l + 1))     # guard.learned_layers: what a snapshot keeps
        self.nsat = 0
        self.updates = 0

    def use_kernel(self, kernel):
        """Run the full-trace e/G loop with a fast kernel, and the banks' ticks (same bits; fast.py)."""
        from firmware_py.fast import best_tick
        for bank in self.banks or [self.lanes]:
            bank.use_kernel(best_tick())
        if kernel is None or self.factorised:
            return
        n_in, n_out = self.L.n_in, self.L.n_out
        self.vec = zeros("i", 4 + 2 * n_out)
        self.vec[0] = n_in
        self.vec[1] = n_out
        self.vec[3] = self.p["reset_path"]
        self.full_kernel = kernel

    def reset(self):
        self.lanes.reseed()
        if self.hidden is not None:
            for hl in self.hidden:
                hl.lanes.reseed()
        self.begin_sample()

    def begin_sample(self):
        for a in (self.x, self.e, self.G, self.q, self.r, self.Ga):
            if a is not None:
                fill(a, 0)
        if self.hidden is not None:
            for hl in self.hidden:
                hl.begin_sample()

    def before_step(self):
        """q, r from the input trace before this step's update (x_prev of §10.6)."""
        if self.q is not None:
            self.nsat += syn_decay_traces(self.L, self.net.states[self.l].x, self.q, self.r)
        if self.hidden is not None:
            for hl in self.hidden:
                hl.before_step()

    def after_step(self, t, label):
        """Traces, accumulators and the scheduled update; label None gives a zero learning signal
        (traces still run and the bank still ticks at updates, as on the host)."""
        L = self.L
        n_in = L.n_in
        n_out = L.n_out
        st = self.net.states[self.l]
        decay = fp.decay
        mul_q12 = fp.mul_q12
        m = fp.TRACE_MAX
        gm = fp.GRAD_MAX
        n = 0
        # The input trace x of this step (the layer's own when a_syn is per-input).
        if self.x is not None:
            x = self.x
            n += scalar_input_trace(x, L.a_syn, self.net.last_dense, n_in)
        else:
            x = st.x
        # Surrogate, post factor (§10.1-3) and the reset factor (§10.5b) of this step.
        theta = L.theta
        sg = self.p["sg_shift"]
        rho = self.rho
        reset_factor = fp.solsa_reset_factor
        phi = self.phi
        s = st.s
        vpre = st.vpre
        for j in range(n_out):
            hj = 4096 - (abs(vpre[j] - theta) >> sg)
            if hj < 0:
                hj = 0
            rho[j] = reset_factor(hj, theta, sg)
            if label is None:
                phi[j] = 0
            else:
                phi[j] = hj * ((1 if j == label else 0) - s[j])
        a_mem = L.a_mem
        e = self.e
        G = self.G
        if self.factorised:
            for i in range(n_in):
                v = decay(e[i], a_mem) + x[i]
                if v > m:
                    v = m
                    n += 1
                elif v < -m:
                    v = -m
                    n += 1
                e[i] = v
                if v:
                    base = i * n_out
                    for j in range(n_out):
                        f = phi[j]
                        if f:
                            g = G[base + j] + mul_q12(v, f)
                            if g > gm:
                                g = gm
                                n += 1
                            elif g < -gm:
                                g = -gm
                                n += 1
                            G[base + j] = g
        elif self.full_kernel is not None:
            vec = self.vec
            vec[2] = a_mem
            for j in range(n_out):
                vec[4 + j] = phi[j]
                vec[4 + n_out + j] = rho[j]
            n += self.full_kernel(e, G, x, vec)
        else:
            reset_path = self.p["reset_path"]
            for i in range(n_in):
                xi = x[i]
                base = i * n_out
                for j in range(n_out):
                    v = e[base + j]
                    if v == 0 and xi == 0:
                        continue          # stays 0 and adds nothing to G
                    v = decay(v, a_mem) + xi
                    if v > m:
                        v = m
                        n += 1
                    elif v < -m:
                        v = -m
                        n += 1
                    f = phi[j]
                    if f and v:
                        g = G[base + j] + mul_q12(v, f)
                        if g > gm:
                            g = gm
                            n += 1
                        elif g < -gm:
                            g = -gm
                            n += 1
                        G[base + j] = g
                    if reset_path:        # §10.5b: after G, every step
                        v = decay(v, rho[j])
                    e[base + j] = v
        # Synaptic-decay gradient (§10.6), only when a_syn is per-input (learnable).
        if self.Ga is not None:
            n += syn_decay_grad(L.W, n_in, n_out, phi, self.r, self.Ga)
        self.nsat += n
        # §10.8: the hidden layers, top down, each from the post factor of the layer above (W before update)
        if self.hidden is not None:
            above = L
            for k in range(len(self.hidden) - 1, -1, -1):
                hl = self.hidden[k]
                self.nsat += hl.after_step(phi, above.W, above.n_out)
                phi = hl.phi
                above = hl.L
        if (t + 1) % self.p["k_update"] == 0:
            self.update()

    def update(self):
        p = self.p
        L = self.L
        if self.Ga is not None:
            self.nsat += fp.apply_update(L.W, L.n_in, L.n_out, self.G, p["lr_m"], p["lr_s"], self.lanes,
                                         L.a_syn, self.Ga, p["lra_m"], p["lra_s"])
            fill(self.Ga, 0)
        else:
            self.nsat += fp.apply_update(L.W, L.n_in, L.n_out, self.G, p["lr_m"], p["lr_s"], self.lanes)
        fill(self.G, 0)
        if self.hidden is not None:
            for hl in self.hidden:
                self.nsat += hl.update()
        self.updates += 1

    def state_bytes(self):
        b = state_bytes_for(self.name, self.L.n_in, self.L.n_out, self.L.per_input, self.p, self.factorised)
        if self.hidden is not None:
            from firmware_py.solsa_hidden import hidden_state_bytes
            for hl in self.hidden:
                b += hidden_state_bytes(hl.L.n_in, hl.L.n_out, hl.L.per_input, self.p["k_update"])
        return b


def scalar_input_trace(x, a, dense, n_in):
    """§10: the rule's own input trace of a layer with a scalar a_syn, x = sat(decay(x, a) + (s << 6), 20),
    from the layer's dense input s of this step; returns the saturations."""
    decay = fp.decay
    frac = fp.TRACE_FRAC
    m = fp.TRACE_MAX
    n = 0
    for i in range(n_in):
        v = decay(x[i], a) + (dense[i] << frac)
        if v > m:
            v = m
            n += 1
        elif v < -m:
            v = -m
            n += 1
        x[i] = v
    return n


def syn_decay_traces(L, x, q, r):
    """§10.6 q = sat(decay(q, a_syn) + x_prev), r = sat(decay(r, a_mem) + q) over a layer's inputs (x: its
    forward input trace before this step's update); returns the saturations."""
    a_syn = L.a_syn
    a_mem = L.a_mem
    decay = fp.decay
    m = fp.TRACE_MAX
    n = 0
    for i in range(L.n_in):
        v = decay(q[i], a_syn[i]) + x[i]
        if v > m:
            v = m
            n += 1
        elif v < -m:
            v = -m
            n += 1
        q[i] = v
        w = decay(r[i], a_mem) + v
        if w > m:
            w = m
            n += 1
        elif w < -m:
            w = -m
            n += 1
        r[i] = w
    return n


def back_signal(W, i, n_out, phi):
    """§10.6 psi[i] = floor_shift(sum_j W[i, j] * phi[j], 7): post factor phi [n_out] seen by input i."""
    base = i * n_out
    acc = 0
    for j in range(n_out):
        f = phi[j]
        if f:
            acc += W[base + j] * f
    return acc >> 7


def syn_decay_grad(W, n_in, n_out, phi, r, Ga):
    """§10.6 Ga[i] = sat(Ga[i] + mul_q12(r[i], psi[i]), 24); returns the saturations."""
    mul_q12 = fp.mul_q12
    gm = fp.GRAD_MAX
    n = 0
    for i in range(n_in):
        psi = back_signal(W, i, n_out, phi)
        if psi and r[i]:
            g = Ga[i] + mul_q12(r[i], psi)
            if g > gm:
                g = gm
                n += 1
            elif g < -gm:
                g = -gm
                n += 1
            Ga[i] = g
    return n


def state_bytes_for(rule, n_in, n_out, per_input, params, factorised=None):
    """Bytes of learning state a rule holds for a last layer [n_in, n_out] (the one formula that
    memory.py uses on the host and the device). Arrays are 4 bytes per int32 item; small lists of
    n_out ints count 4 bytes per item (one word on a 32-bit board); lanes are n_out + 1 words."""
    lanes = 4 * (n_out + 1)
    if rule == "readout_delta":
        return 4 * n_in + 4 * n_out * 2 + lanes
    if rule == "solsa":
        if factorised is None:
            factorised = params.get("factorised", 0)
        b = 4 * n_in * n_out                                   # G
        b += 4 * n_in if factorised else 4 * n_in * n_out      # p or e
        if not per_input:
            b += 4 * n_in                                      # the rule's own input trace x
        else:
            b += 3 * 4 * n_in                                  # q, r, Ga
        return b + 2 * 4 * n_out + lanes                       # rho, phi
    if rule == "none":
        return 0
    if rule == "gem":
        raise DeviceError(E_UNSUPPORTED, "gem state depends on every layer: use gem.gem_state_bytes")
    raise DeviceError(E_UNSUPPORTED, "learning rule %r is not supported on the device" % (rule,))


RULES = {"readout_delta": ReadoutDelta, "solsa": Solsa, "gem": None}   # gem: firmware_py/gem.py


def make_rule(net, rule=None, factorised=None):
    """The learning rule object the model asks for (None for rule 'none')."""
    model = net.model
    name = model.rule if rule is None else rule
    if name == "none":
        return None
    if name not in RULES:
        raise DeviceError(E_UNSUPPORTED, "learning rule %r is not supported on the device" % (name,))
    if name == "solsa":
        return Solsa(net, model.params, model.seed, factorised)
    if name == "gem":
        from firmware_py.gem import Gem
        return Gem(net, model.params, model.seed)
    return RULES[name](net, model.params, model.seed)


def pseudo_label(cls, conf, gate):
    """Self-training: the predicted class becomes the label only when the confidence reaches the gate."""
    if gate is None or conf < gate:
        return None
    return cls


def run_sample(net, rule, binner, label=None):
    """Run one binned sample from the zero state (NUMERICS.md §4 initial state) with optional learning.

    Returns (class, measure, confidence). The learning rule only runs when a label is given.
    """
    from firmware_py.runtime import confidence
    net.begin_sample()
    for st in net.states:
        st.reset()
    learn = rule is not None and label is not None
    if learn:
        rule.begin_sample()
    if hasattr(net, "clamp"):     # GEM: the observed (last-layer) neurons are clamped while learning
        net.clamp = label if learn else None
    idx = binner.idx
    vals = binner.vals
    frame = binner.frame
    for t in range(binner.spec.n_steps):
        n = binner.step_inputs(t)
        if learn:
            rule.before_step()
        net.step(idx, vals, n, frame)
        if learn:
            rule.after_step(t, label)
    cls, measure = net.readout()
    return cls, measure, confidence(measure)
