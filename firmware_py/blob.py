"""The compact binary model blob: the device's model file (reader here; converters/blob.py writes it).

Layout (little-endian; every count is checked against the bytes that remain):
  header   "SNNB" | u16 format (1) | u16 numerics version | u16 n_layers | u16 in_max | u32 total length
  binning  u8 present | u16 sensor_w | u16 sensor_h | u32 dt_us | u16 n_steps | u16 downsample
           | u16 crop x, y, w, h | u8 mode
  rule     u8 len + name | u32 seed | u8 n_params | n_params x (u8 len + name | i32 value)
  model    u16 compartments K | u32 fire_seed  (probabilistic models; 1 and 0 otherwise)
  layers   n_layers x (u8 kind (0 lif, 1 integrator, 2 prob) | u8 per_input | u32 n_in | u32 n_out
           | i32 a_mem | i32 theta | i32 shift | i32 w_exp | a_syn: n_in x u16 if per_input else i32
           | W: n_in * n_out x i8, row-major | prob only: i32 a_fb | i32 sig_shift | n_out x i32 bias
           | n_out x i32 w_fb)
  tables   u8 n_tables | n x (u8 len + name | u16 count | u8 typecode 'H', 'h' or 'i' | count items)
  crc      u32 CRC-32 (zlib/binascii polynomial) of every byte before it
The reader streams from a file (or bytes), reading each weight block straight into its array('b'),
so loading needs about the model's own size, not the file's size on top.
"""
import struct
from array import array

from firmware_py import fixedpoint as fp
from firmware_py.crc import _c_crc32, crc32
from firmware_py.errors import DeviceError, E_MODEL_FORMAT, E_MODEL_CRC, E_UNSUPPORTED
from firmware_py.runtime import Layer, Model, KIND_NAMES, zeros

MAGIC = b"SNNB"
FORMAT = 1
HEADER = "<4sHHHHI"
HEADER_SIZE = struct.calcsize(HEADER)   # 16
KNOWN_RULES = ("none", "readout_delta", "solsa", "gem")


class BytesSource:
    """A file-like read/readinto over bytes already in RAM (the serial link's load-model payload)."""

    def __init__(self, data):
        self.data = memoryview(data)
        self.pos = 0

    def read(self, n):
        b = bytes(self.data[self.pos:self.pos + n])
        self.pos += len(b)
        return b

    def readinto_typed(self, buf, nbytes, tc):
        """Copy nbytes raw bytes into the array buf (typecode tc); returns the bytes copied."""
        raw = self.data[self.pos:self.pos + nbytes]
        n = len(raw)
        if n == nbytes:
            dst = memoryview(buf)
            try:
                dst.cast("B")[:] = raw             # CPython
            except AttributeError:                 # MicroPython: no cast
                if tc == "b" or tc == "B":
                    dst[:] = raw                   # byte items: copied in place, no temporary
                else:                              # wider items: same-typecode views copy
                    dst[:] = memoryview(array(tc, bytes(raw)))
        self.pos += n
        return n


class _Reader:
    """Reads fields from a source, checking every length and keeping the running CRC."""

    def __init__(self, src, total):
        self.src = src
        self.total = total
        self.pos = 0
        self.crc = 0

    def take(self, n, what):
        if self.pos + n > self.total - 4:
            raise DeviceError(E_MODEL_FORMAT, "model blob truncated: %s needs %d bytes at offset %d, "
                                              "the blob has %d" % (what, n, self.pos, self.total - 4))
        b = self.src.read(n)
        if len(b) != n:
            raise DeviceError(E_MODEL_FORMAT, "model blob truncated at offset %d (%s)" % (self.pos, what))
        self.pos += n
        self.crc = crc32(b, self.crc)
        return b

    def unpack(self, fmt, what):
        return struct.unpack(fmt, self.take(struct.calcsize(fmt), what))

    def name(self, what):
        n = self.unpack("<B", what)[0]
        return self.take(n, what).decode()

    def into(self, buf, nbytes, tc, what):
        """Read nbytes straight into an array buf of typecode tc (no intermediate copy)."""
        if self.pos + nbytes > self.total - 4:
            raise DeviceError(E_MODEL_FORMAT, "model blob truncated: %s needs %d bytes at offset %d, "
                                              "the blob has %d" % (what, nbytes, self.pos, self.total - 4))
        if isinstance(self.src, BytesSource):
            got = self.src.readinto_typed(buf, nbytes, tc)
        else:
            got = self.src.readinto(buf)
        if got != nbytes:
            raise DeviceError(E_MODEL_FORMAT, "model blob truncated at offset %d (%s)" % (self.pos, what))
        self.pos += nbytes
        self.crc = crc32_array(buf, tc, self.crc)


