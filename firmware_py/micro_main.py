"""The micro:bit's request handler and main loop (the micro profile; main.py calls main()).

The requests of docs/PROTOCOL.md that the micro profile answers: EVENTS (binned into a bitmap with the
semantics of firmware_py/binning.py, the batch checked whole first), END_SAMPLE -> RESULT (micro_net runs
it), GET_STATS, GET_WEIGHTS (the checkpoint image of firmware_py/store.checkpoint_segments, format 2, so
`snn-edge pull` reads it unchanged; its constant sections and their CRC come from micro_model.py),
RESET. LOAD_MODEL, PUT_WEIGHTS and CHECKPOINT are refused (E_UNSUPPORTED): the model is flashed, a whole
weight image does not fit the heap, and the code that would persist and restore the learned layer does not
fit either (measured: docs/MICROBIT.md); learning lives in RAM, a reset starts from the flashed weights.
(host_tools/stream.Streamer still sends CHECKPOINT: it would need a no-checkpoint mode for this profile.)
Error codes are firmware_py/errors.py's (the tests check them). Why not device.py/handler.py: micro_net.py.
"""
import gc
import struct

try:
    from firmware_py import micro_frame as mf
    from firmware_py import micro_link as ml
    from firmware_py.micro_net import Net, open_at
except ImportError:     # the micro:bit's flat filesystem
    import micro_frame as mf  # type: ignore[import-not-found, no-redef]
    import micro_link as ml  # type: ignore[import-not-found, no-redef]
    from micro_net import Net, open_at  # type: ignore[import-not-found, no-redef]

DESCRIPTION = b"snn-edge-micro 2"


