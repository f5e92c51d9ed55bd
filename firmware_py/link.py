"""The serial link protocol: frame codec and the device's session (docs/PROTOCOL.md is the contract).

Shared by the board (board_main.py) and the host (host_tools/link.py), so there is one definition of a
frame. Runs unchanged on MicroPython >= 1.20, the micro:bit's MicroPython 1.9.2 and CPython: no
f-strings, no bytes.hex, only small ints on the hot paths (no heap-allocated ints on a 16 KB board).

Frame on the wire: END, stuffed(type, seq, len_lo, len_hi, hcrc, payload..., crc32 LE), END.
Byte stuffing is SLIP's plus one rule: 0xC0 -> DB DC, 0xDB -> DB DD, 0x03 -> DB DE. No frame ever
contains a raw 0x03 (Ctrl-C), so the board's main loop takes a raw 0x03 that follows a CR where a frame
would start (`\r\x03`, what mpremote sends) or another raw 0x03 (`\r\x03\x03`, pyboard.py's) as the
host's break, back to the REPL, while a single 0x03 made by line noise only spoils one frame, which is
retransmitted (the loop runs with kbd_intr disabled, so noise never raises KeyboardInterrupt in the
middle of applying a request; a false break needs a CR and a 0x03 made by noise, in that order, just
after a frame's END).
"""
import struct

PROTOCOL_VERSION = 2     # 2: escape-free EVENTS payloads

END = 0xC0
ESC = 0xDB
ESC_END = 0xDC
ESC_ESC = 0xDD
ESC_INTR = 0xDE
INTR = 0x03
CR = 0x0D                # before a Ctrl-C where a frame would start: a REPL tool's break (see above)
_END_B = b"\xc0"
_ESC_B = b"\xdb"
_INTR_B = b"\x03"

HEADER_LEN = 5          # type, seq, payload length (u16 LE), CRC-8 of those four bytes
WANT_CAP = 512          # the most bytes a board asks for in one blocking read
CRC_LEN = 4             # CRC-32 (zlib polynomial), little endian, over header + payload
CRC_RESIDUE = 0x2144DF1C    # zlib.crc32(data + its CRC-32, LE) for any data: a small int on a 32-bit port
OVERHEAD = HEADER_LEN + CRC_LEN

# host -> device requests
HELLO = 0x01
LOAD_MODEL = 0x02
EVENTS = 0x03
END_SAMPLE = 0x04
GET_STATS = 0x05
GET_WEIGHTS = 0x06
PUT_WEIGHTS = 0x07
CHECKPOINT = 0x08
RESET = 0x09
CALIBRATE = 0x0A          # payload "<Hiiii": samples, reference centroid x, y (cells, Q8), duration (us), pairs
SELF_TRAIN = 0x0B         # payload "<hB5i": gate (-1: off), guard on, its parameters in guard.KEYS order
# device -> host responses (seq = the request they answer; every response acknowledges it and all
# earlier requests)
ACK = 0x80
INFO = 0x81
RESULT = 0x82
STATS = 0x83
WEIGHTS = 0x84
ERROR = 0x85
NAK = 0x86              # seq = the request the device expects next (a gap was seen)

REQUEST_NAMES = {HELLO: "hello", LOAD_MODEL: "load_model", EVENTS: "events", END_SAMPLE: "end_sample",
                 GET_STATS: "get_stats", GET_WEIGHTS: "get_weights", PUT_WEIGHTS: "put_weights",
                 CHECKPOINT: "checkpoint", RESET: "reset", CALIBRATE: "calibrate", SELF_TRAIN: "self_train"}

# link-level error codes (the runtime's own codes, firmware_py/errors.py, are below 100)
E_NO_SESSION = 200      # a request before HELLO (the board was reset): the host must say hello again
E_BAD_PAYLOAD = 201     # a request whose payload does not have the documented layout
E_UNKNOWN_TYPE = 202
E_HANDLER = 203         # the handler raised something that carries no code of its own
E_OUT_OF_HEAP = 4       # = errors.E_NO_MEMORY (this module imports nothing of the runtime's)

