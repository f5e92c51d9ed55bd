"""A guard for self-training without labels: watch what the board can see, roll back and freeze on drift.

Self-training (learning.pseudo_label) learns a confident prediction as if it were the label; a confident
mistake is learned too, and nothing on the board says so. What the board can see without labels is its own
output: the confidence of each prediction, the last layer's spike count, and which classes it predicts.
The guard keeps integer statistics of those over blocks of `period` samples and compares each block with a
baseline measured before any self-training:

  phase WARMUP (the first `warmup` samples): no learning; sums of confidence, output spikes and the
      predicted classes give the baseline (means in 1/16 units, top-class share in 1/256).
  phase LEARN: self-training runs; at the end of every block of `period` samples the block is compared
      with the baseline. Degraded when any of
        - mean confidence fell by more than `conf_drop` (0..255 units),
        - mean output spike count moved by more than `rate_band`/256 of the baseline (either way),
        - the most predicted class's share rose by more than `share_rise`/256 (class collapse),
      then the learned weights go back to the last snapshot and learning stops (FROZEN); otherwise the
      current weights become the snapshot (the last known good).
  phase FROZEN: inference only, until the host resets the device (or re-enables the guard).

`Guard.observe(cls, measure, conf)` is the whole decision: it returns LEARN_OK (self-train as usual),
SKIP (do not learn this sample: warm-up or frozen), SNAPSHOT or ROLLBACK (then frozen). It holds a few
integers and one count per class; the Device (firmware_py/device.py) and the host's simulation
(converters/intsim.self_train_samples) call the same code, so their decisions are the same bits.

`Snapshot` holds the last known good weights in RAM: for every layer the rule learns, W (1 byte per
weight), a per-input a_syn (4 bytes per input), and the rule's generator bank (two 16-bit halves per lane),
so a rollback gives the weights and the draws of a checkpoint. `snapshot_bytes` is that figure for the
memory plan (firmware_py/memory.py counts it, with the Guard's own state, when a guard is armed).
Every array is allocated once when the guard is armed; taking and restoring a snapshot allocate nothing.

Integers: every sum is bounded below 2**30 (period <= MAX_PERIOD, a sample's spike count counted at most
RATE_MAX), so the arithmetic stays in small ints on a 32-bit port.
"""
from array import array

from firmware_py.errors import DeviceError, E_BAD_ARGUMENT, E_UNSUPPORTED

from firmware_py.memory import OBJ_OVERHEAD

WARMUP = 0
LEARN = 1
FROZEN = 2
PHASES = ("warmup", "learn", "frozen")

LEARN_OK = 0
SKIP = 1
SNAPSHOT = 2
ROLLBACK = 3

MAX_PERIOD = 4096
RATE_MAX = 4095             # a sample's output spike count is counted up to this
FRAC = 4                    # means in 1/16 units

# defaults: set before measuring (not tuned); benchmarks/device_adaptation.py --label-free reports what they do
DEFAULTS = {"warmup": 50, "period": 50, "conf_drop": 16, "rate_band": 64, "share_rise": 64}
KEYS = ("warmup", "period", "conf_drop", "rate_band", "share_rise")    # the order on the wire (SELF_TRAIN)


def _check(name, v, lo, hi):
    if not isinstance(v, int) or v < lo or v > hi:
        raise DeviceError(E_BAD_ARGUMENT, "guard %s=%r: expected an integer in [%d, %d]" % (name, v, lo, hi))


