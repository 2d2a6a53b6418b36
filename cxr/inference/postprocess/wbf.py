"""Weighted box fusion (Solovyev, Wang & Gabruseva, "Weighted boxes fusion: ensembling boxes from
different object detection models", Image and Vision Computing 2021), in torch.

Where NMS keeps one box of each overlapping group and drops the rest, WBF averages the group: each
fused box is the score-weighted mean of the boxes clustered into it, so every member's localisation
counts. It is the ``ensemble="wbf"`` option beside the paper's pool-then-NMS
(:func:`cxr.inference.postprocess.ensemble_detections`, the default), with the same input and output
contract, and follows the reference implementation (``ensemble-boxes``' ``weighted_boxes_fusion``,
``conf_type`` "avg" or "max", one class) step by step: the tests compare the two on random cases.
Unlike that package it needs no numba, never calls ``exit()`` and takes boxes in any pixel frame (IoU
and weighted means do not depend on the scale, so nothing is normalised to [0, 1] or clipped).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor
from torchvision.ops import box_iou

from cxr.inference.postprocess.ensemble import SCORE_MODES, _boxes_scores, ensemble_detections

ENSEMBLE_METHODS = ("nms", "wbf")


def weighted_boxes_fusion(
    members: Sequence[Mapping],
    iou_thresh: float = 0.55,
    score_mode: str = "mean",
    skip_score: float = 0.0,
    weights: Sequence[float] | None = None,
) -> dict[str, Tensor]:
    """Fuse one image's detections from ``M`` members.

    Boxes scoring below ``skip_score`` and boxes without area are dropped; the rest, weighted
    (score × the member's weight), are visited from the highest weighted score down. Each joins the
    fused box it overlaps most if that IoU is > ``iou_thresh``, which is then recomputed as the
    weighted-score mean of its cluster's boxes; otherwise it starts a new cluster.

    Scores (``n`` boxes in a cluster, member weights ``w``, default all 1): ``"mean"`` (the paper's
    "avg") is the mean weighted score × ``min(n, M) / sum(w)``, so a box that one member in four finds
    is worth a quarter of one that all find; ``"max"`` is the largest weighted score / ``max(w)``.

    Args:
        members: per member ``{"boxes": (N, 4) x1 y1 x2 y2, "scores": (N,)}`` in one pixel frame.
        iou_thresh: IoU above which a box joins a cluster, in [0, 1] (1: none joins, no fusion).
        score_mode: ``"mean"`` or ``"max"``.
        skip_score: boxes scoring below are ignored.
        weights: one positive weight per member (None: all 1).

    Returns:
        ``boxes`` float32 (K, 4), ``scores`` float32 (K,) sorted descending, ``member_boxes`` float32
        (K, M, 4) each member's highest-scoring box in the cluster (NaN where it has none; for
        :func:`cxr.inference.postprocess.percentile_boxes`), ``member_scores`` float32 (K, M) (0 where none).
    """
    if not members:
        raise ValueError("weighted_boxes_fusion: need at least one member")
    if not 0.0 <= iou_thresh <= 1.0:
        raise ValueError(f"iou_thresh must be in [0, 1], got {iou_thresh}")
    if score_mode not in SCORE_MODES:
        raise ValueError(f"score_mode must be one of {SCORE_MODES}, got {score_mode!r}")
    n_members = len(members)
    w = (
        torch.ones(n_members, dtype=torch.float64)
        if weights is None
        else torch.as_tensor(weights, dtype=torch.float64)
    )
    if w.shape != (n_members,) or not bool((w > 0).all()):
        raise ValueError(f"weights must be {n_members} positive numbers, got {weights}")
    parts = [_boxes_scores(det, f"member {m}") for m, det in enumerate(members)]
    boxes = torch.cat([b for b, _ in parts]).double()
    scores = torch.cat([s for _, s in parts]).double()
    owner = torch.cat([torch.full((len(s),), m) for m, (_, s) in enumerate(parts)])
    keep = (scores >= skip_score) & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    boxes, scores, owner = boxes[keep], scores[keep], owner[keep]
    weighted = scores * w[owner]
    order = torch.sort(weighted, descending=True, stable=True).indices
    clusters: list[list[int]] = []
    fused = torch.zeros(0, 4, dtype=torch.float64)
    for i in order.tolist():
        if len(clusters):
            ious = box_iou(fused, boxes[i : i + 1])[:, 0]
            best = int(ious.argmax())
            if float(ious[best]) > iou_thresh:
                cluster = clusters[best]
                cluster.append(i)
                s = weighted[cluster]
                fused[best] = (s[:, None] * boxes[cluster]).sum(dim=0) / s.sum()
                continue
        clusters.append([i])
        fused = torch.cat([fused, boxes[i : i + 1]])
    k = len(clusters)
    fused_scores = torch.zeros(k, dtype=torch.float64)
    member_scores = torch.zeros(k, n_members)
    member_boxes = torch.full((k, n_members, 4), float("nan"))
    for c, cluster in enumerate(clusters):
        s = weighted[cluster]
        if score_mode == "mean":
            fused_scores[c] = s.mean() * min(n_members, len(cluster)) / w.sum()
        else:
            fused_scores[c] = s.max() / w.max()
        for i in reversed(cluster):  # highest score last, so it is the one kept
            member_scores[c, owner[i]] = float(scores[i])
            member_boxes[c, owner[i]] = boxes[i].float()
    rank = torch.sort(fused_scores, descending=True, stable=True).indices
    return {
        "boxes": fused[rank].float(),
        "scores": fused_scores[rank].float(),
        "member_boxes": member_boxes[rank],
        "member_scores": member_scores[rank],
    }


def fuse_detections(
    members: Sequence[Mapping], method: str, iou_thresh: float, score_mode: str = "mean"
) -> dict[str, Tensor]:
    """One image's ensemble by ``method``: ``"nms"`` (:func:`ensemble_detections`, the paper's pooling
    before one NMS) or ``"wbf"`` (:func:`weighted_boxes_fusion`); ``iou_thresh`` is the NMS threshold or
    the WBF clustering threshold."""
    if method == "nms":
        return ensemble_detections(members, iou_thresh, score_mode)
    if method == "wbf":
        return weighted_boxes_fusion(members, iou_thresh, score_mode)
    raise ValueError(f"ensemble must be one of {ENSEMBLE_METHODS}, got {method!r}")


def fuse_images(
    images: Sequence[Sequence[Mapping] | Mapping], method: str, iou_thresh: float, score_mode: str = "mean"
) -> list[dict[str, Tensor]]:
    """:func:`fuse_detections` image by image (``images[i]``: image i's member detections, or one dict)."""
    return [
        fuse_detections([item] if isinstance(item, Mapping) else item, method, iou_thresh, score_mode)
        for item in images
    ]
