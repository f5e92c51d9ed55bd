"""Host side of the serial link (docs/PROTOCOL.md): reliable, windowed requests to a board over pyserial.

The frame codec is firmware_py.link's (one definition for both ends). This module adds what only the
host does: sequence numbers, a send window bounded in bytes (the board advertises its receive
window in HELLO: 4 KB for a pty, 48 bytes for a micro:bit), go-back-N retransmission on timeout or
NAK, optional write pacing for slow UARTs, and typed helpers for each request.
"""
from __future__ import annotations

import os
import select
import struct
import time
from collections import OrderedDict
from dataclasses import dataclass
from itertools import islice

import numpy as np

from edge.errors import SnnEdgeError
from firmware_py import link as L

ANSWER_TYPES = {L.HELLO: L.INFO, L.END_SAMPLE: L.RESULT, L.GET_STATS: L.STATS, L.GET_WEIGHTS: L.WEIGHTS}
MAX_RTO = 2.0               # seconds
MAX_IN_FLIGHT = 64          # frames; well below half the 8-bit sequence space (go-back-N)


class LinkError(SnnEdgeError):
    """The link failed: the board stopped answering, or answered something that makes no sense."""


class LinkTimeout(LinkError):
    pass


class BoardAnswerError(LinkError):
    """The board answered with a payload that does not decode (too short, inconsistent, absurd values)."""


class BoardReset(LinkError):
    """The board has no session (it was reset): say hello again and resume from its stats."""


class BoardError(LinkError):
    """The board rejected a request (bad model, bad label, ...): .code and the board's message."""

    def __init__(self, code: int, message: str, request: str):
        super().__init__(f"board refused {request}: {message} (code {code})")
        self.code = code
        self.board_message = message


@dataclass
class BoardInfo:
    version: int
    boot_id: int
    max_payload: int
    window: int
    description: str


@dataclass
class Result:
    cls: int
    confidence: int
    counts: list


# What a board may advertise in INFO. A frame must carry at least one event (EVENTS: 7-byte head + one
# 6-byte event; LOAD_MODEL's 8-byte chunk head + data is smaller), or send_events could not make progress.
MIN_MAX_PAYLOAD = L.EVENT_HEAD_LEN + L.EVENT_LEN
MAX_WEIGHTS_BYTES = 16 << 20    # GET_WEIGHTS' declared total: above any board's RAM (8 MB PSRAM at most)


def decode_info(p: bytes) -> BoardInfo:
    """INFO (firmware_py.link.pack_info): version u8, boot id u32, max payload u16, window u16, description."""
    if len(p) < L.INFO_HEAD_LEN:
        raise BoardAnswerError(f"INFO answer of {len(p)} bytes, expected at least {L.INFO_HEAD_LEN}")
    version, boot_id, max_payload, window = struct.unpack_from(L.INFO_HEAD, p, 0)
    if version != L.PROTOCOL_VERSION:
        raise LinkError(f"board speaks protocol version {version}, this host speaks {L.PROTOCOL_VERSION}")
    if max_payload < MIN_MAX_PAYLOAD:
        raise BoardAnswerError(f"INFO: the board takes payloads of at most {max_payload} bytes, the protocol "
                               f"needs at least {MIN_MAX_PAYLOAD} (one event per frame)")
    return BoardInfo(version, boot_id, max_payload, window, bytes(p[L.INFO_HEAD_LEN:]).decode("utf-8", "replace"))


def decode_result(p: bytes) -> Result:
    """RESULT (firmware_py.link.pack_result): class i16 (-1: none), confidence u8, n u8, n counts u16."""
    if len(p) < 4:
        raise BoardAnswerError(f"RESULT answer of {len(p)} bytes, expected at least 4")
    n = p[3]
    if len(p) != 4 + 2 * n:
        raise BoardAnswerError(f"RESULT answer of {len(p)} bytes declares {n} counts, expected {4 + 2 * n} bytes")
    cls, confidence, counts = L.unpack_result(bytes(p))
    if cls < -1 or (n and cls >= n):
        raise BoardAnswerError(f"RESULT: class {cls}, expected -1 (none) or one of the {n} outputs 0..{n - 1}")
    return Result(cls, confidence, counts)


