"""`snn-edge data info|plot`: look at event datasets before training on them."""
from __future__ import annotations

import argparse
import json

from edge.errors import DataError
from host_tools import options as opt


def register(sub) -> None:
    data = sub.add_parser("data", help="inspect event datasets (info, plot)")
    dsub = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    info = dsub.add_parser("info", help="recordings, classes, events, durations, sensor size")
    info.add_argument("path", help="a recording, a folder in the N-MNIST layout, or 'builtin'")
    info.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    info.set_defaults(func=cmd_info)
    plot = dsub.add_parser("plot", help="event frames and a raster of one recording as PNG")
    plot.add_argument("path", help="a recording, a folder (its first recording, or --index), or 'builtin'")
    plot.add_argument("--out", type=opt.output_file, required=True, help="PNG file to write")
    plot.add_argument("--index", type=opt.nonneg_int, default=0, help="which recording of a folder")
    plot.add_argument("--dt-ms", type=opt.positive_float, default=10.0)
    plot.add_argument("--steps", type=opt.positive_int, default=30)
    plot.add_argument("--downsample", type=opt.positive_int, default=1)
    plot.set_defaults(func=cmd_plot)


def _recordings(path: str):
    """(list of (file or None, label), loader) for a path or 'builtin'."""
    from pathlib import Path

    from edge.events import list_folder_dataset, read_events

    if path == "builtin":
        from edge.data import BuiltinSource

        recs = BuiltinSource().recordings()
        return [(None, r.label) for r in recs], lambda i: recs[i]
    p = Path(path)
    items = [(p, None)] if p.is_file() else list_folder_dataset(p)
    return items, lambda i: read_events(items[i][0], items[i][1])


def dataset_summary(path: str, progress: bool = True) -> dict:
    import numpy as np

    from edge.progress import bar

    items, load = _recordings(path)
    counts, durations, sensors = [], [], set()
    for i in bar(range(len(items)), progress and len(items) >= 50, desc="scanning"):
        rec = load(i)
        counts.append(len(rec.events))
        durations.append(rec.duration_us)
        sensors.add(rec.sensor_size)
    labels = [label for _, label in items if label is not None]
    counts_a, dur_a = np.array(counts), np.array(durations)
    return {
        "path": path,
        "recordings": len(items),
        "classes": len(set(labels)),
        "class_counts": {int(c): int(n) for c, n in zip(*np.unique(labels, return_counts=True))} if labels else {},
        "sensor_size": [list(s) for s in sorted(sensors)],
        "events_per_recording": {"min": int(counts_a.min()), "mean": float(counts_a.mean()), "max": int(counts_a.max())},
        "duration_ms": {"min": float(dur_a.min() / 1e3), "mean": float(dur_a.mean() / 1e3), "max": float(dur_a.max() / 1e3)},
        "event_rate_per_s": float(counts_a.sum() / max(dur_a.sum(), 1) * 1e6),
    }


def cmd_info(args: argparse.Namespace) -> int:
    s = dataset_summary(args.path)
    if args.json:
        print(json.dumps(s))
        return 0
    sensors = ", ".join("x".join(map(str, v)) for v in s["sensor_size"])
    e, d = s["events_per_recording"], s["duration_ms"]
    classes = f"{s['classes']} classes" if s["classes"] else "unlabelled"
    print(f"{s['path']}: {s['recordings']:,} recordings, {classes}, sensor {sensors}")
    if s["class_counts"]:
        print("class counts: " + ", ".join(f"{c}: {n}" for c, n in s["class_counts"].items()))
    print(f"events per recording: min {e['min']:,}, mean {e['mean']:,.0f}, max {e['max']:,}")
    print(f"duration: min {d['min']:.1f} ms, mean {d['mean']:.1f} ms, max {d['max']:.1f} ms")
    print(f"event rate: {s['event_rate_per_s']:,.0f} events/s")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from edge.event_plots import plot_recording
    from edge.transforms import to_frames
    from firmware_py.binning import BinSpec

    items, load = _recordings(args.path)
    if not 0 <= args.index < len(items):
        raise DataError(f"{args.path}: --index {args.index} outside 0..{len(items) - 1}")
    rec = load(args.index)
    w, h, _ = rec.sensor_size
    spec = BinSpec(w, h, int(args.dt_ms * 1000), args.steps, downsample=args.downsample)
    plot_recording(rec, to_frames(rec.events, spec, rec.path), args.out)
    print(f"wrote {args.out}")
    return 0
