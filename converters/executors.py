"""Class scores of an integer model on many samples, from any of its three executors.

`snn-edge eval` measures a deployed model (int .npz, .onnx, device blob) with the executor the user picks:
the numpy simulator (`intsim`, the reference), onnxruntime on the ONNX graph, or the firmware itself under the
MicroPython unix port (`micropython`, through converters/mpy_driver.py as `snn-edge verify` runs it). All three
obey docs/NUMERICS.md bit for bit, so their scores, and hence their predictions, are identical.
"""
from __future__ import annotations

import numpy as np

from converters.intmodel import IntModel
from edge.errors import SnnEdgeError

EXECUTORS = ("intsim", "onnxruntime", "micropython")


def int_scores(model: IntModel, X: np.ndarray, executor: str = "intsim", proto=None,
               batch: int = 100) -> np.ndarray:
    """Per-class scores int64 [S, C] (spike counts, or summed membrane for an integrator readout) on samples
    X [S, T, N_in] (sample-major, as edge.data.load_frames gives). `proto`: the ONNX graph to run with
    onnxruntime (an .onnx file's own); unset, the model is exported in memory."""
    from converters import intsim, verify
    if executor not in EXECUTORS:
        raise SnnEdgeError(f"--executor: expected one of {', '.join(EXECUTORS)}, got {executor!r}")
    if X.ndim != 3 or X.shape[2] != model.layers[0].n_in:
        raise SnnEdgeError(f"{executor}: expected samples [S, T, {model.layers[0].n_in}], got {list(X.shape)}")
    Xt = np.ascontiguousarray(X.transpose(1, 0, 2))
    intsim.check_input(model, Xt, "--data")
    if executor == "micropython":
        return verify.micropython_scores(model, Xt)  # one process for all samples: its start-up dominates
    sess = None
    if executor == "onnxruntime":
        from converters.onnx_export import to_onnx
        sess = verify.session(proto if proto is not None else to_onnx(model))
    out = []
    for b in range(0, Xt.shape[1], batch):  # bounded memory: every step's states are recorded per batch
        xb = Xt[:, b:b + batch]
        out.append(verify.run_sequence(sess, xb)["scores"] if sess is not None else intsim.run(model, xb).scores)
    return np.concatenate(out).astype(np.int64) if out else np.zeros((0, model.layers[-1].n_out), np.int64)


def scores_to_logits(model: IntModel, scores: np.ndarray, n_steps: int) -> np.ndarray:
    """The float network's logits from integer scores: spike counts are the same numbers; an integrator's
    summed membrane becomes the time-mean membrane in real units (state units are 2**-(w_exp + F) real units,
    NUMERICS.md §2), as edge.bptt.forward reports it. NLL and ECE are then comparable with a float checkpoint's."""
    last = model.layers[-1]
    if last.kind == "integrator":
        return scores.astype(np.float64) / n_steps * 2.0 ** -(int(last.w_exp) + int(last.shift))
    return scores.astype(np.float64)
