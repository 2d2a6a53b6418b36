"""Pictures of predictions: detected boxes drawn on the radiograph, and class-activation heat maps
(computed by ``pytorch-grad-cam``): Grad-CAM of the classifiers (CheXNet-style localisation), and for
the detector a map of its encoder (:func:`detector_cam`) under the boxes.

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


def draw_boxes(
    image: np.ndarray, boxes, scores=None, max_side: int = 1024, heatmap: np.ndarray | None = None
) -> np.ndarray:
    """The radiograph with ``boxes`` (N, 4) outlined and, if given, their ``scores`` written above them;
    with a ``heatmap`` (as :func:`draw_heatmap` takes it) the boxes are drawn over that blend."""
    picture, scale = _display(image, max_side)
    if heatmap is not None:
        picture = _blend(picture, heatmap)
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


class _EncoderHead(nn.Module):
    """A detector's encoder and global head as one classifier: images -> global logits (B, G), or,
    without a global head, the deepest feature averaged over space (B, C). ``tap`` (an identity) marks
    the deepest encoder feature map for the CAM hooks."""

    def __init__(self, detector: nn.Module) -> None:
        super().__init__()
        self.encoder = detector.backbone.encoder
        self.head = getattr(detector, "global_head", None)
        self.tap = nn.Identity()

    def forward(self, images: Tensor) -> Tensor:
        deepest = self.tap(self.encoder(images)[-1])
        return self.head(deepest) if self.head is not None else deepest.mean(dim=(2, 3))


def detector_cam(detector: nn.Module, images: Tensor, class_index: int | None = None) -> np.ndarray:
    """Heat maps float32 (B, H, W) in [0, 1] (each scaled to its own maximum) of a RetinaNet's encoder
    on normalised ``images`` (B, C, H, W), at the input's size.

    Read from the deepest encoder feature map (``detector.backbone.encoder``, stride 32), never from
    the detection output, so the detector's output format does not matter. With ``class_index`` and a
    global head: Grad-CAM of that global class's logit (index 2, Lung Opacity, shows where the
    opacity evidence lies). Otherwise EigenCAM: the feature map's first principal component, which
    needs no class and no gradients.
    """
    from pytorch_grad_cam import EigenCAM, GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    wrapper = _EncoderHead(detector).eval()
    if class_index is not None and wrapper.head is not None:
        cam, targets = GradCAM, [ClassifierOutputTarget(int(class_index))] * len(images)
    else:
        cam, targets = EigenCAM, [None] * len(images)  # a list: EigenCAM ignores it, None would argmax
    try:
        with cam(model=wrapper, target_layers=[wrapper.tap]) as method:
            maps = method(input_tensor=images, targets=targets)
    finally:
        wrapper.zero_grad(set_to_none=True)  # Grad-CAM's backward leaves gradients on the detector
    return np.asarray(maps, np.float32)


def draw_heatmap(
    image: np.ndarray, heatmap: np.ndarray, max_side: int = 1024, weight: float = 0.5
) -> np.ndarray:
    """The radiograph blended with a [0, 1] heat map (any size; resized to the picture), jet colours."""
    return _blend(_display(image, max_side)[0], heatmap, weight)


def _blend(picture: np.ndarray, heatmap: np.ndarray, weight: float = 0.5) -> np.ndarray:
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
