"""The MicroPython raw REPL over pyserial: enter, exec, and copy files with verification.

The protocol is mpremote's (micropython/tools/mpremote/mpremote/transport_serial.py), written here
rather than used from mpremote (a dependency for its ROMFS writer) because (1) its writes are not
paced, and the micro:bit's 63-byte UART buffer needs 32-byte writes every 5 ms, (2) we need a
fallback for boards without hashlib (the micro:bit) and without os.rename, (3) a file is written to
a temporary name, checked by sha256 and renamed, so an interrupted flash never leaves half a file,
which mpremote's fs_writefile does not do, and (4) its SerialTransport opens the port itself, where
flash, the link and the boot check share one open port. The sequence:
- Ctrl-C twice stops a running program; Ctrl-A enters the raw REPL, the board answers
  "raw REPL; CTRL-B to exit\\r\\n>";
- raw-paste (Ctrl-E 'A' Ctrl-A): the board answers "R\\x01" + window (u16 LE) and grants another
  window with each "\\x01"; "R\\x00" or anything else means plain raw mode;
- plain raw mode: code, then Ctrl-D; the board answers "OK", runs it, and sends
  stdout "\\x04" stderr "\\x04>".
"""
from __future__ import annotations

import base64
import hashlib
import struct
import time
from dataclasses import dataclass

from edge.errors import SnnEdgeError
from firmware_py.board_main import MAX_PAYLOAD_CAP
from firmware_py.link import OVERHEAD

RAW_BANNER = b"raw REPL; CTRL-B to exit\r\n>"


class TransportError(SnnEdgeError):
    pass


class RemoteError(TransportError):
    """Code run on the board raised: the message carries the board's traceback."""


@dataclass
class Pacing:
    """How to write to the board: chunk size and the pause after each chunk."""
    chunk: int = 256
    pause: float = 0.0
    raw_paste: bool = True
    file_chunk: int = 1024       # bytes of file content per exec (code above ~1 KB fails on a micro:bit)
    # A board blocked in the middle of a frame (the host died half-way through writing it) reads
    # the break as frame bytes: this many Ctrl-C complete the longest frame its link loop reads in
    # one go (the micro:bit's loop reads byte by byte: 0 there).
    unblock: int = MAX_PAYLOAD_CAP + OVERHEAD + 1


PROFILES = {
    "unix": Pacing(file_chunk=4096),
    "microbit": Pacing(chunk=32, pause=0.005, raw_paste=False, file_chunk=128, unblock=0),
}


