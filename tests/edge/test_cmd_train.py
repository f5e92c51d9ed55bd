"""`snn-edge train` and `snn-edge eval` end to end, on real N-MNIST recordings (../shared/data)."""
from __future__ import annotations

import json
import re
import shutil

import pytest

from edge.model import load_checkpoint
from host_tools.cli import main as cli_main


@pytest.fixture(scope="module")
def small_folder(nmnist_small, tmp_path_factory):
    """5 real recordings per digit in the N-MNIST layout (copied to a temp folder, not the repo)."""
    root = tmp_path_factory.mktemp("nmnist5") / "Train"
    for digit in range(10):
        src = sorted((nmnist_small / "Train" / str(digit)).glob("*.bin"))[:5]
        (root / str(digit)).mkdir(parents=True)
        for f in src:
            shutil.copy(f, root / str(digit) / f.name)
    return root


def test_train_then_eval(small_folder, tmp_path, capsys):
    out = tmp_path / "run" / "m.ckpt"
    rc = cli_main(["train", "--data", str(small_folder), "--arch", "578-32-10", "--epochs", "2",
                   "--out", str(out), "--no-progress", "--set", "grad_clip=5", "--learn-syn-decay"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert re.search(r"best validation accuracy \d\.\d{4} at epoch \d", printed)
    spec, params, extra = load_checkpoint(out)
    assert spec.sizes == (578, 32, 10) and spec.learn_syn_decay and params[0].a_syn.shape == (578,)
    assert spec.binning == (34, 34, 10_000, 30, 2, (0, 0, 34, 34), 0)
    assert extra["rule"] == {"name": "bptt", "options": {"lr": 2e-3, "weight_decay": 0.0, "loss": "ce",
                                                         "grad_clip": 5.0, "method": "auto"}}
    assert len(extra["train_state"]["history"]) == 2
    assert (tmp_path / "run" / "m.curve.png").stat().st_size > 1000

    rc = cli_main(["eval", str(out), "--data", str(small_folder), "--split", "val", "--json", "--no-progress"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["n"] == 10 and 0.0 <= summary["accuracy"] <= 1.0 and summary["nll"] > 0
    best = extra["train_state"]["history"][extra["train_state"]["best_epoch"]]
    assert summary["accuracy"] == pytest.approx(best["val_acc"])  # eval reproduces the split and the model
    assert (tmp_path / "run" / "m.confusion.png").exists() and (tmp_path / "run" / "m.reliability.png").exists()

    # resume continues the same run to 3 epochs
    rc = cli_main(["train", "--data", str(small_folder), "--arch", "578-32-10", "--epochs", "3", "--out", str(out),
                   "--no-progress", "--set", "grad_clip=5", "--learn-syn-decay", "--resume"])
    assert rc == 0
    assert len(load_checkpoint(out)[2]["train_state"]["history"]) == 3


@pytest.mark.parametrize("argv,message", [
    (["--arch", "578-x-10"], "--arch: expected sizes"),
    (["--arch", "2312-32-10"], "the first size must be 578"),
    (["--arch", "578-32-4"], "the data has 10 classes"),
    (["--rule", "hebb"], "--rule: expected one of"),
    (["--set", "grad_clip"], "--set: expected KEY=VALUE"),
])
def test_train_bad_arguments(small_folder, tmp_path, capsys, argv, message):
    rc = cli_main(["train", "--data", str(small_folder), "--epochs", "1", "--out", str(tmp_path / "m.ckpt"),
                   "--no-progress", *argv])
    assert rc == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "m.ckpt").exists()


def test_bad_data_paths(tmp_path, capsys):
    assert cli_main(["train", "--data", str(tmp_path / "missing"), "--no-progress"]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert cli_main(["train", "--data", str(tmp_path / "empty"), "--no-progress"]) == 2
    assert "empty" in capsys.readouterr().err


def test_resume_with_another_architecture_is_refused(small_folder, tmp_path, capsys):
    out = tmp_path / "m.ckpt"
    assert cli_main(["train", "--data", str(small_folder), "--arch", "578-16-10", "--epochs", "1",
                     "--out", str(out), "--no-progress"]) == 0
    before = out.read_bytes()
    assert cli_main(["train", "--data", str(small_folder), "--arch", "578-24-10", "--epochs", "2",
                     "--out", str(out), "--no-progress", "--resume"]) == 2
    assert "578-16-10" in capsys.readouterr().err
    assert out.read_bytes() == before


@pytest.mark.slow
def test_reaches_85_percent_on_real_nmnist(nmnist_small, tmp_path, capsys):
    """The README's claim: default settings, 30 epochs, stratified 80/20 split of the 1,000 recordings."""
    out = tmp_path / "m.ckpt"
    # the same path as tests/converters/test_real_data.py, so the session's frame cache is shared
    assert cli_main(["train", "--data", str(nmnist_small), "--out", str(out), "--no-progress"]) == 0
    assert re.search(r"best validation accuracy (\d\.\d+)", capsys.readouterr().out)
    state = load_checkpoint(out)[2]["train_state"]
    acc = state["history"][state["best_epoch"]]["val_acc"]
    assert acc >= 0.85, [round(h["val_acc"], 3) for h in state["history"]]
    assert cli_main(["eval", str(out), "--data", str(nmnist_small), "--split", "val", "--json",
                     "--no-progress"]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] == pytest.approx(acc)


def test_rule_na_trains_the_authors_neuron_and_eval_and_resume_use_it(small_folder, tmp_path, capsys):
    out = tmp_path / "na" / "m.ckpt"
    argv = ["train", "--data", str(small_folder), "--arch", "578-32-10", "--epochs", "1", "--out", str(out),
            "--no-progress", "--rule", "na", "--set", "loss=kernel", "--set", "beta1=0", "--readout", "spikes"]
    assert cli_main(argv) == 0
    spec, _, extra = load_checkpoint(out)
    assert spec.neuron == "hard_reset_psc" and extra["rule"]["name"] == "na"
    assert extra["rule"]["options"]["loss"] == "kernel" and extra["rule"]["options"]["beta1"] == 0.0
    capsys.readouterr()
    assert cli_main(["eval", str(out), "--data", str(small_folder), "--split", "val", "--json", "--no-progress"]) == 0
    summary = json.loads(capsys.readouterr().out)
    best = extra["train_state"]["history"][extra["train_state"]["best_epoch"]]
    assert summary["accuracy"] == pytest.approx(best["val_acc"])  # eval runs the hard-reset network too
    assert cli_main(argv[:6] + ["2"] + argv[7:] + ["--resume"]) == 0
    assert len(load_checkpoint(out)[2]["train_state"]["history"]) == 2


def test_rule_defaults_apply_unless_the_command_line_sets_them(small_folder, tmp_path, monkeypatch):
    from host_tools import cmd_train

    monkeypatch.setitem(cmd_train.RULE_DEFAULTS, "bptt", {"readout": "membrane", "epochs": 2, "a_mem": 0.7,
                                                          "options": {"grad_clip": 2.0}})
    base = ["train", "--data", str(small_folder), "--arch", "578-16-10", "--no-progress"]
    assert cli_main([*base, "--out", str(tmp_path / "a.ckpt")]) == 0
    spec, _, extra = load_checkpoint(tmp_path / "a.ckpt")
    assert spec.readout == "membrane" and spec.a_mem == (0.7, 0.7) and len(extra["train_state"]["history"]) == 2
    assert spec.a_syn == (cmd_train.DEFAULTS["a_syn"],) * 2   # not in the rule's entry: the shared default
    assert extra["rule"]["options"]["grad_clip"] == 2.0
    assert cli_main([*base, "--out", str(tmp_path / "b.ckpt"), "--readout", "spikes", "--epochs", "1",
                     "--set", "grad_clip=5"]) == 0
    spec, _, extra = load_checkpoint(tmp_path / "b.ckpt")
    assert spec.readout == "spikes" and len(extra["train_state"]["history"]) == 1
    assert extra["rule"]["options"]["grad_clip"] == 5.0


def test_protocol_split_trains_on_train_and_eval_scores_the_unseen_test_part(small_folder, tmp_path, capsys):
    out = tmp_path / "p.ckpt"
    assert cli_main(["train", "--data", str(small_folder), "--arch", "578-16-10", "--epochs", "1", "--out", str(out),
                     "--no-progress", "--protocol-split"]) == 0
    extra = load_checkpoint(out)[2]
    capsys.readouterr()
    counts = {}
    for part in ("train", "val", "test"):
        assert cli_main(["eval", str(out), "--data", str(small_folder), "--split", part, "--json",
                         "--no-progress"]) == 0
        summary = json.loads(capsys.readouterr().out)
        counts[part] = summary["n"]
        if part == "val":
            assert summary["accuracy"] == pytest.approx(extra["train_state"]["best_acc"])
    assert counts == {"train": 30, "val": 10, "test": 10}   # 60/20/20 of 5 recordings per digit
    plain = tmp_path / "plain.ckpt"
    assert cli_main(["train", "--data", str(small_folder), "--arch", "578-16-10", "--epochs", "1",
                     "--out", str(plain), "--no-progress"]) == 0
    assert cli_main(["eval", str(plain), "--data", str(small_folder), "--split", "test", "--no-progress"]) == 2
    assert "not trained with --protocol-split" in capsys.readouterr().err
