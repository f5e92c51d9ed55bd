"""The device refuses at load what it would fail on at the first sample (issue 14, point 1): model blobs and
.onnx files with invalid UTF-8 names, rule parameters outside the host's limits, absurd step counts, table
counts beyond the bytes present; and the board bounds what a LOAD_MODEL / PUT_WEIGHTS frame may make it
allocate. Every refusal is a DeviceError naming the field (or an ERROR answer on the link)."""
from __future__ import annotations

import struct
import tracemalloc
import zlib

import numpy as np
import onnx
import pytest

import converters.blob as cblob
from converters.blob import intmodel_to_blob
from converters.onnx_export import to_onnx
from firmware_py import errors as E
from firmware_py import link as L
from firmware_py.device import Device
from firmware_py.errors import DeviceError
from firmware_py.handler import DeviceHandler

from .test_device import _model


def _blob_without_host_checks(monkeypatch, model, tables=None) -> bytes:
    """The blob a broken (or hostile) writer makes: the host's validate skipped, the CRC right."""
    monkeypatch.setattr(cblob, "validate", lambda *a, **k: None)
    return intmodel_to_blob(model, tables)


def _recrc(data: bytes) -> bytes:
    return data[:-4] + struct.pack("<I", zlib.crc32(data[:-4]) & 0xFFFFFFFF)


def _refused(data, *words):
    with pytest.raises(DeviceError) as err:
        Device(heap=192 * 1024).load_model(data)
    for w in words:
        assert w in err.value.msg, err.value.msg
    return err.value


@pytest.mark.parametrize("name, value, words", [
    ("k_update", 0, ("solsa.k_update 0", "1..65536")),
    ("lr_s", 2**31 - 1, ("solsa.lr_s 2147483647", "0..30")),
    ("factorised", 2, ("solsa.factorised 2", "0..1")),
])
def test_rule_parameters_outside_the_hosts_limits_are_refused_at_load(monkeypatch, name, value, words):
    m = _model()
    m.learn.params[name] = value
    _refused(_blob_without_host_checks(monkeypatch, m), *words)


def test_missing_rule_parameter_and_bad_layer_constants_are_named(monkeypatch):
    m = _model()
    del m.learn.params["sg_shift"]
    _refused(_blob_without_host_checks(monkeypatch, m), "rule solsa parameters", "sg_shift")
    m = _model()
    m.layers[1].theta = 0
    _refused(_blob_without_host_checks(monkeypatch, m), "layer 1 theta 0", "1..524287")


def test_a_sample_of_65535_steps_is_refused_with_the_hosts_bound(monkeypatch):
    m = _model()
    m.binning = m.binning[:3] + (65535,) + m.binning[4:]
    _refused(_blob_without_host_checks(monkeypatch, m), "binning n_steps 65535", "1..1024")
    from converters.intmodel import validate
    from edge.errors import SnnEdgeError
    with pytest.raises(SnnEdgeError, match="n_steps"):
        validate(m)


@pytest.mark.parametrize("good", [b"solsa", b"k_update", b"tbl"])
def test_invalid_utf8_in_a_name_is_a_format_error(good):
    data = intmodel_to_blob(_model(), {"tbl": np.arange(4, dtype=np.uint16)})
    at = data.index(good)
    bad = _recrc(data[:at] + b"\xff" * len(good) + data[at + len(good):])
    err = _refused(bad, "not UTF-8")
    assert err.code == E.E_MODEL_FORMAT


def test_a_table_count_beyond_the_bytes_present_allocates_nothing_big():
    data = intmodel_to_blob(_model(), {"tbl": np.arange(4, dtype=np.int32)})
    at = data.index(b"\x03tbl") + 4
    assert struct.unpack_from("<H", data, at)[0] == 4
    bad = _recrc(data[:at] + struct.pack("<H", 65535) + data[at + 2:])
    dev = Device(heap=192 * 1024)
    tracemalloc.start()
    try:
        with pytest.raises(DeviceError, match="table tbl needs 262140 bytes"):
            dev.load_model(bad)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 150_000          # the model's own arrays (72-40-4 + SOLSA), not the 262 KB the count declares


def _onnx(model) -> onnx.ModelProto:
    return to_onnx(model)


def test_device_onnx_reader_refuses_what_the_host_refuses():
    m = _model()
    good = _onnx(m)
    Device(heap=192 * 1024).load_model(good.SerializeToString())     # the file as exported loads

    p = onnx.ModelProto()
    p.CopyFrom(good)
    for t in p.graph.initializer:
        if t.name == "learn_k_update":
            t.CopyFrom(onnx.numpy_helper.from_array(np.array(0, np.int64), "learn_k_update"))
    _refused(p.SerializeToString(), "solsa.k_update 0")

    p.CopyFrom(good)
    for t in p.graph.initializer:
        if t.name == "L0_shift":
            t.CopyFrom(onnx.numpy_helper.from_array(np.array(-1, np.int32), "L0_shift"))
    _refused(p.SerializeToString(), "layer 0 shift -1, expected 0..24")

    p.CopyFrom(good)
    del p.functions[:]
    _refused(p.SerializeToString(), "function snn_edge.NetworkStep missing")

    p.CopyFrom(good)
    for prop in p.metadata_props:
        if prop.key == "snn_edge.layers":
            prop.value = '{"kind": 3}'
    _refused(p.SerializeToString(), "malformed snn_edge metadata")

    data = good.SerializeToString()
    at = data.index(b"snn_edge.rule")
    _refused(data[:at] + b"\xfe" + data[at + 1:], "not UTF-8")


@pytest.mark.parametrize("mtype", [L.LOAD_MODEL, L.PUT_WEIGHTS])
def test_a_frame_declaring_1_gib_gets_a_named_error_not_an_allocation(mtype):
    handler = DeviceHandler(Device(heap=192 * 1024))
    handler.dev.load_model(intmodel_to_blob(_model()))
    session = L.DeviceSession(handler, 1024, 4096)
    session.on_frame(L.HELLO, 0, b"abcd")
    tracemalloc.start()
    try:
        rtype, _, payload = session.on_frame(mtype, 1, struct.pack(L.CHUNK_HEAD, 0, 1 << 30) + b"x" * 100)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert rtype == L.ERROR
    code, msg = payload[0], payload[1:].decode()
    assert code == E.E_NO_MEMORY and "1073741824 bytes" in msg and "room for" in msg, (code, msg)
    assert peak < 1_000_000
    # the board goes on: the next frame of a sane size is taken
    rtype, _, _ = session.on_frame(mtype, 2, struct.pack(L.CHUNK_HEAD, 0, 100) + b"x" * 10)
    assert rtype == L.ACK
