"""Write files so that a crash, a full disk or Ctrl-C never leaves a half-written one behind.

The data goes to a temporary file in the destination's folder (same filesystem), which replaces the
destination with os.replace only once it is complete; on any failure the temporary file is removed.
"""
from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from typing import BinaryIO, Iterator


@contextmanager
def atomic_output(path) -> Iterator[BinaryIO]:
    """A binary file to write; it becomes `path` when the block ends without an exception."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + "-", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_atomic(path, data: bytes) -> None:
    with atomic_output(path) as fh:
        fh.write(data)
