"""The depthwise ablation on tiny sizes: every variant runs eager and on ONNX Runtime, figures are consistent."""

from __future__ import annotations

import pytest
import torch

from cxr.bench.ablation import VARIANTS, Variant, format_markdown, measure_variants


def test_variants_cover_conv_type_by_pool_placement_and_the_extras():
    grid = {(v.conv, v.pool) for v in VARIANTS}
    assert {
        ("standard", "after"),
        ("standard", "before"),
        ("separable", "after"),
        ("separable", "before"),
    } <= grid
    assert {v.conv for v in VARIANTS} >= {"first separable", "mobilenet"}


def test_measure_variants_on_tiny_inputs():
    pytest.importorskip("onnxruntime")
    threads = torch.get_num_threads()
    small = {"widths": [8, 8, 8, 8, 8], "hidden": 8}
    variants = [
        Variant("plain", "plain_cnn", small),
        Variant("separable after", "depthwise_cnn", small, "separable", "after"),
        Variant("separable before", "depthwise_cnn", {**small, "pool": "before"}, "separable", "before"),
    ]
    rows = measure_variants(image_size=32, batch=2, threads=1, repeats=1, variants=variants)
    assert torch.get_num_threads() == threads  # restored
    assert [r["variant"] for r in rows] == ["plain", "separable after", "separable before"]
    plain, after, before = rows
    assert plain["gflops"] > after["gflops"] > before["gflops"] > 0
    assert plain["params"] > after["params"] and after["params"] == before["params"]
    assert plain["receptive_field"] == after["receptive_field"] < before["receptive_field"]
    for r in rows:
        assert r["eager_images_per_s"] > 0 and r["onnx_images_per_s"] > 0
        assert r["onnx_max_abs_diff"] < 1e-4  # the exported network computes what eager does
    table = format_markdown(rows)
    assert (
        table.startswith("Inference at 32 px, batch 2, 1 CPU threads")
        and table.count("\n| ") == len(rows) + 1
    )
    with pytest.raises(ValueError, match="image_size >= 32"):
        measure_variants(image_size=16)
