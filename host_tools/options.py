"""argparse `type=` functions shared by every `snn-edge` sub-command: one definition of each option kind.

A value is checked when the command line is parsed, so a long command (train, demo, verify) fails before it
starts, with one line naming the option, what it expects and what it got. argparse adds the option's name
to the message (`argument --heap: ...`). Output paths are checked the same way: the file's folder (or the
nearest folder that exists, since writers create missing ones) must be a directory we can create a file in.
"""
from __future__ import annotations

import argparse
import math
import os
import re
import tempfile
from pathlib import Path

# Sizes are bytes of RAM on a board or a host process: anything above this is a typo, not a heap.
MAX_SIZE_BYTES = 1 << 32
_SIZE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*([kKmMgG]?)[bB]?")
_UNITS = {"": 1, "k": 1024, "m": 1024 ** 2, "g": 1024 ** 3}


def _int(text: str, what: str) -> int:
    try:
        return int(str(text).strip(), 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None


def positive_int(text: str) -> int:
    v = _int(text, "a positive integer")
    if v <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer (>= 1), got {text!r}")
    return v


def nonneg_int(text: str) -> int:
    v = _int(text, "an integer >= 0")
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return v


def _finite_float(text: str, what: str) -> float:
    try:
        v = float(str(text).strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"expected {what} (finite), got {text!r}")
    return v


def positive_float(text: str) -> float:
    v = _finite_float(text, "a positive number")
    if v <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return v


def nonneg_float(text: str) -> float:
    v = _finite_float(text, "a number >= 0")
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return v


def finite_float(text: str) -> float:
    return _finite_float(text, "a number")


def unit_float(text: str) -> float:
    """A decay or probability: 0 <= v <= 1."""
    v = _finite_float(text, "a number between 0 and 1")
    if not 0 <= v <= 1:
        raise argparse.ArgumentTypeError(f"expected a number 0 <= v <= 1, got {text!r}")
    return v


def xorshift_seed(text: str) -> int:
    """A xorshift32 state: 1 .. 2**32-1 (0 is the generator's fixed point: it would only ever give 0)."""
    v = _int(text, "an integer seed")
    if not 0 < v < 1 << 32:
        raise argparse.ArgumentTypeError(f"expected a seed 1 .. 4294967295 (xorshift32), got {text!r}")
    return v


def arch(text: str) -> str:
    """Layer sizes such as 578-128-10 (edge.model.parse_arch), checked now; returned as text."""
    from edge.errors import SnnEdgeError
    from edge.model import parse_arch
    try:
        parse_arch(text)
    except SnnEdgeError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--arch: ")) from None
    return text


def open_fraction(text: str) -> float:
    """A fraction strictly between 0 and 1 (a validation split: both parts non-empty)."""
    v = _finite_float(text, "a fraction between 0 and 1")
    if not 0 < v < 1:
        raise argparse.ArgumentTypeError(f"expected a fraction 0 < f < 1, got {text!r}")
    return v


def size_bytes(text) -> int:
    """A memory size: 65536, 192K, 1.5M, 2M (K = 1024); a whole, positive number of bytes up to 4G.

    The one parser of every --heap (plan, flash, board-sim, demo)."""
    m = _SIZE.fullmatch(str(text).strip())
    if not m:
        raise argparse.ArgumentTypeError(f"expected a size like 65536, 192K, 1.5M or 2M, got {text!r}")
    from fractions import Fraction    # exact: 1.5M is 1572864 bytes, 0.1K is not a whole number of bytes
    v = Fraction(m.group(1)) * _UNITS[m.group(2).lower()]
    if v.denominator != 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of bytes, got {text!r} = {float(v)} bytes")
    if not 0 < v <= MAX_SIZE_BYTES:
        raise argparse.ArgumentTypeError(f"expected a size between 1 byte and 4G, got {text!r}")
    return int(v)


def check_output_file(path) -> str:
    """`path` can be written as a file: not a directory, and its folder (or the nearest existing ancestor,
    since writers create missing folders) is a directory we can create a file in. Raises ValueError."""
    text = os.fspath(path)
    if not str(text).strip():
        raise ValueError("expected a file path, got an empty string")
    p = Path(text)
    if p.is_dir():
        raise ValueError(f"{text} is a directory, expected a file path")
    check_output_dir(p.parent if str(p.parent) else Path("."))
    return text


def check_output_dir(path) -> str:
    """`path` is (or can be created as) a directory we can create files in. Raises ValueError."""
    text = os.fspath(path)
    p = Path(text) if str(text).strip() else Path(".")
    existing = p
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"{existing} is not a directory (needed for {text})")
    try:     # os.access says yes to root on a read-only mount: creating a file is the only sure test
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        raise ValueError(f"cannot write in {existing}: {exc.strerror or exc}") from None
    return text


def output_file(text: str) -> str:
    try:
        return check_output_file(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def output_dir(text: str) -> str:
    try:
        return check_output_dir(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def sensor_shift(text: str) -> str:
    """A --shift spec (edge.shifts.SensorShift.parse syntax), parsed now so a bad one fails before any
    work; returned as text, which is what the data sources take."""
    from edge.shifts import SensorShift
    try:
        SensorShift.parse(text)
    except (ValueError, TypeError) as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--shift: ")) from None
    return text


def guard_spec(text: str) -> dict:
    """'warmup=20,period=20' -> the self-training guard's parameters (firmware_py.guard.DEFAULTS with those
    replaced), checked by the firmware's own Guard."""
    from firmware_py import guard as fguard
    out = dict(fguard.DEFAULTS)
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, _, value = part.partition("=")
        if key not in out or not value.lstrip("-").isdigit():
            raise argparse.ArgumentTypeError(f"--guard: cannot parse {part!r}; expected name=integer with name in "
                                             f"{sorted(out)}")
        out[key] = int(value)
    try:
        fguard.Guard(1, **out)
    except Exception as exc:      # DeviceError: the firmware's own check
        raise argparse.ArgumentTypeError(f"--guard: {getattr(exc, 'msg', exc)}") from None
    return out
