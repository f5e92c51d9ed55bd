"""Seeded fuzz campaign against the hardened host-side readers (issue 14): one JSON line.

Formats (each `--cases` cases, seeded; mutations of REAL inputs where the format has them):
- npy:    event .npy files: byte mutations of real N-MNIST recordings saved as .npy (bit flips, bytes set,
          inserted, deleted, truncations, header fields), and random structured arrays (dtypes, shapes,
          values) -> edge.events.read_events, then the executors' binning (edge.transforms.to_frames with
          the N-MNIST model's spec; a DAVIS model's 320x240 spec for AEDAT4) on what it accepted;
- bin:    N-MNIST .bin: byte mutations of real recordings -> read_events, then the binning;
- aedat4: AEDAT4: byte mutations of a real DAVIS recording (its first packets, a valid small AEDAT4; 2% the
          whole 0.95 MB file) -> read_events (framing check + isolated decoder), then the binning;
- aedat2: AEDAT 2.0: byte mutations of a real MNIST-DVS (DVS128) recording -> read_events, then a DVS128
          model's binning;
- link:   board answers: mutated INFO/RESULT/STATS/ERROR/WEIGHTS payloads into host_tools.link's decoders,
          and (1 case in 5) a whole session (hello, events, end of sample, stats, weights) against an
          in-process board (the firmware's DeviceSession) whose answers are mutated;
- cli:    command lines: every option with a checked type (found in the parser), given hostile values
          (zero, negative, inf, nan, huge, not numbers, directories, unwritable paths) -> parse only (an
          accepted value is checked against what the option promises); 1 case in 10 runs a whole command
          (`data info` on a mutated .bin or .npy recording, `monitor --log` on a mutated log) through
          host_tools.cli.main;
- blob:   model blobs (four small models: no rule, readout_delta, SOLSA, GEM; with a binning) byte-mutated,
          the CRC recomputed in 3 cases of 4 (else a mutation is only a CRC error) -> `snn-edge plan` (the
          host, through the device's reader) and the device itself (firmware_py Device.load_model); a model
          the device accepts then runs one labelled sample of events on it, which must not fail;
- onnx:   the same models exported as .onnx, byte-mutated (1 case in 5: a structural edit of the proto: a
          function, node, output or initializer deleted, a metadata value replaced) -> `snn-edge plan` (the
          host importer) and the device's own .onnx reader; a file the host accepts is then run by both
          host executors (the integer simulator and onnxruntime on the file's graph, 1 case in 4 of those:
          onnxruntime sessions are slow), one the device accepts runs a sample there. Accepted by one side
          and refused by the other is counted in `notes` (not an error: the host checks more).

Counts per format: cases; named (a DataError / LinkError / SnnEdgeError naming the problem, or a one-line
exit 2); accepted (read, and the binning took it; or a valid answer); unexpected (any other exception, an
accepted value the option should refuse, an accepted file the binning / the executors / the device then
fail on, a multi-line CLI error or a traceback); crashes (the interpreter died: each batch of cases runs in a
child process, resumed after the case that killed it); hangs (a case over --case-seconds). unexpected_kinds
names what they were.

Usage: nice -n 15 python benchmarks/fuzz.py [--cases 10000] [--seed 14] [--formats npy,bin,aedat4,aedat2,...] [--jobs 2]
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import io
import json
import os
import random
import signal
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DATA = (REPO / ".." / "shared" / "data").resolve()
NMNIST = DATA / "nmnist-small" / "Train"
DAVIS = DATA / "event-samples" / "davis-sample.aedat4"
DVS128 = DATA / "event-samples" / "mnist-dvs_digit0_scale4_0001.aedat"
FORMATS = ("npy", "bin", "aedat4", "aedat2", "blob", "onnx", "link", "cli")
BATCH = 500


class Hang(Exception):
    pass


# ------------------------------------------------------------------ byte mutations
def mutate(rng: random.Random, data: bytes, header: int = 0) -> bytes:
    """One to three mutations; `header` bytes at the start get half of them (where formats declare sizes)."""
    b = bytearray(data)
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        span = header if header and rng.random() < 0.5 else len(b)
        pos = rng.randrange(max(min(span, len(b)), 1))
        op = rng.randrange(8)
        if op == 0 and b:                                   # flip a bit
            b[pos] ^= 1 << rng.randrange(8)
        elif op == 1 and b:                                 # set a byte
            b[pos] = rng.choice((0, 1, 0x7F, 0x80, 0xFF, rng.randrange(256)))
        elif op == 2:                                       # insert bytes
            b[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 9)))
        elif op == 3:                                       # delete a range
            del b[pos:pos + rng.randrange(1, 64)]
        elif op == 4:                                       # truncate
            del b[rng.randrange(len(b) + 1):]
        elif op == 5 and len(b) >= 4:                       # an absurd 32-bit field
            pos = min(pos, len(b) - 4)
            struct.pack_into("<I", b, pos, rng.choice((0, 1, 0x7FFFFFFF, 0xFFFFFFFF, 1 << 30, rng.getrandbits(32))))
        elif op == 6 and b:                                 # duplicate a range
            b[pos:pos] = b[pos:pos + rng.randrange(1, 256)]
        else:                                               # empty, or a byte string of another kind
            b = bytearray(rng.choice((b"", b"PK\x03\x04", b"\x93NUMPY", b"#!AER-DAT4.0\r\n")))
    return bytes(b)


# ------------------------------------------------------------------ event files
def _real_bins(n: int = 20) -> list[bytes]:
    files = sorted(NMNIST.glob("*/*.bin"))[:: max(1, len(sorted(NMNIST.glob("*/*.bin"))) // n)][:n]
    return [f.read_bytes() for f in files]


def _npy_bytes(arr) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def _random_array(rng: random.Random):
    kinds = ["<i1", "<i2", "<i4", "<i8", "<u1", "<u2", "<u8", "<f4", "<f8", "?", "U2", "S3", ">i2", "<c8"]
    names = rng.sample(["x", "y", "t", "p", "q"], rng.randrange(0, 6))
    dt = np.dtype([(f, rng.choice(kinds)) for f in names]) if names else np.dtype(rng.choice(kinds))
    shape = rng.choice(((), (rng.randrange(0, 40),), (rng.randrange(0, 5), 2)))
    arr = np.zeros(shape, dt)
    raw = np.random.default_rng(rng.getrandbits(32)).integers(0, 256, arr.nbytes, dtype=np.uint8).tobytes()
    if arr.nbytes:
        arr = np.frombuffer(raw, dt).reshape(shape).copy()
    if names and rng.random() < 0.5 and arr.ndim == 1:      # mostly sane values, one field off
        for f in names:
            if arr.dtype[f].kind in "iu":
                arr[f] = np.sort(np.random.default_rng(rng.getrandbits(32)).integers(0, 34, len(arr)))
    return arr


class EventCases:
    def __init__(self, fmt: str, tmp: str):
        from edge.data import NMNIST_SPEC
        from edge.events import EVENT_DTYPE, read_events
        from firmware_py.binning import BinSpec
        self.fmt, self.tmp, self.read = fmt, tmp, read_events
        # the executors bin with the model's spec, not the file's: N-MNIST's, a DAVIS model's 320x240, a DVS128's
        self.spec = {"aedat4": BinSpec(320, 240, 10_000, 30, downsample=8),
                     "aedat2": BinSpec(128, 128, 10_000, 30, downsample=4)}.get(fmt, NMNIST_SPEC)
        self.suffix = "aedat" if fmt == "aedat2" else fmt
        bins = _real_bins() if fmt in ("bin", "npy") else []
        if fmt == "aedat2":
            self.bases = [DVS128.read_bytes()]
        elif fmt == "bin":
            self.bases = bins
        elif fmt == "npy":
            from edge.events import read_nmnist_bin
            self.bases = []
            for i, b in enumerate(bins[:8]):
                p = os.path.join(tmp, f"base{i}.bin")
                Path(p).write_bytes(b)
                ev = read_nmnist_bin(p).events
                self.bases.append(_npy_bytes(ev if i % 2 else ev.astype(
                    [("x", "<i8"), ("y", "<i8"), ("t", "<i8"), ("p", "<i8")])))
            self.event_dtype = EVENT_DTYPE
        else:
            from edge.aedat4 import first_packets
            whole = DAVIS.read_bytes()
            self.bases = [first_packets(whole, 2), first_packets(whole, 6)]
            self.whole = whole

    def make(self, rng: random.Random) -> bytes:
        if self.fmt == "npy" and rng.random() < 0.3:
            return _npy_bytes(_random_array(rng))
        if self.fmt == "aedat4" and rng.random() < 0.02:
            return mutate(rng, self.whole, header=2400)
        header = {"npy": 128, "bin": 0, "aedat4": 2400, "aedat2": 600}[self.fmt]
        return mutate(rng, rng.choice(self.bases), header=header)

    def run(self, rng: random.Random) -> str:
        from edge.errors import DataError
        from edge.transforms import to_frames
        path = os.path.join(self.tmp, "case." + self.suffix)
        Path(path).write_bytes(self.make(rng))
        try:
            rec = self.read(path)
        except DataError:
            return "named"
        try:                       # what the executors do with it: bin it with the model's spec
            to_frames(rec.events, self.spec, path)
        except DataError:
            return "named"         # a recording outside the model's sensor: refused by the binning, named
        return "accepted"


# ------------------------------------------------------------------ link answers
class LinkCases:
    def __init__(self, tmp: str):
        from firmware_py import link as L
        from host_tools import link as H
        self.L, self.H = L, H
        self.valid = {
            "info": L.pack_info(5, 1024, 4096, b"micropython model=578-64-10 rule=solsa heap=194304"),
            "result": L.pack_result(3, 200, list(range(10))),
            "stats": L.pack_stats([("samples", 12), ("labelled", 10), ("correct", 7), ("heap_free", 81234)]),
            "error": L.pack_error(6, "label 12 outside the 10 classes"),
            "weights": struct.pack("<I", 300) + bytes(range(200)),
        }
        self.decoders = {"info": H.decode_info, "result": H.decode_result, "stats": H.decode_stats,
                         "error": H.decode_error, "weights": lambda p: H.decode_weights_chunk(p, 0, None)}

    def run(self, rng: random.Random) -> str:
        if rng.random() < 0.2:
            return self._session(rng)
        kind = rng.choice(sorted(self.valid))
        payload = mutate(rng, self.valid[kind], header=8) if rng.random() < 0.9 else bytes(
            rng.randrange(256) for _ in range(rng.randrange(0, 40)))
        try:
            self.decoders[kind](payload)
        except self.H.LinkError:
            return "named"
        return "accepted"

    def _session(self, rng: random.Random) -> str:
        from tests.host_tools.board_double import InProcessBoard
        L, H = self.L, self.H
        target = rng.choice((L.INFO, L.RESULT, L.STATS, L.WEIGHTS, L.ACK, L.ERROR))
        seed = rng.getrandbits(32)

        def bad(rtype, payload):
            if rtype != target:
                return None
            return mutate(random.Random(seed), payload, header=8)
        link = H.BoardLink(InProcessBoard(mutate=bad), timeout=0.01, max_retries=3)
        try:
            link.hello()
            link.send_events(np.arange(30) % 34, np.arange(30) % 34, np.arange(30) * 100, np.arange(30) % 2)
            link.end_of_sample(rng.randrange(-1, 10))
            link.get_stats()
            link.get_weights()
        except H.LinkError:
            return "named"
        return "accepted"


# ------------------------------------------------------------------ command lines
HOSTILE = ["0", "-1", "-0", "1", "2", "inf", "-inf", "nan", "NaN", "1e999", "1e-300", "abc", "", " ", "0x10",
           "1.5", "-2.5", "99999999999999999999", "3K", "1.5M", "0.1K", "4G", "5G", "-64K", "K", "1e3", "٣",
           "1_000", "+7", "0.0", "1/2", "None", "0.5", "1", "255", "4294967295", "4294967296"]


class CliCases:
    def __init__(self, tmp: str):
        import argparse as ap

        from converters.blob import intmodel_to_blob
        from host_tools import options
        from host_tools.cli import build_parser
        from tests.converters.helpers import small_model
        self.tmp, self.options, self.build = tmp, options, build_parser
        self.blob = intmodel_to_blob(small_model(np.random.default_rng(0)))
        self.model = os.path.join(tmp, "model.blob")
        Path(self.model).write_bytes(self.blob)
        os.makedirs(os.path.join(tmp, "a_dir"), exist_ok=True)
        Path(tmp, "a_file").write_text("x")
        self.log = b"".join(json.dumps({"kind": "sample", "index": i, "label": i % 10, "cls": (i * 7) % 10,
                                        "confidence": 100 + i, "correct": i % 3 == 0}).encode() + b"\n"
                            for i in range(30))
        self.bins = _real_bins(5)
        base = os.path.join(tmp, "base.bin")
        Path(base).write_bytes(self.bins[0])
        from edge.events import read_nmnist_bin
        self.npy = _npy_bytes(read_nmnist_bin(base).events)
        parser = build_parser()
        self.targets = []                     # (argv prefix, action)
        self.required: dict[str, list] = {}

        def walk(p, prefix):
            for a in p._actions:
                if isinstance(a, ap._SubParsersAction):
                    for name, child in a.choices.items():
                        walk(child, prefix + [name])
                elif getattr(a.type, "__module__", "") == options.__name__ and a.option_strings:
                    self.targets.append((prefix, a))
            self.required[" ".join(prefix)] = [a for a in p._actions if a.required or
                                               (not a.option_strings and a.dest not in ("help", "command")
                                                and not isinstance(a, ap._SubParsersAction))]
        walk(parser, [])
        self.paths = [os.path.join(tmp, "a_dir"), os.path.join(tmp, "a_file", "x.png"), "/proc/no/x.png",
                      "/proc/x.png", "", os.path.join(tmp, "ok.png"), os.path.join(tmp, "new", "deep", "x.png"),
                      "/", ".", os.path.join(tmp, "a_file")]

    def _fill(self, prefix) -> list[str]:
        argv = list(prefix)
        for a in self.required.get(" ".join(prefix), []):
            value = {"model": self.model, "checkpoint": self.model, "path": "builtin", "data": "builtin",
                     "port": "/dev/null", "out": os.path.join(self.tmp, "o.npz"),
                     "output": os.path.join(self.tmp, "o.blob")}.get(a.dest, "builtin")
            argv += [value] if not a.option_strings else [a.option_strings[-1], value]
        return argv

    def _promise(self, kind, value, text) -> bool:
        """Does the parsed value keep the option's promise? (an independent check of options.py)"""
        import math
        o = self.options
        if kind is o.size_bytes:
            return isinstance(value, int) and 0 < value <= 1 << 32
        if kind in (o.output_file, o.output_dir):
            if kind is o.output_file and os.path.isdir(value):
                return False
            probe = Path(value if kind is o.output_dir else (os.path.dirname(value) or "."))
            while not probe.exists():
                probe = probe.parent
            return probe.is_dir() and os.access(probe, os.W_OK) and not str(probe).startswith("/proc")
        if kind in (o.sensor_shift, o.arch):
            return isinstance(value, str)
        if isinstance(value, float) and not math.isfinite(value):
            return False
        lo = {o.positive_int: 1, o.nonneg_int: 0, o.xorshift_seed: 1, o.positive_float: 1e-300,
              o.nonneg_float: 0, o.unit_float: 0, o.open_fraction: 1e-300, o.finite_float: -math.inf}[kind]
        hi = {o.unit_float: 1, o.open_fraction: 1 - 1e-16, o.xorshift_seed: 2**32 - 1}.get(kind, math.inf)
        integral = kind in (o.positive_int, o.nonneg_int, o.xorshift_seed)
        return (isinstance(value, int) if integral else isinstance(value, float)) and lo <= value <= hi

    def run(self, rng: random.Random) -> str:
        if rng.random() < 0.1:
            return self._command(rng)
        prefix, action = rng.choice(self.targets)
        kind = action.type
        if kind in (self.options.output_file, self.options.output_dir):
            text = rng.choice(self.paths)
        elif kind is self.options.sensor_shift:
            text = rng.choice(["gain=", "rotation=", "noise=", "hot=", "hot_rate=", "bogus="]) + rng.choice(HOSTILE)
        elif kind is self.options.arch:
            text = "-".join(rng.choice(HOSTILE) or "1" for _ in range(rng.randrange(1, 4)))
        else:
            text = rng.choice(HOSTILE) if rng.random() < 0.9 else "".join(
                chr(rng.randrange(32, 0x3000)) for _ in range(rng.randrange(1, 6)))
        argv = self._fill(prefix) + [action.option_strings[-1], text]
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            try:
                args = self.build().parse_args(argv)
            except SystemExit as exc:
                lines = err.getvalue().strip().splitlines()
                if exc.code == 2 and len(lines) == 1 and action.option_strings[-1] in lines[0]:
                    return "named"
                return f"unexpected:bad-error-message:{action.option_strings[-1]}"
        if not self._promise(kind, getattr(args, action.dest), text):
            return f"unexpected:accepted-bad-value:{action.option_strings[-1]}={text!r}"
        return "accepted"

    def _command(self, rng: random.Random) -> str:
        from host_tools.cli import main
        which = rng.randrange(3)
        if which == 0:
            path = os.path.join(self.tmp, "rec.bin")
            Path(path).write_bytes(mutate(rng, rng.choice(self.bins)))
            argv = ["data", "info", path]
        elif which == 1:
            path = os.path.join(self.tmp, "rec.npy")
            Path(path).write_bytes(mutate(rng, self.npy, header=128))
            argv = ["data", "info", path]
        else:
            path = os.path.join(self.tmp, "s.jsonl")
            Path(path).write_bytes(mutate(rng, self.log))
            argv = ["monitor", "--log", path, "--plot", os.path.join(self.tmp, "p.png")]
        err, out = io.StringIO(), io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            rc = main(argv)
        lines = err.getvalue().strip().splitlines()
        if rc in (0, 1) and not lines:
            return "accepted"                      # plan: 0 fits, 1 does not fit
        if rc == 2 and len(lines) == 1 and "Traceback" not in lines[0]:
            return "named"
        return f"unexpected:exit {rc}:{argv[0]}:{(lines or ['?'])[-1][:80]}"


