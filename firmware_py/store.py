"""Persistence on the board's filesystem: the model blob and learned-weight checkpoints.

Every file is replaced atomically: the new content goes to NAME.new (written, closed), then renamed
over NAME. Where rename cannot replace an existing file (FAT), NAME is first renamed to NAME.old, then
NAME.new to NAME, then NAME.old removed. At every point between two filesystem operations at least one
complete, CRC-checked copy exists among NAME, NAME.new and NAME.old, and `read_valid` finds it (NAME
first: an update that was not committed did not happen), so a reset never loses the model.
"""
import gc
import os
import struct

from firmware_py.blob import crc32_array, check_file, crc_tail_ok
from firmware_py.crc import crc32
from firmware_py.errors import DeviceError, E_STORAGE, E_MODEL_FORMAT, E_MODEL_CRC, E_NO_MEMORY

MODEL_FILE = "model.blob"
WEIGHTS_FILE = "weights.ckpt"
CKPT_MAGIC = b"SNNC"
CKPT_FORMAT = 2          # 2: the rule's generator banks follow the layers
CHUNK = 512


def _exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def _remove(path):
    try:
        os.remove(path)
    except OSError:
        pass


def _join(root, name):
    if not root:
        return name
    return root + name if root.endswith("/") else root + "/" + name


class Store:
    """Files under `root`. `hook(op)` is called after every filesystem operation (tests use it to
    kill the process there); `chunk` is the write size (small boards flush per chunk)."""

    def __init__(self, root="", hook=None, chunk=CHUNK):
        self.root = root
        self.hook = hook
        self.chunk = chunk

    def path(self, name):
        return _join(self.root, name)

    def _op(self, what):
        if self.hook is not None:
            self.hook(what)

    def write_atomic(self, name, data):
        """Replace file `name` by `data` (bytes, or a list of buffers written one after the other) so
        that a reset at any point keeps a complete copy."""
        path = self.path(name)
        tmp = path + ".new"
        old = path + ".old"
        try:
            _remove(tmp)
            f = open(tmp, "wb")
            try:
                for seg in (data if isinstance(data, list) else [data]):
                    mv = memoryview(seg)
                    for k in range(0, len(seg), self.chunk):
                        f.write(mv[k:k + self.chunk])
                        if hasattr(f, "flush"):
                            f.flush()
                        self._op("write")
            finally:
                f.close()
            self._op("close")
            try:
                os.rename(tmp, path)          # POSIX, littlefs: replaces atomically
                self._op("rename")
            except OSError:
                if not _exists(path):
                    raise
                _remove(old)
                os.rename(path, old)          # FAT: make room, keeping the old copy as NAME.old
                self._op("rename-old")
                os.rename(tmp, path)
                self._op("rename")
            _remove(old)
            self._op("cleanup")
        except OSError as exc:
            raise DeviceError(E_STORAGE, "writing %s failed: %s" % (path, exc))

    def read_valid(self, name, valid):
        """The path of the first valid copy among NAME, NAME.new, NAME.old (promoting it to NAME),
        or None. `valid(path)` checks a copy completely (CRC)."""
        path = self.path(name)
        for cand in (path, path + ".new", path + ".old"):
            if _exists(cand) and valid(cand):
                if cand != path:
                    try:
                        _remove(path)
                        os.rename(cand, path)
                    except OSError:
                        return cand
                return path
        return None

    # ---- the model ---------------------------------------------------------------------------

    def save_model(self, data):
        self.write_atomic(MODEL_FILE, data)

    def model_path(self):
        """Path of a complete model blob on the filesystem, or None."""
        return self.read_valid(MODEL_FILE, check_file)

    # ---- learned weights ---------------------------------------------------------------------

    def save_weights(self, data):
        self.write_atomic(WEIGHTS_FILE, data)

    def weights_path(self):
        return self.read_valid(WEIGHTS_FILE, check_checkpoint_file)

    def clear_weights(self):
        for suffix in ("", ".new", ".old"):
            _remove(self.path(WEIGHTS_FILE) + suffix)


def persistent_banks(rule):
    """The generator banks of a learning rule that carry over between samples (NUMERICS.md §5): GEM's
    per-layer learning banks, or the last layer's bank of the other rules; none without a rule."""
    if rule is None:
        return []
    banks = getattr(rule, "banks", None)
    return list(banks) if banks is not None else [rule.lanes]


