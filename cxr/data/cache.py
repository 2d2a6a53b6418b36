"""Decode-once image cache: every file is decoded and resized a single time into a uint8 array on disk.

Later epochs, runs and dataloader workers read a memory-mapped ``.npy`` instead of re-decoding
JPEG or DICOM. The cache key covers the file list (path, size, mtime), the output size and the
decoder, so a changed dataset or setting builds a new cache instead of reusing a stale one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm.auto import tqdm

log = logging.getLogger(__name__)

Decoder = Callable[[Path], np.ndarray]
CACHE_VERSION = 1


@dataclass
class CachedImages:
    """Result of :func:`build_cache`.

    Attributes:
        images: uint8 array (N, size, size), memory-mapped read-only; rows of failed files are zero.
        orig_sizes: int64 array (N, 2) of original (height, width); (0, 0) for failed files.
        errors: {index: message} for files that could not be decoded.
    """

    images: np.ndarray
    orig_sizes: np.ndarray
    errors: dict[int, str]


def default_cache_dir() -> Path:
    return Path(os.environ.get("CXR_CACHE", Path.home() / ".cache" / "cxr"))


def to_uint8(img: np.ndarray) -> np.ndarray:
    """uint8 stays; floats are taken as [0, 1] and scaled to 0..255."""
    if img.dtype == np.uint8:
        return img
    return (np.clip(img, 0.0, 1.0) * 255.0).round().astype(np.uint8)


def resize_square(img: np.ndarray, size: int) -> np.ndarray:
    """Resize a 2-D image to (size, size); area interpolation when shrinking, bilinear when growing."""
    if img.shape == (size, size):
        return img
    shrink = img.shape[0] > size or img.shape[1] > size
    return cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def _decode_one(args: tuple[Decoder, Path, int]) -> tuple[np.ndarray | None, tuple[int, int], str | None]:
    decode, path, size = args
    try:
        img = decode(path)
    except Exception as err:
        return None, (0, 0), str(err) if str(path) in str(err) else f"{path}: {err}"
    if img.ndim != 2:
        return None, (0, 0), f"{path}: decoder returned shape {img.shape}, expected (H, W)"
    return resize_square(to_uint8(img), size), (int(img.shape[0]), int(img.shape[1])), None


def _decoder_name(decode: Decoder) -> str:
    """Stable name of a decoder, functools.partial included (its bound arguments change the pixels)."""
    func = getattr(decode, "func", decode)
    bound = f"{getattr(decode, 'args', ())}{sorted(getattr(decode, 'keywords', {}).items())}"
    return f"{func.__module__}.{func.__qualname__}{bound}"


def _key(paths: Sequence[Path], size: int, decode: Decoder, extra: str) -> str:
    h = hashlib.sha1(f"v{CACHE_VERSION}|{size}|{_decoder_name(decode)}|{extra}".encode())
    for p in paths:
        st = Path(p).stat() if Path(p).exists() else None
        h.update(f"{Path(p).resolve()}|{st.st_size if st else -1}|{st.st_mtime_ns if st else -1}\n".encode())
    return h.hexdigest()[:16]


def build_cache(
    paths: Sequence[str | Path],
    decode: Decoder,
    size: int,
    cache_dir: str | Path | None = None,
    num_workers: int = 0,
    desc: str = "decoding",
    extra_key: str = "",
) -> CachedImages:
    """Decode and resize ``paths`` once into ``cache_dir``; reuse the cache when it is current.

    Args:
        paths: image files in dataset order; row i of the result belongs to ``paths[i]``.
        decode: picklable function path -> 2-D array (uint8, or float in [0, 1]).
        size: side of the square output.
        cache_dir: root folder of caches (default ``$CXR_CACHE`` or ``~/.cache/cxr``).
        num_workers: decoding processes (0 = in this process).
        extra_key: anything else the decoded pixels depend on.
    """
    paths = [Path(p) for p in paths]
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    folder = root / _key(paths, size, decode, extra_key)
    images_file, meta_file = folder / "images.npy", folder / "meta.json"
    if images_file.exists() and meta_file.exists():
        try:
            meta = json.loads(meta_file.read_text())
            images = np.load(images_file, mmap_mode="r")
            orig = np.asarray(meta["orig_sizes"], np.int64).reshape(-1, 2)
            errors = {int(k): str(v) for k, v in meta["errors"].items()}
        except (
            ValueError,
            OSError,
            KeyError,
            TypeError,
        ) as err:  # damaged (disk full, foreign file): rebuild
            log.warning(
                "image cache %s is unreadable (%s: %s); rebuilding it", folder, type(err).__name__, err
            )
        else:
            if images.shape == (len(paths), size, size) and orig.shape == (len(paths), 2):
                log.info("using image cache %s (%d images)", folder, len(paths))
                return CachedImages(images, orig, errors)

    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f"images.{os.getpid()}.tmp.npy"
    images = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(paths), size, size))
    orig_sizes = np.zeros((len(paths), 2), np.int64)
    errors: dict[int, str] = {}
    jobs = [(decode, p, size) for p in paths]
    bar = tqdm(total=len(paths), desc=f"{desc} → {size}px cache", unit="img", disable=len(paths) < 50)
    if num_workers > 0 and len(paths) > 1:
        with ProcessPoolExecutor(num_workers) as pool:
            results = pool.map(_decode_one, jobs, chunksize=16)
            for i, res in enumerate(results):
                _store(i, res, images, orig_sizes, errors)
                bar.update()
    else:
        for i, job in enumerate(jobs):
            _store(i, _decode_one(job), images, orig_sizes, errors)
            bar.update()
    bar.close()
    images.flush()
    del images
    # Both files are renamed into place, meta last: a run killed mid-write leaves no half cache behind.
    meta_tmp = folder / f"meta.{os.getpid()}.tmp.json"
    meta_tmp.write_text(
        json.dumps(
            {
                "orig_sizes": orig_sizes.tolist(),
                "errors": errors,
                "paths": [str(p) for p in paths],
                "size": size,
            }
        )
    )
    os.replace(tmp, images_file)
    os.replace(meta_tmp, meta_file)
    return CachedImages(np.load(images_file, mmap_mode="r"), orig_sizes, errors)


def _store(i, res, images, orig_sizes, errors) -> None:
    img, orig, err = res
    if err is not None:
        errors[i] = err
    else:
        images[i] = img
        orig_sizes[i] = orig
