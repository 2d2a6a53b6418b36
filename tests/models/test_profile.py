"""FLOP and parameter counting, checked against hand-computed values; the cxr-models command."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cxr.cli.models import main
from cxr.models import DepthwiseCNN, PlainCNN
from cxr.models.profile import count_flops, count_params, profile_table


def test_conv_flops_and_params_by_hand():
    conv = nn.Conv2d(3, 8, 3, padding=1)
    # 16*16 output pixels x 8 filters x (3*3*3) multiply-adds, 2 FLOPs each; the bias add is not counted
    assert count_flops(conv, (1, 3, 16, 16)) == 2 * 16 * 16 * 8 * 27
    assert count_flops(conv, (2, 3, 16, 16)) == 2 * 2 * 16 * 16 * 8 * 27
    assert count_params(conv) == 8 * 27 + 8
    assert count_flops(nn.Linear(10, 5), (4, 10)) == 2 * 4 * 10 * 5


def test_count_flops_restores_mode_and_leaves_bn_stats_alone():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4))
    count_flops(model, (1, 1, 8, 8))
    assert model.training and model[1].num_batches_tracked.item() == 0
    model.eval()
    count_flops(model, (1, 1, 8, 8))
    assert not model.training


def test_plain_cnn_flops_by_hand():
    with torch.device("meta"):
        model = PlainCNN()
    # (map side, in, out) of the five 3x3 convs at 200 px: 200 -> 100 -> 50 -> 25 -> 12 after pooling
    convs = [(200, 1, 256), (100, 256, 128), (50, 128, 64), (25, 64, 32), (12, 32, 32)]
    macs = sum(s * s * cin * cout * 9 for s, cin, cout in convs) + 32 * 128 + 128 * 1
    assert count_flops(model, (1, 1, 200, 200)) == 2 * macs


def test_depthwise_needs_at_most_a_sixth_of_plain_flops():
    with torch.device("meta"):
        plain, depthwise = PlainCNN(), DepthwiseCNN()
    plain_flops = count_flops(plain, (1, 1, 200, 200))
    assert count_flops(depthwise, (1, 1, 200, 200)) * 6 <= plain_flops
    assert count_params(depthwise) < count_params(plain)


def test_profile_table_and_command(capsys):
    rows = profile_table(["plain_cnn", "depthwise_cnn"], image_size=64, in_chans=1)
    assert [r["model"] for r in rows] == ["plain_cnn", "depthwise_cnn"]
    assert rows[0]["params"] == count_params(PlainCNN())
    assert rows[0]["gflops"] == pytest.approx(count_flops(PlainCNN(), (1, 1, 64, 64)) / 1e9)

    main(["--image-size", "64", "--models", "plain_cnn", "depthwise_cnn"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("| model | params | GFLOPs")
    assert len(lines) == 4 and lines[2].startswith(f"| plain_cnn | {rows[0]['params']:,} |")
    with pytest.raises(SystemExit):
        main(["--models", "resnet50"])
