"""The serial link's device side for the micro:bit (docs/PROTOCOL.md): frames, CRCs, stuffing, the session.

Why not firmware_py/link.py: the micro:bit's MicroPython 1.9.2 has about 8.9 KB of heap and keeps ~1.27 bytes
of it per byte of (minified) source it compiles (measured: docs/MICROBIT.md); it also lacks memoryview and
bytearray slice assignment, which link.py uses. So this module speaks the same protocol with the least code,
as module-level functions and globals (a method costs the same as a function, an instance its dict):
- the deframer collects the raw bytes between two ENDs and judges the segment whole at its END with the
  port's C string methods (count, replace): a segment with a raw 0x03, a bad escape, a wrong length or a
  wrong CRC is dropped, never acted on (no counters: nothing on the board reads them); two raw 0x03 in a
  row, the host's break, raise KeyboardInterrupt, as link.py's Deframer(break_on_intr=True) does;
- the CRC-32 is bitwise on 16-bit halves (no int above 2**30, which would be heap-allocated there):
  firmware_py/crc.py gives the same bits but its tables and code take 2.2 KB of the heap;
- the session's sequence/duplicate/NAK rules are link.DeviceSession's; an ERROR carries link.py's codes
  with shorter messages.
tests/firmware/test_micro_runtime.py feeds the same noisy byte streams to this module and to link.py's
Deframer + DeviceSession and requires the same answers (frame for frame; ERROR: the same code).

The program sets H (the handler: H(type, payload) -> (answer type, answer payload); it raises
Exception(bytes((code,)) + message) to refuse a request: ERROR's payload), WR (writes bytes to the UART) and
INFO (INFO's payload). Any other exception a request raises (a short payload, out of heap) is answered
E_BAD_PAYLOAD with its message.
"""
import struct

MAX_PAYLOAD = 32        # the micro:bit's UART buffer holds 63 bytes
WINDOW = 48             # bytes the host may have un-acknowledged
VERSION = 2             # link.PROTOCOL_VERSION (2: EVENTS in base-128 digits)
LONGEST = 82            # raw bytes of the longest frame the board takes: 2 * (MAX_PAYLOAD + 9), all escaped

END = b"\xc0"
ESC = (b"\xdb", b"\xdb\xdd"), (END, b"\xdb\xdc"), (b"\x03", b"\xdb\xde")   # escaped in this order
H = WR = INFO = None
RAW = None              # bytes since the last END; None: dropping until the first END (an old frame's tail)
C3 = False              # the last byte fed was a raw 0x03
NONCE = None            # the session's HELLO nonce; None: no session yet
EXP = 0                 # the sequence number expected next
LAST = None             # the last answer (a duplicate request gets it again)
NAKF = -1               # the sequence number last NAK'ed (one NAK per gap)


def crc(d):
    """The zlib CRC-32 of d as its 4 little-endian bytes, computed on 16-bit halves."""
    lo = hi = 65535
    for b in d:
        lo ^= b
        for _ in range(8):
            b = lo & 1
            lo = lo >> 1 | (hi & 1) << 15
            hi >>= 1
            if b:
                lo ^= 0x8320
                hi ^= 0xEDB8
    return struct.pack("<HH", lo ^ 65535, hi ^ 65535)


def enc(t, s, p):
    """One frame as bytes, END on both sides; the header's CRC-8 is polynomial 0x07."""
    n = len(p)
    b = bytes((t, s, n & 255, n >> 8))
    c = 0
    for x in b:
        c ^= x
        for _ in range(8):
            c = (c << 1 ^ 7 if c & 128 else c << 1) & 255
    b += bytes((c,)) + p
    b += crc(b)
    for x, y in ESC:
        b = b.replace(x, y)
    return END + b + END


def feed(d):
    """Whatever the UART delivered: every whole, intact frame in it is answered through WR."""
    global RAW, C3
    if b"\x03\x03" in d or C3 and d[0] == 3:
        raise KeyboardInterrupt
    C3 = d[-1] == 3
    while d:
        k = d.find(END)
        if k < 0:
            k = len(d)
        if RAW is not None and len(RAW) <= LONGEST:
            RAW += d[:k]
        f = RAW
        if k < len(d) and f:
            # the raw bytes between two ENDs: a frame when its length and CRC are right (a raw 0x03 or a
            # bad escape, which link.py's Deframer counts as framing errors, fail the CRC-32 here)
            for x, y in ESC[1:] + ESC[:1]:      # ESC_ESC undone last (1.9.2 has no [::-1])
                f = f.replace(y, x)
            n = len(f)
            if 9 <= n <= MAX_PAYLOAD + 9 and f[2] | f[3] << 8 == n - 9 and crc(f[:-4]) == f[-4:]:
                r = answer(f[0], f[1], f[5:-4])
                if r:
                    WR(enc(*r))
        if k < len(d):
            RAW = b""
        d = d[k + 1:]


def answer(t, s, p):
    """The session (PROTOCOL.md): -> (type, seq, payload) to send, or None."""
    global NONCE, EXP, LAST, NAKF
    if t == 1:                                  # HELLO -> INFO; a repeated HELLO gets the same INFO
        r = 0x81, s, INFO
        if p[:4] != NONCE:                      # a new session
            NONCE = p[:4]
            LAST = r
            EXP = s + 1 & 255
            NAKF = -1
        return r
    if NONCE is None:
        return 0x85, s, b"\xc8no session"       # E_NO_SESSION: the board was reset
    if s == EXP:
        try:
            r = H(t, p)
        except Exception as e:  # noqa: BLE001 - a refusal, a short payload, or out of heap
            r = e.args[0] if e.args else 0
            # E_BAD_PAYLOAD (a short payload, out of heap) with no message: MicroPython 1.9.2 has no
            # str.encode, and a message of our own costs heap this board does not have (measured: one
            # conditional message here and the program no longer loads)
            r = 0x85, r if type(r) is bytes else b"\xc9"
        LAST = r[0], s, r[1]
        EXP = s + 1 & 255
        return LAST
    if EXP - s & 255 <= 128:                    # a duplicate: the same answer again
        return LAST
    if NAKF == EXP:
        return None
    NAKF = EXP
    return 0x86, EXP, b""
