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
from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    from matplotlib.figure import Figure

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
    """:func:`nms_figure` saved as a PNG at ``path``; None (and no file) for an empty sweep."""
    fig = nms_figure(sweep, title)
    if fig is None:
        log.warning("%s: empty NMS sweep, no figure", path)
        return None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def nms_figure(sweep: pd.DataFrame, title: str) -> Figure | None:
    """Gabruseva et al.'s Fig. 8: RSNA mAP (best score threshold) against NMS threshold, mean over
    folds. ``sweep``: columns fold, setting, nms_thresh, score_thresh, rsna_map, optionally epoch and
    in_table (:func:`cxr.reporting.reproduce.postprocess.postprocess_sweep`).

    With several epochs of one setting (the single model epoch by epoch): left, one line per epoch
    (viridis, early dark to late yellow), as the paper's figure; right, the table's settings
    (``in_table`` rows) with a ±1 std band over folds. Otherwise one panel with a line per setting.
    """
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    if sweep.empty:
        return None
    table = sweep[sweep["in_table"].astype(bool)] if "in_table" in sweep else sweep
    by_epoch = pd.DataFrame()
    if "epoch" in sweep:
        counts = sweep.dropna(subset=["epoch"]).groupby("setting", sort=False)["epoch"].nunique()
        if len(counts) and counts.max() > 1:
            curves = sweep[sweep["setting"] == counts.idxmax()].dropna(subset=["epoch"])
            folds = curves.groupby("epoch")["fold"].nunique()  # epochs scored on every fold only
            curves = curves[curves["epoch"].isin(folds.index[folds == curves["fold"].nunique()])]
            by_epoch = (
                curves.groupby(["epoch", "fold", "nms_thresh"])["rsna_map"]
                .max()  # best score threshold
                .groupby(["epoch", "nms_thresh"])
                .mean()  # over folds
                .unstack("epoch")
            )
    fig = Figure(figsize=(13, 4.8) if not by_epoch.empty else (7.5, 4.5), layout="constrained")
    axes = fig.subplots(1, 2 if not by_epoch.empty else 1, squeeze=False)[0]
    if not by_epoch.empty:
        ax, epochs = axes[0], list(by_epoch.columns)
        shades = colormaps["viridis"]([i / max(len(epochs) - 1, 1) for i in range(len(epochs))])
        for epoch, colour in zip(epochs, shades, strict=True):
            ax.plot(
                by_epoch.index, by_epoch[epoch], marker="o", ms=3, color=colour, label=f"epoch {int(epoch)}"
            )
        folds = curves["fold"].nunique()
        ax.set(
            xlabel="NMS IoU threshold",
            ylabel="validation RSNA mAP (best score threshold)",
            title=f"{counts.idxmax()}, by epoch (0-based; mean of {folds} fold{'s' * (folds > 1)})",
        )
        ax.legend(fontsize="x-small", ncols=2 if len(epochs) > 8 else 1, loc="upper right")
    ax = axes[-1]
    best = table.groupby(["setting", "fold", "nms_thresh"], sort=False)["rsna_map"].max().reset_index()
    for i, (setting, group) in enumerate(best.groupby("setting", sort=False)):
        stats = group.groupby("nms_thresh")["rsna_map"].agg(["mean", "std"])
        x = stats.index.to_numpy()
        ax.plot(x, stats["mean"], marker="o", ms=3, color=f"C{i % 10}", label=setting)
        if stats["std"].notna().any():
            ax.fill_between(
                x,
                stats["mean"] - stats["std"],
                stats["mean"] + stats["std"],
                color=f"C{i % 10}",
                alpha=0.15,
                lw=0,
            )
    ax.set(xlabel="NMS IoU threshold", ylabel="validation RSNA mAP (best score threshold)")
    ax.set_title("the post-processing table's settings" if not by_epoch.empty else title)
    ax.legend(fontsize="x-small", loc="upper right")
    for ax in axes:
        ax.grid(alpha=0.3)
    if not by_epoch.empty:
        fig.suptitle(title, fontsize="medium")
    return fig
