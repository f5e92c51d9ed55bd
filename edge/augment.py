"""Training-time augmentation on binned spike frames, drawn afresh for every batch.

`spatial_jitter` moves each sample's whole recording by a random whole number of *binned* pixels. On frames
binned with downsampling f, a shift by (dx, dy) binned pixels is exactly the event-level jitter of every event
by (f dx, f dy) sensor pixels followed by the same binning (events moved off the sensor are lost, nothing
enters from outside), so it is computed on the cached frames instead of re-binning the events every epoch.
tonic's transforms (`--transform`) apply once when a dataset is read, so they cannot augment per epoch.
"""
from __future__ import annotations

import numpy as np

from edge.errors import SnnEdgeError


def shift_frames(x: np.ndarray, out_h: int, out_w: int, dx: int, dy: int) -> np.ndarray:
    """One sample's frames [T, 2 * out_h * out_w] moved by (dx, dy) binned pixels, zero-filled."""
    t = x.shape[0]
    grid = x.reshape(t, 2, out_h, out_w)
    out = np.zeros_like(grid)
    src_y, dst_y = slice(max(0, -dy), out_h - max(0, dy)), slice(max(0, dy), out_h - max(0, -dy))
    src_x, dst_x = slice(max(0, -dx), out_w - max(0, dx)), slice(max(0, dx), out_w - max(0, -dx))
    out[:, :, dst_y, dst_x] = grid[:, :, src_y, src_x]
    return out.reshape(x.shape)


def spatial_jitter(xb: np.ndarray, out_h: int, out_w: int, max_shift: int, rng: np.random.Generator) -> np.ndarray:
    """A batch [T, B, N] with each sample shifted by dx, dy drawn uniformly from -max_shift..max_shift."""
    if xb.shape[2] != 2 * out_h * out_w:
        raise SnnEdgeError(f"spatial jitter: frames have {xb.shape[2]} inputs, the binning gives "
                           f"2 x {out_h} x {out_w} = {2 * out_h * out_w}")
    if max_shift == 0:
        return xb
    shifts = rng.integers(-max_shift, max_shift + 1, size=(xb.shape[1], 2))
    out = np.empty_like(xb)
    for b, (dx, dy) in enumerate(shifts):
        out[:, b] = shift_frames(xb[:, b], out_h, out_w, int(dx), int(dy))
    return out
