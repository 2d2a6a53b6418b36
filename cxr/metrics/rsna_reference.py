"""The RSNA metric as the public kernel's per-image Python loop, random detections, and a benchmark
of :func:`cxr.metrics.rsna_map.rsna_map` against the loop (``python -m cxr.metrics.rsna_reference``).

The loop shares only input checking with the vectorised metric, so the tests can compare the two.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import torch

from cxr.metrics.rsna_inputs import collect
from cxr.metrics.rsna_map import RSNA_IOU_THRESHOLDS, rsna_map


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
    flat = collect(preds, targets, thresholds)
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


if __name__ == "__main__":  # python -m cxr.metrics.rsna_reference
    import json

    print(json.dumps(benchmark(), indent=1))
