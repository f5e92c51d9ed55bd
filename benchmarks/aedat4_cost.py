"""What reading AEDAT4 safely costs (edge/aedat4.py): one JSON line.

On the real DAVIS sample (../shared/data/event-samples/davis-sample.aedat4, 0.95 MB, 111,954 events): the
`aedat` decoder called in this process (the unsafe way: an abort there ends the interpreter), the framing
walk alone, edge.events.read_aedat4 on its first call (it starts the decoding child) and on later calls (the
child is kept), and decode_isolated alone. Times are means of --repeat calls.

Usage: python benchmarks/aedat4_cost.py [--repeat 5]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SAMPLE = (REPO / ".." / "shared" / "data" / "event-samples" / "davis-sample.aedat4").resolve()


def decode_in_process(path: str) -> np.ndarray:
    import aedat
    decoder = aedat.Decoder(path)
    first = min(i for i, s in decoder.id_to_stream().items() if s["type"] == "events")
    return np.concatenate([p["events"] for p in decoder if p["stream_id"] == first])


def mean_seconds(fn, repeat: int) -> float:
    t0 = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - t0) / repeat


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    if not SAMPLE.is_file():
        ap.error(f"{SAMPLE} not found (the project's ../shared/data)")
    from edge import aedat4
    from edge.events import read_aedat4
    path = str(SAMPLE)
    n = len(decode_in_process(path))                      # warm: the file in the page cache, aedat imported
    t0 = time.perf_counter()
    first = read_aedat4(path)
    first_s = time.perf_counter() - t0
    assert len(first.events) == n
    print(json.dumps({
        "file_bytes": SAMPLE.stat().st_size, "events": n, "repeat": args.repeat,
        "aedat_in_process_s": round(mean_seconds(lambda: decode_in_process(path), args.repeat), 4),
        "framing_check_s": round(mean_seconds(lambda: aedat4.check_framing(path), args.repeat), 4),
        "read_aedat4_first_call_s": round(first_s, 3),
        "read_aedat4_later_calls_s": round(mean_seconds(lambda: read_aedat4(path), args.repeat), 4),
        "decode_isolated_s": round(mean_seconds(lambda: aedat4.decode_isolated(path), args.repeat), 4),
    }))


if __name__ == "__main__":
    main()