# EVENTS payload (protocol 2): every byte is a 7-bit digit plus DIGIT_OFFSET, i.e. in 4..131, so it is
# never END, ESC or INTR and a whole EVENTS frame crosses the link without one escape (the board's
# deframer then takes it at memcpy speed, see Deframer.feed). Numbers are little-endian base 128.
DIGIT_OFFSET = 4
EVENT_HEAD_LEN = 7      # t_base (us): 5 digits (35 bits); count: 2 digits (14 bits)
EVENT_LEN = 6           # lo = x | dt_low10 << 11 (3 digits), hi = y | p << 11 | dt_high9 << 12 (3 digits)
EVENT_MAX_XY = 2047     # 11 bits: every DVS sensor made so far (1280 x 720 is the largest common one)
EVENT_MAX_DT = (1 << 19) - 1    # t - t_base, us (0.52 s)
EVENT_MAX_COUNT = (1 << 14) - 1
EVENT_MAX_T_BASE = (1 << 35) - 1
_D3 = DIGIT_OFFSET * (1 + 128 + 16384)      # what the offsets add to a 3-digit number
CHUNK_HEAD = "<II"      # offset, total: LOAD_MODEL / PUT_WEIGHTS payload prefix
CHUNK_HEAD_LEN = 8


# ---------------------------------------------------------------- CRC-32
try:
    from firmware_py.crc import crc32_halves, crc32_py, _c_crc32, _tables as _crc_tables  # noqa: F401
except ImportError:     # flat filesystem (micro:bit): the modules sit next to each other
    from crc import crc32_halves, crc32_py, _c_crc32, _tables as _crc_tables  # type: ignore  # noqa: F401


def crc_matches(buf, n):
    """True when the last 4 bytes of buf[:n] are the CRC-32 of buf[:n - 4]."""
    m = n - CRC_LEN
    if _c_crc32 is not None:
        c = _c_crc32(memoryview(buf)[:m]) & 0xFFFFFFFF
        return (buf[m] == c & 0xFF and buf[m + 1] == (c >> 8) & 0xFF and
                buf[m + 2] == (c >> 16) & 0xFF and buf[m + 3] == (c >> 24) & 0xFF)
    c_lo, c_hi = crc32_halves(buf, 0, m)
    c_lo ^= 0xFFFF
    c_hi ^= 0xFFFF
    return (buf[m] == c_lo & 0xFF and buf[m + 1] == c_lo >> 8 and
            buf[m + 2] == c_hi & 0xFF and buf[m + 3] == c_hi >> 8)


def _crc_bytes(data):
    if _c_crc32 is not None:
        c = _c_crc32(data) & 0xFFFFFFFF
        return bytes((c & 0xFF, (c >> 8) & 0xFF, (c >> 16) & 0xFF, (c >> 24) & 0xFF))
    c_lo, c_hi = crc32_halves(data, 0, len(data))
    c_lo ^= 0xFFFF
    c_hi ^= 0xFFFF
    return bytes((c_lo & 0xFF, c_lo >> 8, c_hi & 0xFF, c_hi >> 8))


# ---------------------------------------------------------------- encoding
def stuff(data):
    """Escape the three reserved bytes (ESC first, so its own escapes are not escaped again)."""
    return (bytes(data).replace(_ESC_B, b"\xdb\xdd").replace(_END_B, b"\xdb\xdc")
            .replace(_INTR_B, b"\xdb\xde"))


def _crc8_table():
    t = bytearray(256)
    for i in range(256):
        c = i
        for _ in range(8):
            c = ((c << 1) ^ 0x07) & 0xFF if c & 0x80 else (c << 1) & 0xFF
        t[i] = c
    return bytes(t)


_CRC8 = _crc8_table()


def crc8(data, start, end):
    """CRC-8 (polynomial 0x07, init 0) of the header: a board trusts the length field, and sizes its
    blocking reads by it, only when this matches, so a corrupted length cannot stall it."""
    c = 0
    table = _CRC8
    for i in range(start, end):
        c = table[c ^ data[i]]
    return c


def encode_frame(mtype, seq, payload=b""):
    """One frame as bytes, delimited by END on both sides (the leading END flushes line noise)."""
    n = len(payload)
    head = bytes((mtype, seq & 0xFF, n & 0xFF, (n >> 8) & 0xFF))
    body = head + bytes((crc8(head, 0, 4),)) + bytes(payload)
    return _END_B + stuff(body + _crc_bytes(body)) + _END_B