# ------------------------------------------------------------------ models: blobs and .onnx files
def _base_models() -> list:
    """Four small models with a binning (24 inputs: a 34x34 sensor cropped to 6x2, both polarities): no rule,
    readout_delta, SOLSA (full traces) and GEM (3 compartments)."""
    from tests.converters.helpers import gem_model, small_model
    binning = (34, 34, 1000, 12, 1, (3, 5, 6, 2), 0)
    models = [small_model(np.random.default_rng(k), rule=rule, n_in=24) for k, rule in
              enumerate(("none", "readout_delta", "solsa"))] + [gem_model(np.random.default_rng(3), n_in=24)]
    for m in models:
        m.binning = binning
    return models


class ModelCases:
    """A mutated model file, read by the host (`snn-edge plan`) and by the device (Device.load_model)."""

    def __init__(self, fmt: str, tmp: str):
        self.tmp = tmp
        from converters.blob import intmodel_to_blob
        from converters.onnx_export import to_onnx
        self.fmt = fmt
        models = _base_models()
        if fmt == "blob":
            self.bases = [intmodel_to_blob(m) for m in models]
        else:
            self.bases = [to_onnx(m).SerializeToString(deterministic=True) for m in models]

    def make(self, rng: random.Random) -> bytes:
        base = rng.choice(self.bases)
        if self.fmt == "onnx" and rng.random() < 0.2:
            return self._edit(rng, base)
        data = mutate(rng, base, header=64 if self.fmt == "blob" else 400)
        if self.fmt == "blob" and len(data) > 4 and rng.random() < 0.75:     # past the CRC: the fields' checks
            import zlib
            data = data[:-4] + struct.pack("<I", zlib.crc32(data[:-4]) & 0xFFFFFFFF)
        return data

    @staticmethod
    def _edit(rng: random.Random, data: bytes) -> bytes:
        import onnx
        p = onnx.ModelProto()
        p.ParseFromString(data)
        fields = [f for f in (p.functions, p.graph.node, p.graph.output, p.graph.input, p.graph.initializer,
                              p.metadata_props) if len(f)]
        f = rng.choice(fields)
        k = rng.randrange(len(f))
        if f is p.metadata_props and rng.random() < 0.7:
            f[k].value = rng.choice(("", "null", "[]", "{}", "[" * 5000 + "]" * 5000, "1e999", '"x"', "-1", "0",
                                     "[{}]", '[{"kind": "lif"}]', '[{"kind": "lif", "w_exp": [1]}]',
                                     "[1, 2, 3, 4, 5, 6, [1, 2]]", '[34, 34, 1000, 12, 1, [3, 5, 6, 2], 0.5]'))
        else:
            del f[k]
        return p.SerializeToString()

    def run(self, rng: random.Random) -> str:
        data = self.make(rng)
        host = self._host(data)
        device = self._device(data)
        for side in (host, device):
            if side.startswith("unexpected"):
                return side
        if host == device:
            return host
        only = "host" if host == "accepted" else "device"
        return f"{'named' if 'named' in (host, device) else 'accepted'}:{only}-only-accepts"

    def _host(self, data: bytes) -> str:
        from host_tools.cli import main
        path = os.path.join(self.tmp, "m." + self.fmt)
        Path(path).write_bytes(data)
        err, out = io.StringIO(), io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            rc = main(["plan", path])
        lines = err.getvalue().strip().splitlines()
        if rc == 2 and len(lines) == 1:
            return "named"
        if rc not in (0, 1) or lines:
            kind = lines[-1].split("internal error: ", 1)[-1].split(":")[0] if lines else f"exit {rc}"
            return f"unexpected:host-{kind}:{(lines or ['?'])[-1][:100]}"
        if self.fmt == "onnx" and random.Random(data).random() < 0.25:
            return self._host_executors(path)
        return "accepted"

    @staticmethod
    def _host_executors(path: str) -> str:
        """What `verify` does with a file the importer accepted: both executors on a few steps of input."""
        from converters.onnx_import import load_onnx, read_proto
        from converters.verify import compare_forward, session
        model = load_onnx(path)
        X = (np.random.default_rng(0).random((4, 2, model.layers[0].n_in)) < 0.3).astype(np.uint8)
        try:
            compare_forward(model, session(read_proto(path)), X)
        except Exception as exc:                 # noqa: BLE001 - an accepted file the executors fail on
            return f"unexpected:host-accepted-then-failed:{type(exc).__name__}: {' '.join(str(exc).split())[:80]}"
        return "accepted"

    @staticmethod
    def _device(data: bytes) -> str:
        from firmware_py.device import Device
        from firmware_py.errors import DeviceError
        dev = Device()
        try:
            dev.load_model(data, persist=False)
        except DeviceError:
            return "named"
        except Exception as exc:                 # noqa: BLE001 - counting them is the point
            return f"unexpected:device-{type(exc).__name__}:{' '.join(str(exc).split())[:80]}"
        spec = dev.binner.spec                   # one labelled sample on what it accepted
        rng = np.random.default_rng(0)
        n = 60
        ev = (rng.integers(0, spec.sensor_w, n).tolist(), rng.integers(0, spec.sensor_h, n).tolist(),
              sorted(rng.integers(0, spec.dt_us * spec.n_steps, n).tolist()), rng.integers(0, 2, n).tolist())
        try:
            dev.begin_sample()
            dev.add_events(*ev)
            dev.end_sample(0)
        except Exception as exc:                 # noqa: BLE001 - an accepted model the device fails on
            return f"unexpected:device-accepted-then-failed:{type(exc).__name__}: {' '.join(str(exc).split())[:80]}"
        return "accepted"


