"""The detection tables' picture of what the model sees: validation radiographs with the labels'
boxes (green) and the checkpoint's detections (red, with scores), so that a mAP can be judged by eye.

:func:`detection_grid` rebuilds the checkpoint's datamodule from its metadata on ``data_dir``
(:func:`cxr.inference.datamodules.rebuild_datamodule`), takes its validation fold's images with
boxes first (then without, as they come), runs the checkpoint as a one-member ensemble (its raw
detections through one NMS at ``nms_thresh``, the model's own when None: the authors' 0.05 in the
paper recipe) and keeps detections scoring at least ``score_thresh`` (the checkpoint's tuned
threshold when None).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from cxr.data.boxes import scale_boxes
from cxr.inference.datamodules import rebuild_datamodule
from cxr.inference.members import detect, load_member
from cxr.inference.postprocess import ensemble_detections


def detection_grid(
    checkpoint: str | Path,
    data_dir: str | Path,
    path: str | Path,
    title: str,
    n: int = 8,
    nms_thresh: float | None = None,
    score_thresh: float | None = None,
    cache_dir: str | Path | None = None,
) -> Path:
    """Draw ``n`` validation images of ``checkpoint``'s fold with ground truth and detections to ``path``."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    member = load_member(checkpoint)
    extra = {"cache_dir": cache_dir} if cache_dir is not None else {}
    dataset = rebuild_datamodule(member.meta, member.task, data_dir, num_workers=0, **extra).val_set
    order = sorted(range(len(dataset)), key=lambda i: len(dataset.boxes[dataset.rows[i]]) == 0)[:n]
    threshold = score_thresh if score_thresh is not None else (member.score_thresh or 0.3)
    nms = float(member.model.nms_thresh) if nms_thresh is None else nms_thresh
    cols = min(4, len(order))
    rows = math.ceil(len(order) / cols)
    fig = Figure(figsize=(3.2 * cols, 3.4 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, index in zip(axes, order, strict=False):
        sample = dataset[index]
        image, size = sample["image"], member.image_size
        raw, _ = detect(member, image[None], sample["orig_size"][None])
        merged = ensemble_detections([raw[0]], nms, score_mode="max")
        keep = merged["scores"] >= threshold
        boxes = scale_boxes(merged["boxes"][keep], sample["orig_size"].tolist(), size)
        ax.imshow((image[0] * member.std + member.mean).clamp(0, 1).numpy(), cmap="gray", vmin=0, vmax=1)
        for colour, group, scores in (
            ("lime", sample["boxes"], None),
            ("red", boxes, merged["scores"][keep]),
        ):
            for k, (x1, y1, x2, y2) in enumerate(torch.as_tensor(group).tolist()):
                ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, color=colour, lw=1.2))
                if scores is not None:
                    ax.text(x1, y1 - 2, f"{float(scores[k]):.2f}", color=colour, fontsize=6)
        ax.set_title(
            f"{sample['patient_id'][:13]}  gt {len(sample['boxes'])} / det {int(keep.sum())}", fontsize=7
        )
    for ax in axes:
        ax.set_axis_off()
    fig.suptitle(
        f"{title}\ngreen: labels, red: detections with score ≥ {threshold:.2f} after NMS at IoU {nms:g}",
        fontsize="small",
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path