def checkpoint_segments(model, model_crc, banks=()):
    """The checkpoint image as a list of buffers (weights stay in their arrays: nothing big is copied)
    and its total length including the CRC.

    Layout (format 2): "SNNC" | u16 format | u32 model CRC | u16 n_layers | per layer (u32 n_in | u32 n_out |
    u8 per_input | W int8 | a_syn u16 x n_in if per-input | GEM layers: bias, w_fb i32 x n_out) |
    u16 n_banks | per bank (u16 n | u32 x n) | u32 CRC.
    `banks` are the learning rule's generator banks that carry over between samples (persistent_banks):
    with them in the checkpoint, a board that resumes after a reset draws the same stochastic roundings as one
    that never stopped, so the weights it learns are the same bits.
    """
    segs = [CKPT_MAGIC + struct.pack("<HIH", CKPT_FORMAT, model_crc, len(model.layers))]
    for L in model.layers:
        segs.append(struct.pack("<IIB", L.n_in, L.n_out, 1 if L.per_input else 0))
        segs.append(L.W)
        if L.per_input:
            segs.append(struct.pack("<%dH" % L.n_in, *L.a_syn))
        if getattr(L, "bias", None) is not None:
            segs.append(struct.pack("<%di" % L.n_out, *L.bias) + struct.pack("<%di" % L.n_out, *L.w_fb))
    segs.append(struct.pack("<H", len(banks)))
    for bank in banks:
        segs.append(struct.pack("<H%dI" % len(bank), len(bank), *bank))
    crc = 0
    total = 4
    for seg in segs:
        crc = crc32_array(seg, "b", crc) if not isinstance(seg, bytes) else crc32(seg, crc)
        total += len(seg)
    segs.append(struct.pack("<I", crc))
    return segs, total


def read_segments(segs, offset, length):
    """bytes [offset, offset + length) of the concatenated segments."""
    out = bytearray()
    pos = 0
    end = offset + length
    for seg in segs:
        n = len(seg)
        if pos + n > offset and pos < end:
            a = max(offset, pos) - pos
            b = min(end, pos + n) - pos
            out.extend(bytes(memoryview(seg)[a:b]))
        pos += n
        if pos >= end:
            break
    return bytes(out)


def checkpoint_bytes(model, model_crc, banks=()):
    """The checkpoint image in one buffer (layout: checkpoint_segments)."""
    return b"".join(bytes(seg) for seg in checkpoint_segments(model, model_crc, banks)[0])


def apply_checkpoint(model, data, model_crc, banks=None):
    """Copy a checkpoint's weights into model, and its generator banks into `banks` (the rule's lists,
    updated in place) unless banks is None. Everything is checked before anything is changed. The image is
    read through a memoryview: its weights are never copied (a copy is the size of the model)."""
    data = memoryview(data)
    if len(data) < 16 or bytes(data[:4]) != CKPT_MAGIC:
        raise DeviceError(E_MODEL_FORMAT, "not a weights checkpoint (magic %r)" % (bytes(data[:4]),))
    if struct.unpack("<I", data[len(data) - 4:])[0] != crc32(data[:len(data) - 4]):
        raise DeviceError(E_MODEL_CRC, "weights checkpoint: CRC mismatch")
    fmt, mcrc, n = struct.unpack("<HIH", data[4:12])
    if fmt != CKPT_FORMAT or mcrc != model_crc or n != len(model.layers):
        raise DeviceError(E_MODEL_FORMAT, "weights checkpoint is for another model (format %d, model CRC "
                                          "0x%08x, %d layers; expected 0x%08x, %d layers)"
                          % (fmt, mcrc, n, model_crc, len(model.layers)))
    pos = 12
    plan = []
    for L in model.layers:
        n_in, n_out, per_input = struct.unpack("<IIB", data[pos:pos + 9])
        if (n_in, n_out, per_input) != (L.n_in, L.n_out, 1 if L.per_input else 0):
            raise DeviceError(E_MODEL_FORMAT, "weights checkpoint: layer shape mismatch")
        pos += 9
        w = data[pos:pos + n_in * n_out]
        pos += n_in * n_out
        a = None
        if per_input:
            a = struct.unpack("<%dH" % n_in, data[pos:pos + 2 * n_in])
            pos += 2 * n_in
        bf = None
        if getattr(L, "bias", None) is not None:
            bf = struct.unpack("<%di" % (2 * n_out), data[pos:pos + 8 * n_out])
            pos += 8 * n_out
        plan.append((L, w, a, bf))
    (n_banks,) = struct.unpack("<H", data[pos:pos + 2])
    pos += 2
    saved = []
    for _ in range(n_banks):
        (n,) = struct.unpack("<H", data[pos:pos + 2])
        saved.append(struct.unpack("<%dI" % n, data[pos + 2:pos + 2 + 4 * n]))
        pos += 2 + 4 * n
    if banks is not None and [len(b) for b in saved] != [len(b) for b in banks]:
        raise DeviceError(E_MODEL_FORMAT, "weights checkpoint: generator banks %r, the rule has %r"
                          % ([len(b) for b in saved], [len(b) for b in banks]))
    if pos != len(data) - 4:
        raise DeviceError(E_MODEL_FORMAT, "weights checkpoint: %d unexpected bytes" % (len(data) - 4 - pos))
    for L, w, a, bf in plan:
        if bf is not None:
            for j in range(L.n_out):
                L.bias[j] = bf[j]
                L.w_fb[j] = bf[L.n_out + j]
        W = L.W
        for k in range(len(w)):
            v = w[k]
            W[k] = v - 256 if v > 127 else v
        if a is not None:
            for i in range(len(a)):
                L.a_syn[i] = a[i]
    if banks is not None:
        for bank, values in zip(banks, saved):
            for k in range(len(values)):
                bank[k] = values[k]


