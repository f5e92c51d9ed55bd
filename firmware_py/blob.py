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
from firmware_py.runtime import Layer, Model, KIND_NAMES, KIND_LIF, KIND_PROB, zeros

MAGIC = b"SNNB"
FORMAT = 1
HEADER = "<4sHHHHI"
HEADER_SIZE = struct.calcsize(HEADER)   # 16
KNOWN_RULES = ("none", "readout_delta", "solsa", "gem")
MAX_STEPS = 1024        # time steps of a sample: more is minutes per sample on a board, not a model we make


def rule_params(rule):
    """{name: (lo, hi)} of a learning rule's integer hyper-parameters (NUMERICS.md §7, §9, §10), {} for
    "none", None for a rule this runtime lacks. The one table: the device's readers check a model with it
    at load, the host's converters.intmodel.validate before writing one. Built when asked, so a board
    keeps no copy of it in its heap."""
    m, s, q = (0, 255), (0, 30), (0, 1 << 15)
    return {"none": {},
            "readout_delta": {"k_update": (1, 1 << 16), "lr_m": m, "lr_s": s, "tgt_hi": q, "tgt_lo": q,
                              "v_shift": s},
            "solsa": {"k_update": (1, 1 << 16), "lr_m": m, "lr_s": s, "lra_m": m, "lra_s": s, "sg_shift": s,
                      "factorised": (0, 1), "reset_path": (0, 1), "learn_all": (0, 1), "lrh_m": m, "lrh_s": s},
            "gem": {"k_update": (1, 1 << 16), "lr_m": m, "lr_s": s, "lrb_m": m, "lrb_s": s,
                    "ll_decay": (0, fp.A_MAX)}}.get(rule)


# SOLSA learning every layer (NUMERICS.md §10.8) sums at most this many steps into a hidden layer's G, so
# G needs no saturation and a board can keep the window's traces instead of G.
HIDDEN_K_MAX = 16


def rule_conflict(rule, params):
    """What is wrong with a rule's parameters taken together (None: nothing); the ranges are rule_params'."""
    if rule == "solsa" and params.get("learn_all") and params.get("k_update", 0) > HIDDEN_K_MAX:
        return "solsa.k_update %d with learn_all, expected 1..%d (NUMERICS.md §10.8)" % (params["k_update"],
                                                                                       HIDDEN_K_MAX)
    return None


def _range(what, v, lo, hi):
    if not isinstance(v, int) or not lo <= v <= hi:
        raise DeviceError(E_MODEL_FORMAT, "%s %s, expected %d..%d" % (what, v if isinstance(v, int) else "?", lo, hi))