class Guard:
    def __init__(self, n_classes, warmup=50, period=50, conf_drop=16, rate_band=64, share_rise=64):
        _check("n_classes", n_classes, 1, 65535)
        _check("warmup", warmup, 1, MAX_PERIOD)
        _check("period", period, 1, MAX_PERIOD)
        _check("conf_drop", conf_drop, 0, 255)
        _check("rate_band", rate_band, 0, 1 << 16)
        _check("share_rise", share_rise, 0, 256)
        self.n_classes = n_classes
        self.warmup = warmup
        self.period = period
        self.conf_drop = conf_drop
        self.rate_band = rate_band
        self.share_rise = share_rise
        self.hist = array("H", bytes(2 * n_classes))     # predicted classes in the current block
        self.reset()

    def reset(self):
        """Back to the start: a new warm-up (the weights are whatever the Device holds now)."""
        self.phase = WARMUP
        self.n = 0              # samples in the current block (warm-up or period)
        self.conf_sum = 0
        self.rate_sum = 0
        for k in range(len(self.hist)):
            self.hist[k] = 0
        self.base_conf = 0      # baseline means, 1/16 units
        self.base_rate = 0
        self.base_share = 0     # baseline top-class share, 1/256
        self.last_conf = 0      # the last block's figures (reports)
        self.last_rate = 0
        self.last_share = 0
        self.snapshots = 0
        self.rollbacks = 0
        self.why = 0            # what froze it: 1 confidence, 2 rate, 4 class share (bits)

    def _block(self):
        """(mean confidence, mean rate) in 1/16 units and the top-class share in 1/256 of the block."""
        n = self.n
        top = 0
        for k in range(len(self.hist)):
            if self.hist[k] > top:
                top = self.hist[k]
        return (self.conf_sum << FRAC) // n, (self.rate_sum << FRAC) // n, (top << 8) // n

    def _clear_block(self):
        self.n = 0
        self.conf_sum = 0
        self.rate_sum = 0
        for k in range(len(self.hist)):
            self.hist[k] = 0

    def observe(self, cls, measure, conf, spiking=True):
        """One unlabelled sample's free-pass outcome -> LEARN_OK, SKIP, SNAPSHOT or ROLLBACK.
        `measure`: the per-class readout (spike counts when `spiking`; summed potentials otherwise, whose
        rate is not watched)."""
        if self.phase == FROZEN:
            return SKIP
        rate = 0
        if spiking:
            for v in measure:
                rate += v
            if rate > RATE_MAX:
                rate = RATE_MAX
        self.n += 1
        self.conf_sum += conf
        self.rate_sum += rate
        if 0 <= cls < len(self.hist):
            self.hist[cls] += 1
        if self.phase == WARMUP:
            if self.n >= self.warmup:
                self.base_conf, self.base_rate, self.base_share = self._block()
                self.last_conf, self.last_rate, self.last_share = self.base_conf, self.base_rate, self.base_share
                self._clear_block()
                self.phase = LEARN
                return SNAPSHOT            # the weights the baseline was measured with
            return SKIP
        if self.n < self.period:
            return LEARN_OK
        c, r, s = self._block()
        self.last_conf, self.last_rate, self.last_share = c, r, s
        self._clear_block()
        why = 0
        if c < self.base_conf - (self.conf_drop << FRAC):
            why |= 1
        d = r - self.base_rate
        if d < 0:
            d = -d
        base = self.base_rate if self.base_rate > (1 << FRAC) else (1 << FRAC)
        if (d << 8) > self.rate_band * base:
            why |= 2
        if s > self.base_share + self.share_rise:
            why |= 4
        if why:
            self.why = why
            self.phase = FROZEN
            self.rollbacks += 1
            return ROLLBACK
        self.snapshots += 1
        return SNAPSHOT

    def state(self):
        """The guard's figures (stats, reports): phase name, baselines and the last block in 1/16 / 1/256."""
        return {"phase": PHASES[self.phase], "base_conf16": self.base_conf, "base_rate16": self.base_rate,
                "base_share256": self.base_share, "conf16": self.last_conf, "rate16": self.last_rate,
                "share256": self.last_share, "snapshots": self.snapshots, "rollbacks": self.rollbacks,
                "why": self.why}


def learns(action):
    """May the sample that gave `action` be self-trained on (its gate permitting)?"""
    return action == LEARN_OK or action == SNAPSHOT


def learned_layers(rule, n_layers):
    """Indices of the layers whose parameters `rule` changes: `rule.learned` when the rule says so, else its
    one learned layer `rule.l` (readout delta, SOLSA). GEM (a bank and a bias per layer) is refused."""
    if getattr(rule, "clamps", False):
        raise DeviceError(E_UNSUPPORTED, "guard: GEM self-training is not guarded (its snapshot would need "
                                         "every layer's bias, w_fb and bank)")
    learned = getattr(rule, "learned", None)
    if learned is not None:
        return list(learned)
    return [rule.l]


def snapshot_bytes(dims, learned):
    """RAM a Snapshot holds for layers dims [(n_in, n_out, per_input)] of which `learned` learn (the memory
    plan's figure, 32-bit board): W at 1 byte per weight, a per-input a_syn at 4 per input, and the rule's
    generator bank of each learned layer (n_out + 1 lanes, two 16-bit halves each)."""
    b = 0
    for l in learned:
        n_in, n_out, per_input = dims[l]
        b += n_in * n_out + OBJ_OVERHEAD
        if per_input:
            b += 4 * n_in + OBJ_OVERHEAD
        b += 2 * (2 * (n_out + 1) + OBJ_OVERHEAD)
    return b


def guard_bytes(n_classes):
    """RAM of the Guard's own state: the per-class histogram and about 20 small ints (one word each)."""
    return 2 * n_classes + OBJ_OVERHEAD + 20 * 4 + OBJ_OVERHEAD


def _layer_arrays(L):
    """The learnable arrays of a layer: W, then a per-input a_syn."""
    if L.per_input:
        return (L.W, L.a_syn)
    return (L.W,)


class Snapshot:
    """RAM copies of the learned layers' parameters and the rule's generator bank (allocated once)."""

    def __init__(self, model, rule):
        self.layers = learned_layers(rule, len(model.layers))
        self.copies = []
        for l in self.layers:
            L = model.layers[l]
            self.copies.append(array("b", L.W))          # int8 weights
            if L.per_input:
                self.copies.append(array("i", L.a_syn))  # Q12 decays (MicroPython arrays have no .typecode)
        from firmware_py.store import persistent_banks
        self.banks = persistent_banks(rule)       # every learning bank (SOLSA on every layer: one per layer)
        self.hi = [array("H", b.hi) for b in self.banks]
        self.lo = [array("H", b.lo) for b in self.banks]
        self.taken = False

    def take(self, model, rule):
        self._copy(model, rule, True)
        self.taken = True

    def restore(self, model, rule):
        self._copy(model, rule, False)

    def _copy(self, model, rule, take):
        k = 0
        for l in self.layers:
            for a in _layer_arrays(model.layers[l]):
                c = self.copies[k]
                k += 1
                if take:
                    for i in range(len(a)):
                        c[i] = a[i]
                else:
                    for i in range(len(a)):
                        a[i] = c[i]
        for b in range(len(self.banks)):
            bank = self.banks[b]
            hi = self.hi[b]
            lo = self.lo[b]
            for i in range(len(hi)):
                if take:
                    hi[i] = bank.hi[i]
                    lo[i] = bank.lo[i]
                else:
                    bank.hi[i] = hi[i]
                    bank.lo[i] = lo[i]
