"""RSNA Pneumonia Detection Challenge detection dataset and datamodule: decoded images with boxes
scaled to the network input, the detection collate function and k-fold cross-validation splits.

The folder layout and the label CSVs are in :mod:`cxr.data.rsna_labels`, box frames in
:mod:`cxr.data.boxes`, Kaggle submission files in :mod:`cxr.inference.submission`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from cxr.data.boxes import clip_boxes, scale_boxes
from cxr.data.cache import build_cache
from cxr.data.dicom import DicomReadError, read_dicom
from cxr.data.leakage import check_leakage
from cxr.data.resumable import EpochSampler, ResumableLoader, seed_augmentation, split_key
from cxr.data.rsna_labels import (
    CLASS_NAMES,
    LABELS_CSV,
    LAYOUT,
    TEST_DIR,
    TRAIN_DIR,
    _problem,
    assign_folds,
    read_annotations,
)
from cxr.data.safe_paths import is_plain_name, warn_escaping
from cxr.data.transforms import DEFAULT_MEAN, DEFAULT_STD, RadiographTransform

log = logging.getLogger(__name__)


class RSNADetectionDataset(Dataset):
    """Samples as dicts: ``image`` float32 (1, S, S) normalised, ``boxes`` float32 (N, 4) x1 y1 x2 y2 in
    S×S pixels, ``cls`` int (-1 when unlabelled), ``orig_size`` int64 (2,) (H, W), ``patient_id`` str and
    ``index`` int (row in the datamodule's table, stable across splits)."""

    def __init__(
        self,
        images: np.ndarray,
        rows: Sequence[int],
        boxes: Sequence[np.ndarray],
        cls: Sequence[int],
        orig_sizes: np.ndarray,
        patient_ids: Sequence[str],
        transform: RadiographTransform,
    ) -> None:
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
        image, boxes = self.transform(
            np.array(self.images[row]), self.boxes[row]
        )  # copy: the map is read-only
        return {
            "image": image,
            "boxes": torch.from_numpy(boxes),
            "cls": int(self.cls[row]),
            "orig_size": torch.as_tensor(self.orig_sizes[row], dtype=torch.int64),
            "patient_id": self.patient_ids[row],
            "index": row,
        }


def collate_detection(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack images; keep boxes as a list of (N_i, 4) tensors (the detection batch contract)."""
    return {
        "image": torch.stack([s["image"] for s in samples]),
        "boxes": [s["boxes"] for s in samples],
        "cls": torch.tensor([s["cls"] for s in samples], dtype=torch.int64),
        "orig_size": torch.stack([s["orig_size"] for s in samples]),
        "patient_id": [s["patient_id"] for s in samples],
        "index": torch.tensor([s["index"] for s in samples], dtype=torch.int64),
    }


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
    A patientId that is not a plain file name is refused (:func:`~cxr.data.rsna_labels.read_annotations`),
    images that resolve outside ``data_dir`` through symbolic links are read with a warning, and
    byte-identical images in the train and validation folds are warned about (errors when ``strict``).
    """

    LAYOUT: ClassVar[str] = LAYOUT  # the expected folder layout, quoted by config errors

    num_classes = 3
    class_names = CLASS_NAMES

    def __init__(
        self,
        data_dir: str | Path,
        image_size: int = 512,
        batch_size: int = 8,
        num_workers: int = 0,
        fold: int = 0,
        n_folds: int = 4,
        seed: int = 0,
        augment: Sequence = (),
        mean: float = DEFAULT_MEAN,
        std: float = DEFAULT_STD,
        cache_dir: str | Path | None = None,
        strict: bool = False,
        pin_memory: bool = False,
    ) -> None:
        super().__init__()
        if n_folds < 2 or not 0 <= fold < n_folds:
            raise ValueError(f"need n_folds >= 2 and 0 <= fold < n_folds, got fold={fold}, n_folds={n_folds}")
        if image_size < 1 or batch_size < 1:
            raise ValueError(f"image_size and batch_size must be positive, got {image_size}, {batch_size}")
        self.data_dir, self.image_size, self.batch_size = Path(data_dir), int(image_size), int(batch_size)
        self.num_workers, self.fold, self.n_folds, self.seed = (
            int(num_workers),
            int(fold),
            int(n_folds),
            int(seed),
        )
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
            raise FileNotFoundError(
                f"none of the {len(paths)} image(s) listed in {source} exist, e.g. {paths[0]}; {LAYOUT}"
            )
        folder = paths[0].parent if paths else self.data_dir
        outside = [p for p in paths if p.parent != folder or not is_plain_name(p.name)]
        if outside:  # read_annotations refuses such ids; this guards every other caller
            raise ValueError(f"{source}: image path {outside[0]} is not a file directly in {folder}")
        warn_escaping(paths, [self.data_dir], folder, log)
        cached = build_cache(paths, read_dicom, self.image_size, self.cache_dir, self.num_workers, desc=desc)
        if not cached.errors:
            return cached
        messages = [cached.errors[i] for i in sorted(cached.errors)]
        summary = (
            f"{len(messages)} of {len(paths)} image(s) listed in {source} are missing or cannot be decoded"
        )
        if self.strict or len(messages) == len(paths):
            more = " ..." if len(messages) > 5 else ""
            raise DicomReadError(
                f"{summary}{' (strict=True)' if self.strict else ''}: " + "; ".join(messages[:5]) + more
            )
        for message in messages:
            log.warning("skipping image: %s", message)
        log.warning("%s; left out", summary)
        return cached

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit", "validate", "test") and self.train_set is None:
            table = self.folds
            train_paths = [self.data_dir / TRAIN_DIR / f"{p}.dcm" for p in table["patientId"]]
            cached = self._decode(train_paths, self.data_dir / LABELS_CSV, "RSNA train")
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
                _problem(
                    f"{self.data_dir / LABELS_CSV}: clipped {n_clipped} box(es) partly outside their image, "
                    f"dropped {n_outside} entirely outside",
                    self.strict,
                )
            is_val = (table["fold"] == self.fold).to_numpy()
            check_leakage(
                f"RSNA {self.data_dir / TRAIN_DIR} (fold {self.fold})",
                {
                    "train": [train_paths[i] for i in np.flatnonzero(~is_val & ok)],
                    "val": [train_paths[i] for i in np.flatnonzero(is_val & ok)],
                },
                dict(zip(train_paths, cached.hashes, strict=True)),
                strict=self.strict,
            )
            common = (boxes, table["cls"].tolist(), cached.orig_sizes, table["patientId"].tolist())
            self.train_set = RSNADetectionDataset(
                cached.images, np.flatnonzero(~is_val & ok), *common, self.train_transform
            )
            self.val_set = RSNADetectionDataset(
                cached.images, np.flatnonzero(is_val & ok), *common, self.eval_transform
            )
        if stage in (None, "predict") and self.predict_set is None:
            paths = sorted((self.data_dir / TEST_DIR).glob("*.dcm"))
            if not paths:
                raise FileNotFoundError(f"{self.data_dir / TEST_DIR}: no .dcm files to predict on")
            cached = self._decode(paths, self.data_dir / TEST_DIR, "RSNA test")
            readable = [i for i in range(len(paths)) if i not in cached.errors]
            self.predict_set = RSNADetectionDataset(
                cached.images,
                readable,
                [np.zeros((0, 4), np.float32)] * len(paths),
                [-1] * len(paths),
                cached.orig_sizes,
                [p.stem for p in paths],
                self.eval_transform,
            )

    def _loader(self, dataset, shuffle: bool) -> DataLoader:
        if dataset is None:
            raise RuntimeError("RSNADataModule: call setup() before asking for a dataloader")
        common = {
            "batch_size": self.batch_size,
            "num_workers": self.num_workers,
            "collate_fn": collate_detection,
            "pin_memory": self.pin_memory,
            "persistent_workers": self.num_workers > 0,
        }
        if not shuffle:
            return DataLoader(dataset, shuffle=False, **common)
        # order and augmentation follow (training seed, epoch) only: runs repeat and resume exactly
        return ResumableLoader(
            dataset,
            EpochSampler(len(dataset), torch.initial_seed()),
            drop_last=len(dataset) > self.batch_size,
            **common,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.predict_set, shuffle=False)
