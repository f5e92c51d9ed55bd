"""The serial link's device side for the micro:bit (docs/PROTOCOL.md): frames, CRCs, stuffing, sessions.

Why not firmware_py/link.py: the micro:bit's MicroPython 1.9.2 has about 9 KB of heap, and every byte of
source it compiles stays there as about 1.5 bytes of bytecode (measured: docs/MICROBIT.md); it also lacks
memoryview and bytearray slice assignment, which link.py uses. So this module speaks the same protocol with
the least code:
- the deframer collects the raw bytes between two ENDs and judges the segment whole at its END with the
  port's C string methods (count, replace): a segment with a raw 0x03, a bad escape, a wrong length or a
  wrong CRC is counted and dropped, never acted on; what link.py's byte-by-byte Deframer delivers, this
  delivers (two raw 0x03 in a row, the host's break, raise KeyboardInterrupt);
- the CRC-32 is bitwise on 16-bit halves (no int above 2**30, which would be heap-allocated there):
  firmware_py/crc.py gives the same bits but its tables and code take 2.2 KB of the heap;
- the session's sequence/duplicate/NAK rules are link.DeviceSession's.
tests/firmware/test_micro_runtime.py feeds the same noisy byte streams to this module and to link.py's
Deframer + DeviceSession and requires the same answers, byte for byte, and checks the constants equal.

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
LONGEST = 2 * (MAX_PAYLOAD + 9)     # raw bytes of the longest frame, every byte escaped


class Err(Exception):
    """A refused request: Err(code, message)."""


def crc32(data, lo=0xFFFF, hi=0xFFFF):
    """The zlib CRC-32 of data before its final inversion, as (low, high) 16-bit halves; pass a
    previous result to continue."""
    for b in data:
        lo ^= b & 255
        for _ in range(8):
            b = lo & 1
            lo = lo >> 1 | (hi & 1) << 15
            hi >>= 1
            if b:
                lo ^= 0x8320
                hi ^= 0xEDB8
    return lo, hi


def crc_bytes(c):
    """The finished CRC-32, c = crc32(...), as its 4 little-endian bytes."""
    return struct.pack("<HH", c[0] ^ 0xFFFF, c[1] ^ 0xFFFF)


def encode(mtype, seq, payload):
    """One frame as bytes, END on both sides; the header's CRC-8 is polynomial 0x07."""
    n = len(payload)
    body = bytes((mtype, seq, n & 255, n >> 8))
    c = 0
    for b in body:
        c ^= b
        for _ in range(8):
            c = (c << 1 ^ 7 if c & 128 else c << 1) & 255
    body += bytes((c,)) + payload
    body += crc_bytes(crc32(body))
    return (b"\xc0" + body.replace(b"\xdb", b"\xdb\xdd").replace(b"\xc0", b"\xdb\xdc")
            .replace(b"\x03", b"\xdb\xde") + b"\xc0")