# ------------------------------------------------------------------ driver
def worker(fmt: str, seed: int, start: int, count: int, case_seconds: float, progress: str) -> dict:
    """Cases start..start+count-1 of `fmt` (case i uses Random(seed, fmt, i)), in this process."""
    tmp = tempfile.mkdtemp(prefix=f"snn-edge-fuzz-{fmt}-")
    makers = {"link": LinkCases, "cli": CliCases, "blob": lambda t: ModelCases("blob", t),
              "onnx": lambda t: ModelCases("onnx", t)}
    cases = makers.get(fmt, lambda t: EventCases(fmt, t))(tmp)
    counts: collections.Counter = collections.Counter()
    kinds: collections.Counter = collections.Counter()
    notes: collections.Counter = collections.Counter()

    def on_alarm(*_):
        raise Hang()
    signal.signal(signal.SIGALRM, on_alarm)
    for i in range(start, start + count):
        Path(progress).write_text(str(i))
        rng = random.Random(f"{seed}-{fmt}-{i}")
        signal.setitimer(signal.ITIMER_REAL, case_seconds)
        try:
            outcome = cases.run(rng)
        except Hang:
            outcome = "hang"
        except BaseException as exc:             # noqa: BLE001 - counting them is the point
            if isinstance(exc, KeyboardInterrupt):
                raise
            outcome = f"unexpected:{type(exc).__name__}:{' '.join(str(exc).split())[:80]}"
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        head = outcome.split(":")[0]
        counts[head] += 1
        if head in ("named", "accepted") and ":" in outcome:
            notes[outcome.split(":", 1)[1]] += 1
        if head == "unexpected":
            kinds[outcome.split(":", 2)[1]] += 1
            if counts[head] <= 5:
                print(f"fuzz {fmt} case {i}: {outcome}", file=sys.stderr)
    return {"counts": dict(counts), "kinds": dict(kinds), "notes": dict(notes)}