def check_checkpoint_file(path):
    """A complete checkpoint (magic and CRC), read in small pieces (blob.crc_tail_ok): boot reads it once
    more to apply it."""
    try:
        size = os.stat(path)[6]
        with open(path, "rb") as f:
            if size < 16 or f.read(4) != CKPT_MAGIC:
                return False
            f.seek(0)
            return crc_tail_ok(f, size)
    except OSError:
        return False


# ---- loading the stored model --------------------------------------------------------------

def heap_free():
    """Bytes free on the heap after a collection (-1 on CPython, which has no declared heap)."""
    gc.collect()
    try:
        return gc.mem_free()
    except AttributeError:
        return -1


def available_heap():
    """What a model may take now: the free heap after a collection plus the arrays main.py reserved for it
    (firmware_py/prealloc.py; CPython, which declares no heap: 64 MB, far above any model a board holds,
    so that no size a frame or a file declares makes a CPython board allocate without bound)."""
    from firmware_py.prealloc import reserved_bytes
    free = heap_free()
    return free + reserved_bytes() if free >= 0 else 1 << 26


def model_fit(heap, factorised=None):
    """The blob reader's check_fit: the model's own arrays (memory.py's formula, counted layer by layer
    before each is allocated) must fit `heap` bytes, or the heap free when the reading starts (heap None).
    The host's plan is the real gate (it knows what the code and the link take); this one refuses at once,
    with the numbers, what this heap cannot hold, before anything big is allocated."""
    available = available_heap() if heap is None else heap

    def fit(dims, rule, params, compartments=1, n_steps=None):
        from firmware_py import memory
        memory.check_fit(dims, rule, params, available, factorised=factorised, compartments=compartments,
                         n_steps=n_steps)
    return fit


def load_stored_model(store, heap=None, factorised=None):
    """(model, crc, None) for the store's model file, (None, None, None) without one, or (None, None,
    DeviceError) when it does not load. The board calls this before it imports the rest of the firmware
    (board_main.main): the weight arrays then go into a heap that is still one free run."""
    path = store.model_path()
    if path is None:
        return None, None, None
    try:
        with open(path, "rb") as f:
            f.seek(-4, 2)
            crc = struct.unpack("<I", f.read(4))[0]
        from firmware_py.blob import load_file
        return load_file(path, model_fit(heap, factorised)), crc, None
    except DeviceError as exc:
        return None, None, exc
    except MemoryError:
        return None, None, DeviceError(E_NO_MEMORY, "out of heap loading %s (%d bytes free after a collection): "
                                                    "the model does not fit this board's heap"
                                       % (path, heap_free()))
