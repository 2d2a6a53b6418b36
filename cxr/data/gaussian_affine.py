"""One affine warp per image with Gaussian-drawn zoom, rotation and shear (Gabruseva et al.'s sampling).

The authors' code (tatigabru/kaggle-rsna, ``DetectionDataset.__getitem__``) draws, for *every* training
image, a uniform centre shift and Gaussian scale, rotation and shear, and warps the radiograph once::

    shift  ~ U(-32, 32) px of the 1024-px source, x and y independently
    scale  = 2 ** N(0, scale_sigma), x and y independently (a zoom with aspect jitter)
    angle  ~ N(0, rotate_sigma) degrees
    shear  ~ N(0, shear_sigma) degrees (skimage's single shear angle)

albumentations' ``Affine`` draws from uniform ranges, so it cannot express this; :class:`GaussianAffine`
builds the same matrix and applies it with albumentations' own warp. Boxes move with the image and
become the axis-aligned hull of either their 4 corners or the authors' 8 edge points
(:func:`cxr.data.rotation.transform_boxes`).
"""

from __future__ import annotations

from typing import Any

import albumentations as A
import cv2
import numpy as np
from albumentations.augmentations.geometric import functional as fgeometric
from albumentations.core.bbox_utils import denormalize_bboxes, normalize_bboxes

from cxr.data.rotation import BOX_RULES, transform_boxes


def gaussian_affine_matrix(
    shape: tuple[int, int],
    scale: tuple[float, float],
    angle: float,
    shear: float,
    shift: tuple[float, float],
) -> np.ndarray:
    """3×3 matrix taking source points to output points, in box coordinates (pixel edges at integers).

    The authors' output→source map (skimage ``AffineTransform`` chain of ``TransformCfg.transform``)
    is ``src = c + t + D⁻¹ A (out − c)`` with ``c`` the image centre, ``t`` the shift, ``D =
    diag(scale)`` and ``A = [[cos r, −sin(r+s)], [sin r, cos(r+s)]]`` (skimage's rotation ``r`` with
    shear angle ``s``); this returns its inverse ``out = c + A⁻¹ D (src − c − t)``.

    Args:
        shape: (H, W) of the image; input and output have the same size.
        scale: (sx, sy) zoom factors (> 1 enlarges).
        angle, shear: degrees.
        shift: (dx, dy) of the source centre in pixels of this image.
    """
    h, w = shape
    r, s = np.deg2rad(angle), np.deg2rad(shear)
    rot_shear = np.array([[np.cos(r), -np.sin(r + s)], [np.sin(r), np.cos(r + s)]])
    linear = np.linalg.inv(rot_shear) @ np.diag(scale)
    centre = np.array([w / 2.0, h / 2.0])
    matrix = np.eye(3)
    matrix[:2, :2] = linear
    matrix[:2, 2] = centre - linear @ (centre + np.asarray(shift, dtype=np.float64))
    return matrix


