"""Sensor changes after training, one knob each: what a remounted, replaced or aging event camera does to
the recordings a deployed model sees. One definition for the built-in synthetic data (edge.generator draws
its samples through it) and for real recordings (`snn-edge stream --shift`, the adaptation benchmarks).

`SensorShift` (all knobs default to "no change"):
- `offset_x`, `offset_y`: the image moves by whole pixels (a sensor mounted off-centre); events that leave
  the sensor are lost, as on the real chip;
- `rotation_deg`: the sensor is rotated about its centre (events move to the rounded rotated pixel);
- `polarity_gain`: ON events are kept with probability min(1, gain) and OFF events with min(1, 1/gain), a
  changed balance of the ON/OFF contrast thresholds;
- `time_scale`: timestamps stretched about the recording's first event (> 1: slower motion, < 1: faster);
- `noise_rate_hz`: background activity per pixel, uniform over the sensor, both polarities;
- `hot_pixels`: this many extra pixels firing at `hot_rate_hz` (random polarity).
The geometric knobs apply first (rotation, then offset, then the sensor's edge), then the polarity balance,
then time; noise and hot pixels are added in the new sensor frame. Random draws come from the generator the
caller passes: the same seed gives the same events.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# CLI name -> (field, type); the type's check: hot is a count, rotation and offsets may be negative
_NAMES = {"rotation": ("rotation_deg", float), "gain": ("polarity_gain", float),
          "noise": ("noise_rate_hz", float), "hot": ("hot_pixels", int), "hot_rate": ("hot_rate_hz", float),
          "dx": ("offset_x", int), "dy": ("offset_y", int), "time": ("time_scale", float)}
_SIGNED = {"rotation", "dx", "dy"}


@dataclass(frozen=True)
class SensorShift:
    rotation_deg: float = 0.0
    polarity_gain: float = 1.0
    noise_rate_hz: float = 0.0
    hot_pixels: int = 0
    hot_rate_hz: float = 200.0
    offset_x: int = 0
    offset_y: int = 0
    time_scale: float = 1.0

    @classmethod
    def parse(cls, text: str) -> "SensorShift":
        """'dx=3,dy=-2,rotation=10,gain=0.5,noise=5,hot=3,time=1.5' -> SensorShift (the CLI's --shift)."""
        kwargs = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            key, _, value = part.partition("=")
            if key not in _NAMES or not value:
                raise ValueError(f"--shift: cannot parse {part!r}; expected name=value with name in {sorted(_NAMES)}")
            field, kind = _NAMES[key]
            try:
                v = kind(value)
            except ValueError:
                raise ValueError(f"--shift: {key}={value!r} is not a {'whole number' if kind is int else 'number'}"
                                 ) from None
            if not math.isfinite(v) or (key not in _SIGNED and v < 0):
                raise ValueError(f"--shift: {key}={value!r}: expected a finite number"
                                 + ("" if key in _SIGNED else " >= 0"))
            if key in ("gain", "time") and v == 0:
                raise ValueError(f"--shift: {key}=0: expected a number > 0")
            kwargs[field] = v
        return cls(**kwargs)

    @property
    def is_identity(self) -> bool:
        return self == SensorShift(hot_rate_hz=self.hot_rate_hz)

    def move(self, rng: np.random.Generator, x, y, t, p, width: int, height: int):
        """The geometric, polarity and time knobs on event arrays -> (x, y, t, p) as int64, events that
        left the sensor or lost their polarity removed. Draws from rng only for the polarity balance."""
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        t = np.asarray(t, dtype=np.int64)
        p = np.asarray(p, dtype=np.int64)
        if self.rotation_deg:
            a = np.deg2rad(self.rotation_deg)
            cx, cy = (width - 1) / 2, (height - 1) / 2
            xr = cx + np.cos(a) * (x - cx) - np.sin(a) * (y - cy)
            yr = cy + np.sin(a) * (x - cx) + np.cos(a) * (y - cy)
            x, y = np.round(xr), np.round(yr)
        x = x + self.offset_x
        y = y + self.offset_y
        keep = (x >= 0) & (x < width) & (y >= 0) & (y < height)
        if self.polarity_gain != 1.0:
            g = self.polarity_gain
            keep_prob = np.where(p == 1, min(1.0, g), min(1.0, 1.0 / g))
            keep &= rng.random(len(p)) < keep_prob
        t = t[keep]
        if self.time_scale != 1.0 and len(t):
            t = t[0] + np.round((t - t[0]) * self.time_scale).astype(np.int64)
        return x[keep].astype(np.int64), y[keep].astype(np.int64), t, p[keep]


def background_events(rng: np.random.Generator, rate_hz: float, hot: np.ndarray, hot_rate_hz: float,
                      width: int, height: int, t0: int, duration_us: int):
    """Uniform background activity at rate_hz per pixel plus the hot pixels `hot` ([k, 2] x, y) at
    hot_rate_hz, over [t0, t0 + duration_us), as (x, y, t, p) int64 arrays (unsorted)."""
    n = rng.poisson(rate_hz * width * height * duration_us * 1e-6)
    span = max(duration_us, 1)
    parts = [(rng.integers(0, width, n), rng.integers(0, height, n), t0 + rng.integers(0, span, n),
              rng.integers(0, 2, n))]
    for hx, hy in hot:
        m = rng.poisson(hot_rate_hz * duration_us * 1e-6)
        parts.append((np.full(m, hx), np.full(m, hy), t0 + rng.integers(0, span, m), rng.integers(0, 2, m)))
    return [np.concatenate(c).astype(np.int64) for c in zip(*parts)]


def shift_recording(rec, shift: SensorShift, rng: np.random.Generator):
    """A real recording (edge.events.Recording) as the shifted sensor would have recorded it."""
    from edge.events import Recording, make_events
    if shift.is_identity:
        return rec
    width, height = rec.sensor_size[0], rec.sensor_size[1]
    e = rec.events
    x, y, t, p = shift.move(rng, e["x"], e["y"], e["t"], e["p"], width, height)
    if shift.noise_rate_hz or shift.hot_pixels:
        t0 = int(t[0]) if len(t) else 0
        duration = int(t[-1] - t[0]) if len(t) else 0
        hot = np.stack([rng.integers(0, width, shift.hot_pixels), rng.integers(0, height, shift.hot_pixels)], 1)
        bx, by, bt, bp = background_events(rng, shift.noise_rate_hz, hot, shift.hot_rate_hz, width, height,
                                           t0, duration)
        x, y, t, p = (np.concatenate(a) for a in ((x, bx), (y, by), (t, bt), (p, bp)))
    order = np.argsort(t, kind="stable")
    return Recording(make_events(x[order], y[order], t[order], p[order]), rec.sensor_size, rec.path, rec.label,
                     rec.sensor_inferred)
