"""On-device adaptation to a changed sensor, on real N-MNIST: ONE JSON line (and a markdown table on stderr).

Protocol (edge.data.split_three_way of the 1,000 recordings: 602 train / 199 validation / 199 test): a
578-64-10 network is trained on the train split on the host (numpy BPTT) and quantised. For each sensor change
(edge.shifts, the same knobs as `snn-edge stream --shift`) the shifted validation recordings are the adaptation
stream (at most 200 labelled samples, one pass, the board's per-sample semantics of NUMERICS.md §5) and the
shifted test recordings, never used for adaptation, are evaluated. Per shift and rule: accuracy on the unshifted
test recordings, shifted before adaptation, shifted after, and the recovered fraction
(after - before) / (unshifted - before).

The integer learning runs in converters/intsim, which is bit-exact with the board's firmware (tests/firmware;
the Cortex-M3 end-to-end test streams real recordings with SOLSA and compares the pulled weights), so these are
the board's numbers computed on the host; with `--board unix32` (or `cortex-m3`: hours for SOLSA on every
layer) every row also adapts on a fresh board over the serial link, as `snn-edge stream --shift ... --labels`
(or `--calibrate`) does, and reports the board's test accuracy and whether every answer equals intsim's. The rules are the board's: the last layer only (readout delta, SOLSA with full or factorised traces) and
SOLSA on every layer (NUMERICS.md §10.8: full traces on the last layer, factorised on the hidden one); GEM needs
a probabilistic network and is not run here.
`learning_state_fraction_of_bptt`: the rule's learning-state bytes on the board (firmware_py.memory) over what
BPTT keeps to learn the same layers over one recording (edge.memory_meter.bptt_bytes: T steps of activations and
the gradient accumulators).

    python benchmarks/device_adaptation.py [--shift dx=4 --shift rotation=10 ...] [--epochs 8] [--adapt 200] [--tune]

Without --tune every rule runs at the board's default learning rate; with it, each rule's rate is picked per
sensor change on the train split (never on the validation stream or the test recordings).

Label-free rows (`label_free` in the JSON, --label-free N samples, 0: none): the board's self-training
(firmware_py.device: a free pass, then a learning pass with the predicted class when its confidence reaches
--gate), simulated bit for bit by converters.intsim.self_train_samples, over N unlabelled shifted recordings
drawn from the validation split in passes (each pass a fresh permutation, every recording shifted with its
own seed per pass and each event kept with probability 0.95, so no two stream samples are identical), with
and without the guard of firmware_py/guard.py (its defaults, or --guard); accuracy on the shifted test split (never
adapted on) before, every --every samples, and after. --plot FILE.png draws those trajectories per shift.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from converters import intsim  # noqa: E402
from converters.intmodel import default_learn  # noqa: E402
from converters.quantize import auto_rule_params, quantize  # noqa: E402
from firmware_py import guard as fguard  # noqa: E402
from firmware_py import memory  # noqa: E402

DEFAULT_DATA = ROOT / ".." / "shared" / "data" / "nmnist-small" / "Train"
SHIFTS = ["dx=2", "dx=4", "rotation=10", "gain=0.5", "noise=5,hot=3", "time=1.5",
          "dx=2,rotation=5,gain=0.7,noise=2"]
# (row name, board rule, SOLSA's factorised, SOLSA's learn_all: every layer learns, NUMERICS.md §10.8)
RULES = (("readout_delta", "readout_delta", None, 0), ("solsa_last_full", "solsa", 0, 0),
         ("solsa_last_factorised", "solsa", 1, 0), ("solsa_all", "solsa", 0, 1))
# --tune: the learning-rate shifts tried (lr = 2**-lr_s), per rule; every layer: (lr_s, lrh_s) pairs
LR_GRID = {"readout_delta": (6, 8, 10, 12), "solsa": (12, 14, 16, 18),
           "solsa_all": tuple((a, b) for a in (14, 16, 18) for b in (14, 16, 18, 20))}
# every layer learning: 5 steps between updates keeps the hidden layer's window (5 x (578 + 64) words)
# within 10 % of what BPTT keeps for the same layers (edge.memory_meter)
K_UPDATE_ALL = 5
# label-free rows: the rules self-trained without labels, and the stream's event keep probability
LABEL_FREE_RULES = (("readout_delta", "readout_delta", None), ("solsa_last_full", "solsa", 0))
STREAM_KEEP = 0.95


def rule_model(base, rule: str, fact, lr_s=None, n_steps: int = 30, learn_all: int = 0):
    """The quantised network with the board's `rule` (its defaults, or the learning-rate shift lr_s: an int,
    or with learn_all the pair (lr_s, lrh_s)); the readout delta updates once per sample (k_update = the
    binning's n_steps)."""
    m = base.copy()
    m.learn = default_learn(rule)
    if fact is not None:
        m.learn.params["factorised"] = fact
    if rule == "readout_delta":
        m.learn.params["k_update"] = n_steps
    if learn_all:
        m.learn.params.update(learn_all=1, k_update=K_UPDATE_ALL)
    if isinstance(lr_s, tuple):
        m.learn.params["lr_s"], m.learn.params["lrh_s"] = lr_s
    elif lr_s is not None:
        m.learn.params["lr_s"] = lr_s
    auto_rule_params(m)
    return m


def dropped_by_board(frames: np.ndarray) -> bool:
    """A sample the board drops whole: more active (step, input) pairs than its event buffer holds."""
    from firmware_py.binning import DEFAULT_SLOTS
    return int(np.count_nonzero(frames)) > DEFAULT_SLOTS


def adapt(model, X, y):
    """One labelled pass of the model's rule over X [S, T, N] (device semantics: a sample that overflows the
    board's event buffer is dropped, not learned); returns the model."""
    m = model.copy()
    ls = None
    for s in range(X.shape[0]):
        if dropped_by_board(X[s]):
            continue
        ls = intsim.sample_start(m, ls)
        states = intsim.initial_state(m, 1)
        for t in range(X.shape[1]):
            _, states, ls, _ = intsim.learn_step(m, X[s, t], states, ls, int(y[s]))
    return m


def accuracy(model, X, y) -> float:
    res = intsim.run(model, np.ascontiguousarray(X.transpose(1, 0, 2)))
    return float((res.predictions == y).mean())


def shifted_recordings(recordings: dict, idx, text: str, seed: int) -> list:
    """recordings[k] for k in idx as the changed sensor records them (recording k seeded (seed, k))."""
    from edge.shifts import SensorShift, shift_recording
    change = SensorShift.parse(text)
    return [shift_recording(recordings[k], change, np.random.default_rng([seed, k])) for k in idx]


def shifted_frames(recordings: dict, idx, text: str, spec, seed: int) -> np.ndarray:
    """Frames of recordings[k] for k in idx as the changed sensor records them (recording k seeded (seed, k))."""
    from edge.data import frames_of
    return np.stack([frames_of(r, spec) for r in shifted_recordings(recordings, idx, text, seed)])


def last_times(recs) -> list[int]:
    """Each recording's last event time (us): the sample duration the board's alignment measures."""
    return [int(r.events["t"].max()) if len(r.events) else 0 for r in recs]


BOARDS_DIR = ROOT / ".." / "shared" / "boards"


def open_board(kind: str, tmp: Path):
    """A fresh board of `kind` (a context manager with .path): the 32-bit unix port behind a pty (256K: its
    firmware is .mpy files on its filesystem, not ROMFS) or the emulated Cortex-M3 (192K, ROMFS)."""
    import os
    import shutil
    from host_tools.virtual_board import CortexM3Board, VirtualBoard
    if kind == "cortex-m3":
        why = CortexM3Board.missing()
        if why:
            raise SystemExit(f"--board cortex-m3: {why}")
        return CortexM3Board(192 * 1024)
    exe = BOARDS_DIR / "unix32" / "micropython"
    if not exe.is_file():
        raise SystemExit(f"--board unix32: {exe} not found (../shared/boards, README there)")
    bindir = tmp / "bin32"                      # VirtualBoard runs `micropython` from PATH: this one first
    if not (bindir / "micropython").exists():
        bindir.mkdir(parents=True, exist_ok=True)
        shutil.copy(exe, bindir / "micropython")
        (bindir / "micropython").chmod(0o755)
    os.environ["PATH"] = f"{bindir}{os.pathsep}{os.environ['PATH']}"
    return VirtualBoard(tmp / f"board-{len(list(tmp.glob('board-*')))}", runtime="micropython", heap="256K")


def on_board(kind: str, model, adapt_recs, adapt_labels, test_recs, tmp: Path, calibrate=None) -> list[int]:
    """Flash `model` to a fresh board, stream the adaptation recordings (with their labels; -1: none), then the
    test recordings without labels; returns the board's classes for the test recordings. `calibrate`:
    (samples per round, input reference) sent first (the board aligns over the adaptation stream)."""
    from converters.blob import intmodel_to_blob
    from host_tools.cmd_board import flash
    from host_tools.link import BoardError, connect, open_serial
    blob = tmp / "adapt.blob"
    blob.write_bytes(intmodel_to_blob(model))
    with open_board(kind, tmp) as board:
        if kind == "unix32":
            flash(board.path, str(blob), mpy=True, handler="firmware_py.handler", log=lambda *a: None)
        else:
            flash(board.path, str(blob), log=lambda *a: None)
        ser = open_serial(board.path)
        try:
            link = connect(ser)
            if calibrate is not None:
                link.calibrate(*calibrate)
            def sample(r, label):
                """The board's class, or None when it dropped the sample (its event buffer overflowed); the
                stream goes on."""
                e = r.events
                try:
                    link.send_events(e["x"], e["y"], e["t"], e["p"])
                    link.flush()          # every batch answered: a refused one's error belongs to this sample
                except BoardError:
                    try:
                        link.end_of_sample(-1)       # the board answers "sample dropped" and closes it
                    except BoardError:
                        pass
                    return None
                try:
                    return link.end_of_sample(int(label)).cls
                except BoardError:
                    return None

            for r, label in zip(adapt_recs, adapt_labels):
                sample(r, label)
            out = [sample(r, -1) for r in test_recs]
        finally:
            ser.close()
    return out


def board_result(got: list, host_predictions, labels) -> dict:
    """The board's test answers (None: a sample it dropped) against the labels and the host's predictions."""
    done = [k for k, c in enumerate(got) if c is not None]
    return {"board_acc_after": round(sum(got[k] == labels[k] for k in done) / len(got), 4),
            "board_dropped_test_samples": len(got) - len(done),
            "board_bit_exact": all(got[k] == int(host_predictions[k]) for k in done)}


def alignment_row(base, reference, stream: list, tests: list, y_test, spec, n_align: int) -> dict:
    """Label-free alignment (firmware_py/align.py, `stream --calibrate`): the board's rounds (noise filter,
    pace, offset; converters.quantize.calibration_rounds) on the shifted validation recordings `stream`, then the
    shifted test recordings `tests` in the binning it ends with (the weights untouched)."""
    from converters.quantize import calibration_rounds
    from edge.transforms import background_filter, to_frames
    from firmware_py.noise_filter import FILTER_US
    _, used, (spec2, filtering) = calibration_rounds([r.events for r in stream], spec, reference, n_align)
    if used is None:
        raise SystemExit(f"--align {n_align}: the validation stream ran out before the rounds ended")
    Xt = np.stack([to_frames(background_filter(r.events, spec.sensor_w, spec.sensor_h, FILTER_US) if filtering
                             else r.events, spec2) for r in tests])
    res = intsim.run(base, np.ascontiguousarray(Xt.transpose(1, 0, 2)))
    return {"acc_shifted_after": float((res.predictions == y_test).mean()), "calibration_samples": used,
            "crop": list(spec2.crop[:2]), "dt_us": spec2.dt_us, "noise_filter": filtering,
            "predictions": res.predictions, "stream": stream[:used]}


def stream_frames(recordings: dict, idx, text: str, spec, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(frames [n, T, N], recording index [n]) of an unlabelled stream of n shifted recordings drawn from idx
    in passes: pass r is a permutation of idx (rng (seed, r)), each recording shifted with rng (seed, r, k)
    and each of its events kept with probability STREAM_KEEP (a fresh draw per pass)."""
    from edge.data import frames_of
    from edge.events import Recording
    from edge.shifts import SensorShift, shift_recording
    change = SensorShift.parse(text)
    frames, which = [], []
    r = 0
    while len(frames) < n:
        for k in np.random.default_rng([seed, r]).permutation(np.asarray(idx)):
            if len(frames) == n:
                break
            rng = np.random.default_rng([seed, r, int(k)])
            rec = shift_recording(recordings[int(k)], change, rng)
            keep = rng.random(len(rec.events)) < STREAM_KEEP
            rec = Recording(rec.events[keep], rec.sensor_size, rec.path, rec.label, rec.sensor_inferred)
            frames.append(frames_of(rec, spec))
            which.append(int(k))
        r += 1
    return np.stack(frames), np.array(which)


def self_train_run(model, Xs, Xe, ye, gate: int, guard_params: dict | None, every: int) -> dict:
    """Self-train `model` on the unlabelled stream Xs (the board's semantics, intsim.self_train_samples), with
    the guard's parameters or none; accuracy on (Xe, ye) before, every `every` samples and after."""
    g = None if guard_params is None else fguard.Guard(model.layers[-1].n_out, **guard_params)
    traj = [(0, accuracy(model, Xe, ye))]
    frozen_at = []

    def on_sample(s, m):
        if g is not None and g.phase == fguard.FROZEN and not frozen_at:
            frozen_at.append(s + 1)
        if (s + 1) % every == 0 or s + 1 == len(Xs):
            traj.append((s + 1, accuracy(m, Xe, ye)))

    _, preds, confs, trained, _, _ = intsim.self_train_samples(model, Xs, gate, g, on_sample)
    out = {"acc_before": round(traj[0][1], 4), "acc_after": round(traj[-1][1], 4),
           "trajectory": [[k, round(a, 4)] for k, a in traj], "self_trained": int(trained.sum()),
           "mean_confidence": round(float(confs.mean()), 2),
           "top_class_share": round(float(np.bincount(preds).max() / len(preds)), 4)}
    if g is not None:
        out["guard"] = {**g.state(), "frozen_at_sample": frozen_at[0] if frozen_at else None}
    return out


def guard_params(text: str) -> dict:
    """'warmup=20,period=20' -> the guard's parameters (host_tools.options.guard_spec, the CLI's parser)."""
    import argparse
    from host_tools.options import guard_spec
    try:
        return guard_spec(text)
    except argparse.ArgumentTypeError as exc:
        raise ValueError(str(exc)) from None


def label_free_rows(base, recordings: dict, split, y, shifts, args, n_steps: int) -> list[dict]:
    """Per shift and rule: self-training without labels over args.label_free samples, without and with
    the guard (args.guard_params); evaluated on the shifted test split (never adapted on)."""
    from edge.data import NMNIST_SPEC
    rows = []
    for text in shifts:
        Xs, _ = stream_frames(recordings, split.val, text, NMNIST_SPEC, args.label_free, args.seed + 10)
        Xt = shifted_frames(recordings, split.test, text, NMNIST_SPEC, args.seed + 1)
        for name, rule, fact in LABEL_FREE_RULES:
            m = rule_model(base, rule, fact, None, n_steps)
            for guarded in (False, True):
                run = self_train_run(m, Xs, Xt, y[split.test], args.gate, args.guard_params if guarded else None,
                                     args.every)
                rows.append({"shift": text, "rule": name, "guarded": guarded, "gate": args.gate,
                             "unlabelled_samples": int(len(Xs)), "test_samples": int(len(split.test)),
                             "lr_s": int(m.learn.params["lr_s"]), **run})
                g = run.get("guard", {})
                print(f"| {text} | {name} | {'guard' if guarded else 'no guard'} | {run['acc_before']:.3f} | "
                      f"{run['acc_after']:.3f} | {run['self_trained']} | {g.get('phase', '-')} "
                      f"{g.get('frozen_at_sample') or ''} |", file=sys.stderr, flush=True)
    return rows


def plot_label_free(rows: list[dict], path: str) -> None:
    """Accuracy on the shifted test split over the unlabelled stream: one panel per shift, a line per rule and
    guard setting."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shifts = list(dict.fromkeys(r["shift"] for r in rows))
    cols = min(4, len(shifts))
    nrows = -(-len(shifts) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3.4 * nrows), squeeze=False)
    for ax, text in zip(axes.flat, shifts):
        for r in (r for r in rows if r["shift"] == text):
            k, a = zip(*r["trajectory"])
            ax.plot(k, a, ls="-" if r["guarded"] else "--",
                    label=f"{r['rule']} {'guarded' if r['guarded'] else 'unguarded'}")
            froze = (r.get("guard") or {}).get("frozen_at_sample")
            if froze:
                ax.axvline(froze, color=ax.lines[-1].get_color(), lw=0.8, alpha=0.6)
        ax.set_title(text, fontsize=9)
        ax.set_xlabel("unlabelled samples")
        ax.set_ylabel("shifted test accuracy")
        ax.set_ylim(0, 1)
    for ax in list(axes.flat)[len(shifts):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(f"self-training without labels (gate {rows[0]['gate']}); vertical lines: the guard froze")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--shift", action="append", help=f"a sensor change (repeatable; default: {SHIFTS})")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--adapt", type=int, default=200, help="labelled adaptation samples at most")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tune", action="store_true",
                    help="pick each rule's learning-rate shift per sensor change on the train split (adapt on 200 "
                         "shifted train recordings, score on 200 others), never on validation or test")
    ap.add_argument("--tune-samples", type=int, default=200, help="train recordings to adapt on, and to score on")
    ap.add_argument("--align", type=int, default=20, help="label-free alignment rows: unlabelled calibration "
                    "samples per round (0: no such rows)")
    ap.add_argument("--rules", default=",".join(r[0] for r in RULES),
                    help="labelled rule rows to run, comma-separated (empty: none)")
    ap.add_argument("--board", choices=("none", "unix32", "cortex-m3"), default="none",
                    help="also adapt on a board (../shared/boards: the 32-bit unix port or the emulated Cortex-M3): "
                    "each row streams its adaptation and test recordings to a fresh board and reports the board's "
                    "accuracy and whether every answer equals the integer simulator's")
    ap.add_argument("--label-free", type=int, default=2000,
                    help="unlabelled self-training samples per shift and rule (0: no label-free rows)")
    ap.add_argument("--gate", type=int, default=192, help="self-training confidence gate (0..255; 256: never)")
    ap.add_argument("--every", type=int, default=250, help="label-free: test accuracy every this many samples")
    ap.add_argument("--plot", default=None, help="PNG of the label-free accuracy trajectories per shift")
    ap.add_argument("--guard", default="", help="the guard's parameters where they differ from firmware_py.guard."
                                                 "DEFAULTS, e.g. warmup=20,period=20")
    args = ap.parse_args()
    if args.label_free < 0 or args.every <= 0 or not 0 <= args.gate <= 256:
        ap.error("--label-free >= 0, --every > 0 and --gate in 0..256")
    unknown = set(args.rules.split(",")) - {""} - {r[0] for r in RULES}
    if unknown:
        ap.error(f"--rules: unknown {sorted(unknown)}, expected some of {[r[0] for r in RULES]}")
    if args.plot and not args.label_free:
        ap.error("--plot draws the label-free rows: give --label-free N > 0")
    try:
        args.guard_params = guard_params(args.guard)
    except ValueError as exc:
        ap.error(str(exc))
    from edge.data import NMNIST_SPEC, load_frames, split_three_way
    from edge.events import list_folder_dataset, read_events
    from edge.memory_meter import bptt_bytes
    from edge.model import load_checkpoint
    from host_tools.cli import main as cli

    X, y, names = load_frames(args.data, NMNIST_SPEC, progress=False)
    items = list_folder_dataset(Path(args.data))
    assert [f"{p.parent.name}/{p.name}" for p, _ in items] == names, "recording order differs from the frames'"
    split = split_three_way(y, names)
    # A board meets its samples in the order the world makes them, not sorted by class as the split lists
    # them: an online rule fed one class after another forgets the earlier ones (what this benchmark's first
    # version measured). The stream and the tuning sets are random draws, seeded.
    order = np.random.default_rng(args.seed)
    val_stream = order.permutation(split.val)
    val = val_stream[:args.adapt]
    k = args.tune_samples
    train = order.permutation(split.train)
    tune_a, tune_e = train[:k], train[k:2 * k]
    # read once, shifted anew for every sensor change
    used = np.concatenate([split.val, split.test] + ([tune_a, tune_e] if args.tune else []))
    recordings = {int(j): read_events(*items[j]) for j in used}
    # the model's input reference (quantize --data writes it): the training split's frames and durations
    from converters.quantize import input_reference
    reference = input_reference(X[split.train], last_times(read_events(*items[j]) for j in split.train), NMNIST_SPEC)
    tmp = Path(tempfile.mkdtemp(prefix="snn-adapt-"))
    ckpt = tmp / "m.ckpt"
    cli(["train", "--data", args.data, "--arch", "578-64-10", "--epochs", str(args.epochs), "--protocol-split",
         "--no-progress", "--out", str(ckpt)])
    spec, params, _ = load_checkpoint(ckpt)
    base = quantize(spec, params, np.ascontiguousarray(X[split.train[:200]].transpose(1, 0, 2)))
    unshifted = accuracy(base, X[split.test], y[split.test])
    n_in, n_out = base.layers[-1].n_in, base.layers[-1].n_out
    bptt = bptt_bytes(n_in, n_out, NMNIST_SPEC.n_steps).total
    bptt_all = sum(bptt_bytes(L.n_in, L.n_out, NMNIST_SPEC.n_steps).total for L in base.layers)
    rows, state, bptt_of, board_of = [], {}, {}, {}
    from edge.data import frames_of
    for text in args.shift or SHIFTS:
        # shifted once per change: the validation stream (its first `adapt` are the labelled adaptation
        # samples: recording k is shifted with (seed, k) wherever it stands) and the test recordings
        stream_recs = shifted_recordings(recordings, val_stream, text, args.seed)
        adapt_recs = stream_recs[:len(val)]
        test_recs = shifted_recordings(recordings, split.test, text, args.seed + 1)
        Xa = np.stack([frames_of(r, NMNIST_SPEC) for r in adapt_recs])
        Xt = np.stack([frames_of(r, NMNIST_SPEC) for r in test_recs])
        before = accuracy(base, Xt, y[split.test])
        if args.tune:
            # tuned on the train split only: adapt on k shifted train recordings, score on k others
            Ta = shifted_frames(recordings, tune_a, text, NMNIST_SPEC, args.seed + 2)
            Te = shifted_frames(recordings, tune_e, text, NMNIST_SPEC, args.seed + 3)
        if args.align:
            a = alignment_row(base, reference, stream_recs, test_recs, y[split.test], NMNIST_SPEC, args.align)
            if args.board != "none":
                got = on_board(args.board, base, a["stream"], [-1] * len(a["stream"]), test_recs, tmp,
                               (args.align, tuple(reference)))
                board_of["align"] = board_result(got, a["predictions"], y[split.test])
            lost = unshifted - before
            rows.append({"shift": text, "rule": "align", "acc_unshifted": round(unshifted, 4),
                         "acc_shifted_before": round(before, 4), "acc_shifted_after": round(a["acc_shifted_after"], 4),
                         "recovered_fraction": round((a["acc_shifted_after"] - before) / lost, 3) if lost > 0 else None,
                         "adaptation_samples": 0, "calibration_samples": a["calibration_samples"],
                         "test_samples": int(len(split.test)), "learned_layers": "none", "crop": a["crop"],
                         "dt_us": a["dt_us"], "noise_filter": a["noise_filter"]})
            if "align" in board_of:
                rows[-1].update(board=args.board, **board_of.pop("align"))
            print(f"| {text} | align | {unshifted:.3f} | {before:.3f} | {a['acc_shifted_after']:.3f} | "
                  f"{rows[-1]['recovered_fraction']} |", file=sys.stderr, flush=True)
        for name, rule, fact, learn_all in [r for r in RULES if r[0] in args.rules.split(",")]:
            lr_s = None
            if args.tune:
                scores = {}
                for v in LR_GRID[name if learn_all else rule]:
                    tuned = adapt(rule_model(base, rule, fact, v, NMNIST_SPEC.n_steps, learn_all), Ta, y[tune_a])
                    scores[v] = accuracy(tuned, Te, y[tune_e])
                lr_s = max(scores, key=lambda v: (scores[v], v))     # ties: the smaller rate
            m = rule_model(base, rule, fact, lr_s, NMNIST_SPEC.n_steps, learn_all)
            adapted = adapt(m, Xa, y[val])
            res = intsim.run(adapted, np.ascontiguousarray(Xt.transpose(1, 0, 2)))
            after = float((res.predictions == y[split.test]).mean())
            if args.board != "none":
                got = on_board(args.board, m, adapt_recs, y[val], test_recs, tmp)
                board_of[name] = board_result(got, res.predictions, y[split.test])
            lost = unshifted - before
            rows.append({"shift": text, "rule": name, "acc_unshifted": round(unshifted, 4),
                         "acc_shifted_before": round(before, 4), "acc_shifted_after": round(after, 4),
                         "recovered_fraction": round((after - before) / lost, 3) if lost > 0 else None,
                         "adaptation_samples": int(len(val)), "test_samples": int(len(split.test)),
                         "lr_s": int(m.learn.params["lr_s"]), "lr_s_tuned_on_train": bool(args.tune),
                         "learned_layers": "all" if learn_all else "last"})
            if learn_all:
                rows[-1].update(lrh_s=int(m.learn.params["lrh_s"]), k_update=int(m.learn.params["k_update"]))
            if name in board_of:
                rows[-1].update(board=args.board, **board_of.pop(name))
            dims = [(L.n_in, L.n_out, L.per_input) for L in m.layers]
            state[name] = memory.breakdown(dims, rule, m.learn.params, fact)["traces"]
            bptt_of[name] = bptt_all if learn_all else bptt
            print(f"| {text} | {name} | {unshifted:.3f} | {before:.3f} | {after:.3f} | "
                  f"{rows[-1]['recovered_fraction']} |", file=sys.stderr, flush=True)
    label_free = []
    if args.label_free:
        print("| shift | rule | guard | test acc before | after | self-trained | guard phase, frozen at |",
              file=sys.stderr, flush=True)
        label_free = label_free_rows(base, recordings, split, y, args.shift or SHIFTS, args, NMNIST_SPEC.n_steps)
        if args.plot:
            plot_label_free(label_free, args.plot)
    print(json.dumps({"arch": "578-64-10", "split": split.sizes(),
                      "shifts": rows, "learning_state_bytes": state, "bptt_bytes_same_layers": bptt_of,
                      "learning_state_fraction_of_bptt": {k: round(v / bptt_of[k], 4) for k, v in state.items()},
                      "label_free": label_free, "guard_params": args.guard_params}))


if __name__ == "__main__":
    main()
