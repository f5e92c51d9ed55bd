"""ONNX -> IntModel: read back what converters/onnx_export.py writes, refusing anything outside the subset.

Checks, each failing with an SnnEdgeError that names the file and the node/tensor, expected vs got:
the file parses (not truncated), passes onnx.checker at full check, uses only the ops of the integer
subset (in the main graph, every sub-graph and every function), its parameters are typed initialisers
of the declared dtypes and shapes, its metadata names a known format and numerics version. A model
imported and exported again is byte-identical (tests/converters/test_onnx_roundtrip.py).
"""
from __future__ import annotations

import json
import os

import numpy as np
import onnx
from onnx import numpy_helper

from converters.intmodel import IntLayer, IntModel, LearnSpec, validate
from converters.onnx_export import DOMAIN, FORMAT_VERSION, RULE_VERSION, widths
from edge.errors import SnnEdgeError
from firmware_py import fixedpoint as fp
from firmware_py.onnx_reader import HIDDEN_UPDATE, known_function
from firmware_py.onnx_reader import KNOWN_FUNCTIONS as KNOWN_DEVICE_FUNCTIONS

ALLOWED_OPS = frozenset({
    "Abs", "Add", "And", "ArgMax", "BitShift", "BitwiseXor", "Cast", "Clip", "Concat", "Constant",
    "ConstantOfShape", "Div", "Equal", "Greater", "GreaterOrEqual", "Identity", "If", "MatMul",
    "MatMulInteger", "Max", "Mod", "Mul", "Neg", "Not", "ReduceSum", "Scan", "Shape", "Slice", "Squeeze",
    "Sub", "Unsqueeze", "Where",
    # probabilistic (GEM) graphs
    "Expand", "Gather", "Less", "Min", "Range", "ReduceMax", "Reshape",
})
KNOWN_FUNCTIONS = frozenset(KNOWN_DEVICE_FUNCTIONS) | {HIDDEN_UPDATE + "<layer>"}
REQUIRED_META = ("snn_edge.format", "snn_edge.numerics_version", "snn_edge.layers", "snn_edge.in_max",
                 "snn_edge.binning", "snn_edge.rule", "snn_edge.rule_version", "snn_edge.learn_seed",
                 "snn_edge.meta", "snn_edge.compartments", "snn_edge.fire_seed", "snn_edge.widths")


def read_proto(path) -> onnx.ModelProto:
    path = os.fspath(path)
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise SnnEdgeError(f"{path}: cannot read ({exc.strerror})") from None
    return parse_bytes(data, path)


def parse_bytes(data: bytes, where: str) -> onnx.ModelProto:
    proto = onnx.ModelProto()
    try:
        proto.ParseFromString(data)
    except Exception as exc:  # protobuf raises DecodeError (truncated or not protobuf at all)
        raise SnnEdgeError(f"{where}: not a readable ONNX file ({len(data)} bytes; truncated or corrupt: "
                           f"{type(exc).__name__})") from None
    if not proto.HasField("graph") or not proto.graph.node:
        raise SnnEdgeError(f"{where}: ONNX file has no graph (expected an snn-edge sequence graph; "
                           f"{len(data)} bytes, truncated?)")
    return proto


def _walk(nodes, where: str, scope: str):
    for node in nodes:
        yield node, scope
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _walk(attr.g.node, where, f"{scope}/{node.name or node.op_type}")
            for g in attr.graphs:
                yield from _walk(g.node, where, f"{scope}/{node.name or node.op_type}")


def check_subset(proto: onnx.ModelProto, where: str) -> None:
    """Every node, in the graph, its sub-graphs and the functions, is an allowed op or a known function."""
    for f in proto.functions:
        if not known_function(f.domain, f.name):
            raise SnnEdgeError(f"{where}: function {f.domain}.{f.name}: expected one of "
                               f"{sorted(DOMAIN + '.' + n for n in KNOWN_FUNCTIONS)}")
    sources = [(proto.graph.node, "graph")] + [(f.node, f"function {f.name}") for f in proto.functions]
    for nodes, scope0 in sources:
        for node, scope in _walk(nodes, where, scope0):
            if node.domain in ("", "ai.onnx"):
                if node.op_type not in ALLOWED_OPS:
                    raise SnnEdgeError(
                        f"{where}: node {node.name or '?'} in {scope}: op {node.op_type} is outside the "
                        f"snn-edge integer subset (expected one of {', '.join(sorted(ALLOWED_OPS))})")
            elif node.domain == DOMAIN:
                if not known_function(node.domain, node.op_type):
                    raise SnnEdgeError(f"{where}: node {node.name or '?'} in {scope}: unknown function "
                                       f"{DOMAIN}.{node.op_type}")
            else:
                raise SnnEdgeError(f"{where}: node {node.name or '?'} in {scope}: domain {node.domain!r}, "
                                   f"expected '' or {DOMAIN!r}")


