"""The device main loop: bytes from the serial port -> frames -> DeviceSession -> handler -> responses.

Runs under MicroPython (unix port behind a pty, real boards on their USB/UART REPL port) and CPython;
the micro:bit runs the micro profile's own loop (firmware_py/micro_link.py), this one does not fit there. Allocation-light: one receive buffer, one deframer and one session for the whole run, so
the heap stays flat over thousands of samples (get_stats reports gc.mem_free after a collection).

A board starts it from main.py (written by `snn-edge flash`): `board_main.main()`.
Two Ctrl-C in a row from the host (byte 0x03, which frames never contain) stop it and return to the
REPL; while it runs, kbd_intr is disabled so a single 0x03 made by line noise cannot interrupt a
request half-applied (the deframer drops that frame and the host retransmits it).
"""
import gc
import sys

DEFAULT_MAX_PAYLOAD = 1024      # for serve() called directly (tests); main() sizes by the free heap
DEFAULT_WINDOW = 4096           # bytes the host may have un-acknowledged
MAX_PAYLOAD_CAP = 16384         # big frames make the per-frame cost of an interpreted loop vanish
FRAMES_IN_WINDOW = 8            # window = this many full frames (capped by INFO's u16)
# The micro:bit profile's link (firmware_py/micro_link.py runs there: this loop does not fit its heap)
MICROBIT_MAX_PAYLOAD = 32
MICROBIT_WINDOW = 48            # the nRF51 UART buffer holds 63 bytes
# Collect after this many bytes allocated (gc.threshold), from the first import on. Without it MicroPython
# collects only when the heap is exhausted, so the imports' garbage spreads their lasting objects over the
# whole heap: measured on the 140K Cortex-M3 after three flashes, all the firmware imported left 100 KB free
# in runs of at most 7.5 KB (52 KB on a fresh board: the layout then depends on what ran before), and a
# model the plan approves failed to boot. With 4 KB the same imports leave one 97 KB run, whatever ran
# before. The link loop, which allocates well under 1 KB a sample, goes back to collecting when the heap
# is full (fewer collections, and the allocation meter counts between them).
GC_THRESHOLD = 4096


def compact_heap(on):
    """Collect every GC_THRESHOLD bytes allocated (on) or only when the heap is full (off); a no-op
    where gc has no threshold (CPython)."""
    if hasattr(gc, "threshold"):
        gc.threshold(GC_THRESHOLD if on else -1)


class StdioPort:
    """sys.stdin.buffer / sys.stdout.buffer with blocking reads of an exact size (MicroPython)."""

    def __init__(self):
        self.rx = sys.stdin.buffer
        self.tx = sys.stdout.buffer
        self.flush = getattr(self.tx, "flush", None)
        self.poller = None
        try:
            import select
            self.poller = select.poll()
            self.poller.register(sys.stdin, select.POLLIN)
        except (ImportError, AttributeError, OSError, TypeError):
            self.poller = None
        self.ipoll = getattr(self.poller, "ipoll", None)     # bound once: a bound method is a heap object

    def readinto(self, view, want):
        return self.rx.readinto(view, want)      # MicroPython's nbytes argument: no slice object per read

    def waiting(self):
        """True when more input has arrived (a port without poll: never known, so False). ipoll yields a
        tuple the poller owns; poll() would make a list per call."""
        if self.poller is None:
            return False
        if self.ipoll is None:
            return bool(self.poller.poll(0))
        for _ in self.ipoll(0):
            return True
        return False

    def write(self, data):
        self.tx.write(data)
        if self.flush is not None:
            self.flush()


class OsPort:
    """File descriptors 0/1 through os (CPython): a read returns what has arrived, up to `want` bytes
    (the deframer's: between frames one byte, so that a REPL tool's `\r\x03` breaks the loop before
    the bytes it sends next, its Ctrl-A, are read, which the REPL must get)."""

    def __init__(self):
        import os
        self.os = os

    def readinto(self, view, want):
        return self.os.readv(0, [view[:want]])

    def waiting(self):
        import select
        return bool(select.select([0], [], [], 0)[0])

    def write(self, data):
        view = memoryview(data)
        while len(view):
            view = view[self.os.write(1, view):]


