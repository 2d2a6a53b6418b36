import json

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.ops import nms

from cxr.inference.postprocess import (
    PostprocessSettings,
    best_thresholds,
    choose_decision_threshold,
    ensemble_images,
    find_settings,
    plot_nms_sweep,
    sweep_nms,
)
from cxr.inference.postprocess.thresholds import NMS_GRID
from cxr.inference.tune import NMS_GRID as TUNE_GRID
from cxr.reporting.reproduce.postprocess import NMS_GRID as TABLE_GRID


def _det(boxes, scores):
    return {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "scores": torch.tensor(scores, dtype=torch.float32),
    }


# image 0: one opacity and a near-duplicate detection (IoU 0.82): only NMS below 0.82 removes it;
# image 1: no opacity, a false positive at 0.3; image 2: one opacity found at 0.5;
# image 3: two opacities overlapping by IoU 0.33, both found: NMS at 0.3 wrongly removes one.
PREDICTIONS = [
    _det([[10, 10, 50, 50], [14, 10, 54, 50]], [0.9, 0.8]),
    _det([[0, 0, 20, 20]], [0.3]),
    _det([[60, 60, 90, 90]], [0.5]),
    _det([[0, 0, 40, 40], [20, 0, 60, 40]], [0.9, 0.85]),
]
TARGETS = [
    _det([[10, 10, 50, 50]], [1]),
    _det([], []),
    _det([[60, 60, 90, 90]], [1]),
    _det([[0, 0, 40, 40], [20, 0, 60, 40]], [1, 1]),
]


def test_nms_sweep_finds_the_known_optimum_with_hand_computed_scores():
    table = sweep_nms(PREDICTIONS, TARGETS, nms_thresholds=[0.3, 0.5, 0.9], score_thresholds=[0.2, 0.4, 0.6])
    scores = {(r.nms_thresh, r.score_thresh): r.rsna_map for r in table.itertuples()}
    assert scores[(0.5, 0.4)] == pytest.approx(1.0)
    assert scores[(0.3, 0.4)] == pytest.approx((1 + 1 + 0.5) / 3)  # image 3 loses a true box
    assert scores[(0.9, 0.4)] == pytest.approx((0.5 + 1 + 1) / 3)  # image 0 keeps its duplicate
    assert scores[(0.5, 0.2)] == pytest.approx(3 / 4)  # image 1's false positive is scored 0
    assert scores[(0.5, 0.6)] == pytest.approx(2 / 3)  # image 2's opacity is missed
    assert best_thresholds(table) == {"nms_thresh": 0.5, "score_thresh": 0.4, "rsna_map": pytest.approx(1.0)}
    assert list(table.columns) == ["nms_thresh", "score_thresh", "rsna_map", "boxes_per_image"]


def test_sweep_ensembles_each_images_members():
    members = [[p, p] for p in PREDICTIONS]  # two identical members per image: same table
    single = sweep_nms(PREDICTIONS, TARGETS, [0.5], [0.4])
    assert sweep_nms(members, TARGETS, [0.5], [0.4]).equals(single)
    with pytest.raises(ValueError, match="4 predicted images but 3 targets"):
        sweep_nms(PREDICTIONS, TARGETS[:3], [0.5], [0.4])


def test_decision_threshold_for_best_f1_and_for_a_target_recall():
    probs, labels = [0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]
    # at 0.35: predicted positive {0.4, 0.35, 0.8}: precision 2/3, recall 1, F1 0.8 (the best)
    best = choose_decision_threshold(probs, labels)
    assert best == pytest.approx({"threshold": 0.35, "precision": 2 / 3, "recall": 1.0, "f1": 0.8})
    assert choose_decision_threshold(probs, labels, target_recall=1.0)["threshold"] == pytest.approx(0.35)
    assert choose_decision_threshold(probs, labels, target_recall=0.5)["threshold"] == pytest.approx(0.8)
    assert choose_decision_threshold(probs, [0, 0, 2, 1], target_recall=0.5)["threshold"] == pytest.approx(
        0.8
    )
    with pytest.raises(ValueError, match="both classes"):
        choose_decision_threshold(probs, [1, 1, 1, 1])


