"""The classification tables' picture: ROC and precision-recall curves and confusion matrices.

One PNG per table: an ROC panel and a precision-recall panel with every row's replicates (seeds)
overlaid (one colour per row, one thin line per seed, the row's mean AUROC / average precision in
the legend), and one confusion matrix per row, summed over its seeds. Curves come from each run's
``test_predictions.csv`` (:class:`cxr.tasks.callbacks.predictions.TestPredictions`), matrices from
its ``metrics.json`` (``test/confusion_matrix``); a run without them is left out (counted in the
legend as ``n`` seeds).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)


def _predictions(run_dir: str | Path | None) -> pd.DataFrame | None:
    path = None if run_dir is None else Path(run_dir) / "test_predictions.csv"
    if path is None or not path.is_file():
        return None
    frame = pd.read_csv(path)
    return frame if {"label", "probability"} <= set(frame.columns) and frame["label"].nunique() == 2 else None


def _confusion(run_dir: str | Path | None) -> np.ndarray | None:
    path = None if run_dir is None else Path(run_dir) / "metrics.json"
    if path is None or not path.is_file():
        return None
    matrix = json.loads(path.read_text()).get("test/confusion_matrix")
    return None if matrix is None else np.asarray(matrix, dtype=np.int64)


def classification_figure(
    runs: Mapping[str, Sequence[str | Path | None]],
    path: str | Path,
    title: str,
    class_names: Sequence[str] = ("normal", "pneumonia"),
) -> Path | None:
    """Draw ROC, precision-recall and per-row confusion matrices of ``runs`` (row label -> run
    folders, one per seed) to ``path``; None (and a warning) when no run has test predictions."""
    from matplotlib.figure import Figure
    from sklearn.metrics import auc, average_precision_score, precision_recall_curve, roc_curve

    rows = {label: [p for p in map(_predictions, dirs) if p is not None] for label, dirs in runs.items()}
    if not any(rows.values()):
        log.warning("%s: no run has test_predictions.csv, no figure", path)
        return None
    # ROC and PR side by side on top, then the confusion matrices, four to a line
    per_line = min(4, len(runs))
    lines = -(-len(runs) // per_line)
    fig = Figure(figsize=(3.6 * per_line + 1.0, 4.8 + 3.2 * lines), layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=(4.8, 3.2 * lines))
    roc_ax, pr_ax = top.subplots(1, 2)
    cm_axes = list(bottom.subplots(lines, per_line, squeeze=False).ravel())
    for ax in cm_axes[len(runs) :]:
        ax.set_axis_off()
    for i, (label, frames) in enumerate(rows.items()):
        aucs, aps = [], []
        for k, frame in enumerate(frames):
            y, p = frame["label"].to_numpy() > 0, frame["probability"].to_numpy()
            fpr, tpr, _ = roc_curve(y, p)
            precision, recall, _ = precision_recall_curve(y, p)
            aucs.append(auc(fpr, tpr))
            aps.append(average_precision_score(y, p))
            roc_ax.plot(fpr, tpr, color=f"C{i}", lw=1, alpha=0.8, label=None if k else label)
            pr_ax.plot(recall, precision, color=f"C{i}", lw=1, alpha=0.8, label=None if k else label)
        if frames:
            for ax, values, name in ((roc_ax, aucs, "AUROC"), (pr_ax, aps, "AP")):
                line = next(h for h in ax.get_lines() if h.get_label() == label)
                line.set_label(f"{label}: {name} {np.mean(values):.3f} (n={len(values)})")
    roc_ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":")
    roc_ax.set(xlabel="false positive rate", ylabel="true positive rate (recall)", title="ROC (test)")
    pr_ax.set(xlabel="recall", ylabel="precision", title="precision-recall (test)", ylim=(0, 1.02))
    for ax in (roc_ax, pr_ax):
        ax.grid(alpha=0.3)
        ax.legend(fontsize="x-small", loc="lower right" if ax is roc_ax else "lower left")
    for ax, (label, dirs) in zip(cm_axes, runs.items(), strict=False):
        matrices = [m for m in map(_confusion, dirs) if m is not None]
        if not matrices:
            ax.set_axis_off()
            ax.set_title(f"{label}\n(no finished runs)", fontsize="small")
            continue
        total = np.sum(matrices, axis=0)
        ax.imshow(total, cmap="Blues")
        for (r, c), value in np.ndenumerate(total):
            ax.text(
                c,
                r,
                str(value),
                ha="center",
                va="center",
                color="black" if value < total.max() / 2 else "white",
            )
        names = list(class_names)[: total.shape[0]]
        ax.set(xticks=range(len(names)), yticks=range(len(names)), xlabel="predicted", ylabel="true")
        ax.set_xticklabels(names, fontsize="small")
        ax.set_yticklabels(names, fontsize="small")
        ax.set_title(f"{label}\n(sum of {len(matrices)} seeds)", fontsize="small")
    fig.suptitle(title, fontsize="medium")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path
