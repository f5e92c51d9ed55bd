"""Link codec and device-session checks that run unchanged under MicroPython and CPython.

Usage: micropython -X heapsize=64K tests/firmware/check_link_mpy.py [FW_PATH]
Prints "FAIL ..." lines, one "HEAP <free after 500 frames> <free after 3000 frames>" line (MicroPython),
then "OK <n checks>" or "FAILED <n>".
"""
import gc
import sys

sys.path.insert(0, ".")
if len(sys.argv) > 1 and sys.argv[1] != ".":
    sys.path.insert(0, sys.argv[1])
from firmware_py import link as L  # noqa: E402
from firmware_py.counting_handler import CountingHandler  # noqa: E402

fails = []
checked = [0]


def check(name, got, want):
    checked[0] += 1
    if got != want:
        fails.append("%s: got %r want %r" % (name, got, want))


def unhex(s):
    return bytes([int(s[i:i + 2], 16) for i in range(0, len(s), 2)])


class Rng:
    """xorshift32, so both interpreters see the same 'random' payloads."""

    def __init__(self, seed):
        self.s = seed

    def next(self):
        s = self.s
        s ^= (s << 13) & 0xFFFFFFFF
        s ^= s >> 17
        s ^= (s << 5) & 0xFFFFFFFF
        self.s = s
        return s

    def bytes(self, n):
        out = bytearray(n)           # not a list of n ints: 8 bytes an item on the 64-bit port's 64K heap
        for i in range(n):
            out[i] = self.next() & 0xFF
        return bytes(out)


# Golden frames (PROTOCOL.md, "Examples"): the wire bytes are the contract between host and board.
GOLDEN = [
    (L.EVENTS, 5, bytes([0x03, 0xC0, 0xDB, 0x00, 0x41]), "c0dbde050500bbdbdedbdcdbdd0041e9442dcbc0"),
    (L.HELLO, 0, b"", "c00100000016fc6b960fc0"),
    (L.ACK, 255, b"", "c080ff00001a04b8a354c0"),
]
for mtype, seq, payload, wire in GOLDEN:
    check("golden encode %d" % mtype, L.encode_frame(mtype, seq, payload), unhex(wire))

# the header's CRC-8 and how a board sizes its reads: only a checked length is trusted
check("crc8 check value", L.crc8(b"123456789", 0, 9), 0xF4)
d = L.Deframer(1024, lambda t, s, p: None)
w = L.encode_frame(L.EVENTS, 1, bytes(700))
d.feed(w[:7])                                  # END + 5 header bytes + 1 payload byte
check("want: the rest of a checked frame, capped", d.want(), L.WANT_CAP)
bad = bytearray(w)
bad[4] ^= 0x01                                 # length 700 -> 444: the header CRC fails
d = L.Deframer(1024, lambda t, s, p: None)
d.feed(bad[:7])
check("want: 1 byte at a time after a bad header", d.want(), 1)

# CRC-32: the standard check value, and the plain path equals the C path (when the port has one)
check("crc check value", L.crc32_py(b"123456789"), 0xCBF43926)
rng = Rng(12345)
for n in (0, 1, 7, 64, 300):
    data = rng.bytes(n)
    if L._c_crc32 is not None:
        check("crc plain == C, %d bytes" % n, L.crc32_py(data), L._c_crc32(data) & 0xFFFFFFFF)

got = []


def on_frame(mtype, seq, payload):
    got.append((mtype, seq, bytes(payload)))


# round trip through random chunking, with every special byte in the payloads
gc.collect()                   # a 64K heap: start the big part from a compacted heap, as a board loop would
d = L.Deframer(600, on_frame)
sent = []
stream = bytearray()
for k in range(16):
    p = rng.bytes(rng.next() % 300) + bytes([0x03, 0xC0, 0xDB])
    sent.append((L.EVENTS, k, p))
    stream.extend(L.encode_frame(L.EVENTS, k, p))
i = 0
while i < len(stream):
    step = 1 + rng.next() % 97
    d.feed(stream, i, min(i + step, len(stream)))
    i += step
check("round trip", got, sent)
check("no raw 0x03 on the wire", [b for b in stream if b == 0x03], [])

# resync: garbage (with END, ESC and over-long runs) between frames is dropped, frames survive
del got[:]
d = L.Deframer(64, on_frame)
junk = bytes([0x55, 0xC0, 0xDB, 0x01, 0xC0]) + bytes([0x41] * 200) + bytes([0xDB, 0x99])
frame = L.encode_frame(L.ACK, 9, b"abc")
d.feed(junk + frame + junk + frame)
check("resync after garbage", got, [(L.ACK, 9, b"abc"), (L.ACK, 9, b"abc")])
check("garbage counted", d.garbage_bytes > 0 and d.framing_errors > 0, True)

