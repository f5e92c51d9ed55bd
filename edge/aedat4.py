"""AEDAT 4 (DV software, DAVIS cameras) read safely: the framing checked here, the decoding isolated.

The decoder is the `aedat` package (Rust, pyo3). Measured on corrupt copies of a real DAVIS recording
(benchmarks/fuzz.py and the notes of issue 14), it cannot be called on untrusted bytes in our process:
- it allocates what a length field declares before reading (an 18-byte file asks for 3.6 GB; a flipped bit
  in a packet length asks for up to 4 GB), and a failed allocation in Rust aborts the interpreter (SIGABRT);
- it reads the file header's flatbuffer and the event packets unchecked: a flipped bit gives a panic
  (pyo3's PanicException, a BaseException that escapes `except Exception`) or an out-of-bounds read.
So two layers, each for what it can do:
1. `check_framing` walks the file's structure in Python before the decoder sees it: the magic, the header's
   length and its flatbuffer (offsets inside the header, the compression code, the data table position),
   the stream description (UTF-8 XML naming the event stream and its size), and every packet's
   (stream id, length) up to the data table, each length inside the file. This refuses truncated files,
   absurd sizes and header damage with an error naming the byte offset and the field, in microseconds.
2. `decode_isolated` runs the decoder in a child interpreter with an address-space limit and a timeout:
   damage inside a compressed packet (which only decoding can find) then ends the child, not us, and is
   reported as a DataError naming the file. The child stays up between files (its start, about 0.3 s, is
   paid once, and again only after a crash); a file costs its decoding plus one copy of its events.
"""
from __future__ import annotations

import atexit
import json
import os
import select
import struct
import subprocess
import sys
import tempfile
import threading
import xml.etree.ElementTree as ET

import numpy as np

from edge.errors import DataError

MAGIC = b"#!AER-DAT4.0\r\n"
COMPRESSIONS = {0: "none", 1: "LZ4", 2: "LZ4 high", 3: "Zstd", 4: "Zstd high"}
STREAM_TYPES = ("EVTS", "FRME", "IMUS", "TRIG")
MIN_PACKET = 8            # a size-prefixed flatbuffer: its size and its root offset, at least
DECODE_MEMORY = 2 << 30   # the child's address space: the interpreter, numpy, aedat; plus 32 bytes per file byte
#                           (LZ4 packs events about 3x; 13 bytes an event, held twice while concatenated)
DECODE_SECONDS = 60.0     # plus 1 s per MB of file
EVENT_FIELDS = np.dtype([("t", "<u8"), ("x", "<u2"), ("y", "<u2"), ("on", "?")])


class _Buf:
    """Bounds-checked little-endian reads of a byte string (a flatbuffer), errors naming the field."""

    def __init__(self, data: bytes, path: str, base: int):
        self.data, self.path, self.base = data, path, base

    def read(self, fmt: str, off: int, what: str):
        size = struct.calcsize(fmt)
        if off < 0 or off + size > len(self.data):
            raise DataError(f"{self.path}: AEDAT4 header: {what} at byte {self.base + off} lies outside the "
                            f"{len(self.data)}-byte header")
        return struct.unpack_from("<" + fmt, self.data, off)[0]


def _ioheader(data: bytes, path: str) -> tuple[int, int, str]:
    """(compression, data table position, description) of the IOHeader flatbuffer (dv-processing's
    ioheader.fbs: compression int32 = 0, dataTablePosition int64 = -1, infoNode string), every offset checked."""
    b = _Buf(data, path, len(MAGIC) + 4)
    table = b.read("I", 0, "root offset")
    vtable = table - b.read("i", table, "vtable offset")
    vt_size = b.read("H", vtable, "vtable size")
    if vt_size < 4 or vt_size % 2:
        raise DataError(f"{path}: AEDAT4 header: vtable size {vt_size}, expected an even number >= 4")

    def field(i: int) -> int:        # offset of field i in the table, 0 when absent
        return b.read("H", vtable + 4 + 2 * i, f"field {i}") if 4 + 2 * i < vt_size else 0

    f0, f1, f2 = field(0), field(1), field(2)
    compression = b.read("i", table + f0, "compression") if f0 else 0
    position = b.read("q", table + f1, "dataTablePosition") if f1 else -1
    if not f2:
        raise DataError(f"{path}: AEDAT4 header has no stream description (infoNode)")
    at = table + f2 + b.read("I", table + f2, "infoNode offset")
    n = b.read("I", at, "infoNode length")
    if at + 4 + n > len(data):
        raise DataError(f"{path}: AEDAT4 header: the description declares {n} bytes, the header holds "
                        f"{len(data) - at - 4}")
    try:
        text = data[at + 4:at + 4 + n].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: AEDAT4 header: the description is not UTF-8 ({exc.reason} at byte "
                        f"{exc.start})") from None
    return compression, position, text


