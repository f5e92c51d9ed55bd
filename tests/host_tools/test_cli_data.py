"""`snn-edge data ...` through the real console script."""
import json
import subprocess
import sys

import pytest


def run_cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "host_tools.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout)


def test_help_lists_commands():
    r = run_cli("--help")
    assert r.returncode == 0 and "data" in r.stdout


def test_data_info_on_real_nmnist(nmnist_small):
    r = run_cli("data", "info", nmnist_small)
    assert r.returncode == 0, r.stderr
    assert "1,000 recordings, 10 classes, sensor 34x34x2" in r.stdout
    assert "0: 97, 1: 116, 2: 99, 3: 93, 4: 105, 5: 92, 6: 94, 7: 117, 8: 87, 9: 100" in r.stdout
    s = json.loads(run_cli("data", "info", nmnist_small, "--json").stdout)
    assert s["recordings"] == 1000 and s["sensor_size"] == [[34, 34, 2]]
    assert 3000 < s["events_per_recording"]["mean"] < 6000 and 280 < s["duration_ms"]["mean"] < 330


def test_data_plot_writes_png(nmnist_small, tmp_path):
    out = tmp_path / "r.png"
    r = run_cli("data", "plot", nmnist_small, "--out", out, "--index", 5)
    assert r.returncode == 0, r.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("make_bad, message", [
    (lambda p: p / "missing", "dataset folder not found"),
    (lambda p: (p / "Train" / "x").mkdir(parents=True) or p, "label folder name 'x' is not a class number"),
    (lambda p: [(p / "a.bin").write_bytes(b"123456")] and p / "a.bin", "not a multiple of 5"),
])
def test_bad_input_one_line_error_nonzero_exit(tmp_path, make_bad, message):
    r = run_cli("data", "info", make_bad(tmp_path))
    assert r.returncode == 2
    assert message in r.stderr and len(r.stderr.strip().splitlines()) == 1
