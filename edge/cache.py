"""On-disk cache of preprocessed spike tensors, keyed by input content and transform parameters.

A key is the SHA-256 of: a format version, the transform parameters, and for every input file its relative
path and content digest (or, for the built-in generator, its parameters). Changing a file, a parameter or
this format gives a new key, so a stale entry is never read. Entries are written to a temp file in the
same folder and renamed into place, so an interrupted run never leaves a half-written entry behind.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from edge.errors import DataError
from edge.atomic import atomic_output

CACHE_FORMAT = 1


def cache_dir() -> Path:
    root = os.environ.get("SNN_EDGE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "snn-edge"
    )
    return Path(root)


def file_digest(path) -> str:
    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()


def make_key(params: dict, inputs: list[tuple[str, str]]) -> str:
    """params: JSON-able transform parameters; inputs: (name, content digest) pairs in load order."""
    h = hashlib.sha256()
    h.update(json.dumps({"format": CACHE_FORMAT, "params": params}, sort_keys=True).encode())
    for name, digest in inputs:
        h.update(f"\n{name}\0{digest}".encode())
    return h.hexdigest()


def load(key: str) -> dict[str, np.ndarray] | None:
    path = cache_dir() / f"{key}.npz"
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError) as exc:
        # A corrupt entry (a disk problem; renames are atomic) is dropped and rebuilt, not trusted.
        path.unlink(missing_ok=True)
        print(f"snn-edge: dropped unreadable cache entry {path} ({exc})")
        return None


def store(key: str, arrays: dict[str, np.ndarray]) -> Path:
    folder = cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"{folder}: cannot create the cache folder ({exc}); set SNN_EDGE_CACHE") from exc
    final = folder / f"{key}.npz"
    with atomic_output(final) as fh:
        np.savez(fh, **arrays)
    return final
