"""`snn-edge quantize`, `snn-edge export`, `snn-edge verify`: float checkpoint -> integer model -> ONNX/NIR;
`snn-edge import`: a NIR graph (ours, snnTorch's, ...) -> float checkpoint.

Every command that takes a float checkpoint also takes a NIR file (told by its HDF5 signature): the float
network it describes, with the binning it records (ours) or the N-MNIST default binning of `train` (a
foreign file; `snn-edge import` takes other binning options).

quantize: calibrates scales and thresholds on the checkpoint's training split and prints float vs int8
accuracy and spike agreement on its validation split. export: writes the ONNX file (and optionally NIR
or the device blob) from a float checkpoint (quantised on the fly), an integer .npz or an .onnx.
verify: runs the same recordings through the numpy integer simulator, onnxruntime and the firmware
runtime and prints a table of compared spikes/states and mismatches (exit code 1 on any mismatch).
"""
from __future__ import annotations

import argparse
import json
import os

from edge.errors import SnnEdgeError
from host_tools import options as opt

RULE_CHOICES = ("none", "readout_delta", "solsa", "gem")


def register(sub) -> None:
    i = sub.add_parser("import", help="NIR graph (snnTorch, Norse, snn-edge) -> float checkpoint",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    i.add_argument("model", help="NIR file (.nir)")
    i.add_argument("-o", "--out", type=opt.output_file, required=True, help="float checkpoint to write")
    add_nir_dt_option(i)
    from host_tools.cmd_train import add_binning_options
    add_binning_options(i.add_argument_group("binning, for a file that records none (N-MNIST defaults)"))
    i.set_defaults(func=cmd_import)

    q = sub.add_parser("quantize", help="float checkpoint -> int8 integer model (.npz), with a report",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    q.add_argument("checkpoint", help="float checkpoint written by `snn-edge train`, or a NIR file")
    q.add_argument("-o", "--out", type=opt.output_file, required=True, help="integer model .npz")
    _common(q)
    q.set_defaults(func=cmd_quantize)

    e = sub.add_parser("export", help="write the ONNX file (and NIR / device blob) of a model",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    e.add_argument("model", help="float checkpoint, integer model .npz, .onnx, or NIR file")
    e.add_argument("-o", "--out", type=opt.output_file, required=True, help="ONNX file to write")
    e.add_argument("--nir", type=opt.output_file, default=None, help="also write a NIR graph (float, lossy) here")
    e.add_argument("--blob", type=opt.output_file, default=None, help="also write the compact device blob here")
    _common(e)
    e.set_defaults(func=cmd_export)

    v = sub.add_parser("verify", help="numpy-int vs onnxruntime (vs the firmware runtime), bit for bit",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    v.add_argument("model", help=".onnx written by `snn-edge export`")
    v.add_argument("--data", required=True, help="folder in the N-MNIST layout, a recording, or 'builtin'")
    v.add_argument("--limit", type=opt.positive_int, default=100, help="number of recordings")
    v.add_argument("--learn-steps", type=opt.nonneg_int, default=50,
                   help="steps of the model's learning rule to compare "
                   "(0: skip)")
    v.add_argument("--no-firmware", action="store_true", help="skip the (slower) pure-Python firmware runtime "
                   "(under CPython and under MicroPython)")
    v.add_argument("--mpy-limit", type=opt.nonneg_int, default=20,
                   help="recordings run under the MicroPython unix port "
                   "(0: skip; needs the `micropython` binary)")
    v.add_argument("--port", default=None, help="also run recordings on a flashed board over its serial link "
                   "(inference; with the weights it holds now) and compare its answers")
    v.add_argument("--board-limit", type=opt.nonneg_int, default=20, help="recordings sent to the board with --port")
    from host_tools.boards import add_target_option
    add_target_option(v, default="auto", help_extra="; with --port")
    v.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    v.set_defaults(func=cmd_verify)


def add_nir_dt_option(p) -> None:
    p.add_argument("--nir-dt", type=opt.positive_float, default=None, metavar="SECONDS",
                   help="for a NIR file: the time step its time constants were written for; unset: what the file "
                   "records (ours), else snnTorch's 1e-4")


def _common(p) -> None:
    add_nir_dt_option(p)
    p.add_argument("--data", default=None, help="calibration data (default: none for an integer model; "
                   "required for a float checkpoint)")
    p.add_argument("--calib", type=opt.positive_int, default=200, help="calibration recordings from the training split")
    p.add_argument("--limit", type=opt.positive_int, default=None, help="only the first N recordings of --data")
    p.add_argument("--rule", default="none", choices=RULE_CHOICES, help="on-device learning rule to embed")
    p.add_argument("--seed", type=opt.xorshift_seed, default=1, help="seed of the on-device learning bank (xorshift32)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=INT",
                   help="an integer hyper-parameter of the rule, e.g. --set lr_s=12")
    p.add_argument("--no-theta-calibration", action="store_true")
    p.add_argument("--no-progress", action="store_true")


def _bin_spec(binning, where: str):
    from firmware_py.binning import BinSpec
    if binning is None:
        raise SnnEdgeError(f"{where}: the checkpoint records no binning (NetworkSpec.binning); cannot load data")
    return BinSpec(*binning)


def _learn(args):
    from converters.intmodel import default_learn
    learn = default_learn(args.rule, args.seed)
    for item in args.set:
        if "=" not in item:
            raise SnnEdgeError(f"--set: expected KEY=INT, got {item!r}")
        k, v = item.split("=", 1)
        if k not in learn.params:
            raise SnnEdgeError(f"--set {k}: not a parameter of rule {args.rule} (expected one of "
                               f"{sorted(learn.params)})")
        try:
            learn.params[k] = int(v)
        except ValueError:
            raise SnnEdgeError(f"--set {k}: expected an integer, got {v!r}") from None
    return learn


def _explicit(args) -> set[str]:
    return {item.split("=", 1)[0] for item in args.set}


def gem_rule_options(extra: dict, params, learn, explicit: set[str]) -> dict:
    """The float GEM's options of a checkpoint, with ONE kappa for the eligibility traces and the
    log-likelihood discount, and the integer rule's ll_decay set to that kappa (unless --set ll_decay).
    Checkpoints from before that (options with ll_decay, kappa in a_mem) keep their two values."""
    from firmware_py import fixedpoint as fp
    options = dict((extra.get("rule") or {}).get("options", {}))
    legacy_ll_decay = options.pop("ll_decay", None)
    options.setdefault("kappa", float(params[0].a_mem))
    if learn.rule == "gem" and "ll_decay" not in explicit:
        learn.params["ll_decay"] = fp.q12_from_float(legacy_ll_decay if legacy_ll_decay is not None
                                                     else options["kappa"])
    return options


def _quantize_checkpoint(args, report: bool):
    import numpy as np

    from converters.quantize import (auto_rule_params, compare, compare_gem, format_report, input_reference, quantize,
                                     quantize_gem)
    from edge.data import last_event_times, load_frames, split_stratified
    if not args.data:
        raise SnnEdgeError(f"{args.checkpoint if hasattr(args, 'checkpoint') else args.model}: a float "
                           "checkpoint needs --data for calibration")
    path = getattr(args, "checkpoint", None) or args.model
    spec, params, extra = load_float_model(path, args.nir_dt)
    X, y, names = load_frames(args.data, _bin_spec(spec.binning, path), progress=not args.no_progress,
                              limit=args.limit)
    train, val = split_stratified(y, 0.2, 0)
    calib = np.ascontiguousarray(X[train[: args.calib]].transpose(1, 0, 2))
    gem = hasattr(params[0], "w_fb")   # a GEM checkpoint (edge.probabilistic.GLMLayerParams)
    if gem:
        learn = _learn(args)
        options = gem_rule_options(extra, params, learn, _explicit(args))
        model = quantize_gem(spec, params, calib, options, learn=learn)
    else:
        model = quantize(spec, params, calib, calibrate_theta=not args.no_theta_calibration, learn=_learn(args))
        auto_rule_params(model, keep=_explicit(args))
    model.meta["source"] = os.path.basename(path)
    # what label-free alignment (`stream --calibrate`, firmware_py/align.py) re-registers a moved sensor to
    ref_idx = train[: args.calib]
    last = last_event_times(args.data, [names[i] for i in ref_idx])
    model.meta["input_reference"] = input_reference(X[ref_idx], last if last is not None else np.zeros(len(ref_idx)),
                                                    _bin_spec(spec.binning, path))
    if report:
        rep = (compare_gem(spec, params, options, model, X[val], y[val]) if gem
               else compare(spec, params, model, X[val], y[val]))
        model.meta["report"] = rep
        print(format_report(rep))
    return model


def default_binning() -> tuple:
    """The binning `snn-edge train` uses when given no binning options (N-MNIST)."""
    from host_tools.cmd_train import _bin_spec, train_parser
    return _bin_spec(train_parser().parse_args(["--data", "builtin"])).as_tuple()


def load_float_model(path: str, nir_dt: float | None = None):
    """(spec, params, extra) of a float checkpoint or of the float network a NIR file describes."""
    from converters.nir_io import is_nir_file, nir_float_network
    if is_nir_file(path):
        return nir_float_network(path, nir_dt, default_binning())
    from edge.model import load_checkpoint
    return load_checkpoint(path)


def load_nir_int_model(path: str, nir_dt: float | None = None):
    """The exact integer model a NIR file we wrote carries, or None for a foreign file."""
    from converters.nir_io import import_nir
    return import_nir(path, nir_dt)[2]


def cmd_import(args) -> int:
    from converters.nir_io import is_nir_file, nir_float_network
    from edge.model import save_checkpoint
    from host_tools.cmd_train import _bin_spec
    if not os.path.exists(args.model):
        raise SnnEdgeError(f"{args.model}: no such file")
    if not is_nir_file(args.model):
        raise SnnEdgeError(f"{args.model}: not a NIR file (expected HDF5, as nir.write writes)")
    spec, params, extra = nir_float_network(args.model, args.nir_dt, _bin_spec(args).as_tuple())
    save_checkpoint(args.out, spec, params, extra)
    print(f"wrote {args.out} ({spec.arch}, readout {spec.readout}, binning {spec.binning})")
    return 0


def _is_float_checkpoint(path: str) -> bool:
    import numpy as np
    from converters.nir_io import is_nir_file
    if is_nir_file(path):
        return True
    try:
        with np.load(path, allow_pickle=False) as z:
            return "spec" in z.files and "header" not in z.files
    except (OSError, ValueError):
        return False


def cmd_quantize(args) -> int:
    from converters.intmodel import save_intmodel
    model = _quantize_checkpoint(args, report=True)
    save_intmodel(args.out, model)
    print(f"wrote {args.out}")
    return 0


def _load_model(args):
    path = args.model
    if not os.path.exists(path):
        raise SnnEdgeError(f"{path}: no such file")
    if path.endswith(".onnx"):
        from converters.onnx_import import load_onnx
        return load_onnx(path)
    from converters.nir_io import is_nir_file
    if is_nir_file(path):
        model = load_nir_int_model(path, args.nir_dt)
        if model is None:             # a foreign file: quantise the float network it describes
            return _quantize_checkpoint(args, report=False)
        return _with_rule(model, args)
    if _is_float_checkpoint(path):
        return _quantize_checkpoint(args, report=False)
    from converters.intmodel import load_intmodel
    return _with_rule(load_intmodel(path), args)


def _with_rule(model, args):
    """An integer model with the learning rule the command line asks for (none asked: the model's own)."""
    if args.rule != "none" or args.set:
        from converters.quantize import auto_rule_params
        model.learn = _learn(args)
        auto_rule_params(model, keep=_explicit(args))
    return model


def cmd_export(args) -> int:
    from converters.onnx_export import export
    model = _load_model(args)
    data = export(model, args.out)
    print(f"wrote {args.out} ({len(data)} bytes, rule {model.learn.rule})")
    if args.nir:
        from converters.nir_io import export_nir
        export_nir(model, args.nir)
        print(f"wrote {args.nir} (NIR, float: lossy)")
    if args.blob:
        from converters.blob import intmodel_to_blob, write_blob
        blob = intmodel_to_blob(model)
        write_blob(args.blob, blob)
        print(f"wrote {args.blob} ({len(blob)} bytes)")
    return 0


def cmd_verify(args) -> int:
    import numpy as np

    from converters import verify
    from converters.onnx_export import to_onnx
    from converters.onnx_import import load_onnx, read_proto
    from edge.data import load_frames
    model = load_onnx(args.model)
    proto = read_proto(args.model)
    if model.binning is None:
        raise SnnEdgeError(f"{args.model}: snn_edge.binning is null; cannot bin --data for this model")
    X, y, _ = load_frames(args.data, _bin_spec(model.binning, args.model), progress=False, limit=args.limit)
    Xt = np.ascontiguousarray(X.transpose(1, 0, 2))
    if Xt.max(initial=0) > model.in_max:
        raise SnnEdgeError(f"{args.model}: --data binned to values up to {Xt.max()}, but the model's in_max is "
                           f"{model.in_max} (binning mode and model disagree)")
    rows = [("numpy-int vs onnxruntime", verify.compare_forward(model, verify.session(proto), Xt))]
    if model.probabilistic and not args.no_firmware:
        print("firmware_py: no probabilistic (GEM) kernels on the device runtime yet; compared host executors only")
        args.no_firmware = True
    if not args.no_firmware:
        rows.append(("numpy-int vs firmware_py", verify.compare_firmware(model, Xt)))
        import shutil
        if args.mpy_limit > 0 and shutil.which("micropython"):
            rows.append(("numpy-int vs MicroPython", verify.compare_micropython(model, Xt[:, : args.mpy_limit])))
    if args.port:
        rows.append(("numpy-int vs board (link)",
                     compare_board(model, args.port, args.target, args.data, args.board_limit)))
    learn_rows = []
    if args.learn_steps > 0 and model.learn.rule != "none":
        T = X.shape[1]
        reps = -(-args.learn_steps // T)
        stream = np.concatenate([X[i % len(X)] for i in range(reps)])[: args.learn_steps]
        labels = np.concatenate([np.full(T, y[i % len(X)]) for i in range(reps)])[: args.learn_steps]
        compare = verify.compare_learning_gem if model.learn.rule == "gem" else verify.compare_learning
        learn_rows.append(("learning: numpy-int vs onnxruntime", compare(model, proto, stream, labels)))
        if not args.no_firmware:
            learn_rows.append(("learning: numpy-int vs firmware_py",
                               verify.compare_firmware_learning(model, stream, labels)))
    canonical = to_onnx(model).SerializeToString(deterministic=True) == open(args.model, "rb").read()
    bad = sum(r["spike_mismatches"] + r["state_mismatches"] + r["prediction_mismatches"] for _, r in rows)
    bad += sum(r["spike_mismatches"] + r["value_mismatches"] for _, r in learn_rows)
    if args.json:
        print(json.dumps({"forward": dict(rows), "learning": dict(learn_rows), "canonical_file": canonical,
                          "bit_exact": bad == 0}))
    else:
        print(verify.format_table(rows))
        for name, r in learn_rows:
            print(f"{name}: {r['steps']} steps, {r['spikes_compared']} spikes / {r['spike_mismatches']} "
                  f"mismatches, {r['values_compared']} values / {r['value_mismatches']} mismatches, "
                  f"{r['weights_changed']} weights changed")
        print(f"re-export byte-identical: {'yes' if canonical else 'no'}")
        print("bit-exact" if bad == 0 else f"MISMATCH: {bad} values differ")
    return 0 if bad == 0 else 1


def compare_board(model, port: str, target: str, data: str, limit: int) -> dict:
    """A flashed board vs the numpy simulator: the board's weights are pulled first (it may have learned
    since it was flashed: the comparison is of what it computes, with the weights it holds), then
    `limit` recordings are sent without labels (nothing learns) and its class and per-class spike counts
    compared with converters.intsim on the pulled weights."""
    import numpy as np

    from converters import intsim
    from host_tools.cmd_stream import _connect, board_weights
    from host_tools.stream import samples_from
    samples = samples_from(data, limit=limit)
    if model.layers[-1].kind != "lif":
        raise SnnEdgeError("verify --port: the board answers spike counts; an integrator readout is compared "
                           "by the host executors only")
    ser, link = _connect(port, target)
    try:
        pulled = board_weights(model, link.get_weights(), target, f"{port}: weights")
        answers = []
        for smp in samples:
            link.send_events(smp.x, smp.y, smp.t, smp.p)
            answers.append(link.end_of_sample(-1))
    finally:
        ser.close()
    from edge.transforms import to_frames
    spec = _bin_spec(model.binning, "model")
    ev_dtype = [("x", "<i2"), ("y", "<i2"), ("t", "<i8"), ("p", "<i1")]
    X = []
    for smp in samples:
        ev = np.empty(len(smp.x), dtype=ev_dtype)
        ev["x"], ev["y"], ev["t"], ev["p"] = smp.x, smp.y, smp.t, smp.p
        X.append(to_frames(ev, spec))
    ref = intsim.run(pulled, np.ascontiguousarray(np.stack(X).transpose(1, 0, 2)))
    counts_bad = sum(int((np.minimum(ref.scores[b], 0xFFFF) != np.array(a.counts)).sum()) for b, a in enumerate(answers))
    return {"samples": len(samples), "steps": spec.n_steps, "spikes_compared": int(ref.scores.size),
            "spike_mismatches": counts_bad, "states_compared": 0, "state_mismatches": 0,
            "prediction_mismatches": sum(int(a.cls != ref.predictions[b]) for b, a in enumerate(answers))}
