"""write_rsna: the challenge layout, label semantics, DICOM encodings, boxes on opacities, determinism."""

from __future__ import annotations

import filecmp
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest

from cxr.data.dicom import read_dicom
from cxr.synth.phantom import lung_boxes
from cxr.synth.rsna import CLASSES, write_rsna


def _labels(root: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    return pd.read_csv(root / "stage_2_train_labels.csv"), pd.read_csv(
        root / "stage_2_detailed_class_info.csv"
    )


def test_layout_and_csv_semantics(rsna_dir: Path) -> None:
    labels, classes = _labels(rsna_dir)
    assert list(labels.columns) == ["patientId", "x", "y", "width", "height", "Target"]
    assert list(classes.columns) == ["patientId", "class"]
    assert labels["Target"].dtype == np.int64 and labels["x"].dtype == np.float64
    # one class row per label row, same patients in the same order, as in the real files
    assert classes["patientId"].tolist() == labels["patientId"].tolist()
    assert set(classes["class"]) == set(CLASSES)
    merged = labels.assign(cls=classes["class"])
    pos, neg = merged[merged["Target"] == 1], merged[merged["Target"] == 0]
    assert (pos["cls"] == "Lung Opacity").all() and (neg["cls"] != "Lung Opacity").all()
    assert neg[["x", "y", "width", "height"]].isna().all().all() and not neg["patientId"].duplicated().any()
    assert (
        pos[["x", "y", "width", "height"]].notna().all().all() and (pos[["width", "height"]] > 0).all().all()
    )
    assert (pos[["x", "y", "width", "height"]] % 1 == 0).all().all()  # integer pixels like the real labels
    assert pos.groupby("patientId").size().between(1, 4).all()
    patients = set(labels["patientId"])
    assert {p.stem for p in (rsna_dir / "stage_2_train_images").glob("*.dcm")} == patients and len(
        patients
    ) == 24
    tests = list((rsna_dir / "stage_2_test_images").glob("*.dcm"))
    assert len(tests) == 3 and not patients & {p.stem for p in tests}
    for pid in patients:  # UUID-like
        assert [len(part) for part in pid.split("-")] == [8, 4, 4, 4, 12]


def test_dicom_encodings_and_read_back(rsna_dir: Path) -> None:
    kinds = []
    for path in sorted((rsna_dir / "stage_2_train_images").glob("*.dcm")):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        assert ds.PatientID == path.stem and ds.Modality == "CR" and (ds.Rows, ds.Columns) == (256, 256)
        assert ds.BitsAllocated == 8 and ds.SamplesPerPixel == 1
        kinds.append((ds.file_meta.TransferSyntaxUID, ds.PhotometricInterpretation))
        img = read_dicom(path)
        assert img.shape == (256, 256) and img.dtype == np.float32 and 0 <= img.min() <= img.max() <= 1
        corners = img[:24, :24].mean() + img[:24, -24:].mean()
        assert corners / 2 < img[100:156, 120:136].mean()  # air dark whatever the encoding
    jpeg = sum(t == "1.2.840.10008.1.2.4.50" for t, _ in kinds)
    assert jpeg >= 0.7 * len(kinds)
    assert ("1.2.840.10008.1.2.1", "MONOCHROME2") in kinds
    assert any(p == "MONOCHROME1" for _, p in kinds)


def test_boxes_in_lungs_and_on_opacities(rsna_dir: Path) -> None:
    labels, classes = _labels(rsna_dir)
    pos = labels[labels["Target"] == 1]
    lungs = lung_boxes(256, 256)
    for r in pos.itertuples():
        x1, y1, x2, y2 = r.x, r.y, r.x + r.width, r.y + r.height
        assert any(lx1 <= x1 and ly1 <= y1 and x2 <= lx2 and y2 <= ly2 for lx1, ly1, lx2, ly2 in lungs), r
    normals = classes.loc[classes["class"] == "Normal", "patientId"].unique()
    normal_imgs = [read_dicom(rsna_dir / "stage_2_train_images" / f"{p}.dcm") for p in normals]
    brighter = []
    for r in pos.itertuples():
        sl = np.s_[int(r.y) : int(r.y + r.height), int(r.x) : int(r.x + r.width)]
        inside = read_dicom(rsna_dir / "stage_2_train_images" / f"{r.patientId}.dcm")[sl].mean()
        brighter.append(inside > np.mean([im[sl].mean() for im in normal_imgs]) + 0.05)
    assert all(brighter)


def test_proportions_and_box_sizes(tmp_path: Path) -> None:
    root = write_rsna(tmp_path / "big", n=200, seed=3, size=64, n_test=0)
    labels, classes = _labels(root)
    per_patient = classes.drop_duplicates()["class"].value_counts(normalize=True)
    assert per_patient["Lung Opacity"] == pytest.approx(0.225, abs=0.01)
    assert per_patient["No Lung Opacity / Not Normal"] == pytest.approx(0.44, abs=0.03)
    assert per_patient["Normal"] == pytest.approx(0.335, abs=0.03)
    n_boxes = labels[labels["Target"] == 1].groupby("patientId").size()
    assert n_boxes.isin([1, 2]).mean() >= 0.85
    sides = labels.loc[labels["Target"] == 1, ["width", "height"]] * (1024 / 64)  # in 1024-px units
    assert 150 <= sides["width"].median() <= 300 and 150 <= sides["height"].median() <= 400
    assert sides.min().min() >= 32  # ~40 px at 1024, less integer truncation at 64 px


def test_deterministic_and_seeded(tmp_path: Path) -> None:
    a = write_rsna(tmp_path / "a", n=6, seed=7, size=64, n_test=1)
    b = write_rsna(tmp_path / "b", n=6, seed=7, size=64, n_test=1)
    c = write_rsna(tmp_path / "c", n=6, seed=8, size=64, n_test=1)
    for name in ("stage_2_train_labels.csv", "stage_2_detailed_class_info.csv"):
        assert (a / name).read_bytes() == (b / name).read_bytes()
    files = sorted(p.relative_to(a) for p in a.rglob("*.dcm"))
    assert files == sorted(p.relative_to(b) for p in b.rglob("*.dcm"))
    assert all(filecmp.cmp(a / f, b / f, shallow=False) for f in files)
    assert set(_labels(a)[0]["patientId"]).isdisjoint(_labels(c)[0]["patientId"])


def test_refuses_to_overwrite(tmp_path: Path) -> None:
    write_rsna(tmp_path, n=3, size=64, n_test=1)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        write_rsna(tmp_path, n=3, size=64)
    write_rsna(tmp_path, n=2, size=64, n_test=0, overwrite=True)
    assert len(list((tmp_path / "stage_2_train_images").glob("*.dcm"))) == 2
    assert not list((tmp_path / "stage_2_test_images").glob("*.dcm"))
