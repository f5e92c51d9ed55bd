"""Atomic persistence: kill a real MicroPython process (112K heap on the 64-bit port, precompiled firmware) between any two
filesystem writes; the board then boots a complete model (the old or the new one, never a broken one),
and the same for weight checkpoints."""
from __future__ import annotations

import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest

from converters.blob import intmodel_to_blob
from converters.intmodel import IntLayer, IntModel, default_learn
from firmware_py import store as fstore

from .conftest import MICROPYTHONS, REPO, micropython_exe


def _model(seed):
    rng = np.random.default_rng(seed)
    layers = [IntLayer(rng.integers(-50, 51, (72, 40)).astype(np.int8), np.array(3000, np.int32), 3500, 900, 3, 5),
              IntLayer(rng.integers(-50, 51, (40, 4)).astype(np.int8), np.array(3000, np.int32), 3500, 900, 3, 5)]
    return IntModel(layers, 1, (6, 6, 1000, 10, 1, (0, 0, 6, 6), 0), default_learn("readout_delta"))


def _crc(data):
    return int.from_bytes(data[-4:], "little")


def _cmd(interp):
    if interp in MICROPYTHONS:
        # the whole Device (all rules, blob, store) takes ~56K of a 64-bit port's heap once imported as .mpy
        # files (about 50K of the 32-bit port's: its bytecode sits in the heap), and it allocates its event
        # buffer (the binner's slots) when the model loads: small boards, with room for a small model
        return [micropython_exe(interp), "-X", "heapsize=" + ("112K" if interp == "micropython" else "96K")]
    return [sys.executable]


FW_PATH = {"micropython": "."}


def _run(interp, *args, kill_at=None):
    """Run the script; with kill_at, SIGKILL it right after its kill_at-th filesystem operation.
    Returns (stdout lines, number of operations seen, finished?)."""
    fw = FW_PATH["micropython"] if interp in MICROPYTHONS else "."
    cmd = _cmd(interp) + [str(REPO / "tests" / "firmware" / "store_kill_mpy.py"), fw] + list(args)
    p = subprocess.Popen(cmd, cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    lines, ops = [], 0
    for line in p.stdout:
        lines.append(line.strip())
        if line.startswith("OP "):
            ops += 1
            if ops == kill_at:
                p.send_signal(signal.SIGKILL)
                p.wait()
                return lines, ops, False
            p.stdin.write("\n")
            p.stdin.flush()
    p.wait()
    assert p.returncode == 0, "\n".join(lines)
    return lines, ops, True


@pytest.mark.parametrize("interp", MICROPYTHONS + ("cpython",))
def test_model_survives_a_kill_between_any_two_writes(tmp_path, interp, mpy_tree):
    FW_PATH["micropython"] = str(mpy_tree)
    old, new = intmodel_to_blob(_model(1)), intmodel_to_blob(_model(2))
    (tmp_path / "new.blob").write_bytes(new)
    base = tmp_path / "base"
    base.mkdir()
    (base / fstore.MODEL_FILE).write_bytes(old)
    shutil.copytree(base, tmp_path / "probe")
    _, n_ops, done = _run(interp, str(tmp_path / "probe"), "write-model", str(tmp_path / "new.blob"))
    assert done and n_ops >= 5    # several chunks, close, rename, cleanup
    seen = set()
    for k in range(1, n_ops + 1):
        root = tmp_path / f"k{k}"
        shutil.copytree(base, root)
        lines, _, finished = _run(interp, str(root), "write-model", str(tmp_path / "new.blob"), kill_at=k)
        assert not finished
        boot, _, _ = _run(interp, str(root), "boot")
        assert boot[0].startswith("MODEL "), (k, boot)
        crc = int(boot[0].split()[1])
        assert crc in (_crc(old), _crc(new)), k
        seen.add(crc)
        if "rename" in lines[-1]:
            assert crc == _crc(new), f"killed after the commit (op {k}) but the old model booted"
    assert seen == {_crc(old), _crc(new)}


@pytest.mark.parametrize("interp", MICROPYTHONS + ("cpython",))
def test_weights_checkpoint_survives_a_kill_between_any_two_writes(tmp_path, interp, mpy_tree):
    FW_PATH["micropython"] = str(mpy_tree)
    data = intmodel_to_blob(_model(3))
    base = tmp_path / "base"
    base.mkdir()
    (base / fstore.MODEL_FILE).write_bytes(data)
    probe = tmp_path / "probe"
    shutil.copytree(base, probe)
    _, n_ops, done = _run(interp, str(probe), "write-weights")
    assert done and n_ops >= 3
    boot, _, _ = _run(interp, str(probe), "boot")
    assert boot[1] == "W0 7"            # a completed checkpoint is applied at boot
    first = _model(3).layers[-1].W.flat[0]
    for k in range(1, n_ops + 1):
        root = tmp_path / f"k{k}"
        shutil.copytree(base, root)
        lines, _, _ = _run(interp, str(root), "write-weights", kill_at=k)
        boot, _, _ = _run(interp, str(root), "boot")
        assert boot[0] == "MODEL %d" % _crc(data), (k, boot)
        assert boot[1] in ("W0 %d" % first, "W0 7"), (k, boot)
        if "rename" in lines[-1]:
            assert boot[1] == "W0 7"
