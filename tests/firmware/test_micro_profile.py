"""The device modules stay inside what MicroPython 1.9.2 (the micro:bit's) and the board can run:
no f-strings, no bytes.hex(), no walrus, no imports from the host packages or of host-only modules."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

FW = Path(__file__).resolve().parents[2] / "firmware_py"
DEVICE_MODULES = ["runtime", "learning", "gem", "blob", "memory", "store", "device", "handler", "fast", "errors",
                  "fixedpoint", "binning"]
ALLOWED_IMPORTS = {"array", "struct", "gc", "sys", "time", "os", "micropython", "binascii", "math", "numpy",
                   "firmware_py"}


@pytest.mark.parametrize("name", DEVICE_MODULES)
def test_module_fits_the_micro_profile(name):
    tree = ast.parse((FW / f"{name}.py").read_text())
    for node in ast.walk(tree):
        assert not isinstance(node, ast.JoinedStr), f"{name}.py:{node.lineno}: f-string (MicroPython 1.9.2 has none)"
        assert not isinstance(node, ast.NamedExpr), f"{name}.py:{node.lineno}: walrus operator"
        if isinstance(node, ast.Attribute) and node.attr == "hex":
            raise AssertionError(f"{name}.py:{node.lineno}: .hex() (bytes.hex is missing on MicroPython 1.9.2)")
        if isinstance(node, ast.Import):
            for a in node.names:
                assert a.name.split(".")[0] in ALLOWED_IMPORTS, f"{name}.py imports {a.name}"
        if isinstance(node, ast.ImportFrom):
            assert node.module and node.module.split(".")[0] in ALLOWED_IMPORTS, f"{name}.py imports {node.module}"


MICRO_MODULES = sorted(p.stem for p in FW.glob("micro_*.py"))


@pytest.mark.parametrize("name", MICRO_MODULES)
def test_micro_bit_modules_avoid_what_micropython_1_9_2_lacks(name):
    """What the CPython tests cannot catch and the micro:bit's MicroPython 1.9.2 crashes on (each found
    there): str.encode (an error path that ended main.py) and slices with a step ([::-1])."""
    tree = ast.parse((FW / f"{name}.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            assert node.attr != "encode", f"{name}.py:{node.lineno}: .encode() (none on MicroPython 1.9.2)"
        if isinstance(node, ast.Slice):
            assert node.step is None, f"{name}.py:{node.lineno}: a slice with a step"