class Handler:
    def __init__(self, spec, path="model.blob"):
        self.spec = spec
        self.link = None
        self.samples = self.labelled = self.correct = self.events = 0
        self.open = False
        self.net = Net(spec, path)
        self.bitmap = bytearray(spec.BIN[3] * ((spec.LAYERS[0][0] + 7) >> 3))

    def handle(self, mtype, p):
        if mtype == 5:                                  # GET_STATS
            gc.collect()
            out = b""
            n = self.net
            for k, v in (("samples", self.samples), ("labelled", self.labelled), ("correct", self.correct),
                         ("events", self.events), ("nsat", n.nsat), ("updates", n.updates),
                         ("synops", n.synops), ("compute_ms", n.ms), ("link_crc_errors", self.link.crc_errors),
                         ("heap_free", gc.mem_free() if hasattr(gc, "mem_free") else -1)):
                out += bytes((len(k),)) + k.encode() + struct.pack("<i", v)
            return 0x83, out
        if mtype == 2 or mtype == 7 or mtype == 8:      # LOAD_MODEL, PUT_WEIGHTS, CHECKPOINT
            raise ml.Err(3, "not on the micro:bit")
        if mtype < 2 or mtype > 9:
            raise ml.Err(ml.E_UNKNOWN_TYPE, "unknown request type")
        if mtype == 3:                                  # EVENTS
            self.add_events(p)
        elif mtype == 4:                                # END_SAMPLE -> RESULT
            return 0x82, self.end_sample(struct.unpack("<h", (p + b"\xff\xff")[:2])[0])
        elif mtype == 6:                                # GET_WEIGHTS -> WEIGHTS
            off, n = struct.unpack("<II", p)
            return 0x84, self.weights(off, min(n, ml.MAX_PAYLOAD - 4))
        else:                                           # RESET
            self.net.reset()
            self.samples = self.labelled = self.correct = self.events = 0
            self.open = False
        return ml.ACK, b""

    def add_events(self, p):
        """One EVENTS payload (protocol 2: base-128 digits + 4, see link.pack_events), checked whole
        (E_BAD_EVENT), then binned: crop, downsample, time step (binning.event_slot)."""
        w, h, dt, steps, ds, cx, cy, cw, ch = self.spec.BIN
        t0 = p[0] + (p[1] << 7) + (p[2] << 14) + (p[3] << 21) + (p[4] << 28) - 4 * 0x10204081
        n = p[5] + (p[6] << 7) - 516
        if len(p) != 7 + 6 * n:
            raise ValueError("events payload length")
        for k in range(7, len(p), 6):
            if p[k] + (p[k + 1] << 7) - 516 & 0x7FF >= w or p[k + 3] + (p[k + 4] << 7) - 516 & 0x7FF >= h:
                raise ml.Err(5, "event outside the sensor")
        if not self.open:
            self.bitmap = bytearray(len(self.bitmap))
        self.open = True
        for k in range(7, len(p), 6):
            lo = p[k] + (p[k + 1] << 7) + (p[k + 2] << 14) - 66052
            hi = p[k + 3] + (p[k + 4] << 7) + (p[k + 5] << 14) - 66052
            x = (lo & 0x7FF) - cx
            y = (hi & 0x7FF) - cy
            t = (t0 + (lo >> 11) + (hi >> 12 << 10)) // dt
            if 0 <= x < cw and 0 <= y < ch and t < steps and x // ds < cw // ds and y // ds < ch // ds:
                i = ((hi >> 11 & 1) * (ch // ds) + y // ds) * (cw // ds) + x // ds
                self.bitmap[t * (len(self.bitmap) // steps) + (i >> 3)] |= 1 << (i & 7)
        self.events += n

    def end_sample(self, label):
        """RESULT payload: class (ties to the lowest), confidence (runtime.confidence), spike counts."""
        if not self.open:
            self.bitmap = bytearray(len(self.bitmap))
        self.open = False
        c = self.spec.LAYERS[-1][1]
        if label >= c:
            raise ml.Err(6, "label outside the classes")
        counts = self.net.run(self.bitmap, label if self.spec.P else -1)
        best = counts.index(max(counts))
        self.samples += 1
        if label >= 0:
            self.labelled += 1
            self.correct += best == label
        s = sorted(counts)
        out = struct.pack("<hBB", best, 255 if c < 2 else 0 if s[-1] <= s[0] else
                          min(255, (s[-1] - s[-2]) * 255 // (s[-1] - s[0])), c)
        for v in counts:
            out += struct.pack("<H", min(v, 0xFFFF))
        return out

    def learned(self):
        """The end of the checkpoint image: the learned layer's W, the bank section and the bank, then
        the image's CRC-32 (continuing micro_model.CRC_HEAD, the CRC of the constant sections)."""
        net = self.net
        b = bytes(net.W) + self.spec.BANKS
        for k in range(len(net.hi)):
            b += struct.pack("<HH", net.lo[k], net.hi[k])
        return b + ml.crc_bytes(ml.crc32(b, *self.spec.CRC_HEAD))

    def weights(self, offset, length):
        """WEIGHTS payload: the checkpoint image's total length, then its bytes [offset, offset + length):
        the constant sections of micro_model.IMAGE (bytes, or (offset, length) of frozen weights in the
        blob), then the learned layer, its bank and the CRC."""
        out = b""
        pos = 0
        for part in self.spec.IMAGE + (self.learned(),):
            n = part[1] if type(part) is tuple else len(part)
            a = max(offset - pos, 0)
            b = min(offset + length - pos, n)
            if a < b:
                if type(part) is tuple:
                    f = open_at(self.net.path, part[0] + a)
                    out += f.read(b - a)
                    f.close()
                else:
                    out += part[a:b]
            pos += n
        return struct.pack("<I", pos) + out


def main(spec):
    """main.py on the micro:bit: serve the UART with Ctrl-C as data until the host's break
    (two 0x03 in a row: micro_link raises KeyboardInterrupt)."""
    import micropython
    import utime
    from microbit import uart  # type: ignore[import-not-found]
    h = Handler(spec)
    h.link = mf.Link(h.handle, DESCRIPTION, uart.write, utime.ticks_us() & 0x3FFFFFFF)
    gc.collect()
    micropython.kbd_intr(-1)
    try:
        while True:
            d = uart.read()
            if d:
                h.link.feed(d)
    except KeyboardInterrupt:
        pass
    finally:
        micropython.kbd_intr(3)
