"""The link's handler on top of Device (board_main.make_handler() imports make_handler from here).

Maps the serial protocol's requests (firmware_py/link.py DeviceSession) onto Device calls: model and
weights arrive in chunks, events in batches (a sample starts with its first batch), end-of-sample label
-1 means none. Weights travel as a store.checkpoint_bytes image (all layers, CRC-checked). Errors are
DeviceError (code + msg), which the session turns into ERROR frames; the loop keeps running.
"""
from array import array

from firmware_py.device import Device, VERSION
from firmware_py.errors import DeviceError, E_BAD_ARGUMENT, E_NO_MEMORY
from firmware_py.link import EVENT_LEN, EVENT_MAX_DT
from firmware_py.store import (Store, apply_checkpoint, available_heap, checkpoint_segments, persistent_banks,
                               read_segments)

# The viper decoder adds t_base to each event's offset in a machine word: below this t_base every sum is a
# small int on a 32-bit port (a recording's t_base is its time since start, far below; later ones decode
# in Python, same bits).
_FAST_T_BASE = (1 << 30) - 1 - EVENT_MAX_DT


class DeviceHandler:
    # The largest EVENTS batch the board accepts (board_main.link_sizes): events() decodes a batch into
    # four preallocated arrays (9 bytes per event), so 1 KB frames (169 events) keep that inside the plan.
    max_payload = 1024

    def __init__(self, device, boot_error=None, decode=None):
        self.dev = device
        self.decode = decode              # fast.decode_viper, or None: EventBatch.decode_into
        self.boot_error = boot_error      # why the stored model did not load at boot (None: it did, or none)
        self.model_buf = None
        self.weights_buf = None
        self.segs = None
        n = self.max_payload // EVENT_LEN
        self.xs = array("h", bytes(2 * n))
        self.ys = array("h", bytes(2 * n))
        self.ts = array("i", bytes(4 * n))
        self.ps = array("b", bytes(n))

    def hello(self):
        """INFO's description: the runtime, then the model it runs (sizes, rule, CRC) or why it has none,
        so the host can confirm that the board boots the model it flashed (`snn-edge flash`)."""
        out = "snn-edge-runtime %s" % VERSION
        if self.dev.net is not None:
            i = self.dev.info()
            out += " model=%s rule=%s crc=%08x" % ("-".join([str(n) for n in i["sizes"]]), i["rule"], i["crc"])
            if i["factorised"] is not None:
                out += " traces=%s" % ("factorised" if i["factorised"] else "full")
        elif self.boot_error is not None:
            out += " error=" + self.boot_error
        return out.encode()

    def _chunk(self, buf, offset, total, chunk, what):
        if offset == 0:
            # the declared total is the host's word: bounded by what this heap can hold before it is allocated
            room = available_heap()
            if total > room:
                raise DeviceError(E_NO_MEMORY, "%s of %d bytes: this board has room for %d" % (what, total, room))
            buf = bytearray(total)
        elif buf is None:
            raise DeviceError(E_BAD_ARGUMENT, "%s chunk at %d without the chunk at 0" % (what, offset))
        if len(buf) != total or offset + len(chunk) > total:
            raise DeviceError(E_BAD_ARGUMENT, "%s chunk at %d (+%d) of %d, expected a total of %d"
                              % (what, offset, len(chunk), total, len(buf)))
        buf[offset:offset + len(chunk)] = chunk
        return buf

    def load_model(self, offset, total, chunk):
        self.model_buf = self._chunk(self.model_buf, offset, total, chunk, "model")
        if offset + len(chunk) == total:
            buf = self.model_buf
            self.model_buf = None
            self.dev.load_model(buf)

    def events(self, batch):
        dev = self.dev
        if not dev.in_sample:
            dev.begin_sample()
        if batch.count > len(self.xs):
            raise DeviceError(E_BAD_ARGUMENT, "events: %d in one batch, at most %d" % (batch.count, len(self.xs)))
        n = batch.count
        if self.decode is not None and batch.t_base <= _FAST_T_BASE:
            self.decode(batch.data, n, batch.t_base, self.xs, self.ys, self.ts, self.ps)
        else:
            batch.decode_into(self.xs, self.ys, self.ts, self.ps)
        dev.add_events(self.xs, self.ys, self.ts, self.ps, n)

    def end_of_sample(self, label):
        dev = self.dev
        if not dev.in_sample:
            dev.begin_sample()            # a sample with no events is still a sample
        cls, measure, conf = dev.end_sample(None if label < 0 else label)
        return cls, conf, measure

    def get_stats(self):
        s = self.dev.stats()
        items = []
        for k in ("samples", "labelled", "correct", "self_trained", "events", "bad_events", "dropped_samples",
                  "nsat", "updates",
                  "heap_free", "align_x", "align_y", "align_dt", "calibrating", "noise_filter"):
            if k in s:
                items.append((k, s[k]))
        g = s.get("guard")
        if g is not None:
            items.append(("guard_phase", ("warmup", "learn", "frozen").index(g["phase"])))
            items.append(("guard_rollbacks", g["rollbacks"]))
            items.append(("guard_conf16", g["conf16"]))
        mem = s.get("memory")
        if mem:
            for k in ("weights", "state", "traces", "buffers", "guard", "total"):
                items.append(("mem_" + k, mem[k]))
        return items

    def get_weights(self, offset, length):
        """A slice of the checkpoint image, read from the weight arrays in place (no full copy)."""
        self.dev._need_model()
        if offset == 0 or self.segs is None:
            self.segs = checkpoint_segments(self.dev.net.model, self.dev.model_crc, persistent_banks(self.dev.rule))
        segs, total = self.segs
        return read_segments(segs, offset, length), total

    def put_weights(self, offset, total, chunk):
        self.weights_buf = self._chunk(self.weights_buf, offset, total, chunk, "weights")
        if offset + len(chunk) == total:
            buf = self.weights_buf
            self.weights_buf = None
            self.dev._need_model()
            apply_checkpoint(self.dev.net.model, buf, self.dev.model_crc, persistent_banks(self.dev.rule))

    def checkpoint(self):
        self.dev.checkpoint()

    def reset(self):
        if self.dev.net is not None:
            self.dev.reset()

    def calibrate(self, samples, ref_x, ref_y, ref_dur, ref_pairs):
        self.dev.calibrate(samples, ref_x, ref_y, ref_dur, ref_pairs)

    def self_train(self, gate, guard_on, *params):
        from firmware_py.guard import KEYS
        guard = None
        if guard_on:
            guard = {}
            for k in range(len(KEYS)):
                guard[KEYS[k]] = params[k]
        self.dev.set_self_training(None if gate < 0 else gate, guard)