class FrameWriter:
    """encode_frame into one preallocated buffer, for a board that answers every request: the bytes of a
    frame are built in place (the CRC-32 by the table path on the halves, no int above 2**30), so an
    answer costs one memoryview instead of the seven objects encode_frame makes (a sample's 30 answers
    were about 2 KB of heap on a 32-bit board). Payloads longer than `small` go through encode_frame."""

    def __init__(self, small=64):
        self.small = small
        self.body = bytearray(HEADER_LEN + small + CRC_LEN)
        self.out = bytearray(2 * len(self.body) + 2)
        self.view = memoryview(self.out)
        # view[:k] per length k, made once (a slice is an object); a dict holds only the few lengths that
        # occur (a list for every possible length was 1.2 KB on a 64-bit port, one block the heap may lack)
        self.views = {}

    def frame(self, mtype, seq, payload=b""):
        """The frame's bytes: a view into the buffer, valid until the next call (or encode_frame's bytes)."""
        n = len(payload)
        if n > self.small:
            return encode_frame(mtype, seq, payload)
        b = self.body
        b[0] = mtype
        b[1] = seq & 0xFF
        b[2] = n & 0xFF
        b[3] = (n >> 8) & 0xFF
        b[4] = crc8(b, 0, 4)
        for i in range(n):
            b[5 + i] = payload[i]
        m = 5 + n
        # crc32_halves inline: its (lo, hi) tuple would be an object per answer
        tlo, thi = _crc_tables()
        c_lo = c_hi = 0xFFFF
        for i in range(m):
            k = (c_lo ^ b[i]) & 0xFF
            c_lo = ((c_lo >> 8) | ((c_hi & 0xFF) << 8)) ^ tlo[k]
            c_hi = (c_hi >> 8) ^ thi[k]
        c_lo ^= 0xFFFF
        c_hi ^= 0xFFFF
        b[m] = c_lo & 0xFF
        b[m + 1] = c_lo >> 8
        b[m + 2] = c_hi & 0xFF
        b[m + 3] = c_hi >> 8
        m += 4
        out = self.out
        out[0] = END
        k = 1
        for i in range(m):
            v = b[i]
            if v == ESC or v == END or v == INTR:
                out[k] = ESC
                out[k + 1] = 0xDD if v == ESC else (0xDC if v == END else 0xDE)
                k += 2
            else:
                out[k] = v
                k += 1
        out[k] = END
        v = self.views.get(k + 1)
        if v is None:
            v = self.views[k + 1] = self.view[:k + 1]
        return v