def test_settings_round_trip_and_are_found_beside_the_checkpoints(tmp_path):
    ckpts = tmp_path / "run" / "checkpoints"
    ckpts.mkdir(parents=True)
    settings = PostprocessSettings("detection", nms_thresh=0.45, score_thresh=0.3, chosen_on={"images": 12})
    path = settings.save(tmp_path / "run")
    assert path == tmp_path / "run" / "postprocess.json"
    assert find_settings([ckpts / "epoch001.ckpt", ckpts / "epoch002.ckpt"]) == path
    assert PostprocessSettings.load(path) == settings
    assert settings.replace(nms_thresh=0.6, score_thresh=None).score_thresh == 0.3
    assert find_settings([tmp_path / "elsewhere" / "a.ckpt"]) is None
    path.write_text(json.dumps({"task": "detection", "nms": 0.5}))
    with pytest.raises(ValueError, match=r"postprocess.json: unknown post-processing setting\(s\) \['nms'\]"):
        PostprocessSettings.load(path)
    # 1.0 suppresses nothing: a point of the sweep that cxr-tune may choose and must be able to store
    path.write_text(json.dumps({"task": "detection", "nms_thresh": 1.0}))
    assert PostprocessSettings.load(path).nms_thresh == 1.0
    with pytest.raises(ValueError, match=r"nms_thresh must be in \[0, 1\], got 1.5"):
        PostprocessSettings("detection", nms_thresh=1.5)


def test_fig8_plot_is_written(tmp_path):
    tables = {
        e: sweep_nms(PREDICTIONS[: e + 2], TARGETS[: e + 2], [0.3, 0.5, 0.9], [0.2, 0.4]) for e in range(2)
    }
    path = plot_nms_sweep(tables, tmp_path / "fig8.png")
    with Image.open(path) as img:
        assert img.format == "PNG" and img.width > 2 * img.height > 200
        assert np.asarray(img.convert("L")).std() > 5  # not a blank canvas


def _clustered(seed: int, n: int = 60) -> dict:
    """Raw detections in three overlapping clusters, as a detector without NMS gives them."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(40, 200, (3, 2))[rng.integers(0, 3, n)] + rng.normal(0, 8, (n, 2))
    sizes = rng.uniform(20, 60, (n, 2))
    return _det(
        np.concatenate([centres - sizes / 2, centres + sizes / 2], 1).tolist(), rng.uniform(0.05, 1, n)
    )


@pytest.mark.parametrize("grid", [TUNE_GRID, TABLE_GRID], ids=["cxr-tune", "postprocess-table"])
def test_nms_sweeps_span_0_to_1_and_reproduce_torchvision_nms(grid):
    """Both sweeps run from 0 (any overlap suppresses) to 1.0 (nothing is suppressed) inclusive, and
    at every threshold a single model's row keeps exactly the boxes of torchvision.ops.nms."""
    assert grid[0] == 0.0 and grid[-1] == 1.0 and list(grid) == sorted(grid) and set(grid) <= set(NMS_GRID)
    images = [_clustered(seed) for seed in range(3)]
    table = sweep_nms(images, TARGETS[:3], nms_thresholds=grid, score_thresholds=[0.0], score_mode="max")
    assert table["nms_thresh"].tolist() == list(grid)
    for row in table.itertuples():
        kept = [len(nms(d["boxes"], d["scores"], row.nms_thresh)) for d in images]
        assert row.boxes_per_image == pytest.approx(np.mean(kept)), row.nms_thresh
    merged = ensemble_images(images, 1.0, "max")
    for det, out in zip(images, merged, strict=True):
        order = det["scores"].argsort(descending=True)
        assert torch.equal(out["boxes"], det["boxes"][order])  # 1.0: every box stays
    for t in grid:
        for det, out in zip(images, ensemble_images(images, t, "max"), strict=True):
            keep = nms(det["boxes"], det["scores"], t)
            assert torch.equal(out["boxes"], det["boxes"][keep]) and torch.equal(
                out["scores"], det["scores"][keep]
            )
