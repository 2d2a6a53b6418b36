"""Kaggle submission CSV of the RSNA challenge: ``patientId,PredictionString``, where
PredictionString is "score x y width height" groups in original pixels.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from cxr.data.rsna_labels import _read_csv


def _numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def write_submission(predictions: Mapping[str, Mapping[str, Any]], path: str | Path) -> Path:
    """Write a Kaggle submission: ``patientId,PredictionString``.

    ``predictions[patientId]`` holds ``boxes`` (N, 4) x1 y1 x2 y2 in original pixels and ``scores`` (N,).
    PredictionString is "score x y width height" groups (score 4 decimals, coordinates 1 decimal) by
    descending score; empty when N = 0. Every test patient must be in ``predictions``.
    """
    rows = []
    for pid, pred in predictions.items():
        boxes = _numpy(pred["boxes"]).astype(np.float64).reshape(-1, 4)
        scores = _numpy(pred["scores"]).astype(np.float64).reshape(-1)
        if len(boxes) != len(scores) or not (np.isfinite(boxes).all() and np.isfinite(scores).all()):
            raise ValueError(
                f"{pid}: need finite boxes (N, 4) and scores (N,), got {boxes.shape}, {scores.shape}"
            )
        groups = [
            f"{scores[i]:.4f} {x1:.1f} {y1:.1f} {x2 - x1:.1f} {y2 - y1:.1f}"
            for i in np.argsort(-scores, kind="stable")
            for x1, y1, x2, y2 in [boxes[i]]
        ]
        rows.append((pid, " ".join(groups)))
    path = Path(path)
    pd.DataFrame(rows, columns=["patientId", "PredictionString"]).to_csv(path, index=False)
    return path


def read_submission(path: str | Path) -> dict[str, dict[str, np.ndarray]]:
    """Inverse of :func:`write_submission`: {patientId: {"boxes": float32 (N, 4) x1y1x2y2, "scores": float32 (N,)}}."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    df = _read_csv(path, ("patientId", "PredictionString"))
    out = {}
    for pid, text in zip(df["patientId"], df["PredictionString"], strict=True):
        try:
            values = np.array([] if pd.isna(text) else str(text).split(), np.float32)  # empty cell: no boxes
        except ValueError:
            raise ValueError(
                f"{path}: PredictionString of {pid} is not numbers: {str(text)[:80]!r}"
            ) from None
        if len(values) % 5:
            raise ValueError(f"{path}: PredictionString of {pid} has {len(values)} numbers, not groups of 5")
        values = values.reshape(-1, 5)
        xyxy = np.concatenate([values[:, 1:3], values[:, 1:3] + values[:, 3:5]], axis=1)
        out[pid] = {"boxes": xyxy, "scores": values[:, 0].copy()}
    return out
