"""benchmarks/device_adaptation.py on a small configuration: one JSON line whose rows are consistent."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_adaptation_benchmark_prints_one_consistent_json_line(nmnist_small, tmp_path):
    png = tmp_path / "label_free.png"
    r = subprocess.run([sys.executable, "benchmarks/device_adaptation.py", "--data", str(nmnist_small / "Train"),
                        "--shift", "dx=2", "--shift", "gain=0.5,noise=5", "--epochs", "1", "--adapt", "10", "--tune", "--tune-samples", "10",
                        "--label-free", "24", "--every", "10", "--gate", "0", "--guard", "warmup=4,period=5",
                        "--plot", str(png)],
                       cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["split"] == {"train": 602, "val": 199, "test": 199}
    rows = out["shifts"]
    assert [(row["shift"], row["rule"]) for row in rows] == [
        (s, rule) for s in ("dx=2", "gain=0.5,noise=5")
        for rule in ("align", "readout_delta", "solsa_last_full", "solsa_last_factorised", "solsa_all")]
    aligned = [row for row in rows if row["rule"] == "align"]
    rows = [row for row in rows if row["rule"] != "align"]
    for row in aligned:     # label-free: the board's rounds on the shifted stream, weights untouched
        # 20 a round, one to three rounds; a noisy sample that overflows the board's buffer does not count
        assert row["adaptation_samples"] == 0 and 20 <= row["calibration_samples"] <= 199
        assert row["learned_layers"] == "none" and row["dt_us"] > 0
        lost = row["acc_unshifted"] - row["acc_shifted_before"]
        if lost > 0:
            assert abs((row["acc_shifted_after"] - row["acc_shifted_before"]) / lost - row["recovered_fraction"]) < 2e-3
    assert abs(aligned[0]["crop"][0] - 2) <= 1, "a 2-pixel offset is found within a pixel"
    assert aligned[0]["calibration_samples"] == 20 and aligned[1]["noise_filter"] is True
    for row in rows:
        assert row["adaptation_samples"] == 10 and row["test_samples"] == 199 and row["lr_s_tuned_on_train"]
        if row["rule"] == "solsa_all":
            assert row["learned_layers"] == "all" and row["k_update"] == 5
            assert row["lr_s"] in (14, 16, 18) and row["lrh_s"] in (14, 16, 18, 20)
        else:
            assert row["learned_layers"] == "last"
            assert row["lr_s"] in ((6, 8, 10, 12) if row["rule"] == "readout_delta" else (12, 14, 16, 18))
        lost = row["acc_unshifted"] - row["acc_shifted_before"]
        if row["recovered_fraction"] is not None:
            got = (row["acc_shifted_after"] - row["acc_shifted_before"]) / lost
            assert abs(got - row["recovered_fraction"]) < 2e-3
    bptt = out["bptt_bytes_same_layers"]
    assert 0 < bptt["solsa_last_full"] < bptt["solsa_all"]      # BPTT of the last layer vs of every layer
    for name, frac in out["learning_state_fraction_of_bptt"].items():
        assert frac == round(out["learning_state_bytes"][name] / bptt[name], 4)
    # every layer learning keeps more than the last layer alone, and within 10 % of BPTT's (issue 16)
    assert out["learning_state_bytes"]["solsa_all"] > out["learning_state_bytes"]["solsa_last_full"]
    assert out["learning_state_fraction_of_bptt"]["solsa_all"] <= 0.10
    # label-free rows: each shift x rule, unguarded then guarded, over 24 unlabelled samples
    free = out["label_free"]
    assert out["guard_params"] == {"warmup": 4, "period": 5, "conf_drop": 16, "rate_band": 64, "share_rise": 64}
    assert [(row["shift"], row["rule"], row["guarded"]) for row in free] == [
        (s, rule, g) for s in ("dx=2", "gain=0.5,noise=5") for rule in ("readout_delta", "solsa_last_full")
        for g in (False, True)]
    before = {row["shift"]: row["acc_shifted_before"] for row in rows}
    for row in free:
        assert row["unlabelled_samples"] == 24 and row["test_samples"] == 199 and row["gate"] == 0
        assert [k for k, _ in row["trajectory"]] == [0, 10, 20, 24]
        assert row["trajectory"][0][1] == row["acc_before"] == before[row["shift"]]
        assert row["trajectory"][-1][1] == row["acc_after"]
        assert all(0 <= a <= 1 for _, a in row["trajectory"])
        assert 0 < row["top_class_share"] <= 1 and 0 <= row["mean_confidence"] <= 255
        if not row["guarded"]:
            assert "guard" not in row
            assert row["self_trained"] == 24          # gate 0: every sample is learned
            continue
        g = row["guard"]
        # the warm-up (samples 1-3; the 4th ends it with a snapshot and is learned) is never learned; after it,
        # learning stops only when the guard froze
        assert g["phase"] in ("learn", "frozen") and g["snapshots"] + g["rollbacks"] >= 1
        if g["phase"] == "frozen":
            assert g["rollbacks"] == 1 and g["why"] > 0 and 9 <= g["frozen_at_sample"] <= 24
            assert row["self_trained"] == g["frozen_at_sample"] - 4     # samples 4 .. frozen_at - 1 (1-based)
        else:
            assert g["rollbacks"] == 0 and g["frozen_at_sample"] is None and row["self_trained"] == 24 - 3
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_adaptation_benchmark_adapts_on_the_32_bit_board(nmnist_small):
    """--board unix32: every row also adapts on the 32-bit unix port over the serial link (a fresh board per
    row) and its answers on the shifted test recordings equal the integer simulator's."""
    exe = REPO / ".." / "shared" / "boards" / "unix32" / "micropython"
    if not exe.is_file():
        import pytest
        pytest.skip(f"{exe} not found: the 32-bit boards are in ../shared/boards (README there)")
    r = subprocess.run([sys.executable, "benchmarks/device_adaptation.py", "--data", str(nmnist_small / "Train"),
                        "--shift", "dx=2", "--epochs", "1", "--adapt", "10", "--rules", "readout_delta,solsa_all",
                        "--align", "10", "--label-free", "0", "--board", "unix32"],
                       cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = json.loads(r.stdout.strip().splitlines()[-1])["shifts"]
    assert [row["rule"] for row in rows] == ["align", "readout_delta", "solsa_all"]
    for row in rows:
        assert row["board"] == "unix32" and row["board_bit_exact"] is True, row
        assert row["board_dropped_test_samples"] == 0
        assert row["board_acc_after"] == round(row["acc_shifted_after"], 4)
