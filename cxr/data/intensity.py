"""Pixel-value augmentations of Gabruseva et al.'s code that albumentations does not draw the same way.

- :class:`GaussianGamma`: ``x ** 2 ** N(0, σ)`` on [0, 1] pixels (albumentations' ``RandomGamma`` draws
  the exponent uniformly).
- :class:`CoarseSaltAndPepper`: imgaug's ``CoarseSaltAndPepper``: a Bernoulli mask drawn on a coarse
  grid and enlarged (nearest), its pixels replaced by Beta(0.5, 0.5)·255 values (mostly near 0 or 255).

Both take uint8 (H, W) or (H, W, C) images and return the same shape and dtype.
"""

from __future__ import annotations

from typing import Any

import albumentations as A
import cv2
import numpy as np


def _check_uint8(img: np.ndarray, name: str) -> None:
    if img.dtype != np.uint8:
        raise ValueError(f"{name} expects a uint8 image, got {img.dtype}")


class GaussianGamma(A.ImageOnlyTransform):
    """Gamma change with a log2-normal exponent: ``out = 255 · (in / 255) ** γ``, ``γ = 2 ** N(0, sigma)``.

    Args:
        sigma: σ of log2 γ (0.2 in the authors' light set, 0.25 in heavy).
        p: probability (the authors: every image).
    """

    def __init__(self, sigma: float = 0.2, p: float = 1.0) -> None:
        super().__init__(p=p)
        if not (np.isfinite(sigma) and sigma >= 0):
            raise ValueError(f"GaussianGamma: sigma must be a finite number >= 0, got {sigma}")
        self.sigma = float(sigma)

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        return {"gamma": float(2.0 ** self.random_generator.normal(0.0, self.sigma))}

    def apply(self, img: np.ndarray, gamma: float, **params: Any) -> np.ndarray:
        _check_uint8(img, "GaussianGamma")
        table = np.clip(np.round(255.0 * (np.arange(256) / 255.0) ** gamma), 0, 255).astype(np.uint8)
        return cv2.LUT(img, table).reshape(img.shape)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("sigma",)


class CoarseSaltAndPepper(A.ImageOnlyTransform):
    """Replace a coarse random mask of pixels by salt-and-pepper values, as imgaug's
    ``CoarseSaltAndPepper(p=amount, size_percent=size_range)``.

    The mask is drawn with probability ``amount`` per cell on a grid of ``size`` × the image's side
    (``size`` ~ U(size_range)), enlarged to the image by nearest neighbour (so the blobs are
    1/``size`` pixels wide), and every masked pixel gets ``255 · Beta(0.5, 0.5)`` independently.

    Args:
        amount: fraction of grid cells replaced (the authors: 0.01).
        size_range: (low, high) relative size of the grid, in (0, 1] (the authors: 0.1 to 0.2).
        p: probability (the authors: 0.1).
    """

    def __init__(
        self, amount: float = 0.01, size_range: tuple[float, float] = (0.1, 0.2), p: float = 0.1
    ) -> None:
        super().__init__(p=p)
        low, high = (float(v) for v in size_range)
        if not 0.0 <= amount <= 1.0:
            raise ValueError(f"CoarseSaltAndPepper: amount must be in [0, 1], got {amount}")
        if not 0.0 < low <= high <= 1.0:
            raise ValueError(
                f"CoarseSaltAndPepper: size_range must satisfy 0 < low <= high <= 1, got {size_range}"
            )
        self.amount, self.size_range = float(amount), (low, high)

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        h, w = params["shape"][:2]
        rng = self.random_generator
        size = rng.uniform(*self.size_range)
        grid = (max(1, round(h * size)), max(1, round(w * size)))
        coarse = (rng.random(grid) < self.amount).astype(np.uint8)
        mask = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_NEAREST).astype(bool)
        values = np.round(255.0 * rng.beta(0.5, 0.5, int(mask.sum()))).astype(np.uint8)
        return {"salt_mask": mask, "values": values}

    def apply(self, img: np.ndarray, salt_mask: np.ndarray, values: np.ndarray, **params: Any) -> np.ndarray:
        _check_uint8(img, "CoarseSaltAndPepper")
        out = img.copy()
        out[salt_mask] = values[:, None] if img.ndim == 3 else values
        return out

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("amount", "size_range")
