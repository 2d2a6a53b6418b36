"""Choosing post-processing values on validation data: NMS IoU and score thresholds for detection (by
a sweep of the RSNA challenge score), the decision threshold for classification, and the paper's
Fig. 8 (validation score against NMS threshold and epoch).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from cxr.inference.postprocess.wbf import fuse_images
from cxr.metrics import rsna_map

SWEEP_COLUMNS = ("nms_thresh", "score_thresh", "rsna_map", "boxes_per_image")
# NMS IoU thresholds swept by cxr-tune and the post-processing table: 0 (any overlap suppresses) to 1
# (nothing is suppressed), as the paper's Fig. 8 spans; the authors' own NMS used 0.05.
NMS_GRID = tuple(round(0.05 * i, 2) for i in range(21))  # 0.0, 0.05, ..., 1.0


def sweep_nms(
    predictions: Sequence[Sequence[Mapping] | Mapping],
    targets: Sequence[Mapping],
    nms_thresholds: Sequence[float],
    score_thresholds: Sequence[float],
    score_mode: str = "mean",
    ensemble: str = "nms",
) -> pd.DataFrame:
    """RSNA challenge score for every (NMS threshold, score threshold) pair.

    Args:
        predictions: per image, the raw detections of its ensemble members (a list of
            ``{"boxes": (N, 4) x1y1x2y2, "scores": (N,)}``) or one such dict (a single model).
            For out-of-fold tuning each image's members are the checkpoints that did not train on it.
        targets: per image ``{"boxes": (M, 4)}`` in the same pixel frame.
        nms_thresholds: IoU thresholds of the ensemble's single NMS, each in [0, 1] (1 = none).
        score_thresholds: detections scoring below are dropped, each in [0, 1].
        score_mode: see :func:`cxr.inference.postprocess.ensemble_detections`.
        ensemble: ``"nms"`` (pooling + one NMS) or ``"wbf"`` (weighted box fusion, the thresholds
            then being its clustering IoU; :func:`cxr.inference.postprocess.wbf.fuse_detections`).

    Returns:
        One row per pair, in grid order: ``nms_thresh``, ``score_thresh``, ``rsna_map`` (the
        challenge score, :func:`cxr.metrics.rsna_map`), ``boxes_per_image`` (mean kept boxes).
    """
    if len(predictions) != len(targets):
        raise ValueError(f"{len(predictions)} predicted images but {len(targets)} targets")
    if not len(nms_thresholds) or not len(score_thresholds):
        raise ValueError("sweep_nms: need at least one NMS and one score threshold")
    rows = []
    for nms_thresh in nms_thresholds:
        merged = fuse_images(predictions, ensemble, float(nms_thresh), score_mode)
        for score_thresh in score_thresholds:
            masks = [d["scores"] >= score_thresh for d in merged]
            kept = [
                {"boxes": d["boxes"][m], "scores": d["scores"][m]} for d, m in zip(merged, masks, strict=True)
            ]
            rows.append(
                (
                    float(nms_thresh),
                    float(score_thresh),
                    rsna_map(kept, targets),
                    float(np.mean([len(k["scores"]) for k in kept])) if kept else 0.0,
                )
            )
    return pd.DataFrame(rows, columns=list(SWEEP_COLUMNS))


def best_thresholds(table: pd.DataFrame) -> dict[str, float]:
    """The row of a :func:`sweep_nms` table with the highest ``rsna_map`` (the first in grid order on
    ties) as ``{"nms_thresh", "score_thresh", "rsna_map"}``."""
    if table.empty:
        raise ValueError("best_thresholds: empty sweep table")
    row = table.iloc[int(np.argmax(table["rsna_map"].to_numpy()))]
    return {k: float(row[k]) for k in ("nms_thresh", "score_thresh", "rsna_map")}


def choose_decision_threshold(probabilities, labels, target_recall: float | None = None) -> dict[str, float]:
    """Decision threshold on the pneumonia probability, chosen on validation predictions.

    Predicting pneumonia for ``probability >= threshold``; the candidates are the observed probabilities
    (:func:`sklearn.metrics.precision_recall_curve`).

    Args:
        probabilities: float (N,) pneumonia probabilities.
        labels: (N,) ground truth, pneumonia = 1 (any label > 0 counts as pneumonia).
        target_recall: pick the highest threshold whose recall is at least this (in (0, 1]); None:
            the threshold with the best F1 (the lowest one on ties).

    Returns:
        ``{"threshold", "precision", "recall", "f1"}`` at the chosen threshold.
    """
    from sklearn.metrics import precision_recall_curve

    probs = torch.as_tensor(probabilities, dtype=torch.float64).reshape(-1).numpy()
    truth = (torch.as_tensor(labels).reshape(-1) > 0).numpy()
    if len(probs) != len(truth):
        raise ValueError(f"{len(probs)} probabilities but {len(truth)} labels")
    if truth.all() or not truth.any():
        raise ValueError(
            f"choosing a threshold needs both classes in the validation labels; all {len(truth)} are "
            f"{'pneumonia' if truth.any() else 'normal'}"
        )
    precision, recall, thresholds = precision_recall_curve(truth, probs)
    precision, recall = precision[:-1], recall[:-1]  # the last point (recall 0) has no threshold
    f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0.0)
    if target_recall is None:
        i = int(np.argmax(f1))
    else:
        if not 0 < target_recall <= 1:
            raise ValueError(f"target_recall must be in (0, 1], got {target_recall}")
        i = int(np.flatnonzero(recall >= target_recall - 1e-12).max())  # recall falls as the threshold rises
    return {
        "threshold": float(thresholds[i]),
        "precision": float(precision[i]),
        "recall": float(recall[i]),
        "f1": float(f1[i]),
    }


def plot_nms_sweep(
    tables: Mapping[int | str, pd.DataFrame], path: str | Path, title: str = "Validation RSNA mAP"
) -> Path:
    """The paper's Fig. 8 as a PNG: validation score (best score threshold per point) against NMS
    threshold, one line per epoch (left), and against epoch, one line per NMS threshold (right).

    ``tables``: epoch (or any label) -> :func:`sweep_nms` table, in the order to plot.
    """
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    if not tables:
        raise ValueError("plot_nms_sweep: no sweep tables")
    best = {k: t.groupby("nms_thresh")["rsna_map"].max() for k, t in tables.items()}
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    left, right = fig.subplots(1, 2)

    def shades(n: int) -> list:  # ordered values, ordered colours (tab10 repeats after ten lines)
        return [colormaps["viridis"](x) for x in np.linspace(0.0, 0.9, n)]

    for (label, series), colour in zip(best.items(), shades(len(best)), strict=True):
        left.plot(series.index, series.to_numpy(), marker="o", color=colour, label=f"epoch {label}")
    left.set(xlabel="NMS IoU threshold", ylabel="RSNA mAP (best score threshold)", title=title)
    left.legend(fontsize="small")
    frame = pd.DataFrame(best)  # rows: NMS thresholds, columns: epochs
    positions = np.arange(len(frame.columns))
    for (nms_thresh, row), colour in zip(frame.iterrows(), shades(len(frame)), strict=True):
        right.plot(positions, row.to_numpy(), marker="o", color=colour, label=f"NMS {nms_thresh:g}")
    right.set_xticks(positions, [str(c) for c in frame.columns])
    right.set(xlabel="epoch", ylabel="RSNA mAP", title=f"{title} per epoch")
    right.legend(fontsize="small", ncols=2)
    for ax in (left, right):
        ax.grid(alpha=0.3)
    path = Path(path)
    fig.savefig(path, dpi=120)
    return path