# every single-bit error in a frame: never delivered with other content
for mtype, seq, payload, wire in GOLDEN:
    w = unhex(wire)
    for bit in range(8 * len(w)):
        del got[:]
        bad = bytearray(w)
        bad[bit // 8] ^= 1 << (bit % 8)
        d = L.Deframer(64, on_frame)
        d.feed(bytes(bad) + w)        # the clean copy after it must still come through
        check("bit flip %d of frame %d" % (bit, mtype), got[-1:], [(mtype, seq, payload)])
        check("bit flip %d delivers nothing else" % bit, [g for g in got if g != (mtype, seq, payload)], [])

# two raw 0x03 are the host's break (device side only), one is noise
d = L.Deframer(64, on_frame, break_on_intr=True)
d.feed(bytes([0x03]) + frame)
raised = False
try:
    d.feed(bytes([0x0D, 0x03, 0x03]))
except KeyboardInterrupt:
    raised = True
check("double ctrl-c breaks", raised, True)

# session: in-order apply, duplicates re-answered not re-applied, gaps NAKed once, no session
h = CountingHandler(ckpt="no-such-dir/ckpt.bin")
s = L.DeviceSession(h, 256, 1024, boot_id=7)
ev = L.pack_events(100, [1, 2], [3, 4], [100, 150], [0, 1])
check("no session", s.on_frame(L.EVENTS, 0, ev)[0:2], (L.ERROR, 0))
r = s.on_frame(L.HELLO, 0, b"abcd")
check("hello", (r[0], r[1], r[2][0]), (L.INFO, 0, L.PROTOCOL_VERSION))
check("events", s.on_frame(L.EVENTS, 1, ev), (L.ACK, 1, b""))
check("duplicate events re-acked", s.on_frame(L.EVENTS, 1, ev), (L.ACK, 1, b""))
check("applied once", h.n_events, 2)
check("gap -> NAK", s.on_frame(L.EVENTS, 3, ev), (L.NAK, 2, b""))
check("second NAK suppressed", s.on_frame(L.EVENTS, 4, ev), None)
r1 = s.on_frame(L.END_SAMPLE, 2, b"\x03\x00")
check("result", r1[0:2], (L.RESULT, 2))
check("lost result re-sent", s.on_frame(L.END_SAMPLE, 2, b"\x03\x00"), r1)
check("old duplicate gets the last answer", s.on_frame(L.EVENTS, 1, ev), r1)
check("sample applied once", (h.samples, h.labels), (1, 1))
r = s.on_frame(L.END_SAMPLE, 3, b"\x63\x00")
check("bad label -> error, loop survives", (r[0], r[2][0]), (L.ERROR, L.E_BAD_PAYLOAD))
check("short payload -> error", s.on_frame(L.GET_WEIGHTS, 4, b"\x01")[0], L.ERROR)
check("unknown type", s.on_frame(0x42, 5, b"")[2][0], L.E_UNKNOWN_TYPE)
check("errors counted", s.errors, 3)
check("same hello nonce keeps the session", s.on_frame(L.HELLO, 0, b"abcd")[0], L.INFO)
check("... and the sequence", s.on_frame(L.GET_STATS, 6, b"")[0], L.STATS)

# heap stays flat: 3000 event frames through deframer + session + encoder
del stream, sent, got[:], junk, d, s, h, r, r1, ev
gc.collect()
h = CountingHandler(ckpt="no-such-dir/ckpt.bin")
s = L.DeviceSession(h, 256, 1024)
s.on_frame(L.HELLO, 255, b"wxyz")
out = [0]


def apply(mtype, seq, payload):
    r = s.on_frame(mtype, seq, payload)
    out[0] += len(L.encode_frame(r[0], r[1], r[2]))


d = L.Deframer(256, apply)


def frame_for(k):
    return L.encode_frame(L.EVENTS, k, L.pack_events(1000 * k, [k % 34] * 5, [5] * 5,
                                                     [1000 * k + j for j in range(5)], [k & 1] * 5))


free = []
for n in range(3000):
    d.feed(frame_for(n % 256))
    if n in (499, 2999):
        gc.collect()
        if hasattr(gc, "mem_free"):
            free.append(gc.mem_free())
check("3000 frames applied", (h.n_events, s.applied), (3000 * 5, 3000))
if free:
    print("HEAP %d %d" % (free[0], free[1]))
    check("heap flat", free[0] - free[1] < 256, True)

for f in fails:
    print("FAIL " + f)
print(("OK %d" % checked[0]) if not fails else ("FAILED %d" % len(fails)))
