"""Running trained checkpoints outside training: loading them as ensemble members, reading and
preparing images exactly as the datamodules do, and the raw outputs the ensembles merge.

Everything a member needs comes from its checkpoint (:func:`cxr.inference.checkpoint.load_model`, loaded with
``weights_only=True``): the model, input size, normalisation, class names and the values tuned
during training (DetectionTask's validation score threshold, ClassificationTask's threshold).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from cxr.data.boxes import to_original
from cxr.data.transforms import DEFAULT_MEAN, DEFAULT_STD
from cxr.inference.checkpoint import CheckpointError, load_model, read_checkpoint
from cxr.inference.optimise import optimise_for_inference
from cxr.models.outputs import class_probabilities

TASKS = {"ClassificationTask": "classification", "DetectionTask": "detection"}


@dataclasses.dataclass
class Member:
    """One checkpoint ready to predict.

    Attributes:
        path: the checkpoint file.
        model: the network in eval mode on its device.
        task: ``"classification"`` or ``"detection"``.
        image_size, mean, std: the network input: S×S, ``(pixel / 255 - mean) / std``.
        class_names: classifier classes (index 0 normal) or the detector's global classes.
        epoch, fold: training epoch of the checkpoint and validation fold of its datamodule (None if unknown).
        score_thresh: DetectionTask's score threshold tuned on validation (None if never tuned).
        decision_threshold: ClassificationTask's threshold on the pneumonia probability.
        meta: the checkpoint's ``"cxr"`` metadata.
    """

    path: Path
    model: nn.Module
    task: str
    image_size: int
    mean: float
    std: float
    class_names: tuple[str, ...]
    epoch: int | None
    fold: int | None
    score_thresh: float | None
    decision_threshold: float | None
    meta: dict

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


def _class_names(meta: dict, task: str) -> tuple[str, ...]:
    if task == "detection":
        from cxr.data.rsna_labels import CLASS_NAMES

        return CLASS_NAMES
    from cxr.data.ped_cxr_files import BINARY_CLASSES, THREE_CLASSES

    return THREE_CLASSES if meta["datamodule"].get("labels") == "three_class" else BINARY_CLASSES


def resolve_device(device: str = "auto") -> torch.device:
    """``"auto"``: the first CUDA device if there is one, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def load_member(path: str | Path, device: str | torch.device = "cpu", optimise: bool = True) -> Member:
    """Load a ``cxr-train`` checkpoint as an ensemble member (weights-only, via the model registry);
    ``optimise`` applies :func:`optimise_for_inference` (off: the network exactly as trained, e.g.
    for export)."""
    path = Path(path)
    model, meta = load_model(path)
    if optimise:
        model = optimise_for_inference(model)
    task = TASKS.get(meta.get("task", ""))
    if task is None:
        raise CheckpointError(
            f"{path}: task {meta.get('task')!r} cannot predict; known tasks: {sorted(TASKS)}"
        )
    ckpt = read_checkpoint(path)
    hparams = ckpt.get("hyper_parameters") or {}
    tuned = ckpt["state_dict"].get("score_thresh")
    score_thresh = float(tuned) if tuned is not None and not math.isnan(float(tuned)) else None
    dm = meta["datamodule"]
    return Member(
        path=path,
        model=model.to(resolve_device(str(device))).eval(),
        task=task,
        image_size=int(dm["image_size"]),
        mean=float(dm.get("mean", DEFAULT_MEAN)),
        std=float(dm.get("std", DEFAULT_STD)),
        class_names=_class_names(meta, task),
        epoch=ckpt.get("epoch"),
        fold=dm.get("fold"),
        score_thresh=score_thresh,
        decision_threshold=float(hparams["threshold"]) if "threshold" in hparams else None,
        meta=meta,
    )


def load_members(paths: Sequence[str | Path], device: str | torch.device = "cpu") -> list[Member]:
    """Load several checkpoints; they must share the task (and, for classifiers, the classes)."""
    if not paths:
        raise ValueError("no checkpoints given")
    members = [load_member(p, device) for p in paths]
    tasks = {m.task for m in members}
    if len(tasks) > 1:
        raise ValueError("checkpoints mix tasks: " + ", ".join(f"{m.path} ({m.task})" for m in members))
    names = {m.class_names for m in members}
    if len(names) > 1:
        raise ValueError(
            "checkpoints predict different classes: "
            + ", ".join(f"{m.path} {m.class_names}" for m in members)
        )
    return members


@torch.no_grad()
def classify(member: Member, images: Tensor) -> Tensor:
    """Class probabilities float32 (B, max(C, 2)) on the CPU; column 0 is normal, so the pneumonia
    probability is ``1 - probs[:, 0]`` (for one-logit models ``probs[:, 1]`` = sigmoid)."""
    logits = member.model(images.to(member.device, memory_format=torch.channels_last)).float().cpu()
    return class_probabilities(logits)


@torch.no_grad()
def detect(
    member: Member, images: Tensor, orig_sizes: Tensor | Sequence[Sequence[int]], raw_detections: int = 300
) -> tuple[list[dict[str, Tensor]], Tensor | None]:
    """Raw detections of a RetinaNet member, with its own NMS switched off, for ensembling.

    Args:
        images: float32 (B, 1, S, S) prepared with the member's settings.
        orig_sizes: (B, 2) original (H, W) of each image.
        raw_detections: the most detections kept per image (highest scores first), before the
            ensemble's NMS.

    Returns:
        Per image ``{"boxes": float32 (N, 4) x1y1x2y2 in original pixels, "scores": (N,)}`` on the
        CPU, and the global head's softmax probabilities (B, G) or None without a global head.
    """
    model = member.model
    saved = model.nms_thresh, model.detections_per_img
    # IoU is never > 1, so no box is suppressed: the ensemble's NMS is the only one
    model.nms_thresh, model.detections_per_img = 1.0, raw_detections
    try:
        out = model(images.to(member.device, memory_format=torch.channels_last))
    finally:
        model.nms_thresh, model.detections_per_img = saved
    results = [
        {
            "boxes": to_original(det["boxes"].float().cpu(), hw, member.image_size),
            "scores": det["scores"].float().cpu(),
        }
        for det, hw in zip(out, torch.as_tensor(orig_sizes).tolist(), strict=True)
    ]
    has_global = all("global_logits" in det for det in out) and len(out) > 0
    probs = (
        torch.stack([det["global_logits"].float() for det in out]).softmax(dim=1).cpu()
        if has_global
        else None
    )
    return results, probs