def campaign(fmt: str, seed: int, cases: int, case_seconds: float) -> dict:
    """All cases of one format, in child processes of BATCH cases; a child that dies is a crash at the case
    it was running, and the next child resumes after it."""
    t0 = time.monotonic()
    counts: collections.Counter = collections.Counter()
    kinds: collections.Counter = collections.Counter()
    notes: collections.Counter = collections.Counter()
    crashes = []
    with tempfile.TemporaryDirectory() as tmp:
        progress = os.path.join(tmp, "at")
        todo = [(i, min(BATCH, cases - i)) for i in range(0, cases, BATCH)]
        while todo:
            start, n = todo.pop(0)
            r = subprocess.run([sys.executable, __file__, "--worker", fmt, "--seed", str(seed), "--start",
                                str(start), "--cases", str(n), "--case-seconds", str(case_seconds),
                                "--progress", progress],
                               stdout=subprocess.PIPE, text=True, env=dict(os.environ, OPENBLAS_NUM_THREADS="1"))
            if r.returncode == 0:
                res = json.loads(r.stdout.strip().splitlines()[-1])
                counts.update(res["counts"])
                kinds.update(res["kinds"])
                notes.update(res["notes"])
                continue
            # the child died at case `at`: that case is a crash; the cases before it in the batch (lost with
            # the child, deterministic) and after it are run again in new children
            at = int(Path(progress).read_text())
            crashes.append({"case": at, "exit": r.returncode})
            counts["crash"] += 1
            todo[:0] = [(a, b) for a, b in ((start, at - start), (at + 1, start + n - at - 1)) if b > 0]
    return {"cases": sum(counts.values()), "named": counts["named"], "accepted": counts["accepted"],
            "unexpected": counts["unexpected"], "crashes": counts["crash"], "hangs": counts["hang"],
            "unexpected_kinds": dict(kinds), "notes": dict(notes), "crash_cases": crashes[:10],
            "seconds": round(time.monotonic() - t0, 1)}


