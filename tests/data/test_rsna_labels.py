"""RSNA label CSVs: fold assignment, column checks, duplicate/NaN/invalid boxes, unknown ids and classes."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cxr.data.rsna_labels import assign_folds, read_annotations

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


# --- bad input ----------------------------------------------------------------------------------


def test_missing_columns_named(rsna_csv, rsna_variant, rsna_dir: Path, tmp_path: Path) -> None:
    root = rsna_variant(
        rsna_dir, tmp_path, labels=rsna_csv(rsna_dir, "labels").drop(columns=["width", "Target"])
    )
    with pytest.raises(ValueError, match=r"stage_2_train_labels\.csv.*\['width', 'Target'\].*expected"):
        read_annotations(root)


def test_extra_columns_ignored(rsna_csv, rsna_variant, rsna_dir: Path, tmp_path: Path) -> None:
    root = rsna_variant(rsna_dir, tmp_path, labels=rsna_csv(rsna_dir, "labels").assign(note="x"))
    assert len(read_annotations(root)) == 24


def test_duplicates_nan_and_nonpositive_boxes(
    rsna_csv, rsna_variant, rsna_dir: Path, tmp_path: Path, caplog
) -> None:
    labels = rsna_csv(rsna_dir, "labels")
    pos = labels[labels["Target"] == 1]
    counts = pos["patientId"].value_counts()
    multi, single = counts.index[counts >= 2][0], counts.index[counts == 1][0]
    first_multi = pos.index[pos["patientId"] == multi][0]
    labels.loc[first_multi, "x"] = np.nan  # one of two boxes lost: the image stays with the other
    labels.loc[pos.index[pos["patientId"] == single][0], "width"] = -5  # its only box: image dropped
    neg = labels[labels["Target"] == 0].iloc[[0]]
    classes = rsna_csv(rsna_dir, "classes")
    root = rsna_variant(
        rsna_dir, tmp_path, pd.concat([labels, neg]), pd.concat([classes, classes.iloc[[neg.index[0]]]])
    )
    with caplog.at_level(logging.WARNING, logger="cxr.data.rsna_labels"):
        table = read_annotations(root)
    text = caplog.text
    assert (
        "dropped 1 duplicate row(s)" in text and "dropped 1 Target=1 row(s) with a missing (NaN) box" in text
    )
    assert "dropped 1 box(es) with width or height <= 0" in text and "dropped 1 image(s)" in text
    assert len(table) == 23 and single not in set(table["patientId"])
    kept = table.set_index("patientId").loc[multi, "boxes"]
    assert kept.shape == (counts[multi] - 1, 4)
    with pytest.raises(ValueError, match=r"duplicate.*strict=True"):
        read_annotations(root, strict=True)


def test_unknown_patient_ids_both_ways(
    rsna_csv, rsna_variant, rsna_dir: Path, tmp_path: Path, caplog
) -> None:
    labels, classes = rsna_csv(rsna_dir, "labels"), rsna_csv(rsna_dir, "classes")
    positive = labels.loc[labels["Target"] == 1, "patientId"].iloc[0]
    classes = pd.concat(
        [
            classes[classes["patientId"] != positive],
            pd.DataFrame({"patientId": ["ghost"], "class": ["Normal"]}),
        ]
    )
    with caplog.at_level(logging.WARNING, logger="cxr.data.rsna_labels"):
        table = read_annotations(rsna_variant(rsna_dir, tmp_path, labels, classes))
    assert "ignored 1 patient id(s) absent from" in caplog.text
    assert "1 patient id(s) absent from" in caplog.text and "class taken from Target" in caplog.text
    assert "ghost" not in set(table["patientId"]) and len(table) == 24
    assert table.set_index("patientId").loc[positive, "class"] == "Lung Opacity"


def test_bad_class_name_and_target(rsna_csv, rsna_variant, rsna_dir: Path, tmp_path: Path) -> None:
    classes = rsna_csv(rsna_dir, "classes").replace({"Normal": "normal"})
    with pytest.raises(ValueError, match=r"detailed_class_info\.csv.*\['normal'\]"):
        read_annotations(rsna_variant(rsna_dir, tmp_path, classes=classes))
    labels = rsna_csv(rsna_dir, "labels")
    labels.loc[0, "Target"] = 2
    with pytest.raises(ValueError, match="Target must be 0 or 1"):
        read_annotations(rsna_variant(rsna_dir, tmp_path / "t", labels=labels))
