"""PedChestXrayDataModule on the synthetic tree: batch contract, patient split, labels, sampler, bad input."""

from __future__ import annotations

import inspect
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

import cxr.data.ped_cxr as ped
from cxr.data.cache import resize_square
from cxr.data.image_io import ImageReadError, read_image
from cxr.data.ped_cxr import PedChestXrayDataModule
from cxr.data.ped_cxr_files import label_from_name, patient_id
from cxr.data.transforms import DEFAULT_MEAN, DEFAULT_STD

CONFIG = Path(__file__).resolve().parents[2] / "conf" / "datamodule" / "ped_cxr.yaml"


def make_dm(data_dir, tmp_path, **kwargs) -> PedChestXrayDataModule:
    dm = PedChestXrayDataModule(data_dir, image_size=32, batch_size=8, cache_dir=tmp_path / "cache", **kwargs)
    dm.setup()
    return dm


@pytest.fixture
def own_copy(ped_cxr_dir, tmp_path) -> Path:
    """A private copy of the shared synthetic tree, for tests that damage it."""
    return Path(shutil.copytree(ped_cxr_dir, tmp_path / "chest_xray"))


def test_batches_match_the_contract_and_pixels_round_trip(ped_cxr_dir, tmp_path):
    dm = make_dm(ped_cxr_dir, tmp_path)
    for loader in (dm.train_dataloader(), dm.val_dataloader(), dm.test_dataloader()):
        batch = next(iter(loader))
        assert set(batch) == {"image", "label", "index"}
        assert batch["image"].dtype == torch.float32 and batch["image"].shape[1:] == (1, 32, 32)
        assert batch["label"].dtype == torch.int64 and batch["index"].dtype == torch.int64
        assert batch["label"].shape == batch["index"].shape == (batch["image"].shape[0],)
    batch = next(iter(dm.test_dataloader()))
    for image, label, index in zip(batch["image"], batch["label"], batch["index"], strict=True):
        path = dm.splits["test"][index]
        assert label == int(path.parent.name == "PNEUMONIA")
        expected = resize_square(read_image(path, size_hint=32), 32).astype(np.float32) / 255
        np.testing.assert_allclose((image[0] * DEFAULT_STD + DEFAULT_MEAN).numpy(), expected, atol=1e-5)
    assert dm.num_classes == 1 and dm.class_names == ("normal", "pneumonia")


def test_augmentation_only_on_train(ped_cxr_dir, tmp_path):
    import albumentations as A

    dm = make_dm(ped_cxr_dir, tmp_path, augment=[A.HorizontalFlip(p=1.0)])
    for split, flipped in (("train", True), ("val", False), ("test", False)):
        sample = next(iter(dm._loader(split)))
        path = dm.splits[split][sample["index"][0]]
        expected = resize_square(read_image(path, size_hint=32), 32).astype(np.float32) / 255
        expected = expected[:, ::-1] if flipped else expected
        np.testing.assert_allclose(
            (sample["image"][0, 0] * DEFAULT_STD + DEFAULT_MEAN).numpy(), expected, atol=1e-5
        )


def test_patient_split_is_disjoint_stratified_and_leaves_test_alone(ped_cxr_dir, tmp_path):
    dm = make_dm(ped_cxr_dir, tmp_path, val_fraction=0.2)
    train, val = dm.splits["train"], dm.splits["val"]
    assert not {patient_id(p) for p in train} & {patient_id(p) for p in val}
    assert {p.parent.name for p in val} == {"NORMAL", "PNEUMONIA"}
    assert {label_from_name(p) for p in val} == {0, 1, 2}  # stratified by normal/bacterial/viral
    pool = sorted((ped_cxr_dir / "train").rglob("*.jpeg")) + sorted((ped_cxr_dir / "val").rglob("*.jpeg"))
    assert sorted(train + val) == sorted(pool)
    assert 0.15 <= len(val) / len(pool) <= 0.4
    assert sorted(dm.splits["test"]) == sorted((ped_cxr_dir / "test").rglob("*.jpeg"))