# ---------------------------------------------------------------- decoding
class Deframer:
    """Incremental decoder: feed it any chunks of the byte stream, it calls on_frame(type, seq, payload)
    for every frame whose length and CRC check, and counts (never acts on) everything else.

    `payload` is a memoryview into a reused buffer, valid only during the call. Garbage between
    frames, a frame cut short by END, an over-long frame or a bad escape are dropped and decoding
    resumes at the next END.
    """

    def __init__(self, max_payload, on_frame, break_on_intr=False, copy=None):
        self.break_on_intr = break_on_intr
        self.intr_run = 0
        self.max_frame = max_payload + OVERHEAD
        self.buf = bytearray(self.max_frame + 1)     # + 1: a body read ends with its END
        self.view = memoryview(self.buf)
        self.on_frame = on_frame
        # copy(dst, dst_start, src, src_start, k): fast.copy_viper on a board, which copies without the
        # two memoryview slices a slice assignment makes (heap objects on MicroPython); None: slices
        self.copy = copy
        # the views of the last frame length seen (its payload, and all of it for the CRC check): a
        # stream of EVENTS frames has one length, so they are made once, not per frame
        self.payload_end = -1
        self.payload_view = None
        self.checked_end = -1
        self.checked_view = None
        self.n = 0
        self.escaped = False
        self.body_left = 0      # > 0: collecting a frame body unstuffed-as-is (see feed)
        self.body_tried = False  # this frame's body already failed the fast path: exact decoding
        self.dropping = True    # until the first END, bytes may be the tail of an old frame
        self.cr_dropped = False  # the last byte dropped was a CR (see _cr_at_frame_start)
        self.frames = 0
        self.crc_errors = 0
        self.framing_errors = 0   # bad escape, length mismatch, too long, too short
        self.garbage_bytes = 0

    def _payload(self, end):
        """buf[HEADER_LEN:end] as a view, the last one reused when the length repeats."""
        if end != self.payload_end:
            self.payload_view = self.view[HEADER_LEN:end]
            self.payload_end = end
        return self.payload_view

    def _crc_ok(self, n):
        """buf[:n] ends with the CRC-32 of what comes before it. With the C CRC: the CRC of all n bytes is
        the fixed residue (no int of 2**30 or more for a good frame, no copy, the view reused)."""
        if _c_crc32 is None:
            return crc_matches(self.buf, n)
        if n != self.checked_end:
            self.checked_view = self.view[:n]
            self.checked_end = n
        return _c_crc32(self.checked_view) == CRC_RESIDUE

    def _put(self, data, i, k):
        """Append data[i:i + k] to the frame buffer: with the copy kernel, else byte by byte. A slice of a
        memoryview is a heap object on MicroPython: the slice assignment this loop replaces made 0.9-1.5
        KB per N-MNIST sample on the 32-bit port (2.7-4.8 KB with a third view per copy); the loop makes
        none, for about 6 us a byte on the Cortex-M3 (plain inference: the link's part of a sample went
        from 65 to 251 ms of 2.6 s; the boards that matter run the copy kernel)."""
        n = self.n
        if self.copy is not None:
            self.copy(self.buf, n, data, i, k)
        else:
            buf = self.buf
            for j in range(k):
                buf[n + j] = data[i + j]
        self.n = n + k

    def want(self):
        """How many bytes certainly belong to the current frame (>= 1): a board that can only do
        blocking reads asks for this many, so it never waits for bytes the sender has not sent."""
        n = self.n
        if self.dropping or n == 0 or self._cr_at_frame_start():
            # between frames, or after a CR there: one byte, for the next may be the host's break
            # (`\r\x03`, then the REPL's own bytes), which a blocking read of a whole header would sit on
            return 1
        if n < HEADER_LEN:
            return HEADER_LEN - n + 1
        if self.body_left:
            return self.body_left
        buf = self.buf
        length = buf[2] | (buf[3] << 8)
        left = HEADER_LEN + length + CRC_LEN - n
        if left < 0 or length + OVERHEAD > self.max_frame or crc8(buf, 0, 4) != buf[4]:
            return 1                # a length we cannot trust: byte by byte until the next END
        return left + 1 if left < WANT_CAP else WANT_CAP

    def _start_body(self):
        """After a header whose CRC-8 checks: expect the body unescaped (payload, CRC-32, END) and
        collect exactly that many bytes with slice copies. Payloads built to need no escapes (EVENTS,
        pack_events) arrive this way at memcpy speed; anything else falls back to exact decoding."""
        buf = self.buf
        length = buf[2] | (buf[3] << 8)
        if crc8(buf, 0, 4) == buf[4] and length + OVERHEAD <= self.max_frame:
            self.body_left = length + CRC_LEN + 1
        else:
            self.body_tried = True  # an untrusted length: the exact path finds the END

    def _finish_body(self):
        n = self.n
        buf = self.buf
        if buf[n - 1] == END and self._crc_ok(n - 1):
            self.n = 0
            self.body_tried = False
            self.frames += 1
            self.on_frame(buf[0], buf[1], self._payload(n - 1 - CRC_LEN))
            return
        # Escapes, a lost byte, noise or a break inside: decode the same bytes exactly, in place (about
        # one frame in twelve: a CRC or header byte that needed an escape). Unstuffing never writes
        # past the byte it reads, so the buffer is its own input; a copy would be a frame of garbage.
        self.n = HEADER_LEN
        self.body_tried = True
        self.feed(buf, HEADER_LEN, n)

    def _finish(self):
        n = self.n
        self.n = 0
        self.escaped = False
        self.body_tried = False
        if n == 0:
            return
        buf = self.buf
        if n < OVERHEAD or (buf[2] | (buf[3] << 8)) != n - OVERHEAD:
            self.framing_errors += 1
            return
        if not self._crc_ok(n):
            self.crc_errors += 1
            return
        self.frames += 1
        self.on_frame(buf[0], buf[1], self._payload(n - CRC_LEN))

    def feed(self, data, start=0, end=None):
        if end is None:
            end = len(data)
        # Three speeds. Body mode (after a checked header): the body is copied as-is and judged once
        # at its END (C-speed copy and CRC). Runs (ports whose bytes/bytearray have find): each run of
        # ordinary bytes is copied with one slice assignment. Special bytes: the per-byte state machine.
        runs = hasattr(data, "find")
        p_end = p_esc = p_intr = -1
        i = start
        while i < end:
            left = self.body_left
            if left:
                k = end - i
                if k > left:
                    k = left
                self._put(data, i, k)
                self.body_left = left - k
                i += k
                if left == k:
                    self._finish_body()
                    p_end = p_esc = p_intr = -1     # _finish_body may have re-fed: positions stale
                continue
            if self.n == HEADER_LEN and not self.body_tried and not self.escaped and not self.dropping:
                self._start_body()
                continue
            if runs and not self.dropping and not self.escaped:
                if p_end < i:
                    p_end = data.find(_END_B, i, end)
                    if p_end < 0:
                        p_end = end
                if p_esc < i:
                    p_esc = data.find(_ESC_B, i, end)
                    if p_esc < 0:
                        p_esc = end
                if p_intr < i:
                    p_intr = data.find(_INTR_B, i, end)
                    if p_intr < 0:
                        p_intr = end
                j = p_end
                if p_esc < j:
                    j = p_esc
                if p_intr < j:
                    j = p_intr
                if self.n < HEADER_LEN and j > i + HEADER_LEN - self.n:
                    j = i + HEADER_LEN - self.n     # stop after the header: the body may go fast
                k = j - i
                if k and self.n + k <= self.max_frame:
                    self._put(data, i, k)
                    self.intr_run = 0
                    i = j
                    continue
            self._byte(data[i])
            i += 1

    def _byte(self, b):
        if b == INTR:               # never part of a frame: noise, or the host's break
            self.intr_run += 1
            if self.break_on_intr and (self.intr_run >= 2 or self._cr_at_frame_start()):
                self.intr_run = 0
                raise KeyboardInterrupt
            if not self.dropping:
                self._drop()
            else:
                self.garbage_bytes += 1
            return
        self.intr_run = 0
        if b == END:
            if self.dropping:
                self.dropping = False
                self.n = 0
                self.escaped = False
                self.body_tried = False
            else:
                self._finish()
            return
        if self.dropping:
            self.garbage_bytes += 1
            self.cr_dropped = b == CR
            return
        if self.escaped:
            self.escaped = False
            if b == ESC_END:
                b = END
            elif b == ESC_ESC:
                b = ESC
            elif b == ESC_INTR:
                b = INTR
            else:
                self._drop()
                return
        elif b == ESC:
            self.escaped = True
            return
        if self.n >= self.max_frame:
            self._drop()
            return
        self.buf[self.n] = b
        self.n += 1

    def _cr_at_frame_start(self):
        """The last byte was a CR where a frame would start (the first byte of a would-be frame, or garbage
        while dropping): a 0x03 now is mpremote's `\\r\\x03`."""
        if self.dropping:
            return self.cr_dropped
        return self.n == 1 and self.buf[0] == CR and not self.escaped

    def _drop(self):
        self.framing_errors += 1
        self.garbage_bytes += self.n
        self.n = 0
        self.escaped = False
        self.body_tried = False
        self.dropping = True


