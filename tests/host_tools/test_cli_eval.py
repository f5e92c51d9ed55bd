"""`snn-edge eval` on deployed models: the integer .npz, the .onnx and the device blob, with each executor,
on real N-MNIST recordings (../shared/data/nmnist-small) and a model trained on them (tests/conftest.py)."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from host_tools.cli import main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def val_folder(nmnist_small, nmnist_frames, tmp_path_factory):
    """Three validation recordings per digit (not trained on) in the N-MNIST layout, in a temp folder."""
    from edge.data import NMNIST_SPEC, load_frames
    _, y, _, val = nmnist_frames
    _, _, names = load_frames(str(nmnist_small), NMNIST_SPEC, progress=False)  # cached by the fixture
    root = tmp_path_factory.mktemp("val30")
    for digit in range(10):
        (root / "Train" / str(digit)).mkdir(parents=True)
        for i in [i for i in val if y[i] == digit][:3]:
            shutil.copy(nmnist_small / names[i], root / names[i])
    return root


@pytest.fixture(scope="module")
def deployed(nmnist_trained, nmnist_frames, tmp_path_factory):
    """The trained float checkpoint, its int8 model .npz, the .onnx and the blob `snn-edge export` writes."""
    from converters.intmodel import save_intmodel
    from converters.quantize import quantize
    from edge.model import save_checkpoint
    from tests.conftest import calibration_frames
    spec, params = nmnist_trained
    folder = tmp_path_factory.mktemp("deployed")
    save_checkpoint(folder / "m.ckpt", spec, params)
    save_intmodel(folder / "m.npz", quantize(spec, params, calibration_frames(nmnist_frames, 100)))
    assert main(["export", str(folder / "m.npz"), "-o", str(folder / "m.onnx"), "--blob",
                 str(folder / "m.blob")]) == 0
    return folder


def _eval(capsys, model, data, *extra) -> dict:
    capsys.readouterr()
    assert main(["eval", str(model), "--data", str(data), "--json", "--no-progress", *extra]) == 0
    return json.loads(capsys.readouterr().out)


def test_three_executors_give_identical_predictions(deployed, val_folder, capsys, micropython_bin):
    """Each executor on a different file of the same model: npz in the simulator, the .onnx's own graph in
    onnxruntime, the blob's model in the firmware under MicroPython; one model, one set of answers."""
    results = {}
    for name, executor in (("m.npz", "intsim"), ("m.onnx", "onnxruntime"), ("m.blob", "micropython")):
        out = deployed / f"{name}-{executor}"
        r = _eval(capsys, deployed / name, val_folder, "--executor", executor, "--out-dir", str(out))
        assert r["executor"] == executor and r["n"] == 30 and r["split"] == "all"
        assert (out / "m.confusion.png").stat().st_size > 1000 and (out / "m.reliability.png").stat().st_size > 1000
        results[executor] = r
    ref = results["intsim"]
    assert ref["accuracy"] > 0.5, "the quantised model should classify real digits"
    for executor, r in results.items():
        assert r["predictions"] == ref["predictions"], executor
        assert (r["accuracy"], r["nll"], r["ece"]) == (ref["accuracy"], ref["nll"], ref["ece"]), executor
    # the default executor of an integer model is the simulator; a float checkpoint reports the same fields
    assert _eval(capsys, deployed / "m.blob", val_folder, "--out-dir", str(deployed / "d"))["executor"] == "intsim"
    fl = _eval(capsys, deployed / "m.ckpt", val_folder, "--out-dir", str(deployed / "f"))
    assert fl["executor"] == "float" and set(fl) == set(ref)
    agree = np.mean(np.array(fl["predictions"]) == np.array(ref["predictions"]))
    assert agree >= 0.8, f"float and int8 predictions agree on only {agree:.2f} of 30 recordings"


def test_executors_agree_on_every_score(deployed, val_folder, micropython_bin):
    """Below the CLI: the per-class spike counts themselves, not only their argmax, are equal."""
    from converters.blob import load_any_model
    from converters.executors import int_scores
    from edge.data import load_frames
    from firmware_py.binning import BinSpec
    model = load_any_model(deployed / "m.blob")
    X, _, _ = load_frames(str(val_folder), BinSpec(*model.binning), progress=False)
    ref = int_scores(model, X, "intsim")
    assert ref.sum() > 0
    for executor in ("onnxruntime", "micropython"):
        np.testing.assert_array_equal(int_scores(model, X, executor), ref, err_msg=executor)


def test_eval_text_output_and_split_of_an_integer_model(deployed, val_folder, capsys):
    capsys.readouterr()
    assert main(["eval", str(deployed / "m.onnx"), "--data", str(val_folder), "--split", "val", "--executor",
                 "onnxruntime", "--no-progress", "--out-dir", str(deployed / "t")]) == 0
    out = capsys.readouterr().out
    assert "10 samples (val, onnxruntime): accuracy" in out and "NLL" in out and "ECE" in out
    assert "confusion matrix ->" in out and "reliability diagram ->" in out


def test_eval_refuses_an_executor_for_a_float_checkpoint(deployed, val_folder, capsys):
    assert main(["eval", str(deployed / "m.ckpt"), "--data", str(val_folder), "--executor", "intsim"]) == 2
    assert "is a float checkpoint" in capsys.readouterr().err


def test_integrator_readout_logits_are_the_float_time_mean(nmnist_trained, nmnist_frames):
    """An integrator's summed membrane becomes the float network's time-mean membrane in real units."""
    import dataclasses

    from converters.executors import int_scores, scores_to_logits
    from converters.quantize import quantize
    from edge import bptt
    from tests.conftest import calibration_frames
    spec, params = nmnist_trained
    spec = dataclasses.replace(spec, readout="membrane")
    model = quantize(spec, params, calibration_frames(nmnist_frames, 50), calibrate_theta=False)
    X, _, _, val = nmnist_frames
    Xv = X[val[:20]]
    logits = scores_to_logits(model, int_scores(model, Xv), Xv.shape[1])
    ref = bptt.forward(spec, [p.astype(np.float64) for p in params],
                       np.ascontiguousarray(Xv.transpose(1, 0, 2)).astype(np.float64)).logits
    assert np.corrcoef(logits.ravel(), ref.ravel())[0, 1] > 0.95
    assert np.abs(logits - ref).mean() < 0.2 * np.abs(ref).mean()
