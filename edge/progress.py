"""Progress bars on terminals only: a log file or a pipe gets no bar (tqdm would write one line per update
there); the callers print their own one-line summaries (e.g. one line per epoch) instead."""
from __future__ import annotations

from tqdm import tqdm


def bar(iterable=None, enabled: bool = True, **kwargs) -> tqdm:
    """tqdm over `iterable`, drawn only when `enabled` and its stream (stderr) is a terminal.

    tqdm's own `disable=None` is the terminal test: it asks the stream's isatty() when the bar is made."""
    return tqdm(iterable, disable=None if enabled else True, **kwargs)