# ---------------------------------------------------------------- payloads
class EventBatch:
    """A view of one EVENTS payload; reused for every frame so the main loop does not allocate."""

    def __init__(self):
        self.data = None
        self.t_base = 0
        self.count = 0

    def bind(self, payload):
        n = len(payload)
        if n < EVENT_HEAD_LEN:
            raise ValueError("events payload of %d bytes, expected >= %d" % (n, EVENT_HEAD_LEN))
        d = payload
        for k in range(EVENT_HEAD_LEN):
            if d[k] < DIGIT_OFFSET or d[k] > DIGIT_OFFSET + 127:
                raise ValueError("events header byte %d is %d, expected 4..131" % (k, d[k]))
        lo = d[0] + (d[1] << 7) + (d[2] << 14) - _D3
        self.t_base = lo + ((d[3] - DIGIT_OFFSET + ((d[4] - DIGIT_OFFSET) << 7)) << 21)
        self.count = d[5] - DIGIT_OFFSET + ((d[6] - DIGIT_OFFSET) << 7)
        if n != EVENT_HEAD_LEN + EVENT_LEN * self.count:
            raise ValueError("events payload of %d bytes for %d events, expected %d"
                             % (n, self.count, EVENT_HEAD_LEN + EVENT_LEN * self.count))
        self.data = payload
        return self

    def decode_into(self, xs, ys, ts, ps):
        """Every event of the batch into the preallocated xs, ys, ts, ps (at least `count` items each);
        returns the count. No object per event (event() makes a tuple)."""
        d = self.data
        tb = self.t_base
        k = EVENT_HEAD_LEN
        for i in range(self.count):
            lo = d[k] + (d[k + 1] << 7) + (d[k + 2] << 14) - _D3
            hi = d[k + 3] + (d[k + 4] << 7) + (d[k + 5] << 14) - _D3
            xs[i] = lo & 0x7FF
            ys[i] = hi & 0x7FF
            ts[i] = tb + (lo >> 11) + ((hi >> 12) << 10)
            ps[i] = (hi >> 11) & 1
            k += EVENT_LEN
        return self.count

    def event(self, i):
        """(x, y, t_us, p) of event i."""
        d = self.data
        k = EVENT_HEAD_LEN + EVENT_LEN * i
        lo = d[k] + (d[k + 1] << 7) + (d[k + 2] << 14) - _D3
        hi = d[k + 3] + (d[k + 4] << 7) + (d[k + 5] << 14) - _D3
        return lo & 0x7FF, hi & 0x7FF, self.t_base + (lo >> 11) + ((hi >> 12) << 10), (hi >> 11) & 1


