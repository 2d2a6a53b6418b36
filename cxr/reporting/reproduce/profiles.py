"""Profiles of ``cxr-reproduce``: how big the runs are (overrides per task, seeds, folds, stand-in
encoders, synthetic data sizes), from CPU-sized ``smoke`` runs to the papers' ``paper`` settings."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Profile:
    """How big the runs are. ``classification`` / ``detection``: overrides added to every job of
    that task; ``encoders``: paper encoder -> the encoder this profile runs instead."""

    name: str
    description: str
    classification: tuple[str, ...]
    detection: tuple[str, ...]
    seeds: tuple[int, ...]
    folds: tuple[int, ...]
    encoders: Mapping[str, str] = field(default_factory=dict)
    synthetic: dict[str, int] | None = None
    tasks: tuple[str, ...] = ("classification", "detection")  # the tables it runs by default


_QUIET = ("trainer.enable_progress_bar=false", "datamodule.num_workers=0")
PROFILES = {
    "smoke": Profile(
        name="smoke",
        description="smoke profile: synthetic phantom data in the real layouts (160 Ped-ChestXray JPEGs, "
        "64 RSNA DICOMs), CPU, 2 epochs; classification 64 px, batch 16, Adam 1e-3; detection "
        "128 px, batch 8, Adam 1e-3, FPN 32 channels, mobilenetv3_small_100 encoder instead of "
        "SE-ResNeXt-101 (smaller stand-ins in the encoder table), folds 0-1 of 4. The numbers check the pipeline, not the papers",
        classification=(
            "trainer=cpu",
            "trainer.max_epochs=2",
            "datamodule.image_size=64",
            "datamodule.batch_size=16",
            "task.optimizer.lr=1e-3",
            *_QUIET,
        ),
        detection=(
            "trainer=cpu",
            "trainer.max_epochs=2",
            "datamodule.image_size=128",
            "datamodule.batch_size=8",
            "model.encoder=mobilenetv3_small_100",
            "model.fpn_channels=32",
            "task.optimizer.lr=1e-3",
            *_QUIET,
        ),
        seeds=(0, 1),
        folds=(0, 1),
        encoders={
            "resnet34": "resnet10t",
            "resnet50": "resnet14t",
            "seresnext50_32x4d": "seresnext26ts",
            "seresnext101_32x4d": "seresnext26t_32x4d",
            "mobilenetv3_large_100": "mobilenetv3_small_100",
        },
        synthetic={"ped_cxr": 160, "rsna": 64, "rsna_size": 256},
    ),
    "cpu": Profile(
        name="cpu",
        description="CPU profile: the Go & Bissaliyeva recipe (batch 10, Adam 1e-4, BCE, the paper's "
        "networks) on real radiographs on 2 CPU cores, with the image size reduced from 200 to 64 px and "
        "the epochs from 15 to 3; seeds 0-2. Classification tables only",
        classification=(
            "trainer=cpu",
            "trainer.max_epochs=3",
            "datamodule.image_size=64",
            *_QUIET,
        ),
        detection=(),
        seeds=(0, 1, 2),
        folds=(),
        tasks=("classification",),
    ),
    "paper": Profile(
        name="paper",
        description="paper profile: the papers' settings (experiment configs) on the real datasets, one GPU "
        "per run with bf16 mixed precision; classification seeds 0-2, detection folds 0-3 of 4",
        classification=("trainer=gpu", "trainer.enable_progress_bar=false"),
        detection=("trainer=gpu", "trainer.enable_progress_bar=false"),
        seeds=(0, 1, 2),
        folds=(0, 1, 2, 3),
    ),
}
