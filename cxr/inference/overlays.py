"""Pictures of predictions: detected boxes drawn on the radiograph, and Grad-CAM heat maps of the
classifiers (CheXNet-style localisation, computed by ``pytorch-grad-cam``).

Images are 2-D radiographs (uint8, or float in [0, 1]) at any size; boxes are x1 y1 x2 y2 in that
image's pixels. Pictures are RGB uint8, at most ``max_side`` pixels on the long side.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import Tensor, nn

from cxr.data.cache import to_uint8

BOX_COLOUR = (255, 64, 32)  # RGB


def _display(image: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """RGB uint8 copy of the radiograph scaled to at most ``max_side``, and the scale applied."""
    gray = to_uint8(np.asarray(image))
    scale = min(1.0, max_side / max(gray.shape))
    if scale < 1.0:
        size = (max(1, round(gray.shape[1] * scale)), max(1, round(gray.shape[0] * scale)))
        gray = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(np.repeat(gray[..., None], 3, axis=2)), scale


def draw_boxes(image: np.ndarray, boxes, scores=None, max_side: int = 1024) -> np.ndarray:
    """The radiograph with ``boxes`` (N, 4) outlined and, if given, their ``scores`` written above them."""
    picture, scale = _display(image, max_side)
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4) * scale
    thickness = max(1, round(max(picture.shape) / 300))
    for i, (x1, y1, x2, y2) in enumerate(boxes):
        cv2.rectangle(picture, (round(x1), round(y1)), (round(x2), round(y2)), BOX_COLOUR, thickness)
        if scores is not None:
            cv2.putText(
                picture,
                f"{float(scores[i]):.2f}",
                (round(x1), max(12, round(y1) - 4)),
                cv2.FONT_HERSHEY_SIMPLEX,
                0.4 * thickness,
                BOX_COLOUR,
                thickness,
                cv2.LINE_AA,
            )
    return picture


def last_feature_conv(model: nn.Module, example: Tensor) -> nn.Conv2d:
    """The last ``nn.Conv2d`` that ``model.forward_features`` runs on ``example`` (B, C, H, W): the
    Grad-CAM layer of a timm-style classifier. Convolutions of the head (MobileNetV3's ``conv_head``
    runs after pooling, on a 1×1 map) are not part of ``forward_features`` and so are never chosen."""
    called: list[nn.Conv2d] = []
    hooks = [
        m.register_forward_hook(lambda mod, inp, out: called.append(mod))
        for m in model.modules()
        if isinstance(m, nn.Conv2d)
    ]
    try:
        with torch.no_grad():
            forward = getattr(model, "forward_features", model)
            forward(example)
    finally:
        for hook in hooks:
            hook.remove()
    if not called:
        raise ValueError(f"{type(model).__name__}: no Conv2d runs in forward_features; Grad-CAM needs one")
    return called[-1]


def grad_cam(model: nn.Module, images: Tensor, class_index: int | Sequence[int]) -> np.ndarray:
    """Grad-CAM heat maps float32 (B, H, W) in [0, 1] (each image scaled to its own maximum) for the
    logit ``class_index`` (one for all images, or one per image), at the input's size.

    For the one-logit binary classifiers, index 0 is the pneumonia logit, so the map shows where the
    evidence for pneumonia lies.
    """
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    indices = [class_index] * len(images) if isinstance(class_index, int) else list(class_index)
    layer = last_feature_conv(model, images[:1])
    with GradCAM(model=model, target_layers=[layer]) as cam:
        maps = cam(input_tensor=images, targets=[ClassifierOutputTarget(int(i)) for i in indices])
    return np.asarray(maps, np.float32)


def draw_heatmap(
    image: np.ndarray, heatmap: np.ndarray, max_side: int = 1024, weight: float = 0.5
) -> np.ndarray:
    """The radiograph blended with a [0, 1] heat map (any size; resized to the picture), jet colours."""
    picture, _ = _display(image, max_side)
    heat = cv2.resize(np.clip(heatmap, 0, 1).astype(np.float32), (picture.shape[1], picture.shape[0]))
    colour = cv2.cvtColor(
        cv2.applyColorMap((heat * 255).astype(np.uint8), cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB
    )
    return (weight * picture + (1 - weight) * colour).round().astype(np.uint8)


def save_png(picture: np.ndarray, path: str | Path) -> Path:
    """Write an RGB uint8 picture as PNG; raises OSError naming the path if it cannot."""
    path = Path(path)
    if not cv2.imwrite(str(path), cv2.cvtColor(picture, cv2.COLOR_RGB2BGR)):
        raise OSError(f"{path}: could not write PNG")
    return path
