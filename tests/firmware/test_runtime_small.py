"""The event-driven runtime vs fixedpoint's reference step and the golden vectors, on every executor:
CPython (plain and numpy kernels) and the MicroPython unix ports, 64-bit and 32-bit (plain and viper
kernels), at a 64K heap (precompiled .mpy, as boards run it) and at 192K (sources compiled on the fly)."""
from __future__ import annotations

import pytest

from .conftest import MICROPYTHONS, run_script


@pytest.mark.parametrize("kernel", ["plain", "fast"])
def test_runtime_matches_reference_under_cpython(kernel):
    out = run_script("cpython", "check_runtime_mpy.py", kernel)
    assert out.strip().splitlines()[-1].startswith("OK"), out
    if kernel == "fast":
        assert "kernel numpy" in out


@pytest.mark.parametrize("interp", MICROPYTHONS)
@pytest.mark.parametrize("kernel", ["plain", "fast"])
@pytest.mark.parametrize("heap", ["64K", "192K"])
def test_runtime_matches_reference_under_micropython(kernel, heap, interp, mpy_tree):
    path = mpy_tree if heap == "64K" else None
    if kernel == "fast" and heap == "64K":
        heap = "96K"    # the viper kernels' machine code and their sources sit in the heap too
    out = run_script(interp, "check_runtime_mpy.py", kernel, heap=heap, path=path)
    assert out.strip().splitlines()[-1].startswith("OK"), out
    if kernel == "fast":
        assert "kernel viper" in out and "lif viper" in out


@pytest.mark.parametrize("interp", MICROPYTHONS)
def test_event_kernels_match_the_plain_paths(interp):
    """fast.decode_viper and fast.bin_viper (slots and out-of-order events included) against
    EventBatch.decode_into and the plain Binner, on random batches (tests/firmware/check_event_kernels_mpy.py)."""
    out = run_script(interp, "check_event_kernels_mpy.py", heap="2M")
    assert out.strip().splitlines()[-1] == "ok 320", out
