"""Reading ordinary image files (JPEG, PNG) as 8-bit grayscale radiographs."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

IMAGE_SUFFIXES = frozenset({".jpeg", ".jpg", ".png", ".bmp", ".tif", ".tiff"})
# 8192 x 8192: four times the largest radiographs in common use; a file claiming more is refused
# before its pixels are allocated (decompression bombs, corrupt headers). $CXR_MAX_PIXELS overrides.
DEFAULT_MAX_PIXELS = 8192 * 8192


class ImageReadError(ValueError):
    """An image file exists but cannot be decoded; the message names the file and the problem."""


def max_pixels() -> int:
    """Largest image (height x width) the readers accept: ``$CXR_MAX_PIXELS``, else ``DEFAULT_MAX_PIXELS``."""
    value = os.environ.get("CXR_MAX_PIXELS")
    if value is None:
        return DEFAULT_MAX_PIXELS
    try:
        limit = int(value)
    except ValueError:
        raise ValueError(f"CXR_MAX_PIXELS must be a positive integer, got {value!r}") from None
    if limit < 1:
        raise ValueError(f"CXR_MAX_PIXELS must be a positive integer, got {value!r}")
    return limit


def check_pixel_count(path: str | Path, height: int, width: int) -> None:
    """Refuse, naming ``path`` and its size, an image whose header gives no pixels or more than :func:`max_pixels`.

    Raises:
        ImageReadError: the size is refused.
    """
    if height < 1 or width < 1:
        raise ImageReadError(f"{path}: the header gives an empty image ({width} x {height} pixels)")
    limit = max_pixels()
    if height * width > limit:
        raise ImageReadError(
            f"{path}: image of {width} x {height} = {height * width:,} pixels refused, over the "
            f"limit of {limit:,} (set CXR_MAX_PIXELS to allow it)"
        )


def read_image(path: str | Path, size_hint: int | None = None) -> np.ndarray:
    """Decode an image file to a grayscale uint8 array (H, W).

    RGB and palette files are converted to luminance. ``size_hint`` lets JPEG decoding use
    DCT scaling (Pillow's draft mode) so a 2,900 px file bound for 200 px decodes several
    times faster; the result is then at least ``size_hint`` on each side, never smaller.

    Raises:
        FileNotFoundError: the file does not exist.
        ImageReadError: empty, truncated or not an image, or larger than :func:`max_pixels` (checked on
            the header, before decoding), with the file named.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise ImageReadError(f"{path}: file is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            # our own limit decides; Pillow's DecompressionBombError (2x its limit) is still caught below
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(path)
        with img:
            check_pixel_count(path, img.height, img.width)
            if size_hint is not None and img.format == "JPEG":
                img.draft("L", (size_hint, size_hint))
            img.load()
            if img.mode not in ("L", "I;16", "I", "F"):
                img = img.convert("L")
            arr = np.asarray(img)
    except ImageReadError:
        raise
    except UnidentifiedImageError as err:
        raise ImageReadError(f"{path}: not a readable image ({err})") from err
    except Image.DecompressionBombError as err:
        raise ImageReadError(f"{path}: refused as a decompression bomb ({err})") from err
    except (OSError, SyntaxError, ValueError) as err:
        raise ImageReadError(f"{path}: cannot decode image, probably truncated or corrupt ({err})") from err
    if arr.dtype != np.uint8:  # 16-bit PNG/TIFF: scale the used range to 8 bits
        arr = arr.astype(np.float32)
        lo, hi = float(arr.min()), float(arr.max())
        arr = ((arr - lo) / max(hi - lo, 1e-6) * 255).round().astype(np.uint8)
    return arr
