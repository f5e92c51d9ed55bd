"""The micro:bit's main loop and request handler (the micro profile; main.py calls main()).

The requests of docs/PROTOCOL.md that the micro profile answers: EVENTS (binned into a bitmap with the
semantics of firmware_py/binning.py, the batch checked whole first), END_SAMPLE -> RESULT (micro_net runs
it), GET_STATS, GET_WEIGHTS (the checkpoint image of firmware_py/store.checkpoint_segments, format 2, so
`snn-edge pull` reads it unchanged; its constant sections and their CRC come from micro_model.py),
CHECKPOINT (the learned layer and bank to ckpt.bin, restored at boot), RESET. LOAD_MODEL and PUT_WEIGHTS
are refused (E_UNSUPPORTED): the model is flashed, and a whole weight image does not fit the heap.
Error codes are firmware_py/errors.py's (the tests check them). Why not device.py/handler.py: micro_net.py.
"""
import gc
import struct

try:
    from firmware_py import micro_link as ml
    from firmware_py.micro_net import Net
except ImportError:     # the micro:bit's flat filesystem
    import micro_link as ml  # type: ignore[import-not-found, no-redef]
    from micro_net import Net  # type: ignore[import-not-found, no-redef]

CKPT = "ckpt.bin"


class Handler:
    def __init__(self, spec, path="model.blob"):
        self.net = None
        self.link = None
        self.samples = self.labelled = self.correct = self.events = 0
        self.open = False
        if spec is None:
            return
        try:
            self.net = Net(spec, path)
        except OSError:
            return
        self.spec = spec
        self.nb = (spec.LAYERS[0][0] + 7) >> 3
        self.bitmap = bytearray(spec.BIN[3] * self.nb)
        self.restore()

    def hello(self):
        return b"snn-edge-micro 1"

    def handle(self, mtype, p):
        if mtype == 5:                                  # GET_STATS
            gc.collect()
            out = b""
            for k, v in self.stats() + self.link.stats() + (("mem_free", gc.mem_free() if hasattr(gc, "mem_free") else -1),):
                out += bytes((len(k),)) + k.encode() + struct.pack("<i", v)
            return 0x83, out
        if mtype == 2 or mtype == 7:                    # LOAD_MODEL, PUT_WEIGHTS
            raise ml.Err(3, "micro profile: no load_model/put_weights (use snn-edge flash)")
        if mtype < 2 or mtype > 9:
            return ml.ERROR, bytes((202,)) + ("unknown request type %d" % mtype).encode()
        net = self.net
        if net is None:
            raise ml.Err(7, "no model: snn-edge flash --profile microbit MODEL")
        if mtype == 3:                                  # EVENTS
            self.add_events(p)
        elif mtype == 4:                                # END_SAMPLE -> RESULT
            return 0x82, self.end_sample(struct.unpack_from("<h", p, 0)[0] if len(p) >= 2 else -1)
        elif mtype == 6:                                # GET_WEIGHTS -> WEIGHTS
            off, n = struct.unpack_from("<II", p, 0)
            data, total = self.weights(off, min(n, ml.MAX_PAYLOAD - 4))
            return 0x84, struct.pack("<I", total) + data
        elif mtype == 8:                                # CHECKPOINT
            with open(CKPT, "wb") as f:
                f.write(self.learned(0))
        else:                                           # RESET
            net.reset()
            self.samples = self.labelled = self.correct = self.events = 0
            self.open = False
        return ml.ACK, b""

    def stats(self):
        n = self.net
        return (("samples", self.samples), ("labelled", self.labelled), ("correct", self.correct),
                ("events", self.events)) + ((("nsat", n.nsat), ("updates", n.updates), ("synops", n.synops),
                                             ("compute_ms", n.ms)) if n else ())

    def add_events(self, p):
        """One EVENTS payload (protocol 2: base-128 digits + 4, see link.pack_events), checked whole
        (E_BAD_EVENT), then binned: crop, downsample, time step (binning.event_slot)."""
        w, h, dt, steps, ds, cx, cy, cw, ch = self.spec.BIN
        t0 = p[0] + (p[1] << 7) + (p[2] << 14) + (p[3] << 21) + (p[4] << 28) - 4 * 0x10204081
        n = p[5] + (p[6] << 7) - 516
        if len(p) != 7 + 6 * n:
            raise ValueError("events payload of %d bytes for %d events" % (len(p), n))
        ev = []
        for k in range(7, len(p), 6):
            lo = p[k] + (p[k + 1] << 7) + (p[k + 2] << 14) - 66052
            hi = p[k + 3] + (p[k + 4] << 7) + (p[k + 5] << 14) - 66052
            if lo & 0x7FF >= w or hi & 0x7FF >= h:
                raise ml.Err(5, "event %d outside the %dx%d sensor" % (len(ev), w, h))
            ev.append((lo, hi))
        if not self.open:
            self.clear()
        self.open = True
        for lo, hi in ev:
            x = (lo & 0x7FF) - cx
            y = (hi & 0x7FF) - cy
            t = (t0 + (lo >> 11) + (hi >> 12 << 10)) // dt
            if 0 <= x < cw and 0 <= y < ch and t < steps and x // ds < cw // ds and y // ds < ch // ds:
                i = ((hi >> 11 & 1) * (ch // ds) + y // ds) * (cw // ds) + x // ds
                self.bitmap[t * self.nb + (i >> 3)] |= 1 << (i & 7)
        self.events += n

    def clear(self):
        bm = self.bitmap
        for k in range(len(bm)):
            bm[k] = 0

    def end_sample(self, label):
        """RESULT payload: class (ties to the lowest), confidence (runtime.confidence), spike counts."""
        if not self.open:
            self.clear()
        self.open = False
        c = self.spec.LAYERS[-1][1]
        if label >= c:
            raise ml.Err(6, "label %d outside the %d classes (sample dropped)" % (label, c))
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

    def learned(self, image):
        """The learned layer's W, the bank section and the bank: the end of the checkpoint image
        (image=1, its CRC continuing micro_model.CRC_HEAD), or ckpt.bin (image=0: the model's CRC
        first); each followed by its CRC-32."""
        net = self.net
        b = bytes(net.layers[-1].W) + self.spec.BANKS
        for k in range(len(net.hi)):
            b += struct.pack("<HH", net.lo[k], net.hi[k])
        if not image:
            b = struct.pack("<I", self.spec.CRC_MODEL) + b
        return b + ml.crc_bytes(*ml.crc32(b, len(b), *(self.spec.CRC_HEAD if image else (0xFFFF, 0xFFFF))))

    def weights(self, offset, length):
        """(bytes [offset, offset + length) of the checkpoint image, its total length): the constant
        sections of micro_model.IMAGE (bytes, or (offset, length) of frozen weights in the blob), then
        the learned layer, its bank and the CRC."""
        out = b""
        pos = 0
        end = offset + length
        for part in self.spec.IMAGE + (self.learned(1),):
            n = part[1] if type(part) is tuple else len(part)
            a = max(offset - pos, 0)
            b = min(end - pos, n)
            if a < b:
                if type(part) is tuple:
                    f = self.net.open_at(part[0] + a)
                    out += f.read(b - a)
                    f.close()
                else:
                    out += part[a:b]
            pos += n
        return out, pos

    def restore(self):
        """Boot: the learned layer and bank of a complete ckpt.bin written for this model."""
        try:
            with open(CKPT, "rb") as f:
                d = f.read()
        except OSError:
            return
        net = self.net
        W = net.layers[-1].W
        if len(d) != len(self.learned(0)) or d[:4] != struct.pack("<I", self.spec.CRC_MODEL) or \
                d[-4:] != ml.crc_bytes(*ml.crc32(d, len(d) - 4)):
            return
        for j in range(len(W)):
            W[j] = d[4 + j] - 256 if d[4 + j] > 127 else d[4 + j]
        for k in range(len(net.hi)):
            net.lo[k], net.hi[k] = struct.unpack_from("<HH", d, 4 + len(W) + len(self.spec.BANKS) + 4 * k)


def serve(handler, read, write, boot_id):
    """Feed every received byte to the link until the host's break (two 0x03 in a row)."""
    link = ml.Link(handler.handle, handler.hello, write, boot_id)
    handler.link = link
    try:
        while True:
            data = read()
            if data:
                for b in data:
                    link.feed(b)
    except KeyboardInterrupt:
        return link


def main():
    """main.py on the micro:bit: load the model, then serve the UART with Ctrl-C as data."""
    import micropython
    import utime
    from microbit import uart  # type: ignore[import-not-found]
    try:
        import micro_model as spec  # type: ignore[import-not-found]
    except ImportError:
        spec = None
    h = Handler(spec)
    gc.collect()
    micropython.kbd_intr(-1)
    try:
        serve(h, uart.read, uart.write, utime.ticks_us() & 0x3FFFFFFF)
    finally:
        micropython.kbd_intr(3)