class RawRepl:
    def __init__(self, ser, pacing: Pacing | None = None, timeout: float = 10.0):
        self.ser = ser
        self.pacing = pacing or Pacing()
        self.timeout = timeout
        self.use_raw_paste = self.pacing.raw_paste
        self.in_raw = False
        self.bytes_written = 0
        self.retries = 0            # garbled code re-sent (paced lines) and files re-written
        self._rx = bytearray()
        self._support: tuple[bool, bool] | None = None

    # ------------------------------------------------------------ wire
    def _write(self, data: bytes) -> None:
        step = self.pacing.chunk
        for i in range(0, len(data), step):
            self.ser.write(data[i:i + step])
            if self.pacing.pause:
                self.ser.flush()
                time.sleep(self.pacing.pause)
        self.bytes_written += len(data)

    def _fill(self) -> int:
        """Move what the port holds into the receive buffer; returns the buffered byte count."""
        n = self.ser.in_waiting
        if n:
            self._rx += self.ser.read(n)
        return len(self._rx)

    def read_until(self, ending: bytes, timeout: float | None = None) -> bytes:
        """Bytes up to and including `ending`; what follows stays buffered for the next read."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            k = self._rx.find(ending)
            if k >= 0:
                out = bytes(self._rx[:k + len(ending)])
                del self._rx[:k + len(ending)]
                return out
            if time.monotonic() > deadline:
                raise TransportError(f"timeout waiting for {ending!r} from the board; "
                                     f"got {bytes(self._rx[-200:])!r}")
            before = len(self._rx)
            if self._fill() == before:
                time.sleep(0.001)

    def _read_exact(self, n: int) -> bytes:
        deadline = time.monotonic() + self.timeout
        while self._fill() < n:
            if time.monotonic() > deadline:
                raise TransportError(f"timeout reading {n} bytes from the board; got {bytes(self._rx)!r}")
            time.sleep(0.001)
        out = bytes(self._rx[:n])
        del self._rx[:n]
        return out

    def _drain(self, quiet: float = 0.05) -> bytes:
        """Discard input until the board has been quiet for `quiet` seconds."""
        out = bytearray(self._rx)
        self._rx.clear()
        last = time.monotonic()
        while time.monotonic() - last < quiet:
            n = self.ser.in_waiting
            if n:
                out += self.ser.read(n)
                last = time.monotonic()
            else:
                time.sleep(0.002)
        return bytes(out)

    # ------------------------------------------------------------ raw REPL
    def enter(self, soft_reset: bool = False, attempts: int = 3) -> None:
        for attempt in range(attempts):
            if attempt and self.pacing.unblock:
                # in pieces, reading between them: once the board is back at its REPL it answers every
                # Ctrl-C, and a port that nobody reads stops the board (and so its reading) on a full buffer
                for k in range(0, self.pacing.unblock, 256):
                    self._write(b"\x03" * min(256, self.pacing.unblock - k))
                    self._drain(0.005)
                self._drain(0.2)
            self._write(b"\r\x03")
            time.sleep(0.05)
            self._write(b"\x03")
            self._drain(0.1 + 0.1 * attempt)
            self._write(b"\r\x01")
            try:
                self.read_until(RAW_BANNER, timeout=2.0 + attempt)
                break
            except TransportError:
                if attempt == attempts - 1:
                    raise TransportError("could not enter the raw REPL (is a MicroPython board on this port?)")
        self.in_raw = True
        if soft_reset:
            self.soft_reset()

    def soft_reset(self) -> None:
        """Ctrl-D in the raw REPL. A real board reboots into the raw REPL; the unix port exits and
        the virtual board restarts it at the friendly prompt (possibly running main.py): handle both."""
        self._write(b"\x04")
        time.sleep(0.3)
        self.in_raw = False
        self.enter()

    def exit(self) -> None:
        if self.in_raw:
            self._write(b"\r\x02")
            self.in_raw = False

    def _raw_paste_write(self, code: bytes) -> None:
        head = self._read_exact(2)
        window = struct.unpack("<H", head)[0]
        remain = window
        i = 0
        while i < len(code):
            while remain == 0 or self._fill():
                b = self._read_exact(1)
                if b == b"\x01":
                    remain += window
                elif b == b"\x04":
                    self._write(b"\x04")
                    return
                else:
                    raise TransportError(f"unexpected byte {b!r} from the board during raw-paste")
            piece = code[i:i + remain]
            self._write(piece)
            remain -= len(piece)
            i += len(piece)
        self._write(b"\x04")
        self.read_until(b"\x04")

    def exec_no_follow(self, code: str | bytes) -> None:
        """Send code and wait until the board accepted it (it may still be running)."""
        if not self.in_raw:
            self.enter()
        if isinstance(code, str):
            code = code.encode()
        if self.use_raw_paste:
            self._write(b"\x05A\x01")
            head = self._read_exact(2)
            if head == b"R\x01":
                self._raw_paste_write(code)
                return
            if head != b"R\x00":   # an old board: it took Ctrl-E as noise and re-sent the banner
                self.read_until(b"w REPL; CTRL-B to exit\r\n>")
            self.use_raw_paste = False
        self._write(code)
        self._write(b"\x04")
        ok = self._read_exact(2)
        if ok != b"OK":
            raise TransportError(f"the board did not accept the code: {ok + self._drain()!r}")

    def follow(self, timeout: float | None = None) -> tuple[bytes, bytes]:
        out = self.read_until(b"\x04", timeout)[:-1]
        err = self.read_until(b"\x04", timeout)[:-1]
        self.read_until(b">", timeout)
        return out, err

    def exec(self, code: str | bytes, timeout: float | None = None) -> bytes:
        """Run code on the board; returns its stdout; raises RemoteError with the traceback.

        On a paced (slow UART) line, code that arrives garbled fails to compile and so has not run
        at all: a SyntaxError there is retried (twice) rather than reported."""
        attempts = 3 if self.pacing.pause else 1
        for attempt in range(attempts):
            self.exec_no_follow(code)
            out, err = self.follow(timeout)
            if not err:
                return out
            text = err.decode("utf-8", "replace")
            last = text.strip().splitlines()[-1] if text.strip() else text
            if last.startswith(("SyntaxError", "IndentationError")) and attempt < attempts - 1:
                self.retries += 1
                continue
            raise RemoteError("the board raised: " + last + "\n" + text)
        raise AssertionError("unreachable")

    def eval(self, expr: str):
        import ast
        return ast.literal_eval(self.exec(f"print(repr({expr}))").decode().strip())

    # ------------------------------------------------------------ files
    def file_digest(self, path: str) -> str | None:
        """sha256 hex of a board file, None if it does not exist; boards without hashlib send the
        bytes and the host hashes them."""
        out = self.exec(
            "def _d(p):\n"
            " try:\n  f=open(p,'rb')\n except OSError:\n  print('NOFILE');return\n"
            " try:\n  import hashlib,binascii\n  h=hashlib.sha256()\n"
            "  while 1:\n   b=f.read(256)\n   if not b:break\n   h.update(b)\n"
            "  print(binascii.hexlify(h.digest()).decode())\n"
            " except ImportError:\n  print('NOHASH')\n"
            " f.close()\n"
            f"_d({path!r})\ndel _d\n").decode().strip()
        if out == "NOFILE":
            return None
        if out == "NOHASH":
            return hashlib.sha256(self.read_file(path)).hexdigest()
        return out

    def read_file(self, path: str) -> bytes:
        out = self.exec(
            f"f=open({path!r},'rb')\n"
            "while 1:\n b=f.read(64)\n if not b:break\n print(''.join(['%02x'%x for x in b]))\n"
            "f.close()\n", timeout=max(self.timeout, 60))
        return bytes.fromhex(out.decode().replace("\r", "").replace("\n", ""))

    def _write_support(self) -> tuple[bool, bool]:
        """(os.rename exists, binascii.a2b_base64 exists) on this board, asked once per session."""
        if self._support is None:
            probe = self.exec("import os\nprint(hasattr(os,'rename'))\n"
                              "try:\n from binascii import a2b_base64 as _a\n print(1)\n"
                              "except ImportError:\n print(0)").split()
            self._support = (probe[0] == b"True", probe[1] == b"1")
        return self._support

    def write_file(self, path: str, data: bytes, atomic: bool = True) -> None:
        """Write in chunks of file_chunk bytes (one exec each; the file is opened with the first and
        closed and renamed with the last), to path.tmp then rename when the board has os.rename (the
        micro:bit has not: it writes in place)."""
        has_rename, has_b64 = self._write_support()
        target = path + ".tmp" if atomic and has_rename else path
        step = self.pacing.file_chunk
        pieces = [data[i:i + step] for i in range(0, len(data), step)] or [b""]
        for k, piece in enumerate(pieces):
            code = ""
            if k == 0:
                code = ("from binascii import a2b_base64 as _a\n" if has_b64 else "") + f"f=open({target!r},'wb')\n"
            if piece:
                # base64: 4/3 of the bytes on the wire instead of ~3x for a repr of binary data
                code += (f"f.write(_a({base64.b64encode(piece)!r}))\n" if has_b64 else f"f.write({piece!r})\n")
            if k == len(pieces) - 1:
                code += "f.close()\ndel f\n"
                if target != path:
                    code += (f"import os\ntry:\n os.remove({path!r})\nexcept OSError:\n pass\n"
                             f"os.rename({target!r},{path!r})\n")
            self.exec(code)

    def mkdir(self, path: str) -> None:
        self.exec(f"import os\ntry:\n os.mkdir({path!r})\nexcept OSError:\n pass")

    def listdir(self, path: str = "") -> list[str]:
        return self.eval(f"__import__('os').listdir({path!r})" if path else "__import__('os').listdir()")

    def remove(self, path: str) -> None:
        self.exec(f"import os\nos.remove({path!r})")

    def remove_if_exists(self, path: str) -> None:
        self.exec(f"import os\ntry:\n os.remove({path!r})\nexcept OSError:\n pass")

    def put(self, path: str, data: bytes, verify: bool = True) -> bool:
        """Copy data to path unless the board already holds the same bytes; True if it wrote."""
        want = hashlib.sha256(data).hexdigest()
        if self.file_digest(path) == want:
            return False
        attempts = 3 if self.pacing.pause else 1     # a slow UART can drop a byte inside a literal
        for attempt in range(attempts):
            self.write_file(path, data)
            if not verify:
                return True
            got = self.file_digest(path)
            if got == want:
                return True
            self.retries += 1
        raise TransportError(f"{path}: verification failed after writing {len(data)} bytes "
                             f"{attempts} time(s) (sha256 {got} on the board, expected {want})")
