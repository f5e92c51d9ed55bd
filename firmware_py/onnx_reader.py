"""Read the exported .onnx file on the device: a small protobuf wire-format reader (no onnx package).

It reads what the board needs and nothing else (docs/NUMERICS.md §12): the `snn_edge.*` metadata, the
typed initialisers (L{l}_W int8, L{l}_a_syn/a_mem/theta/shift int32, GEM's bias/w_fb/a_fb/sig_shift and
tables, learn_* int64), and the names of the model-local functions. The board recognises our layer and
learning-rule functions by name and runs its own kernels; a function of another name or domain is refused
(E_UNSUPPORTED), because the board could not run it. The file is parsed from bytes in RAM.
"""
import json
import struct

from firmware_py import fixedpoint as fp
from firmware_py.blob import BytesSource, check_model
from firmware_py.errors import DeviceError, E_MODEL_FORMAT, E_UNSUPPORTED
from firmware_py.runtime import KIND_NAMES, Layer, Model, zeros

DOMAIN = "snn_edge"
KNOWN_FUNCTIONS = ("CubaLifStep", "CubaLifStepFiltered", "NetworkStep", "ApplyUpdate", "ReadoutDeltaLearnStep",
                   "SolsaLearnStep", "GlmStep", "GlmNetworkStep", "GlmApplyUpdate", "GemLearnStep")
HIDDEN_UPDATE = "ApplyUpdateL"      # + a layer index: a hidden layer's update (SOLSA learn_all, §10.8)


def known_function(domain, name):
    """Is domain.name a function of the snn-edge file format (this module and converters/onnx_import.py)?"""
    if domain != DOMAIN:
        return False
    if name[:len(HIDDEN_UPDATE)] == HIDDEN_UPDATE:
        return name[len(HIDDEN_UPDATE):].isdigit()
    return name in KNOWN_FUNCTIONS


# TensorProto.DataType -> (array typecode, item size)
DTYPES = {3: ("b", 1), 6: ("i", 4), 7: (None, 8), 9: ("B", 1)}


def _varint(buf, pos):
    result = 0
    shift = 0
    while True:
        if pos >= len(buf):
            raise DeviceError(E_MODEL_FORMAT, "onnx: truncated varint at offset %d" % pos)
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 70:
            raise DeviceError(E_MODEL_FORMAT, "onnx: malformed varint at offset %d" % pos)


def fields(buf, start=0, end=None):
    """Yield (field number, wire type, value) of a message: value is an int (varint, fixed) or a
    (start, end) span into buf (length-delimited)."""
    pos = start
    end = len(buf) if end is None else end
    while pos < end:
        key, pos = _varint(buf, pos)
        num = key >> 3
        wt = key & 7
        if wt == 0:
            v, pos = _varint(buf, pos)
        elif wt == 2:
            n, pos = _varint(buf, pos)
            if pos + n > end:
                raise DeviceError(E_MODEL_FORMAT, "onnx: field %d (%d bytes) runs past its message" % (num, n))
            v = (pos, pos + n)
            pos += n
        elif (wt == 5 or wt == 1) and pos + (4 if wt == 5 else 8) <= end:
            v = struct.unpack("<I" if wt == 5 else "<Q", bytes(buf[pos:pos + (4 if wt == 5 else 8)]))[0]
            pos += 4 if wt == 5 else 8
        else:
            raise DeviceError(E_MODEL_FORMAT, "onnx: field %d: wire type %d at offset %d (truncated, or not "
                                              "protobuf)" % (num, wt, pos))
        yield num, wt, v
    if pos != end:
        raise DeviceError(E_MODEL_FORMAT, "onnx: message overruns its length")


def _text(buf, span):
    if not isinstance(span, tuple):
        raise DeviceError(E_MODEL_FORMAT, "onnx: a text field holds a number (wire type), expected bytes")
    try:
        return bytes(buf[span[0]:span[1]]).decode()
    except UnicodeError:
        raise DeviceError(E_MODEL_FORMAT, "onnx: the text at offset %d is not UTF-8" % span[0])


def _signed64(v):
    return v - (1 << 64) if v >= (1 << 63) else v


class _Tensor:
    def __init__(self):
        self.name = ""
        self.dims = []
        self.dtype = 0
        self.raw = None
        self.ints = []