def decode_stats(p: bytes) -> dict[str, int]:
    """STATS (firmware_py.link.pack_stats): repeated (name length u8, ASCII name, value i32)."""
    k = 0
    p = bytes(p)
    while k < len(p):
        n = p[k]
        if n == 0 or k + 1 + n + 4 > len(p):
            raise BoardAnswerError(f"STATS answer: item at byte {k} declares a {n}-byte name, "
                                   f"{len(p) - k - 1} bytes left (a name and a 4-byte value needed)")
        name = p[k + 1:k + 1 + n]
        if not (name.isascii() and name.decode().isprintable()):
            raise BoardAnswerError(f"STATS answer: item at byte {k} has name {name!r}, expected printable ASCII")
        k += 1 + n + 4
    return dict(L.unpack_stats(p))


def decode_error(p: bytes) -> tuple[int, str]:
    """ERROR (firmware_py.link.pack_error): code u8, message (UTF-8; shown with replacements)."""
    if not len(p):
        raise BoardAnswerError("ERROR answer with an empty payload, expected an error code and a message")
    return p[0], bytes(p[1:]).decode("utf-8", "replace")


def decode_weights_chunk(p: bytes, offset: int, total: int | None, asked: int | None = None) -> tuple[int, bytes]:
    """A GET_WEIGHTS answer: total u32, then the bytes from `offset`; checked against what came before.
    With `asked` (the length requested) a chunk is all of it or the end of the weights, so a board cannot
    drip a few bytes an answer: get_weights ends within total / asked + 1 requests."""
    if len(p) < 4:
        raise BoardAnswerError(f"WEIGHTS answer of {len(p)} bytes, expected at least 4 (the total)")
    (declared,) = struct.unpack_from("<I", p, 0)
    if declared > MAX_WEIGHTS_BYTES:
        raise BoardAnswerError(f"WEIGHTS: the board declares {declared} bytes of weights, more than "
                               f"{MAX_WEIGHTS_BYTES} (no board holds that much)")
    if total is not None and declared != total:
        raise BoardAnswerError(f"WEIGHTS: the total changed from {total} to {declared} bytes at offset {offset}")
    chunk = bytes(p[4:])
    if offset + len(chunk) > declared:
        raise BoardAnswerError(f"WEIGHTS: {len(chunk)} bytes at offset {offset} run past the declared "
                               f"total of {declared}")
    if not chunk and offset < declared:
        raise LinkError(f"get_weights: board sent no bytes at offset {offset} of {declared}")
    if asked is not None and len(chunk) != min(asked, declared - offset):
        raise BoardAnswerError(f"WEIGHTS: {len(chunk)} bytes at offset {offset}, expected "
                               f"{min(asked, declared - offset)} (asked {asked}, total {declared})")
    return declared, chunk


@dataclass
class LinkCounters:
    frames_sent: int = 0
    bytes_sent: int = 0
    retransmits: int = 0
    timeouts: int = 0
    naks: int = 0
    responses: int = 0
    crc_errors: int = 0
    framing_errors: int = 0


def open_serial(port: str, baudrate: int = 115200):
    """pyserial port by path or URL (loop://, socket://, rfc2217://), non-blocking reads."""
    import serial
    try:
        return serial.serial_for_url(port, baudrate=baudrate, timeout=0, write_timeout=10)
    except (serial.SerialException, OSError) as exc:
        raise LinkError(f"--port {port}: cannot open the serial port: {exc}") from exc


