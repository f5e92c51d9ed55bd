"""Export benchmark: ONNX/NIR/blob sizes and integer inference speed, onnxruntime vs the numpy simulator
(and the pure-Python firmware runtime under CPython), side by side in one run. Prints ONE JSON line.

    python benchmarks/export.py [--checkpoint model.ckpt] [--data ../shared/data/nmnist-small] [--samples 100]

Without --checkpoint a 578-128-10 network is trained for a few epochs first (BPTT, same data).
Speeds are sample-steps per second (one sample advanced by one time step); bit_exact says whether all
three executors produced the same spikes and states on the timed runs.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--data", default=str(ROOT / ".." / "shared" / "data" / "nmnist-small"))
    ap.add_argument("--samples", type=int, default=100)
    ap.add_argument("--firmware-samples", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    from converters import verify
    from converters.blob import intmodel_to_blob
    from converters.nir_io import export_nir
    from converters.onnx_export import export
    from converters.quantize import quantize
    from edge.data import NMNIST_SPEC, load_frames, split_stratified
    from edge.model import NetworkSpec, init_params, load_checkpoint

    source = args.data if os.path.isdir(args.data) else "builtin"
    X, y, _ = load_frames(source, NMNIST_SPEC, progress=False)
    train, val = split_stratified(y, 0.2, 0)
    if args.checkpoint:
        spec, params, _ = load_checkpoint(args.checkpoint)
    else:
        from edge.rules import make_rule
        from edge.train import FitConfig, fit
        spec = NetworkSpec(sizes=(578, 128, 10), a_syn=0.5, a_mem=0.8, binning=NMNIST_SPEC.as_tuple())
        params = init_params(spec, np.random.default_rng(0))
        params = fit(make_rule("bptt"), spec, params, (X[train], y[train]), None,
                     FitConfig(epochs=5, progress=False)).params
    model = quantize(spec, params, np.ascontiguousarray(X[train[:200]].transpose(1, 0, 2)))
    Xb = np.ascontiguousarray(X[val[: args.samples]].transpose(1, 0, 2))
    T, B, _ = Xb.shape
    with tempfile.TemporaryDirectory() as tmp:
        data = export(model, os.path.join(tmp, "m.onnx"))
        export_nir(model, os.path.join(tmp, "m.nir"))
        nir_bytes = os.path.getsize(os.path.join(tmp, "m.nir"))
    blob_bytes = len(intmodel_to_blob(model))
    from converters.onnx_export import to_onnx
    sess = verify.session(to_onnx(model))
    from converters import intsim
    t_ort = best_of(lambda: verify.run_sequence(sess, Xb), args.repeats)
    t_np = best_of(lambda: intsim.run(model, Xb), args.repeats)
    Xf = np.ascontiguousarray(Xb[:, : args.firmware_samples])
    t0 = time.perf_counter()
    fw = verify.compare_firmware(model, Xf)   # includes one numpy run (negligible next to pure Python)
    t_fw = time.perf_counter() - t0
    fwd = verify.compare_forward(model, sess, Xb)
    bit_exact = (fwd["spike_mismatches"] + fwd["state_mismatches"] + fw["spike_mismatches"]
                 + fw["state_mismatches"]) == 0
    steps = T * B
    print(json.dumps({
        "benchmark": "export", "arch": "-".join(map(str, model.sizes)), "data": source, "samples": B,
        "steps_per_sample": T, "onnx_bytes": len(data), "nir_bytes": nir_bytes, "blob_bytes": blob_bytes,
        "onnxruntime_sample_steps_per_s": round(steps / t_ort, 1),
        "numpy_int_sample_steps_per_s": round(steps / t_np, 1),
        "firmware_cpython_sample_steps_per_s": round(T * Xf.shape[1] / t_fw, 1),
        "onnxruntime_over_numpy_int": round(t_np / t_ort, 3),
        "spikes_per_sample": round(fwd["total_spikes"] / B, 1), "bit_exact": bit_exact}))


if __name__ == "__main__":
    main()
