"""Phantom chest radiographs: body, two lung fields, ribs, spine, noise and optional opacities.

Pixel convention as in a displayed radiograph: air (lungs, background) is dark, bone and
consolidation are bright. Everything is drawn with vectorised numpy on a float canvas in [0, 1]
and returned as uint8.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Box = tuple[float, float, float, float]  # x1, y1, x2, y2 in pixels


def lung_boxes(height: int, width: int) -> list[Box]:
    """Bounding boxes (x1, y1, x2, y2, pixels) of the right and left lung fields of a phantom."""
    return [
        (0.16 * width, 0.18 * height, 0.46 * width, 0.82 * height),
        (0.54 * width, 0.18 * height, 0.84 * width, 0.82 * height),
    ]


def _ellipse(yy: np.ndarray, xx: np.ndarray, box: Box) -> np.ndarray:
    """Soft-edged ellipse mask in [0, 1] inscribed in ``box``."""
    x1, y1, x2, y2 = box
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    rx, ry = max((x2 - x1) / 2, 1.0), max((y2 - y1) / 2, 1.0)
    r = np.sqrt(((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2)
    return np.clip((1.0 - r) * 4.0, 0.0, 1.0)


def chest_phantom(
    rng: np.random.Generator,
    height: int,
    width: int,
    opacities: Sequence[Box] = (),
    opacity_strength: float = 0.45,
    noise: float = 0.04,
) -> np.ndarray:
    """Draw one phantom radiograph.

    Args:
        rng: source of all randomness (anatomy jitter, rib phase, noise).
        height, width: output size in pixels.
        opacities: boxes (x1, y1, x2, y2, pixels) filled with a soft bright consolidation.
        opacity_strength: brightness added at an opacity's centre, in [0, 1] units.
        noise: standard deviation of the additive Gaussian noise.

    Returns:
        uint8 array (height, width); air dark, bone and opacities bright.
    """
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    jitter = rng.uniform(-0.03, 0.03, size=4)
    img = np.full((height, width), 0.08, np.float32)
    body = (0.06 * width, 0.04 * height, 0.94 * width, 1.1 * height)
    img += 0.5 * _ellipse(yy, xx, body)
    for (x1, y1, x2, y2), j in zip(lung_boxes(height, width), jitter[:2], strict=True):
        lung = (x1 + j * width, y1 + j * height, x2 + j * width, y2)
        img -= 0.32 * _ellipse(yy, xx, lung)
    spine = np.exp(-(((xx - (0.5 + jitter[2] / 3) * width) / (0.035 * width)) ** 2))
    img += 0.25 * spine
    rib_phase = rng.uniform(0, 2 * np.pi)
    rib_curve = yy / height + 0.08 * ((xx - width / 2) / width) ** 2 * 4
    ribs = np.clip(np.sin(rib_curve * 2 * np.pi * 7 + rib_phase), 0, 1) ** 6
    img += 0.12 * ribs * (_ellipse(yy, xx, body) > 0)
    for box in opacities:
        patchy = 0.75 + 0.25 * rng.random((height, width), dtype=np.float32)
        img += opacity_strength * _ellipse(yy, xx, box) * patchy
    img *= 1.0 + jitter[3] * 4
    img += rng.normal(0.0, noise, size=img.shape).astype(np.float32)
    return (np.clip(img, 0.0, 1.0) * 255).round().astype(np.uint8)