def main() -> None:
    from host_tools.options import positive_int
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", type=positive_int, default=10_000)
    ap.add_argument("--seed", type=int, default=14)
    ap.add_argument("--formats", default=",".join(FORMATS))
    ap.add_argument("--case-seconds", type=float, default=20.0, help="a case over this is a hang")
    ap.add_argument("--jobs", type=positive_int, default=1, help="formats run at once (default 1)")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--start", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--progress", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.seed, args.start, args.cases, args.case_seconds, args.progress)))
        return
    formats = [f for f in args.formats.split(",") if f]
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        ap.error(f"--formats: unknown {bad}; expected some of {FORMATS}")
    if not NMNIST.is_dir() or not DAVIS.is_file() or not DVS128.is_file():
        ap.error(f"real data not found under {DATA} (nmnist-small, event-samples/davis-sample.aedat4, "
                 f"event-samples/{DVS128.name})")
    out = {"benchmark": "fuzz", "seed": args.seed, "cases_per_format": args.cases, "formats": {}}

    def one(fmt: str) -> dict:
        r = campaign(fmt, args.seed, args.cases, args.case_seconds)
        print(f"fuzz: {fmt}: {json.dumps(r)}", file=sys.stderr, flush=True)
        return r
    # formats in parallel (each its own child processes; the cases and counts are the same as one at a time)
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        out["formats"] = dict(zip(formats, pool.map(one, formats)))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
