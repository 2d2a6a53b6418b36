"""RSNA datamodule: batch contract, folds, box scaling, label checking and submission files."""

from __future__ import annotations

import logging
import pickle
import uuid
from pathlib import Path

import albumentations as A
import numpy as np
import pandas as pd
import pytest
import torch

from cxr.data.dicom import DicomReadError
from cxr.data.rsna import (
    CLASS_NAMES,
    RSNADataModule,
    assign_folds,
    read_annotations,
    read_submission,
    scale_boxes,
    to_original,
    write_submission,
)

S = 64  # network input side; the synthetic films are 256 px


def _variant(rsna_dir: Path, tmp_path: Path, labels: pd.DataFrame | None = None,
             classes: pd.DataFrame | None = None) -> Path:
    """A copy of the session dataset with edited CSVs; image folders are symlinked, not copied."""
    root = tmp_path / "rsna"
    root.mkdir(parents=True)
    for sub in ("stage_2_train_images", "stage_2_test_images"):
        (root / sub).symlink_to(rsna_dir / sub, target_is_directory=True)
    (labels if labels is not None else _csv(rsna_dir, "labels")).to_csv(root / "stage_2_train_labels.csv", index=False)
    (classes if classes is not None else _csv(rsna_dir, "classes")).to_csv(
        root / "stage_2_detailed_class_info.csv", index=False)
    return root


def _csv(root: Path, which: str) -> pd.DataFrame:
    name = "stage_2_train_labels.csv" if which == "labels" else "stage_2_detailed_class_info.csv"
    return pd.read_csv(root / name)


def _dm(root: Path, tmp_path: Path, **kw) -> RSNADataModule:
    return RSNADataModule(root, image_size=S, batch_size=4, cache_dir=tmp_path / "cache", **kw)


def _xyxy(rows: pd.DataFrame) -> np.ndarray:
    xywh = rows[["x", "y", "width", "height"]].to_numpy(np.float32)
    return np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)


# --- batches ------------------------------------------------------------------------------------

def test_batches_follow_the_detection_contract(rsna_dir: Path, tmp_path: Path) -> None:
    dm = _dm(rsna_dir, tmp_path)
    dm.setup("fit")
    labels = _csv(rsna_dir, "labels")
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
    assert sorted(batch["patient_id"]) == sorted(p.stem for p in (rsna_dir / "stage_2_test_images").glob("*.dcm"))
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

def test_folds_are_stratified_deterministic_and_order_free() -> None:
    rng = np.random.default_rng(0)
    ids = np.array([str(uuid.UUID(bytes=rng.bytes(16))) for _ in range(400)])
    labels = rng.choice(3, size=400, p=[0.33, 0.445, 0.225])
    folds = assign_folds(ids, labels, n_folds=4, seed=0)
    assert sorted(set(folds.tolist())) == [0, 1, 2, 3]
    for c in range(3):
        per_fold = np.bincount(folds[labels == c], minlength=4)
        assert per_fold.max() - per_fold.min() <= 2, per_fold  # each class split evenly
    perm = rng.permutation(400)
    np.testing.assert_array_equal(assign_folds(ids[perm], labels[perm], 4, 0), folds[perm])
    assert not np.array_equal(assign_folds(ids, labels, 4, seed=1), folds)


def test_datamodule_folds_partition_patients_and_ignore_csv_order(rsna_dir: Path, tmp_path: Path) -> None:
    dms = [_dm(rsna_dir, tmp_path, fold=k) for k in range(4)]
    vals = [set(dm.val_patients) for dm in dms]
    assert sum(len(v) for v in vals) == 24 and set().union(*vals) == set(_csv(rsna_dir, "labels")["patientId"])
    assert all(dm.folds["cls"].tolist().count(2) == 5 for dm in dms[:1])
    positives_per_fold = dms[0].folds.groupby("fold")["cls"].apply(lambda c: int((c == 2).sum()))
    assert positives_per_fold.min() >= 1  # 5 positives over 4 folds: every fold gets one
    labels, classes = _csv(rsna_dir, "labels"), _csv(rsna_dir, "classes")
    order = np.random.default_rng(1).permutation(len(labels))
    shuffled = _variant(rsna_dir, tmp_path, labels.iloc[order], classes.iloc[order])
    theirs = _dm(shuffled, tmp_path).folds
    pd.testing.assert_series_equal(theirs.set_index("patientId")["fold"], dms[0].folds.set_index("patientId")["fold"])
    dms[1].setup("fit")
    train_ids = {dms[1].train_set[i]["patient_id"] for i in range(len(dms[1].train_set))}
    assert not train_ids & vals[1] and len(train_ids | vals[1]) == 24


# --- box scaling --------------------------------------------------------------------------------