def default_port():
    if sys.implementation.name != "micropython":
        return OsPort()
    return StdioPort()


def _boot_id():
    try:
        import os
        b = os.urandom(4)
        return b[0] | (b[1] << 8) | (b[2] << 16) | ((b[3] & 0x3F) << 24)
    except Exception:  # noqa: BLE001 - ports without urandom
        import time
        return time.ticks_us() & 0x3FFFFFFF


def make_handler(names=("firmware_py.handler", "handler", "firmware_py.counting_handler",
                         "counting_handler")):
    """The handler of the first module in `names` that the board has (each has make_handler(), or
    name it as "module:factory"):
    by default the runtime's (firmware_py/handler.py), else the counting handler (link checks)."""
    if isinstance(names, str):
        names = (names,)
    for name in names:
        factory = "make_handler"
        if ":" in name:                      # "module:factory"
            name, factory = name.split(":")
        try:
            mod = __import__(name, None, None, [factory])
        except ImportError as exc:
            if name.split(".")[-1] not in str(exc):
                raise            # the module exists but one of its own imports failed: say so
            continue
        return getattr(mod, factory)()
    raise ImportError("no handler module among %r" % (names,))


try:
    from time import ticks_diff, ticks_us
except ImportError:          # CPython
    import time as _time

    def ticks_us():  # type: ignore[misc]  # CPython stand-in for MicroPython's time.ticks_us
        return _time.monotonic_ns() // 1000 & 0x3FFFFFFF

    def ticks_diff(a, b):  # type: ignore[no-redef]
        return (a - b) & 0x3FFFFFFF


class DeviceClock:
    """Time the board spends on each kind of request, on its own clock (time.ticks_us: under QEMU's -icount
    that is device time), as whole milliseconds plus a microsecond remainder so that the totals stay small
    ints (no allocation) for as long as the board runs. Slot 0: EVENTS requests (decoding and binning), 1:
    END_SAMPLE (the network and the learning rule), 2: other requests, 3: all the loop's work on the bytes
    it read (deframing, CRCs, the three before, writing answers): 3 minus the others is the link's own.

    With `meter` it also counts the heap bytes allocated (gc.mem_alloc() after minus before; a stretch
    during which a collection ran is not counted, only tallied in `collected`): by slots 0-2 around their
    requests, and by the whole loop (slot 3: from the end of one frame's work to the end of the next, so
    reads and deframing are in). Off by default: on MicroPython gc.mem_alloc() walks the heap's allocation
    table (5.5 ms a call measured on the 192K Cortex-M3 at -icount 3; two per frame were half the loop's
    time), so it is read three times per frame only when asked."""

    def __init__(self, meter=False):
        self.ms = [0, 0, 0, 0]
        self.us = [0, 0, 0, 0]
        self.mem_alloc = getattr(gc, "mem_alloc", None) if meter else None
        self.alloc = [0, 0, 0, 0]
        self.collected = 0
        self.frame_end = self.heap_used()

    def heap_used(self):
        return self.mem_alloc() if self.mem_alloc is not None else 0

    def add_alloc(self, slot, before):
        if self.mem_alloc is None:
            return
        delta = self.mem_alloc() - before
        if delta < 0:
            self.collected += 1
        else:
            self.alloc[slot] += delta

    def end_frame(self):
        """A frame's work is done: slot 3 gets what the loop allocated since the last one ended."""
        if self.mem_alloc is not None:
            now = self.mem_alloc()
            delta = now - self.frame_end
            self.frame_end = now
            if delta < 0:
                self.collected += 1
            else:
                self.alloc[3] += delta

    def add(self, slot, us):
        v = self.us[slot] + us
        if v >= 1000:
            self.ms[slot] += v // 1000
            v %= 1000
        self.us[slot] = v