def _meta(proto: onnx.ModelProto, where: str) -> dict[str, str]:
    meta = {p.key: p.value for p in proto.metadata_props}
    missing = [k for k in REQUIRED_META if k not in meta]
    if missing:
        raise SnnEdgeError(f"{where}: metadata_props lacks {missing}: not an snn-edge integer model")
    if meta["snn_edge.format"] != str(FORMAT_VERSION):
        raise SnnEdgeError(f"{where}: snn_edge.format {meta['snn_edge.format']}, expected {FORMAT_VERSION}")
    if meta["snn_edge.numerics_version"] != str(fp.NUMERICS_VERSION):
        raise SnnEdgeError(f"{where}: snn_edge.numerics_version {meta['snn_edge.numerics_version']}, "
                           f"expected {fp.NUMERICS_VERSION}")
    try:
        got_widths = json.loads(meta.get("snn_edge.widths", "null"))
    except (ValueError, RecursionError):
        got_widths = meta.get("snn_edge.widths")
    if got_widths != widths():
        raise SnnEdgeError(f"{where}: snn_edge.widths {got_widths}, expected {widths()} (NUMERICS.md §1)")
    if meta["snn_edge.rule_version"] != str(RULE_VERSION):
        raise SnnEdgeError(f"{where}: snn_edge.rule_version {meta['snn_edge.rule_version']}, expected {RULE_VERSION}")
    return meta


def _tensor(inits: dict, name: str, dtype, shape, where: str) -> np.ndarray:
    if name not in inits:
        raise SnnEdgeError(f"{where}: initializer {name} is missing")
    try:
        arr = numpy_helper.to_array(inits[name])
    except (ValueError, TypeError) as exc:      # an unknown data type, or data that does not fill its shape
        raise SnnEdgeError(f"{where}: initializer {name}: unreadable ({exc})") from None
    if arr.dtype != np.dtype(dtype):
        raise SnnEdgeError(f"{where}: initializer {name}: dtype {arr.dtype}, expected {np.dtype(dtype)}")
    if shape is not None and tuple(arr.shape) != tuple(shape):
        raise SnnEdgeError(f"{where}: initializer {name}: shape {list(arr.shape)}, expected {list(shape)}")
    return arr


def _tuplify(x):
    return tuple(_tuplify(v) for v in x) if isinstance(x, (list, tuple)) else x


