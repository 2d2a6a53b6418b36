import math

import pytest
import torch

from cxr.tasks.losses import ClassificationLoss


def test_bce_matches_hand_value():
    loss = ClassificationLoss("bce", num_classes=1)
    value = loss(torch.tensor([[0.0], [2.0]]), torch.tensor([0, 1]))
    expected = (math.log(2) + math.log(1 + math.exp(-2))) / 2
    assert value.item() == pytest.approx(expected, rel=1e-6)


def test_class_weighted_bce_is_a_weighted_mean():
    loss = ClassificationLoss("bce", num_classes=1, class_weights=torch.tensor([1.0, 3.0]))
    value = loss(torch.tensor([[0.0], [2.0]]), torch.tensor([0, 1]))
    expected = (1 * math.log(2) + 3 * math.log(1 + math.exp(-2))) / 4
    assert value.item() == pytest.approx(expected, rel=1e-6)


def test_focal_with_gamma_zero_equals_bce_and_ce():
    logits, target = torch.randn(8, 1), torch.randint(0, 2, (8,))
    assert ClassificationLoss("focal", 1, focal_gamma=0.0)(logits, target).item() == pytest.approx(
        ClassificationLoss("bce", 1)(logits, target).item(), rel=1e-5
    )
    logits3, target3 = torch.randn(8, 3), torch.randint(0, 3, (8,))
    assert ClassificationLoss("focal", 3, focal_gamma=0.0)(logits3, target3).item() == pytest.approx(
        ClassificationLoss("ce", 3)(logits3, target3).item(), rel=1e-5
    )


def test_focal_down_weights_easy_examples():
    easy = torch.tensor([[6.0]])
    bce = ClassificationLoss("bce", 1)(easy, torch.tensor([1]))
    focal = ClassificationLoss("focal", 1, focal_gamma=2.0)(easy, torch.tensor([1]))
    assert focal < bce * 1e-4


@pytest.mark.parametrize(("name", "num_classes"), [("bce", 3), ("ce", 1), ("hinge", 1)])
def test_mismatched_loss_and_outputs_fail_clearly(name, num_classes):
    with pytest.raises(ValueError, match=name):
        ClassificationLoss(name, num_classes)