def test_split_depends_on_seed_not_on_listing_order(ped_cxr_dir, tmp_path, monkeypatch):
    first = make_dm(ped_cxr_dir, tmp_path).splits
    assert make_dm(ped_cxr_dir, tmp_path).splits == first
    assert make_dm(ped_cxr_dir, tmp_path, seed=1).splits["val"] != first["val"]

    real_find = ped.find_images
    rng = np.random.default_rng(0)

    def shuffled(*args, **kwargs):
        return {
            s: [files[i] for i in rng.permutation(len(files))]
            for s, files in real_find(*args, **kwargs).items()
        }

    monkeypatch.setattr(ped, "find_images", shuffled)
    again = make_dm(ped_cxr_dir, tmp_path).splits
    assert {s: sorted(f) for s, f in again.items()} == {s: sorted(f) for s, f in first.items()}


def test_official_split_uses_the_val_folder(ped_cxr_dir, own_copy, tmp_path):
    dm = make_dm(ped_cxr_dir, tmp_path, split="official")
    for split in ("train", "val", "test"):
        assert dm.splits[split] == sorted((ped_cxr_dir / split / "NORMAL").glob("*.jpeg")) + sorted(
            (ped_cxr_dir / split / "PNEUMONIA").glob("*.jpeg")
        )
    shutil.rmtree(own_copy / "val")
    with pytest.raises(FileNotFoundError, match=r"(?s)val/NORMAL.*expected layout"):
        make_dm(own_copy, tmp_path, split="official")
    assert len(make_dm(own_copy, tmp_path).splits["val"]) > 0  # patient split needs no val folder


def test_three_class_labels_follow_the_names(ped_cxr_dir, tmp_path):
    dm = make_dm(ped_cxr_dir, tmp_path, labels="three_class")
    assert dm.num_classes == 3 and dm.class_names == ("normal", "bacterial", "viral")
    kinds = {"NORMAL": 0, "bacteria": 1, "virus": 2}
    for batch in dm.train_dataloader():
        for label, index in zip(batch["label"].tolist(), batch["index"].tolist(), strict=True):
            path = dm.splits["train"][index]
            assert label == kinds["NORMAL" if path.parent.name == "NORMAL" else path.stem.split("_")[1]]
    expected = torch.tensor([sum(label_from_name(p) == k for p in dm.splits["train"]) for k in range(3)])
    assert torch.equal(dm.class_counts, expected)


def test_weighted_sampler_balances_the_classes(ped_cxr_dir, tmp_path):
    def pneumonia_share(dm):
        labels = torch.cat([b["label"] for _ in range(10) for b in dm.train_dataloader()])
        assert len(labels) == 10 * len(dm.splits["train"])
        return labels.float().mean().item()

    assert pneumonia_share(make_dm(ped_cxr_dir, tmp_path)) > 0.65
    assert 0.4 <= pneumonia_share(make_dm(ped_cxr_dir, tmp_path, sampler="weighted")) <= 0.6


def test_class_counts_and_weights(ped_cxr_dir, tmp_path):
    dm = make_dm(ped_cxr_dir, tmp_path)
    n_normal = sum(p.parent.name == "NORMAL" for p in dm.splits["train"])
    n_pneumonia = len(dm.splits["train"]) - n_normal
    assert dm.class_counts.tolist() == [n_normal, n_pneumonia]
    # w_c = (1/n_c) / mean(1/n): for counts (a, b), w = (2b/(a+b), 2a/(a+b))
    total = n_normal + n_pneumonia
    expected = torch.tensor([2 * n_pneumonia / total, 2 * n_normal / total])
    assert dm.class_weights.dtype == torch.float32
    torch.testing.assert_close(dm.class_weights, expected)


def test_the_cache_is_reused_on_a_second_setup(ped_cxr_dir, tmp_path, monkeypatch):
    calls = []

    def counting_read_image(path, size_hint=None):
        calls.append(path)
        return read_image(path, size_hint=size_hint)

    monkeypatch.setattr(ped, "read_image", counting_read_image)
    dm = make_dm(ped_cxr_dir, tmp_path)
    assert len(calls) == 60
    dm.setup("test")
    make_dm(ped_cxr_dir, tmp_path, seed=5, labels="three_class")  # other split and labels, same images
    assert len(calls) == 60


def test_missing_data_dir_names_path_and_layout(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"(?s)nowhere.*expected layout.*train/NORMAL"):
        make_dm(tmp_path / "nowhere", tmp_path)


def test_missing_class_folder_and_nested_dataset_hint(own_copy, tmp_path):
    shutil.rmtree(own_copy / "test" / "PNEUMONIA")
    with pytest.raises(FileNotFoundError, match=r"test/PNEUMONIA"):
        make_dm(own_copy, tmp_path)
    with pytest.raises(FileNotFoundError, match=r"one level down.*chest_xray"):
        make_dm(tmp_path, tmp_path)


