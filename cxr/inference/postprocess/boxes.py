"""Box size post-processing for the RSNA challenge: the challenge's test boxes were drawn tighter than
its training boxes, so the winners made predicted boxes smaller.

Boxes are x1 y1 x2 y2 in any pixel frame; sizes change about each box's centre, which stays put.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

BOX_SIZE_METHODS = ("none", "shrink", "percentile")


def shrink_boxes(boxes, factor: float = 0.875):
    """Scale width and height by ``factor`` about each box's centre (0.875: the winning team's value).

    ``boxes``: (N, 4) x1 y1 x2 y2, tensor or array; returns the same type and dtype. ``factor`` 1.0 is
    the identity, > 1 grows boxes.
    """
    if not factor > 0:
        raise ValueError(f"shrink factor must be > 0, got {factor}")
    is_tensor = isinstance(boxes, Tensor)
    b = boxes.to(torch.float64) if is_tensor else torch.as_tensor(np.asarray(boxes, np.float64))
    centre, half = (b[:, :2] + b[:, 2:]) / 2, (b[:, 2:] - b[:, :2]) / 2 * factor
    out = torch.cat([centre - half, centre + half], dim=1)
    return out.to(boxes.dtype) if is_tensor else out.numpy().astype(np.asarray(boxes).dtype)


def percentile_boxes(
    boxes: Tensor,
    member_boxes: Tensor,
    scale: float = 1.6,
    low: float = 20.0,
    high: float = 80.0,
    space: str = "log",
) -> Tensor:
    """Gabruseva et al.'s box sizes: the ``low``-th percentile of the ensemble members' sizes, reduced
    by ``scale`` × (``high``-th − ``low``-th percentile). Each box keeps its centre; width and height
    are computed separately over that box's members.

    With ``space="log"`` (default) the formula acts on log sizes, as the authors' code did (it took the
    percentiles of the members' log-size regression outputs, per anchor)::

        log w' = P20(log w) − scale · (P80(log w) − P20(log w)),   i.e.   w' = P20 · (P20 / P80) ** scale

    which is always positive. ``space="linear"`` reads the sentence literally, w' = P20 − scale ·
    (P80 − P20), floored at 1 pixel. Percentiles interpolate linearly (numpy's default). Members that
    agree (one member, or copies of one) leave the box unchanged.

    Args:
        boxes: float (K, 4) x1 y1 x2 y2, the ensembled boxes.
        member_boxes: float (K, M, 4), each member's box matched to each ensembled box, NaN where a
            member has none (the ``member_boxes`` of :func:`cxr.inference.postprocess.ensemble_detections`).
        scale: reduction factor (1.6 in the paper).
        low, high: the percentiles, 0 <= low <= high <= 100.
        space: ``"log"`` or ``"linear"``.

    Returns:
        float32 (K, 4).
    """
    if space not in ("log", "linear"):
        raise ValueError(f"space must be 'log' or 'linear', got {space!r}")
    if not 0 <= low <= high <= 100:
        raise ValueError(f"need 0 <= low <= high <= 100, got low={low}, high={high}")
    boxes = torch.as_tensor(boxes, dtype=torch.float64).reshape(-1, 4)
    member_boxes = torch.as_tensor(member_boxes, dtype=torch.float64)
    if member_boxes.ndim != 3 or member_boxes.shape[0] != len(boxes) or member_boxes.shape[2] != 4:
        raise ValueError(
            f"member_boxes must be (K, M, 4) with K = {len(boxes)}, got {tuple(member_boxes.shape)}"
        )
    if len(boxes) == 0:
        return boxes.to(torch.float32)
    sizes = (member_boxes[..., 2:] - member_boxes[..., :2]).clamp(min=1e-6)  # (K, M, 2), NaN where missing
    if space == "log":
        sizes = sizes.log()
    p_low = torch.nanquantile(sizes, low / 100, dim=1)
    p_high = torch.nanquantile(sizes, high / 100, dim=1)
    new = p_low - scale * (p_high - p_low)
    new = new.exp() if space == "log" else new.clamp(min=1.0)
    old = boxes[:, 2:] - boxes[:, :2]
    new = torch.where(new.isnan(), old, new)  # a box without members keeps its size
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    return torch.cat([centre - new / 2, centre + new / 2], dim=1).to(torch.float32)


def adjust_box_sizes(
    detections: dict, method: str = "shrink", shrink: float = 0.875, scale: float = 1.6
) -> Tensor:
    """Boxes of one image's ensembled ``detections`` after the chosen size method.

    ``method``: ``"none"``, ``"shrink"`` (:func:`shrink_boxes` by ``shrink``) or ``"percentile"``
    (:func:`percentile_boxes` with ``scale``; needs ``member_boxes``).
    """
    boxes = torch.as_tensor(detections["boxes"], dtype=torch.float32).reshape(-1, 4)
    if method == "none":
        return boxes
    if method == "shrink":
        return shrink_boxes(boxes, shrink)
    if method == "percentile":
        if "member_boxes" not in detections:
            raise KeyError(
                "box_size=percentile needs the ensemble's 'member_boxes' (from ensemble_detections)"
            )
        return percentile_boxes(boxes, detections["member_boxes"], scale=scale)
    raise ValueError(f"box size method must be one of {BOX_SIZE_METHODS}, got {method!r}")
