"""Pictures of event data: accumulated ON/OFF frames over time slices, and a spike raster of the binned input."""
from __future__ import annotations

import numpy as np

from edge.events import Recording


def plot_recording(rec: Recording, frames: np.ndarray, out_path: str, n_slices: int = 6) -> None:
    """Top: event frames (ON red, OFF blue) over n_slices time slices; bottom: raster of the binned input."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ev = rec.events
    w, h, _ = rec.sensor_size
    t_end = max(int(ev["t"][-1]) + 1, 1)
    fig = plt.figure(figsize=(2.2 * n_slices, 6.5))
    grid = fig.add_gridspec(2, n_slices, height_ratios=[1, 1.3])
    edges = np.linspace(0, t_end, n_slices + 1)
    for i in range(n_slices):
        sel = ev[(ev["t"] >= edges[i]) & (ev["t"] < edges[i + 1])]
        img = np.zeros((h, w, 3))
        np.add.at(img[:, :, 0], (sel["y"][sel["p"] == 1], sel["x"][sel["p"] == 1]), 1)
        np.add.at(img[:, :, 2], (sel["y"][sel["p"] == 0], sel["x"][sel["p"] == 0]), 1)
        img /= max(img.max(), 1)
        ax = fig.add_subplot(grid[0, i])
        ax.imshow(img, interpolation="nearest")
        ax.set_title(f"{edges[i] / 1000:.0f}-{edges[i + 1] / 1000:.0f} ms", fontsize=8)
        ax.axis("off")
    ax = fig.add_subplot(grid[1, :])
    steps, neurons = np.nonzero(frames)
    ax.scatter(steps, neurons, s=2, marker="|", color="k")
    ax.set_xlabel("time step")
    ax.set_ylabel("input neuron")
    label = "" if rec.label is None or rec.label < 0 else f", label {rec.label}"
    ax.set_title(f"{rec.path}{label}: {len(ev)} events, binned to {frames.shape[0]} steps x {frames.shape[1]} inputs",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(out_path, dpi=110)
    plt.close(fig)