def test_empty_class_folder_is_an_error_except_in_val(own_copy, tmp_path):
    for p in (own_copy / "val" / "NORMAL").iterdir():
        p.unlink()
    make_dm(own_copy, tmp_path)
    for p in (own_copy / "train" / "NORMAL").iterdir():
        p.unlink()
    with pytest.raises(FileNotFoundError, match=r"train/NORMAL: no image files"):
        make_dm(own_copy, tmp_path)


def test_unreadable_images_are_skipped_with_a_warning_or_raise_when_strict(own_copy, tmp_path, caplog):
    empty = own_copy / "test" / "NORMAL" / "IM-9999-0001.jpeg"
    empty.touch()
    good = sorted((own_copy / "test" / "PNEUMONIA").glob("*.jpeg"))[0]
    truncated = own_copy / "test" / "PNEUMONIA" / "person999_virus_999.jpeg"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with caplog.at_level(logging.WARNING, logger="cxr.data.ped_cxr"):
        dm = make_dm(own_copy, tmp_path)
    assert empty not in dm.splits["test"] and truncated not in dm.splits["test"]
    assert len(dm.splits["test"]) == 6
    assert any(str(empty) in m and "empty" in m for m in caplog.messages)
    assert any(str(truncated) in m and "truncated" in m for m in caplog.messages)
    assert any("test: skipped 2 unreadable" in m for m in caplog.messages)
    with pytest.raises(ImageReadError, match=r"2 unreadable.*IM-9999-0001\.jpeg"):
        make_dm(own_copy, tmp_path, strict=True)


def test_non_image_files_are_ignored(ped_cxr_dir, own_copy, tmp_path):
    (own_copy / "train" / "NORMAL" / "notes.txt").write_text("not an image")
    (own_copy / "train" / "PNEUMONIA" / ".DS_Store").write_bytes(b"\0\1")
    (own_copy / "test" / "NORMAL" / "._IM-0001-0001.jpeg").write_bytes(b"\0\1")  # macOS resource fork
    assert {s: len(f) for s, f in make_dm(own_copy, tmp_path).splits.items()} == {
        s: len(f) for s, f in make_dm(ped_cxr_dir, tmp_path).splits.items()
    }


def test_arguments_are_checked_and_data_needs_setup(ped_cxr_dir):
    with pytest.raises(ValueError, match="labels"):
        PedChestXrayDataModule(ped_cxr_dir, labels="binary_")
    with pytest.raises(ValueError, match="sampler"):
        PedChestXrayDataModule(ped_cxr_dir, sampler="balanced")
    with pytest.raises(ValueError, match="val_fraction"):
        PedChestXrayDataModule(ped_cxr_dir, val_fraction=1.0)
    dm = PedChestXrayDataModule(ped_cxr_dir)
    with pytest.raises(RuntimeError, match="setup"):
        dm.train_dataloader()
    with pytest.raises(RuntimeError, match="setup"):
        dm.class_weights  # noqa: B018


def test_config_names_every_argument_and_instantiates(ped_cxr_dir, tmp_path):
    from hydra.utils import instantiate

    cfg = OmegaConf.load(CONFIG)
    params = set(inspect.signature(PedChestXrayDataModule).parameters)
    assert set(cfg) - {"_target_"} == params - {"augment"}
    root = OmegaConf.create({"paths": {"data_dir": str(ped_cxr_dir.parent)}, "datamodule": cfg})
    dm = instantiate(root.datamodule, augment=[], num_workers=0, image_size=32, cache_dir=str(tmp_path))
    assert isinstance(dm, PedChestXrayDataModule) and dm.data_dir == ped_cxr_dir
    dm.setup()
    assert len(dm.splits["test"]) == 6


def test_worker_processes_give_the_same_batches(ped_cxr_dir, tmp_path):
    # decoding in a process pool and loading in a worker both need the decoder and dataset to pickle
    in_process = make_dm(ped_cxr_dir, tmp_path / "a")
    with_workers = make_dm(ped_cxr_dir, tmp_path / "b", num_workers=1)
    loader = with_workers.test_dataloader()
    assert loader.persistent_workers
    for a, b in zip(in_process.test_dataloader(), loader, strict=True):
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["index"], b["index"])
