"""Model figures: params, FLOPs, training and inference images/s and peak memory, one fresh process
per model and phase (:func:`run_child`) so that each peak is the model's own."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Sequence

import torch

from cxr.bench.settings import Settings
from cxr.bench.targets import config_label
from cxr.bench.timing import PeakRSS, Placement, throughput, time_runs
from cxr.inference.optimise import fold_batch_norm

log = logging.getLogger(__name__)


def fake_targets(task: str, batch: int, size: int, gen: torch.Generator) -> dict:
    """Random labels (classification) or one box on every other image plus global classes (detection)."""
    if task == "classification":
        return {"label": torch.randint(0, 2, (batch,), generator=gen)}
    boxes = [
        torch.tensor([[size * 0.2, size * 0.25, size * 0.45, size * 0.6]])
        if i % 2 == 0
        else torch.zeros(0, 4)
        for i in range(batch)
    ]
    return {"boxes": boxes, "cls": torch.tensor([2 if i % 2 == 0 else (i // 2) % 2 for i in range(batch)])}


def training_loss(model: torch.nn.Module, images: torch.Tensor, batch: dict) -> torch.Tensor:
    """The loss the tasks train with: BCE/CE on logits, or RetinaNet's box losses + 0.1 × global CE."""
    import torch.nn.functional as F

    if "boxes" not in batch:
        logits, labels = model(images), batch["label"].to(images.device)
        if logits.shape[1] == 1:
            return F.binary_cross_entropy_with_logits(logits[:, 0].float(), labels.float())
        return F.cross_entropy(logits.float(), labels)
    targets = [
        {"boxes": b.to(images.device), "cls": int(c)}
        for b, c in zip(batch["boxes"], batch["cls"], strict=True)
    ]
    out = model(images, targets)  # torchvision's contract: a loss dict in train mode
    return out["loss_box_cls"] + out["loss_box_reg"] + 0.1 * out.get("loss_global", 0.0)


def train_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    batch: dict,
    placement: Placement,
) -> None:
    """One optimiser step on :func:`training_loss` in ``placement``'s precision; does not wait for the device."""
    optimizer.zero_grad(set_to_none=True)
    with placement.autocast():
        loss = training_loss(model, images, batch)
    loss.backward()
    optimizer.step()


def bench_model(
    name: str,
    kwargs: dict,
    image_size: int,
    phase: str,
    device: str = "cpu",
    bf16: bool = False,
    channels_last: bool = False,
    compile: bool = False,
    fold_bn: bool = False,
    batches: Sequence[int] = (1, 32),
    repeats: int = 3,
    warmup: int = 1,
    seed: int = 0,
) -> dict:
    """Time one model in this process: ``phase="infer"`` (eval, no grad, each batch size in ``batches``;
    also counts params and FLOPs; ``fold_bn`` folds BatchNorm into the convs first) or ``"train"``
    (Adam steps at ``batches[0]``). Returns a dict of figures with ``peak_mem_mb`` (see the module
    docstring for what it measures)."""
    from torch.utils.flop_counter import FlopCounterMode

    from cxr.models import create_model, input_size_kwargs
    from cxr.models.profile import count_params

    if phase not in ("infer", "train"):
        raise ValueError(f"phase must be 'infer' or 'train', got {phase!r}")
    if fold_bn and phase == "train":
        raise ValueError("fold_bn is for inference only")
    on = Placement(device, bf16, channels_last)
    rss = PeakRSS()
    if on.cuda:
        torch.cuda.reset_peak_memory_stats(on.torch_device)
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    # sized for the timed input where the layers depend on it (the CNNs' Flatten head)
    model = on.place(create_model(name, **{**input_size_kwargs(name, image_size), **kwargs}))
    in_chans = int(kwargs.get("in_chans", 1))
    task = "detection" if name == "retinanet" else "classification"
    out: dict = {"phase": phase, "params": count_params(model)}

    def images(b: int) -> torch.Tensor:
        return on.inputs(torch.randn(b, in_chans, image_size, image_size, generator=gen))

    if phase == "infer":
        model.eval()
        if fold_bn:
            fold_batch_norm(model)
        with torch.no_grad():  # FLOPs of one eagerly run image, before compilation
            with FlopCounterMode(display=False) as counter:
                model(images(1))
            out["flops"] = int(counter.get_total_flops())
        if compile:
            model.compile()
        out["infer"] = {}
        for b in batches:
            x = images(b)

            def forward(x=x):
                with torch.no_grad(), on.autocast():
                    model(x)

            # Single images take milliseconds to a second and are the noisiest figure: 3× the repeats.
            reps, warm = (3 * repeats, 2 * warmup) if b == 1 else (repeats, warmup)
            out["infer"][str(b)] = throughput(b, time_runs(forward, reps, warm, on.sync))
    else:
        model.train()
        if compile:
            model.compile()
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-5)
        b = batches[0]
        x, targets = images(b), fake_targets(task, b, image_size, gen)
        times = time_runs(lambda: train_step(model, optimizer, x, targets, on), repeats, warmup, on.sync)
        out["train"] = {"batch_size": b, **throughput(b, times)}
    if on.cuda:
        out["peak_mem_mb"] = torch.cuda.max_memory_allocated(on.torch_device) / 2**20
    else:
        out["peak_mem_mb"] = rss.growth()
        out["peak_mem_exact"] = rss.exact  # False: a lower bound (see PeakRSS)
    return out


