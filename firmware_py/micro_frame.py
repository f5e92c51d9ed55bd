"""The micro:bit link's deframer and session (docs/PROTOCOL.md); frames out and CRCs: micro_link.py.

Its own module because the micro:bit's compiler holds a whole module's parse tree while it compiles it
(measured: modules above about 1 KB of minified code fail to import once a few KB of the heap are in
use), see micro_link.py for why this is not firmware_py/link.py and how it is tested against it.
"""
import struct

try:
    from firmware_py.micro_link import (E_BAD_PAYLOAD, E_HANDLER, E_NO_SESSION, ERROR, HELLO, INFO,
                                        LONGEST, MAX_PAYLOAD, NAK, VERSION, WINDOW, Err, crc32, crc_bytes, encode)
except ImportError:     # the micro:bit's flat filesystem
    from micro_link import (E_BAD_PAYLOAD, E_HANDLER, E_NO_SESSION, ERROR, HELLO,  # type: ignore
                            INFO, LONGEST, MAX_PAYLOAD, NAK, VERSION, WINDOW, Err, crc32, crc_bytes, encode)


class Link:
    """Deframer + session: feed(bytes) with whatever the UART delivered; answers go to write(bytes);
    `hello` is the description INFO carries after its head."""

    def __init__(self, handle, hello, write, boot_id):
        self.handle = handle
        self.hello = hello
        self.write = write
        self.boot_id = boot_id
        self.raw = None         # None: dropping until the first END (bytes may be an old frame's tail)
        self.c3 = False         # the last byte fed was a raw 0x03
        self.nonce = None
        self.expected = 0
        self.last = None
        self.nak_for = -1
        self.frames = self.crc_errors = self.framing_errors = self.duplicates = 0

    def feed(self, d):
        if b"\x03\x03" in d or self.c3 and d[0] == 3:
            raise KeyboardInterrupt
        self.c3 = d[-1] == 3
        while d:
            k = d.find(b"\xc0")
            if k < 0:
                k = len(d)
            if self.raw is not None and len(self.raw) <= LONGEST:
                self.raw += d[:k]
            f = self.raw
            if k < len(d) and f:
                # the raw bytes between two ENDs: a frame to answer, or counted and dropped
                n = f.count(b"\xdb")
                if b"\x03" in f or n != f.count(b"\xdb\xdc") + f.count(b"\xdb\xdd") + f.count(b"\xdb\xde"):
                    n = 0
                else:
                    f = f.replace(b"\xdb\xdc", b"\xc0").replace(b"\xdb\xde", b"\x03").replace(b"\xdb\xdd", b"\xdb")
                    n = len(f)
                if not 9 <= n <= MAX_PAYLOAD + 9 or f[2] | f[3] << 8 != n - 9:
                    self.framing_errors += 1
                elif crc_bytes(crc32(f[:-4])) != f[-4:]:
                    self.crc_errors += 1
                else:
                    self.frames += 1
                    r = self.answer(f[0], f[1], f[5:-4])
                    if r:
                        self.write(encode(*r))
            if k < len(d):
                self.raw = b""
            d = d[k + 1:]

    def answer(self, mtype, seq, payload):
        """The session (PROTOCOL.md): -> (type, seq, payload) to send, or None."""
        if mtype == HELLO:
            info = INFO, seq, struct.pack("<BIHH", VERSION, self.boot_id, MAX_PAYLOAD, WINDOW) + self.hello
            if payload[:4] != self.nonce:       # a new session (a repeated HELLO gets the same INFO)
                self.nonce = payload[:4]
                self.last = info
                self.expected = seq + 1 & 255
                self.nak_for = -1
            return info
        if self.nonce is None:
            return ERROR, seq, bytes((E_NO_SESSION,)) + b"no session: send hello first (board was reset)"
        if seq == self.expected:
            try:
                r = self.handle(mtype, payload)
            except Err as e:
                r = ERROR, bytes((e.args[0],)) + e.args[1].encode()
            except MemoryError:
                r = ERROR, bytes((E_HANDLER,)) + b"out of heap"
            except Exception as e:  # noqa: BLE001 - a short payload (struct, index), or a bug
                r = ERROR, bytes((E_BAD_PAYLOAD if isinstance(e, (ValueError, IndexError)) else E_HANDLER,)) \
                    + (str(e) or type(e).__name__).encode()[:60]
            self.last = (r[0], seq, r[1])
            self.expected = seq + 1 & 255
            return self.last
        if self.expected - seq & 255 <= 128:
            self.duplicates += 1
            return self.last
        if self.nak_for == self.expected:
            return None
        self.nak_for = self.expected
        return NAK, self.expected, b""
