"""Reading ordinary image files (JPEG, PNG) as 8-bit grayscale radiographs."""

from __future__ import annotations

import os
import stat
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
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


def file_problem(path: str | Path) -> str | None:
    """Why ``path`` is not a regular file that can be opened, or None when it is.

    Tells apart a missing file, a dangling symbolic link (with its target), a FIFO, socket or device
    (never opened: reading a FIFO would block), and a folder.
    """
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        if path.is_symlink():
            return f"a dangling symbolic link (to {os.readlink(path)}, which does not exist)"
        return "no such file"
    except OSError as err:
        return f"cannot be examined ({err.strerror or err})"
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "a folder, not a file"
    kind = "a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device file"
    return f"{kind}, not a regular file"


@contextmanager
def pillow_pixel_limit() -> Iterator[None]:
    """Lift Pillow's own decompression-bomb check (Image.MAX_IMAGE_PIXELS, 178,956,970 pixels for its
    error) while our :func:`check_pixel_count` decides, so ``CXR_MAX_PIXELS`` alone sets the limit.

    The previous value is restored on exit; Pillow keeps it as a module global, so a thread decoding
    at the same time sees the lifted limit too.
    """
    before = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            yield
    finally:
        Image.MAX_IMAGE_PIXELS = before


def read_image(path: str | Path, size_hint: int | None = None) -> np.ndarray:
    """Decode an image file to a grayscale uint8 array (H, W).

    RGB and palette files are converted to luminance. ``size_hint`` lets JPEG decoding use
    DCT scaling (Pillow's draft mode) so a 2,900 px file bound for 200 px decodes several
    times faster; the result is then at least ``size_hint`` on each side, never smaller.

    Raises:
        FileNotFoundError: the file does not exist, or is a dangling symbolic link.
        ImageReadError: not a regular file (FIFO, device), no read permission, empty, truncated or not
            an image, or larger than :func:`max_pixels` (checked on the header, before decoding; Pillow's
            own bomb limit is lifted so this one decides), with the file named.
    """
    path = Path(path)
    if (problem := file_problem(path)) is not None:
        error = FileNotFoundError if problem == "no such file" or "dangling" in problem else ImageReadError
        raise error(f"{path}: {problem}")
    if path.stat().st_size == 0:
        raise ImageReadError(f"{path}: file is empty (0 bytes)")
    try:
        with pillow_pixel_limit(), Image.open(path) as img:
            check_pixel_count(path, img.height, img.width)
            if size_hint is not None and img.format == "JPEG":
                img.draft("L", (size_hint, size_hint))
            img.load()
            if img.mode not in ("L", "I;16", "I", "F"):
                img = img.convert("L")
            arr = np.asarray(img)
    except ImageReadError:
        raise
    except PermissionError as err:
        raise ImageReadError(f"{path}: cannot be read, permission denied ({err.strerror})") from err
    except UnidentifiedImageError as err:
        raise ImageReadError(f"{path}: not a readable image ({err})") from err
    except (OSError, SyntaxError, ValueError) as err:
        raise ImageReadError(f"{path}: cannot decode image, probably truncated or corrupt ({err})") from err
    if arr.dtype != np.uint8:  # 16-bit PNG/TIFF: scale the used range to 8 bits
        arr = arr.astype(np.float32)
        lo, hi = float(arr.min()), float(arr.max())
        arr = ((arr - lo) / max(hi - lo, 1e-6) * 255).round().astype(np.uint8)
    return arr
