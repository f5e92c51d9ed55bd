"""The serial link's device side for the micro:bit (docs/PROTOCOL.md): frames, CRCs, stuffing, sessions.

Why not firmware_py/link.py: on the micro:bit's MicroPython 1.9.2 (about 9 KB of heap, an on-board
compiler that fails above ~3 KB of dense code per module) link.py cannot run: it uses memoryview and
bytearray slice assignment, which that port does not have, and its source (about 19 KB) does not compile
there. This module speaks the same protocol with the least code: a byte-at-a-time deframer, the session's
sequence/duplicate/NAK rules and the frame encoder. Its CRC-32 is bitwise on 16-bit halves: firmware_py/crc.py
gives the same bits but importing it (its 1 KB of tables and its code) takes 2.2 KB of the 9 KB heap. tests/firmware/test_micro_link.py feeds the same byte
streams to this module and to link.py's Deframer + DeviceSession and requires the same answers, byte for
byte, under CPython and the unix MicroPython; the constants are checked equal to link.py's there.

The handler is one function, handle(type, payload) -> (answer type, answer payload); it raises Err(code,
message) for a refused request (codes: firmware_py/errors.py), which becomes an ERROR answer.
"""
import struct

MAX_PAYLOAD = 32        # the micro:bit's UART buffer holds 63 bytes
WINDOW = 48             # bytes the host may have un-acknowledged
VERSION = 2             # link.PROTOCOL_VERSION (2: EVENTS in base-128 digits)
HELLO = 0x01            # requests 0x02-0x09 are named in micro_main.Handler.handle
ACK = 0x80
INFO = 0x81
ERROR = 0x85
NAK = 0x86
E_NO_SESSION = 200
E_BAD_PAYLOAD = 201
E_UNKNOWN_TYPE = 202
E_HANDLER = 203


class Err(Exception):
    """A refused request: Err(code, message)."""


def crc8(data, n):
    """CRC-8 (polynomial 0x07, init 0) of data[:n]: the header check."""
    c = 0
    for i in range(n):
        c ^= data[i]
        for _ in range(8):
            c = ((c << 1) ^ 7) & 255 if c & 128 else (c << 1) & 255
    return c


def crc32(data, n, lo=0xFFFF, hi=0xFFFF):
    """The zlib CRC-32 of data[:n] before its final inversion, as (low, high) 16-bit halves (no int above
    2**30, which would live on the heap); pass a previous result to continue. Signed bytes are fine."""
    for i in range(n):
        lo ^= data[i] & 255
        for _ in range(8):
            b = lo & 1
            lo = lo >> 1 | (hi & 1) << 15
            hi >>= 1
            if b:
                lo ^= 0x8320
                hi ^= 0xEDB8
    return lo, hi


def crc_bytes(lo, hi):
    """The finished CRC-32 as its 4 little-endian bytes."""
    return bytes((lo & 255 ^ 255, lo >> 8 ^ 255, hi & 255 ^ 255, hi >> 8 ^ 255))


def crc_ok(buf, n):
    """True when buf[n - 4:n] is the CRC-32 (little endian) of buf[:n - 4]."""
    c = crc_bytes(*crc32(buf, n - 4))
    return buf[n - 4] == c[0] and buf[n - 3] == c[1] and buf[n - 2] == c[2] and buf[n - 1] == c[3]


def encode(mtype, seq, payload=b""):
    """One frame as bytes, END on both sides."""
    n = len(payload)
    head = bytes((mtype, seq, n & 255, n >> 8))
    body = head + bytes((crc8(head, 4),)) + payload
    body += crc_bytes(*crc32(body, len(body)))
    return (b"\xc0" + body.replace(b"\xdb", b"\xdb\xdd").replace(b"\xc0", b"\xdb\xdc")
            .replace(b"\x03", b"\xdb\xde") + b"\xc0")


