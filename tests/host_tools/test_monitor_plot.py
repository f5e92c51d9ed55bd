"""monitor's weight tracking (drift_fields) and its plot (plot_monitor) on data, without a board."""
from __future__ import annotations

import numpy as np
import pytest

from edge.errors import SnnEdgeError
from host_tools.cmd_stream import MONITOR_PANELS, drift_fields, plot_monitor
from tests.converters.helpers import small_model


def _history():
    base = small_model(np.random.default_rng(0), per_input_last=True)
    start = base.copy()
    start.layers[1].W[0, 0] = np.int8(min(127, int(start.layers[1].W[0, 0]) + 3))   # learned before the first poll
    later = start.copy()
    later.layers[1].W[:2, :] = np.clip(later.layers[1].W[:2, :].astype(int) - 2, -127, 127).astype(np.int8)
    later.layers[1].a_syn = (later.layers[1].a_syn // 2).astype(np.int32)
    rows = []
    for k, (m, stats) in enumerate(((start, (10, 10, 6)), (start, (20, 20, 13)), (later, (30, 30, 16)))):
        samples, labelled, correct = stats
        rows.append({"time": float(k), "samples": samples, "labelled": labelled, "correct": correct,
                     "updates": 3 * k, "self_trained": k, "heap_free": 5000 - k, "mem_total": 4000,
                     **drift_fields(base, start, m)})
    return base, start, later, rows


def test_drift_fields_per_layer_against_the_first_poll():
    base, start, later, rows = _history()
    first, last = rows[0], rows[-1]
    assert first["dw_mean_abs"] == [0.0, 0.0] and first["dw_l2"] == [0.0, 0.0]
    assert first["drift"][1] > 0          # vs the flashed model: the change before the first poll counts
    d = later.layers[1].W.astype(int) - start.layers[1].W.astype(int)
    assert last["dw_mean_abs"] == [0.0, pytest.approx(np.abs(d).mean())]
    assert last["dw_l2"][1] == pytest.approx(np.sqrt((d ** 2).sum())) and last["dw_l2"][1] > 0
    assert last["a_syn"][0] is None        # layer 0: one scalar decay
    a = later.layers[1].a_syn / 4096
    assert last["a_syn"][1] == pytest.approx([a.min(), a.mean(), a.max()])


def test_plot_monitor_writes_a_png_with_every_panel(tmp_path):
    _, _, _, rows = _history()
    out = tmp_path / "monitor.png"
    titles = plot_monitor(rows, str(out))
    assert titles == list(MONITOR_PANELS) and len(titles) == 5
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image as mpimg
    h, w = mpimg.imread(out).shape[:2]
    assert w > 3 * h                      # five panels side by side
    # without --model: the weight panels say what to give
    bare = [{k: v for k, v in r.items() if k not in ("drift", "dw_mean_abs", "dw_l2", "a_syn")} for r in rows]
    assert plot_monitor(bare, str(tmp_path / "bare.png")) == list(MONITOR_PANELS)
    with pytest.raises(SnnEdgeError, match="nothing to plot"):
        plot_monitor([], str(tmp_path / "none.png"))
