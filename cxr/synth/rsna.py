"""A synthetic RSNA Pneumonia Detection Challenge folder: same files, columns, DICOM encoding and
label proportions as the Kaggle download, with phantom radiographs whose opacities sit in the boxes.

Layout written by :func:`write_rsna`::

    <out>/stage_2_train_labels.csv           patientId,x,y,width,height,Target (one row per box;
                                              x, y, width, height empty and Target 0 for negatives)
    <out>/stage_2_detailed_class_info.csv    patientId,class (one row per label row, as in the real file)
    <out>/stage_2_train_images/<patientId>.dcm
    <out>/stage_2_test_images/<patientId>.dcm

Boxes are x (left), y (top), width, height in pixels of the ``size``×``size`` image, integers as in the
real labels. Proportions follow stage 2: 22.5% "Lung Opacity" (1 box 43%, 2 boxes 54%, 3–4 boxes 3%),
44% "No Lung Opacity / Not Normal", 33% "Normal"; box sides ~N(215, 60) × N(320, 140) px at 1024.
"""

from __future__ import annotations

import io
import shutil
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit, SecondaryCaptureImageStorage, generate_uid

from cxr.synth.phantom import chest_phantom, lung_boxes

CLASSES = ("Normal", "No Lung Opacity / Not Normal", "Lung Opacity")
LABELS_CSV = "stage_2_train_labels.csv"
CLASSES_CSV = "stage_2_detailed_class_info.csv"
TRAIN_DIR = "stage_2_train_images"
TEST_DIR = "stage_2_test_images"
_N_BOXES_P = (0.43, 0.54, 0.025, 0.005)  # P(1..4 boxes | Lung Opacity) in stage 2


def _class_plan(rng: np.random.Generator, n: int) -> list[str]:
    """Exact class counts (every class present from n=3 on), shuffled."""
    n_pos = max(1, round(0.225 * n)) if n >= 3 else 0
    n_abn = max(1, round(0.57 * (n - n_pos))) if n >= 3 else n
    plan = ["Lung Opacity"] * n_pos + ["No Lung Opacity / Not Normal"] * n_abn
    plan += ["Normal"] * (n - len(plan))
    return [plan[i] for i in rng.permutation(n)]


def _sample_boxes(rng: np.random.Generator, size: int) -> list[tuple[int, int, int, int]]:
    """1–4 boxes (x, y, width, height), each inside one lung field; boxes sharing a lung stack vertically."""
    k = int(rng.choice(4, p=_N_BOXES_P)) + 1
    scale = size / 1024
    inset = 0.015 * size  # the phantom shifts its lungs by up to 3% of the side; stay mostly inside
    lungs = [(x1 + inset, y1 + inset, x2 - inset, y2 - inset) for x1, y1, x2, y2 in lung_boxes(size, size)]
    first = int(rng.integers(2))
    sides = [(first + i) % 2 for i in range(k)]
    boxes = []
    for side in (0, 1):
        m = sides.count(side)
        lx1, ly1, lx2, ly2 = lungs[side]
        slot_h = (ly2 - ly1) / max(m, 1)
        for j in range(m):
            w = float(np.clip(rng.normal(215, 60) * scale, 40 * scale, 0.95 * (lx2 - lx1)))
            h = float(np.clip(rng.normal(320, 140) * scale, 40 * scale, 0.95 * slot_h))
            x = rng.uniform(lx1, lx2 - w)
            y = rng.uniform(ly1 + j * slot_h, ly1 + (j + 1) * slot_h - h)
            boxes.append((int(np.ceil(x)), int(np.ceil(y)), int(w), int(h)))
    return boxes


def _write_dicom(
    path: Path,
    image: np.ndarray,
    patient_id: str,
    view: str,
    sex: str,
    age: int,
    compressed: bool,
    monochrome1: bool,
) -> None:
    """8-bit CR file like the challenge's (Secondary Capture, JPEG Baseline) or uncompressed/MONOCHROME1."""
    stored = 255 - image if monochrome1 else image
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[patient_id, "sop"])
    meta.TransferSyntaxUID = JPEGBaseline8Bit if compressed else ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyDate, ds.StudyTime = "19010101", "000000.00"
    ds.Modality, ds.ConversionType = "CR", "WSD"
    ds.SeriesDescription = f"view: {view}"
    ds.PatientName = ds.PatientID = patient_id
    ds.PatientSex, ds.PatientAge = sex, f"{age:03d}Y"
    ds.BodyPartExamined, ds.ViewPosition = "CHEST", view
    ds.StudyInstanceUID = generate_uid(entropy_srcs=[patient_id, "study"])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=[patient_id, "series"])
    ds.SeriesNumber, ds.InstanceNumber = 1, 1
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME1" if monochrome1 else "MONOCHROME2"
    ds.Rows, ds.Columns = image.shape
    ds.PixelSpacing = [round(0.168 * 1024 / image.shape[0], 4)] * 2
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    if compressed:
        buf = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(stored, np.uint8)).save(buf, format="JPEG", quality=90)
        ds.LossyImageCompression, ds.LossyImageCompressionMethod = "01", "ISO_10918_1"
        ds.PixelData = encapsulate([buf.getvalue()])
        ds["PixelData"].VR = "OB"
    else:
        ds.PixelData = np.ascontiguousarray(stored, np.uint8).tobytes()
        ds["PixelData"].VR = "OW"
    ds.save_as(path, enforce_file_format=True)


