"""Input pipeline figures: decoding JPEG and DICOM, the cached path and the full augmented loaders."""

from __future__ import annotations

import logging
from pathlib import Path

from cxr.bench.settings import Settings
from cxr.bench.timing import throughput, time_runs

log = logging.getLogger(__name__)


def load_augment(name: str) -> list:
    """The albumentations transforms of ``conf/augment/<name>.yaml``, composed as ``cxr-train`` does."""
    from cxr.config.compose import build_augment, compose

    return build_augment(compose([f"augment={name}"]).augment)


def make_data(work: Path, s: Settings) -> dict[str, Path]:
    """Synthetic Ped-ChestXray JPEG tree and RSNA DICOM folder under ``work``."""
    from cxr.synth.ped_cxr import write_ped_cxr
    from cxr.synth.rsna import write_rsna

    ped = write_ped_cxr(
        work / "chest_xray", n=max(20, s.n_files), seed=0, min_side=s.jpeg_sides[0], max_side=s.jpeg_sides[1]
    )
    rsna = write_rsna(work / "rsna", n=max(8, s.n_files), seed=0, size=s.dicom_side, n_test=0)
    return {"ped_cxr": ped, "rsna": rsna, "cache": work / "cache"}


def repeat(dataset, n: int):
    """``dataset`` indexed cyclically to ``n`` samples."""
    from torch.utils.data import Subset

    return Subset(dataset, [i % len(dataset) for i in range(n)])


def bench_pipeline(data: dict[str, Path], s: Settings) -> list[dict]:
    """Images/s of each input stage at both sizes (rows of the pipeline table)."""
    from torch.utils.data import DataLoader

    from cxr.data.cache import resize_square, to_uint8
    from cxr.data.dicom import read_dicom
    from cxr.data.image_io import read_image
    from cxr.data.ped_cxr import PedChestXrayDataModule
    from cxr.data.rsna import RSNADataModule, collate_detection
    from cxr.data.rsna_labels import TRAIN_DIR

    jpegs = sorted(data["ped_cxr"].rglob("*.jpeg"))[: s.n_files]
    dicoms = sorted((data["rsna"] / TRAIN_DIR).glob("*.dcm"))[: s.n_files]
    decoders = {
        "jpeg_decode": (jpegs, lambda p, size: resize_square(read_image(p, size_hint=size), size)),
        "jpeg_decode_full": (jpegs, lambda p, size: resize_square(read_image(p), size)),
        "dicom_decode": (dicoms, lambda p, size: resize_square(to_uint8(read_dicom(p)), size)),
    }
    rows: list[dict] = []
    for size, dataset_name, augment, n_loader in zip(
        (s.cls_size, s.det_size), ("ped_cxr", "rsna"), s.augment, s.loader_images, strict=True
    ):
        for stage, (paths, decode) in decoders.items():
            times = time_runs(
                lambda paths=paths, decode=decode, size=size: [decode(p, size) for p in paths],
                s.repeats,
                warmup=1,
            )
            rows.append({"stage": stage, "size": size, **throughput(len(paths), times)})
            log.info("%s @ %d px: %.0f images/s", stage, size, rows[-1]["images_per_s"])
        if dataset_name == "ped_cxr":
            dm = PedChestXrayDataModule(
                data["ped_cxr"], image_size=size, augment=load_augment(augment), cache_dir=data["cache"]
            )
            dm.setup()
            train, plain, collate = dm.train_dataloader().dataset, dm.test_dataloader().dataset, None
        else:
            dm = RSNADataModule(
                data["rsna"], image_size=size, augment=load_augment(augment), cache_dir=data["cache"]
            )
            dm.setup("fit")
            train, plain, collate = dm.train_set, dm.val_set, collate_detection
        cached = repeat(plain, max(s.n_files, 4 * len(plain)))
        times = time_runs(lambda cached=cached: [cached[i] for i in range(len(cached))], s.repeats, warmup=1)
        rows.append(
            {"stage": "cached", "size": size, "dataset": dataset_name, **throughput(len(cached), times)}
        )
        log.info("cached @ %d px: %.0f images/s", size, rows[-1]["images_per_s"])
        epoch = repeat(train, n_loader)
        for workers in s.workers:
            loader = DataLoader(
                epoch,
                batch_size=s.loader_batch,
                num_workers=workers,
                collate_fn=collate,
                persistent_workers=workers > 0,
            )
            times = time_runs(lambda loader=loader: [None for _ in loader], s.repeats, warmup=1)
            rows.append(
                {
                    "stage": "loader",
                    "size": size,
                    "dataset": dataset_name,
                    "augment": augment,
                    "workers": workers,
                    "batch_size": s.loader_batch,
                    **throughput(len(epoch), times),
                }
            )
            log.info(
                "loader (%s, %d workers) @ %d px: %.0f images/s",
                augment,
                workers,
                size,
                rows[-1]["images_per_s"],
            )
            del loader
    return rows
