"""Training and evaluation figures as PNG files (matplotlib, Agg backend), written atomically."""
from __future__ import annotations

import numpy as np

from edge.atomic import atomic_output
from edge.metrics import Reliability


def _figure(*args, **kwargs):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt, plt.subplots(*args, **kwargs)


def _save(plt, fig, path) -> None:
    try:
        with atomic_output(path) as fh:
            fig.savefig(fh, dpi=110, bbox_inches="tight", format="png")
    finally:
        plt.close(fig)


def training_curves(history: list[dict], path, title: str = "training") -> None:
    """Loss and accuracy per epoch, train and validation, from fit's history records."""
    plt, (fig, (ax_loss, ax_acc)) = _figure(1, 2, figsize=(10, 3.8))
    epochs = [h["epoch"] + 1 for h in history]
    ax_loss.plot(epochs, [h["train_loss"] for h in history], label="train")
    if any("val_nll" in h for h in history):
        ax_loss.plot(epochs, [h.get("val_nll", np.nan) for h in history], label="validation NLL")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("loss")
    ax_loss.legend()
    ax_acc.plot(epochs, [h["train_acc"] for h in history], label="train")
    if any("val_acc" in h for h in history):
        ax_acc.plot(epochs, [h.get("val_acc", np.nan) for h in history], label="validation")
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("accuracy")
    ax_acc.set_ylim(0, 1)
    ax_acc.legend()
    fig.suptitle(title)
    _save(plt, fig, path)


def reliability_diagram(rel: Reliability, path, title: str = "reliability") -> None:
    plt, (fig, ax) = _figure(figsize=(4.5, 4.5))
    centers = 0.5 * (rel.edges[:-1] + rel.edges[1:])
    width = rel.edges[1] - rel.edges[0]
    filled = rel.count > 0
    ax.bar(centers[filled], rel.accuracy[filled], width=width, edgecolor="black", label="accuracy")
    ax.plot([0, 1], [0, 1], "k--", label="perfect calibration")
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_title(f"{title} (ECE {rel.ece:.3f})")
    ax.legend(loc="upper left")
    _save(plt, fig, path)


def confusion_matrix(cm: np.ndarray, path, title: str = "confusion matrix") -> None:
    plt, (fig, ax) = _figure(figsize=(5, 4.5))
    im = ax.imshow(cm, cmap="Blues")
    n = cm.shape[0]
    for i in range(n):
        for j in range(n):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=7,
                    color="white" if cm[i, j] > cm.max() / 2 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_xticks(range(n))
    ax.set_yticks(range(n))
    fig.colorbar(im, ax=ax)
    ax.set_title(title)
    _save(plt, fig, path)


def metric_vs_params(points: dict[str, list[tuple[object, float]]], metric: str, path, title: str = "sweep",
                     log_x: frozenset[str] = frozenset()) -> None:
    """One panel per parameter: the metric of every finished trial against that parameter's value.

    points[name] = [(value, metric), ...]; numbers go on a numeric axis (log for names in log_x),
    anything else (architectures, rule names) on a categorical one in first-seen order.
    """
    names = list(points)
    plt, (fig, axes) = _figure(1, max(1, len(names)), figsize=(4.2 * max(1, len(names)), 3.6), squeeze=False)
    for ax, name in zip(axes[0], names):
        values = [v for v, _ in points[name]]
        scores = [s for _, s in points[name]]
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        if numeric:
            ax.scatter(values, scores)
            if name in log_x:
                ax.set_xscale("log")
        else:
            labels = list(dict.fromkeys(str(v) for v in values))
            ax.scatter([labels.index(str(v)) for v in values], scores)
            ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
        ax.set_xlabel(name)
        ax.set_ylabel(metric)
    fig.suptitle(title)
    _save(plt, fig, path)
