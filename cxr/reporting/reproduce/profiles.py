"""Profiles of ``cxr-reproduce``: how big the runs are (overrides per task, seeds, folds, stand-in
encoders, synthetic data sizes), from CPU-sized ``smoke`` runs to the papers' ``paper`` settings."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Profile:
    """How big the runs are. ``classification`` / ``detection``: overrides added to every job of
    that task; ``encoders``: paper encoder -> the encoder this profile runs instead; ``image_sizes``:
    a row's ``datamodule.image_size`` -> the size this profile runs instead (so a row that halves the
    paper's size still halves the profile's)."""

    name: str
    description: str
    classification: tuple[str, ...]
    detection: tuple[str, ...]
    seeds: tuple[int, ...]
    folds: tuple[int, ...]
    encoders: Mapping[str, str] = field(default_factory=dict)
    image_sizes: Mapping[int, int] = field(default_factory=dict)
    synthetic: dict[str, int] | None = None
    tasks: tuple[str, ...] = ("classification", "detection")  # the tables it runs by default


_QUIET = ("trainer.enable_progress_bar=false", "datamodule.num_workers=0")
PROFILES = {
    "smoke": Profile(
        name="smoke",
        description="smoke profile: synthetic phantom data in the real layouts (320 Ped-ChestXray JPEGs, "
        "192 RSNA DICOMs at 256 px), CPU. Classification: 64 px, batch 8, 8 epochs, Adam 1e-3 (paper: "
        "200 px, batch 10, 15 epochs, Adam 1e-4), seeds 0-1. Detection: 96 px (the paper's 512; its 256 px "
        "rows run at 48 px), batch 8, the experiment's 12 epochs, Adam 1e-3 (paper: 1e-5), the tiny timm "
        "test_resnet encoder instead of SE-ResNeXt-101 "
        "(tiny stand-ins in the encoder table, named there), FPN 64 channels, no P2 level, BatchNorm "
        "trained (not frozen: the encoders start from random weights; the profile has no ImageNet weights, "
        "so a row that needs them runs only with --encoder-weights naming a test_resnet state dict), "
        "torchvision's low-quality anchor "
        "matches; folds 0-1 of 4. The numbers check that the pipeline learns, not the papers",
        classification=(
            "trainer=cpu",
            "trainer.max_epochs=8",  # 5 left a with-DA seed still at one class (AUROC 0.99, recall 50 %)
            "datamodule.image_size=64",
            "datamodule.batch_size=8",
            "task.optimizer.lr=1e-3",
            *_QUIET,
        ),
        detection=(
            "trainer=cpu",
            "datamodule.image_size=96",
            "datamodule.batch_size=8",
            "model.encoder=test_resnet",
            "model.fpn_channels=64",
            "model.small_anchors=false",
            "model.freeze_bn=false",
            "model.low_quality_matches=true",
            "task.optimizer.lr=1e-3",
            *_QUIET,
        ),
        seeds=(0, 1),
        folds=(0, 1),
        encoders={  # tiny timm networks, chosen for CPU seconds, not for likeness
            "resnet101": "resnet10t",
            "legacy_seresnext50_32x4d": "test_byobnet",
            "legacy_seresnext101_32x4d": "test_resnet",  # the profile's encoder: shares the other tables' runs
            "legacy_xception": "test_efficientnet",
            "dpn92": "test_nfnet",
            "inception_resnet_v2": "test_efficientnet_gn",
            "pnasnet5large": "mobilenetv3_small_100",
        },
        image_sizes={256: 48},  # the paper's 256 px = half its 512 px; the profile runs 96 px
        synthetic={"ped_cxr": 320, "rsna": 192, "rsna_size": 256},
    ),
    "cpu": Profile(
        name="cpu",
        description="CPU profile: the Go & Bissaliyeva recipe (batch 10, Adam 1e-4, BCE, the paper's "
        "networks) on real radiographs on 2 CPU cores, with the image size reduced from 200 to 48 px and "
        "the epochs from 15 to 3; seeds 0-2. Classification tables only",
        classification=(
            "trainer=cpu",
            "trainer.max_epochs=3",
            "datamodule.image_size=48",
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
