"""The RSNA Pneumonia Detection Challenge metric: mean over images of the mean over IoU thresholds
0.40, 0.45, ..., 0.75 of TP / (TP + FP + FN).

Matching follows the public implementation (Kaggle kernel "Mean Average Precision Metric",
``map_iou``): predictions are ranked by descending score; each ground-truth box, in the order
given, takes the first not-yet-matched prediction in that ranking whose IoU with it hits the
threshold (IoU >= t, or IoU > t with ``strict=True``); unmatched predictions are false positives,
unmatched ground truth false negatives. Ties in score keep their input order (a stable sort; the
kernel's ``argsort()[::-1]`` leaves tie order to numpy's quicksort).

Scoring per image:
- no ground truth and no prediction: not scored (does not enter the mean);
- no ground truth and any prediction: 0;
- ground truth and no prediction: 0.
If no image is scored at all the result is 0.0, not nan, so that it can be monitored.

Boxes are x1 y1 x2 y2 in any one pixel frame shared by predictions and targets. All computation
happens on the CPU in float64 with the kernel's IoU formula and operation order, so that
:func:`rsna_map` and :func:`cxr.metrics.rsna_reference.rsna_map_reference` make the same hit
decisions bit for bit. Inputs are checked and flattened by :mod:`cxr.metrics.rsna_inputs`.

:func:`rsna_image_scores` is vectorised across images: boxes are padded into (4, boxes, images)
tensors and the greedy matching runs one ground-truth index at a time, for all images and
thresholds at once (about 10x the per-image loop on 3,000 images; see
:func:`cxr.metrics.rsna_reference.benchmark`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torchmetrics import Metric

from cxr.metrics.rsna_inputs import collect

RSNA_IOU_THRESHOLDS: tuple[float, ...] = (0.40, 0.45, 0.50, 0.55, 0.60, 0.65, 0.70, 0.75)


def _pad(values: Tensor, counts: Tensor, columns: Tensor) -> Tensor:
    """Rows (sum counts, D) grouped by image -> zero-padded (len(columns), max count, D) holding
    image ``columns[j]`` in row j, each image's rows in input order."""
    n_columns, width = len(columns), int(counts[columns].max())
    # Rows of images not in ``columns`` go to a spare row n_columns (clamped into it) that is dropped.
    column_of = torch.full((len(counts),), n_columns)
    column_of[columns] = torch.arange(n_columns)
    image = torch.repeat_interleave(torch.arange(len(counts)), counts)
    slot = torch.arange(len(values)) - (torch.cumsum(counts, 0) - counts)[image]
    padded = values.new_zeros((n_columns + 1) * width, values.shape[1])
    padded.index_copy_(0, column_of[image] * width + slot.clamp_(max=width - 1), values)
    return padded.view(n_columns + 1, width, -1)[:n_columns]


def _true_positives(gt: Tensor, pred: Tensor, n_gt: Tensor, thresholds: Tensor, strict: bool) -> Tensor:
    """TP count (B, T) of the greedy matching.

    gt (4, G, B) in input order and pred (4, P, B) ranked by score, zero-padded, with the images
    (last axis, so that elementwise work runs along the long axis) ordered by n_gt (B,) descending;
    thresholds (T,) in (0, 1].
    """
    p_max, n_images = pred.shape[1:]
    thr = thresholds[:, None, None]
    # The kernel's IoU, operation for operation: union = (area_gt + area_pred) - intersection.
    gt_area, pred_area = (gt[2] - gt[0]) * (gt[3] - gt[1]), (pred[2] - pred[0]) * (pred[3] - pred[1])
    # available[k, p, b] = P - p while prediction p is unmatched at threshold k, else 0; the max over
    # p of the hits among them names the first unmatched hit in score order (0: none).
    small = torch.uint8 if p_max < 256 else torch.int64
    available = torch.arange(p_max, 0, -1, dtype=small)[None, :, None].repeat(len(thr), 1, n_images)
    active = (n_gt > torch.arange(gt.shape[1])[:, None]).sum(1).tolist()  # images with a g-th box: a prefix
    for g, n in enumerate(active):  # ground-truth boxes in input order, all images and thresholds at once
        (gx1, gy1, gx2, gy2), (px1, py1, px2, py2) = gt[:, g, :n], pred[:, :, :n]
        inter = (torch.minimum(gx2, px2) - torch.maximum(gx1, px1)).clamp_(min=0)
        inter *= (torch.minimum(gy2, py2) - torch.maximum(gy1, py1)).clamp_(min=0)
        # Disjoint boxes and padding give 0 (nan for two empty boxes) and miss every threshold > 0.
        iou = inter / (gt_area[g, :n] + pred_area[:, :n] - inter)  # (P, n)
        hits = iou > thr if strict else iou >= thr  # (T, P, n)
        free = available[:, :, :n]
        best = (free * hits).amax(1, keepdim=True)  # (T, 1, n)
        free *= free != best  # best == 0 leaves everything available
    return (available == 0).sum(1).T  # every matched prediction is one true positive


