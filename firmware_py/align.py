"""Label-free sensor alignment: re-register the input of a sensor that moved or changed speed after training.

A model's training data has a place on the sensor and a pace: the centroid of its active (step, input)
pairs and the mean time of a sample's last event. A remounted camera shifts the centroid; a slower or faster
scene stretches the durations. Both can be measured on the board from unlabelled samples and undone in the
binning (docs/NUMERICS.md §3, "Alignment"), without touching a weight:
- spatial offset: the crop window moves by (ax, ay) sensor pixels, the centroid difference (in cells of the
  downsampled grid, Q8) times the downsample factor, rounded; a window may then reach past the sensor's edge
  (those cells see no events, as the moved image's lost edge);
- time scale: the step length dt becomes dt * duration / reference duration, when they differ by more than
  DUR_BAND percent (and the new step differs from the one in use by as much: rounds converge).
`Moments` accumulates over the calibration samples what the binner holds at each sample's end (no per-event
work); `next_binning` makes one round's decision: the background-activity filter (noise_filter.py) when the
samples hold far more active inputs than the training data (sensor noise), else the step when the pace changed,
else the crop (`aligned`); after the first two, another round follows in the new setting. The host's reference comes from the training frames by the
same definition (converters/quantize.py input_reference; tests compare them on real recordings).
The per-slot loop's sums stay small; the Q8 centroid and the new dt may form a big integer once per
calibration (never per event or per step).
"""
from firmware_py.binning import BinSpec

DUR_BAND = 10             # percent: a smaller change of the mean duration is not a time scaling
NOISE_BAND = 25           # percent more active (step, input) pairs per sample than the reference: noise
MAX_SAMPLES = 1000        # calibration samples a board may be asked to average


class Moments:
    """Sums over samples: active (step, input) pairs n, their cell coordinates sx, sy, last event times."""

    def __init__(self):
        self.n = 0
        self.sx = 0
        self.sy = 0
        self.samples = 0
        self.dur = 0

    def add(self, n, sx, sy, t_last):
        self.n += n
        self.sx += sx
        self.sy += sy
        self.samples += 1
        self.dur += t_last

    def add_binner(self, binner, t_last):
        """One sample as a Binner holds it at its end: every used slot is one active (step, input) pair."""
        spec = binner.spec
        out_w = spec.out_w
        out_h = spec.out_h
        neuron = binner.neuron
        n = binner.used
        sx = 0
        sy = 0
        for e in range(n):
            v = neuron[e]
            q = v // out_w
            sx += v - q * out_w
            sy += q % out_h
        self.add(n, sx, sy, t_last)

    def reference(self):
        """(centroid x, centroid y in cells, Q8; mean last-event time in us; mean active pairs per sample):
        a model's input reference."""
        if self.n == 0 or self.samples == 0:
            raise ValueError("alignment: no active inputs were seen (no events in the binning's window)")
        return ((self.sx << 8) // self.n, (self.sy << 8) // self.n, self.dur // self.samples,
                self.n // self.samples)


def _round_q8(v):
    """Nearest integer of v / 256 (halves away from zero), without a float."""
    return (v + 128) // 256 if v >= 0 else -((-v + 128) // 256)


def next_binning(spec, ref, moments, dt0, filtering):
    """One calibration round: (BinSpec, noise filter on, another round needed). First noise: with more than
    NOISE_BAND percent more active pairs per sample than the reference (ref[3]; 0: not known) the background
    filter (noise_filter.py) goes on, since noise spread over the sensor pulls the centroid to its middle;
    then the pace and the offset (aligned)."""
    pairs = moments.reference()[3]
    if not filtering and len(ref) > 3 and ref[3] > 0 and 100 * pairs > (100 + NOISE_BAND) * ref[3]:
        return spec, True, True
    out = aligned(spec, ref, moments, dt0)
    return out, filtering, another_round(spec, out)


def aligned(spec, ref, moments, dt0=None):
    """The BinSpec that re-registers `spec` (the binning the moments were measured in) to the reference
    (cx_q8, cy_q8, dur_us) of the model's own binning at the same crop size, whose step is dt0 (default:
    spec's); offsets clamped so the window keeps at least one pixel on the sensor. A spec already aligned is
    refined: the offset adds to its crop, the step is dt0 scaled anew (durations do not depend on it)."""
    mx, my, dur, _ = moments.reference()
    f = spec.downsample
    cx, cy, cw, ch = spec.crop
    ax = _round_q8((mx - ref[0]) * f)
    ay = _round_q8((my - ref[1]) * f)
    x0 = min(max(cx + ax, 1 - cw), spec.sensor_w - 1)
    y0 = min(max(cy + ay, 1 - ch), spec.sensor_h - 1)
    dt = spec.dt_us if dt0 is None else dt0
    if ref[2] > 0 and 100 * abs(dur - ref[2]) > DUR_BAND * ref[2]:
        dt = max(1, (dt * dur + ref[2] // 2) // ref[2])
    if 100 * abs(dt - spec.dt_us) > DUR_BAND * spec.dt_us:
        # time first: a window over another stretch of the motion has another centroid, so the offset is
        # measured in the next round, in the new step (another_round)
        return BinSpec(spec.sensor_w, spec.sensor_h, dt, spec.n_steps, f, spec.crop, spec.mode)
    return BinSpec(spec.sensor_w, spec.sensor_h, spec.dt_us, spec.n_steps, f, (x0, y0, cw, ch), spec.mode)


def another_round(before, after):
    """True when a calibration changed the step: the spatial offset is measured again, in the new binning."""
    return before.dt_us != after.dt_us