def test_scaling_round_trip_and_hand_values() -> None:
    boxes = np.array([[100, 200, 300, 400], [0, 0, 800, 1000]], np.float32)
    scaled = scale_boxes(boxes, (1000, 800), 64)  # (H, W): x by 64/800, y by 64/1000
    np.testing.assert_allclose(scaled, [[8, 12.8, 24, 25.6], [0, 0, 64, 64]], atol=1e-5)
    np.testing.assert_allclose(to_original(scaled, (1000, 800), 64), boxes, atol=1e-3)
    t = torch.tensor(boxes)
    back = to_original(scale_boxes(t, torch.tensor([1000, 800]), 64), torch.tensor([1000, 800]), 64)
    assert isinstance(back, torch.Tensor)
    torch.testing.assert_close(back, t)


# --- bad input ----------------------------------------------------------------------------------

def test_missing_columns_named(rsna_dir: Path, tmp_path: Path) -> None:
    root = _variant(rsna_dir, tmp_path, labels=_csv(rsna_dir, "labels").drop(columns=["width", "Target"]))
    with pytest.raises(ValueError, match=r"stage_2_train_labels\.csv.*\['width', 'Target'\].*expected"):
        read_annotations(root)


def test_extra_columns_ignored(rsna_dir: Path, tmp_path: Path) -> None:
    root = _variant(rsna_dir, tmp_path, labels=_csv(rsna_dir, "labels").assign(note="x"))
    assert len(read_annotations(root)) == 24


def test_duplicates_nan_and_nonpositive_boxes(rsna_dir: Path, tmp_path: Path, caplog) -> None:
    labels = _csv(rsna_dir, "labels")
    pos = labels[labels["Target"] == 1]
    counts = pos["patientId"].value_counts()
    multi, single = counts.index[counts >= 2][0], counts.index[counts == 1][0]
    first_multi = pos.index[pos["patientId"] == multi][0]
    labels.loc[first_multi, "x"] = np.nan  # one of two boxes lost: the image stays with the other
    labels.loc[pos.index[pos["patientId"] == single][0], "width"] = -5  # its only box: image dropped
    neg = labels[labels["Target"] == 0].iloc[[0]]
    classes = _csv(rsna_dir, "classes")
    root = _variant(rsna_dir, tmp_path, pd.concat([labels, neg]), pd.concat([classes, classes.iloc[[neg.index[0]]]]))
    with caplog.at_level(logging.WARNING, logger="cxr.data.rsna"):
        table = read_annotations(root)
    text = caplog.text
    assert "dropped 1 duplicate row(s)" in text and "dropped 1 Target=1 row(s) with a missing (NaN) box" in text
    assert "dropped 1 box(es) with width or height <= 0" in text and "dropped 1 image(s)" in text
    assert len(table) == 23 and single not in set(table["patientId"])
    kept = table.set_index("patientId").loc[multi, "boxes"]
    assert kept.shape == (counts[multi] - 1, 4)
    with pytest.raises(ValueError, match=r"duplicate.*strict=True"):
        read_annotations(root, strict=True)


def test_unknown_patient_ids_both_ways(rsna_dir: Path, tmp_path: Path, caplog) -> None:
    labels, classes = _csv(rsna_dir, "labels"), _csv(rsna_dir, "classes")
    positive = labels.loc[labels["Target"] == 1, "patientId"].iloc[0]
    classes = pd.concat([classes[classes["patientId"] != positive],
                         pd.DataFrame({"patientId": ["ghost"], "class": ["Normal"]})])
    with caplog.at_level(logging.WARNING, logger="cxr.data.rsna"):
        table = read_annotations(_variant(rsna_dir, tmp_path, labels, classes))
    assert "ignored 1 patient id(s) absent from" in caplog.text
    assert "1 patient id(s) absent from" in caplog.text and "class taken from Target" in caplog.text
    assert "ghost" not in set(table["patientId"]) and len(table) == 24
    assert table.set_index("patientId").loc[positive, "class"] == "Lung Opacity"


def test_bad_class_name_and_target(rsna_dir: Path, tmp_path: Path) -> None:
    classes = _csv(rsna_dir, "classes").replace({"Normal": "normal"})
    with pytest.raises(ValueError, match=r"detailed_class_info\.csv.*\['normal'\]"):
        read_annotations(_variant(rsna_dir, tmp_path, classes=classes))
    labels = _csv(rsna_dir, "labels")
    labels.loc[0, "Target"] = 2
    with pytest.raises(ValueError, match="Target must be 0 or 1"):
        read_annotations(_variant(rsna_dir, tmp_path / "t", labels=labels))