def crc32_array(buf, tc, crc=0):
    """CRC-32 of an array's little-endian bytes ('b', 'H', 'h' or 'i' items)."""
    if _c_crc32 is not None:
        return _c_crc32(buf, crc) & 0xFFFFFFFF
    if tc == "b" or tc == "B":
        return crc32([v & 0xFF for v in buf], crc)
    nb = 4 if tc == "i" else 2
    out = []
    for v in buf:
        for _ in range(nb):
            out.append(v & 0xFF)
            v >>= 8
    return crc32(out, crc)


def read_header(head):
    """(n_layers, in_max, total_length) from the first 16 bytes; raises DeviceError when not a blob."""
    if len(head) < HEADER_SIZE:
        raise DeviceError(E_MODEL_FORMAT, "model blob truncated: %d bytes, the header alone is %d"
                          % (len(head), HEADER_SIZE))
    magic, fmt, nver, n_layers, in_max, total = struct.unpack(HEADER, head[:HEADER_SIZE])
    if magic != MAGIC:
        raise DeviceError(E_MODEL_FORMAT, "not a model blob: magic %r, expected %r" % (magic, MAGIC))
    if fmt != FORMAT:
        raise DeviceError(E_MODEL_FORMAT, "model blob format %d, this runtime reads %d" % (fmt, FORMAT))
    if nver != fp.NUMERICS_VERSION:
        raise DeviceError(E_MODEL_FORMAT, "model numerics version %d, this runtime implements %d"
                          % (nver, fp.NUMERICS_VERSION))
    if n_layers < 1 or in_max not in (1, 255):
        raise DeviceError(E_MODEL_FORMAT, "model blob header: n_layers %d (>= 1), in_max %d (1 or 255)"
                          % (n_layers, in_max))
    return n_layers, in_max, total