def _streams(text: str, path: str) -> dict[int, dict]:
    """The streams the description declares: {id: {"type", "width", "height"}}."""
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise DataError(f"{path}: AEDAT4 header: the stream description is not XML ({exc})") from None
    out_info = next((n for n in root.iter("node") if n.get("name") == "outInfo"), None)
    if root.tag != "dv" or out_info is None:
        raise DataError(f"{path}: AEDAT4 header: no <dv> description with an outInfo node")
    streams: dict[int, dict] = {}
    for node in out_info.findall("node"):
        name = node.get("name", "")
        if not name.isdigit() or int(name) >= 1 << 31 or int(name) in streams:
            raise DataError(f"{path}: AEDAT4 header: stream name {name!r}, expected a new stream number")
        attrs = {a.get("key"): (a.text or "") for a in node.iter("attr")}
        kind = attrs.get("typeIdentifier", "")
        if kind not in STREAM_TYPES:
            raise DataError(f"{path}: AEDAT4 stream {name}: type {kind!r}, expected one of {STREAM_TYPES}")
        info: dict = {"type": kind}
        if kind in ("EVTS", "FRME"):
            for key, dim in (("sizeX", "width"), ("sizeY", "height")):
                v = attrs.get(key, "")
                if not v.isdigit() or not 0 < int(v) <= 32767:
                    raise DataError(f"{path}: AEDAT4 stream {name}: {key} {v!r}, expected 1..32767")
                info[dim] = int(v)
        streams[int(name)] = info
    if not any(s["type"] == "EVTS" for s in streams.values()):
        raise DataError(f"{path}: AEDAT4 file declares no event stream (streams: "
                        f"{sorted(s['type'] for s in streams.values())})")
    return streams


def first_packets(data: bytes, n: int) -> bytes:
    """An AEDAT4 file made of the first `n` packets of `data` (a valid AEDAT4 file) and no data table: a
    small real recording for tests and the fuzz campaign."""
    hlen = struct.unpack_from("<I", data, len(MAGIC))[0]
    start = len(MAGIC) + 4
    header = bytearray(data[start:start + hlen])
    table = struct.unpack_from("<I", header, 0)[0]
    vtable = table - struct.unpack_from("<i", header, table)[0]
    if struct.unpack_from("<H", header, vtable)[0] > 6:            # dataTablePosition present: no table now
        f1 = struct.unpack_from("<H", header, vtable + 6)[0]
        if f1:
            struct.pack_into("<q", header, table + f1, -1)
    pos = start + hlen
    for _ in range(n):
        pos += 8 + struct.unpack_from("<I", data, pos + 4)[0]
    return data[:start] + bytes(header) + data[start + hlen:pos]


def check_framing(path: str) -> dict:
    """Walk the file's structure without decoding it; returns {"compression", "streams", "packets"}.
    Raises DataError naming the file, the byte offset and what was expected vs found."""
    size = os.path.getsize(path)
    with open(path, "rb") as fh:
        head = fh.read(len(MAGIC) + 4)
        if not head.startswith(MAGIC):
            raise DataError(f"{path}: broken AEDAT4 header: starts with {head[:14]!r}, expected {MAGIC!r}")
        if len(head) < len(MAGIC) + 4:
            raise DataError(f"{path}: truncated AEDAT4 file: {size} bytes, the header's length field is missing")
        n = struct.unpack("<I", head[len(MAGIC):])[0]
        start = len(MAGIC) + 4 + n
        if start > size:
            raise DataError(f"{path}: AEDAT4 header declares {n} bytes, the file holds {size - len(MAGIC) - 4} "
                            "after the length field (truncated or corrupt)")
        compression, table, text = _ioheader(fh.read(n), path)
        if compression not in COMPRESSIONS:
            raise DataError(f"{path}: AEDAT4 compression code {compression}, expected one of "
                            f"{sorted(COMPRESSIONS)}")
        streams = _streams(text, path)
        end = size if table == -1 else table
        if table > size:
            raise DataError(f"{path}: truncated AEDAT4 file: the header places the data table at byte {table}, "
                            f"the file has {size} bytes")
        if not start <= end <= size:
            raise DataError(f"{path}: AEDAT4 data table position {table}, expected -1 or {start}..{size}")
        pos, packets = start, 0
        while pos < end:
            fh.seek(pos)
            raw = fh.read(8)
            if pos + 8 > end or len(raw) < 8:
                raise DataError(f"{path}: truncated AEDAT4 packet header at byte {pos} ({end - pos} bytes left)")
            stream, length = struct.unpack("<II", raw)
            if stream not in streams:
                raise DataError(f"{path}: AEDAT4 packet at byte {pos}: stream {stream}, the header declares "
                                f"{sorted(streams)}")
            if not MIN_PACKET <= length <= end - pos - 8:
                raise DataError(f"{path}: AEDAT4 packet at byte {pos}: length {length}, expected "
                                f"{MIN_PACKET}..{end - pos - 8} (the bytes left before "
                                f"{'the data table' if table != -1 else 'the end of the file'})")
            pos += 8 + length
            packets += 1
    return {"compression": COMPRESSIONS[compression], "streams": streams, "packets": packets}