def make_handler(root="", stored=None, kernels="fast"):
    """The runtime's handler on a Device with the store under `root`; `stored`: the model the board read
    before importing this (device.load_stored_model), else it is read now. `kernels`: "fast" runs the
    network and SOLSA's full traces with firmware_py/fast.py's kernels where the port has them (viper on a
    board, numpy on CPython; the same bits), "plain" with the pure-Python loops."""
    rows = None
    decode = None
    if kernels == "fast":
        try:
            from firmware_py import fast     # compiles its viper kernels (board_main imports it before the model)
            rows = fast.best_rows()
            decode = fast.best_decode()
        except MemoryError:
            rows = None                      # no heap left to compile them: the plain kernels, same bits
    dev = Device(store=Store(root), rows=rows)
    # the handler's buffers before the model's state: once a big model is in, the heap is scattered into
    # gaps smaller than they are (measured: 578-160-10 on the 192K Cortex-M3 left no 640-byte block)
    handler = DeviceHandler(dev, decode=decode)
    try:
        dev.boot(stored)
    except DeviceError as exc:
        # a stored model that does not load (too big for this heap, a format this runtime cannot read):
        # start without one, say why in INFO, and let the host send another
        handler.boot_error = "%d %s" % (exc.code, exc.msg)
    return handler
