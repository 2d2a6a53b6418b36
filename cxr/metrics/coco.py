"""COCO box AP on the maintained evaluator: torchmetrics' ``MeanAveragePrecision`` with the
``faster_coco_eval`` backend (pycocotools, torchmetrics' default, is no longer maintained; the two give
the same values, which the tests check on a fixed case)."""

from __future__ import annotations

from torchmetrics.detection import MeanAveragePrecision

BACKEND = "faster_coco_eval"


def coco_map(**kwargs) -> MeanAveragePrecision:
    """``MeanAveragePrecision`` for boxes x1 y1 x2 y2 in pixels (``iou_type="bbox"``) on
    :data:`BACKEND`; ``kwargs`` go to torchmetrics (e.g. ``class_metrics=True``).

    ``update(preds, targets)``: per image ``{"boxes": float (N, 4), "scores": (N,), "labels": int64
    (N,)}`` and ``{"boxes": float (M, 4), "labels": int64 (M,)}``; ``compute()`` gives ``map``,
    ``map_50``, ``map_75``, ``mar_100`` ... as 0-d tensors (-1 where undefined, e.g. no large boxes).
    """
    return MeanAveragePrecision(box_format="xyxy", iou_type="bbox", backend=BACKEND, **kwargs)
