"""Output files (checkpoint, integer model, ONNX, blob, PNG) are written atomically and get the permissions
any new file gets: 0666 less the umask, not tempfile's 0600."""
from __future__ import annotations

import os
import stat

import numpy as np
import pytest

from edge.atomic import atomic_output, write_atomic


@pytest.fixture
def umask():
    """Set a umask for one test and restore the previous one."""
    old = os.umask(0o022)
    os.umask(old)
    yield lambda mask: os.umask(mask)
    os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def _write_every_kind(folder) -> list:
    from converters.blob import intmodel_to_blob, write_blob
    from converters.intmodel import save_intmodel
    from converters.onnx_export import export
    from edge import plots
    from edge.metrics import confusion_matrix
    from edge.model import NetworkSpec, init_params, save_checkpoint
    from tests.converters.helpers import small_model
    spec = NetworkSpec(sizes=(20, 8, 4))
    save_checkpoint(folder / "m.ckpt", spec, init_params(spec, np.random.default_rng(0)))
    model = small_model(np.random.default_rng(1))
    save_intmodel(folder / "m.npz", model)
    export(model, folder / "m.onnx")
    write_blob(folder / "m.blob", intmodel_to_blob(model))
    plots.confusion_matrix(confusion_matrix(np.array([0, 1]), np.array([0, 1]), 2), folder / "cm.png")
    return ["m.ckpt", "m.npz", "m.onnx", "m.blob", "cm.png"]


@pytest.mark.parametrize("mask,want", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_output_files_follow_the_umask(tmp_path, umask, mask, want):
    umask(mask)
    for name in _write_every_kind(tmp_path):
        assert _mode(tmp_path / name) == want, f"{name}: mode {oct(_mode(tmp_path / name))}, umask {oct(mask)}"
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")], "temporary files left behind"


def test_replacing_a_file_and_a_failed_write(tmp_path, umask):
    umask(0o022)
    target = tmp_path / "sub" / "x.bin"
    write_atomic(target, b"one")
    write_atomic(target, b"two")
    assert target.read_bytes() == b"two" and _mode(target) == 0o644
    with pytest.raises(RuntimeError):
        with atomic_output(target) as fh:
            fh.write(b"half")
            raise RuntimeError("disk full")
    assert target.read_bytes() == b"two" and os.listdir(target.parent) == ["x.bin"]
