"""Write the compact device blob (layout: firmware_py/blob.py) from an IntModel or an .onnx file.

The device reads the blob with firmware_py.blob; `blob_to_intmodel` reads it back on the host through
that same reader, so a round trip IntModel -> blob -> IntModel is checked against the one definition.
"""
from __future__ import annotations

import os
import struct
import zlib

import numpy as np

from converters.intmodel import IntLayer, IntModel, LearnSpec, validate
from edge.atomic import write_atomic
from edge.errors import SnnEdgeError
from firmware_py import blob as fblob
from firmware_py import fixedpoint as fp
from firmware_py.errors import DeviceError
from firmware_py.runtime import KIND_NAMES


def _name(s: str) -> bytes:
    b = s.encode()
    if len(b) > 255:
        raise SnnEdgeError(f"blob: name {s!r} is longer than 255 bytes")
    return struct.pack("<B", len(b)) + b


def intmodel_to_blob(model: IntModel, tables: dict[str, np.ndarray] | None = None) -> bytes:
    """The blob bytes of a validated IntModel (plus optional uint16/int16 tables, e.g. the sigmoid LUT)."""
    validate(model, "model")
    parts = []
    b = model.binning
    if b is None:
        parts.append(struct.pack("<B", 0))
    else:
        sw, sh, dt, ns, ds, crop, mode = b
        cx, cy, cw, ch = crop if crop is not None else (0, 0, sw, sh)
        parts.append(struct.pack("<BHHIHHHHHHB", 1, sw, sh, dt, ns, ds, cx, cy, cw, ch, mode))
    rule = model.learn
    parts.append(_name(rule.rule))
    parts.append(struct.pack("<IB", rule.seed & fp.MASK32, len(rule.params)))
    for k in sorted(rule.params):
        parts.append(_name(k) + struct.pack("<i", int(rule.params[k])))
    parts.append(struct.pack("<HI", int(model.compartments), int(model.fire_seed) & fp.MASK32))
    for L in model.layers:
        parts.append(struct.pack("<BBIIiiii", KIND_NAMES.index(L.kind), 1 if L.per_input else 0, L.n_in,
                                 L.n_out, int(L.a_mem), int(L.theta), int(L.shift), int(L.w_exp)))
        if L.per_input:
            parts.append(L.a_syn.astype("<u2").tobytes())
        else:
            parts.append(struct.pack("<i", int(L.a_syn)))
        parts.append(np.ascontiguousarray(L.W, dtype=np.int8).tobytes())
        if L.kind == "prob":
            parts.append(struct.pack("<ii", int(L.a_fb), int(L.sig_shift)))
            parts.append(L.bias.astype("<i4").tobytes() + L.w_fb.astype("<i4").tobytes())
    tables = dict(tables or {})
    if model.probabilistic:   # NUMERICS.md §8, §11: the device uses the stored tables
        tables.setdefault("sigmoid_lut", np.array(fp.sigmoid_lut(), np.int32))
        tables.setdefault("logsig_lut", np.array(fp.logsig_lut(), np.int32))
        tables.setdefault("exp_lut", np.array(fp.exp_lut(), np.int32))
    parts.append(struct.pack("<B", len(tables)))
    for k in sorted(tables):
        t = np.asarray(tables[k])
        tc = {"u2": "H", "i2": "h"}.get(t.dtype.str[1:], "i")
        parts.append(_name(k) + struct.pack("<HB", t.size, ord(tc))
                     + t.astype({"H": "<u2", "h": "<i2", "i": "<i4"}[tc]).tobytes())
    body = b"".join(parts)
    total = fblob.HEADER_SIZE + len(body) + 4
    head = struct.pack(fblob.HEADER, fblob.MAGIC, fblob.FORMAT, fp.NUMERICS_VERSION, len(model.layers),
                       model.in_max, total)
    data = head + body
    return data + struct.pack("<I", zlib.crc32(data) & 0xFFFFFFFF)


def blob_to_intmodel(data: bytes, where: str = "blob") -> IntModel:
    """Read a blob through the device's own reader and return the host IntModel."""
    try:
        m = fblob.loads(data)
    except DeviceError as exc:
        raise SnnEdgeError(f"{where}: {exc.msg}") from None
    layers = []
    for L in m.layers:
        W = np.frombuffer(bytes(L.W), dtype=np.int8).reshape(L.n_in, L.n_out).copy()
        a_syn = (np.array(list(L.a_syn), np.int32) if L.per_input else np.array(L.a_syn, np.int32))
        extra = {}
        if L.kind == 2:
            extra = {"bias": np.array(list(L.bias), np.int32), "w_fb": np.array(list(L.w_fb), np.int32),
                     "a_fb": L.a_fb, "sig_shift": L.sig_shift}
        layers.append(IntLayer(W, a_syn, L.a_mem, L.theta, L.shift, L.w_exp, KIND_NAMES[L.kind], **extra))
    model = IntModel(layers, m.in_max, m.binning, LearnSpec(m.rule, m.seed, dict(m.params)), {},
                     m.compartments, m.fire_seed)
    validate(model, where)
    return model


def write_blob(path, data: bytes) -> None:
    """Write a file atomically (temp file in the same folder + os.replace)."""
    write_atomic(path, data)


def load_any_model(path) -> IntModel:
    """An IntModel from a .blob, an .onnx (through converters.onnx_import) or an IntModel .npz."""
    p = os.fspath(path)
    if not os.path.exists(p):
        raise SnnEdgeError(f"{p}: no such model file")
    if os.path.isdir(p):
        raise SnnEdgeError(f"{p}: is a directory, expected a model file (.blob, .onnx or integer .npz)")
    with open(p, "rb") as fh:
        head = fh.read(4)
    if head == fblob.MAGIC:
        with open(p, "rb") as fh:
            return blob_to_intmodel(fh.read(), p)
    if p.endswith(".onnx"):
        from converters.onnx_import import load_onnx
        return load_onnx(p)
    if p.endswith(".npz"):
        from converters.intmodel import load_intmodel
        return load_intmodel(p)
    raise SnnEdgeError(f"{p}: not a model blob (magic {head!r}), .onnx or integer model .npz")


def export_blob(src, out) -> int:
    """`snn-edge export --blob`: write the blob of a model file; returns its size in bytes."""
    model = load_any_model(src)
    data = intmodel_to_blob(model)
    write_blob(out, data)
    return len(data)