class _Worker:
    """One child interpreter that decodes files one after another (a start costs about 0.3 s, a small file's
    decoding milliseconds), replaced whenever it crashes, hangs or runs out of its memory."""

    def __init__(self):
        self.proc: subprocess.Popen | None = None
        self.limit = 0
        self.lock = threading.Lock()

    def _start(self, limit: int) -> subprocess.Popen:
        env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", RUST_BACKTRACE="0")
        return subprocess.Popen([sys.executable, "-m", "edge.aedat4", "--serve"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env,
                                preexec_fn=lambda: _limit_memory(limit))

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def ask(self, request: dict, limit: int, timeout: float) -> dict:
        """The child's answer to one request; {"crash": signal name} or {"timeout": True} when it has none."""
        with self.lock:
            if self.proc is not None and (self.proc.poll() is not None or self.limit < limit):
                self.stop()
            if self.proc is None:
                self.proc, self.limit = self._start(limit), limit
            try:
                return self._exchange(request, timeout)
            except BaseException:      # interrupted mid-request (Ctrl-C, an alarm): its answer would be
                self.stop()            # read as the next request's, so this child goes
                raise

    def _exchange(self, request: dict, timeout: float) -> dict:
        proc = self.proc
        assert proc is not None and proc.stdin is not None and proc.stdout is not None
        try:
            proc.stdin.write((json.dumps(request) + "\n").encode())
            proc.stdin.flush()
        except BrokenPipeError:
            pass
        ready = select.select([proc.stdout], [], [], timeout)[0]
        line = proc.stdout.readline() if ready else b""
        if line:
            try:
                return json.loads(line)
            except ValueError:
                pass
        if not ready:
            self.stop()
            return {"timeout": True}
        code = proc.wait()          # it died: a crash (an abort, a segfault, its memory limit)
        self.proc = None
        import signal
        return {"crash": signal.Signals(-code).name if code < 0 else f"exit code {code}"}




_WORKER = _Worker()
atexit.register(_WORKER.stop)


def decode_isolated(path: str, timeout: float | None = None) -> tuple[np.ndarray, tuple[int, int]]:
    """(events with fields t, x, y, on; (width, height)) of the file's first event stream, decoded by the
    `aedat` package in a child interpreter (see the module's docstring); DataError for anything it refuses,
    crashes on, or takes too long over."""
    size = os.path.getsize(path)
    timeout = timeout if timeout is not None else DECODE_SECONDS + size / 1e6
    with tempfile.TemporaryDirectory(prefix="snn-edge-aedat4-") as tmp:
        out = os.path.join(tmp, "events.npy")
        r = _WORKER.ask({"path": os.path.abspath(path), "out": out}, DECODE_MEMORY + 32 * size, timeout)
        if "timeout" in r:
            raise DataError(f"{path}: the AEDAT4 decoder took over {timeout:.0f} s; refused as corrupt")
        if "crash" in r:
            raise DataError(f"{path}: cannot decode AEDAT4: the decoder crashed ({r['crash']}) on corrupt data")
        if "error" in r:
            raise DataError(f"{path}: cannot decode AEDAT4: {r['error']}")
        events = np.load(out, allow_pickle=False)
    if events.dtype != EVENT_FIELDS:
        raise DataError(f"{path}: the AEDAT4 decoder gave dtype {events.dtype}, expected {EVENT_FIELDS}")
    return events, (int(r["width"]), int(r["height"]))


def _limit_memory(limit: int) -> None:       # in the child, before exec
    import resource
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _decode_here(path: str, out: str) -> dict:
    """The child's side: decode, save the events; {"width", "height"} or {"error"}."""
    try:
        import aedat

        decoder = aedat.Decoder(path)
        ids = sorted(i for i, s in decoder.id_to_stream().items() if s.get("type") == "events")
        if not ids:
            raise ValueError("no event stream")
        stream = decoder.id_to_stream()[ids[0]]
        parts = [p["events"] for p in decoder if p["stream_id"] == ids[0] and "events" in p]
        events = np.concatenate(parts) if parts else np.empty(0, EVENT_FIELDS)
        np.save(out, events.astype(EVENT_FIELDS, copy=False))
        return {"width": stream["width"], "height": stream["height"]}
    except BaseException as exc:       # pyo3's PanicException is a BaseException
        return {"error": f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"}


def _serve() -> None:
    """The child's loop: one JSON request a line on stdin, one JSON answer a line on stdout."""
    for line in sys.stdin:
        request = json.loads(line)
        sys.stdout.write(json.dumps(_decode_here(request["path"], request["out"])) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    _serve()