def link_stats(session, deframer, clock=None):
    gc.collect()
    extra = []
    if clock is not None:
        extra = [("busy_events_ms", clock.ms[0]), ("busy_sample_ms", clock.ms[1]), ("busy_other_ms", clock.ms[2]),
                 ("busy_loop_ms", clock.ms[3])]
        if clock.mem_alloc is not None:
            extra += [("alloc_events_bytes", clock.alloc[0]), ("alloc_sample_bytes", clock.alloc[1]),
                      ("alloc_other_bytes", clock.alloc[2]), ("alloc_loop_bytes", clock.alloc[3]),
                      ("alloc_collected", clock.collected)]
    return extra + [("link_frames", deframer.frames), ("link_crc_errors", deframer.crc_errors),
            ("link_framing_errors", deframer.framing_errors), ("link_garbage_bytes", deframer.garbage_bytes),
            ("link_applied", session.applied), ("link_duplicates", session.duplicates),
            ("link_errors", session.errors),
            ("mem_free", gc.mem_free() if hasattr(gc, "mem_free") else -1)]


def largest_free_block(limit):
    """The largest bytearray the heap can give now (bytes, to 64), found by trying: MicroPython has no call
    that says it (micropython.mem_info() prints it to the console, which is the serial link here). Each
    failed try costs a collection, so this runs once at start, never per sample. -1 on CPython."""
    if not hasattr(gc, "mem_free"):
        return -1
    lo = 0
    hi = limit
    while hi - lo > 64:
        mid = (lo + hi) // 2
        try:
            bytearray(mid)       # allocated, then garbage at once
            lo = mid
        except MemoryError:
            hi = mid
    gc.collect()
    return lo


def heap_facts():
    """' heap=H free=F block=B': the GC heap, what is free and its largest free block, in bytes (INFO)."""
    if not hasattr(gc, "mem_free"):
        return ""
    gc.collect()
    free = gc.mem_free()
    return " heap=%d free=%d block=%d" % (free + gc.mem_alloc(), free, largest_free_block(free))


def serve(handler, port, max_payload=DEFAULT_MAX_PAYLOAD, window=DEFAULT_WINDOW, meter=False):
    """Run until the input ends (EOF) or Ctrl-C. Every valid request gets one response, except that the
    plain ACK of a request may be held back while more input is already waiting: answers acknowledge
    cumulatively, so the next answer carries it (at most one is held, so at least every other ACK is
    sent, and a held one goes as soon as the input drains). Each ACK costs the host, and a pty's
    relay, a wake-up: this halves them on a busy line. `meter`: count the heap bytes allocated (STATS
    alloc_*; DeviceClock says what it costs)."""
    from firmware_py import link
    session = link.DeviceSession(handler, max_payload, window, _boot_id())
    write = port.write
    encode = link.FrameWriter().frame        # answers built in one preallocated buffer
    encode(link.ERROR, 0, link.OUT_OF_HEAP)  # its view for that length made now: it must go out on a full heap
    waiting = getattr(port, "waiting", None)
    held = [-1]                  # the seq of an ACK held back, or -1

    clock = DeviceClock(meter)

    def on_frame(mtype, seq, payload):
        # The loop must outlive a full heap: a request that runs out of memory is answered with the
        # preallocated ERROR link.OUT_OF_HEAP, by the session or, when the heap ran out outside it, here
        # (else the host would only see its retransmissions go unanswered).
        try:
            slot = 0 if mtype == link.EVENTS else (1 if mtype == link.END_SAMPLE else 2)
            a0 = clock.heap_used()
            t0 = ticks_us()
            answered = session.answer(mtype, seq, payload)
            clock.add(slot, ticks_diff(ticks_us(), t0))
            clock.add_alloc(slot, a0)
            if not answered:
                return
            rtype = session.rtype
            if rtype == link.ACK and held[0] < 0 and waiting is not None and waiting():
                held[0] = session.rseq   # at most one held: on a busy slow line every other ACK still goes
                return
            held[0] = -1
            write(encode(rtype, session.rseq, session.rpayload))
        except MemoryError:
            gc.collect()
            try:
                write(encode(link.ERROR, seq, link.OUT_OF_HEAP))
            except MemoryError:
                pass
        finally:
            clock.end_frame()

    fast = sys.modules.get("firmware_py.fast")    # imported with the fast kernels: its byte copy
    copy = fast.best_copy() if fast is not None else None
    deframer = link.Deframer(max_payload, on_frame, break_on_intr=True, copy=copy)
    session.extra_stats = lambda: link_stats(session, deframer, clock)
    buf = bytearray(max_payload + link.OVERHEAD + 2)
    view = memoryview(buf)
    # Everything the loop holds is allocated now: say in INFO what is left, so the host can tell how
    # close to its heap the board runs (`snn-edge flash` prints it).
    facts = heap_facts()
    compact_heap(False)
    hello = handler.hello
    session.describe = lambda: hello() + facts.encode()
    feed = deframer.feed
    want = deframer.want
    readinto = port.readinto
    set_intr = _kbd_intr_setter()
    set_intr(-1)
    try:
        while True:
            if held[0] >= 0 and not waiting():
                write(encode(link.ACK, held[0], b""))
                held[0] = -1
            n = readinto(view, want())
            if not n:
                return session
            t0 = ticks_us()
            feed(buf, 0, n)
            clock.add(3, ticks_diff(ticks_us(), t0))
    finally:
        set_intr(3)


