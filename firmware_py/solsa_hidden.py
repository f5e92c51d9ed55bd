"""SOLSA on the hidden layers (docs/NUMERICS.md §10.8, rule parameter learn_all): learning.Solsa holds one
SolsaHidden per hidden layer and feeds it, top down, the post factor of the layer above. A module of its own so
that boards running any other model never import it (its code would take their heap).
"""
from firmware_py import fixedpoint as fp
from firmware_py.errors import DeviceError, E_UNSUPPORTED
from firmware_py.learning import back_signal, scalar_input_trace, syn_decay_grad, syn_decay_traces
from firmware_py.runtime import KIND_LIF, fill, zeros


class _WindowG:
    """G_l of §10.8.4 computed from the window's traces when the update asks for a row:
    G[i, j] = sum over the window's steps t of mul_q12(P[t, i], Phi[t, j]) (fixedpoint.apply_update's
    row protocol: None for an all-zero row, which moves no weight), so a hidden layer keeps
    k (n_in + n_out) words instead of G's n_in * n_out. Only the non-zero post factors of each step are
    visited (their indices are kept with them)."""

    def __init__(self, hl):
        self.hl = hl
        # bound once and kept in the instance: apply_update's getattr(G, "row") then allocates no method object
        self.row = self._row

    def _row(self, i):
        hl = self.hl
        n_in = hl.L.n_in
        n_out = hl.L.n_out
        P = hl.P
        Phi = hl.Phi
        nzj = hl.nzj
        nzc = hl.nzc
        mul_q12 = fp.mul_q12
        row = hl.row
        any_nz = False
        for t in range(hl.w):
            pv = P[t * n_in + i]
            c = nzc[t]
            if pv and c:
                if not any_nz:
                    fill(row, 0)
                    any_nz = True
                base = t * n_out
                for k in range(base, base + c):
                    j = nzj[k]
                    row[j] += mul_q12(pv, Phi[base + j])
        return row if any_nz else None


class SolsaHidden:
    """§10.8: SOLSA on hidden layer l (factorised traces), fed the post factor of the layer above. Keeps
    the window's pre-traces P [k, n_in] and post factors Phi [k, n_out] since the last update (not G)."""

    def __init__(self, net, l, params, seed):
        self.net = net
        self.l = l
        self.p = params
        L = net.model.layers[l]
        if L.kind != KIND_LIF:
            raise DeviceError(E_UNSUPPORTED, "solsa learn_all: hidden layer %d must be spiking (lif)" % l)
        self.L = L
        k = params["k_update"]
        self.x = None if L.per_input else zeros("i", L.n_in)   # the rule's input trace (scalar a_syn)
        self.pt = zeros("i", L.n_in)                               # p of §10.8.3
        self.P = zeros("i", k * L.n_in)
        self.Phi = zeros("i", k * L.n_out)
        self.w = 0                                                 # steps in the window
        self.nzj = zeros("H", k * L.n_out)                         # each step's non-zero phi indices
        self.nzc = zeros("H", k)                                   # and their count
        self.phi = zeros("i", L.n_out)
        self.row = zeros("i", L.n_out)                             # _WindowG's row
        self.G = _WindowG(self)
        if L.per_input:
            self.q = zeros("i", L.n_in)
            self.r = zeros("i", L.n_in)
            self.Ga = zeros("i", L.n_in)
        else:
            self.q = self.r = self.Ga = None
        self.sg = fp.surrogate_shift(L.theta)
        self.lanes = fp.Bank(seed + l, L.n_out + 1)

    def begin_sample(self):
        for a in (self.x, self.pt, self.q, self.r, self.Ga):
            if a is not None:
                fill(a, 0)
        self.w = 0

    def before_step(self):
        if self.q is not None:
            return syn_decay_traces(self.L, self.net.states[self.l].x, self.q, self.r)
        return 0

    def after_step(self, phi_above, W_above, n_above):
        """§10.8.1-5 for this step: phi (this layer's post factor), the window, q/r/Ga; -> saturations."""
        L = self.L
        n_in = L.n_in
        n_out = L.n_out
        st = self.net.states[self.l]
        decay = fp.decay
        mul_q12 = fp.mul_q12
        m = fp.TRACE_MAX
        n = 0
        # 1-2: ell from the layer above, the surrogate of this layer, phi
        theta = L.theta
        sg = self.sg
        vpre = st.vpre
        phi = self.phi
        for i in range(n_out):
            e = back_signal(W_above, i, n_above, phi_above)
            if e > 4096:
                e = 4096
                n += 1
            elif e < -4096:
                e = -4096
                n += 1
            h = 4096 - (abs(vpre[i] - theta) >> sg)
            phi[i] = mul_q12(h, e) if h > 0 else 0
        # 3: input trace and the factorised eligibility, into the window
        if self.x is not None:
            x = self.x
            dense = self.net.first_dense if self.l == 0 else self.net.states[self.l - 1].s
            n += scalar_input_trace(x, L.a_syn, dense, n_in)
        else:
            x = st.x
        pt = self.pt
        a_mem = L.a_mem
        P = self.P
        base = self.w * n_in
        for i in range(n_in):
            v = decay(pt[i], a_mem) + x[i]
            if v > m:
                v = m
                n += 1
            elif v < -m:
                v = -m
                n += 1
            pt[i] = v
            P[base + i] = v
        Phi = self.Phi
        nzj = self.nzj
        base = self.w * n_out
        c = 0
        for j in range(n_out):
            f = phi[j]
            Phi[base + j] = f
            if f:
                nzj[base + c] = j
                c += 1
        self.nzc[self.w] = c
        self.w += 1
        # 5: synaptic decays of this layer
        if self.Ga is not None:
            n += syn_decay_grad(L.W, n_in, n_out, phi, self.r, self.Ga)
        return n

    def update(self):
        """§10.8.6: §7 on W (lrh) and a per-input a_syn (lra) with this layer's bank; the window restarts."""
        p = self.p
        L = self.L
        if self.Ga is not None:
            n = fp.apply_update(L.W, L.n_in, L.n_out, self.G, p["lrh_m"], p["lrh_s"], self.lanes,
                                L.a_syn, self.Ga, p["lra_m"], p["lra_s"])
            fill(self.Ga, 0)
        else:
            n = fp.apply_update(L.W, L.n_in, L.n_out, self.G, p["lrh_m"], p["lrh_s"], self.lanes)
        self.w = 0
        return n


def hidden_state_bytes(n_in, n_out, per_input, k_update):
    """Bytes SolsaHidden holds for a hidden layer [n_in, n_out] (§10.8): the window P [k, n_in] and
    Phi [k, n_out] with its non-zero indices (u16), p, phi, the row scratch, x (scalar a_syn) or q, r, Ga
    (per-input), the bank."""
    b = 4 * k_update * (n_in + n_out) + 2 * k_update * (n_out + 1) + 4 * n_in + 2 * 4 * n_out
    b += 3 * 4 * n_in if per_input else 4 * n_in
    return b + 4 * (n_out + 1)