def _image_for(rng: np.random.Generator, cls: str, boxes, size: int) -> np.ndarray:
    if cls == "Lung Opacity":
        xyxy = [(x, y, x + w, y + h) for x, y, w, h in boxes]
        return chest_phantom(rng, size, size, opacities=xyxy, opacity_strength=float(rng.uniform(0.3, 0.5)))
    if cls == "No Lung Opacity / Not Normal":  # a faint diffuse haze over one lung: abnormal, no opacity
        lung = lung_boxes(size, size)[int(rng.integers(2))]
        return chest_phantom(rng, size, size, opacities=[lung], opacity_strength=0.1)
    return chest_phantom(rng, size, size)


def write_rsna(
    out: str | Path, n: int = 40, seed: int = 0, size: int = 1024, n_test: int = 4, overwrite: bool = False
) -> Path:
    """Write a synthetic challenge folder with ``n`` labelled and ``n_test`` unlabelled images.

    About 10% of the training files are stored uncompressed (Explicit VR Little Endian) and another
    10% as MONOCHROME1 (inverted stored values); the rest, and all test files, are JPEG Baseline
    MONOCHROME2 like the real ones. Everything depends only on ``seed``.

    Raises:
        FileExistsError: ``out`` already holds a labels CSV and ``overwrite`` is False.
    """
    if n < 1 or n_test < 0 or size < 64:
        raise ValueError(f"need n >= 1, n_test >= 0 and size >= 64, got n={n}, n_test={n_test}, size={size}")
    out = Path(out)
    if (out / LABELS_CSV).exists():
        if not overwrite:
            raise FileExistsError(f"{out / LABELS_CSV} exists; pass overwrite=True to replace the dataset")
        for sub in (TRAIN_DIR, TEST_DIR):
            shutil.rmtree(out / sub, ignore_errors=True)
    for sub in (TRAIN_DIR, TEST_DIR):
        (out / sub).mkdir(parents=True, exist_ok=True)

    rng = np.random.default_rng(seed)
    ids = [str(uuid.UUID(bytes=rng.bytes(16), version=4)) for _ in range(n + n_test)]
    classes = _class_plan(rng, n) + [CLASSES[int(c)] for c in rng.integers(3, size=n_test)]
    n_special = max(1, round(0.1 * n)) if n >= 2 else 0
    order = rng.permutation(n)
    uncompressed, mono1 = set(order[:n_special].tolist()), set(order[n_special : 2 * n_special].tolist())

    label_rows, class_rows = [], []
    for i, (pid, cls) in enumerate(zip(ids, classes, strict=True)):
        img_rng = np.random.default_rng([seed, i])
        boxes = _sample_boxes(img_rng, size) if cls == "Lung Opacity" else []
        image = _image_for(img_rng, cls, boxes, size)
        test = i >= n
        _write_dicom(
            out / (TEST_DIR if test else TRAIN_DIR) / f"{pid}.dcm",
            image,
            pid,
            view=str(img_rng.choice(["PA", "AP"])),
            sex=str(img_rng.choice(["M", "F"])),
            age=int(img_rng.integers(1, 90)),
            compressed=test or i not in uncompressed,
            monochrome1=not test and i in mono1,
        )
        if test:
            continue
        rows = [(pid, float(x), float(y), float(w), float(h), 1) for x, y, w, h in boxes]
        rows = rows or [(pid, np.nan, np.nan, np.nan, np.nan, 0)]
        label_rows += rows
        class_rows += [(pid, cls)] * len(rows)

    pd.DataFrame(label_rows, columns=["patientId", "x", "y", "width", "height", "Target"]).to_csv(
        out / LABELS_CSV, index=False
    )
    pd.DataFrame(class_rows, columns=["patientId", "class"]).to_csv(out / CLASSES_CSV, index=False)
    return out
