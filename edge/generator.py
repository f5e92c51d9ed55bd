"""Built-in SYNTHETIC event data: a deterministic DVS-like generator (not a real sensor recording).

Used as the default data of `snn-edge demo` and by tests that must not depend on ../shared/data. Ten classes
of moving patterns on a 34x34, two-polarity sensor (the N-MNIST geometry, so the same binning and networks
apply): five shapes, each moving along one of two directions. A moving edge makes ON events where the shape
arrives and OFF events where it leaves, as a DVS does, so both polarity and timing carry the class.
Each sample jitters position, size and speed; the sensor adds background noise and a few hot pixels.

`SensorShift` (edge.shifts) changes the sensor after training, as a remounted or different camera would:
its rotation, offsets, polarity balance and time scale are applied to the generated events, its noise and
hot pixels add to the sensor's own.
Everything is drawn from `numpy.random.default_rng(seed)`: the same seed gives the same events.
"""
from __future__ import annotations

import numpy as np

from edge.events import Recording, make_events
from edge.shifts import SensorShift, background_events

SENSOR = (34, 34, 2)
N_CLASSES = 10
DURATION_US = 300_000
FRAME_US = 2_000  # the pattern moves in steps of 2 ms; events get sub-frame jitter
SHAPES = ("hbar", "vbar", "cross", "ring", "diag")
DIRECTIONS = ((1.0, 0.35), (-0.35, 1.0))  # class = 2 * shape + direction


def _shape_mask(shape: str, size: int) -> np.ndarray:
    s = size
    m = np.zeros((s, s), dtype=bool)
    c = s // 2
    if shape == "hbar":
        m[c - 1:c + 1, :] = True
    elif shape == "vbar":
        m[:, c - 1:c + 1] = True
    elif shape == "cross":
        m[c - 1:c + 1, :] = True
        m[:, c - 1:c + 1] = True
    elif shape == "ring":
        m[:2, :] = m[-2:, :] = m[:, :2] = m[:, -2:] = True
    elif shape == "diag":
        i = np.arange(s)
        m[i, i] = True
        m[i[:-1], i[1:]] = True
    else:
        raise ValueError(shape)
    return m


def _render(mask: np.ndarray, x0: int, y0: int) -> np.ndarray:
    """The mask placed with its top-left at (x0, y0) on the sensor, clipped; frame indexed [y, x]."""
    w, h = SENSOR[0], SENSOR[1]
    frame = np.zeros((h, w), dtype=bool)
    ys, xs = np.nonzero(mask)
    xs, ys = xs + x0, ys + y0
    ok = (xs >= 0) & (xs < w) & (ys >= 0) & (ys < h)
    frame[ys[ok], xs[ok]] = True
    return frame


def generate_sample(label: int, rng: np.random.Generator, shift: SensorShift = SensorShift(),
                    base_noise_hz: float = 0.5, fire_prob: float = 0.8) -> Recording:
    """One synthetic recording of class `label` (0..9)."""
    if not 0 <= label < N_CLASSES:
        raise ValueError(f"label {label} outside 0..{N_CLASSES - 1}")
    shape, direction = SHAPES[label // 2], DIRECTIONS[label % 2]
    size = int(rng.integers(9, 13))
    mask = _shape_mask(shape, size)
    speed = rng.uniform(0.035, 0.05)  # pixels per ms: 10-15 pixels over the recording
    dx, dy = direction
    norm = np.hypot(dx, dy)
    vx, vy = dx / norm * speed, dy / norm * speed
    travel_ms = DURATION_US / 1000
    cx = 17 - vx * travel_ms / 2 + rng.uniform(-3, 3)
    cy = 17 - vy * travel_ms / 2 + rng.uniform(-3, 3)
    xs, ys, ts, ps = [], [], [], []
    prev = None
    for k, t_frame in enumerate(range(0, DURATION_US, FRAME_US)):
        ms = t_frame / 1000
        frame = _render(mask, int(round(cx + vx * ms - size / 2)), int(round(cy + vy * ms - size / 2)))
        if prev is not None:
            for pol, changed in ((1, frame & ~prev), (0, prev & ~frame)):
                yy, xx = np.nonzero(changed)
                fire = rng.random(len(xx)) < fire_prob
                xs.append(xx[fire]), ys.append(yy[fire]), ps.append(np.full(fire.sum(), pol))
                ts.append(t_frame + rng.integers(0, FRAME_US, fire.sum()))
        prev = frame
    hot = rng.integers(0, SENSOR[0], size=(2 + shift.hot_pixels, 2))
    bg = background_events(rng, base_noise_hz + shift.noise_rate_hz, hot, shift.hot_rate_hz, SENSOR[0], SENSOR[1],
                           0, DURATION_US)
    x = np.concatenate(xs + [bg[0]]).astype(np.float64)
    y = np.concatenate(ys + [bg[1]]).astype(np.float64)
    t = np.concatenate(ts + [bg[2]]).astype(np.int64)
    p = np.concatenate(ps + [bg[3]]).astype(np.int64)
    x, y, t, p = shift.move(rng, x, y, t, p, SENSOR[0], SENSOR[1])
    order = np.argsort(t, kind="stable")
    ev = make_events(x[order], y[order], t[order], p[order])
    return Recording(ev, SENSOR, f"builtin:{label}", label)


def generate_dataset(n_per_class: int, seed: int = 0, shift: SensorShift = SensorShift()) -> list[Recording]:
    """n_per_class recordings of every class, interleaved (0, 1, ..., 9, 0, 1, ...), deterministic from seed."""
    rng = np.random.default_rng(seed)
    return [generate_sample(label, rng, shift) for _ in range(n_per_class) for label in range(N_CLASSES)]
