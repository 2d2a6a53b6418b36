"""FLOP and parameter counting, checked against hand-computed values; the cxr-models command."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cxr.cli.models import main
from cxr.models import DepthwiseCNN, PlainCNN
from cxr.models.profile import count_flops, count_params, profile_table, receptive_field


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
    # the Flatten head: 32 x 6 x 6 values into the 128-unit dense layer, then the logit
    macs = sum(s * s * cin * cout * 9 for s, cin, cout in convs) + 32 * 6 * 6 * 128 + 128 * 1
    assert count_flops(model, (1, 1, 200, 200)) == 2 * macs


def test_depthwise_flops_by_hand():
    with torch.device("meta"):
        model = DepthwiseCNN()
    # the literal swap: the same map sides as PlainCNN, depthwise 9*cin + pointwise cin*cout per pixel
    convs = [(200, 1, 256), (100, 256, 128), (50, 128, 64), (25, 64, 32), (12, 32, 32)]
    macs = sum(s * s * (9 * cin + cin * cout) for s, cin, cout in convs) + 32 * 6 * 6 * 128 + 128 * 1
    assert count_flops(model, (1, 1, 200, 200)) == 2 * macs


def test_receptive_field_by_hand():
    # conv3 then pool2, twice: 1 + 2 = 3, + 1 = 4 (jump 2), + 2*2 = 8, + 1*2 = 10
    model = PlainCNN(widths=(4, 4), head="avgpool")
    assert receptive_field(model) == 10
    # pool first in the second stage: 3, 4 (jump 2), pool 6 (jump 4), conv 6 + 2*4 = 14
    assert receptive_field(PlainCNN(widths=(4, 4), head="avgpool", pool="before")) == 14


def test_profile_table_and_command(capsys):
    rows = profile_table(["plain_cnn", "depthwise_cnn"], image_size=64, in_chans=1)
    assert [r["model"] for r in rows] == ["plain_cnn", "depthwise_cnn"]
    # sized for the asked input: the Flatten head of a 64 px network takes 32 x 2 x 2 values
    assert rows[0]["params"] == count_params(PlainCNN(image_size=64)) < count_params(PlainCNN())
    assert rows[0]["gflops"] == pytest.approx(count_flops(PlainCNN(image_size=64), (1, 1, 64, 64)) / 1e9)

    main(["--image-size", "64", "--models", "plain_cnn", "depthwise_cnn"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("| model | params | GFLOPs")
    assert len(lines) == 4 and lines[2].startswith(f"| plain_cnn | {rows[0]['params']:,} |")
    with pytest.raises(SystemExit):
        main(["--models", "resnet50"])
