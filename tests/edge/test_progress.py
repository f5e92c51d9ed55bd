"""Progress bars only on terminals; in a log (stderr not a TTY) training prints one summary line per epoch."""
from __future__ import annotations

import io
import re
import sys

import numpy as np

from edge.data import BuiltinSource, load_frames
from edge.model import NetworkSpec, init_params
from edge.rules import make_rule
from edge.train import FitConfig, fit


class Terminal(io.StringIO):
    """stderr as a terminal reports itself (tqdm asks isatty() to decide whether to draw)."""

    def isatty(self) -> bool:
        return True


def _fit(epochs: int = 3):
    rng = np.random.default_rng(0)
    X = (rng.random((40, 5, 16)) < 0.3).astype(np.uint8)
    y = rng.integers(0, 3, 40)
    spec = NetworkSpec(sizes=(16, 8, 3))
    fit(make_rule("bptt"), spec, init_params(spec, rng), (X[:32], y[:32]), (X[32:], y[32:]),
        FitConfig(epochs=epochs, batch_size=8, progress=True))


def test_training_log_has_one_line_per_epoch_and_no_bar(capsys):
    _fit(3)
    out, err = capsys.readouterr()
    assert err == "", f"a progress bar was written to a non-terminal stderr: {err[:200]!r}"
    lines = out.strip().splitlines()
    assert len(lines) == 3 and all(re.match(rf"epoch {i + 1}/3: loss \S+ acc \S+ \| val acc", line)
                                   for i, line in enumerate(lines)), lines


def test_training_on_a_terminal_draws_the_batch_bar(capsys, monkeypatch):
    term = Terminal()
    monkeypatch.setattr(sys, "stderr", term)
    _fit(2)
    assert "epoch 1/2" in term.getvalue() and "batch" in term.getvalue()
    assert len(capsys.readouterr().out.strip().splitlines()) == 2


def test_data_loading_draws_no_bar_in_a_log(capsys):
    load_frames(BuiltinSource(n_per_class=1, seed=5), progress=True, use_cache=False)
    assert capsys.readouterr().err == ""
