"""RSNA datamodule: batch contract, predict set, augmentation, pickling, folds, box clipping, unreadable images."""

from __future__ import annotations

import logging
import pickle
from pathlib import Path

import albumentations as A
import numpy as np
import pandas as pd
import pytest
import torch

from cxr.data.boxes import to_original
from cxr.data.dicom import DicomReadError
from cxr.data.rsna import RSNADataModule
from cxr.data.rsna_labels import CLASS_NAMES

S = 64  # network input side; the synthetic films are 256 px


def _dm(root: Path, tmp_path: Path, **kw) -> RSNADataModule:
    return RSNADataModule(root, image_size=S, batch_size=4, cache_dir=tmp_path / "cache", **kw)


def _xyxy(rows: pd.DataFrame) -> np.ndarray:
    xywh = rows[["x", "y", "width", "height"]].to_numpy(np.float32)
    return np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)


# --- batches ------------------------------------------------------------------------------------


def test_batches_follow_the_detection_contract(rsna_csv, rsna_dir: Path, tmp_path: Path) -> None:
    dm = _dm(rsna_dir, tmp_path)
    dm.setup("fit")
    labels = rsna_csv(rsna_dir, "labels")
    seen: dict[str, torch.Tensor] = {}
    for loader in (dm.train_dataloader(), dm.val_dataloader()):
        for batch in loader:
            b = len(batch["patient_id"])
            assert batch["image"].shape == (b, 1, S, S) and batch["image"].dtype == torch.float32
            assert batch["cls"].dtype == torch.int64 and set(batch["cls"].tolist()) <= {0, 1, 2}
            assert batch["orig_size"].dtype == torch.int64 and (batch["orig_size"] == 256).all()
            assert batch["index"].dtype == torch.int64 and len(batch["boxes"]) == b
            for boxes in batch["boxes"]:
                assert boxes.dtype == torch.float32 and boxes.shape[1:] == (4,)
                assert (boxes >= 0).all() and (boxes <= S).all()
    assert len(dm.train_set) == 18 and len(dm.val_set) == 6
    assert len(dm.train_dataloader()) == 4  # 18 // 4: the incomplete last batch is dropped
    for ds in (dm.train_set, dm.val_set):
        for sample in (ds[i] for i in range(len(ds))):
            seen[sample["patient_id"]] = to_original(sample["boxes"], sample["orig_size"], S)
    assert set(seen) == set(labels["patientId"])
    assert {dm.val_set[i]["patient_id"] for i in range(len(dm.val_set))} == set(dm.val_patients)
    # boxes are the CSV's, scaled by 64/256 and back; negatives are present with (0, 4) boxes
    for pid, boxes in seen.items():
        rows = labels[(labels["patientId"] == pid) & (labels["Target"] == 1)]
        np.testing.assert_allclose(boxes.numpy(), _xyxy(rows), atol=1e-4)
    assert sum(len(b) == 0 for b in seen.values()) >= 10
    dm.setup("test")
    assert sorted(p for b in dm.test_dataloader() for p in b["patient_id"]) == sorted(dm.val_patients)


def test_predict_uses_unlabelled_test_images(rsna_dir: Path, tmp_path: Path) -> None:
    dm = _dm(rsna_dir, tmp_path)
    dm.setup("predict")
    (batch,) = list(dm.predict_dataloader())
    assert sorted(batch["patient_id"]) == sorted(
        p.stem for p in (rsna_dir / "stage_2_test_images").glob("*.dcm")
    )
    assert (batch["cls"] == -1).all() and all(b.shape == (0, 4) for b in batch["boxes"])


def test_augmentation_only_in_train_and_moves_boxes(rsna_dir: Path, tmp_path: Path) -> None:
    plain, flipped = _dm(rsna_dir, tmp_path), _dm(rsna_dir, tmp_path, augment=[A.HorizontalFlip(p=1.0)])
    plain.setup("fit")
    flipped.setup("fit")
    i = next(i for i in range(len(plain.train_set)) if len(plain.train_set[i]["boxes"]))
    a, b = plain.train_set[i], flipped.train_set[i]
    torch.testing.assert_close(b["image"], a["image"].flip(-1))
    torch.testing.assert_close(b["boxes"][:, [2, 0]], S - a["boxes"][:, [0, 2]])
    torch.testing.assert_close(flipped.val_set[0]["image"], plain.val_set[0]["image"])


def test_dataset_pickles_without_the_pixels(rsna_dir: Path, tmp_path: Path) -> None:
    dm = _dm(rsna_dir, tmp_path)
    dm.setup("fit")
    blob = pickle.dumps(dm.train_set)
    assert len(blob) < 18 * S * S  # the memory map is re-opened by workers, not shipped
    torch.testing.assert_close(pickle.loads(blob)[3]["image"], dm.train_set[3]["image"])


# --- folds --------------------------------------------------------------------------------------


