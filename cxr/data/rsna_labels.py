"""RSNA Pneumonia Detection Challenge label CSVs: the folder layout, reading and checking the two
label CSVs into one row per image, and patient-grouped, class-stratified cross-validation folds.

Expected layout (the Kaggle download, or :func:`cxr.synth.rsna.write_rsna`)::

    <data_dir>/stage_2_train_labels.csv          patientId,x,y,width,height,Target (one row per box)
    <data_dir>/stage_2_detailed_class_info.csv   patientId,class
    <data_dir>/stage_2_train_images/<patientId>.dcm
    <data_dir>/stage_2_test_images/<patientId>.dcm   (unlabelled; used by ``predict`` only)

Boxes in the CSV are x, y, width, height in original pixels; everywhere else they are x1 y1 x2 y2.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from cxr.data.safe_paths import is_plain_name

log = logging.getLogger(__name__)

CLASS_NAMES = ("Normal", "No Lung Opacity / Not Normal", "Lung Opacity")
LABEL_COLUMNS = ("patientId", "x", "y", "width", "height", "Target")
CLASS_COLUMNS = ("patientId", "class")
LABELS_CSV, CLASSES_CSV = "stage_2_train_labels.csv", "stage_2_detailed_class_info.csv"
TRAIN_DIR, TEST_DIR = "stage_2_train_images", "stage_2_test_images"
LAYOUT = (
    f"expected layout: <data_dir>/{LABELS_CSV}, <data_dir>/{CLASSES_CSV}, "
    f"<data_dir>/{TRAIN_DIR}/<patientId>.dcm, <data_dir>/{TEST_DIR}/<patientId>.dcm (predict only)"
)


def _problem(message: str, strict: bool) -> None:
    """Data problems are warnings with counts, or errors when ``strict``."""
    if strict:
        raise ValueError(f"{message} (strict=True)")
    log.warning(message)


def _require(path: Path) -> None:
    if not path.is_file():
        state = "is not a file" if path.exists() else "no such file"
        raise FileNotFoundError(
            f"{path}: {state}; expected the RSNA challenge layout ({LABELS_CSV}, {CLASSES_CSV}, {TRAIN_DIR}/)"
        )


def _read_csv(path: Path, columns: Sequence[str]) -> pd.DataFrame:
    _require(path)
    try:
        df = pd.read_csv(path, dtype={"patientId": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: cannot parse as CSV ({err})") from err
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(
            f"{path}: missing column(s) {missing}; expected {list(columns)} (extra columns are "
            f"ignored), found {list(df.columns)}"
        )
    return df[list(columns)]


def _lines(index: pd.Index, limit: int = 5) -> str:
    """CSV line numbers of data-frame rows (line 1 is the header), the first ``limit`` of them."""
    lines = [str(int(i) + 2) for i in index[:limit]]
    return ", ".join(lines) + (" ..." if len(index) > limit else "")


def _numeric(df: pd.DataFrame, path: Path, columns: Sequence[str], strict: bool) -> pd.DataFrame:
    """Columns as numbers; text such as "12px" becomes NaN with a warning naming the lines."""
    df = df.copy()
    for col in columns:
        values = pd.to_numeric(df[col], errors="coerce")
        bad = values.isna() & df[col].notna()
        if (n := int(bad.sum())) > 0:
            examples = sorted({str(v) for v in df.loc[bad, col]})[:3]
            _problem(
                f"{path}: {n} non-numeric value(s) in column {col!r}, e.g. {examples} (CSV line(s) "
                f"{_lines(df.index[bad])}); read as missing",
                strict,
            )
        df[col] = values
    return df


def read_annotations(data_dir: str | Path, strict: bool = False) -> pd.DataFrame:
    """Read and check both label CSVs.

    Returns:
        One row per image of the labels CSV, sorted by patientId, with columns ``patientId``,
        ``class`` (a :data:`CLASS_NAMES` entry), ``cls`` (its index) and ``boxes`` (float32 (N, 4)
        x1 y1 x2 y2 in original pixels, not yet clipped to the image; (0, 4) for negatives).

    Rows whose patientId is not a plain file name (``../x``, ``/abs``, ``a/b``: it names the image
    file, which must lie in the image folder) are refused. Duplicate rows, rows without a patientId, non-numeric coordinates, Target-1 rows without a
    complete box, boxes with width or height <= 0 and patient ids found in only one CSV are warned
    about with counts (errors when ``strict``). Images whose every
    box was invalid are dropped rather than kept as false negatives. Patients missing from the class
    CSV get "Lung Opacity" if they have boxes, else "No Lung Opacity / Not Normal".
    """
    data_dir = Path(data_dir)
    labels_csv, classes_csv = data_dir / LABELS_CSV, data_dir / CLASSES_CSV
    _require(labels_csv)
    _require(classes_csv)  # before any warning about the labels CSV
    labels = _read_csv(labels_csv, LABEL_COLUMNS)
    no_id = labels["patientId"].isna() | (labels["patientId"].astype(str).str.strip() == "")
    if (n := int(no_id.sum())) > 0:
        _problem(
            f"{labels_csv}: dropped {n} row(s) without a patientId (CSV line(s) {_lines(labels.index[no_id])})",
            strict,
        )
        labels = labels[~no_id]
    unsafe = pd.Series(
        [not is_plain_name(str(i)) for i in labels["patientId"]], index=labels.index, dtype=bool
    )
    if (n := int(unsafe.sum())) > 0:  # "../../x/evil" would read <data_dir>/../../x/evil.dcm
        examples = sorted(set(labels.loc[unsafe, "patientId"].astype(str)))[:3]
        _problem(
            f"{labels_csv}: refused {n} row(s) whose patientId is not a plain file name (path separator, "
            f"'..' or absolute path), e.g. {examples} (CSV line(s) {_lines(labels.index[unsafe])})",
            strict,
        )
        labels = labels[~unsafe]
    labels = _numeric(labels, labels_csv, ("x", "y", "width", "height", "Target"), strict)
    if labels.empty:
        raise ValueError(f"{labels_csv}: no labelled rows; {LAYOUT}")
    dup = labels.duplicated()
    if dup.any():
        _problem(f"{labels_csv}: dropped {int(dup.sum())} duplicate row(s)", strict)
        labels = labels[~dup]
    bad_target = ~labels["Target"].isin([0, 1])
    if bad_target.any():
        raise ValueError(
            f"{labels_csv}: Target must be 0 or 1; got {sorted(labels['Target'][bad_target].unique())}"
        )
    xywh = labels[["x", "y", "width", "height"]].to_numpy(np.float64)
    complete = np.isfinite(xywh).all(axis=1)
    positive = labels["Target"].to_numpy() == 1
    if (n := int((positive & ~complete).sum())) > 0:
        _problem(f"{labels_csv}: dropped {n} Target=1 row(s) with a missing (NaN) box", strict)
    if (n := int((~positive & complete).sum())) > 0:
        _problem(f"{labels_csv}: ignored the box of {n} Target=0 row(s)", strict)
    nonpositive = positive & complete & ((xywh[:, 2] <= 0) | (xywh[:, 3] <= 0))
    if (n := int(nonpositive.sum())) > 0:
        _problem(f"{labels_csv}: dropped {n} box(es) with width or height <= 0", strict)
    good = positive & complete & ~nonpositive
    xyxy = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1).astype(np.float32)
    ids = labels["patientId"].to_numpy()
    grouped: dict[str, list[np.ndarray]] = {}
    for pid, box in zip(ids[good], xyxy[good], strict=True):
        grouped.setdefault(pid, []).append(box)
    boxes = {pid: np.stack(b) for pid, b in grouped.items()}
    lost = sorted(set(ids[positive]) - set(boxes))
    if lost:
        _problem(
            f"{labels_csv}: dropped {len(lost)} image(s) whose every box was invalid, e.g. {lost[:3]}", strict
        )

    classes = _read_csv(classes_csv, CLASS_COLUMNS).drop_duplicates()  # one row per box is the norm
    unknown = sorted(set(classes["class"]) - set(CLASS_NAMES))
    if unknown:
        raise ValueError(f"{classes_csv}: unknown class name(s) {unknown}; expected {list(CLASS_NAMES)}")
    conflicting = classes["patientId"][classes["patientId"].duplicated()].unique()
    if len(conflicting):
        raise ValueError(
            f"{classes_csv}: {len(conflicting)} patient(s) with several classes, e.g. {list(conflicting[:3])}"
        )
    cls_of = dict(zip(classes["patientId"], classes["class"], strict=True))
    patients = sorted(set(ids) - set(lost))
    if (n := len(set(cls_of) - set(ids))) > 0:
        _problem(f"{classes_csv}: ignored {n} patient id(s) absent from {labels_csv}", strict)
    if (n := sum(p not in cls_of for p in patients)) > 0:
        _problem(
            f"{labels_csv}: {n} patient id(s) absent from {classes_csv}; class taken from Target", strict
        )
    empty = np.zeros((0, 4), np.float32)
    names = [cls_of.get(p, CLASS_NAMES[2] if p in boxes else CLASS_NAMES[1]) for p in patients]
    if (n := sum((c == CLASS_NAMES[2]) != (p in boxes) for p, c in zip(patients, names, strict=True))) > 0:
        _problem(
            f"{classes_csv}: {n} patient(s) whose class disagrees with having boxes in {labels_csv}", strict
        )
    return pd.DataFrame(
        {
            "patientId": patients,
            "class": names,
            "cls": [CLASS_NAMES.index(c) for c in names],
            "boxes": [boxes.get(p, empty) for p in patients],
        }
    )


def assign_folds(
    patient_ids: Sequence[str], labels: Sequence[int], n_folds: int = 4, seed: int = 0
) -> np.ndarray:
    """Fold index per patient (aligned with the input), grouped by patient and stratified on ``labels``.

    Patients are sorted by id before splitting, so the result depends only on the (id, label)
    pairs and the seed, never on file-system or CSV order.
    """
    ids = np.asarray(patient_ids, dtype=str)
    if len(set(ids)) != len(ids):
        raise ValueError("assign_folds: patient ids must be unique")
    order = np.argsort(ids, kind="stable")
    folds = np.full(len(ids), -1, np.int64)
    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    y = np.asarray(labels)[order]
    for k, (_, val) in enumerate(splitter.split(np.zeros(len(ids)), y, groups=ids[order])):
        folds[order[val]] = k
    return folds
