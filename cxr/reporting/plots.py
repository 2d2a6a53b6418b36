"""Figures of ``make reproduce-tables``: per-epoch training curves from the runs' CSV logs (Go &
Bissaliyeva's Figs. 6–7: train/val loss and accuracy; Gabruseva et al.'s validation loss and mAP per
encoder, head and augmentation) and mAP against NMS threshold (Gabruseva et al.'s Fig. 8).

Curves are the mean over a row's replicates (seeds or folds) with a ±1 std band where there are
two or more; train curves dashed, validation solid, one colour per row; the std band is drawn for validation curves only.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

log = logging.getLogger(__name__)


def read_log(run_dir: str | Path | None) -> pd.DataFrame | None:
    """A run's per-epoch values: one row per epoch (index), one column per logged metric; None if the
    run has no CSV log (``<run>/csv/metrics.csv``, :class:`cxr.tasks.loggers.CSVLogger`)."""
    if run_dir is None:
        return None
    path = Path(run_dir) / "csv" / "metrics.csv"
    if not path.is_file():
        return None
    frame = pd.read_csv(path)
    if "epoch" not in frame:
        return None
    # Lightning writes one line per logging call; the epoch values of one epoch sit on different lines
    return frame.dropna(subset=["epoch"]).groupby("epoch").last()


def mean_curves(logs: Sequence[pd.DataFrame], column: str) -> pd.DataFrame:
    """Mean and std (ddof 1) of ``column`` over runs, per epoch; epochs some runs lack use the others."""
    series = [log_[column].dropna() for log_ in logs if column in log_]
    if not series:
        return pd.DataFrame(columns=["mean", "std"])
    stacked = pd.concat(series, axis=1)
    return pd.DataFrame({"mean": stacked.mean(axis=1), "std": stacked.std(axis=1, ddof=1)}).sort_index()


def training_curves(
    runs: Mapping[str, Sequence[str | Path | None]],
    panels: Sequence[tuple[str, str | None, str | None]],
    path: str | Path,
    title: str,
) -> Path | None:
    """One panel per ``(label, train column, val column)``, one colour per row of ``runs``
    (row label -> run folders). Returns the PNG's path, or None when no run has a log."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    logs = {row: [lg for lg in (read_log(r) for r in dirs) if lg is not None] for row, dirs in runs.items()}
    if not any(logs.values()):
        log.warning("%s: no CSV logs, no figure", path)
        return None
    fig = Figure(figsize=(5.2 * len(panels), 4.0), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    colours = [f"C{i}" for i in range(10)]
    for ax, (label, train_col, val_col) in zip(axes, panels, strict=True):
        for i, (row, row_logs) in enumerate(logs.items()):
            for column, style, suffix in ((train_col, "--", "train"), (val_col, "-", "val")):
                if column is None:
                    continue
                curve = mean_curves(row_logs, column)
                if curve.empty:
                    continue
                x = curve.index.to_numpy() + 1  # epochs counted from 1
                ax.plot(
                    x,
                    curve["mean"],
                    style,
                    color=colours[i % 10],
                    marker="o",
                    ms=3,
                    label=f"{row} ({suffix})",
                )
                if suffix == "val" and curve["std"].notna().any():
                    ax.fill_between(
                        x,
                        curve["mean"] - curve["std"],
                        curve["mean"] + curve["std"],
                        color=colours[i % 10],
                        alpha=0.1,
                        lw=0,
                    )
        ax.set(xlabel="epoch", ylabel=label, title=label)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if ax.has_data():
            ax.legend(fontsize="x-small")
    fig.suptitle(title, fontsize="medium")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def nms_curves(sweep: pd.DataFrame, path: str | Path, title: str) -> Path | None:
    """Gabruseva et al.'s Fig. 8: RSNA mAP (best score threshold) against NMS threshold, one line per
    setting, mean over folds with a ±1 std band. ``sweep``: columns fold, setting, nms_thresh,
    score_thresh, rsna_map (:func:`cxr.reporting.reproduce.postprocess.postprocess_sweep`)."""
    from matplotlib.figure import Figure

    if sweep.empty:
        log.warning("%s: empty NMS sweep, no figure", path)
        return None
    best = sweep.groupby(["setting", "fold", "nms_thresh"], sort=False)["rsna_map"].max().reset_index()
    fig = Figure(figsize=(7.5, 4.5), layout="constrained")
    ax = fig.subplots()
    for i, (setting, group) in enumerate(best.groupby("setting", sort=False)):
        stats = group.groupby("nms_thresh")["rsna_map"].agg(["mean", "std"])
        x = stats.index.to_numpy()
        ax.plot(x, stats["mean"], marker="o", ms=3, color=f"C{i}", label=setting)
        if stats["std"].notna().any():
            ax.fill_between(
                x, stats["mean"] - stats["std"], stats["mean"] + stats["std"], color=f"C{i}", alpha=0.15, lw=0
            )
    ax.set(xlabel="NMS IoU threshold", ylabel="validation RSNA mAP (best score threshold)", title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path
