"""Reproducibility: the same config and seed give the same batches and metrics; splits ignore file-system order."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import albumentations as A
import pytest
import torch

from cxr.cli.train import run
from cxr.config.compose import compose
from cxr.data.ped_cxr import PedChestXrayDataModule

AUGMENT = [A.Affine(rotate=(-20, 20), scale=(0.9, 1.1), p=1.0), A.HorizontalFlip(p=0.5)]


def _dm(data_dir: Path, tmp_path: Path, **kwargs) -> PedChestXrayDataModule:
    dm = PedChestXrayDataModule(data_dir, image_size=32, batch_size=8, cache_dir=tmp_path / "cache", **kwargs)
    dm.setup()
    return dm


def _epoch(dm: PedChestXrayDataModule, epoch: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)  # the training seed, as seed_everything sets it
    loader = dm.train_dataloader()
    loader.sampler.set_epoch(epoch)
    batches = list(loader)
    return torch.cat([b["image"] for b in batches]), torch.cat([b["index"] for b in batches])


def test_augmented_batches_repeat_exactly_and_ignore_the_worker_count(
    ped_cxr_dir: Path, tmp_path: Path
) -> None:
    images, order = _epoch(_dm(ped_cxr_dir, tmp_path, augment=AUGMENT), epoch=0)
    again, order_again = _epoch(_dm(ped_cxr_dir, tmp_path, augment=AUGMENT), epoch=0)
    assert torch.equal(order, order_again) and torch.equal(images, again)
    in_worker, order_worker = _epoch(_dm(ped_cxr_dir, tmp_path, augment=AUGMENT, num_workers=1), epoch=0)
    assert torch.equal(order, order_worker) and torch.equal(images, in_worker)
    # other epochs and other training seeds give other orders and other augmentations
    next_images, next_order = _epoch(_dm(ped_cxr_dir, tmp_path, augment=AUGMENT), epoch=1)
    assert not torch.equal(order, next_order)
    plain, _ = _epoch(_dm(ped_cxr_dir, tmp_path), epoch=1)
    same_sample = next_images[torch.argsort(next_order)] - plain[torch.argsort(next_order)]
    assert same_sample.abs().amax(dim=(1, 2, 3)).gt(0).float().mean() > 0.9  # nearly every sample augmented
    assert not torch.equal(_epoch(_dm(ped_cxr_dir, tmp_path, augment=AUGMENT), epoch=0, seed=1)[1], order)


def test_splits_depend_on_names_and_seed_not_on_location_or_listing_order(
    ped_cxr_dir: Path, tmp_path: Path
) -> None:
    moved = tmp_path / "elsewhere" / "chest_xray"
    for src in sorted(ped_cxr_dir.rglob("*.jpeg"), reverse=True):  # created in the opposite order
        dst = moved / src.relative_to(ped_cxr_dir)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
    original, copy = _dm(ped_cxr_dir, tmp_path), _dm(moved, tmp_path)

    def relative(dm: PedChestXrayDataModule) -> dict[str, list[Path]]:
        return {split: [p.relative_to(dm.data_dir) for p in files] for split, files in dm.splits.items()}

    assert relative(original) == relative(copy)
    assert torch.equal(_epoch(original, 0)[1], _epoch(copy, 0)[1])
    assert relative(_dm(ped_cxr_dir, tmp_path, seed=1))["val"] != relative(original)["val"]


def _overrides(data_dir: Path, tmp_path: Path, *extra: str) -> list[str]:
    return [
        f"datamodule.data_dir={data_dir}",
        "datamodule.image_size=32",
        "datamodule.batch_size=8",
        "datamodule.num_workers=0",
        f"datamodule.cache_dir={tmp_path / 'cache'}",
        "trainer=cpu",
        "trainer.enable_progress_bar=false",
        "trainer.max_epochs=2",
        "trainer.deterministic=true",
        "model.widths=[8,8,8,8,8]",
        "model.hidden=8",
        "task.optimizer.lr=3e-3",
        "augment=light",
        *extra,
    ]


def _metrics(folder: Path) -> dict:
    metrics = json.loads((folder / "metrics.json").read_text())
    return {k: v for k, v in metrics.items() if k.startswith(("val/", "test/", "best/"))}


@pytest.mark.slow
def test_same_config_and_seed_give_identical_metrics(ped_cxr_dir: Path, tmp_path: Path) -> None:
    for name in ("a", "b"):
        run(compose(_overrides(ped_cxr_dir, tmp_path), output_dir=tmp_path / name))
    run(compose(_overrides(ped_cxr_dir, tmp_path, "seed=1"), output_dir=tmp_path / "seed1"))
    first = _metrics(tmp_path / "a")
    assert {"val/loss", "test/loss", "test/auroc", "test/confusion_matrix"} <= set(first)
    assert _metrics(tmp_path / "b") == first
    assert _metrics(tmp_path / "seed1")["val/loss"] != first["val/loss"]
