import math

import numpy as np
import pytest
import torch
from torchvision.ops import nms

from cxr.inference.postprocess import average_probabilities, ensemble_detections, ensemble_images


def _raw(seed: int, n: int = 40) -> dict:
    """Clustered raw detections, as a detector without NMS gives them."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(30, 220, (3, 2))[rng.integers(0, 3, n)] + rng.normal(0, 6, (n, 2))
    sizes = rng.uniform(20, 60, (n, 2))
    boxes = np.concatenate([centres - sizes / 2, centres + sizes / 2], 1)
    return {
        "boxes": torch.tensor(boxes, dtype=torch.float32),
        "scores": torch.tensor(rng.uniform(0.05, 1, n), dtype=torch.float32),
    }


@pytest.mark.parametrize("score_mode", ["mean", "max"])
@pytest.mark.parametrize("nms_thresh", [0.3, 0.5, 0.7])
def test_ensemble_of_two_identical_members_equals_one(score_mode, nms_thresh):
    member = _raw(0)
    one = ensemble_detections([member], nms_thresh, score_mode)
    two = ensemble_detections([member, {k: v.clone() for k, v in member.items()}], nms_thresh, score_mode)
    assert len(one["boxes"]) > 1
    assert torch.equal(one["boxes"], two["boxes"]) and torch.equal(one["scores"], two["scores"])
    assert torch.equal(two["member_boxes"][:, 0], two["member_boxes"][:, 1])


def test_one_member_is_plain_torchvision_nms():
    member = _raw(1)
    keep = nms(member["boxes"], member["scores"], 0.5)
    out = ensemble_detections([member], 0.5, score_mode="max")
    assert torch.equal(out["boxes"], member["boxes"][keep]) and torch.equal(
        out["scores"], member["scores"][keep]
    )


@pytest.mark.parametrize("nms_thresh", [0.0, 0.05, 0.3, 0.5, 1.0])
def test_one_member_in_mean_mode_is_plain_nms_too(nms_thresh):
    """A kept box's score is its own, never that of a better box it suppressed along with another."""
    member = _raw(2, n=80)
    keep = nms(member["boxes"], member["scores"], nms_thresh)
    out = ensemble_detections([member], nms_thresh, score_mode="mean")
    assert torch.equal(out["boxes"], member["boxes"][keep])
    assert torch.equal(out["scores"], member["scores"][keep])


def test_a_suppressed_box_counts_for_the_kept_box_that_suppressed_it_only():
    a = {"boxes": [[0, 0, 10, 10]], "scores": [0.9]}
    # b's first box overlaps a's (IoU 70/130) and b's weaker box (IoU 70/130), kept (IoU 40/160 with a's)
    b = {"boxes": [[3, 0, 13, 10], [6, 0, 16, 10]], "scores": [0.8, 0.3]}
    out = ensemble_detections([a, b], nms_thresh=0.5, score_mode="mean")
    assert out["boxes"].tolist() == [[0, 0, 10, 10], [6, 0, 16, 10]]
    assert torch.allclose(out["member_scores"], torch.tensor([[0.9, 0.8], [0.0, 0.3]]))


def test_mean_mode_averages_member_scores_counting_missing_members_as_zero():
    a = {"boxes": [[0, 0, 10, 10]], "scores": [0.9]}
    b = {"boxes": [[1, 0, 11, 10], [50, 50, 60, 60]], "scores": [0.6, 0.8]}  # IoU with a's box 90/110
    c = {"boxes": np.zeros((0, 4)), "scores": np.zeros(0)}
    out = ensemble_detections([a, b, c], nms_thresh=0.5, score_mode="mean")
    assert out["scores"].tolist() == pytest.approx([(0.9 + 0.6) / 3, 0.8 / 3])
    assert out["boxes"].tolist() == [[0, 0, 10, 10], [50, 50, 60, 60]]
    assert out["member_boxes"][0, 1].tolist() == [1, 0, 11, 10] and out["member_boxes"][0, 2].isnan().all()
    assert torch.allclose(out["member_scores"], torch.tensor([[0.9, 0.6, 0.0], [0.0, 0.8, 0.0]]))
    assert ensemble_detections([a, b, c], 0.5, score_mode="max")["scores"].tolist() == pytest.approx(
        [0.9, 0.8]
    )
    # below the overlap threshold the two boxes stay apart
    assert len(ensemble_detections([a, b], nms_thresh=0.85)["boxes"]) == 3


def test_empty_members_and_bad_input():
    empty = {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0)}
    out = ensemble_detections([empty, empty], 0.5)
    assert out["boxes"].shape == (0, 4) and out["member_boxes"].shape == (0, 2, 4)
    with pytest.raises(ValueError, match="member 1: 2 boxes but 1 scores"):
        ensemble_detections([empty, {"boxes": torch.zeros(2, 4), "scores": torch.zeros(1)}], 0.5)
    with pytest.raises(ValueError, match=r"nms_thresh must be in \[0, 1\]"):
        ensemble_detections([empty], 1.01)
    with pytest.raises(KeyError, match="member 0"):
        ensemble_detections([{"boxes": torch.zeros(0, 4)}], 0.5)


def test_ensemble_images_takes_a_dict_as_one_member_and_lists_of_any_length():
    a, b = _raw(2), _raw(3)
    out = ensemble_images([a, [a, a], [a, b]], 0.5)
    assert torch.equal(out[0]["scores"], out[1]["scores"])
    assert out[2]["member_scores"].shape[1] == 2


def test_average_probabilities():
    p = average_probabilities([torch.tensor([[0.2, 0.8]]), torch.tensor([[0.6, 0.4]])])
    assert p[0].tolist() == pytest.approx([0.4, 0.6])
    assert math.isclose(float(average_probabilities([p])[0, 0]), 0.4, rel_tol=1e-6)
    with pytest.raises(ValueError, match="differ in shape"):
        average_probabilities([torch.zeros(1, 2), torch.zeros(2, 2)])
