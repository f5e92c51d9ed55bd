"""Event-to-spike binning: the one definition, shared by the board and the host.

Runs unchanged on MicroPython and CPython (no numpy). The host's vectorised version
(`edge.transforms.to_frames`) computes the same indices with numpy and is tested to give the
identical tensor on every real recording; both call `neuron_index` and `time_bin` semantics below.

Semantics (docs/NUMERICS.md, "Input binning"):
- an event (x, y, t, p) with 0 <= x < sensor_w, 0 <= y < sensor_h, p in {0, 1}, t >= 0 (microseconds
  since the start of the sample) is first cropped: x' = x - crop_x, y' = y - crop_y, dropped unless
  0 <= x' < crop_w and 0 <= y' < crop_h;
- then downsampled by an integer factor f: xd = x' // f, yd = y' // f, with output size
  out_w = crop_w // f, out_h = crop_h // f (pixels of a ragged edge are dropped);
- its input neuron is n = (p * out_h + yd) * out_w + xd, i.e. the [P, H, W] frame flattened C-order,
  the layout of tonic.transforms.ToFrame;
- its time step is k = t // dt_us, dropped when k >= n_steps;
- binary mode: frame[k][n] = 1 if any event fell there; count mode: number of events, saturated at 255.
"""

BINARY = 0
COUNT = 1


class BinSpec:
    """Parameters of the binning; plain attributes so MicroPython needs no dataclasses."""

    def __init__(self, sensor_w, sensor_h, dt_us, n_steps, downsample=1,
                 crop=None, mode=BINARY):
        if crop is None:
            crop = (0, 0, sensor_w, sensor_h)
        cx, cy, cw, ch = crop
        if sensor_w <= 0 or sensor_h <= 0 or dt_us <= 0 or n_steps <= 0 or downsample <= 0:
            raise ValueError("BinSpec: sensor size, dt_us, n_steps and downsample must be positive")
        # a crop inside the sensor; an aligned one (align.py) may reach past an edge, keeping a pixel on it
        if cw <= 0 or ch <= 0 or cw > sensor_w or ch > sensor_h or cx <= -cw or cy <= -ch or cx >= sensor_w \
                or cy >= sensor_h:
            raise ValueError("BinSpec: crop %r does not fit the %dx%d sensor" % (crop, sensor_w, sensor_h))
        if mode not in (BINARY, COUNT):
            raise ValueError("BinSpec: mode must be 0 (binary) or 1 (count), got %r" % (mode,))
        self.sensor_w = sensor_w
        self.sensor_h = sensor_h
        self.dt_us = dt_us
        self.n_steps = n_steps
        self.downsample = downsample
        self.crop = (cx, cy, cw, ch)
        self.mode = mode
        self.out_w = cw // downsample
        self.out_h = ch // downsample
        self.n_inputs = 2 * self.out_w * self.out_h

    def as_tuple(self):
        return (self.sensor_w, self.sensor_h, self.dt_us, self.n_steps, self.downsample,
                self.crop, self.mode)


def event_slot(spec, x, y, t, p):
    """(step, neuron) for one event, or None when the binning drops it.

    Raises ValueError for an event the sensor cannot produce (the caller reports it).
    """
    if x < 0 or y < 0 or x >= spec.sensor_w or y >= spec.sensor_h:
        raise ValueError("event (%d, %d) outside the %dx%d sensor" % (x, y, spec.sensor_w, spec.sensor_h))
    if p != 0 and p != 1:
        raise ValueError("event polarity %r, expected 0 or 1" % (p,))
    if t < 0:
        raise ValueError("event time %d us is negative" % (t,))
    cx, cy, cw, ch = spec.crop
    xc = x - cx
    yc = y - cy
    if xc < 0 or yc < 0 or xc >= cw or yc >= ch:
        return None
    f = spec.downsample
    xd = xc // f
    yd = yc // f
    if xd >= spec.out_w or yd >= spec.out_h:
        return None
    k = t // spec.dt_us
    if k >= spec.n_steps:
        return None
    return k, (p * spec.out_h + yd) * spec.out_w + xd


