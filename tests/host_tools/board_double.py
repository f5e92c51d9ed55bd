"""A board in the test's own process: the firmware's real DeviceSession and frame codec (firmware_py.link)
behind a serial-like object, with a hook that rewrites the payload of any answer. It is how the host side
of the link meets a misbehaving board (short, odd or absurd answers) without a pty or a subprocess; the
tests of a real board over a pty are test_link_pty.py and test_stream_e2e.py."""
from __future__ import annotations

from firmware_py import link as L
from firmware_py.counting_handler import CountingHandler


class InProcessBoard:
    """pyserial's read side (in_waiting, read) and write side; every write is answered at once.

    mutate(rtype, payload) -> payload (or None to keep it) rewrites answers; max_payload and window are
    what the board's INFO advertises."""

    baudrate = 1_000_000

    def __init__(self, mutate=None, max_payload: int = 1024, window: int = 4096, ckpt: str = "/nonexistent/c"):
        self.session = L.DeviceSession(CountingHandler(ckpt=ckpt), max_payload, window)
        self.deframer = L.Deframer(max(max_payload, 64), self._on_frame)
        self.mutate = mutate
        self.rx = bytearray()

    def _on_frame(self, mtype, seq, payload):
        answer = self.session.on_frame(mtype, seq, bytes(payload))
        if answer is None:
            return
        rtype, rseq, rpayload = answer
        if self.mutate is not None:
            changed = self.mutate(rtype, bytes(rpayload))
            rpayload = rpayload if changed is None else changed
        self.rx += L.encode_frame(rtype, rseq, rpayload)

    # the serial port's side
    def write(self, data: bytes) -> int:
        self.deframer.feed(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    @property
    def in_waiting(self) -> int:
        return len(self.rx)

    def read(self, n: int) -> bytes:
        out, self.rx = bytes(self.rx[:n]), self.rx[n:]
        return out

    def reset_input_buffer(self) -> None:
        self.rx.clear()