def put_digits(value, n, out):
    """Append the n low base-128 digits of value (plus DIGIT_OFFSET) to out: the board's packer and the
    host's EVENTS header both use it."""
    for _ in range(n):
        out.append((value & 127) + DIGIT_OFFSET)
        value >>= 7


def pack_events(t_base, xs, ys, ts, ps):
    """One EVENTS payload (the host's vectorised twin is host_tools.link.pack_events_array; this one
    also runs on a board, for tests); needs 0 <= t - t_base <= EVENT_MAX_DT, x and y <= 2047."""
    if not 0 <= t_base <= EVENT_MAX_T_BASE or len(xs) > EVENT_MAX_COUNT:
        raise ValueError("t_base %d or count %d out of range" % (t_base, len(xs)))
    out = bytearray()
    put_digits(t_base, 5, out)
    put_digits(len(xs), 2, out)
    for i in range(len(xs)):
        x, y, p, dt = xs[i], ys[i], ps[i], ts[i] - t_base
        if (dt < 0 or dt > EVENT_MAX_DT or x < 0 or x > EVENT_MAX_XY or y < 0 or y > EVENT_MAX_XY
                or p not in (0, 1)):
            raise ValueError("event %d (x=%d y=%d t=%d p=%d) does not fit a batch at t_base=%d"
                             % (i, x, y, ts[i], p, t_base))
        put_digits(x | (dt & 0x3FF) << 11, 3, out)
        put_digits(y | p << 11 | (dt >> 10) << 12, 3, out)
    return bytes(out)


def pack_result(cls, confidence, counts):
    """RESULT payload: class (i16, -1 = none), confidence (u8, 0..255), n (u8), n spike counts (u16)."""
    out = bytearray(struct.pack("<hBB", cls, confidence, len(counts)))
    for c in counts:
        out.extend(struct.pack("<H", c if c < 0xFFFF else 0xFFFF))
    return bytes(out)


class ResultWriter:
    """pack_result into one preallocated buffer (the board's answer to every END_SAMPLE): the same bytes,
    as a view valid until the next pack; the view is made once per length (a model has one class count)."""

    def __init__(self):
        self.buf = bytearray(4 + 2 * 255)
        self.view = memoryview(self.buf)
        self.end = -1
        self.out = None

    def pack(self, cls, confidence, counts):
        n = len(counts)
        if not -32768 <= cls <= 32767 or not 0 <= confidence <= 255 or n > 255:
            raise ValueError("result: class %d, confidence %d or %d counts out of range" % (cls, confidence, n))
        b = self.buf
        c = cls & 0xFFFF
        b[0] = c & 0xFF
        b[1] = c >> 8
        b[2] = confidence
        b[3] = n
        for i in range(n):
            v = counts[i]
            if v < 0:
                raise ValueError("result: count %d of class %d is negative" % (v, i))
            if v > 0xFFFF:
                v = 0xFFFF
            b[4 + 2 * i] = v & 0xFF
            b[5 + 2 * i] = v >> 8
        end = 4 + 2 * n
        if end != self.end:
            self.out = self.view[:end]
            self.end = end
        return self.out


