"""Board weight checkpoints (layout: firmware_py/store.py) applied to a host IntModel.

The board sends its learned weights as a `store.checkpoint_bytes` image. Rather than parse that layout a
second time, the host builds the device's own model from the blob of the base model and lets the device's
`apply_checkpoint` check and apply the image (CRC, model identity, shapes): one definition of the format.
"""
from __future__ import annotations

import struct

import numpy as np

from converters.blob import intmodel_to_blob
from converters.intmodel import IntModel, validate
from edge.errors import SnnEdgeError
from firmware_py import blob as fblob
from firmware_py import store as fstore
from firmware_py.errors import DeviceError


def apply_board_checkpoint(base: IntModel, ckpt: bytes, where: str = "board weights") -> IntModel:
    """A copy of `base` with the learned arrays of `ckpt`: W, per-input a_syn, GEM bias and w_fb."""
    blob = intmodel_to_blob(base)
    crc = struct.unpack("<I", blob[-4:])[0]  # the device identifies a model by its blob's trailing CRC
    device_model = fblob.loads(blob)
    try:
        fstore.apply_checkpoint(device_model, ckpt, crc)
    except DeviceError as exc:
        raise SnnEdgeError(f"{where}: {exc.msg} (was the board flashed with this model?)") from None
    adapted = base.copy()
    for host, dev in zip(adapted.layers, device_model.layers):
        host.W[...] = np.frombuffer(bytes(dev.W), dtype=np.int8).reshape(host.W.shape)
        if dev.per_input:
            host.a_syn[...] = np.array(list(dev.a_syn), dtype=host.a_syn.dtype)
        if getattr(dev, "bias", None) is not None:
            host.bias[...] = np.array(list(dev.bias), dtype=host.bias.dtype)
            host.w_fb[...] = np.array(list(dev.w_fb), dtype=host.w_fb.dtype)
    validate(adapted, where)
    return adapted


def weight_drift(before: IntModel, after: IntModel) -> list[dict]:
    """Per layer: fraction of weights changed, mean |dW| in LSB, and relative L1 change."""
    rows = []
    for l, (a, b) in enumerate(zip(before.layers, after.layers)):
        d = b.W.astype(np.int32) - a.W.astype(np.int32)
        rows.append({"layer": l, "changed": float(np.mean(d != 0)), "mean_abs_lsb": float(np.abs(d).mean()),
                     "rel_l1": float(np.abs(d).sum() / max(1, np.abs(a.W.astype(np.int32)).sum()))})
    return rows
