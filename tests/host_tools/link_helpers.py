"""Helpers for the link's end-to-end tests: generated samples, the clean-run reference, and a small
resumable stream driver (checkpoint after every sample, resume from the board's sample count)."""
from __future__ import annotations

import time

import numpy as np

from firmware_py import link as L
from firmware_py.counting_handler import CountingHandler
from host_tools.cmd_board import flash
from host_tools.link import BoardReset, LinkTimeout, connect, open_serial


def make_samples(n: int, seed: int = 0, max_events: int = 60):
    """n labelled samples of generated events (no real data needed: the link does not care)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        k = int(rng.integers(1, max_events))
        t = np.sort(rng.integers(0, 200_000, k))
        out.append((rng.integers(0, 34, k), rng.integers(0, 34, k), t, rng.integers(0, 2, k), i % 10))
    return out


def reference(samples):
    """The state a clean run must reach: the same handler, applied locally, exactly once each."""
    h = CountingHandler(ckpt="/nonexistent/ckpt.bin")
    results = []
    for x, y, t, p, label in samples:
        batch = L.EventBatch().bind(L.pack_events(int(t[0]), list(x), list(y), list(t), list(p))) \
            if len(x) and int(t[-1]) - int(t[0]) < 65536 else None
        if batch is not None:
            h.events(batch)
        else:
            for j in range(len(x)):   # long samples: event by event (the hash does not see frames)
                h.events(L.EventBatch().bind(L.pack_events(int(t[j]), [x[j]], [y[j]], [t[j]], [p[j]])))
        results.append(h.end_of_sample(label))
    return h, results


LINK_FILES = ["__init__.py", "crc.py", "link.py", "board_main.py", "counting_handler.py"]
HANDLER = "firmware_py.counting_handler"


def flash_board(board, **kw):
    """The link's own files and a main.py that serves the counting handler."""
    return flash(board.path, None, files=LINK_FILES, handler=HANDLER, log=lambda *a: None, **kw)


def stream(port_path, samples, link_options=None, on_sample=None, max_reconnects=10):
    """Send every sample exactly once as far as the board's state is concerned; returns
    (results by sample, link, reconnects). Survives board resets between or inside samples."""
    ser = open_serial(port_path)
    opts = dict(link_options or {})
    opts.setdefault("handler", HANDLER)
    link = connect(ser, **opts)
    results = [None] * len(samples)
    reconnects = 0
    i = link.get_stats()["samples"]
    while i < len(samples):
        try:
            x, y, t, p, label = samples[i]
            if on_sample:
                on_sample(i)
            link.send_events(x, y, t, p)
            r = link.end_of_sample(label)
            results[i] = (r.cls, r.confidence, r.counts)
            link.checkpoint()
            i += 1
        except (BoardReset, LinkTimeout):
            reconnects += 1
            if reconnects > max_reconnects:
                raise
            time.sleep(0.2)
            link = connect(ser, **opts)
            i = link.get_stats()["samples"]
    return results, link, reconnects
