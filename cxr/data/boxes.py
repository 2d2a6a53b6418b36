"""Box coordinate frames: clipping boxes to the image and mapping them between the original
image and the square network input.

Boxes are x1 y1 x2 y2 (left, top, right, bottom), float, (N, 4). Two frames: *original pixels* of the
H×W radiograph (``orig_size`` = (H, W)) and the S×S *network input* (``image_size`` = S) that images
are resized to, so x scales by S/W and y by S/H.
"""

from __future__ import annotations

import numpy as np
import torch


def clip_boxes(boxes: np.ndarray, height: int, width: int) -> tuple[np.ndarray, int, int]:
    """Clip x1 y1 x2 y2 boxes to the image; returns (kept boxes, number clipped, number dropped outside)."""
    clipped = boxes.copy()
    clipped[:, [0, 2]] = clipped[:, [0, 2]].clip(0, width)
    clipped[:, [1, 3]] = clipped[:, [1, 3]].clip(0, height)
    inside = (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
    changed = (clipped != boxes).any(axis=1) & inside
    return clipped[inside], int(changed.sum()), int((~inside).sum())


def _scale(boxes, orig_size, image_size: int, inverse: bool):
    h, w = (float(v) for v in orig_size)
    fx, fy = (w / image_size, h / image_size) if inverse else (image_size / w, image_size / h)
    if isinstance(boxes, torch.Tensor):
        return boxes * boxes.new_tensor([fx, fy, fx, fy])
    return np.asarray(boxes, np.float32) * np.array([fx, fy, fx, fy], np.float32)


def scale_boxes(boxes, orig_size, image_size: int):
    """x1 y1 x2 y2 boxes from original pixels (orig_size = (H, W)) to the S×S network input; tensor or array."""
    return _scale(boxes, orig_size, image_size, inverse=False)


def to_original(boxes, orig_size, image_size: int):
    """Inverse of :func:`scale_boxes`: network-input boxes back to original pixels."""
    return _scale(boxes, orig_size, image_size, inverse=True)
