"""The training loop shared by every learning rule: epochs, LR schedule, validation, early stop,
checkpoints that resume bit for bit, a progress bar per epoch on a terminal and one summary line per epoch
(the only output in a log), and the training-curve PNG.

Batches are drawn from a permutation seeded by (seed, epoch), so a run resumed from a checkpoint
sees exactly the batches the uninterrupted run would have seen.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field

import numpy as np
from tqdm import tqdm

from edge import metrics
from edge.augment import spatial_jitter
from edge.errors import SnnEdgeError
from edge.model import LayerParams, NetworkSpec, check_params, save_checkpoint
from edge.optim import scheduled_lr
from edge.progress import bar as progress_bar
from edge.rules.base import LearningRule

RESUME_PREFIX = "resume."


@dataclass
class FitConfig:
    epochs: int = 30
    batch_size: int = 32
    lr_schedule: str = "cosine"
    warmup_epochs: int = 0
    patience: int = 0            # stop after this many epochs without a better validation score (0: never)
    seed: int = 0
    checkpoint: str | None = None  # best-validation model + the state to resume the last epoch
    curve_png: str | None = None
    progress: bool = True         # one line per epoch; a batch bar as well when stderr is a terminal
    eval_batch_size: int = 256
    jitter: int = 0               # spatial jitter of training samples, in binned pixels (edge.augment; 0: off)


@dataclass
class FitResult:
    params: list[LayerParams]     # best-validation parameters (the last ones without validation)
    history: list[dict] = field(default_factory=list)
    best_epoch: int = -1
    best_val_acc: float = float("nan")
    stopped_early: bool = False
    seconds: float = 0.0


def predict_logits(rule: LearningRule, params: list[LayerParams], X: np.ndarray,
                   batch_size: int = 256) -> np.ndarray:
    """Class scores [S, C] for samples X [S, T, N] (sample-major, as edge.data returns them)."""
    out = [rule.predict(params, np.ascontiguousarray(X[i:i + batch_size].transpose(1, 0, 2)))
           for i in range(0, len(X), batch_size)]
    return np.concatenate(out) if out else np.zeros((0, rule.spec.n_classes), np.float32)


def _binned_grid(spec: NetworkSpec) -> tuple[int, int]:
    """(out_h, out_w) of the binning the network's inputs come from (needed to move frames spatially)."""
    from firmware_py.binning import BinSpec

    if spec.binning is None:
        raise SnnEdgeError("spatial jitter: the network records no binning, so its inputs have no pixel grid")
    b = BinSpec(*spec.binning)
    return b.out_h, b.out_w


def _better(acc: float, nll: float, best_acc: float, best_nll: float) -> bool:
    return acc > best_acc or (acc == best_acc and nll < best_nll)