def _tensor(buf, span):
    t = _Tensor()
    for num, wt, v in fields(buf, span[0], span[1]):
        if num == 1:
            if wt == 2:          # packed dims
                p = v[0]
                while p < v[1]:
                    d, p = _varint(buf, p)
                    t.dims.append(d)
            else:
                t.dims.append(v)
        elif num == 2:
            t.dtype = v
        elif num == 8:
            t.name = _text(buf, v)
        elif num == 9:
            t.raw = v
        elif num in (5, 7):      # int32_data / int64_data (packed or not)
            if wt == 2:
                p = v[0]
                while p < v[1]:
                    d, p = _varint(buf, p)
                    t.ints.append(_signed64(d))
            else:
                t.ints.append(_signed64(v))
    return t


def _count(t):
    n = 1
    for d in t.dims:
        n *= d
    return n


def _array(buf, t, where):
    """The tensor's values as an array of its type (int8 / int32 / bool), or a list of ints (int64)."""
    n = _count(t)
    tc, size = DTYPES.get(t.dtype, (None, 0))
    if size == 0:
        raise DeviceError(E_MODEL_FORMAT, "%s: tensor type %d is not int8/int32/int64/bool" % (where, t.dtype))
    if t.raw is None:
        if len(t.ints) != n:
            raise DeviceError(E_MODEL_FORMAT, "%s: %d values for shape %r" % (where, len(t.ints), t.dims))
        if tc is None:
            return list(t.ints)
        a = zeros(tc, n)
        for k in range(n):
            a[k] = t.ints[k]
        return a
    if t.raw[1] - t.raw[0] != n * size:
        raise DeviceError(E_MODEL_FORMAT, "%s: %d raw bytes for shape %r" % (where, t.raw[1] - t.raw[0], t.dims))
    if tc is None:
        return list(struct.unpack("<%dq" % n, bytes(buf[t.raw[0]:t.raw[1]])))
    a = zeros(tc, n)
    src = BytesSource(memoryview(buf)[t.raw[0]:t.raw[1]])
    src.readinto_typed(a, n * size, tc)
    return a


def _scalar(buf, inits, name):
    t = inits.get(name)
    if t is None:
        raise DeviceError(E_MODEL_FORMAT, "onnx: initializer %s missing" % name)
    v = _array(buf, t, name)
    if len(v) != 1 or t.dims:
        raise DeviceError(E_MODEL_FORMAT, "onnx: initializer %s: expected a scalar, got shape %r" % (name, t.dims))
    return int(v[0])


def read_model(buf):
    """A runtime.Model from the bytes of an .onnx file written by converters/onnx_export.py."""
    meta = {}
    graph = None
    funcs = []
    for num, wt, v in fields(buf):
        if num == 14 and wt == 2:          # metadata_props
            k = val = None
            for n2, _, v2 in fields(buf, v[0], v[1]):
                if n2 == 1:
                    k = _text(buf, v2)
                elif n2 == 2:
                    val = _text(buf, v2)
            if k is not None:
                meta[k] = val
        elif num == 7 and wt == 2:         # graph
            graph = v
        elif num == 25 and wt == 2:        # functions
            name = domain = ""
            for n2, _, v2 in fields(buf, v[0], v[1]):
                if n2 == 1:
                    name = _text(buf, v2)
                elif n2 == 10:
                    domain = _text(buf, v2)
            funcs.append((domain, name))
    if graph is None or "snn_edge.format" not in meta:
        raise DeviceError(E_MODEL_FORMAT, "onnx: no graph or no snn_edge metadata: not an snn-edge model")
    for domain, name in funcs:
        if not known_function(domain, name):
            raise DeviceError(E_UNSUPPORTED, "onnx: function %s.%s is not one this board runs (known: %s)"
                              % (domain, name, ", ".join(KNOWN_FUNCTIONS)))
    if meta.get("snn_edge.numerics_version") != str(fp.NUMERICS_VERSION):
        raise DeviceError(E_MODEL_FORMAT, "onnx: numerics version %s, this runtime implements %d"
                          % (meta.get("snn_edge.numerics_version"), fp.NUMERICS_VERSION))
    inits = {}
    for num, wt, v in fields(buf, graph[0], graph[1]):
        if num == 5 and wt == 2:
            t = _tensor(buf, v)
            inits[t.name] = t
    try:      # the metadata is JSON of any shape: a field of the wrong type or a missing one is named here
        model = _model(buf, meta, inits)
    except (KeyError, ValueError, TypeError, AttributeError, IndexError, RuntimeError) as exc:
        # (RuntimeError: CPython's RecursionError on deeply nested JSON, MicroPython's own)
        raise DeviceError(E_MODEL_FORMAT, "onnx: malformed snn_edge metadata or initializer (%s: %s)"
                          % (type(exc).__name__, str(exc)[:80]))
    check_model(model)
    names = [n for _, n in funcs]
    need = ["GlmNetworkStep" if model.probabilistic else "NetworkStep"]
    if model.rule != "none":
        need.append({"readout_delta": "ReadoutDeltaLearnStep", "solsa": "SolsaLearnStep"}.get(model.rule,
                                                                                             "GemLearnStep"))
    for n in need:
        if n not in names:
            raise DeviceError(E_MODEL_FORMAT, "onnx: function %s.%s missing (the model's %s needs it)"
                              % (DOMAIN, n, "learning rule" if n != need[0] else "network step"))
    return model