class BoardLink:
    """One session with a board. `send` pipelines, `request` waits for the answer."""

    def __init__(self, ser, *, max_payload: int | None = None, window: int | None = None,
                 timeout: float = 0.25, max_retries: int = 40, write_chunk: int | None = None,
                 write_pause: float = 0.0):
        self.ser = ser
        self.want_max_payload = max_payload
        self.want_window = window
        self.timeout = timeout              # the smallest retransmission timeout
        self.rto = timeout
        self.progress_at = 0.0              # when an answer last acknowledged something new
        self.srtt: float | None = None
        self.rttvar = 0.0
        # the line's byte rate, measured from acknowledged bytes; until then the port's baud rate
        # (10 bits a byte): the timer allows a frame its own line time, so an 8 KB frame on a
        # 115200-baud UART (0.7 s) is not resent while it is still on the wire
        baud = getattr(ser, "baudrate", None)
        self.line_rate = baud / 10 if isinstance(baud, (int, float)) and baud > 0 else 11_520.0
        self.max_retries = max_retries
        self.write_chunk = write_chunk
        self.write_pause = write_pause
        self.max_payload = max_payload or 64
        self.window = window or 256
        self.next_seq = 0
        self.unacked: OrderedDict[int, list] = OrderedDict()   # seq -> [frame bytes, type, sent at, tries]
        self.in_flight = 0
        self.answers: dict[int, tuple[int, bytes]] = {}
        self.sent_types = [0] * 256                              # seq -> request type, for messages
        self.waiting_for: int | None = None
        self.expect_answer = L.ACK
        self.counters = LinkCounters()
        self.deframer = L.Deframer(65535, self._on_frame)
        self.info: BoardInfo | None = None
        self.rx_tail = b""
        try:
            self._fd = ser.fileno()        # posix serial ports and ptys
        except (AttributeError, OSError, ValueError):
            self._fd = None                # loop://, socket:// URLs: poll
        self._error: LinkError | None = None

    # ------------------------------------------------------------ wire
    def _write(self, data: bytes) -> None:
        if not self.write_chunk:
            self.ser.write(data)
            return
        for i in range(0, len(data), self.write_chunk):
            self.ser.write(data[i:i + self.write_chunk])
            self.ser.flush()
            time.sleep(self.write_pause)

    def _pump(self, wait: float) -> None:
        """Read what has arrived (waiting up to `wait` s for the first byte) and process it."""
        deadline = time.monotonic() + wait
        while True:
            n = self.ser.in_waiting
            if n:
                data = self.ser.read(n)
                self.rx_tail = (self.rx_tail + data)[-512:]   # what came in, frames or not (connect)
                self.deframer.feed(data)
                break
            left = deadline - time.monotonic()
            if left <= 0:
                break
            if self._fd is not None:      # wake up as soon as the board answers
                select.select([self._fd], [], [], left)
            else:
                time.sleep(min(left, 0.0005))
        self.counters.crc_errors = self.deframer.crc_errors
        self.counters.framing_errors = self.deframer.framing_errors
        if self._error is not None:
            err, self._error = self._error, None
            raise err
        self._retransmit_if_late()

    def _on_frame(self, rtype: int, seq: int, payload) -> None:
        self.counters.responses += 1
        if rtype == L.NAK:
            self.counters.naks += 1
            self._ack_through((seq - 1) & 0xFF)
            self._resend_all()
            return
        if rtype == L.ERROR and len(payload) and payload[0] == L.E_NO_SESSION:
            if seq in self.unacked:     # else an answer to a frame of an earlier session: stale
                self._error = BoardReset("board has no session (it was reset); say hello again")
            return
        if rtype == L.ACK and seq == self.waiting_for and self.expect_answer != L.ACK:
            # acknowledges the request but is not its answer: keep it un-acked so it is resent
            # and the board repeats the real answer
            self._ack_through((seq - 1) & 0xFF)
            return
        if self._ack_through(seq) or seq == self.waiting_for:
            if seq == self.waiting_for and seq not in self.answers:
                self.answers[seq] = (rtype, bytes(payload))
            elif rtype == L.ERROR:
                name = L.REQUEST_NAMES.get(self.sent_types[seq], "?")
                try:
                    code, msg = decode_error(payload)
                except BoardAnswerError as exc:
                    self._error = BoardAnswerError(f"{name} (frame {seq}): {exc}")
                else:
                    self._error = BoardError(code, msg, f"{name} (frame {seq})")

    def _ack_through(self, seq: int) -> bool:
        """Cumulative ack: drop every un-acked frame up to `seq`; True if it acked something new."""
        if seq not in self.unacked:
            return False
        now = time.monotonic()
        acked = 0
        clean = True
        busy_since = max(self.progress_at, next(iter(self.unacked.values()))[2])   # oldest frame sent
        while self.unacked:
            s, entry = self.unacked.popitem(last=False)
            self.in_flight -= len(entry[0])
            acked += len(entry[0])
            clean = clean and entry[3] == 0
            if s == seq:
                if entry[3] == 0:           # Karn: only frames sent once give a round-trip sample
                    self._rtt_sample(now - entry[2])
                break
        if clean and acked >= 1024 and now > busy_since:
            # bytes acknowledged over the time the line was busy with them: a lower bound of its rate
            self.line_rate = max(self.line_rate * 0.75 + 0.25 * acked / (now - busy_since), 1.0)
        self.progress_at = now
        return True

    def _rtt_sample(self, rtt: float) -> None:
        """Retransmission timeout from the measured round trip (Jacobson/Karels, RFC 6298), which
        includes the line time of the frames queued before it: 4 KB in flight is 0.4 s at 115200
        baud, so a fixed timeout would resend frames that are merely waiting their turn."""
        if self.srtt is None:
            self.srtt, self.rttvar = rtt, rtt / 2
        else:
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - rtt)
            self.srtt = 0.875 * self.srtt + 0.125 * rtt
        self.rto = min(max(self.timeout, self.srtt + 4 * self.rttvar), MAX_RTO)

    def _resend_all(self) -> None:
        now = time.monotonic()
        for seq, entry in self.unacked.items():
            entry[3] += 1
            if entry[3] > self.max_retries:
                raise LinkTimeout(f"no answer from the board after {self.max_retries} retransmissions "
                                  f"of frame {seq} ({L.REQUEST_NAMES.get(entry[1], entry[1])})")
            entry[2] = now
            self.counters.retransmits += 1
            self.counters.bytes_sent += len(entry[0])
            self._write(entry[0])

    def _retransmit_if_late(self) -> None:
        if self.unacked:
            oldest = next(iter(self.unacked.values()))
            # the timer restarts whenever an answer acknowledges something new (RFC 6298, 5.3):
            # frames queued behind a slow line are not resent while the line makes progress; no
            # back-off, since on a serial line a loss is noise, not congestion
            # its own time on the wire, and the next frame's: the board may hold an ACK back until the
            # next answer (board_main.serve), which then acknowledges both
            on_wire = sum(len(entry[0]) for entry in islice(self.unacked.values(), 2))
            allowance = self.rto + on_wire / self.line_rate
            if time.monotonic() - max(oldest[2], self.progress_at) > allowance:
                self.counters.timeouts += 1
                self._resend_all()

    # ------------------------------------------------------------ requests
    def send(self, mtype: int, payload: bytes = b"") -> int:
        """Queue one request (waits for window space only); returns its sequence number."""
        if len(payload) > self.max_payload:
            raise LinkError(f"{L.REQUEST_NAMES.get(mtype, mtype)} payload of {len(payload)} bytes, "
                            f"the board takes at most {self.max_payload}")
        seq = self.next_seq
        frame = L.encode_frame(mtype, seq, payload)
        while self.unacked and (self.in_flight + len(frame) > self.window
                                or len(self.unacked) >= MAX_IN_FLIGHT):
            self._pump(self.timeout / 4)
        self.next_seq = (seq + 1) & 0xFF
        self.unacked[seq] = [frame, mtype, time.monotonic(), 0]
        self.sent_types[seq] = mtype
        self.in_flight += len(frame)
        self.counters.frames_sent += 1
        self.counters.bytes_sent += len(frame)
        self._write(frame)
        self._pump(0)
        return seq

    def request(self, mtype: int, payload: bytes = b"") -> tuple[int, bytes]:
        """Send one request and wait for its answer; a board error raises BoardError."""
        self.waiting_for = self.next_seq     # set first: the answer may arrive while sending
        self.expect_answer = ANSWER_TYPES.get(mtype, L.ACK)
        try:
            seq = self.send(mtype, payload)
            while seq not in self.answers:
                self._pump(self.timeout / 4)
        finally:
            self.waiting_for = None
        rtype, answer = self.answers.pop(seq)
        name = L.REQUEST_NAMES.get(mtype, str(mtype))
        if rtype == L.ERROR:
            code, message = decode_error(answer)
            raise BoardError(code, message, name)
        expected = ANSWER_TYPES.get(mtype, L.ACK)
        if rtype != expected:
            raise BoardAnswerError(f"{name}: the board answered with type {rtype:#x}, expected {expected:#x}")
        return rtype, answer

    def flush(self) -> None:
        """Wait until the board acknowledged everything sent."""
        while self.unacked:
            self._pump(self.timeout / 4)

    # ------------------------------------------------------------ typed helpers
    def hello(self) -> BoardInfo:
        """Start (or restart) the session: resets both sides' sequence numbers."""
        self.unacked.clear()
        self.in_flight = 0
        self.answers.clear()
        self._error = None
        self.next_seq = 0
        self.max_payload = max(self.max_payload, 16)
        _, p = self.request(L.HELLO, os.urandom(4))
        self.info = decode_info(p)
        self.max_payload = min(self.info.max_payload, self.want_max_payload or self.info.max_payload)
        self.window = min(self.info.window, self.want_window or self.info.window)
        return self.info

    def events_per_frame(self) -> int:
        """Events a frame carries: at least one, or send_events could never finish (a board's INFO is
        checked by decode_info; this guards a max_payload given to the constructor too)."""
        n = min((self.max_payload - L.EVENT_HEAD_LEN) // L.EVENT_LEN, L.EVENT_MAX_COUNT)
        if n < 1:
            raise LinkError(f"a payload of at most {self.max_payload} bytes cannot carry one event "
                            f"({MIN_MAX_PAYLOAD} bytes needed)")
        return n

    def send_events(self, x, y, t, p) -> int:
        """Send one sample's events (arrays sorted by t) in as few frames as fit; returns frames."""
        x = np.asarray(x, dtype=np.int64)
        y = np.asarray(y, dtype=np.int64)
        t = np.asarray(t, dtype=np.int64)
        p = np.asarray(p, dtype=np.int64)
        if len(t) > 1 and (t[1:] < t[:-1]).any():
            raise LinkError("events: timestamps must be sorted")
        if len(x) and (((x | y) & ~L.EVENT_MAX_XY).any() or (p & ~1).any() or t[0] < 0
                       or t[-1] > L.EVENT_MAX_T_BASE):
            raise LinkError(f"events: x and y must be in [0, {L.EVENT_MAX_XY}], t in [0, {L.EVENT_MAX_T_BASE}] us "
                            "and p in {0, 1}")
        per_frame = self.events_per_frame()
        bounds = []                     # (first, end) of each frame: full, and within EVENT_MAX_DT
        i = 0
        while i < len(x):
            j = min(i + per_frame, len(x))
            j = i + int(np.searchsorted(t[i:j], t[i] + L.EVENT_MAX_DT, side="right"))
            bounds.append((i, j))
            i = j
        firsts = np.array([b[0] for b in bounds], dtype=np.int64)
        t_base = np.repeat(t[firsts], [j - i for i, j in bounds]) if bounds else t
        digits = event_digits(x, y, t - t_base, p)      # the whole sample in one pass
        for i, j in bounds:
            self.send(L.EVENTS, events_head(int(t[i]), j - i) + digits[i:j].tobytes())
        return len(bounds)

    def end_of_sample(self, label: int = -1) -> Result:
        _, p = self.request(L.END_SAMPLE, struct.pack("<h", label))
        return decode_result(p)

    def get_stats(self) -> dict[str, int]:
        _, p = self.request(L.GET_STATS)
        return decode_stats(p)

    def get_weights(self) -> bytes:
        out = bytearray()
        total = None
        while total is None or len(out) < total:      # every answer adds at least one byte, or raises
            asked = self.max_payload - 4
            _, p = self.request(L.GET_WEIGHTS, struct.pack("<II", len(out), asked))
            total, chunk = decode_weights_chunk(p, len(out), total, asked)
            out.extend(chunk)
        return bytes(out)

    def _send_chunks(self, mtype: int, blob: bytes) -> None:
        step = self.max_payload - L.CHUNK_HEAD_LEN
        if step < 1:
            raise LinkError(f"a payload of at most {self.max_payload} bytes cannot carry a chunk")
        for off in range(0, max(len(blob), 1), step):
            self.send(mtype, struct.pack(L.CHUNK_HEAD, off, len(blob)) + blob[off:off + step])
        self.flush()

    def put_weights(self, blob: bytes) -> None:
        self._send_chunks(L.PUT_WEIGHTS, blob)

    def load_model(self, blob: bytes) -> None:
        self._send_chunks(L.LOAD_MODEL, blob)

    def checkpoint(self) -> None:
        self.request(L.CHECKPOINT)

    def reset(self) -> None:
        self.request(L.RESET)

    def self_train(self, gate: int | None, guard: dict | None = None) -> None:
        """Self-training on the board (firmware_py/device.py): gate None turns it off; `guard`: the guard's
        parameters (firmware_py.guard.DEFAULTS with changes), None for no guard."""
        from firmware_py.guard import KEYS
        values = [int(guard[k]) for k in KEYS] if guard is not None else [0] * len(KEYS)
        self.request(L.SELF_TRAIN, struct.pack("<hB5i", -1 if gate is None else gate, guard is not None, *values))

    def calibrate(self, samples: int, reference: tuple[int, int, int, int]) -> None:
        """Align the board's input to the model's training data from its next `samples` samples
        (firmware_py/align.py; `reference`: the model's input_reference)."""
        self.request(L.CALIBRATE, struct.pack("<Hiiii", samples, *reference))


def start_code(handler: str | None = None) -> str:
    arg = repr(handler) if handler else ""
    return ("try:\n from firmware_py import board_main\nexcept ImportError:\n import board_main\n"
            f"board_main.main({arg})\n")


REPL_SIGNS = (b">>> ", b"raw REPL", b"Traceback", b"MicroPython", b"CTRL-B")


class BoardProgramDied(LinkError):
    """The board sits at its REPL because its main program raised: .traceback is what it printed."""

    def __init__(self, traceback: str, how: str):
        last = traceback.strip().splitlines()[-1] if traceback.strip() else "?"
        super().__init__(f"the board's main program stopped ({how}): {last}\n{traceback.rstrip()}")
        self.traceback = traceback
        self.last_line = last


def traceback_in(text: bytes) -> str | None:
    """The last MicroPython traceback in what a board printed (up to the prompt), or None."""
    k = text.rfind(b"Traceback (most recent call last)")
    if k < 0:
        return None
    tail = text[k:].decode("utf-8", "replace").replace("\r\n", "\n")
    for stop in ("\nMicroPython ", "\n>>> ", "\x04"):
        j = tail.find(stop)
        if j > 0:
            tail = tail[:j]
    return tail.strip() + "\n"


def read_boot(ser, pacing, seconds: float) -> bytes:
    """Soft-reset the board from its friendly REPL (Ctrl-B, Ctrl-D, as `mpremote soft-reset`) and return
    what it printed while it booted (boot.py, main.py): a banner and prompt if main.py is absent or
    ended, a traceback if it died, nothing if its link loop is running (that loop prints nothing)."""
    from host_tools.transport import RawRepl
    repl = RawRepl(ser, pacing)
    repl._drain(0.05)
    repl._write(b"\r\x02")
    repl._drain(0.1)
    repl._write(b"\x04")
    out = bytearray()
    deadline = time.monotonic() + seconds
    quiet_since = time.monotonic()
    while time.monotonic() < deadline:
        n = ser.in_waiting
        if n:
            out += ser.read(n)
            quiet_since = time.monotonic()
            if out.rstrip().endswith(b">>>"):
                break                                # back at the prompt: main.py ended or is absent
        elif time.monotonic() - quiet_since > 1.5:
            break                                    # silent: the link loop runs (or is still loading)
        else:
            time.sleep(0.01)
    return bytes(out)


def connect(ser, profile: str = "unix", handler: str | None = None, boot_seconds: float = 8.0,
            **link_options) -> BoardLink:
    """A session with the board's firmware (the board must have been flashed).

    Says hello first: a board that runs the link loop (main.py at boot) answers, through line noise
    too; one that is still booting is silent, so keep trying for up to `boot_seconds`. A board at the
    REPL shows itself (a prompt, a banner, a traceback in reply to the hello bytes): then it is soft-reset,
    which runs its main.py again as at power-on; if that dies, the traceback it printed is the error
    (BoardProgramDied: a MemoryError while loading, say), not a silent link. A board without main.py
    gets the link loop started through the raw REPL, and if that dies, its traceback too."""
    from host_tools.boards import link_kind
    from host_tools.transport import PROFILES, RawRepl, RemoteError, TransportError
    kind = link_kind(profile)
    pacing = PROFILES[kind.pacing]
    if pacing.pause:
        link_options.setdefault("write_chunk", pacing.chunk)
        link_options.setdefault("write_pause", pacing.pause)
    reset_input = getattr(ser, "reset_input_buffer", None)
    if reset_input is not None:
        reset_input()       # what the board printed before (a flash's REPL banner) is not its answer
    link = BoardLink(ser, **link_options)
    retries, link.max_retries = link.max_retries, 2

    def hello_until(deadline: float, stop_at_repl: bool) -> bool:
        """Say hello until the board answers (True), or the deadline passes or, with stop_at_repl, the
        board shows a REPL (False)."""
        while True:
            try:
                link.hello()
                return True
            except (LinkTimeout, BoardReset):
                if (stop_at_repl and any(sign in link.rx_tail for sign in REPL_SIGNS)) \
                        or time.monotonic() > deadline:
                    return False

    try:
        if hello_until(time.monotonic() + boot_seconds, stop_at_repl=True):
            return link
        repl = RawRepl(ser, pacing)
        repl.enter()
        if kind.micro_profile:
            # the micro program is main.py itself (host_tools/micro_flash.py): a soft reset in the raw
            # REPL reboots the board into it, and it compiles for a few seconds before it answers
            repl.exit()
            ser.write(b"\x04")
            if not hello_until(time.monotonic() + boot_seconds, stop_at_repl=False):
                link.hello()        # one last try: raises the link's own error
            link.counters = LinkCounters()
            return link
        try:
            has_main = repl.exec("import os\ntry:\n os.stat('main.py')\n print(1)\nexcept OSError:\n print(0)"
                                 ).strip() == b"1"
        except RemoteError as exc:
            # a main program that died keeps what it allocated (its model): the REPL itself may then have no
            # heap left even for this; what the program printed before the prompt says why
            raise BoardProgramDied(traceback_in(link.rx_tail) or str(exc).split("\n", 1)[1],
                                   "main.py; its heap is still full, the REPL ran out too") from None
        if has_main:
            repl.exit()
            booted = read_boot(ser, pacing, boot_seconds)
            tb = traceback_in(booted)
            if tb:
                raise BoardProgramDied(tb, "main.py, after a soft reset")
            link.rx_tail = b""
            if hello_until(time.monotonic() + boot_seconds, stop_at_repl=True):
                link.counters = LinkCounters()
                return link
            repl.enter()            # main.py ended without starting the loop: start it below
        repl.exec_no_follow(start_code(handler))
        try:
            link.hello()
        except (LinkTimeout, BoardReset) as exc:
            try:
                out, err = repl.follow(timeout=2.0)
            except TransportError:
                raise exc from None
            tb = traceback_in(err) or err.decode("utf-8", "replace")
            raise BoardProgramDied(tb, "the link loop, started from the raw REPL") from exc
        link.counters = LinkCounters()    # the probe's timeouts were not line errors
        return link
    finally:
        link.max_retries = retries


def event_digits(x, y, dt, p) -> np.ndarray:
    """The 6 bytes of each event (firmware_py.link.pack_events's layout) as an (n, 6) uint8 array: lo
    and hi (21 bits each) become 3 base-128 digits each, column by column in int32 (the host's hot
    loop when it streams: a few ns per event)."""
    dt = np.asarray(dt).astype(np.int32)
    lo = np.asarray(x, dtype=np.int32) | (dt & 0x3FF) << 11
    hi = np.asarray(y, dtype=np.int32) | np.asarray(p, dtype=np.int32) << 11 | (dt >> 10) << 12
    out = np.empty((len(dt), 6), dtype=np.uint8)
    for k, word in ((0, lo), (3, hi)):
        out[:, k] = word & 127
        out[:, k + 1] = (word >> 7) & 127
        out[:, k + 2] = word >> 14
    out += L.DIGIT_OFFSET
    return out


def events_head(t_base: int, count: int) -> bytes:
    head = bytearray()
    L.put_digits(t_base, 5, head)
    L.put_digits(count, 2, head)
    return bytes(head)


def pack_events_array(t_base: int, x, y, t, p) -> bytes:
    """firmware_py.link.pack_events for numpy arrays (validated by the caller): the same bytes."""
    return events_head(t_base, len(x)) + event_digits(x, y, np.asarray(t) - t_base, p).tobytes()