def fit(rule: LearningRule, spec: NetworkSpec, params: list[LayerParams], train: tuple[np.ndarray, np.ndarray],
        val: tuple[np.ndarray, np.ndarray] | None = None, config: FitConfig = FitConfig(),
        resume: tuple[list[LayerParams], dict] | None = None, meta: dict | None = None) -> FitResult:
    """Train `params` in place with `rule` on train = (X [S, T, N] uint8, y [S]).

    resume: (params, extra) of a checkpoint written by this function (its params are the best so
    far); training continues after its last epoch with the same parameters, optimiser state and
    batch order, so the result is bit-identical to an uninterrupted run. meta: JSON-able facts
    saved in the checkpoint (data source, command line).
    """
    X, y = train
    check_params(spec, params)
    if len(X) == 0:
        raise SnnEdgeError("training data: no samples")
    if X.ndim != 3 or X.shape[2] != spec.n_inputs:
        raise SnnEdgeError(f"training data: expected [S, T, {spec.n_inputs}] frames for --arch {spec.arch}, "
                           f"got shape {X.shape}")
    if y.max() >= spec.n_classes or y.min() < 0:
        raise SnnEdgeError(f"training labels: expected 0..{spec.n_classes - 1} for --arch {spec.arch}, "
                           f"got {y.min()}..{y.max()}")
    rule.init(spec, params, np.random.default_rng([config.seed, 1]))
    result = FitResult(params=[p.copy() for p in params])
    start_epoch, stale = 0, 0
    best_acc, best_nll = -1.0, float("inf")
    if resume is not None:
        start_epoch, best_acc, best_nll, stale = _restore(rule, params, result, resume)
    t0 = time.perf_counter()
    for epoch in range(start_epoch, config.epochs):
        rule.set_lr(scheduled_lr(rule.options["lr"], epoch, config.epochs, config.lr_schedule,
                                 config.warmup_epochs))
        order = np.random.default_rng([config.seed, epoch]).permutation(len(X))
        n_batches = (len(X) + config.batch_size - 1) // config.batch_size
        loss_sum, correct, seen = 0.0, 0, 0
        bar = progress_bar(range(n_batches), config.progress, desc=f"epoch {epoch + 1}/{config.epochs}",
                           leave=False, unit="batch")
        for b in bar:
            idx = order[b * config.batch_size:(b + 1) * config.batch_size]
            xb = np.ascontiguousarray(X[idx].transpose(1, 0, 2))
            if config.jitter:   # seeded per (seed, epoch, batch): a resumed run sees the same shifts
                xb = spatial_jitter(xb, *_binned_grid(spec), config.jitter,
                                    np.random.default_rng([config.seed, epoch, b, 2]))
            try:
                m = rule.train_batch(params, xb, y[idx])
            except SnnEdgeError as exc:
                kept = f"; last good checkpoint kept: {config.checkpoint}" if config.checkpoint else ""
                raise SnnEdgeError(f"epoch {epoch + 1}, batch {b + 1}: {exc}{kept}") from None
            loss_sum += m["loss"] * m["n"]
            correct += int(m["correct"])
            seen += int(m["n"])
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}")
        bar.close()
        record = {"epoch": epoch, "lr": rule.lr, "train_loss": loss_sum / seen, "train_acc": correct / seen}
        improved = True
        if val is not None and len(val[1]):
            logits = predict_logits(rule, params, val[0], config.eval_batch_size)
            record.update(val_acc=metrics.accuracy(logits, val[1]), val_nll=metrics.nll(logits, val[1]),
                          val_ece=metrics.expected_calibration_error(logits, val[1]))
            improved = _better(record["val_acc"], record["val_nll"], best_acc, best_nll)
        record["seconds"] = time.perf_counter() - t0
        result.history.append(record)
        if improved:
            best_acc, best_nll = record.get("val_acc", float("nan")), record.get("val_nll", 0.0)
            stale = 0
            result.params = [p.copy() for p in params]
            result.best_epoch = epoch
        else:
            stale += 1
        if config.progress:
            tqdm.write(_epoch_line(record, config.epochs))
        stop = config.patience > 0 and stale >= config.patience
        if config.checkpoint:
            _save(config, spec, rule, params, result, epoch, best_acc, best_nll, stale, meta)
        if config.curve_png:
            from edge.plots import training_curves

            training_curves(result.history, config.curve_png, title=f"{rule.name} {spec.arch}")
        if stop:
            result.stopped_early = True
            break
    result.best_val_acc = best_acc if val is not None else float("nan")
    result.seconds = time.perf_counter() - t0
    return result


def _epoch_line(r: dict, n_epochs: int) -> str:
    line = f"epoch {r['epoch'] + 1}/{n_epochs}: loss {r['train_loss']:.4f} acc {r['train_acc']:.3f}"
    if "val_acc" in r:
        line += f" | val acc {r['val_acc']:.3f} nll {r['val_nll']:.3f} ece {r['val_ece']:.3f}"
    return line + f" | lr {r['lr']:.2e} | {r['seconds']:.1f}s"


def _save(config, spec, rule, params, result, epoch, best_acc, best_nll, stale, meta) -> None:
    extra: dict = {
        "rule": rule.config(),
        "fit": asdict(config),
        "train_state": {"epoch": epoch, "best_epoch": result.best_epoch, "best_acc": best_acc,
                        "best_nll": best_nll, "stale": stale, "history": result.history},
        "meta": meta or {},
    }
    for i, p in enumerate(params):  # the last epoch's parameters, to resume from
        for name, value in p.arrays().items():
            extra[f"{RESUME_PREFIX}L{i}_{name}"] = value.copy()
    for key, value in rule.state_dict().items():
        extra[f"{RESUME_PREFIX}rule.{key}"] = np.asarray(value)
    save_checkpoint(config.checkpoint, spec, result.params, extra)


def _restore(rule: LearningRule, params: list[LayerParams], result: FitResult, resume):
    best_params, extra = resume
    state = extra.get("train_state")
    if state is None:
        raise SnnEdgeError("resume: the checkpoint has no training state (was it written by fit?)")
    try:
        for i, p in enumerate(params):
            for name in p.NAMES:  # subclasses (GEM) restore their extra arrays too
                getattr(p, name)[...] = extra[f"{RESUME_PREFIX}L{i}_{name}"]
        result.params = [p.copy() for p in best_params]
    except KeyError as exc:
        raise SnnEdgeError(f"resume: checkpoint lacks {exc.args[0]}") from None
    prefix = f"{RESUME_PREFIX}rule."
    rule.load_state_dict({k[len(prefix):]: v for k, v in extra.items() if k.startswith(prefix)})
    result.history = json.loads(json.dumps(state["history"]))
    result.best_epoch = state["best_epoch"]
    return state["epoch"] + 1, state["best_acc"], state["best_nll"], state["stale"]
