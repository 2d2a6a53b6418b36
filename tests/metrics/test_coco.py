"""COCO box AP on faster_coco_eval: values computed by hand, and the same as pycocotools'."""

import pytest
import torch

from cxr.metrics.coco import coco_map


def _case():
    """Image 1: two objects found exactly (scores 0.9 and 0.7) and a false positive between them
    (0.8); image 2: one object, missed (no predictions)."""
    preds = [
        {
            "boxes": torch.tensor([[10.0, 10, 50, 50], [100, 100, 140, 140], [60, 60, 100, 100]]),
            "scores": torch.tensor([0.9, 0.8, 0.7]),
            "labels": torch.tensor([0, 0, 0]),
        },
        {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.long)},
    ]
    targets = [
        {"boxes": torch.tensor([[10.0, 10, 50, 50], [60, 60, 100, 100]]), "labels": torch.tensor([0, 0])},
        {"boxes": torch.tensor([[0.0, 0, 40, 40]]), "labels": torch.tensor([0])},
    ]
    return preds, targets


def _compute(metric) -> dict[str, float]:
    metric.update(*_case())
    return {k: float(v) for k, v in metric.compute().items() if v.numel() == 1 and k != "classes"}


def test_values_computed_by_hand():
    result = _compute(coco_map())
    # 3 objects; ranked: TP (recall 1/3, precision 1), FP (1/3, 1/2), TP (2/3, 2/3). Every match has
    # IoU 1, so AP is the same at every threshold: COCO's 101 recall points, precision interpolated
    # as the best at that recall or beyond: 1 for r <= 1/3 (34 points), 2/3 for r <= 2/3 (33 points),
    # 0 beyond (the missed object).
    expected = (34 * 1 + 33 * 2 / 3) / 101
    for key in ("map", "map_50", "map_75"):
        assert result[key] == pytest.approx(expected, abs=1e-6)
    assert result["mar_100"] == pytest.approx(2 / 3, abs=1e-6)
    assert result["mar_1"] == pytest.approx(1 / 3, abs=1e-6)  # one detection per image: 1 of 3 objects


def test_identical_to_pycocotools():
    pytest.importorskip("pycocotools")
    from torchmetrics.detection import MeanAveragePrecision

    reference = _compute(MeanAveragePrecision(box_format="xyxy", iou_type="bbox", backend="pycocotools"))
    assert _compute(coco_map()) == reference
