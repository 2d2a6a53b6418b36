"""RSNA Pneumonia Detection Challenge: label loading, cross-validation folds, the detection
datamodule and Kaggle submission files.

Expected layout (the Kaggle download, or :func:`cxr.synth.rsna.write_rsna`)::

    <data_dir>/stage_2_train_labels.csv          patientId,x,y,width,height,Target (one row per box)
    <data_dir>/stage_2_detailed_class_info.csv   patientId,class
    <data_dir>/stage_2_train_images/<patientId>.dcm
    <data_dir>/stage_2_test_images/<patientId>.dcm   (unlabelled; used by ``predict`` only)

Boxes in the CSV are x, y, width, height in original pixels; everywhere else they are x1 y1 x2 y2.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch
from sklearn.model_selection import StratifiedGroupKFold
from torch.utils.data import DataLoader, Dataset

from cxr.data.cache import build_cache
from cxr.data.dicom import DicomReadError, read_dicom
from cxr.data.resumable import EpochSampler, ResumableLoader, seed_augmentation, split_key
from cxr.data.transforms import DEFAULT_MEAN, DEFAULT_STD, RadiographTransform

log = logging.getLogger(__name__)

CLASS_NAMES = ("Normal", "No Lung Opacity / Not Normal", "Lung Opacity")
LABEL_COLUMNS = ("patientId", "x", "y", "width", "height", "Target")
CLASS_COLUMNS = ("patientId", "class")
LABELS_CSV, CLASSES_CSV = "stage_2_train_labels.csv", "stage_2_detailed_class_info.csv"
TRAIN_DIR, TEST_DIR = "stage_2_train_images", "stage_2_test_images"
LAYOUT = (f"expected layout: <data_dir>/{LABELS_CSV}, <data_dir>/{CLASSES_CSV}, "
          f"<data_dir>/{TRAIN_DIR}/<patientId>.dcm, <data_dir>/{TEST_DIR}/<patientId>.dcm (predict only)")


def _problem(message: str, strict: bool) -> None:
    """Data problems are warnings with counts, or errors when ``strict``."""
    if strict:
        raise ValueError(f"{message} (strict=True)")
    log.warning(message)


def _read_csv(path: Path, columns: Sequence[str]) -> pd.DataFrame:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file; expected the RSNA challenge layout ({LABELS_CSV}, "
                                f"{CLASSES_CSV}, {TRAIN_DIR}/)")
    try:
        df = pd.read_csv(path, dtype={"patientId": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: cannot parse as CSV ({err})") from err
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; expected {list(columns)} (extra columns are "
                         f"ignored), found {list(df.columns)}")
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
            _problem(f"{path}: {n} non-numeric value(s) in column {col!r}, e.g. {examples} (CSV line(s) "
                     f"{_lines(df.index[bad])}); read as missing", strict)
        df[col] = values
    return df


def read_annotations(data_dir: str | Path, strict: bool = False) -> pd.DataFrame:
    """Read and check both label CSVs.

    Returns:
        One row per image of the labels CSV, sorted by patientId, with columns ``patientId``,
        ``class`` (a :data:`CLASS_NAMES` entry), ``cls`` (its index) and ``boxes`` (float32 (N, 4)
        x1 y1 x2 y2 in original pixels, not yet clipped to the image; (0, 4) for negatives).

    Duplicate rows, rows without a patientId, non-numeric coordinates, Target-1 rows without a
    complete box, boxes with width or height <= 0 and patient ids found in only one CSV are warned
    about with counts (errors when ``strict``). Images whose every
    box was invalid are dropped rather than kept as false negatives. Patients missing from the class
    CSV get "Lung Opacity" if they have boxes, else "No Lung Opacity / Not Normal".
    """
    data_dir = Path(data_dir)
    labels_csv, classes_csv = data_dir / LABELS_CSV, data_dir / CLASSES_CSV
    labels = _read_csv(labels_csv, LABEL_COLUMNS)
    no_id = labels["patientId"].isna() | (labels["patientId"].astype(str).str.strip() == "")
    if (n := int(no_id.sum())) > 0:
        _problem(f"{labels_csv}: dropped {n} row(s) without a patientId (CSV line(s) {_lines(labels.index[no_id])})",
                 strict)
        labels = labels[~no_id]
    labels = _numeric(labels, labels_csv, ("x", "y", "width", "height", "Target"), strict)
    if labels.empty:
        raise ValueError(f"{labels_csv}: no labelled rows; {LAYOUT}")
    dup = labels.duplicated()
    if dup.any():
        _problem(f"{labels_csv}: dropped {int(dup.sum())} duplicate row(s)", strict)
        labels = labels[~dup]
    bad_target = ~labels["Target"].isin([0, 1])
    if bad_target.any():
        raise ValueError(f"{labels_csv}: Target must be 0 or 1; got {sorted(labels['Target'][bad_target].unique())}")
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
        _problem(f"{labels_csv}: dropped {len(lost)} image(s) whose every box was invalid, e.g. {lost[:3]}", strict)

    classes = _read_csv(classes_csv, CLASS_COLUMNS).drop_duplicates()  # one row per box is the norm
    unknown = sorted(set(classes["class"]) - set(CLASS_NAMES))
    if unknown:
        raise ValueError(f"{classes_csv}: unknown class name(s) {unknown}; expected {list(CLASS_NAMES)}")
    conflicting = classes["patientId"][classes["patientId"].duplicated()].unique()
    if len(conflicting):
        raise ValueError(f"{classes_csv}: {len(conflicting)} patient(s) with several classes, e.g. "
                         f"{list(conflicting[:3])}")
    cls_of = dict(zip(classes["patientId"], classes["class"], strict=True))
    patients = sorted(set(ids) - set(lost))
    if (n := len(set(cls_of) - set(ids))) > 0:
        _problem(f"{classes_csv}: ignored {n} patient id(s) absent from {labels_csv}", strict)
    if (n := sum(p not in cls_of for p in patients)) > 0:
        _problem(f"{labels_csv}: {n} patient id(s) absent from {classes_csv}; class taken from Target", strict)
    empty = np.zeros((0, 4), np.float32)
    names = [cls_of.get(p, CLASS_NAMES[2] if p in boxes else CLASS_NAMES[1]) for p in patients]
    if (n := sum((c == CLASS_NAMES[2]) != (p in boxes) for p, c in zip(patients, names, strict=True))) > 0:
        _problem(f"{classes_csv}: {n} patient(s) whose class disagrees with having boxes in {labels_csv}", strict)
    return pd.DataFrame({"patientId": patients, "class": names, "cls": [CLASS_NAMES.index(c) for c in names],
                         "boxes": [boxes.get(p, empty) for p in patients]})


def assign_folds(patient_ids: Sequence[str], labels: Sequence[int], n_folds: int = 4, seed: int = 0) -> np.ndarray:
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


def clip_boxes(boxes: np.ndarray, height: int, width: int) -> tuple[np.ndarray, int, int]:
    """Clip x1 y1 x2 y2 boxes to the image; returns (kept boxes, number clipped, number dropped outside)."""
    clipped = boxes.copy()
    clipped[:, [0, 2]] = clipped[:, [0, 2]].clip(0, width)
    clipped[:, [1, 3]] = clipped[:, [1, 3]].clip(0, height)
    inside = (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
    changed = (clipped != boxes).any(axis=1) & inside
    return clipped[inside], int(changed.sum()), int((~inside).sum())


def _scale(boxes, orig_size, image_size: int, inverse: bool):
    h, w = (float(v) for v in orig_size)
    fx, fy = (w / image_size, h / image_size) if inverse else (image_size / w, image_size / h)
    if isinstance(boxes, torch.Tensor):
        return boxes * boxes.new_tensor([fx, fy, fx, fy])
    return np.asarray(boxes, np.float32) * np.array([fx, fy, fx, fy], np.float32)


def scale_boxes(boxes, orig_size, image_size: int):
    """x1 y1 x2 y2 boxes from original pixels (orig_size = (H, W)) to the S×S network input; tensor or array."""
    return _scale(boxes, orig_size, image_size, inverse=False)


def to_original(boxes, orig_size, image_size: int):
    """Inverse of :func:`scale_boxes`: network-input boxes back to original pixels."""
    return _scale(boxes, orig_size, image_size, inverse=True)


class RSNADetectionDataset(Dataset):
    """Samples as dicts: ``image`` float32 (1, S, S) normalised, ``boxes`` float32 (N, 4) x1 y1 x2 y2 in
    S×S pixels, ``cls`` int (-1 when unlabelled), ``orig_size`` int64 (2,) (H, W), ``patient_id`` str and
    ``index`` int (row in the datamodule's table, stable across splits)."""

    def __init__(self, images: np.ndarray, rows: Sequence[int], boxes: Sequence[np.ndarray], cls: Sequence[int],
                 orig_sizes: np.ndarray, patient_ids: Sequence[str], transform: RadiographTransform) -> None:
        self.images, self.images_file = images, getattr(images, "filename", None)
        self.rows, self.boxes, self.cls = list(rows), list(boxes), list(cls)
        self.orig_sizes, self.patient_ids, self.transform = orig_sizes, list(patient_ids), transform

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        if self.images_file is not None:  # workers re-open the memory map rather than unpickle a copy
            state["images"] = None
        return state

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        i, seed = split_key(key)  # (i, seed) from EpochSampler seeds this sample's augmentation
        if self.images is None:
            self.images = np.load(self.images_file, mmap_mode="r")
        row = self.rows[i]
        seed_augmentation(self.transform, seed)
        image, boxes = self.transform(np.array(self.images[row]), self.boxes[row])  # copy: the map is read-only
        return {"image": image, "boxes": torch.from_numpy(boxes), "cls": int(self.cls[row]),
                "orig_size": torch.as_tensor(self.orig_sizes[row], dtype=torch.int64),
                "patient_id": self.patient_ids[row], "index": row}


def collate_detection(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack images; keep boxes as a list of (N_i, 4) tensors (the detection batch contract)."""
    return {"image": torch.stack([s["image"] for s in samples]),
            "boxes": [s["boxes"] for s in samples],
            "cls": torch.tensor([s["cls"] for s in samples], dtype=torch.int64),
            "orig_size": torch.stack([s["orig_size"] for s in samples]),
            "patient_id": [s["patient_id"] for s in samples],
            "index": torch.tensor([s["index"] for s in samples], dtype=torch.int64)}


class RSNADataModule(pl.LightningDataModule):
    """RSNA lung-opacity detection with patient-grouped, class-stratified k-fold cross-validation.

    Images are decoded once (:func:`read_dicom`) into an ``image_size``² uint8 cache; boxes are clipped
    to the original image and scaled by S/W, S/H. ``fold`` is the validation fold, the rest train.
    The challenge's test images have no labels, so ``test`` evaluates the validation fold and
    ``predict`` runs on ``stage_2_test_images`` (``cls`` = -1, no boxes). Images without boxes are kept.
    The train loader drops a last incomplete batch (batch-norm cannot train on one sample); its order
    and augmentation follow (training seed, epoch), so runs repeat and resume mid-epoch exactly.
    Listed images that are missing or cannot be decoded are left out with a warning naming each file
    and a count (an error when ``strict``); none of them existing is an error about the layout.
    """

    num_classes = 3
    class_names = CLASS_NAMES

    def __init__(self, data_dir: str | Path, image_size: int = 512, batch_size: int = 8, num_workers: int = 0,
                 fold: int = 0, n_folds: int = 4, seed: int = 0, augment: Sequence = (),
                 mean: float = DEFAULT_MEAN, std: float = DEFAULT_STD, cache_dir: str | Path | None = None,
                 strict: bool = False, pin_memory: bool = False) -> None:
        super().__init__()
        if n_folds < 2 or not 0 <= fold < n_folds:
            raise ValueError(f"need n_folds >= 2 and 0 <= fold < n_folds, got fold={fold}, n_folds={n_folds}")
        if image_size < 1 or batch_size < 1:
            raise ValueError(f"image_size and batch_size must be positive, got {image_size}, {batch_size}")
        self.data_dir, self.image_size, self.batch_size = Path(data_dir), int(image_size), int(batch_size)
        self.num_workers, self.fold, self.n_folds, self.seed = int(num_workers), int(fold), int(n_folds), int(seed)
        self.train_transform = RadiographTransform(augment, mean, std)
        self.eval_transform = RadiographTransform((), mean, std)
        self.cache_dir, self.strict, self.pin_memory = cache_dir, bool(strict), bool(pin_memory)
        self._table: pd.DataFrame | None = None
        self.train_set = self.val_set = self.predict_set = None

    @property
    def folds(self) -> pd.DataFrame:
        """Per image, sorted by id: patientId, class, cls, boxes (original pixels), n_boxes, fold."""
        if self._table is None:
            table = read_annotations(self.data_dir, strict=self.strict)
            table["n_boxes"] = [len(b) for b in table["boxes"]]
            table["fold"] = assign_folds(table["patientId"], table["cls"], self.n_folds, self.seed)
            self._table = table
        return self._table

    @property
    def val_patients(self) -> list[str]:
        """Patients assigned to the validation fold (``val_set`` lacks those whose image is unreadable)."""
        return self.folds.loc[self.folds["fold"] == self.fold, "patientId"].tolist()

    def _decode(self, paths: list[Path], source: Path, desc: str):
        """Decode into the cache; ``cached.errors`` holds the rows left out (missing or undecodable files)."""
        if paths and not any(p.is_file() for p in paths):
            raise FileNotFoundError(f"none of the {len(paths)} image(s) listed in {source} exist, e.g. {paths[0]}; "
                                    f"{LAYOUT}")
        cached = build_cache(paths, read_dicom, self.image_size, self.cache_dir, self.num_workers, desc=desc)
        if not cached.errors:
            return cached
        messages = [cached.errors[i] for i in sorted(cached.errors)]
        summary = f"{len(messages)} of {len(paths)} image(s) listed in {source} are missing or cannot be decoded"
        if self.strict or len(messages) == len(paths):
            more = " ..." if len(messages) > 5 else ""
            raise DicomReadError(f"{summary}{' (strict=True)' if self.strict else ''}: "
                                 + "; ".join(messages[:5]) + more)
        for message in messages:
            log.warning("skipping image: %s", message)
        log.warning("%s; left out", summary)
        return cached

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit", "validate", "test") and self.train_set is None:
            table = self.folds
            cached = self._decode([self.data_dir / TRAIN_DIR / f"{p}.dcm" for p in table["patientId"]],
                                  self.data_dir / LABELS_CSV, "RSNA train")
            ok = np.ones(len(table), bool)
            ok[list(cached.errors)] = False
            boxes, n_clipped, n_outside = [], 0, 0
            for b, (h, w), usable in zip(table["boxes"], cached.orig_sizes, ok, strict=True):
                if not usable:  # not decoded: no size to clip to; the row is left out below
                    boxes.append(np.zeros((0, 4), np.float32))
                    continue
                b, c, o = clip_boxes(b, int(h), int(w))
                boxes.append(scale_boxes(b, (h, w), self.image_size))
                n_clipped, n_outside = n_clipped + c, n_outside + o
            if n_clipped or n_outside:
                _problem(f"{self.data_dir / LABELS_CSV}: clipped {n_clipped} box(es) partly outside their image, "
                         f"dropped {n_outside} entirely outside", self.strict)
            is_val = (table["fold"] == self.fold).to_numpy()
            common = (boxes, table["cls"].tolist(), cached.orig_sizes, table["patientId"].tolist())
            self.train_set = RSNADetectionDataset(cached.images, np.flatnonzero(~is_val & ok), *common,
                                                  self.train_transform)
            self.val_set = RSNADetectionDataset(cached.images, np.flatnonzero(is_val & ok), *common,
                                                self.eval_transform)
        if stage in (None, "predict") and self.predict_set is None:
            paths = sorted((self.data_dir / TEST_DIR).glob("*.dcm"))
            if not paths:
                raise FileNotFoundError(f"{self.data_dir / TEST_DIR}: no .dcm files to predict on")
            cached = self._decode(paths, self.data_dir / TEST_DIR, "RSNA test")
            readable = [i for i in range(len(paths)) if i not in cached.errors]
            self.predict_set = RSNADetectionDataset(
                cached.images, readable, [np.zeros((0, 4), np.float32)] * len(paths), [-1] * len(paths),
                cached.orig_sizes, [p.stem for p in paths], self.eval_transform)

    def _loader(self, dataset, shuffle: bool) -> DataLoader:
        if dataset is None:
            raise RuntimeError("RSNADataModule: call setup() before asking for a dataloader")
        common = {"batch_size": self.batch_size, "num_workers": self.num_workers, "collate_fn": collate_detection,
                  "pin_memory": self.pin_memory, "persistent_workers": self.num_workers > 0}
        if not shuffle:
            return DataLoader(dataset, shuffle=False, **common)
        # order and augmentation follow (training seed, epoch) only: runs repeat and resume exactly
        return ResumableLoader(dataset, EpochSampler(len(dataset), torch.initial_seed()),
                               drop_last=len(dataset) > self.batch_size, **common)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.predict_set, shuffle=False)


def _numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def write_submission(predictions: Mapping[str, Mapping[str, Any]], path: str | Path) -> Path:
    """Write a Kaggle submission: ``patientId,PredictionString``.

    ``predictions[patientId]`` holds ``boxes`` (N, 4) x1 y1 x2 y2 in original pixels and ``scores`` (N,).
    PredictionString is "score x y width height" groups (score 4 decimals, coordinates 1 decimal) by
    descending score; empty when N = 0. Every test patient must be in ``predictions``.
    """
    rows = []
    for pid, pred in predictions.items():
        boxes = _numpy(pred["boxes"]).astype(np.float64).reshape(-1, 4)
        scores = _numpy(pred["scores"]).astype(np.float64).reshape(-1)
        if len(boxes) != len(scores) or not (np.isfinite(boxes).all() and np.isfinite(scores).all()):
            raise ValueError(f"{pid}: need finite boxes (N, 4) and scores (N,), got {boxes.shape}, {scores.shape}")
        groups = [f"{scores[i]:.4f} {x1:.1f} {y1:.1f} {x2 - x1:.1f} {y2 - y1:.1f}"
                  for i in np.argsort(-scores, kind="stable") for x1, y1, x2, y2 in [boxes[i]]]
        rows.append((pid, " ".join(groups)))
    path = Path(path)
    pd.DataFrame(rows, columns=["patientId", "PredictionString"]).to_csv(path, index=False)
    return path


def read_submission(path: str | Path) -> dict[str, dict[str, np.ndarray]]:
    """Inverse of :func:`write_submission`: {patientId: {"boxes": float32 (N, 4) x1y1x2y2, "scores": float32 (N,)}}."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    df = _read_csv(path, ("patientId", "PredictionString"))
    out = {}
    for pid, text in zip(df["patientId"], df["PredictionString"], strict=True):
        try:
            values = np.array([] if pd.isna(text) else str(text).split(), np.float32)  # empty cell: no boxes
        except ValueError:
            raise ValueError(f"{path}: PredictionString of {pid} is not numbers: {str(text)[:80]!r}") from None
        if len(values) % 5:
            raise ValueError(f"{path}: PredictionString of {pid} has {len(values)} numbers, not groups of 5")
        values = values.reshape(-1, 5)
        xyxy = np.concatenate([values[:, 1:3], values[:, 1:3] + values[:, 3:5]], axis=1)
        out[pid] = {"boxes": xyxy, "scores": values[:, 0].copy()}
    return out