def run_child(spec: dict, timeout: float = 1800) -> dict:
    """:func:`bench_model` in a fresh Python process (its own peak memory); ``{"error": ...}`` if it fails."""
    cmd = [sys.executable, "-m", "cxr.bench", "--child", json.dumps(spec)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        return {"error": f"exit {proc.returncode}: {proc.stderr.strip()[-800:]}"}
    return json.loads(lines[-1])


def model_configs(s: Settings) -> list[dict]:
    """Device settings to run models under: CPU fp32; CPU inference with channels_last and folded BN
    (plain and depthwise CNN only: the deployable CPU path, applied to both alike); on CUDA fp32 and
    bf16 + channels_last (+ compile with ``--compile``)."""
    base = {"bf16": False, "channels_last": False, "compile": False, "fold_bn": False}
    configs = [
        {"device": "cpu", **base},
        {
            "device": "cpu",
            **base,
            "channels_last": True,
            "fold_bn": True,
            "only": ("plain_cnn", "depthwise_cnn"),
            "phases": ("infer",),
        },
    ]
    if s.gpu:
        configs += [
            {"device": "cuda", **base},
            {"device": "cuda", **base, "bf16": True, "channels_last": True},
        ]
        if s.compile:
            configs.append({"device": "cuda", **base, "bf16": True, "channels_last": True, "compile": True})
    return configs


def bench_models(s: Settings) -> list[dict]:
    """One row per (model, device setting): params, FLOPs, train and inference images/s, peak memory."""
    jobs = [(m, None, {}) for m in s.models]
    jobs += [("retinanet", enc, {"encoder": enc, "image_size": s.det_size}) for enc in s.encoders]
    rows = []
    for config in model_configs(s):
        on_cpu = config["device"] == "cpu"
        only, phases = config.pop("only", None), config.pop("phases", ("infer", "train"))
        for name, encoder, kwargs in jobs:
            if only is not None and name not in only:
                continue
            det = name == "retinanet"
            size = s.det_size if det else s.cls_size
            infer = s.det_infer_batches_cpu if det and on_cpu else s.infer_batches
            if on_cpu:  # RetinaNet takes seconds to a minute per CPU step: fewer repeats (in the report)
                train = s.det_train_batch_cpu if det else s.train_batch
                repeats, warmup = (min(s.repeats, s.det_repeats_cpu), 1) if det else (s.repeats, 1)
            else:
                train = s.gpu_det_train_batch if det else s.gpu_train_batch
                repeats, warmup = s.gpu_repeats, s.gpu_warmup
            row = {
                "model": name,
                "label": f"retinanet/{encoder}" if det else name,
                "encoder": encoder,
                "image_size": size,
                **config,
            }
            common = {"name": name, "kwargs": kwargs, "image_size": size, **config}
            log.info("model %s on %s ...", row["label"], config_label(config))
            train_repeats = max(1, repeats - 1) if on_cpu else repeats
            for phase, batches, reps in (("infer", infer, repeats), ("train", (train,), train_repeats)):
                if phase not in phases:
                    continue
                res = run_child(
                    {**common, "phase": phase, "batches": list(batches), "repeats": reps, "warmup": warmup}
                )
                if "error" in res:
                    log.warning("%s %s failed: %s", row["label"], phase, res["error"])
                    row.setdefault("errors", {})[phase] = res["error"]
                    continue
                row.update({k: v for k, v in res.items() if k in ("params", "flops", "infer", "train")})
                row.setdefault("peak_mem_mb", {})[phase] = res["peak_mem_mb"]
                if not res.get("peak_mem_exact", True):
                    row.setdefault("peak_mem_lower_bound", []).append(phase)
            row["memory"] = "cpu_rss_growth" if on_cpu else "cuda_max_allocated"
            rows.append(row)
    return rows