def test_datamodule_folds_partition_patients_and_ignore_csv_order(
    rsna_csv, rsna_variant, rsna_dir: Path, tmp_path: Path
) -> None:
    dms = [_dm(rsna_dir, tmp_path, fold=k) for k in range(4)]
    vals = [set(dm.val_patients) for dm in dms]
    assert sum(len(v) for v in vals) == 24 and set().union(*vals) == set(
        rsna_csv(rsna_dir, "labels")["patientId"]
    )
    assert all(dm.folds["cls"].tolist().count(2) == 5 for dm in dms[:1])
    positives_per_fold = dms[0].folds.groupby("fold")["cls"].apply(lambda c: int((c == 2).sum()))
    assert positives_per_fold.min() >= 1  # 5 positives over 4 folds: every fold gets one
    labels, classes = rsna_csv(rsna_dir, "labels"), rsna_csv(rsna_dir, "classes")
    order = np.random.default_rng(1).permutation(len(labels))
    shuffled = rsna_variant(rsna_dir, tmp_path, labels.iloc[order], classes.iloc[order])
    theirs = _dm(shuffled, tmp_path).folds
    pd.testing.assert_series_equal(
        theirs.set_index("patientId")["fold"], dms[0].folds.set_index("patientId")["fold"]
    )
    dms[1].setup("fit")
    train_ids = {dms[1].train_set[i]["patient_id"] for i in range(len(dms[1].train_set))}
    assert not train_ids & vals[1] and len(train_ids | vals[1]) == 24


# --- bad input ----------------------------------------------------------------------------------


def test_boxes_outside_the_image_clipped_or_dropped(
    rsna_csv, rsna_variant, rsna_dir: Path, tmp_path: Path, caplog
) -> None:
    labels = rsna_csv(rsna_dir, "labels")
    i = labels.index[labels["Target"] == 1][0]
    pid = labels.loc[i, "patientId"]
    labels.loc[i, ["x", "width"]] = [-10.0, 50.0]  # partly outside: x1 clipped to 0
    outside = labels.loc[[i]].assign(x=300.0, y=10.0)  # right of the 256 px image
    classes = rsna_csv(rsna_dir, "classes")
    dm = _dm(
        rsna_variant(
            rsna_dir, tmp_path, pd.concat([labels, outside]), pd.concat([classes, classes.loc[[i]]])
        ),
        tmp_path,
    )
    with caplog.at_level(logging.WARNING, logger="cxr.data.rsna_labels"):
        dm.setup("fit")
    assert "clipped 1 box(es) partly outside their image, dropped 1 entirely outside" in caplog.text
    ds = dm.train_set if pid not in dm.val_patients else dm.val_set
    sample = next(ds[j] for j in range(len(ds)) if ds[j]["patient_id"] == pid)
    expected = _xyxy(labels[(labels["patientId"] == pid) & (labels["Target"] == 1)])
    expected[:, [0, 2]] = expected[:, [0, 2]].clip(0, 256)
    np.testing.assert_allclose(
        to_original(sample["boxes"], sample["orig_size"], S).numpy(), expected, atol=1e-4
    )


def test_listed_but_missing_or_undecodable_image(
    rsna_csv, rsna_variant, rsna_dir: Path, tmp_path: Path
) -> None:
    labels, classes = rsna_csv(rsna_dir, "labels"), rsna_csv(rsna_dir, "classes")
    ghost = pd.DataFrame(
        {
            "patientId": ["ghost-0001"],
            "x": [np.nan],
            "y": [np.nan],
            "width": [np.nan],
            "height": [np.nan],
            "Target": [0],
        }
    )
    root = rsna_variant(
        rsna_dir,
        tmp_path,
        pd.concat([labels, ghost]),
        pd.concat([classes, pd.DataFrame({"patientId": ["ghost-0001"], "class": [CLASS_NAMES[0]]})]),
    )
    # default mode leaves the missing file out (tests/reliability); strict=True makes it an error naming it
    with pytest.raises(
        DicomReadError, match=r"1 of 25 image\(s\) listed in .*\(strict=True\): .*ghost-0001\.dcm"
    ):
        _dm(root, tmp_path, strict=True).setup("fit")
    images = tmp_path / "images"
    images.mkdir()
    for p in (rsna_dir / "stage_2_train_images").glob("*.dcm"):
        (images / p.name).symlink_to(p)
    (images / "ghost-0001.dcm").write_bytes(b"not a dicom at all")
    (root / "stage_2_train_images").unlink()
    (root / "stage_2_train_images").symlink_to(images, target_is_directory=True)
    with pytest.raises(
        DicomReadError,
        match=r"1 of 25 image\(s\) listed in .*\(strict=True\): .*ghost-0001\.dcm.*not a DICOM",
    ):
        _dm(root, tmp_path, strict=True).setup("fit")


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="fold=4"):
        RSNADataModule("x", fold=4, n_folds=4)
    with pytest.raises(FileNotFoundError, match=r"stage_2_train_labels\.csv"):
        _ = RSNADataModule("/nonexistent/rsna").folds
