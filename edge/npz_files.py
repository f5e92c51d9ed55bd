"""Model files as one .npz: named arrays plus one JSON header entry (float checkpoints, integer models).

One reader and one writer, so every such file is written atomically and a broken one is reported the same
way: the path, what it is not, and why.
"""
from __future__ import annotations

import json
import os
import zipfile
import zlib
from typing import Any

import numpy as np

from edge.atomic import atomic_output
from edge.errors import SnnEdgeError


def save_npz(path, arrays: dict[str, np.ndarray], header_key: str, header: dict[str, Any]) -> None:
    """arrays + header (as JSON under header_key), written atomically."""
    entries = dict(arrays)
    entries[header_key] = np.array(json.dumps(header, sort_keys=True))
    with atomic_output(path) as fh:
        np.savez(fh, **entries)  # type: ignore[arg-type]


def load_npz(path, header_key: str, what: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """(arrays, header) of a file save_npz wrote; SnnEdgeError naming the file for anything unusable."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise SnnEdgeError(f"{path}: {what} file not found")
    try:
        with np.load(path, allow_pickle=False) as npz:
            data = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise SnnEdgeError(f"{path}: not a readable {what} (.npz): {exc}") from None
    if header_key not in data:
        raise SnnEdgeError(f"{path}: no '{header_key}' entry: not a {what} (entries: {sorted(data)[:6]})")
    try:
        header = json.loads(str(data.pop(header_key)))
    except json.JSONDecodeError as exc:
        raise SnnEdgeError(f"{path}: '{header_key}' entry is not JSON: {exc}") from None
    if not isinstance(header, dict):
        raise SnnEdgeError(f"{path}: '{header_key}' entry is {type(header).__name__}, expected a JSON object")
    return data, header