def rsna_image_scores(
    preds: Sequence[dict],
    targets: Sequence[dict],
    strict: bool = False,
    thresholds: Sequence[float] = RSNA_IOU_THRESHOLDS,
) -> tuple[Tensor, Tensor]:
    """Per-image challenge scores, vectorised across images.

    Args:
        preds: per image ``{"boxes": Tensor[N, 4] x1y1x2y2, "scores": Tensor[N]}`` (any device and
            dtype; an empty tensor of any shape means no boxes).
        targets: per image ``{"boxes": Tensor[M, 4] x1y1x2y2}``, same pixel frame as ``preds``.
        strict: a hit is IoU > threshold instead of IoU >= threshold.
        thresholds: IoU thresholds, each in (0, 1].

    Returns:
        ``(scores, scored)`` on the CPU: float64 (B,) in [0, 1], and bool (B,), False for images
        with neither ground truth nor prediction (their score is 0 and must not be averaged).

    Raises:
        KeyError, ValueError: naming the image, for a missing entry, a wrong shape, a box/score
            count mismatch, a non-finite value or x2 < x1 / y2 < y1.
    """
    flat = collect(preds, targets, thresholds)
    n_pred, n_gt = flat.n_pred, flat.n_gt
    tp = torch.zeros(len(n_pred), len(flat.thresholds), dtype=torch.int64)
    # Images with ground truth (elsewhere TP = 0), most first, so that the matching loop works on
    # shrinking prefixes.
    columns = torch.sort(n_gt, descending=True, stable=True).indices[: int((n_gt > 0).sum())]
    if len(columns) and int(n_pred[columns].max()):
        gt = _pad(flat.gt_boxes, n_gt, columns)  # (C, G, 4)
        pred = _pad(torch.cat([flat.pred_boxes, flat.scores[:, None]], 1), n_pred, columns)  # (C, P, 5)
        # Rank each image's predictions by descending score, ties in input order, padding last.
        is_pred = torch.arange(pred.shape[1]) < n_pred[columns, None]
        rank = torch.sort(pred[..., 4].masked_fill(~is_pred, -torch.inf), dim=1, descending=True, stable=True)
        pred = pred[..., :4].permute(2, 1, 0).gather(1, rank.indices.T.expand(4, -1, -1))  # (4, P, C)
        gt = gt.permute(2, 1, 0).contiguous()  # (4, G, C)
        tp[columns] = _true_positives(gt, pred, n_gt[columns], flat.thresholds, strict)
    # TP / (TP + FP + FN) with FP = n_pred - TP and FN = n_gt - TP; the denominator is > 0 if scored.
    total = n_gt + n_pred
    scored = total > 0
    per_threshold = tp.to(torch.float64) / (total[:, None] - tp).clamp(min=1).to(torch.float64)
    return torch.where(scored, per_threshold.mean(1), 0.0), scored


def rsna_map(
    preds: Sequence[dict],
    targets: Sequence[dict],
    strict: bool = False,
    thresholds: Sequence[float] = RSNA_IOU_THRESHOLDS,
) -> float:
    """The challenge score of a set of images (inputs as for :func:`rsna_image_scores`).

    Returns the mean per-image score over scored images, in [0, 1]; 0.0 if no image is scored.
    """
    image_scores, scored = rsna_image_scores(preds, targets, strict=strict, thresholds=thresholds)
    return float(image_scores[scored].mean()) if bool(scored.any()) else 0.0


class RSNAMeanAP(Metric):
    """Accumulating :func:`rsna_map`: ``update(preds, targets)`` with the same per-image dict lists.

    Matching is per image, so per-image scores are computed at update time and the state is their
    sum (float64) and the number of scored images, both reduced by summation across processes.
    ``compute()`` returns a float32 scalar in [0, 1], 0 if no image was scored.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False
    plot_lower_bound = 0.0
    plot_upper_bound = 1.0

    def __init__(self, strict: bool = False, thresholds: Sequence[float] = RSNA_IOU_THRESHOLDS) -> None:
        super().__init__()
        self.strict = strict
        self.thresholds = tuple(float(t) for t in thresholds)
        collect([], [], self.thresholds)  # fail at construction on bad thresholds
        self.add_state("score_sum", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("n_scored", default=torch.tensor(0, dtype=torch.int64), dist_reduce_fx="sum")

    def update(self, preds: Sequence[dict], targets: Sequence[dict]) -> None:
        scores, scored = rsna_image_scores(preds, targets, strict=self.strict, thresholds=self.thresholds)
        self.score_sum += scores.sum().to(self.score_sum.device)
        self.n_scored += scored.sum().to(self.n_scored.device)

    def compute(self) -> Tensor:
        mean = self.score_sum / self.n_scored.clamp(min=1)  # 0 / 1 when nothing was scored
        return mean.to(torch.float32)
