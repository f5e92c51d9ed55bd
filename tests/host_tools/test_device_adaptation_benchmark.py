"""benchmarks/device_adaptation.py on a small configuration: one JSON line whose rows are consistent."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_adaptation_benchmark_prints_one_consistent_json_line(nmnist_small):
    r = subprocess.run([sys.executable, "benchmarks/device_adaptation.py", "--data", str(nmnist_small / "Train"),
                        "--shift", "dx=2", "--shift", "gain=0.5,noise=5", "--epochs", "1", "--adapt", "10", "--tune", "--tune-samples", "10"],
                       cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["split"] == {"train": 602, "val": 199, "test": 199}
    rows = out["shifts"]
    assert [(row["shift"], row["rule"]) for row in rows] == [
        (s, rule) for s in ("dx=2", "gain=0.5,noise=5")
        for rule in ("readout_delta", "solsa_last_full", "solsa_last_factorised", "solsa_all")]
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
