import math

import numpy as np
import pytest
import torch

from cxr.inference.postprocess import adjust_box_sizes, percentile_boxes, shrink_boxes

NAN = float("nan")


def test_shrink_of_one_is_the_identity_for_tensors_and_arrays():
    boxes = torch.tensor([[3.5, 7.25, 40.0, 90.5], [0.0, 0.0, 1.0, 1.0]])
    assert torch.equal(shrink_boxes(boxes, 1.0), boxes)
    array = boxes.numpy().astype(np.float64)
    out = shrink_boxes(array, 1.0)
    assert isinstance(out, np.ndarray) and out.dtype == np.float64 and np.array_equal(out, array)


def test_shrink_scales_about_the_centre():
    out = shrink_boxes(torch.tensor([[0.0, 0.0, 10.0, 20.0]]), 0.5)
    assert out.tolist() == [[2.5, 5.0, 7.5, 15.0]]
    assert shrink_boxes(torch.tensor([[0.0, 0.0, 8.0, 8.0]]), 0.875).tolist() == [[0.5, 0.5, 7.5, 7.5]]
    with pytest.raises(ValueError, match="> 0"):
        shrink_boxes(torch.zeros(1, 4), 0.0)


def test_percentile_sizes_follow_the_formula_in_log_and_linear_space():
    # two members: widths 10 and 20, heights 40 and 40; the ensembled box is centred at (50, 50)
    members = torch.tensor([[[45, 30, 55, 70], [40, 30, 60, 70]]], dtype=torch.float32)
    box = torch.tensor([[45.0, 30.0, 55.0, 70.0]])
    log = percentile_boxes(box, members, scale=1.6)
    # log w' = P20 - 1.6 (P80 - P20) with P20 = log 10 + 0.2 log 2, P80 = log 10 + 0.8 log 2
    width = 10 * 2 ** (0.2 - 1.6 * 0.6)
    assert log[0].tolist() == pytest.approx([50 - width / 2, 30, 50 + width / 2, 70], rel=1e-5)
    linear = percentile_boxes(box, members, scale=1.6, space="linear")
    assert linear[0].tolist() == pytest.approx([50 - 1.2, 30, 50 + 1.2, 70])  # 12 - 1.6 * (18 - 12) = 2.4


def test_percentile_leaves_agreeing_members_alone_and_skips_missing_ones():
    box = torch.tensor([[10.0, 10.0, 30.0, 50.0]])
    members = torch.tensor([[[10, 10, 30, 50], [NAN] * 4, [10, 10, 30, 50]]])
    assert torch.allclose(percentile_boxes(box, members, scale=1.6), box)
    assert torch.allclose(percentile_boxes(box, torch.full((1, 2, 4), NAN)), box)  # no members: unchanged
    assert percentile_boxes(torch.zeros(0, 4), torch.zeros(0, 3, 4)).shape == (0, 4)
    with pytest.raises(ValueError, match=r"\(K, M, 4\)"):
        percentile_boxes(box, torch.zeros(2, 1, 4))


def test_adjust_box_sizes_dispatches():
    det = {
        "boxes": torch.tensor([[0.0, 0.0, 8.0, 8.0]]),
        "member_boxes": torch.tensor([[[0.0, 0.0, 8.0, 8.0]]]),
    }
    assert torch.equal(adjust_box_sizes(det, "none"), det["boxes"])
    assert adjust_box_sizes(det, "shrink", shrink=0.5).tolist() == [[2, 2, 6, 6]]
    assert math.isclose(float(adjust_box_sizes(det, "percentile")[0, 2]), 8.0, rel_tol=1e-6)
    with pytest.raises(ValueError, match="one of"):
        adjust_box_sizes(det, "grow")
