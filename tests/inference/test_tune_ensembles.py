"""cxr-tune's comparison of ensembles: pooled + NMS, weighted box fusion, each checkpoint alone."""

from pathlib import Path
from types import SimpleNamespace

import torch

from cxr.inference.tune import compare_ensembles


def _box(x, score):
    return {"boxes": torch.tensor([[x, 10.0, x + 40.0, 50.0]]), "scores": torch.tensor([score])}


def test_compares_both_ensembles_and_every_checkpoint_on_its_own_images():
    members = [SimpleNamespace(path=Path(f"fold{k}.ckpt")) for k in range(2)]
    # image a: both checkpoints find the object, slightly shifted either way; image b: only fold 1
    # predicts it (out of fold), and finds the object exactly
    targets = {
        "a": {"boxes": torch.tensor([[20.0, 10, 60, 50]])},
        "b": {"boxes": torch.tensor([[0.0, 10, 40, 50]])},
    }
    predictions = {"a": [(0, _box(12.0, 0.9)), (1, _box(28.0, 0.9))], "b": [(1, _box(0.0, 0.8))]}
    table = compare_ensembles(predictions, targets, members, [0.3], [0.3])
    assert list(table["merge"]) == [
        "ensemble: pooled + NMS",
        "ensemble: weighted box fusion",
        "single: fold0.ckpt",
        "single: fold1.ckpt",
    ]
    assert list(table["images"]) == [2, 2, 1, 2]
    scores = dict(zip(table["merge"], table["rsna_map"], strict=True))
    # WBF averages the two shifted boxes onto the object (IoU 1 on a); NMS keeps one (IoU 0.67 < 0.75)
    assert scores["ensemble: weighted box fusion"] > scores["ensemble: pooled + NMS"]
    assert set(table.columns) == {"merge", "checkpoints", "images", "nms_thresh", "score_thresh", "rsna_map"}


def test_one_checkpoint_has_no_single_rows():
    members = [SimpleNamespace(path=Path("only.ckpt"))]
    targets = {"a": {"boxes": torch.tensor([[20.0, 10, 60, 50]])}}
    table = compare_ensembles({"a": [(0, _box(20.0, 0.9))]}, targets, members, [0.5], [0.5])
    assert len(table) == 2 and table["rsna_map"].tolist() == [1.0, 1.0]
