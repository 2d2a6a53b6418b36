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
:func:`rsna_map` and :func:`rsna_map_reference` make the same hit decisions bit for bit.

:func:`rsna_image_scores` is vectorised across images: boxes are padded into (4, boxes, images)
tensors and the greedy matching runs one ground-truth index at a time, for all images and
thresholds at once (about 10x the per-image loop on 3,000 images; see :func:`benchmark`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor
from torchmetrics import Metric

RSNA_IOU_THRESHOLDS: tuple[float, ...] = (0.40, 0.45, 0.50, 0.55, 0.60, 0.65, 0.70, 0.75)


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


def _collect(preds: Sequence[dict], targets: Sequence[dict], thresholds: Sequence[float]) -> _Flat:
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
    flat = _collect(preds, targets, thresholds)
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


def _iou_pair(gt: list[float], pred: list[float]) -> float:
    """The kernel's scalar IoU (x1y1x2y2), deliberately independent of the vectorised one."""
    xi1, yi1 = max(gt[0], pred[0]), max(gt[1], pred[1])
    xi2, yi2 = min(gt[2], pred[2]), min(gt[3], pred[3])
    if xi2 <= xi1 or yi2 <= yi1:
        return 0.0
    inter = (xi2 - xi1) * (yi2 - yi1)
    union = (gt[2] - gt[0]) * (gt[3] - gt[1]) + (pred[2] - pred[0]) * (pred[3] - pred[1]) - inter
    return inter / union


def rsna_map_reference(
    preds: Sequence[dict],
    targets: Sequence[dict],
    strict: bool = False,
    thresholds: Sequence[float] = RSNA_IOU_THRESHOLDS,
) -> float:
    """:func:`rsna_map` as the kernel's per-image Python loop (shares only input validation)."""
    flat = _collect(preds, targets, thresholds)
    n_pred, n_gt = flat.n_pred.tolist(), flat.n_gt.tolist()
    images = zip(
        flat.pred_boxes.split(n_pred), flat.scores.split(n_pred), flat.gt_boxes.split(n_gt), strict=True
    )
    thresholds, total, n_scored = flat.thresholds.tolist(), 0.0, 0
    for pb, sc, gb in images:
        if len(gb) == 0 and len(pb) == 0:
            continue
        n_scored += 1
        sc, pb, gb = sc.tolist(), pb.tolist(), gb.tolist()
        ranked = [pb[j] for j in sorted(range(len(pb)), key=lambda j: -sc[j])]  # sorted() is stable
        iou = [[_iou_pair(g, p) for p in ranked] for g in gb]
        image_total = 0.0
        for t in thresholds:
            matched: set[int] = set()
            for row in iou:
                for j, value in enumerate(row):
                    if (value > t if strict else value >= t) and j not in matched:
                        matched.add(j)
                        break
            tp, fn, fp = len(matched), len(gb) - len(matched), len(pb) - len(matched)
            image_total += tp / (tp + fp + fn)
        total += image_total / len(thresholds)
    return total / n_scored if n_scored else 0.0


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
        _collect([], [], self.thresholds)  # fail at construction on bad thresholds
        self.add_state("score_sum", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("n_scored", default=torch.tensor(0, dtype=torch.int64), dist_reduce_fx="sum")

    def update(self, preds: Sequence[dict], targets: Sequence[dict]) -> None:
        scores, scored = rsna_image_scores(preds, targets, strict=self.strict, thresholds=self.thresholds)
        self.score_sum += scores.sum().to(self.score_sum.device)
        self.n_scored += scored.sum().to(self.n_scored.device)

    def compute(self) -> Tensor:
        mean = self.score_sum / self.n_scored.clamp(min=1)  # 0 / 1 when nothing was scored
        return mean.to(torch.float32)


def random_detections(
    n_images: int, max_boxes: int = 10, seed: int = 0, image_size: float = 256.0
) -> tuple[list[dict], list[dict]]:
    """Random (preds, targets), 0..max_boxes boxes each: jittered copies of ground truth (so that
    IoUs spread across the thresholds) plus spurious boxes, float32 scores on a 0.1 grid (ties)."""
    rng = np.random.default_rng(seed)

    def boxes(n: int) -> np.ndarray:
        xy = rng.uniform(0, image_size * 0.7, (n, 2))
        return np.concatenate([xy, xy + rng.uniform(8, image_size * 0.3, (n, 2))], axis=1)

    preds, targets = [], []
    for _ in range(n_images):
        gt = boxes(int(rng.integers(0, max_boxes + 1)))
        n_copies = int(rng.integers(0, len(gt) + 1))
        copies = gt[rng.permutation(len(gt))[:n_copies]] + rng.normal(0, 6, (n_copies, 4))
        pred = np.concatenate([copies, boxes(int(rng.integers(0, max_boxes - n_copies + 1)))])
        pred[:, 2:] = np.maximum(pred[:, 2:], pred[:, :2])
        scores = np.round(rng.uniform(0, 1, len(pred)), 1)
        preds.append(
            {"boxes": torch.tensor(pred, dtype=torch.float32), "scores": torch.tensor(scores).float()}
        )
        targets.append({"boxes": torch.tensor(gt, dtype=torch.float32)})
    return preds, targets


def benchmark(
    n_images: int = 3000, max_boxes: int = 10, seed: int = 0, repeats: int = 5, num_threads: int | None = 1
) -> dict:
    """Best-of-``repeats`` wall and CPU times (s) of :func:`rsna_map` and :func:`rsna_map_reference`
    on :func:`random_detections`, the speed-up (wall) and both values. ``num_threads`` sets torch's
    intra-op threads for the run (restored after; None keeps them): the tensors are small, and on a
    busy machine idle-spinning threads swamp the work. CPU time is the steadier figure there."""
    preds, targets = random_detections(n_images, max_boxes, seed)
    previous = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    result: dict = {"n_images": n_images, "max_boxes": max_boxes, "num_threads": torch.get_num_threads()}
    try:
        for name, fn in (("vectorised", rsna_map), ("reference", rsna_map_reference)):
            wall = cpu = float("inf")
            for _ in range(repeats):
                start, start_cpu = time.perf_counter(), time.process_time()
                result[f"{name}_value"] = fn(preds, targets)
                wall, cpu = min(wall, time.perf_counter() - start), min(cpu, time.process_time() - start_cpu)
            result[f"{name}_s"], result[f"{name}_cpu_s"] = wall, cpu
    finally:
        torch.set_num_threads(previous)
    result["speedup"] = result["reference_s"] / result["vectorised_s"]
    result["abs_diff"] = abs(result["vectorised_value"] - result["reference_value"])
    return result


if __name__ == "__main__":  # python -m cxr.metrics.rsna_map
    import json

    print(json.dumps(benchmark(), indent=1))