def test_boxes_outside_the_image_clipped_or_dropped(rsna_dir: Path, tmp_path: Path, caplog) -> None:
    labels = _csv(rsna_dir, "labels")
    i = labels.index[labels["Target"] == 1][0]
    pid = labels.loc[i, "patientId"]
    labels.loc[i, ["x", "width"]] = [-10.0, 50.0]  # partly outside: x1 clipped to 0
    outside = labels.loc[[i]].assign(x=300.0, y=10.0)  # right of the 256 px image
    classes = _csv(rsna_dir, "classes")
    dm = _dm(_variant(rsna_dir, tmp_path, pd.concat([labels, outside]), pd.concat([classes, classes.loc[[i]]])),
             tmp_path)
    with caplog.at_level(logging.WARNING, logger="cxr.data.rsna"):
        dm.setup("fit")
    assert "clipped 1 box(es) partly outside their image, dropped 1 entirely outside" in caplog.text
    ds = dm.train_set if pid not in dm.val_patients else dm.val_set
    sample = next(ds[j] for j in range(len(ds)) if ds[j]["patient_id"] == pid)
    expected = _xyxy(labels[(labels["patientId"] == pid) & (labels["Target"] == 1)])
    expected[:, [0, 2]] = expected[:, [0, 2]].clip(0, 256)
    np.testing.assert_allclose(to_original(sample["boxes"], sample["orig_size"], S).numpy(), expected, atol=1e-4)


def test_listed_but_missing_or_undecodable_image(rsna_dir: Path, tmp_path: Path) -> None:
    labels, classes = _csv(rsna_dir, "labels"), _csv(rsna_dir, "classes")
    ghost = pd.DataFrame({"patientId": ["ghost-0001"], "x": [np.nan], "y": [np.nan], "width": [np.nan],
                          "height": [np.nan], "Target": [0]})
    root = _variant(rsna_dir, tmp_path, pd.concat([labels, ghost]),
                    pd.concat([classes, pd.DataFrame({"patientId": ["ghost-0001"], "class": [CLASS_NAMES[0]]})]))
    # default mode leaves the missing file out (tests/reliability); strict=True makes it an error naming it
    with pytest.raises(DicomReadError, match=r"1 of 25 image\(s\) listed in .*\(strict=True\): .*ghost-0001\.dcm"):
        _dm(root, tmp_path, strict=True).setup("fit")
    images = tmp_path / "images"
    images.mkdir()
    for p in (rsna_dir / "stage_2_train_images").glob("*.dcm"):
        (images / p.name).symlink_to(p)
    (images / "ghost-0001.dcm").write_bytes(b"not a dicom at all")
    (root / "stage_2_train_images").unlink()
    (root / "stage_2_train_images").symlink_to(images, target_is_directory=True)
    with pytest.raises(DicomReadError, match=r"1 of 25 image\(s\) listed in .*\(strict=True\): .*ghost-0001\.dcm.*not a DICOM"):
        _dm(root, tmp_path, strict=True).setup("fit")


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="fold=4"):
        RSNADataModule("x", fold=4, n_folds=4)
    with pytest.raises(FileNotFoundError, match=r"stage_2_train_labels\.csv"):
        _ = RSNADataModule("/nonexistent/rsna").folds


# --- submissions --------------------------------------------------------------------------------

def test_submission_round_trip(tmp_path: Path) -> None:
    preds = {
        "a": {"boxes": torch.tensor([[10.0, 20.0, 40.0, 60.0], [100.5, 0.0, 300.25, 512.0]]),
              "scores": torch.tensor([0.3, 0.9])},
        "b": {"boxes": np.zeros((0, 4)), "scores": np.zeros(0)},
    }
    path = write_submission(preds, tmp_path / "sub.csv")
    text = path.read_text().splitlines()
    assert text[0] == "patientId,PredictionString"
    assert text[1] == "a,0.9000 100.5 0.0 199.8 512.0 0.3000 10.0 20.0 30.0 40.0"  # by descending score
    assert text[2] == "b,"
    back = read_submission(path)
    assert list(back) == ["a", "b"] and back["b"]["boxes"].shape == (0, 4)
    np.testing.assert_allclose(back["a"]["scores"], [0.9, 0.3], atol=1e-4)
    np.testing.assert_allclose(back["a"]["boxes"], preds["a"]["boxes"][[1, 0]].numpy(), atol=0.06)


def test_submission_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="a: need finite boxes"):
        write_submission({"a": {"boxes": np.zeros((2, 4)), "scores": np.zeros(1)}}, tmp_path / "s.csv")
    (tmp_path / "bad.csv").write_text("patientId,PredictionString\na,0.5 1 2 3\n")
    with pytest.raises(ValueError, match=r"bad\.csv.*a has 4 numbers"):
        read_submission(tmp_path / "bad.csv")
    (tmp_path / "words.csv").write_text("patientId,PredictionString\nb,0.5 1 2 3 x\n")
    with pytest.raises(ValueError, match=r"words\.csv: PredictionString of b is not numbers: '0.5 1 2 3 x'"):
        read_submission(tmp_path / "words.csv")