class GaussianAffine(A.DualTransform):
    """Shift, zoom, rotate and shear every image once, with Gaussian-drawn parameters; boxes follow.

    Contract: a uint8 or float (H, W) or (H, W, C) image keeps its shape and dtype; outside the
    source the output is ``fill``. Boxes (albumentations' normalised x_min y_min x_max y_max) become
    the axis-aligned hull of their transformed corner points (``box_points="corners"``) or of the 8
    points at 1/3 and 2/3 of each edge (``"thirds"``, Gabruseva et al.'s custom rotation, tighter
    under rotation and shear); the pipeline's ``BboxParams(clip=True)`` clips them to the image.

    Args:
        scale_sigma: σ of log2 of the zoom, drawn independently for x and y (0.1 light, 0.15 heavy).
        rotate_sigma: σ of the rotation angle in degrees (5 light, 6 heavy, 0 "no rotation").
        shear_sigma: σ of the shear angle in degrees (2.5 light, 4 heavy).
        shift_px: the centre moves by U(−shift_px, shift_px) pixels of a ``source_size`` image in x
            and in y; on an image of another size the shift scales with it (32 px of the 1024-px
            DICOM is 16 px at 512).
        source_size: the side the shift is stated in (the RSNA DICOMs are 1024 px).
        box_points: ``"corners"`` or ``"thirds"``.
        interpolation: OpenCV flag (the authors used bilinear).
        fill: value outside the source (the authors used 0).
        p: probability of applying the warp (the authors: always).
    """

    def __init__(
        self,
        scale_sigma: float = 0.0,
        rotate_sigma: float = 0.0,
        shear_sigma: float = 0.0,
        shift_px: float = 0.0,
        source_size: float = 1024.0,
        box_points: str = "corners",
        interpolation: int = cv2.INTER_LINEAR,
        fill: float = 0.0,
        p: float = 1.0,
    ) -> None:
        super().__init__(p=p)
        for name, value in (
            ("scale_sigma", scale_sigma),
            ("rotate_sigma", rotate_sigma),
            ("shear_sigma", shear_sigma),
            ("shift_px", shift_px),
        ):
            if not (np.isfinite(value) and value >= 0):
                raise ValueError(f"GaussianAffine: {name} must be a finite number >= 0, got {value}")
        if not source_size > 0:
            raise ValueError(f"GaussianAffine: source_size must be > 0, got {source_size}")
        if box_points not in BOX_RULES:
            raise ValueError(f"GaussianAffine: box_points must be one of {BOX_RULES}, got {box_points!r}")
        self.scale_sigma, self.rotate_sigma, self.shear_sigma = (
            float(scale_sigma),
            float(rotate_sigma),
            float(shear_sigma),
        )
        self.shift_px, self.source_size = float(shift_px), float(source_size)
        self.box_points, self.interpolation, self.fill = box_points, interpolation, fill

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        h, w = params["shape"][:2]
        rng = self.random_generator
        shift = rng.uniform(-self.shift_px, self.shift_px, 2) * np.array([w, h]) / self.source_size
        scale = 2.0 ** rng.normal(0.0, self.scale_sigma, 2)
        angle = float(rng.normal(0.0, self.rotate_sigma))
        shear = float(rng.normal(0.0, self.shear_sigma))
        box_matrix = gaussian_affine_matrix((h, w), (scale[0], scale[1]), angle, shear, (shift[0], shift[1]))
        # pixel centres sit at half-integers in box coordinates: conjugate by a half-pixel shift
        half = np.array([[1.0, 0.0, 0.5], [0.0, 1.0, 0.5], [0.0, 0.0, 1.0]])
        image_matrix = np.linalg.inv(half) @ box_matrix @ half
        return {
            "matrix": image_matrix,
            "bbox_matrix": box_matrix,
            "angle": angle,
            "shear": shear,
            "scale": (float(scale[0]), float(scale[1])),
            "shift": (float(shift[0]), float(shift[1])),
        }

    def apply(self, img: np.ndarray, matrix: np.ndarray, **params: Any) -> np.ndarray:
        return fgeometric.warp_affine(
            img,
            matrix,
            interpolation=self.interpolation,
            fill=self.fill,
            border_mode=cv2.BORDER_CONSTANT,
            output_shape=img.shape[:2],
        )

    def apply_to_bboxes(self, bboxes: np.ndarray, bbox_matrix: np.ndarray, **params: Any) -> np.ndarray:
        if len(bboxes) == 0:
            return bboxes
        shape = params["shape"][:2]
        pixels = denormalize_bboxes(bboxes, shape)
        out = pixels.copy()
        out[:, :4] = transform_boxes(pixels[:, :4], bbox_matrix, self.box_points)
        return normalize_bboxes(out, shape)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return (
            "scale_sigma",
            "rotate_sigma",
            "shear_sigma",
            "shift_px",
            "source_size",
            "box_points",
            "interpolation",
            "fill",
        )
