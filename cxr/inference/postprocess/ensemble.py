"""Merging the detections of several checkpoints and folds before one NMS, and averaging their global
classification probabilities.

Every input is one image's detections in a pixel frame shared by all members (original pixels when
members differ in input size): ``{"boxes": (N, 4) x1 y1 x2 y2, "scores": (N,) in [0, 1]}``, tensors or
arrays. Members should hand in *raw* detections (their own NMS switched off, see
:func:`cxr.inference.members.detect`), so that the single NMS here is the only one; already suppressed
detections work too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor
from torchvision.ops import box_iou, nms

SCORE_MODES = ("mean", "max")


def _boxes_scores(det: Mapping, where: str) -> tuple[Tensor, Tensor]:
    try:
        boxes, scores = det["boxes"], det["scores"]
    except (KeyError, TypeError):
        raise KeyError(f"{where}: need a dict with 'boxes' and 'scores', got {det!r:.120}") from None
    boxes = torch.as_tensor(boxes).detach().to("cpu", torch.float32).reshape(-1, 4)
    scores = torch.as_tensor(scores).detach().to("cpu", torch.float32).reshape(-1)
    if len(boxes) != len(scores):
        raise ValueError(f"{where}: {len(boxes)} boxes but {len(scores)} scores")
    if not (boxes.isfinite().all() and scores.isfinite().all()):
        raise ValueError(f"{where}: boxes and scores must be finite")
    return boxes, scores


def ensemble_detections(
    members: Sequence[Mapping], nms_thresh: float, score_mode: str = "mean"
) -> dict[str, Tensor]:
    """Merge one image's detections from ``M`` members with a single NMS.

    All members' boxes are pooled and suppressed by :func:`torchvision.ops.nms` at ``nms_thresh``
    (a box goes when its IoU with a higher-scoring kept box is > ``nms_thresh``; 1.0 suppresses
    nothing, since no IoU exceeds 1). Every pooled box belongs to one kept box: itself if kept, else
    the highest-scoring kept box overlapping it (IoU > ``nms_thresh``: the one that suppressed it).
    For each kept box and each member, the member's *match* is its highest-scoring box belonging to
    the kept one, so a box counts for one kept box only (a box suppressed by a better one never
    lifts the score of a weaker kept box it also overlaps).

    Scores: ``"max"`` keeps the kept box's own score (plain NMS over the pooled boxes); ``"mean"``
    averages the members' match scores, a member without a match counting 0, so a box that one fold
    in four finds is worth a quarter of one that all find (the averaging of the authors' ensemble).
    Either way ``M`` copies of one member give exactly that member's result.

    Returns:
        ``boxes`` float32 (K, 4), ``scores`` float32 (K,) sorted descending, ``member_boxes``
        float32 (K, M, 4) each member's match (NaN where none; used by
        :func:`cxr.inference.postprocess.boxes.percentile_boxes`), ``member_scores`` float32 (K, M) (0 where none).
    """
    if not members:
        raise ValueError("ensemble_detections: need at least one member")
    if not 0.0 <= nms_thresh <= 1.0:
        raise ValueError(f"nms_thresh must be in [0, 1], got {nms_thresh}")
    if score_mode not in SCORE_MODES:
        raise ValueError(f"score_mode must be one of {SCORE_MODES}, got {score_mode!r}")
    parts = [_boxes_scores(det, f"member {m}") for m, det in enumerate(members)]
    boxes = torch.cat([b for b, _ in parts])
    scores = torch.cat([s for _, s in parts])
    owner = torch.cat([torch.full((len(s),), m) for m, (_, s) in enumerate(parts)])
    n_members = len(members)
    if len(boxes) == 0:
        return {
            "boxes": boxes,
            "scores": scores,
            "member_boxes": torch.zeros(0, n_members, 4),
            "member_scores": torch.zeros(0, n_members),
        }
    keep = nms(boxes, scores, nms_thresh)
    overlap = box_iou(boxes[keep], boxes) > nms_thresh
    overlap[torch.arange(len(keep)), keep] = True
    # kept boxes come best first, so a box's first overlapping kept box is the one that suppressed it
    cluster = overlap.to(torch.uint8).argmax(dim=0)  # (N,)
    belongs = torch.zeros_like(overlap)
    belongs[cluster, torch.arange(len(boxes))] = overlap.any(dim=0)
    candidate = torch.where(belongs, scores[None, :], -torch.inf)  # (K, N)
    member_scores = torch.zeros(len(keep), n_members)
    member_boxes = torch.full((len(keep), n_members, 4), float("nan"))
    for m in range(n_members):
        columns = torch.nonzero(owner == m).flatten()
        if len(columns) == 0:
            continue
        best, where = candidate[:, columns].max(dim=1)
        found = best > -torch.inf
        member_scores[found, m] = best[found]
        member_boxes[found, m] = boxes[columns[where[found]]]
    merged = scores[keep] if score_mode == "max" else member_scores.sum(dim=1) / n_members
    order = torch.sort(merged, descending=True, stable=True).indices
    return {
        "boxes": boxes[keep][order],
        "scores": merged[order],
        "member_boxes": member_boxes[order],
        "member_scores": member_scores[order],
    }


def ensemble_images(
    images: Sequence[Sequence[Mapping] | Mapping], nms_thresh: float, score_mode: str = "mean"
) -> list[dict[str, Tensor]]:
    """:func:`ensemble_detections` image by image. ``images[i]`` is the list of image i's member
    detections (members may differ between images, as in out-of-fold predictions) or a single dict
    (one member)."""
    return [
        ensemble_detections([item] if isinstance(item, Mapping) else item, nms_thresh, score_mode)
        for item in images
    ]


def average_probabilities(members: Sequence[Tensor]) -> Tensor:
    """Mean of the members' probabilities, each float (B, C) (softmax or sigmoid outputs, not logits)."""
    if not members:
        raise ValueError("average_probabilities: need at least one member")
    probs = [torch.as_tensor(p, dtype=torch.float32) for p in members]
    shapes = {tuple(p.shape) for p in probs}
    if len(shapes) > 1:
        raise ValueError(f"members' probabilities differ in shape: {sorted(shapes)}")
    return torch.stack(probs).mean(dim=0)
