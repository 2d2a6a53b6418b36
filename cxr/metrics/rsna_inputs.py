"""Inputs of the RSNA metric: checked image by image, flattened across images.

:func:`collect` turns per-image ``preds`` / ``targets`` dicts into one :class:`_Flat` of float64 CPU
tensors, fast when the inputs are well-formed tensors and image by image otherwise, and raises
naming the image for a missing entry, a wrong shape, a box/score count mismatch, a non-finite value
or x2 < x1 / y2 < y1. Shared by :func:`cxr.metrics.rsna_map.rsna_map` and the reference loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor


class _Flat(NamedTuple):
    """Validated inputs, flattened across images (in input order), all on the CPU."""

    pred_boxes: Tensor  # float64 (sum n_pred, 4)
    scores: Tensor  # float64 (sum n_pred,)
    gt_boxes: Tensor  # float64 (sum n_gt, 4)
    n_pred: Tensor  # int64 (B,)
    n_gt: Tensor  # int64 (B,)
    thresholds: Tensor  # float64 (T,)


def _flatten_fast(preds: Sequence[dict], targets: Sequence[dict]) -> tuple | None:
    """The common case (tensors of the right shapes on one device) without a per-image Python loop;
    None if anything is off (or there are no images), so that :func:`_flatten_checked` can say what."""
    try:
        parts = [p["boxes"] for p in preds], [p["scores"] for p in preds], [t["boxes"] for t in targets]
        sizes = [list(map(Tensor.numel, tensors)) for tensors in parts]
        # Leaving out empty scores keeps torch.cat on its fast path (1-D empties make it ~10x slower).
        scores = [x for x, n in zip(parts[1], sizes[1], strict=True) if n] or [torch.zeros(0)]
        flat = [torch.cat(parts[0]), torch.cat(scores), torch.cat(parts[2])]
    except (KeyError, TypeError, IndexError, ValueError, RuntimeError):
        return None
    n_pred, n_scores, n_gt = (torch.from_numpy(np.fromiter(size, np.int64, len(size))) for size in sizes)
    n_pred, n_gt = n_pred // 4, n_gt // 4
    n_p, n_g = int(n_pred.sum()), int(n_gt.sum())
    # torch.cat requires equal trailing shapes, so these totals pin down every image's shape.
    if [tuple(x.shape) for x in flat] != [(n_p, 4), (n_p,), (n_g, 4)] or not torch.equal(n_scores, n_pred):
        return None
    return *flat, n_pred, n_gt


def _entry(item: dict, key: str, index: int, kind: str) -> Tensor:
    """``item[key]`` as a float64 CPU tensor (N, 4) for boxes, (N,) for scores; empty means none."""
    try:
        value = item[key]
    except (KeyError, TypeError, IndexError):
        raise KeyError(f"{kind}[{index}] must be a dict with a '{key}' entry, got {item!r:.200}") from None
    value = torch.as_tensor(value).detach().to("cpu", torch.float64)
    if key == "scores":
        return value.reshape(-1)
    if value.ndim != 2 or value.shape[1] != 4:
        if value.numel() == 0:
            return value.reshape(0, 4)
        raise ValueError(f"{kind}[{index}]['{key}'] must have shape (N, 4), got {tuple(value.shape)}")
    return value


def _flatten_checked(preds: Sequence[dict], targets: Sequence[dict]) -> tuple:
    """Image by image: accepts arrays, lists and mixed devices; raises naming the image."""
    pred_boxes, scores, gt_boxes = [torch.zeros(0, 4)], [torch.zeros(0)], [torch.zeros(0, 4)]
    for i, (pred, target) in enumerate(zip(preds, targets, strict=True)):
        pb, sc = _entry(pred, "boxes", i, "preds"), _entry(pred, "scores", i, "preds")
        if len(sc) != len(pb):
            raise ValueError(f"preds[{i}] has {len(pb)} boxes but {len(sc)} scores")
        pred_boxes.append(pb)
        scores.append(sc)
        gt_boxes.append(_entry(target, "boxes", i, "targets"))
    n_pred = torch.tensor([len(b) for b in pred_boxes[1:]], dtype=torch.int64)
    n_gt = torch.tensor([len(b) for b in gt_boxes[1:]], dtype=torch.int64)
    return torch.cat(pred_boxes), torch.cat(scores), torch.cat(gt_boxes), n_pred, n_gt


def _image_of(row: Tensor, counts: Tensor) -> int:
    """Index of the image that flattened row ``row`` (a one-element tensor) belongs to."""
    return int(torch.searchsorted(torch.cumsum(counts, 0), row, right=True)[0])


def collect(preds: Sequence[dict], targets: Sequence[dict], thresholds: Sequence[float]) -> _Flat:
    """Validate the inputs (errors name the image) and flatten them across images."""
    if len(preds) != len(targets):
        raise ValueError(f"preds has {len(preds)} images but targets has {len(targets)}")
    thr = torch.as_tensor(thresholds, dtype=torch.float64).reshape(-1)
    if thr.numel() == 0 or not bool(((thr > 0) & (thr <= 1)).all()):
        raise ValueError(f"thresholds must be a non-empty sequence of values in (0, 1], got {thresholds}")
    found = _flatten_fast(preds, targets) or _flatten_checked(preds, targets)
    pred_boxes, scores, gt_boxes = (x.detach().to("cpu", torch.float64) for x in found[:3])
    flat = _Flat(pred_boxes, scores, gt_boxes, found[3], found[4], thr)
    # Cheap whole-array checks first (a non-finite term makes the sum non-finite, and comparisons with
    # nan are False); the row-by-row search only runs to name the culprit.
    if not bool(torch.isfinite(flat.scores.sum())):
        bad = (~torch.isfinite(flat.scores)).nonzero()[:1, 0]
        if len(bad):
            image = _image_of(bad, flat.n_pred)
            raise ValueError(f"preds[{image}]['scores'] must be finite, got {flat.scores[bad].item()}")
    for kind, boxes, counts in (
        ("preds", flat.pred_boxes, flat.n_pred),
        ("targets", flat.gt_boxes, flat.n_gt),
    ):
        if bool(torch.isfinite(boxes.sum())) and bool((boxes[:, 2:] >= boxes[:, :2]).all()):
            continue
        ok = torch.isfinite(boxes).all(1) & (boxes[:, 2:] >= boxes[:, :2]).all(1)
        bad = (~ok).nonzero()[:1, 0]
        if len(bad):
            raise ValueError(
                f"{kind}[{_image_of(bad, counts)}]['boxes'] holds {boxes[bad[0]].tolist()}: boxes must be "
                "finite x1 y1 x2 y2 with x1 <= x2 and y1 <= y2"
            )
    return flat
