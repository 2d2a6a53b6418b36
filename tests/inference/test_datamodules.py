"""A checkpoint's datamodule is rebuilt from its metadata, and only from cxr.data."""

from __future__ import annotations

import pytest

from cxr.data.ped_cxr import PedChestXrayDataModule
from cxr.data.rsna import RSNADataModule
from cxr.inference.datamodules import datamodule_class, rebuild_datamodule


def test_the_named_target_wins_and_older_checkpoints_follow_their_task():
    meta = {"datamodule_target": "cxr.data.ped_cxr.PedChestXrayDataModule"}
    assert datamodule_class(meta, "detection") is PedChestXrayDataModule
    assert datamodule_class({}, "detection") is RSNADataModule
    assert datamodule_class({}, "classification") is PedChestXrayDataModule


@pytest.mark.parametrize(
    "target", ["os.system", "subprocess.Popen", "cxr.data.ped_cxr.Nope", "cxr.data.nope.X"]
)
def test_a_target_outside_cxr_data_or_missing_is_refused(target):
    with pytest.raises(ValueError, match="datamodule"):
        datamodule_class({"datamodule_target": target}, "classification")


def test_rebuilt_with_stored_arguments_overrides_and_unknown_keys_dropped(ped_cxr_dir, tmp_path):
    meta = {
        "datamodule_target": "cxr.data.ped_cxr.PedChestXrayDataModule",
        "datamodule": {"image_size": 40, "batch_size": 3, "num_workers": 0, "from_a_newer_version": 1},
    }
    dm = rebuild_datamodule(meta, "classification", ped_cxr_dir, batch_size=5, cache_dir=tmp_path)
    assert isinstance(dm, PedChestXrayDataModule)
    batch = next(iter(dm.val_dataloader()))
    assert batch["image"].shape[1:] == (1, 40, 40) and len(batch["image"]) <= 5
