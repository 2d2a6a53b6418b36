"""Checkpoints as inference members: the optimised CPU path gives the trained network's outputs."""

import pytest
import torch
from torch import nn

from cxr.inference.members import classify, load_member
from cxr.inference.optimise import optimise_for_inference
from cxr.models import create_model


def _trained_looking(name: str, **kwargs) -> nn.Module:
    """A classifier whose BatchNorms hold non-trivial statistics, as after training."""
    torch.manual_seed(0)
    model = create_model(name, **kwargs)
    for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
        bn.running_mean.uniform_(-1, 1), bn.running_var.uniform_(0.5, 2)
        bn.weight.data.uniform_(0.5, 2), bn.bias.data.uniform_(-0.5, 0.5)
    return model.eval()


@pytest.mark.parametrize("name", ["plain_cnn", "depthwise_cnn"])
def test_optimised_network_matches_the_trained_one(name):
    model = _trained_looking(name, widths=[8, 6, 4], hidden=8, batch_norm=True, head="avgpool")
    x = torch.randn(5, 1, 32, 32)
    with torch.no_grad():
        expected = model(x)
        fast = optimise_for_inference(model)
        got = fast(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fast.modules())
    conv = next(m for m in fast.modules() if isinstance(m, nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) and not fast.training


def test_load_member_optimises_unless_asked_not_to(tmp_path):
    kwargs = {"widths": [8, 8, 8], "hidden": 8, "pool": "after", "head": "avgpool"}
    model = _trained_looking("depthwise_cnn", **kwargs)
    path = tmp_path / "model.ckpt"
    torch.save(
        {
            "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
            "epoch": 3,
            "cxr": {
                "format_version": 1,
                "model_name": "depthwise_cnn",
                "model_kwargs": kwargs,
                "task": "ClassificationTask",
                "datamodule": {"image_size": 32, "labels": "binary"},
            },
        },
        path,
    )
    fast, exact = load_member(path), load_member(path, optimise=False)
    assert any(isinstance(m, nn.BatchNorm2d) for m in exact.model.modules())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fast.model.modules())
    images = torch.randn(4, 1, 32, 32)
    probs = classify(fast, images)
    torch.testing.assert_close(probs, classify(exact, images), atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        p = torch.sigmoid(model(images)[:, 0])
    torch.testing.assert_close(probs, torch.stack([1 - p, p], dim=1), atol=1e-5, rtol=1e-5)
    assert fast.epoch == 3 and fast.class_names == exact.class_names
