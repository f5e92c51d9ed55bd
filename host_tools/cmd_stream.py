"""`snn-edge stream`, `monitor` and `pull`: use a flashed board, live.

stream   sends recordings (and labels, for supervised adaptation) and prints the board's running accuracy;
monitor  polls the board's statistics (accuracy, events, updates, saturations, memory, weight drift) and
         plots them, or plots the log a `stream --log` run wrote;
pull     reads the adapted weights back into a model file that `verify` and `eval` accept.
"""
from __future__ import annotations

import json
import sys
import time

from edge.errors import SnnEdgeError
from host_tools import options as opt


def register(sub) -> None:
    from host_tools.boards import add_target_option
    s = sub.add_parser("stream", help="send recordings (and labels) to a board; print its running accuracy")
    s.add_argument("--port", required=True, help="serial device path or pyserial URL")
    s.add_argument("--data", default="builtin", help="recording, folder (N-MNIST layout) or 'builtin'")
    s.add_argument("--labels", action="store_true", help="send labels: the board learns from them")
    pace = s.add_mutually_exclusive_group()
    pace.add_argument("--realtime", action="store_true", help="send events at their recorded pace")
    pace.add_argument("--fast", action="store_true", help="as fast as the link goes (the default)")
    s.add_argument("--shift", type=opt.sensor_shift, default="",
                   help="a changed sensor, on real recordings and built-in data alike (edge/shifts.py): "
                        "dx=3,dy=-2 (pixels), rotation=10 (degrees), gain=0.5 (ON/OFF balance), time=1.5 "
                        "(slower motion), noise=5 (Hz per pixel), hot=3 (hot pixels), hot_rate=200")
    s.add_argument("--limit", type=opt.positive_int, default=None, help="at most this many recordings")
    s.add_argument("--per-class", type=opt.positive_int, default=20, help="builtin: recordings per class")
    s.add_argument("--seed", type=opt.nonneg_int, default=1, help="builtin generator seed / folder sample order")
    add_target_option(s, default="auto", help_extra="; auto: any board running the runtime")
    s.add_argument("--calibrate", type=opt.positive_int, default=None, metavar="N",
                   help="first align the board's input to the model's training data from the next N samples, "
                   "no labels needed (a moved or re-mounted sensor, a changed pace; needs --model)")
    s.add_argument("--model", default=None, help="the flashed model's .onnx (or integer .npz), whose input "
                   "reference `snn-edge quantize --data` wrote: for --calibrate")
    s.add_argument("--self-train", type=opt.nonneg_int, default=None, metavar="GATE",
                   help="without labels the board learns its own confident predictions (confidence >= GATE, "
                   "0..255); it can drift to one class: see --guard")
    s.add_argument("--guard", type=opt.guard_spec, nargs="?", const="", default=None, metavar="NAME=INT,...",
                   help="with --self-train: freeze and roll back when confidence, spike rate or class share move "
                   "the wrong way (firmware_py/guard.py; its defaults, or some changed)")
    s.add_argument("--checkpoint-every", type=opt.nonneg_int, default=10,
                   help="labelled samples between weight checkpoints (a reset resends from the last one); "
                        "0: never (boards that keep learning in RAM only, e.g. the micro:bit profile)")
    s.add_argument("--log", type=opt.output_file, default=None,
                   help="write per-sample outcomes as JSON lines (for monitor --log)")
    s.set_defaults(func=cmd_stream)

    m = sub.add_parser("monitor", help="live board statistics; --plot writes the curves as PNG")
    m.add_argument("--port", default=None, help="board to poll (omit with --log)")
    m.add_argument("--log", default=None, help="plot a `stream --log` file instead of polling a board")
    m.add_argument("--model", default=None, help="the flashed model: enables tracking every layer's weights "
                                                  "(drift) and synaptic decays")
    m.add_argument("--interval", type=opt.positive_float, default=1.0, help="seconds between polls")
    m.add_argument("--duration", type=opt.positive_float, default=None, help="stop after this many seconds")
    m.add_argument("--plot", type=opt.output_file, default=None,
                   help="PNG with accuracy, activity, memory, per-layer weight drift and synaptic decays (the "
                        "last two with --model)")
    add_target_option(m, default="auto", help_extra="; auto: any board running the runtime")
    m.set_defaults(func=cmd_monitor)

    p = sub.add_parser("pull", help="read the adapted weights back into a model file")
    p.add_argument("--port", required=True)
    p.add_argument("--model", required=True, help="the model the board was flashed with (.onnx or .blob)")
    p.add_argument("-o", "--output", type=opt.output_file, required=True, help="adapted model: .onnx, .blob or .npz")
    add_target_option(p, default="auto", help_extra="; auto: any board running the runtime")
    p.set_defaults(func=cmd_pull)


