"""Stream recordings to a board and survive what serial lines and boards do.

`Streamer.run` sends each sample's events, ends the sample (with its label when supervised) and collects
the board's result. It checkpoints the board's weights every `checkpoint_every` labelled samples, and when
the board resets mid-stream (BoardReset: the board answers with no session; LinkTimeout: it stopped
answering) it reconnects and resends from the first sample after the last checkpoint: the board booted
from that checkpoint, so every label is applied exactly once to the weights that survive, and the final
weights equal a clean run's (the learning rules are deterministic, their generator state included in the
checkpoint). The link below (host_tools/link.py) already retransmits corrupt or lost frames.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from typing import Callable, Iterable, Sequence

import numpy as np

from host_tools.link import BoardLink, BoardReset, LinkTimeout, connect


@dataclass
class Sample:
    x: np.ndarray
    y: np.ndarray
    t: np.ndarray
    p: np.ndarray
    label: int  # -1: unknown
    name: str = ""


@dataclass
class Outcome:
    index: int
    label: int
    cls: int
    confidence: int
    counts: list
    sent_label: bool

    @property
    def correct(self) -> bool:
        return self.label >= 0 and self.cls == self.label


def samples_from(source: str, shift: str = "", limit: int | None = None, seed: int = 1,
                 n_per_class: int = 20) -> list[Sample]:
    """Recordings as event samples: a folder/file (through edge.events) or 'builtin' (synthetic), as the
    sensor changed by `shift` (edge.shifts) records them; recording k of a real source is shifted with the
    generator seeded (seed, k), so a stream is the same every time."""
    from edge.shifts import SensorShift, shift_recording
    change = SensorShift.parse(shift)
    if source == "builtin":
        from edge.generator import generate_dataset

        recs = generate_dataset(n_per_class, seed=seed, shift=change)
    else:
        from pathlib import Path

        from edge.events import list_folder_dataset, read_events

        path = Path(source)
        items = [(path, -1)] if path.is_file() else list_folder_dataset(path)
        if limit is not None:
            order = np.random.default_rng(seed).permutation(len(items))[:limit]
            items = [items[i] for i in sorted(order)]
        recs = [shift_recording(read_events(f, label), change, np.random.default_rng([seed, k]))
                for k, (f, label) in enumerate(items)]
    if limit is not None:
        recs = recs[:limit]
    return [Sample(r.events["x"], r.events["y"], r.events["t"], r.events["p"],
                   -1 if r.label is None else int(r.label), r.path) for r in recs]


class Streamer:
    def __init__(self, port_path: str, open_port: Callable, *, profile: str = "unix", send_labels: bool = True,
                 checkpoint_every: int = 1, max_reconnects: int = 20, realtime: bool = False,
                 link_options: dict | None = None):
        if checkpoint_every < 0:
            raise ValueError(f"checkpoint_every must be >= 0 (0: never), got {checkpoint_every}")
        self.ser = open_port(port_path)
        self.profile = profile
        self.send_labels = send_labels
        # 0: never checkpoint (a board without storage for one, the micro:bit profile): what it learned
        # is lost in a reset, so the stream resends from the first labelled sample
        self.checkpoint_every = checkpoint_every
        self.max_reconnects = max_reconnects
        self.realtime = realtime
        self.link_options = dict(link_options or {})
        self.link: BoardLink = connect(self.ser, profile=profile, **self.link_options)
        self.reconnects = 0

    def close(self) -> None:
        self.ser.close()

    def _reconnect(self, cause: Exception) -> None:
        self.reconnects += 1
        if self.reconnects > self.max_reconnects:
            raise cause
        time.sleep(0.2)
        self.link = connect(self.ser, profile=self.profile, **self.link_options)

    def _send(self, s: Sample) -> None:
        if not self.realtime or len(s.t) == 0:
            self.link.send_events(s.x, s.y, s.t, s.p)
            return
        # Real time: send each 10 ms slice when the wall clock reaches it, as a sensor would.
        start = time.monotonic()
        edges = np.searchsorted(s.t, np.arange(0, int(s.t[-1]) + 10_001, 10_000))
        for k in range(len(edges) - 1):
            a, b = edges[k], edges[k + 1]
            wait = start + k * 0.01 - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            if b > a:
                self.link.send_events(s.x[a:b], s.y[a:b], s.t[a:b], s.p[a:b])

    def run(self, samples: Sequence[Sample], on_outcome: Callable[[Outcome], None] | None = None) -> list[Outcome]:
        outcomes: list[Outcome | None] = [None] * len(samples)
        committed = 0        # samples before this index are in the board's last checkpoint
        since_ckpt = 0
        i = 0
        while i < len(samples):
            s = samples[i]
            send_label = self.send_labels and s.label >= 0
            try:
                self._send(s)
                r = self.link.end_of_sample(s.label if send_label else -1)
                if send_label:
                    since_ckpt += 1
                    if self.checkpoint_every and (since_ckpt >= self.checkpoint_every or i == len(samples) - 1):
                        self.link.checkpoint()
                        committed, since_ckpt = i + 1, 0
                elif since_ckpt == 0:
                    committed = i + 1      # nothing learned since the checkpoint: nothing to redo
            except (BoardReset, LinkTimeout) as exc:
                self._reconnect(exc)
                i, since_ckpt = committed, 0
                continue
            out = Outcome(i, s.label, r.cls, r.confidence, list(r.counts), send_label)
            outcomes[i] = out
            if on_outcome:
                on_outcome(out)
            i += 1
        return [o for o in outcomes if o is not None]


def write_log(path, outcomes: Iterable[Outcome], stats_rows: Iterable[dict] = ()) -> None:
    """JSON lines: one per sample outcome, then stats snapshots; `snn-edge monitor --log` plots them."""
    with open(path, "w") as fh:
        for o in outcomes:
            fh.write(json.dumps({"kind": "sample", **asdict(o)}) + "\n")
        for row in stats_rows:
            fh.write(json.dumps({"kind": "stats", **row}) + "\n")