class Link:
    """Deframer + session: feed(byte) for every received byte; the answer frames go to write(bytes).

    Two raw 0x03 in a row (the host's break) raise KeyboardInterrupt; a frame whose length, escape or CRC
    is wrong is counted and dropped, never acted on (decoding resumes at the next 0xC0)."""

    def __init__(self, handle, hello, write, boot_id):
        self.handle = handle
        self.hello = hello
        self.write = write
        self.boot_id = boot_id
        self.buf = bytearray(MAX_PAYLOAD + 9)
        self.n = 0
        self.esc = False
        self.drop = True        # until the first END
        self.intr = 0
        self.nonce = None
        self.info = b""
        self.expected = 0
        self.last = (ACK, 0, b"")
        self.nak_for = -1
        self.frames = self.crc_errors = self.framing_errors = self.garbage = 0
        self.applied = self.duplicates = self.errors = 0

    def _bad(self):
        self.framing_errors += 1
        self.garbage += self.n
        self.n = 0
        self.esc = False
        self.drop = True

    def feed(self, b):
        if b == 3:
            self.intr += 1
            if self.intr > 1:
                self.intr = 0
                raise KeyboardInterrupt
            if self.drop:
                self.garbage += 1
            else:
                self._bad()
            return
        self.intr = 0
        if b == 0xC0:
            if self.drop:
                self.drop = False
            else:
                self._end()
            self.n = 0
            self.esc = False
            return
        if self.drop:
            self.garbage += 1
            return
        if self.esc:
            self.esc = False
            if b == 0xDC:
                b = 0xC0
            elif b == 0xDD:
                b = 0xDB
            elif b == 0xDE:
                b = 3
            else:
                self._bad()
                return
        elif b == 0xDB:
            self.esc = True
            return
        if self.n >= len(self.buf):
            self._bad()
            return
        self.buf[self.n] = b
        self.n += 1

    def _end(self):
        n = self.n
        if n == 0:
            return
        buf = self.buf
        if n < 9 or buf[2] | buf[3] << 8 != n - 9:
            self.framing_errors += 1
            return
        if not crc_ok(buf, n):
            self.crc_errors += 1
            return
        self.frames += 1
        r = self.answer(buf[0], buf[1], bytes(buf[5:n - 4]))
        if r is not None:
            self.write(encode(r[0], r[1], r[2]))

    def answer(self, mtype, seq, payload):
        """The session (PROTOCOL.md): -> (type, seq, payload) to send, or None."""
        if mtype == HELLO:
            nonce = payload[:4]
            if nonce != self.nonce:
                self.nonce = nonce
                self.info = struct.pack("<BIHH", VERSION, self.boot_id, MAX_PAYLOAD, WINDOW) + self.hello()
                self.last = (INFO, seq, self.info)
                self.expected = (seq + 1) & 255
                self.nak_for = -1
            return INFO, seq, self.info
        if self.nonce is None:
            return ERROR, seq, bytes((E_NO_SESSION,)) + b"no session: send hello first (board was reset)"
        if seq == self.expected:
            try:
                rtype, rpayload = self.handle(mtype, payload)
            except Err as exc:
                rtype, rpayload = ERROR, bytes((exc.args[0],)) + exc.args[1].encode()[:200]
            except MemoryError:
                import gc
                gc.collect()
                rtype, rpayload = ERROR, bytes((E_HANDLER,)) + b"out of heap"
            except Exception as exc:  # noqa: BLE001 - a struct error on a short payload, or a bug
                code = E_BAD_PAYLOAD if isinstance(exc, (ValueError, IndexError)) else E_HANDLER
                rtype, rpayload = ERROR, bytes((code,)) + (str(exc) or type(exc).__name__).encode()[:200]
            if rtype == ERROR:
                self.errors += 1
            self.last = (rtype, seq, rpayload)
            self.expected = (seq + 1) & 255
            self.applied += 1
            return self.last
        if (self.expected - seq) & 255 <= 128:
            self.duplicates += 1
            return self.last
        if self.nak_for == self.expected:
            return None
        self.nak_for = self.expected
        return NAK, self.expected, b""

    def stats(self):
        return (("link_frames", self.frames), ("link_crc_errors", self.crc_errors),
                ("link_framing_errors", self.framing_errors), ("link_garbage_bytes", self.garbage),
                ("link_applied", self.applied), ("link_duplicates", self.duplicates),
                ("link_errors", self.errors))