def _kbd_intr_setter():
    try:
        import micropython
        return micropython.kbd_intr
    except (ImportError, AttributeError):
        return lambda c: None


def raw_sink(total, port=None):
    """Read `total` bytes as fast as this port allows and answer b'DONE'; the benchmark's baseline
    for the raw byte rate of the same pty, through the same read path as serve()."""
    port = port or default_port()
    from firmware_py import link
    size = MAX_PAYLOAD_CAP + link.OVERHEAD + 2       # serve()'s read buffer at the largest frames
    buf = bytearray(size)
    view = memoryview(buf)
    got = 0
    while got < total:
        want = total - got
        n = port.readinto(view, want if want < size else size)
        if not n:
            break
        got += n
    port.write(b"DONE")
    return got


def link_sizes(mem_free, handler_cap=None):
    """(max payload, receive window) for a board with `mem_free` bytes of heap left after the
    handler: the deframer, the read buffer and the rare slow-path copy each hold one frame, so a
    frame gets at most 1/16 of the free heap (a power of two, 256 .. MAX_PAYLOAD_CAP bytes), and no
    more than the handler's own `max_payload` (the runtime's handler decodes a batch into lists: its
    memory plan assumes 1 KB batches). A USB CDC port or a pty never drops bytes (the sender
    blocks), so the window is a few frames."""
    cap = MAX_PAYLOAD_CAP if handler_cap is None or handler_cap > MAX_PAYLOAD_CAP else handler_cap
    size = 256
    while size * 2 <= cap and size * 2 * 16 <= mem_free:
        size *= 2
    window = size * FRAMES_IN_WINDOW
    return size, window if window < 0xFFFF else 0xFFFF


def runtime_handler(root="", kernels="fast"):
    """The runtime's handler, its model read first: the weight arrays are the biggest allocations the
    board makes, and while only the store and the blob reader are imported the heap is still one free run
    (measured on the Cortex-M3: after all the imports the largest free block is 70 KB of 115 KB free from
    ROMFS, 10 KB of 133 KB from .mpy files; a 57 KB weight array then no longer loads). When main.py
    reserved the model's big arrays at power-on (firmware_py/prealloc.py) they are taken from there. The
    viper kernels compile before the model, on a heap it has not scattered yet. None when this board has
    only the link's modules (a link-only flash)."""
    try:
        from firmware_py.store import Store, load_stored_model
    except ImportError as exc:
        if "store" not in str(exc):
            raise
        return None
    if kernels == "fast":
        try:
            from firmware_py import fast  # noqa: F401
        except (ImportError, MemoryError):
            pass
    stored = load_stored_model(Store(root))
    from firmware_py import handler
    return handler.make_handler(root, stored, kernels)


def main(handler=None, max_payload=None, window=None, kernels="fast", meter=False):
    """handler: a handler object, a module name (with make_handler()), or None for the default (the
    runtime's, with `kernels` "fast" or "plain": see handler.make_handler). `meter`: count the heap
    bytes the loop allocates (serve)."""
    compact_heap(True)
    if handler is None:
        handler = runtime_handler(kernels=kernels) or make_handler()
    elif isinstance(handler, str):
        handler = make_handler(handler)
    if not (max_payload and window):
        gc.collect()
        free = gc.mem_free() if hasattr(gc, "mem_free") else 1 << 20     # CPython: no heap limit
        size, win = link_sizes(free, getattr(handler, "max_payload", None))
        max_payload = max_payload or size
        window = window or win
    serve(handler, default_port(), max_payload, window, meter)
