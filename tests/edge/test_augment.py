"""Spatial jitter on binned frames is the event-level jitter of the recording, binned the same way."""
from __future__ import annotations

import numpy as np
import pytest

from edge.augment import shift_frames, spatial_jitter
from edge.errors import SnnEdgeError
from edge.events import EVENT_DTYPE
from edge.transforms import to_frames
from firmware_py.binning import BinSpec

SPEC = BinSpec(34, 34, dt_us=10_000, n_steps=5, downsample=2)


def _events(rng, n=400):
    ev = np.zeros(n, dtype=EVENT_DTYPE)
    ev["x"], ev["y"] = rng.integers(0, 34, n), rng.integers(0, 34, n)
    ev["p"], ev["t"] = rng.integers(0, 2, n), np.sort(rng.integers(0, 50_000, n))
    return ev


@pytest.mark.parametrize("dx,dy", [(1, 0), (0, -1), (2, -3), (-4, 5), (0, 0)])
def test_frame_shift_equals_binning_the_shifted_events(dx, dy):
    ev = _events(np.random.default_rng(abs(dx * 10 + dy)))
    x, y = ev["x"].astype(np.int64) + 2 * dx, ev["y"].astype(np.int64) + 2 * dy
    inside = (x >= 0) & (y >= 0) & (x < 34) & (y < 34)   # events moved off the sensor are lost
    moved = ev[inside].copy()
    moved["x"], moved["y"] = x[inside], y[inside]
    got = shift_frames(to_frames(ev, SPEC), SPEC.out_h, SPEC.out_w, dx, dy)
    np.testing.assert_array_equal(got, to_frames(moved, SPEC))


def test_batch_jitter_is_seeded_bounded_and_zero_is_identity():
    rng = np.random.default_rng(0)
    xb = np.stack([to_frames(_events(rng), SPEC) for _ in range(6)], axis=1)   # [T, B, N]
    a = spatial_jitter(xb, SPEC.out_h, SPEC.out_w, 1, np.random.default_rng(7))
    b = spatial_jitter(xb, SPEC.out_h, SPEC.out_w, 1, np.random.default_rng(7))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, xb)
    for i in range(xb.shape[1]):   # each sample is one of the 9 shifts of itself
        assert any(np.array_equal(a[:, i], shift_frames(xb[:, i], SPEC.out_h, SPEC.out_w, dx, dy))
                   for dx in (-1, 0, 1) for dy in (-1, 0, 1))
    assert spatial_jitter(xb, SPEC.out_h, SPEC.out_w, 0, rng) is xb
    with pytest.raises(SnnEdgeError, match="2 x 17 x 17 = 578"):
        spatial_jitter(xb[:, :, :100], SPEC.out_h, SPEC.out_w, 1, rng)
