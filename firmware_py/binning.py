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
        if cx < 0 or cy < 0 or cw <= 0 or ch <= 0 or cx + cw > sensor_w or cy + ch > sensor_h:
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


class Binner:
    """Accumulates events into per-step spike lists; event-driven: memory ~ active inputs.

    `add` takes events one at a time (as they arrive from a sensor or the serial link);
    `step_inputs(k)` gives the sorted input indices active at step k and, in count mode, their
    counts; `dense()` gives the [n_steps * n_inputs] frame as a bytearray (tests, host checks).
    """

    def __init__(self, spec):
        self.spec = spec
        self.reset()

    def reset(self):
        self.steps = [None] * self.spec.n_steps  # step -> {neuron: count}
        self.dropped = 0

    def add(self, x, y, t, p):
        slot = event_slot(self.spec, x, y, t, p)
        if slot is None:
            self.dropped += 1
            return
        k, n = slot
        d = self.steps[k]
        if d is None:
            d = {}
            self.steps[k] = d
        c = d.get(n, 0)
        if c < 255:
            d[n] = c + 1

    def add_many(self, xs, ys, ts, ps):
        add = self.add
        for i in range(len(xs)):
            add(xs[i], ys[i], ts[i], ps[i])

    def step_inputs(self, k):
        d = self.steps[k]
        if not d:
            return [], []
        idx = sorted(d.keys())
        if self.spec.mode == BINARY:
            return idx, [1] * len(idx)
        return idx, [d[n] for n in idx]

    def dense(self):
        n_in = self.spec.n_inputs
        out = bytearray(self.spec.n_steps * n_in)
        for k in range(self.spec.n_steps):
            idx, vals = self.step_inputs(k)
            base = k * n_in
            for j in range(len(idx)):
                out[base + idx[j]] = vals[j]
        return out
