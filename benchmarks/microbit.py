"""The micro profile on the QEMU micro:bit (MicroPython 1.9.2): speed, heap and bit-exactness; ONE JSON line.

For each board configuration (default: `-icount shift=6`, whose guest clock approximates a 16 MHz Cortex-M0,
then QEMU without -icount, whose guest clock is the host's):
1. the program `snn-edge flash --profile microbit` writes (host_tools/micro_flash.micro_files) and the
   model (the 128-16-10 readout_delta model tests/firmware/test_micro_runtime.py builds, same code) are
   written with RawRepl.put, the board soft-resets into main.py's link loop;
2. link run: N built-in labelled samples are streamed through host_tools.link (EVENTS, END_SAMPLE), then
   GET_STATS (heap_free: after load and after the run) and GET_WEIGHTS; wall-clock samples/s; the
   predictions and the learned readout are compared with converters.intsim.learn_samples;
3. device-clock run: GET_STATS has no compute time and the device program has no heap to spare for one, so
   after a soft reset (fresh weights) the link loop is broken into the raw REPL and the same modules'
   END_SAMPLE handler (micro_sample.result: the network and the learning rule) is timed with
   utime.ticks_us on the board, sample by sample, over the same samples' input bitmaps (written to the
   board's filesystem; the EVENTS binning and the link are not in this figure). Its predictions are
   compared with intsim too.
Synaptic ops: weight-row elements added (active inputs x hidden + hidden spikes x classes, from intsim:
the first layer is frozen, so the counts do not depend on learning), as benchmarks/device_runtime.py counts.

    python benchmarks/microbit.py [--samples 6] [--icount 6,off]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from converters import intsim  # noqa: E402
from converters.blob import intmodel_to_blob  # noqa: E402
from edge.data import frames_of  # noqa: E402
from edge.generator import generate_dataset  # noqa: E402
from host_tools.link import LinkError, connect, open_serial  # noqa: E402
from host_tools.micro_flash import micro_files, micro_program  # noqa: E402
from host_tools.transport import PROFILES, RawRepl, RemoteError  # noqa: E402
from host_tools.virtual_board import MicrobitBoard  # noqa: E402
from tests.firmware.test_micro_runtime import SPEC, _model  # noqa: E402  # the model the tests run

BITMAPS = "bm.bin"
BOOT_SECONDS = 3.0      # main.py's imports on QEMU take well under this (hello answered ~0.1-0.3 s after reset)


def reference_model():
    """The 128-16-10 readout_delta model of tests/firmware/test_micro_runtime.py (seed 0)."""
    return _model(np.random.default_rng(0))


def bitmaps(X: np.ndarray) -> bytes:
    """Samples [S, T, N_in] of 0/1 as micro_net.BM holds them: per step, input i at bit i & 7 of byte i >> 3."""
    return np.packbits(X > 0, axis=2, bitorder="little").tobytes()


def synaptic_ops(model, X: np.ndarray) -> int:
    """Weight-row elements added over the samples: active inputs x hidden + hidden spikes x classes."""
    res = intsim.run(model, np.ascontiguousarray(X.transpose(1, 0, 2)))
    return int((X > 0).sum()) * model.layers[0].n_out + int(res.spikes[0].sum()) * model.layers[1].n_out


def boot_into_link(ser, timeout: float = 60.0):
    """Soft reset at the friendly REPL (main.py runs its link loop); -> the link once it answers."""
    ser.write(b"\r\x04")
    # quiet while main.py imports the modules: until its loop sets kbd_intr(-1), a 0x03 in a hello frame
    # (random nonce, CRC) interrupts the import and the board stays at the REPL
    time.sleep(BOOT_SECONDS)
    try:
        return connect(ser, profile="microbit", boot_seconds=timeout)
    except LinkError as exc:        # main.py died at boot (out of heap): the board's traceback says so
        time.sleep(0.5)
        raise LinkError(f"{exc}; the board said: {ser.read(ser.in_waiting)[-600:]!r}") from None


def link_run(ser, recs, labels) -> dict:
    link = boot_into_link(ser)
    after_load = link.get_stats()["heap_free"]
    preds, failed = [], None
    t0 = time.perf_counter()
    for r, y in zip(recs, labels):
        e = r.events
        try:
            link.send_events(e["x"], e["y"], e["t"], e["p"])
            preds.append(link.end_of_sample(int(y)).cls)
        except LinkError as exc:
            # the board's own words (a traceback when main.py died) are in the link's receive tail
            failed = {"sample": len(preds), "error": str(exc),
                      "board_said": link.rx_tail.decode("utf-8", "replace")[-400:]}
            break
    wall = time.perf_counter() - t0
    out = {"heap_free_after_load": after_load, "predictions": preds, "wall_s": round(wall, 2),
           "samples_per_s_wall": round(len(preds) / wall, 3) if preds else 0.0, "failed": failed}
    if failed is None:
        stats = link.get_stats()
        out.update(heap_free_after_run=stats["heap_free"], stats=stats, readout=link.get_weights())
    return out


def device_clock_run(ser, n: int, labels, names: dict) -> dict:
    """The END_SAMPLE handler timed on the board (utime.ticks_us) over the bitmaps in BITMAPS."""
    repl = RawRepl(ser, PROFILES["microbit"], timeout=120)
    net, sample = names["micro_net"], names["micro_sample"]
    # one exec, parsed once while the heap is whole (a second parse, even of one line, found no hole)
    code = (f"import gc,utime,{net},{sample}\nF=open({BITMAPS!r},'rb')\ngc.collect()\n"
            f"print({sample}.{names['S']}[0],gc.mem_free())\n"
            f"for y in {tuple(int(v) for v in labels)!r}:\n k=F.readinto({net}.{names['BM']})\n"
            f" s=utime.ticks_us()\n r={sample}.{names['result']}(y)\n"
            " print(utime.ticks_diff(utime.ticks_us(),s),k,r[0]|r[1]<<8)\nF.close()")
    for attempt in range(1, 4):
        repl.enter()                            # two Ctrl-C: the link loop ends
        repl.exit()
        boot_into_link(ser)                     # a soft reset: the flashed weights, the program's heap layout
        repl.enter()                            # the loop ends again, the modules stay imported
        try:
            out = repl.exec(code).split()
            break
        except RemoteError as exc:              # MemoryError: the parser found no hole big enough
            if attempt == 3 or "MemoryError" not in str(exc):
                raise
    done, free = int(out[0]), int(out[1])
    if done:
        raise LinkError(f"the board did not restart: it had run {done} samples after the soft reset")
    rows = np.array(out[2:], dtype=np.int64).reshape(-1, 3)
    if len(rows) != len(labels) or (rows[:, 1] != n).any():
        raise RemoteError(f"{BITMAPS}: the board read {rows[:, 1].tolist()} bytes of the samples' bitmaps, "
                          f"expected {n} for each of {len(labels)}")
    ticks, preds = rows[:, 0].tolist(), rows[:, 2].tolist()
    return {"repl_attempts": attempt, "heap_free_at_repl": free, "ticks_us": ticks, "predictions": preds}


def run_board(icount, blob, files, names, recs, labels, X, ops, expected) -> dict:
    with MicrobitBoard(icount=icount) as mb:
        ser = open_serial(mb.path)
        try:
            repl = RawRepl(ser, PROFILES["microbit"], timeout=60)
            repl.enter()
            for name, data in files:
                repl.put(name, data)
            repl.put(BITMAPS, bitmaps(X))   # now: with the program loaded, the REPL has no heap to write it
            repl.exit()
            t0 = time.perf_counter()
            link = link_run(ser, recs, labels)
            link_s = time.perf_counter() - t0
            clock = device_clock_run(ser, X.shape[1] * ((X.shape[2] + 7) >> 3), labels, names)
        finally:
            ser.close()
    preds, learned = expected
    device_s = sum(clock["ticks_us"]) / 1e6
    readout = link.pop("readout", None)
    return {"icount": icount, "samples": len(labels),
            "synaptic_ops": ops,
            "synaptic_ops_per_s_device": round(ops / device_s),
            "device_clock": "utime.ticks_us on the board around micro_sample.result (network + learning), raw REPL",
            "network_s_per_sample_device": round(device_s / len(labels), 3),
            "samples_per_s_device_network_only": round(len(labels) / device_s, 3),
            "samples_per_s_wall_link": link["samples_per_s_wall"],
            "synaptic_ops_per_s_wall_link": round(ops / link["wall_s"]) if link["failed"] is None else None,
            "heap_free_after_load": link["heap_free_after_load"],
            "heap_free_after_run": link.get("heap_free_after_run"),
            "link_predictions_equal_intsim": link["predictions"] == list(preds),
            "link_readout_equal_intsim": readout == learned.layers[-1].W.astype(np.int8).tobytes()
            if readout is not None else None,
            "repl_predictions_equal_intsim": clock["predictions"] == list(preds),
            "link_failed": link["failed"], "link_run_wall_s": round(link_s, 1),
            "heap_free_at_repl": clock["heap_free_at_repl"], "repl_attempts": clock["repl_attempts"], "ticks_us": clock["ticks_us"],
            "repl_predictions": clock["predictions"]}


def parse_icounts(text: str) -> list[int | None]:
    out = []
    for part in text.split(","):
        part = part.strip()
        if part in ("off", "none"):
            out.append(None)
        elif part.isdigit() and int(part) <= 10:
            out.append(int(part))
        else:
            raise SystemExit(f"--icount {text!r}: expected shifts 0..10 or 'off', comma-separated (e.g. 6,off)")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=6, help="built-in labelled samples streamed (1..50)")
    ap.add_argument("--icount", default="6,off", help="QEMU -icount shifts to run, 'off' for none (default 6,off)")
    args = ap.parse_args()
    if not 1 <= args.samples <= 50:
        raise SystemExit(f"--samples {args.samples}: expected 1..50 (the bitmaps go to the board's ~20 KB filesystem)")
    icounts = parse_icounts(args.icount)
    why = MicrobitBoard.missing()
    if why:
        print(json.dumps({"skipped": why}))
        return 0
    model = reference_model()
    blob = intmodel_to_blob(model)
    files = micro_files(blob)
    names = micro_program(blob)[1]
    recs = generate_dataset(max(1, -(-args.samples // 10)), seed=1)[:args.samples]
    labels = np.array([r.label for r in recs])
    X = np.stack([frames_of(r, SPEC) for r in recs])
    learned, preds, _, _, _ = intsim.learn_samples(model, X, labels)
    ops = synaptic_ops(model, X)
    runs = [run_board(ic, blob, files, names, recs, labels, X, ops, (preds, learned)) for ic in icounts]
    print(json.dumps({"model": "128-16-10 readout_delta (tests/firmware/test_micro_runtime.py, seed 0)",
                      "program_bytes": sum(len(d) for n, d in files if n != "model.blob"),
                      "intsim_predictions": [int(p) for p in preds], "runs": runs}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