def check_model(m):
    """Refuse at load, with the host's limits (converters.intmodel.validate), what the runtime would fail on
    (or run wrongly) at the first sample; both device readers end with it. Table-driven: few bytes of code."""
    want = rule_params(m.rule)
    n = len(m.layers)
    prob = m.layers[0].kind == KIND_PROB
    if want is None or (m.rule == "gem") != prob or (m.rule == "solsa" and m.layers[-1].kind != KIND_LIF):
        raise DeviceError(E_UNSUPPORTED, "rule %r with these layers (GEM: prob layers; SOLSA: a lif last layer)"
                          % (m.rule,))
    if want and sorted(m.params) != sorted(want):
        raise DeviceError(E_MODEL_FORMAT, "rule %s parameters %r, expected %r" % (m.rule, sorted(m.params),
                                                                                    sorted(want)))
    for k in want:
        _range(m.rule + "." + k, m.params[k], want[k][0], want[k][1])
    conflict = rule_conflict(m.rule, m.params)
    if conflict:
        raise DeviceError(E_MODEL_FORMAT, conflict)
    _range("compartments", m.compartments, 1, 1024)
    _range("binning n_steps", m.binning[3] if m.binning else 1, 1, MAX_STEPS)
    for l in range(n):
        L = m.layers[l]
        w = "layer %d " % l
        lo = hi = L.a_syn                 # per-input decays: their range (a prob layer has one: an int)
        if L.per_input and not prob:
            lo, hi = (min(lo), max(lo)) if len(lo) else (-1, -1)
        for k, v, a, b in (("kind", L.kind, 2 if prob else 0, 2 if prob else (1 if l == n - 1 else 0)),
                           ("n_in", L.n_in, m.layers[l - 1].n_out if l else 1, m.layers[l - 1].n_out if l else 0xFFFF),
                           ("n_out", L.n_out, 1, 0xFFFF), ("a_mem", L.a_mem, 0, fp.A_MAX),
                           ("theta", L.theta, 1, fp.STATE_MAX), ("shift", L.shift, 0, 24), ("w_exp", L.w_exp, -64, 64),
                           ("a_syn", lo, 0, fp.A_MAX), ("a_syn", hi, 0, fp.A_MAX)):
            _range(w + k, v, a, b)
        if prob:
            _range(w + "a_fb", L.a_fb, 0, fp.A_MAX)
            _range(w + "sig_shift", L.sig_shift, 0, 30)
            for a in (L.bias, L.w_fb):
                _range(w + "bias/w_fb length", len(a), L.n_out, L.n_out)
                _range(w + "bias/w_fb", min(a), -fp.STATE_MAX, fp.STATE_MAX)
                _range(w + "bias/w_fb", max(a), -fp.STATE_MAX, fp.STATE_MAX)


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
        b = self.take(self.unpack("<B", what)[0], what)
        try:
            return b.decode()
        except UnicodeError:
            raise DeviceError(E_MODEL_FORMAT, "%s %r: not UTF-8" % (what, b))

    def array(self, tc, n, what):
        """A new array of n items of typecode tc read straight from the blob (no intermediate copy), its
        size checked against the bytes the blob has left before anything is allocated."""
        nbytes = n * (4 if tc == "i" else (1 if tc == "b" else 2))
        if self.pos + nbytes > self.total - 4:
            raise DeviceError(E_MODEL_FORMAT, "model blob truncated: %s needs %d bytes at offset %d, "
                                              "the blob has %d" % (what, nbytes, self.pos, self.total - 4))
        buf = zeros(tc, n)
        if isinstance(self.src, BytesSource):
            got = self.src.readinto_typed(buf, nbytes, tc)
        else:
            got = self.src.readinto(buf)
        if got != nbytes:
            raise DeviceError(E_MODEL_FORMAT, "model blob truncated at offset %d (%s)" % (self.pos, what))
        self.pos += nbytes
        self.crc = crc32_array(buf, tc, self.crc)
        return buf


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
    if rule not in KNOWN_RULES:      # (check_model says it again; the heap check below needs a known rule)
        raise DeviceError(E_UNSUPPORTED, "model asks for learning rule %r; this runtime has %s"
                          % (rule, ", ".join(KNOWN_RULES)))
    seed = rd.unpack("<I", "rule seed")[0]
    params = {}
    for _ in range(rd.unpack("<B", "rule params")[0]):
        k = rd.name("rule parameter name")
        params[k] = rd.unpack("<i", "rule parameter " + k)[0]
    compartments, fire_seed = rd.unpack("<HI", "model compartments")
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
        dims.append((n_in, n_out, per_input))
        if (kind == 2) != (rule == "gem"):
            raise DeviceError(E_UNSUPPORTED, "%s: kind %s with rule %s (GEM needs probabilistic layers and "
                                             "they need GEM)" % (where, KIND_NAMES[kind], rule))
        if check_fit is not None:      # the rule's state belongs to the last layer: counted there
            check_fit(dims, rule if l == n_layers - 1 or rule == "gem" else "none", params, compartments,
                      binning[3] if binning else None)
        if per_input:
            a16 = rd.array("H", n_in, where + " a_syn")
            a_syn = zeros("i", n_in)
            for i in range(n_in):
                a_syn[i] = a16[i]
            a16 = None
        else:
            a_syn = rd.unpack("<i", where + " a_syn")[0]
        L = Layer(rd.array("b", n_in * n_out, where + " W"), n_in, n_out, a_syn, a_mem, theta, shift, w_exp, kind)
        if kind == 2:
            L.a_fb, L.sig_shift = rd.unpack("<ii", where + " a_fb, sig_shift")
            L.bias = rd.array("i", n_out, where + " bias")
            L.w_fb = rd.array("i", n_out, where + " w_fb")
        layers.append(L)
        n_prev = n_out
    tables = {}
    for _ in range(rd.unpack("<B", "tables")[0]):
        k = rd.name("table name")
        count, tc = rd.unpack("<HB", "table " + k)
        tc = chr(tc)
        if tc not in ("H", "h", "i"):
            raise DeviceError(E_MODEL_FORMAT, "table %s: typecode %r, expected 'H', 'h' or 'i'" % (k, tc))
        tables[k] = rd.array(tc, count, "table " + k)
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
    m = Model(layers, in_max, binning, rule, seed, params, tables, None, compartments, fire_seed)
    check_model(m)
    return m


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
