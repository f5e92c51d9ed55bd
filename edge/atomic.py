"""Write files so that a crash, a full disk or Ctrl-C never leaves a half-written one behind.

The data goes to a temporary file in the destination's folder (same filesystem), which replaces the
destination with os.replace only once it is complete; on any failure the temporary file is removed.
The file gets the permissions any new file gets (0666 less the umask), as `open(path, "wb")` would give.
"""
from __future__ import annotations

import os
import secrets
from contextlib import contextmanager
from typing import BinaryIO, Iterator


def _create_temp(folder: str, base: str) -> tuple[int, str]:
    """A new, exclusively created file next to the destination, mode 0666 less the umask.

    Written by hand because tempfile.mkstemp always creates mode 0600, which the final file would keep
    (a model written for a group or a web server would then be unreadable to them)."""
    for _ in range(100):
        tmp = os.path.join(folder, f".{base}-{secrets.token_hex(6)}.tmp")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"{folder}: could not create a unique temporary file for {base}")


@contextmanager
def atomic_output(path) -> Iterator[BinaryIO]:
    """A binary file to write; it becomes `path` when the block ends without an exception."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = _create_temp(folder, os.path.basename(path))
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