def unpack_result(payload):
    cls, confidence, n = struct.unpack_from("<hBB", payload, 0)
    counts = [struct.unpack_from("<H", payload, 4 + 2 * i)[0] for i in range(n)]
    return cls, confidence, counts


def pack_stats(items):
    """STATS payload: repeated (name length u8, ASCII name, value i32); items: (name, int) pairs."""
    out = bytearray()
    for name, value in items:
        nb = name.encode()
        out.append(len(nb))
        out.extend(nb)
        out.extend(struct.pack("<i", value))
    return bytes(out)


def unpack_stats(payload):
    items = []
    k = 0
    while k < len(payload):
        n = payload[k]
        name = bytes(payload[k + 1:k + 1 + n]).decode()
        items.append((name, struct.unpack_from("<i", payload, k + 1 + n)[0]))
        k += 1 + n + 4
    return items


def pack_error(code, message):
    msg = message.encode()[:200]
    return bytes((code & 0xFF,)) + msg


# The answer to a request that ran out of heap, built once at import: under a full heap the message of
# the exception could not be formatted, the answer was lost, and the host only saw "no answer after N
# retransmissions" (578-100-10 on the 140K board booted with 2 KB free and then never answered EVENTS).
OUT_OF_HEAP = pack_error(E_OUT_OF_HEAP, "out of heap handling this request: the model leaves too little of "
                                        "the board's heap for the link and a sample (a smaller model: "
                                        "`snn-edge plan`)")


def pack_info(boot_id, max_payload, window, description):
    """INFO payload: version u8, boot id u32, max payload u16, receive window u16, description."""
    return struct.pack("<BIHH", PROTOCOL_VERSION, boot_id & 0xFFFFFFFF, max_payload, window) + description


INFO_HEAD = "<BIHH"
INFO_HEAD_LEN = 9


