"""The data path feeding a model: training steps on real augmented batches, and how busy the model is."""

from __future__ import annotations

import dataclasses
import logging
import os
import statistics
import time
from pathlib import Path

import torch

from cxr.bench.models import train_step
from cxr.bench.pipeline import load_augment, repeat
from cxr.bench.settings import CLASSIFIERS, Settings
from cxr.bench.timing import Placement

log = logging.getLogger(__name__)


def bench_fed(
    name: str,
    kwargs: dict,
    dataset,
    collate,
    workers: int,
    batch_size: int,
    steps: int,
    on: Placement,
    warmup: int = 1,
) -> dict:
    """Train ``name`` from a real augmented loader: images/s and the fraction of time the model computes
    (``busy``; the rest is waiting for the loader). With CUDA, ``gpu_util`` is NVML's mean utilisation
    (None without pynvml). The row names the placement as ``device``, ``bf16`` and ``channels_last``."""
    from torch.utils.data import DataLoader

    from cxr.models import create_model

    torch.manual_seed(0)
    model = on.place(create_model(name, **kwargs)).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-5)
    loader = DataLoader(
        repeat(dataset, (warmup + steps) * batch_size),
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=collate,
        pin_memory=on.cuda,
        drop_last=True,
    )
    wait = busy = 0.0
    util: list[float] = []
    it = iter(loader)
    for i in range(warmup + steps):
        start = time.perf_counter()
        batch = next(it)
        x = on.inputs(batch["image"], non_blocking=True)
        got = time.perf_counter()
        train_step(model, optimizer, x, batch, on)
        on.sync()
        if i >= warmup:
            wait, busy = wait + got - start, busy + time.perf_counter() - got
            if on.cuda:
                try:
                    util.append(float(torch.cuda.utilization(on.torch_device)))
                except Exception:  # needs pynvml
                    pass
    total = wait + busy
    return {
        "model": name,
        "workers": workers,
        "batch_size": batch_size,
        "steps": steps,
        **dataclasses.asdict(on),
        "images_per_s": steps * batch_size / total,
        "busy": busy / total,
        "wait_s": wait,
        "busy_s": busy,
        "gpu_util": statistics.mean(util) if util else None,
    }


def bench_fed_all(data: dict[str, Path], s: Settings) -> list[dict]:
    """Fed training runs: on CPU the fastest classifiers with 2 workers; on CUDA every classifier and
    RetinaNet (first encoder, RSNA loader at ``det_size``) with 2 and up to 8 workers."""
    from cxr.data.ped_cxr import PedChestXrayDataModule
    from cxr.data.rsna import RSNADataModule, collate_detection

    dm = PedChestXrayDataModule(
        data["ped_cxr"], image_size=s.cls_size, augment=load_augment(s.augment[0]), cache_dir=data["cache"]
    )
    dm.setup()
    cpu, gpu = Placement("cpu"), Placement("cuda", bf16=True, channels_last=True)
    from cxr.models import input_size_kwargs  # the CNNs' Flatten head is sized by the input

    jobs = [(cpu, 2, m, input_size_kwargs(m, s.cls_size), s.train_batch, s.fed_steps) for m in s.fed_models]
    if s.gpu:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 2
        for workers in dict.fromkeys((2, min(8, cores))):
            jobs += [
                (gpu, workers, m, input_size_kwargs(m, s.cls_size), s.gpu_train_batch, s.gpu_fed_steps)
                for m in CLASSIFIERS
            ]
            jobs += [
                (
                    gpu,
                    workers,
                    "retinanet",
                    {"encoder": enc, "image_size": s.det_size},
                    s.gpu_det_train_batch,
                    s.gpu_fed_steps,
                )
                for enc in s.encoders[:1]
            ]
    rsna = None
    if any(job[2] == "retinanet" for job in jobs):
        rsna = RSNADataModule(
            data["rsna"], image_size=s.det_size, augment=load_augment(s.augment[1]), cache_dir=data["cache"]
        )
        rsna.setup("fit")
    rows = []
    for on, workers, name, kwargs, batch, steps in jobs:
        dataset, collate = (
            (rsna.train_set, collate_detection)
            if name == "retinanet"
            else (dm.train_dataloader().dataset, None)
        )
        row = bench_fed(
            name,
            kwargs,
            dataset,
            collate,
            workers,
            batch,
            steps,
            on,
            warmup=1 if on.device == "cpu" else s.gpu_warmup,
        )
        row["label"] = f"retinanet/{kwargs['encoder']}" if name == "retinanet" else name
        rows.append(row)
        log.info(
            "fed %s on %s, %d workers: %.1f images/s, busy %.0f%%",
            row["label"],
            on.device,
            workers,
            row["images_per_s"],
            100 * row["busy"],
        )
    return rows
