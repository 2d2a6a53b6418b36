"""The synthetic Ped-ChestXray writer: layout, naming, proportions, determinism, learnable opacities."""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cxr.synth.ped_cxr import split_counts, write_ped_cxr
from cxr.synth.phantom import lung_boxes

NAME = {
    "NORMAL": re.compile(r"^(NORMAL2-)?IM-(\d{4})-(\d{4})\.jpeg$"),
    "PNEUMONIA": re.compile(r"^person(\d+)_(bacteria|virus)_(\d+)\.jpeg$"),
}


def _files(root: Path) -> list[Path]:
    return sorted(root.rglob("*.jpeg"))


def test_layout_and_naming_match_the_release(ped_cxr_dir):
    assert sorted(p.name for p in ped_cxr_dir.iterdir()) == ["test", "train", "val"]
    counts = defaultdict(int)
    for path in _files(ped_cxr_dir):
        split, folder = path.parent.parent.name, path.parent.name
        assert NAME[folder].match(path.name), f"{path} breaks the Kermany naming"
        counts[split, folder] += 1
    assert dict(counts) == split_counts(60)
    assert all(counts["val", c] >= 2 and counts["test", c] >= 2 for c in NAME)


def test_patients_sometimes_have_several_images_and_never_cross_splits(ped_cxr_dir):
    splits_of, images_of = defaultdict(set), defaultdict(int)
    for path in _files(ped_cxr_dir):
        m = NAME[path.parent.name].match(path.name)
        patient = f"person{m[1]}" if path.parent.name == "PNEUMONIA" else f"{m[1] or ''}IM-{m[2]}"
        splits_of[patient].add(path.parent.parent.name)
        images_of[patient] += 1
    assert all(len(s) == 1 for s in splits_of.values())
    assert 1 < max(images_of.values()) <= 3
    assert sum(v == 1 for v in images_of.values()) > len(images_of) / 3


def test_class_ratio_follows_the_real_data():
    real = split_counts(5856)
    assert (
        real["train", "NORMAL"] == 1341
        and real["train", "PNEUMONIA"] == 3875
        and real["test", "NORMAL"] == 234
    )
    counts = split_counts(600)
    normal = sum(v for (_, c), v in counts.items() if c == "NORMAL")
    assert sum(counts.values()) == 600
    assert 0.22 <= normal / 600 <= 0.32  # real: 1,583 of 5,856 = 0.27


def test_sizes_vary_and_a_few_files_are_rgb(ped_cxr_dir):
    modes, shapes = [], set()
    for path in _files(ped_cxr_dir):
        with Image.open(path) as img:
            modes.append(img.mode)
            shapes.add(img.size)
            assert 48 <= min(img.size) and max(img.size) <= 96
    assert len(shapes) > 20
    assert {w / h > 1.1 for w, h in shapes} == {True, False}
    assert 1 <= modes.count("RGB") <= 6 and modes.count("L") == len(modes) - modes.count("RGB")


def test_same_seed_same_bytes_other_seed_other_images(tmp_path):
    a = write_ped_cxr(tmp_path / "a", n=20, seed=3, min_side=32, max_side=48)
    b = write_ped_cxr(tmp_path / "b", n=20, seed=3, min_side=32, max_side=48)
    c = write_ped_cxr(tmp_path / "c", n=20, seed=4, min_side=32, max_side=48)
    rel = [p.relative_to(a) for p in _files(a)]
    assert rel == [p.relative_to(b) for p in _files(b)]
    assert all((a / r).read_bytes() == (b / r).read_bytes() for r in rel)
    assert [(a / r).read_bytes() for r in rel] != [(c / r).read_bytes() for r in rel if (c / r).exists()]


def test_pneumonia_is_brighter_inside_the_lungs(ped_cxr_dir):
    lung_mean = defaultdict(list)
    for path in _files(ped_cxr_dir):
        img = np.asarray(Image.open(path).convert("L"), np.float32)
        boxes = lung_boxes(*img.shape)
        mean = np.mean([img[int(y1) : int(y2), int(x1) : int(x2)].mean() for x1, y1, x2, y2 in boxes])
        lung_mean[path.parent.name].append(mean)
    assert (
        min(lung_mean["PNEUMONIA"]) > 0
        and np.mean(lung_mean["PNEUMONIA"]) > np.mean(lung_mean["NORMAL"]) + 10
    )


def test_bad_arguments_fail_clearly(tmp_path):
    with pytest.raises(ValueError, match="n=5"):
        write_ped_cxr(tmp_path / "x", n=5)
    with pytest.raises(ValueError, match="min_side"):
        write_ped_cxr(tmp_path / "x", n=20, min_side=64, max_side=32)
    write_ped_cxr(tmp_path / "y", n=20, min_side=32, max_side=40)
    with pytest.raises(FileExistsError, match="y"):
        write_ped_cxr(tmp_path / "y", n=20, min_side=32, max_side=40)


@pytest.mark.slow
def test_a_small_cnn_learns_the_phantoms_at_64px(tmp_path, one_thread):
    from cxr.data.ped_cxr import PedChestXrayDataModule

    torch.manual_seed(0)
    root = write_ped_cxr(tmp_path / "chest_xray", n=160, seed=1, min_side=64, max_side=128)
    dm = PedChestXrayDataModule(
        root, image_size=64, batch_size=16, cache_dir=tmp_path / "cache", val_fraction=0.2
    )
    dm.setup()
    nn = torch.nn
    net = nn.Sequential(  # max pooling at the end: "is there a bright blob anywhere in a lung"
        nn.Conv2d(1, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.AdaptiveMaxPool2d(1),
        nn.Flatten(),
        nn.Linear(32, 1),
    )
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(10):
        net.train()
        for batch in dm.train_dataloader():
            loss = torch.nn.functional.binary_cross_entropy_with_logits(
                net(batch["image"]).squeeze(1), batch["label"].float()
            )
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        right = [
            ((net(b["image"]).squeeze(1) > 0).long() == b["label"]).float()
            for loader in (dm.val_dataloader(), dm.test_dataloader())
            for b in loader
        ]
    assert torch.cat(right).mean() >= 0.85  # majority class alone: 0.71