# ---------------------------------------------------------------- device session
class DeviceSession:
    """The device's half of the protocol, free of I/O: a valid frame in, the response frame out.

    Requests are applied in sequence order exactly once: the expected sequence number is applied and
    answered; a repeat of the last one gets the cached answer again (its response was lost); older
    repeats get the same cached answer (it acknowledges cumulatively); a request from the future (one was lost) gets a NAK naming the
    expected one, once per gap. The handler has one method per request type (see PROTOCOL.md).

    `answer()` leaves the response in rtype, rseq, rpayload (no tuple per frame: the board's loop);
    `on_frame()` returns it as a tuple (tests, host-side doubles).
    """

    def __init__(self, handler, max_payload, window, boot_id=0):
        self.handler = handler
        self.max_payload = max_payload
        self.window = window
        self.boot_id = boot_id
        self.nonce = None
        self.info = b""
        self.expected = 0
        self.last_seq = -1
        self.last_type = ACK
        self.last_payload = b""
        self.nak_for = -1
        self.batch = EventBatch()
        self.result = ResultWriter()
        self.applied = 0
        self.duplicates = 0
        self.errors = 0             # ERROR answers (an answer to a pipelined request can be lost)
        self.extra_stats = None     # board_main adds the link counters and the free heap
        self.describe = handler.hello   # INFO's description (board_main appends the heap it left)
        self.rtype = ACK            # the response answer() made: type, seq, payload
        self.rseq = 0
        self.rpayload = b""

    def on_frame(self, mtype, seq, payload):
        """Returns (response type, seq, response payload) or None (nothing to send)."""
        if not self.answer(mtype, seq, payload):
            return None
        return self.rtype, self.rseq, self.rpayload

    def _respond(self, rtype, seq, rpayload):
        self.rtype = rtype
        self.rseq = seq
        self.rpayload = rpayload
        return True

    def answer(self, mtype, seq, payload):
        """Apply a valid frame; True when there is a response (in rtype, rseq, rpayload)."""
        if mtype == HELLO:
            return self._hello(seq, payload)
        if self.nonce is None:
            return self._respond(ERROR, seq, pack_error(E_NO_SESSION, "no session: send hello first (board was reset)"))
        if seq == self.expected:
            self._apply(mtype, payload)
            if self.rtype == ERROR:
                self.errors += 1
            self.last_seq = seq
            self.last_type = self.rtype
            self.last_payload = self.rpayload
            self.expected = (seq + 1) & 0xFF
            self.applied += 1
            self.rseq = seq
            return True
        behind = (self.expected - seq) & 0xFF
        if behind <= 128:
            # a repeat (its answer was lost or late): the cached answer to the last request also
            # acknowledges everything before it, and never reads as the answer to something else
            self.duplicates += 1
            return self._respond(self.last_type, self.last_seq & 0xFF, self.last_payload)
        if self.nak_for == self.expected:
            return False
        self.nak_for = self.expected
        return self._respond(NAK, self.expected, b"")

    def _hello(self, seq, payload):
        nonce = bytes(payload[:4])
        if nonce != self.nonce:
            self.nonce = nonce
            self.info = pack_info(self.boot_id, self.max_payload, self.window, self.describe())
            self.last_type = INFO
            self.last_payload = self.info
            self.last_seq = seq
            self.expected = (seq + 1) & 0xFF
            self.nak_for = -1
        # a repeat (the INFO was lost, or the line duplicated a late HELLO): the same INFO, even
        # when other requests were applied since, and nothing is reset
        return self._respond(INFO, seq, self.info)

    def _apply(self, mtype, payload):
        """Apply a request: its answer's type and payload into rtype and rpayload."""
        self.rtype = ACK
        self.rpayload = b""
        h = self.handler
        try:
            if mtype == EVENTS:
                h.events(self.batch.bind(payload))
            elif mtype == END_SAMPLE:
                label = struct.unpack_from("<h", payload, 0)[0] if len(payload) >= 2 else -1
                r = h.end_of_sample(label)
                self.rtype = RESULT
                self.rpayload = self.result.pack(r[0], r[1], r[2])
            elif mtype == LOAD_MODEL or mtype == PUT_WEIGHTS:
                offset, total = struct.unpack_from(CHUNK_HEAD, payload, 0)
                chunk = payload[CHUNK_HEAD_LEN:]
                if mtype == LOAD_MODEL:
                    h.load_model(offset, total, chunk)
                else:
                    h.put_weights(offset, total, chunk)
            elif mtype == GET_STATS:
                items = list(h.get_stats())
                if self.extra_stats is not None:
                    items.extend(self.extra_stats())
                self.rtype = STATS
                self.rpayload = pack_stats(items)
            elif mtype == GET_WEIGHTS:
                offset, length = struct.unpack_from("<II", payload, 0)
                if length > self.max_payload - 4:
                    length = self.max_payload - 4
                data, total = h.get_weights(offset, length)
                self.rtype = WEIGHTS
                self.rpayload = struct.pack("<I", total) + bytes(data)
            elif mtype == CHECKPOINT:
                h.checkpoint()
            elif mtype == RESET:
                h.reset()
            elif mtype == CALIBRATE:
                h.calibrate(*struct.unpack_from("<Hiiii", payload, 0))
            elif mtype == SELF_TRAIN:
                h.self_train(*struct.unpack_from("<hB5i", payload, 0))
            else:
                self.rtype = ERROR
                self.rpayload = pack_error(E_UNKNOWN_TYPE, "unknown request type %d" % mtype)
        except MemoryError:
            self.rtype = ERROR
            self.rpayload = OUT_OF_HEAP
        except Exception as exc:   # noqa: BLE001 - the main loop must survive bad input
            code = getattr(exc, "code", None)
            if not isinstance(code, int):
                # struct.error (CPython) / ValueError (MicroPython): a payload of the wrong size
                bad = isinstance(exc, (ValueError, IndexError)) or type(exc).__name__ == "error"
                code = E_BAD_PAYLOAD if bad else E_HANDLER
            msg = getattr(exc, "msg", None) or str(exc) or type(exc).__name__
            self.rtype = ERROR
            self.rpayload = pack_error(code, msg)