NONE = 0xFFFF            # end of a step's list / no entry (slot indices and steps are u16)
DEFAULT_SLOTS = 3072     # active (step, input) pairs a sample may hold: the 1,000 N-MNIST recordings binned
                         # 34x34 / 2, 10 ms x 30, need at most 2,120 (median 1,444)


def binner_arrays(n_inputs, n_steps, slots=DEFAULT_SLOTS):
    """(attribute, typecode, length) of every array a Binner holds: its constructor allocates exactly
    these, and main.py reserves the ones above prealloc.GROW at power-on (memory.reserved_arrays), so the
    two cannot drift apart (an unreserved 3 KB `count` once failed to find a free run on the 140K board
    after the imports had scattered the heap)."""
    slots = min(slots, n_steps * n_inputs, NONE)
    return (("neuron", "H", slots), ("nxt", "H", slots), ("step", "H", slots), ("count", "B", slots),
            ("head", "H", n_steps), ("latest", "H", n_inputs), ("idx", "H", n_inputs),
            ("vals", "B", n_inputs), ("frame", "B", n_inputs))


class Binner:
    """Accumulates events into per-step active-input lists; event-driven (memory ~ active inputs) and
    allocation-free: every buffer is preallocated for `slots` distinct (step, input) pairs, so a sample
    allocates nothing, whatever its events (on a board a per-event dict entry costs heap and time).

    Each distinct (step, input) pair is one slot: its input `neuron[e]`, its count `count[e]` (saturated at
    255) and the next slot of the same step `nxt[e]` (a list per step from `head[k]`). `latest[n]` is the
    last slot input n got: events arrive in time order from a sensor or a recording, so a repeat of n in
    the newest step is found there at once; only an event out of time order searches its step's list.

    `step_inputs(k)` gives the number n of active inputs at step k and fills `idx[:n]`, `vals[:n]` (their
    counts, 1 in binary mode) and the dense `frame` (vals at idx, 0 elsewhere: for the per-input-decay
    paths that visit every input anyway). `dense()` gives the [n_steps * n_inputs] frame (tests, host checks).
    """

    def __init__(self, spec, slots=DEFAULT_SLOTS):
        from firmware_py.prealloc import zeros      # reserved at power-on when main.py asked for them
        if spec.n_inputs > NONE or spec.n_steps > NONE:
            raise ValueError("Binner: at most %d inputs and steps" % NONE)
        self.spec = spec
        for name, typecode, n in binner_arrays(spec.n_inputs, spec.n_steps, slots):
            setattr(self, name, zeros(typecode, n))
        self.slots = len(self.neuron)    # never more than the (step, input) pairs there are (binner_arrays)
        self.framed = 0              # entries of idx written into frame by the last step_inputs
        self.kernel = None           # fast.bin_viper (use_kernel): the common case of add_many in viper
        self.geo = None              # its geometry (use_kernel)
        self.reset()

    def use_kernel(self, kernel):
        """Bin with fast.bin_viper (the same slots, lists and counts as add_many and _count): events in
        arrays x, y array('h'), t array('i'), p array('b')."""
        from firmware_py.prealloc import zeros
        spec = self.spec
        cx, cy, cw, ch = spec.crop
        if getattr(self, "geo", None) is None:
            self.geo = zeros("i", 12)
        for k, v in enumerate((cx, cy, cw, ch, spec.downsample, spec.out_w, spec.out_h, spec.dt_us,
                               spec.n_steps, 0, 0, self.slots)):
            self.geo[k] = v
        self.kernel = kernel

    def set_spec(self, spec):
        """Bin with another BinSpec of the same shape (an alignment, align.py: crop origin and dt)."""
        if spec.n_inputs != self.spec.n_inputs or spec.n_steps != self.spec.n_steps:
            raise ValueError("Binner.set_spec: %d inputs x %d steps, the binner holds %d x %d"
                             % (spec.n_inputs, spec.n_steps, self.spec.n_inputs, self.spec.n_steps))
        self.spec = spec
        if self.kernel is not None:
            self.use_kernel(self.kernel)

    def reset(self):
        for k in range(len(self.head)):
            self.head[k] = NONE
        latest = self.latest
        for n in range(len(latest)):
            latest[n] = NONE
        self._clear_frame()
        self.used = 0                # slots in use
        self.dropped = 0

    def _clear_frame(self):
        frame = self.frame
        idx = self.idx
        for k in range(self.framed):
            frame[idx[k]] = 0
        self.framed = 0

    def add(self, x, y, t, p):
        """One event (checked by event_slot: it raises ValueError for one the sensor cannot produce)."""
        slot = event_slot(self.spec, x, y, t, p)
        if slot is None:
            self.dropped += 1
        else:
            self._count(slot[0], slot[1])

    def add_many(self, xs, ys, ts, ps, n=None):
        """The first n events (all by default), already checked against the sensor (the Device does):
        event_slot's arithmetic inline, so that no (step, neuron) tuple is made per event. Raises
        MemoryError when the slots run out."""
        if self.kernel is not None and not isinstance(xs, list):
            self._add_many_fast(xs, ys, ts, ps, len(xs) if n is None else n)
            return
        spec = self.spec
        cx, cy, cw, ch = spec.crop
        f = spec.downsample
        out_w = spec.out_w
        out_h = spec.out_h
        dt = spec.dt_us
        n_steps = spec.n_steps
        latest = self.latest
        step = self.step
        count = self.count
        for e in range(len(xs) if n is None else n):
            xc = xs[e] - cx
            yc = ys[e] - cy
            k = ts[e] // dt
            if xc < 0 or yc < 0 or xc >= cw or yc >= ch or k >= n_steps:
                self.dropped += 1
                continue
            xd = xc // f
            yd = yc // f
            if xd >= out_w or yd >= out_h:
                self.dropped += 1
                continue
            nn = (ps[e] * out_h + yd) * out_w + xd
            s = latest[nn]
            if s != NONE and step[s] == k:       # the common case, inline: a repeat in the newest step
                c = count[s]
                if c < 255:
                    count[s] = c + 1
            else:
                self._count(k, nn)

    def _add_many_fast(self, xs, ys, ts, ps, n):
        geo = self.geo
        geo[9] = 0
        geo[10] = self.used
        full = self.kernel(xs, ys, ts, ps, n, geo, self.latest, self.step, self.count, self.neuron, self.nxt,
                           self.head)
        self.used = geo[10]
        self.dropped += geo[9]
        if full >= 0:
            raise MemoryError("event buffer full")

    def _count(self, k, n):
        # latest[n]: n's slot in the highest step that has n. Its step equals k: found; is below k (or
        # no slot): (k, n) is new; is above k (an event out of time order): search step k's list.
        e = self.latest[n]
        top = e != NONE and self.step[e] < k
        if e == NONE or top or self.step[e] > k:
            if not (e == NONE or top):
                e = self.head[k]
                neuron = self.neuron
                while e != NONE and neuron[e] != n:
                    e = self.nxt[e]
            else:
                e = NONE
            if e == NONE:
                e = self.used
                if e >= self.slots:
                    raise MemoryError("event buffer full")
                self.used = e + 1
                self.neuron[e] = n
                self.step[e] = k
                self.count[e] = 0
                self.nxt[e] = self.head[k]
                self.head[k] = e
                if self.latest[n] == NONE or top:
                    self.latest[n] = e
        c = self.count[e]
        if c < 255:
            self.count[e] = c + 1

    def step_inputs(self, k):
        """Fill idx, vals and frame with the active inputs of step k; returns how many there are."""
        self._clear_frame()
        binary = self.spec.mode == BINARY
        idx = self.idx
        vals = self.vals
        frame = self.frame
        neuron = self.neuron
        count = self.count
        nxt = self.nxt
        m = 0
        e = self.head[k]
        while e != NONE:
            n = neuron[e]
            v = 1 if binary else count[e]
            idx[m] = n
            vals[m] = v
            frame[n] = v
            m += 1
            e = nxt[e]
        self.framed = m
        return m

    def active_pairs(self):
        """Distinct (step, input) pairs held now (the event buffer's use)."""
        return self.used

    def dense(self):
        n_in = self.spec.n_inputs
        out = bytearray(self.spec.n_steps * n_in)
        for k in range(self.spec.n_steps):
            n = self.step_inputs(k)
            base = k * n_in
            for j in range(n):
                out[base + self.idx[j]] = self.vals[j]
        self._clear_frame()
        return out