def _connect(port: str, profile: str):
    from host_tools.link import connect, open_serial

    ser = open_serial(port)
    return ser, connect(ser, profile=profile)


def model_input_reference(path: str) -> tuple[int, int, int, int]:
    """The input reference a model file records (meta input_reference, converters.quantize), for alignment."""
    from converters.blob import load_any_model
    ref = load_any_model(path).meta.get("input_reference")
    if not (isinstance(ref, list) and len(ref) == 4 and all(isinstance(v, int) for v in ref)):
        raise SnnEdgeError(f"{path}: records no input reference (meta input_reference: 4 integers, got {ref!r}); "
                           "`snn-edge quantize --data` writes it")
    return ref[0], ref[1], ref[2], ref[3]


def run_stream(port: str, data: str = "builtin", *, labels: bool = False, shift: str = "", limit=None,
               per_class: int = 20, seed: int = 1, realtime: bool = False, profile: str = "unix",
               checkpoint_every: int = 10, log: str | None = None, progress: bool = True,
               calibrate: tuple[int, tuple[int, int, int, int]] | None = None,
               self_train: tuple[int, dict | None] | None = None) -> dict:
    """Stream and return a summary: accuracy overall and per quarter, link and board figures. `calibrate`
    (samples, input reference): the board aligns its input over the first samples (firmware_py/align.py);
    `self_train` (gate, guard parameters or None): the board learns its confident unlabelled predictions."""
    from tqdm import tqdm

    from host_tools.link import open_serial
    from host_tools.stream import Streamer, samples_from, write_log

    samples = samples_from(data, shift=shift, limit=limit, seed=seed, n_per_class=per_class)
    if not samples:
        raise SnnEdgeError(f"--data {data}: no recordings to stream")
    streamer = Streamer(port, open_serial, profile=profile, send_labels=labels,
                        checkpoint_every=checkpoint_every, realtime=realtime)
    done: dict[int, bool] = {}
    bar = tqdm(total=len(samples), desc="stream", unit="sample", disable=None if progress else True)

    def on_outcome(o) -> None:
        if o.index not in done:
            bar.update(1)
        done[o.index] = o.correct
        labelled = [v for i, v in done.items() if samples[i].label >= 0]
        if labelled:
            bar.set_postfix(acc=f"{sum(labelled) / len(labelled):.3f}")

    t0 = time.monotonic()
    try:
        if calibrate is not None:
            streamer.link.calibrate(*calibrate)
        if self_train is not None:           # (gate, guard parameters or None)
            streamer.link.self_train(*self_train)
        outcomes = streamer.run(samples, on_outcome)
        stats = streamer.link.get_stats()
        counters = streamer.link.counters
    finally:
        bar.close()
        streamer.close()
    seconds = time.monotonic() - t0
    if log:
        write_log(log, outcomes, [stats])
    known = [o for o in outcomes if o.label >= 0]
    quarters = [known[k * len(known) // 4:(k + 1) * len(known) // 4] for k in range(4)]
    n_events = int(sum(len(s.t) for s in samples))
    return {
        "samples": len(outcomes),
        "labelled_sent": sum(o.sent_label for o in outcomes),
        "accuracy": sum(o.correct for o in known) / len(known) if known else None,
        "accuracy_by_quarter": [sum(o.correct for o in q) / len(q) if q else None for q in quarters],
        "events": n_events,
        "events_per_s": n_events / seconds if seconds else None,
        "seconds": seconds,
        "reconnects": streamer.reconnects,
        "retransmits": counters.retransmits,
        "crc_errors": counters.crc_errors,
        "board": stats,
    }


def cmd_stream(args) -> int:
    if args.guard is not None and args.self_train is None:
        raise SnnEdgeError("--guard: guards self-training, which needs --self-train GATE")
    if args.self_train is not None and args.self_train > 256:
        raise SnnEdgeError(f"--self-train {args.self_train}: expected a confidence gate 0..256 (256: never)")
    calibrate = None
    if args.calibrate is not None:
        if args.model is None:
            raise SnnEdgeError("--calibrate: needs --model (the flashed model, whose input reference the board "
                               "aligns to)")
        calibrate = (args.calibrate, model_input_reference(args.model))
    summary = run_stream(args.port, args.data, labels=args.labels, shift=args.shift, limit=args.limit,
                         per_class=args.per_class, seed=args.seed, realtime=args.realtime,
                         profile=args.target, checkpoint_every=args.checkpoint_every, log=args.log,
                         calibrate=calibrate,
                         self_train=(args.self_train, args.guard) if args.self_train is not None else None)
    acc = summary["accuracy"]
    q = ", ".join("-" if a is None else f"{a:.3f}" for a in summary["accuracy_by_quarter"])
    print(f"stream: {summary['samples']} samples ({summary['labelled_sent']} with labels), "
          f"accuracy {'-' if acc is None else f'{acc:.3f}'} (by quarter: {q}), "
          f"{summary['events_per_s']:,.0f} events/s, {summary['reconnects']} reconnects, "
          f"{summary['retransmits']} retransmits")
    b = summary["board"]
    print("board: " + ", ".join(f"{k}={v}" for k, v in b.items()))
    return 0


def pull(port: str, model_path: str, out: str, profile: str = "unix") -> dict:
    from converters.blob import intmodel_to_blob, load_any_model, write_blob
    from converters.checkpoint import weight_drift

    base = load_any_model(model_path)
    ser, link = _connect(port, profile)
    try:
        ckpt = link.get_weights()
    finally:
        ser.close()
    adapted = board_weights(base, ckpt, profile, f"{port}: weights")
    if out.endswith(".onnx"):
        from converters.onnx_export import export

        export(adapted, out)
    elif out.endswith(".npz"):
        from converters.intmodel import save_intmodel

        save_intmodel(out, adapted)
    else:
        write_blob(out, intmodel_to_blob(adapted))
    return {"output": out, "bytes": len(ckpt), "drift": weight_drift(base, adapted)}


def cmd_pull(args) -> int:
    r = pull(args.port, args.model, args.output, args.target)
    drift = "; ".join(f"layer {d['layer']}: {100 * d['changed']:.1f}% of weights changed, "
                      f"mean |dW| {d['mean_abs_lsb']:.3f} LSB" for d in r["drift"])
    print(f"pull: wrote {r['output']} from {r['bytes']} bytes of board weights ({drift})")
    return 0


def board_weights(base, data: bytes, profile: str, where: str):
    """The flashed model `base` with the weights a board sent (GET_WEIGHTS): the runtime's checkpoint image,
    or on the micro:bit profile its learned readout layer alone."""
    from host_tools.boards import link_kind
    if link_kind(profile).micro_profile:
        from host_tools.micro_flash import apply_readout
        return apply_readout(base, data, where)
    from converters.checkpoint import apply_board_checkpoint
    return apply_board_checkpoint(base, data, where)


def drift_fields(base, start, adapted) -> dict:
    """What monitor records about the board's weights at one poll: `drift` (relative L1 change per layer vs the
    flashed model `base`), `dw_mean_abs` and `dw_l2` (per layer, mean |dW| in LSB and the L2 norm of dW vs the
    weights the board had at the first poll, `start`), and `a_syn` (per layer: [min, mean, max] of the
    per-input synaptic decays as fractions of 1, or None for a layer with one scalar decay)."""
    import numpy as np

    from converters.checkpoint import weight_drift

    out = {"drift": [d["rel_l1"] for d in weight_drift(base, adapted)], "dw_mean_abs": [], "dw_l2": [], "a_syn": []}
    for a, b in zip(start.layers, adapted.layers):
        d = b.W.astype(np.int64) - a.W.astype(np.int64)
        out["dw_mean_abs"].append(float(np.abs(d).mean()))
        out["dw_l2"].append(float(np.sqrt((d.astype(np.float64) ** 2).sum())))
        if b.per_input:
            v = b.a_syn.astype(np.float64) / 4096
            out["a_syn"].append([float(v.min()), float(v.mean()), float(v.max())])
        else:
            out["a_syn"].append(None)
    return out


def _poll(port: str, profile: str, interval: float, duration: float | None, model_path: str | None):
    """Poll stats (and, with the flashed model, every layer's weights: drift and synaptic decays) until Ctrl-C
    or duration; yields one row per poll."""
    base = start = None
    if model_path:
        from converters.blob import load_any_model

        base = load_any_model(model_path)
    ser, link = _connect(port, profile)
    t0 = time.monotonic()
    try:
        while duration is None or time.monotonic() - t0 < duration:
            row = {"time": round(time.monotonic() - t0, 3), **link.get_stats()}
            if base is not None:
                adapted = board_weights(base, link.get_weights(), profile, f"{port}: weights")
                start = adapted if start is None else start
                row.update(drift_fields(base, start, adapted))
            yield row
            time.sleep(interval)
    except KeyboardInterrupt:
        return
    finally:
        ser.close()


def _status_line(row: dict) -> str:
    acc = row["correct"] / row["labelled"] if row.get("labelled") else None
    parts = [f"t={row['time']:7.1f}s", f"samples={row.get('samples', 0)}",
             f"acc={'-' if acc is None else f'{acc:.3f}'}", f"events={row.get('events', 0)}",
             f"updates={row.get('updates', 0)}", f"sat={row.get('nsat', 0)}",
             f"mem={row.get('mem_total', '?')}B", f"heap_free={row.get('heap_free', '?')}"]
    if "drift" in row:
        parts.append("drift=" + "/".join(f"{d:.4f}" for d in row["drift"]))
    if row.get("self_trained"):
        parts.append(f"self_trained={row['self_trained']}")
    if "guard_phase" in row:
        parts.append(f"guard={('warmup', 'learn', 'frozen')[row['guard_phase']]}")
    return "  ".join(parts)


def cmd_monitor(args) -> int:
    if args.log:
        if not args.plot:
            raise SnnEdgeError("monitor --log: give --plot FILE.png (the log is already complete)")
        rows = read_stream_log(args.log)
        plot_stream_log(rows, args.plot)
        print(f"wrote {args.plot}")
        return 0
    if not args.port:
        raise SnnEdgeError("monitor: give --port (a board to poll) or --log (a stream log to plot)")
    history = []
    tty = sys.stdout.isatty()
    for row in _poll(args.port, args.target, args.interval, args.duration, args.model):
        history.append(row)
        print(("\r" if tty else "") + _status_line(row), end="" if tty else "\n", flush=True)
    if tty:
        print()
    if args.plot:
        plot_monitor(history, args.plot)
        print(f"wrote {args.plot}")
    return 0


def read_stream_log(path: str) -> list[dict]:
    """The rows of a `stream --log` file (host_tools.stream.write_log), each checked for what
    plot_stream_log reads; SnnEdgeError naming the file, line and field otherwise."""
    import os
    if not os.path.isfile(path):
        raise SnnEdgeError(f"monitor --log {path}: no such file")
    rows = []
    with open(path, "rb") as fh:
        for n, raw in enumerate(fh, 1):
            if not raw.strip():
                continue
            try:
                row = json.loads(raw)
            except ValueError as exc:      # JSONDecodeError and UnicodeDecodeError
                raise SnnEdgeError(f"monitor --log {path}: line {n} is not JSON ({exc})") from None
            if not isinstance(row, dict):
                raise SnnEdgeError(f"monitor --log {path}: line {n} is a JSON {type(row).__name__}, expected an "
                                   "object (a line written by `stream --log`)")
            if row.get("kind") == "sample":
                for key in ("label", "cls", "confidence"):
                    if type(row.get(key)) is not int:
                        raise SnnEdgeError(f"monitor --log {path}: line {n}: field {key!r} is "
                                           f"{row.get(key)!r}, expected an integer")
            rows.append(row)
    return rows


def plot_stream_log(rows: list[dict], out: str) -> None:
    """Running accuracy over the streamed samples and the board's confidence."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    samples = [r for r in rows if r.get("kind") == "sample" and r["label"] >= 0]
    if not samples:
        raise SnnEdgeError("monitor --log: the log has no labelled samples to plot")
    correct = np.array([r["cls"] == r["label"] for r in samples], dtype=float)
    window = max(5, len(correct) // 10)
    running = np.convolve(correct, np.ones(window) / window, mode="valid")
    fig, ax = plt.subplots(1, 2, figsize=(11, 3.8))
    ax[0].plot(np.arange(window, len(correct) + 1), running, label=f"accuracy over the last {window}")
    ax[0].plot(np.arange(1, len(correct) + 1), np.cumsum(correct) / np.arange(1, len(correct) + 1),
               label="cumulative accuracy", alpha=0.7)
    ax[0].set_xlabel("sample")
    ax[0].set_ylim(0, 1)
    ax[0].legend()
    ax[0].set_title("on-board accuracy while streaming")
    ax[1].scatter(np.arange(len(samples)), [r["confidence"] for r in samples], c=correct, cmap="coolwarm_r",
                  s=8)
    ax[1].set_xlabel("sample")
    ax[1].set_ylabel("board confidence (0-255)")
    ax[1].set_title("confidence (blue: correct, red: wrong)")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


MONITOR_PANELS = ("accuracy", "activity (cumulative)", "memory (bytes)", "weight drift per layer (vs the first poll)",
                  "synaptic decays a_syn (per-input layers)")


def plot_monitor(history: list[dict], out: str) -> list[str]:
    """Accuracy (cumulative and per poll interval), activity, memory, per-layer weight drift and the synaptic
    decays over wall-clock time; returns the panel titles (MONITOR_PANELS)."""
    import math

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not history:
        raise SnnEdgeError("monitor: no statistics were read, nothing to plot")
    t = [r["time"] for r in history]
    fig, ax = plt.subplots(1, len(MONITOR_PANELS), figsize=(4 * len(MONITOR_PANELS), 3.6))
    ax[0].plot(t, [r["correct"] / r["labelled"] if r.get("labelled") else math.nan for r in history],
               label="cumulative")
    interval = [math.nan]
    for a, b in zip(history, history[1:]):
        n = b.get("labelled", 0) - a.get("labelled", 0)
        interval.append((b.get("correct", 0) - a.get("correct", 0)) / n if n > 0 else math.nan)
    ax[0].plot(t, interval, ".", label="since the last poll")
    ax[0].set_ylim(0, 1)
    ax[0].legend(fontsize=7)
    ax[1].plot(t, [r.get("samples", 0) for r in history], label="samples")
    ax[1].plot(t, [r.get("updates", 0) for r in history], label="weight updates")
    ax[1].plot(t, [r.get("self_trained", 0) for r in history], label="self-trained")
    if any("guard_rollbacks" in r for r in history):
        ax[1].plot(t, [r.get("guard_rollbacks", 0) for r in history], label="guard rollbacks")
    ax[1].legend(fontsize=7)
    ax[2].plot(t, [r.get("heap_free", math.nan) for r in history], label="heap free")
    ax[2].plot(t, [r.get("mem_total", math.nan) for r in history], label="runtime bytes")
    ax[2].legend(fontsize=7)
    if "dw_mean_abs" in history[0]:
        for l in range(len(history[0]["dw_mean_abs"])):
            ax[3].plot(t, [r["dw_mean_abs"][l] for r in history], label=f"layer {l}: mean |dW| (LSB)")
            ax[3].plot(t, [r["dw_l2"][l] for r in history], ls="--", label=f"layer {l}: L2 of dW")
        ax[3].legend(fontsize=7)
    else:
        ax[3].text(0.5, 0.5, "give --model to track weights", ha="center", va="center", transform=ax[3].transAxes)
    per_input = [l for l, v in enumerate(history[0].get("a_syn", [])) if v is not None]
    for l in per_input:
        lo, mean, hi = zip(*[r["a_syn"][l] for r in history])
        line, = ax[4].plot(t, mean, label=f"layer {l}: mean")
        ax[4].fill_between(t, lo, hi, color=line.get_color(), alpha=0.2, label=f"layer {l}: min-max")
    if per_input:
        ax[4].set_ylim(0, 1)
        ax[4].legend(fontsize=7)
    else:
        ax[4].text(0.5, 0.5, "no per-input (learnable) a_syn" if "a_syn" in history[0] else
                   "give --model to track a_syn", ha="center", va="center", transform=ax[4].transAxes)
    for a, title in zip(ax, MONITOR_PANELS):
        a.set_title(title, fontsize=9)
        a.set_xlabel("time (s)")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return list(MONITOR_PANELS)
