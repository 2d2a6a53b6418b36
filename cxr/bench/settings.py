"""What one bench run measures, and how much: sizes, batch sizes, repeats, models."""

from __future__ import annotations

from dataclasses import dataclass, replace

CLASSIFIERS = ("plain_cnn", "depthwise_cnn", "mobilenet")


@dataclass
class Settings:
    """Sizes and repeat counts of one bench run; :meth:`quick_run` shrinks everything for a smoke run.

    The defaults keep ``make bench`` near 12 minutes on 2 CPU cores (the deploy section about 2). RetinaNet needs ~275 GFLOPs per
    512 px image (~1-2 s per image on 2 cores, about a minute per batch of 32), so on CPU it trains at
    a small batch and every RetinaNet figure is ``det_repeats_cpu`` timed runs after one warm-up.
    """

    cls_size: int = 200  # classifiers, Ped-ChestXray cache and loader
    det_size: int = 512  # RetinaNet, RSNA cache and loader
    jpeg_sides: tuple[int, int] = (1000, 1600)  # Kermany JPEGs are about this size
    dicom_side: int = 1024  # as the RSNA challenge files
    n_files: int = 48  # source files decoded per repeat
    loader_images: tuple[int, int] = (256, 128)  # images per loader epoch at cls_size, det_size
    loader_batch: int = 16
    workers: tuple[int, ...] = (0, 1, 2)
    augment: tuple[str, str] = ("paper_da", "heavy")  # conf/augment sets at cls_size, det_size
    repeats: int = 3
    models: tuple[str, ...] = CLASSIFIERS
    encoders: tuple[str, ...] = ("resnet34", "seresnext50_32x4d")
    infer_batches: tuple[int, ...] = (1, 32)
    train_batch: int = 8  # classifiers on CPU, and their CPU fed runs
    det_infer_batches_cpu: tuple[int, ...] = (1, 32)
    det_repeats_cpu: int = 1  # 3x this at batch 1, as for every model
    det_train_batch_cpu: int = 2
    gpu_train_batch: int = 64  # classifiers on CUDA, and their fed runs
    gpu_det_train_batch: int = 16  # RetinaNet on CUDA, and its fed run
    gpu_repeats: int = 10  # CUDA runs take milliseconds: more repeats and warm-up (cuDNN autotuning)
    gpu_warmup: int = 3
    fed_models: tuple[str, ...] = ("depthwise_cnn", "mobilenet")  # CPU: the fastest, hardest to feed
    fed_steps: int = 4
    gpu_fed_steps: int = 20
    metric_images: int = 3000
    deploy_models: tuple[str, ...] = ("plain_cnn", "depthwise_cnn")  # the deploy section (cxr.bench.deploy)
    deploy_batch: int = 16
    deploy_threads: int = 2  # PyTorch and ONNX Runtime alike
    deploy_repeats: int = 5
    deploy_seconds: float = 15.0  # per path: fast paths are timed for many more rounds than the minimum
    gpu: bool = False
    compile: bool = False
    quick: bool = False

    @classmethod
    def quick_run(cls, **overrides) -> Settings:
        """Tiny images, one repeat, resnet18 RetinaNet: checks that every section runs (figures meaningless)."""
        quick = cls(
            cls_size=64,
            det_size=128,
            jpeg_sides=(128, 256),
            dicom_side=256,
            n_files=20,
            loader_images=(32, 16),
            loader_batch=8,
            repeats=1,
            infer_batches=(1, 4),
            det_infer_batches_cpu=(1, 4),
            train_batch=4,
            encoders=("resnet18",),
            fed_steps=2,
            metric_images=300,
            deploy_batch=4,
            deploy_repeats=1,
            deploy_seconds=0.0,
            gpu_train_batch=8,
            gpu_det_train_batch=4,
            gpu_repeats=2,
            gpu_warmup=1,
            gpu_fed_steps=2,
            quick=True,
        )
        return replace(quick, **overrides)
