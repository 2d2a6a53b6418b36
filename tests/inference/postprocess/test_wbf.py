"""Weighted box fusion: the reference package's outputs on random cases, and the contract it shares
with the NMS ensemble."""

import numpy as np
import pytest
import torch

from cxr.inference.postprocess import adjust_box_sizes
from cxr.inference.postprocess.wbf import fuse_detections, weighted_boxes_fusion

SIZE = 256.0


def _member(rng: np.random.Generator, n: int) -> dict:
    """Clustered raw detections inside a SIZE x SIZE image, as a detector without NMS gives them."""
    centres = rng.uniform(40, 216, (3, 2))[rng.integers(0, 3, n)] + rng.normal(0, 8, (n, 2))
    sizes = rng.uniform(20, 60, (n, 2))
    boxes = np.clip(np.concatenate([centres - sizes / 2, centres + sizes / 2], 1), 0, SIZE)
    return {
        "boxes": torch.tensor(boxes, dtype=torch.float32),
        "scores": torch.tensor(rng.uniform(0.05, 1, n), dtype=torch.float32),
    }


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("score_mode", ["mean", "max"])
def test_matches_ensemble_boxes_on_random_cases(seed, score_mode):
    ensemble_boxes = pytest.importorskip("ensemble_boxes")
    rng = np.random.default_rng(seed)
    members = [_member(rng, int(rng.integers(0, 25))) for _ in range(int(rng.integers(1, 5)))]
    iou, skip = float(rng.uniform(0.3, 0.7)), float(rng.uniform(0, 0.3))
    ref_boxes, ref_scores, _ = ensemble_boxes.weighted_boxes_fusion(
        [(m["boxes"] / SIZE).numpy() for m in members],
        [m["scores"].numpy() for m in members],
        [np.zeros(len(m["scores"])) for m in members],
        iou_thr=iou,
        skip_box_thr=skip,
        conf_type={"mean": "avg", "max": "max"}[score_mode],
    )
    out = weighted_boxes_fusion(members, iou, score_mode, skip_score=skip)
    assert len(out["boxes"]) == len(ref_boxes)
    np.testing.assert_allclose(out["boxes"].numpy() / SIZE, ref_boxes, atol=1e-5)
    np.testing.assert_allclose(out["scores"].numpy(), ref_scores, atol=1e-6)


def test_member_weights_match_ensemble_boxes():
    ensemble_boxes = pytest.importorskip("ensemble_boxes")
    rng = np.random.default_rng(11)
    members = [_member(rng, 15) for _ in range(3)]
    weights = [2.0, 1.0, 0.5]
    ref_boxes, ref_scores, _ = ensemble_boxes.weighted_boxes_fusion(
        [(m["boxes"] / SIZE).numpy() for m in members],
        [m["scores"].numpy() for m in members],
        [np.zeros(15)] * 3,
        weights=weights,
        iou_thr=0.5,
    )
    out = weighted_boxes_fusion(members, 0.5, weights=weights)
    np.testing.assert_allclose(out["boxes"].numpy() / SIZE, ref_boxes, atol=1e-5)
    np.testing.assert_allclose(out["scores"].numpy(), ref_scores, atol=1e-6)


def test_two_overlapping_boxes_fuse_to_their_score_weighted_mean():
    a = {"boxes": torch.tensor([[0.0, 0.0, 10.0, 10.0]]), "scores": torch.tensor([0.75])}
    b = {"boxes": torch.tensor([[1.0, 1.0, 11.0, 11.0]]), "scores": torch.tensor([0.25])}
    out = weighted_boxes_fusion([a, b], iou_thresh=0.5)
    assert torch.allclose(out["boxes"], torch.tensor([[0.25, 0.25, 10.25, 10.25]]))
    assert torch.allclose(out["scores"], torch.tensor([0.5]))  # mean 0.5 x min(2, 2) / 2 members
    # a box one member of two finds is worth half its score
    alone = weighted_boxes_fusion([a, {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0)}], 0.5)
    assert torch.allclose(alone["scores"], torch.tensor([0.375]))


def test_shares_the_nms_ensemble_contract():
    rng = np.random.default_rng(3)
    members = [_member(rng, 20) for _ in range(3)]
    nms, wbf = (fuse_detections(members, m, 0.5) for m in ("nms", "wbf"))
    assert set(nms) == set(wbf)
    assert wbf["member_boxes"].shape == (len(wbf["boxes"]), 3, 4)
    assert torch.all(wbf["scores"][:-1] >= wbf["scores"][1:])
    assert adjust_box_sizes(wbf, "percentile").shape == wbf["boxes"].shape  # every box size method works


def test_empty_input_and_bad_arguments():
    empty = {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0)}
    out = weighted_boxes_fusion([empty, empty])
    assert out["boxes"].shape == (0, 4) and out["member_boxes"].shape == (0, 2, 4)
    with pytest.raises(ValueError, match="iou_thresh"):
        weighted_boxes_fusion([empty], iou_thresh=1.5)
    with pytest.raises(ValueError, match="weights must be 2 positive"):
        weighted_boxes_fusion([empty, empty], weights=[1.0])
    with pytest.raises(ValueError, match="ensemble must be one of"):
        fuse_detections([empty], "soft-nms", 0.5)