def load(src, total, check_fit=None):
    """Read a model from `src` (read/readinto) whose total size is `total` bytes.

    `check_fit(dims, rule, params)` is called with the layer sizes before any weight is allocated
    (memory.py refuses a model that does not fit the heap). Returns a runtime.Model.
    """
    if total < HEADER_SIZE + 4:
        raise DeviceError(E_MODEL_FORMAT, "model blob truncated: %d bytes" % total)
    rd = _Reader(src, total)
    head = rd.take(HEADER_SIZE, "header")
    n_layers, in_max, declared = read_header(head)
    if declared != total:
        raise DeviceError(E_MODEL_FORMAT, "model blob truncated or padded: header says %d bytes, got %d"
                          % (declared, total))
    present = rd.unpack("<B", "binning")[0]
    binning = None
    if present:
        sw, sh, dt, ns, ds, cx, cy, cw, ch, mode = rd.unpack("<HHIHHHHHHB", "binning")
        binning = (sw, sh, dt, ns, ds, (cx, cy, cw, ch), mode)
    rule = rd.name("rule name")
    if rule not in KNOWN_RULES:
        raise DeviceError(E_UNSUPPORTED, "model asks for learning rule %r; this runtime has %s"
                          % (rule, ", ".join(KNOWN_RULES)))
    seed = rd.unpack("<I", "rule seed")[0]
    params = {}
    for _ in range(rd.unpack("<B", "rule params")[0]):
        k = rd.name("rule parameter name")
        params[k] = rd.unpack("<i", "rule parameter " + k)[0]
    compartments, fire_seed = rd.unpack("<HI", "model compartments")
    if compartments < 1:
        raise DeviceError(E_MODEL_FORMAT, "model compartments %d, expected >= 1" % compartments)
    # The heap check runs before each layer's weights are allocated, on the layers seen so far.
    layers = []
    dims = []
    n_prev = None
    for l in range(n_layers):
        kind, per_input, n_in, n_out, a_mem, theta, shift, w_exp = rd.unpack("<BBIIiiii", "layer header")
        where = "model layer %d" % l
        if kind >= len(KIND_NAMES):
            raise DeviceError(E_UNSUPPORTED, "%s: unknown layer kind %d (known: %s)"
                              % (where, kind, ", ".join(KIND_NAMES)))
        if n_prev is not None and n_in != n_prev:
            raise DeviceError(E_MODEL_FORMAT, "%s: n_in %d, expected %d (the previous layer's n_out)"
                              % (where, n_in, n_prev))
        if n_in < 1 or n_out < 1 or n_in * n_out > total:
            raise DeviceError(E_MODEL_FORMAT, "%s: size %d x %d does not fit a %d-byte blob"
                              % (where, n_in, n_out, total))
        if not (0 <= a_mem <= fp.A_MAX and 1 <= theta <= fp.STATE_MAX and 0 <= shift <= 24):
            raise DeviceError(E_MODEL_FORMAT, "%s: a_mem %d (0..4096), theta %d (1..%d), shift %d (0..24)"
                              % (where, a_mem, theta, fp.STATE_MAX, shift))
        if kind == 1 and l != n_layers - 1:
            raise DeviceError(E_MODEL_FORMAT, "%s: only the last layer may be an integrator" % where)
        dims.append((n_in, n_out, per_input))
        if (kind == 2) != (rule == "gem"):
            raise DeviceError(E_UNSUPPORTED, "%s: kind %s with rule %s (GEM needs probabilistic layers and "
                                             "they need GEM)" % (where, KIND_NAMES[kind], rule))
        if check_fit is not None:      # the rule's state belongs to the last layer: counted there
            check_fit(dims, rule if l == n_layers - 1 or rule == "gem" else "none", params, compartments,
                      binning[3] if binning else None)
        if per_input:
            a16 = zeros("H", n_in)
            rd.into(a16, 2 * n_in, "H", where + " a_syn")
            a_syn = zeros("i", n_in)
            for i in range(n_in):
                if a16[i] > fp.A_MAX:
                    raise DeviceError(E_MODEL_FORMAT, "%s: a_syn[%d] = %d, expected 0..4096" % (where, i, a16[i]))
                a_syn[i] = a16[i]
            a16 = None
        else:
            a_syn = rd.unpack("<i", where + " a_syn")[0]
            if not 0 <= a_syn <= fp.A_MAX:
                raise DeviceError(E_MODEL_FORMAT, "%s: a_syn %d, expected 0..4096" % (where, a_syn))
        W = zeros("b", n_in * n_out)
        rd.into(W, n_in * n_out, "b", where + " W")
        L = Layer(W, n_in, n_out, a_syn, a_mem, theta, shift, w_exp, kind)
        if kind == 2:
            L.a_fb, L.sig_shift = rd.unpack("<ii", where + " a_fb, sig_shift")
            if not (0 <= L.a_fb <= fp.A_MAX and 0 <= L.sig_shift <= 30):
                raise DeviceError(E_MODEL_FORMAT, "%s: a_fb %d (0..4096), sig_shift %d (0..30)"
                                  % (where, L.a_fb, L.sig_shift))
            L.bias = zeros("i", n_out)
            rd.into(L.bias, 4 * n_out, "i", where + " bias")
            L.w_fb = zeros("i", n_out)
            rd.into(L.w_fb, 4 * n_out, "i", where + " w_fb")
        layers.append(L)
        n_prev = n_out
    tables = {}
    for _ in range(rd.unpack("<B", "tables")[0]):
        k = rd.name("table name")
        count, tc = rd.unpack("<HB", "table " + k)
        tc = chr(tc)
        if tc not in ("H", "h", "i"):
            raise DeviceError(E_MODEL_FORMAT, "table %s: typecode %r, expected 'H', 'h' or 'i'" % (k, tc))
        t = zeros(tc, count)
        rd.into(t, (4 if tc == "i" else 2) * count, tc, "table " + k)
        tables[k] = t
    if rd.pos != total - 4:
        raise DeviceError(E_MODEL_FORMAT, "model blob: %d unexpected bytes before the CRC" % (total - 4 - rd.pos))
    want = rd.crc
    tail = src.read(4)
    if len(tail) != 4:
        raise DeviceError(E_MODEL_FORMAT, "model blob truncated: the CRC is missing")
    got = struct.unpack("<I", tail)[0]
    if got != want:
        raise DeviceError(E_MODEL_CRC, "model blob CRC 0x%08x, computed 0x%08x: corrupt file or transfer"
                          % (got, want))
    return Model(layers, in_max, binning, rule, seed, params, tables, None, compartments, fire_seed)


def loads(data, check_fit=None):
    """A model from bytes (the whole blob in RAM)."""
    return load(BytesSource(data), len(data), check_fit)


def load_file(path, check_fit=None):
    """A model from a blob file, streamed (the file is never held whole in RAM)."""
    import os
    total = os.stat(path)[6]
    with open(path, "rb") as f:
        return load(f, total, check_fit)


def check_file(path):
    """True when the file is a complete blob with a valid CRC (without building the model)."""
    import os
    try:
        total = os.stat(path)[6]
    except OSError:
        return False
    if total < HEADER_SIZE + 4:
        return False
    with open(path, "rb") as f:
        try:
            read_header(f.read(HEADER_SIZE))
        except DeviceError:
            return False
        f.seek(0)
        return crc_tail_ok(f, total)


def crc_tail_ok(f, total):
    """True when the last 4 bytes of an open file of `total` bytes are the CRC-32 of the ones before,
    read from its current position in small pieces (on a small heap the file may be the biggest thing
    around): model blobs and weights checkpoints end this way."""
    crc = 0
    left = total - 4
    while left > 0:
        b = f.read(512 if left > 512 else left)
        if not b:
            return False
        crc = crc32(b, crc)
        left -= len(b)
    tail = f.read(4)
    return len(tail) == 4 and struct.unpack("<I", tail)[0] == crc
