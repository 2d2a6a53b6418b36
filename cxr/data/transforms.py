"""The one image pipeline both tasks share: optional albumentations augmentation, then normalisation.

Input: a cached uint8 radiograph (H, W) and, for detection, float boxes (N, 4) as x1 y1 x2 y2 in
pixels of that image. Output: float32 tensor (1, H, W) equal to ``(pixel / 255 - mean) / std`` and
the (augmented) boxes, still x1 y1 x2 y2 pixels, clipped to the image. Augmentation is only ever
built for the train split; val/test use ``augment=()``.
"""

from __future__ import annotations

from collections.abc import Sequence

import albumentations as A
import numpy as np
import torch

# ImageNet's grey-level statistics: timm encoders adapted to one input channel (summed RGB kernels)
# expect roughly these, and they suit radiographs scaled to [0, 1].
DEFAULT_MEAN = 0.449
DEFAULT_STD = 0.226


class RadiographTransform:
    """Callable ``(image, boxes=None) -> (tensor, boxes)`` for one sample.

    Args:
        augment: albumentations transforms applied in order (may be empty).
        mean, std: normalisation of pixel values scaled to [0, 1].
    """

    def __init__(
        self, augment: Sequence[A.BasicTransform] = (), mean: float = DEFAULT_MEAN, std: float = DEFAULT_STD
    ) -> None:
        self.mean, self.std = float(mean), float(std)
        self.augment = list(augment)
        self.compose = (
            A.Compose(
                self.augment,
                bbox_params=A.BboxParams(
                    format="pascal_voc", label_fields=["box_ids"], clip=True, min_area=1.0, min_visibility=0.0
                ),
            )
            if self.augment
            else None
        )

    def __call__(self, image: np.ndarray, boxes: np.ndarray | None = None) -> tuple[torch.Tensor, np.ndarray]:
        if image.dtype != np.uint8 or image.ndim != 2:
            raise ValueError(f"expected a uint8 (H, W) image, got {image.dtype} {image.shape}")
        boxes = (
            np.zeros((0, 4), np.float32) if boxes is None else np.asarray(boxes, np.float32).reshape(-1, 4)
        )
        if self.compose is not None:
            out = self.compose(image=image, bboxes=boxes, box_ids=np.arange(len(boxes)))
            image = out["image"]
            boxes = np.asarray(out["bboxes"], np.float32).reshape(-1, 4)
        # Normalise in numpy: a per-sample image is too small for torch's intra-op threads, which in a
        # num_workers=0 main process spin against each other on a busy machine (measured 30-100× slower).
        pixels = image.astype(np.float32, order="C")  # a fresh, writable copy (cache rows are read-only)
        pixels *= 1.0 / (255.0 * self.std)
        pixels -= self.mean / self.std
        return torch.from_numpy(pixels).unsqueeze(0), boxes

    def denormalize(self, tensor: torch.Tensor) -> torch.Tensor:
        """Inverse of the normalisation: back to [0, 1] floats."""
        return (tensor * self.std + self.mean).clamp(0, 1)
