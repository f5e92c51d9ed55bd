"""A MicroPython-style REPL responder for the CPython virtual board (`board-sim --runtime cpython`).

The unix-port `micropython` answers the raw REPL itself; CPython has none, so this speaks the same
protocol as mpremote expects it, on stdin/stdout (a pty in raw mode with ISIG, from virtual_board):
- friendly REPL: prompt ">>> "; Ctrl-A enters raw mode; Ctrl-C cancels the line; Ctrl-D (empty line)
  soft-reboots (the process exits; the virtual board restarts it); a typed line is executed;
- raw REPL: banner "raw REPL; CTRL-B to exit\\r\\n>"; code up to Ctrl-D, answered "OK", stdout, "\\x04",
  the traceback if any, "\\x04>"; Ctrl-D on an empty buffer soft-reboots; Ctrl-B back to friendly;
- raw-paste: Ctrl-E 'A' Ctrl-A is answered "R\\x01" + window (u16 LE); each window the responder has
  consumed is granted again with "\\x01"; Ctrl-D ends the code, answered "\\x04", then the output as
  in raw mode.
At start it runs main.py from the board folder (its cwd) when present, as a board does after reset;
with --raw (the virtual board restarts it so after a soft reset in the raw REPL) it starts in the raw REPL
and runs no main.py, as MicroPython does.
"""
import errno
import os
import struct
import sys
import traceback

WINDOW = 128
BANNER = b"raw REPL; CTRL-B to exit\r\n>"


def out(data):
    if isinstance(data, str):
        data = data.encode()
    sys.stdout.flush()
    view = memoryview(data)
    while len(view):
        view = view[os.write(1, view):]


class Input:
    """Bytes from fd 0; a Ctrl-C turned into SIGINT by the tty comes back as the byte 0x03."""

    def __init__(self):
        self.buf = b""

    def byte(self):
        while not self.buf:
            try:
                self.buf = os.read(0, 4096)
            except KeyboardInterrupt:
                return 0x03
            if not self.buf:
                sys.exit(0)
        b = self.buf[0]
        self.buf = self.buf[1:]
        return b


def ilistdir(path="."):
    """MicroPython's os.ilistdir, which CPython lacks and mpremote's `fs ls` calls: (name, type, inode,
    size) per entry, type 0x4000 for a directory and 0x8000 for a file."""
    for entry in os.scandir(path):
        st = entry.stat()
        yield entry.name, 0x4000 if entry.is_dir() else 0x8000, 0, 0 if entry.is_dir() else st.st_size


os.ilistdir = ilistdir      # this process is the simulated board: its `import os` is MicroPython's


def micropython_error(exc, text):
    """The traceback as MicroPython prints it where CPython differs in a way tools parse: every OSError
    is `OSError: [Errno N] ENAME` (CPython: FileNotFoundError: [Errno 2] No such file or directory),
    which is what mpremote's filesystem commands look for (to tell a missing file from a failure)."""
    if isinstance(exc, OSError) and exc.errno in errno.errorcode:
        lines = text.rstrip("\n").split("\n")
        lines[-1] = "OSError: [Errno %d] %s" % (exc.errno, errno.errorcode[exc.errno])
        return "\n".join(lines) + "\n"
    return text


def run_code(code, namespace):
    """Execute code; stdout goes straight to the port; returns the traceback text or ''."""
    try:
        exec(compile(code, "<stdin>", "exec"), namespace)
        sys.stdout.flush()
        return ""
    except SystemExit:
        raise
    except BaseException as exc:  # noqa: BLE001 - a REPL reports every exception, KeyboardInterrupt too
        sys.stdout.flush()
        return micropython_error(exc, traceback.format_exc())


def soft_reboot():
    out(b"MPY: soft reboot\r\n")
    sys.exit(0)


def raw_paste(inp):
    out(b"R\x01" + struct.pack("<H", WINDOW) + b"\x01")
    code = bytearray()
    remain = WINDOW
    while True:
        b = inp.byte()
        if b == 0x04:
            out(b"\x04")
            return bytes(code)
        code.append(b)
        remain -= 1
        if remain == 0:
            remain = WINDOW
            out(b"\x01")


def raw_repl(inp, namespace):
    out(b"\r\n" + BANNER)
    code = bytearray()
    while True:
        b = inp.byte()
        if b == 0x02:               # Ctrl-B: back to the friendly REPL
            out(b"\r\n")
            return
        if b == 0x03:               # Ctrl-C: drop the buffer
            code = bytearray()
            continue
        if b == 0x05 and not code:  # raw-paste request: Ctrl-E 'A' Ctrl-A
            if inp.byte() == ord("A") and inp.byte() == 0x01:
                src = raw_paste(inp)
                err = run_code(src, namespace)
                out(b"\x04" + err.encode() + b"\x04>")
            continue
        if b == 0x04:
            if not code:
                out(b"OK\r\n")
                soft_reboot()
            out(b"OK")
            err = run_code(bytes(code), namespace)
            out(b"\x04" + err.encode() + b"\x04>")
            code = bytearray()
            continue
        if b == 0x01:               # Ctrl-A again: re-send the banner
            code = bytearray()
            out(b"\r\n" + BANNER)
            continue
        code.append(b)


def friendly(inp, namespace):
    out(b"CPython %d.%d board-sim responder\r\n>>> " % sys.version_info[:2])
    line = bytearray()
    while True:
        b = inp.byte()
        if b == 0x01:
            raw_repl(inp, namespace)
            out(b">>> ")
            line = bytearray()
        elif b == 0x03:
            out(b"\r\n>>> ")
            line = bytearray()
        elif b == 0x04:
            if not line:
                soft_reboot()
        elif b in (0x0D, 0x0A):
            out(b"\r\n")
            if line.strip():
                err = run_code(bytes(line), namespace)
                out(err)
            out(b">>> ")
            line = bytearray()
        elif b >= 0x20:
            line.append(b)
            out(bytes((b,)))


def main():
    raw = "--raw" in sys.argv[1:]
    sys.path[0] = ""                # import the board folder's files, not the repo's
    namespace = {"__name__": "__main__"}
    inp = Input()
    if raw:
        raw_repl(inp, namespace)
    elif os.path.exists("main.py"):
        with open("main.py", "rb") as f:
            err = run_code(f.read(), namespace)
        if err:
            out(err)
    friendly(inp, namespace)


if __name__ == "__main__":
    main()
