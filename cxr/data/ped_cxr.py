"""Ped-ChestXray (Kermany et al. 2018, "chest_xray") pneumonia classification datamodule.

The official val split has 16 images, too few to select models on, so by default train+val are
re-split by patient (no patient on both sides), stratified by normal/bacterial/viral; the official
test split is never touched. Folder layout and file names are in :mod:`cxr.data.ped_cxr_files`.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import albumentations as A
import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from cxr.data.cache import build_cache
from cxr.data.image_io import ImageReadError, read_image
from cxr.data.leakage import check_leakage
from cxr.data.ped_cxr_files import (
    BINARY_CLASSES,
    CLASS_FOLDERS,
    LAYOUT,
    SPLITS,
    THREE_CLASSES,
    _stratum,
    find_images,
    label_from_name,
    patient_id,
)
from cxr.data.resumable import EpochSampler, ResumableLoader, seed_augmentation, split_key
from cxr.data.sampling import (
    RepeatedDataset,
    balanced_sample_weights,
    inverse_frequency_weights,
    oversample_to_balance,
    stratified_group_split,
)
from cxr.data.transforms import DEFAULT_MEAN, DEFAULT_STD, RadiographTransform

log = logging.getLogger(__name__)


def _decode(path: Path, size_hint: int) -> np.ndarray:
    return read_image(path, size_hint=size_hint)


def _decoder(size_hint: int):
    # The cache key names the decoder by __module__/__qualname__, which a bare partial lacks.
    return functools.update_wrapper(functools.partial(_decode, size_hint=size_hint), _decode)


class CachedClassificationDataset(Dataset):
    """Samples ``{"image": float32 (1, S, S) normalised, "label": int64 scalar, "index": int64 scalar}``.

    ``index`` is the position in this dataset, i.e. in the datamodule's ``splits[split]``. Images come
    from rows ``rows`` of the uint8 cache file ``images_file`` (N, S, S), opened lazily so workers
    each map the file instead of receiving a pickled copy. A key ``(i, seed)`` (from
    :class:`~cxr.data.resumable.EpochSampler`) seeds the augmentation of that sample.
    """

    def __init__(
        self, images_file: Path, rows: Sequence[int], labels: Sequence[int], transform: RadiographTransform
    ) -> None:
        if len(rows) != len(labels):
            raise ValueError(f"rows and labels differ in length: {len(rows)} vs {len(labels)}")
        self.images_file, self.transform = Path(images_file), transform
        self.rows = np.asarray(rows, dtype=np.int64)
        self.labels = np.asarray(labels, dtype=np.int64)
        self._images: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, torch.Tensor]:
        i, seed = split_key(key)
        if self._images is None:
            self._images = np.load(self.images_file, mmap_mode="r")
        seed_augmentation(self.transform, seed)
        image, _ = self.transform(np.array(self._images[self.rows[i]]))
        return {
            "image": image,
            "label": torch.tensor(self.labels[i], dtype=torch.int64),
            "index": torch.tensor(i, dtype=torch.int64),
        }

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_images": None}


class PedChestXrayDataModule(pl.LightningDataModule):
    """Ped-ChestXray for classification; batches as the shared contract
    ``{"image": float32 (B, 1, S, S) normalised, "label": int64 (B,), "index": int64 (B,)}``.

    Args:
        data_dir: folder holding ``train/``, ``test/`` and optionally ``val/`` (see
            :data:`cxr.data.ped_cxr_files.LAYOUT`).
        image_size: side S of the square network input; images are decoded and resized once into a cache.
        labels: "binary" (normal 0, pneumonia 1; one logit) or "three_class" (normal 0, bacterial 1, viral 2).
        split: "patient" re-splits official train+val by patient, stratified, with ``val_fraction`` in
            val; "official" uses the release's val folder as it is.
        seed: split, weighted-sampler and oversampling seed (independent of the training seed).
        sampler: "none" (shuffle), "weighted" (each class drawn equally often in expectation) or
            "oversample" (every image once and the smaller classes' images again, each repeat
            augmented afresh, until the classes are equal; the epoch grows accordingly: our reading
            of Go & Bissaliyeva's "generating more images to balance the dataset").
        augment: albumentations transforms for train only; val/test are never augmented.
        mean, std: normalisation of pixels scaled to [0, 1].
        cache_dir: root of the decode-once cache (default ``$CXR_CACHE`` or ``~/.cache/cxr``).
        strict: raise instead of warning on an unreadable image, a dangling link or FIFO among the
            images, and a byte-identical image or a patient in more than one split.

    The train loader's order and augmentation follow (training seed, epoch) only, so runs repeat and
    resume mid-epoch exactly (:mod:`cxr.data.resumable`).
    """

    LAYOUT: ClassVar[str] = LAYOUT  # the expected folder layout, quoted by config errors

    def __init__(
        self,
        data_dir: str | Path,
        image_size: int = 200,
        batch_size: int = 10,
        num_workers: int = 0,
        labels: str = "binary",
        split: str = "patient",
        val_fraction: float = 0.1,
        seed: int = 0,
        sampler: str = "none",
        augment: Sequence[A.BasicTransform] = (),
        mean: float = DEFAULT_MEAN,
        std: float = DEFAULT_STD,
        cache_dir: str | Path | None = None,
        strict: bool = False,
        pin_memory: bool = False,
    ) -> None:
        super().__init__()
        for name, value, allowed in (
            ("labels", labels, ("binary", "three_class")),
            ("split", split, ("patient", "official")),
            ("sampler", sampler, ("none", "weighted", "oversample")),
        ):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
        for name, value in (("image_size", image_size), ("batch_size", batch_size)):
            if int(value) < 1:
                raise ValueError(f"datamodule.{name} must be a positive integer, got {value}")
        self.save_hyperparameters(ignore=["augment"], logger=False)
        self.data_dir, self.image_size, self.batch_size = Path(data_dir), int(image_size), int(batch_size)
        self.num_workers, self.labels, self.split = int(num_workers), labels, split
        self.val_fraction, self.seed, self.sampler = float(val_fraction), int(seed), sampler
        self.augment, self.mean, self.std = tuple(augment), float(mean), float(std)
        self.cache_dir, self.strict, self.pin_memory = cache_dir, bool(strict), bool(pin_memory)
        self._splits: dict[str, list[Path]] = {}
        self._datasets: dict[str, CachedClassificationDataset] = {}

    @property
    def num_classes(self) -> int:
        """Network outputs: 1 logit (BCE) for binary, 3 for three_class."""
        return 1 if self.labels == "binary" else 3

    @property
    def class_names(self) -> tuple[str, ...]:
        return BINARY_CLASSES if self.labels == "binary" else THREE_CLASSES

    @property
    def splits(self) -> dict[str, list[Path]]:
        """Files per split after setup, unreadable ones removed; a batch's ``index`` points into these lists."""
        self._dataset("train")  # raises before setup
        return self._splits

    @property
    def class_counts(self) -> torch.Tensor:
        """int64 (num class names,): training images per class (binary counts NORMAL and PNEUMONIA)."""
        return torch.bincount(
            torch.from_numpy(self._dataset("train").labels), minlength=len(self.class_names)
        )

    @property
    def class_weights(self) -> torch.Tensor:
        """float32 (2,) or (3,): inverse training frequency, normalised to mean 1."""
        return inverse_frequency_weights(self.class_counts)

    def _all_files(self) -> tuple[dict[str, list[Path]], list[Path]]:
        found = find_images(self.data_dir, require_val=self.split == "official", strict=self.strict)
        return found, [
            p for s in SPLITS for p in found[s]
        ]  # same list for every split mode and seed: one cache

    def _cache(self, files: list[Path]):
        return build_cache(
            files,
            decode=_decoder(self.image_size),
            size=self.image_size,
            cache_dir=self.cache_dir,
            num_workers=self.num_workers,
            desc="Ped-ChestXray",
        )

    def prepare_data(self) -> None:
        self._cache(self._all_files()[1])

    def setup(self, stage: str | None = None) -> None:
        if self._datasets:
            return
        found, files = self._all_files()
        if self.split == "official":
            parts = dict(found)
        else:
            pool = found["train"] + found["val"]
            train, val = stratified_group_split(
                [_stratum(p) for p in pool], [patient_id(p) for p in pool], self.val_fraction, self.seed
            )
            parts = {"train": [pool[i] for i in train], "val": [pool[i] for i in val], "test": found["test"]}
        if self.labels == "three_class":
            unnamed = [p for p in files if _stratum(p) == 3]
            if unnamed:
                raise ValueError(
                    f"labels='three_class' needs 'bacteria' or 'virus' in every pneumonia file name; "
                    f"{len(unnamed)} lack it, e.g. {unnamed[0]}"
                )
        cache = self._cache(files)
        bad = {files[i]: message for i, message in cache.errors.items()}
        if bad and self.strict:
            raise ImageReadError(f"{len(bad)} unreadable image(s) (strict=True): " + "; ".join(bad.values()))
        row_of = {p: i for i, p in enumerate(files)}
        splits: dict[str, list[Path]] = {}
        datasets: dict[str, CachedClassificationDataset] = {}
        for split in SPLITS:
            skipped = [p for p in parts[split] if p in bad]
            for p in skipped:
                log.warning("skipping unreadable image: %s", bad[p])
            if skipped:
                log.warning(
                    "Ped-ChestXray %s: skipped %d unreadable image(s) of %d",
                    split,
                    len(skipped),
                    len(parts[split]),
                )
            kept = [p for p in parts[split] if p not in bad]
            labels = [
                label_from_name(p) if self.labels == "three_class" else CLASS_FOLDERS.index(p.parent.name)
                for p in kept
            ]
            augment = self.augment if split == "train" else ()
            datasets[split] = CachedClassificationDataset(
                Path(cache.images.filename),
                [row_of[p] for p in kept],
                labels,
                RadiographTransform(augment, mean=self.mean, std=self.std),
            )
            splits[split] = kept
        self._splits, self._datasets = splits, datasets
        check_leakage(
            f"Ped-ChestXray under {self.data_dir}",
            splits,
            dict(zip(files, cache.hashes, strict=True)),
            patient=patient_id,
            strict=self.strict,
        )
        sizes = ", ".join(f"{s} {len(self._splits[s])}" for s in SPLITS)
        log.info(
            "Ped-ChestXray (%s split, seed %d, %s): %s images", self.split, self.seed, self.data_dir, sizes
        )
        counts = ", ".join(
            f"{s} {np.bincount(self._datasets[s].labels, minlength=len(self.class_names)).tolist()}"
            for s in SPLITS
        )
        log.info("Ped-ChestXray class counts (%s): %s", "/".join(self.class_names), counts)

    def _dataset(self, split: str) -> CachedClassificationDataset:
        if split not in self._datasets:
            raise RuntimeError("PedChestXrayDataModule: call setup() before asking for data or class counts")
        return self._datasets[split]

    def _loader(self, split: str) -> DataLoader:
        dataset = self._dataset(split)
        common = {
            "batch_size": self.batch_size,
            "num_workers": self.num_workers,
            "persistent_workers": self.num_workers > 0,
            "pin_memory": self.pin_memory,
        }
        if split != "train":
            return DataLoader(dataset, shuffle=False, **common)
        # Order and augmentation follow (seed, epoch) only, so runs repeat and resume exactly; the
        # shuffle follows the training seed (torch's, set by seed_everything), weighted draws `seed`.
        if self.sampler == "weighted":
            sampler = EpochSampler(len(dataset), self.seed, weights=balanced_sample_weights(dataset.labels))
        elif self.sampler == "oversample":
            dataset = RepeatedDataset(dataset, oversample_to_balance(dataset.labels, seed=self.seed))
            sampler = EpochSampler(len(dataset), torch.initial_seed())
        else:
            sampler = EpochSampler(len(dataset), torch.initial_seed())
        return ResumableLoader(dataset, sampler, **common)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")