def _ints(values):
    for v in values:
        if not isinstance(v, int):
            raise ValueError("expected integers, got %r" % (v,))
    return list(values)


def _model(buf, meta, inits):
    layer_meta = json.loads(meta["snn_edge.layers"])
    binning = json.loads(meta["snn_edge.binning"])
    in_max = int(meta["snn_edge.in_max"])
    rule = meta["snn_edge.rule"]
    seed = int(meta["snn_edge.learn_seed"])
    compartments = int(meta.get("snn_edge.compartments", "1"))
    fire_seed = int(meta.get("snn_edge.fire_seed", "0"))
    if not layer_meta:
        raise ValueError("snn_edge.layers is empty")
    layers = []
    for l in range(len(layer_meta)):
        kind_name = layer_meta[l]["kind"]
        if kind_name not in KIND_NAMES:
            raise DeviceError(E_UNSUPPORTED, "onnx: layer %d kind %r (known: %s)" % (l, kind_name, ", ".join(KIND_NAMES)))
        tW = inits.get("L%d_W" % l)
        if tW is None or len(tW.dims) != 2 or tW.dtype != 3:
            raise DeviceError(E_MODEL_FORMAT, "onnx: initializer L%d_W missing or not int8 [N_in, N_out]" % l)
        n_in, n_out = tW.dims
        W = _array(buf, tW, "L%d_W" % l)
        ta = inits.get("L%d_a_syn" % l)
        if ta is None:
            raise DeviceError(E_MODEL_FORMAT, "onnx: initializer L%d_a_syn missing" % l)
        a = _array(buf, ta, "L%d_a_syn" % l)
        a_syn = int(a[0]) if not ta.dims else a
        L = Layer(W, n_in, n_out, a_syn, _scalar(buf, inits, "L%d_a_mem" % l), _scalar(buf, inits, "L%d_theta" % l),
                  _scalar(buf, inits, "L%d_shift" % l), int(layer_meta[l].get("w_exp", 0)), KIND_NAMES.index(kind_name))
        if kind_name == "prob":
            L.bias = _array(buf, inits["L%d_bias" % l], "L%d_bias" % l)
            L.w_fb = _array(buf, inits["L%d_w_fb" % l], "L%d_w_fb" % l)
            L.a_fb = _scalar(buf, inits, "L%d_a_fb" % l)
            L.sig_shift = _scalar(buf, inits, "L%d_sig_shift" % l)
        layers.append(L)
    params = {}
    tables = {}
    for name in inits:
        if name.startswith("learn_"):
            params[name[6:]] = _scalar(buf, inits, name)
        elif name in ("sigmoid_lut", "logsig_lut", "exp_lut"):
            tables[name] = _array(buf, inits[name], name)
    if binning is not None:          # JSON of any shape: 5 integers, a crop of 4, a mode
        binning = tuple(_ints(binning[:5])) + (tuple(_ints(binning[5])), _ints([binning[6]])[0])
        if len(binning) != 7 or len(binning[5]) != 4:
            raise ValueError("snn_edge.binning: expected 5 integers, a crop [x, y, w, h] and a mode")
    if in_max not in (1, 255) or not 0 <= seed <= fp.MASK32 or not 0 <= fire_seed <= fp.MASK32:
        raise ValueError("snn_edge.in_max %d (1 or 255), learn_seed %d, fire_seed %d (0..2**32-1)"
                         % (in_max, seed, fire_seed))
    return Model(layers, in_max, binning, rule, seed, params, tables, None, compartments, fire_seed)