def from_proto(proto: onnx.ModelProto, where: str = "model.onnx", full_check: bool = True) -> IntModel:
    check_subset(proto, where)       # first: names the foreign op plainly
    if full_check:
        try:
            onnx.checker.check_model(proto, full_check=True)
        except UnicodeDecodeError as exc:      # a name or text field that is not UTF-8 (protobuf does not check)
            raise SnnEdgeError(f"{where}: a text field is not UTF-8 ({exc.reason} at byte {exc.start} of "
                               f"{exc.object[max(0, exc.start - 20):exc.start + 4]!r})") from None
        except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError, ValueError) as exc:
            # (ValueError: the checker's own word for some corrupt fields, an unknown tensor data type say)
            raise SnnEdgeError(f"{where}: onnx.checker (full check) failed: {str(exc).splitlines()[0]}") from None
    meta = _meta(proto, where)
    inits = {t.name: t for t in proto.graph.initializer}
    try:
        layer_meta = json.loads(meta["snn_edge.layers"])
        binning = json.loads(meta["snn_edge.binning"])
        extra = json.loads(meta["snn_edge.meta"])
        in_max = int(meta["snn_edge.in_max"])
        seed = int(meta["snn_edge.learn_seed"])
        compartments = int(meta["snn_edge.compartments"])
        fire_seed = int(meta["snn_edge.fire_seed"])
    except (ValueError, TypeError, RecursionError) as exc:
        raise SnnEdgeError(f"{where}: malformed snn_edge metadata ({type(exc).__name__}: {exc})") from None
    # JSON of the right syntax but any shape: what the reads below assume is checked first
    if not (isinstance(layer_meta, list) and layer_meta
            and all(isinstance(d, dict) and type(d.get("w_exp", 0)) is int for d in layer_meta)):
        raise SnnEdgeError(f"{where}: snn_edge.layers: expected a non-empty list of layer objects (kind, integer "
                           f"w_exp), got {meta['snn_edge.layers'][:80]!r}")
    if not (binning is None or isinstance(binning, list)) or not isinstance(extra, dict):
        raise SnnEdgeError(f"{where}: snn_edge.binning (a list or null) or snn_edge.meta (an object): got "
                           f"{meta['snn_edge.binning'][:80]!r}, {meta['snn_edge.meta'][:80]!r}")
    layers = []
    for l, lm in enumerate(layer_meta):
        W = _tensor(inits, f"L{l}_W", np.int8, None, where)
        if W.ndim != 2:
            raise SnnEdgeError(f"{where}: initializer L{l}_W: rank {W.ndim}, expected 2 ([N_in, N_out])")
        a_syn = _tensor(inits, f"L{l}_a_syn", np.int32, None, where)
        if a_syn.shape not in ((), (W.shape[0],)):
            raise SnnEdgeError(f"{where}: initializer L{l}_a_syn: shape {list(a_syn.shape)}, expected [] or "
                               f"[{W.shape[0]}]")
        scalar = {k: int(_tensor(inits, f"L{l}_{k}", np.int32, (), where)) for k in ("a_mem", "theta", "shift")}
        spiking = bool(_tensor(inits, f"L{l}_spiking", np.bool_, (), where))
        kind = lm.get("kind")
        if spiking != (kind == "lif"):
            raise SnnEdgeError(f"{where}: initializer L{l}_spiking is {spiking} but metadata says kind {kind!r}")
        layer = IntLayer(W.copy(), a_syn.astype(np.int32), scalar["a_mem"], scalar["theta"],
                         scalar["shift"], int(lm.get("w_exp", 0)), kind)
        if kind == "prob":
            layer.bias = _tensor(inits, f"L{l}_bias", np.int32, (W.shape[1],), where).copy()
            layer.w_fb = _tensor(inits, f"L{l}_w_fb", np.int32, (W.shape[1],), where).copy()
            layer.a_fb = int(_tensor(inits, f"L{l}_a_fb", np.int32, (), where))
            layer.sig_shift = int(_tensor(inits, f"L{l}_sig_shift", np.int32, (), where))
        layers.append(layer)
    rule = meta["snn_edge.rule"]
    params = {}
    for name in sorted(n for n in inits if n.startswith("learn_")):
        params[name[len("learn_"):]] = int(_tensor(inits, name, np.int64, (), where))
    model = IntModel(layers, in_max, None if binning is None else _tuplify(binning),
                     LearnSpec(rule, seed, params), extra, compartments, fire_seed)
    known = {f"L{l}_{k}" for l in range(len(layers)) for k in ("W", "a_syn", "a_mem", "theta", "shift", "spiking")}
    if model.probabilistic:
        known |= {f"L{l}_{k}" for l in range(len(layers)) for k in ("bias", "w_fb", "a_fb", "sig_shift")}
        for name, builder in (("sigmoid_lut", fp.sigmoid_lut), ("logsig_lut", fp.logsig_lut), ("exp_lut", fp.exp_lut)):
            table = _tensor(inits, name, np.int32, (fp.SIG_LUT_SIZE,), where)
            want = np.array(builder(), np.int32)
            if (table != want).any():
                k = int(np.flatnonzero(table != want)[0])
                raise SnnEdgeError(f"{where}: initializer {name}[{k}] = {table[k]}, expected {want[k]} "
                                   f"(NUMERICS.md §8 table)")
            known.add(name)
    unknown = sorted(n for n in inits if n not in known and not n.startswith("learn_"))
    if unknown:
        raise SnnEdgeError(f"{where}: unexpected initializers {unknown}")
    validate(model, where)
    check_graph(proto, model, where)
    return model


def check_graph(proto: onnx.ModelProto, model: IntModel, where: str) -> None:
    """The graph and functions the executors run are the ones the exporter writes for this model: a file
    with a node, output or function deleted or edited (which onnx.checker may pass, and onnxruntime then
    fails on or, worse, runs with other semantics) is refused here, not run."""
    from converters.onnx_export import to_onnx
    want = to_onnx(model)
    for what, got, exp in (("graph input", proto.graph.input, want.graph.input),
                           ("graph output", proto.graph.output, want.graph.output),
                           ("graph node", proto.graph.node, want.graph.node),
                           ("function", proto.functions, want.functions)):
        for k in range(max(len(got), len(exp))):
            g = got[k].SerializeToString(deterministic=True) if k < len(got) else None
            if g != (exp[k].SerializeToString(deterministic=True) if k < len(exp) else None):
                name = getattr(exp[k] if k < len(exp) else got[k], "name", "")
                raise SnnEdgeError(f"{where}: {what} {k} ({name or '?'}) is not the one the exporter writes for "
                                   f"this model ({len(got)} {what}s, expected {len(exp)}): an edited or corrupt "
                                   f"file")


def load_onnx(path) -> IntModel:
    return from_proto(read_proto(path), os.fspath(path))
