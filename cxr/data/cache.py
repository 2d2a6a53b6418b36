"""Decode-once image cache: every file is decoded and resized a single time into a uint8 array on disk.

Later epochs, runs and dataloader workers read a memory-mapped ``.npy`` instead of re-decoding
JPEG or DICOM. The cache folder is named by the file list, the output size and the decoder; beside
the array, ``meta.json`` keeps each source file's fingerprint (stat record and BLAKE2b hash of its
bytes, :mod:`cxr.data.fingerprint`) and a CRC-32 of the array. Before use the array's checksum is
verified (a mismatch rebuilds it, with a warning) and every source file is checked: files whose
content changed, and files that failed to decode last time, are decoded again, so neither stale
pixels nor old failures are kept.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import shutil
import zlib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from cxr.data.fingerprint import fingerprint, unchanged
from cxr.files import write_text_atomic
from cxr.progress import progress

log = logging.getLogger(__name__)

Decoder = Callable[[Path], np.ndarray]
CACHE_VERSION = 2


class CacheSpaceError(OSError):
    """Not enough free space for the cache; the message names the folder and the bytes needed."""


@dataclass
class CachedImages:
    """Result of :func:`build_cache`.

    Attributes:
        images: uint8 array (N, size, size), memory-mapped read-only; rows of failed files are zero.
        orig_sizes: int64 array (N, 2) of original (height, width); (0, 0) for failed files.
        errors: {index: message} for files that could not be decoded.
        hashes: N hex BLAKE2b digests of the source files' bytes ("" for a file that could not be read);
            equal digests mean byte-identical files.
    """

    images: np.ndarray
    orig_sizes: np.ndarray
    errors: dict[int, str]
    hashes: list[str]


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


Result = tuple[np.ndarray | None, tuple[int, int], str | None, dict]


def _decode_one(args: tuple[Decoder, Path, int]) -> Result:
    """(pixels or None, original (H, W), error or None, fingerprint); runs in worker processes."""
    decode, path, size = args
    record = fingerprint(path)
    try:
        img = decode(path)
    except Exception as err:
        return None, (0, 0), str(err) if str(path) in str(err) else f"{path}: {err}", record
    if img.ndim != 2:
        return None, (0, 0), f"{path}: decoder returned shape {img.shape}, expected (H, W)", record
    return resize_square(to_uint8(img), size), (int(img.shape[0]), int(img.shape[1])), None, record


def _decoder_name(decode: Decoder) -> str:
    """Stable name of a decoder, functools.partial included (its bound arguments change the pixels)."""
    func = getattr(decode, "func", decode)
    bound = f"{getattr(decode, 'args', ())}{sorted(getattr(decode, 'keywords', {}).items())}"
    return f"{func.__module__}.{func.__qualname__}{bound}"


def _key(paths: Sequence[Path], size: int, decode: Decoder, extra: str) -> str:
    # The files' contents are not in the key: meta.json's fingerprints check them on every use.
    h = hashlib.sha1(f"v{CACHE_VERSION}|{size}|{_decoder_name(decode)}|{extra}".encode())
    for p in paths:
        h.update(f"{Path(p).resolve()}\n".encode())
    return h.hexdigest()[:16]


def _checksum(images: np.ndarray) -> str:
    """CRC-32 of the array's bytes, read in chunks of about 64 MB (several GB/s)."""
    crc, rows = 0, max(1, (64 << 20) // max(1, images[0].nbytes if len(images) else 1))
    for start in range(0, len(images), rows):
        crc = zlib.crc32(np.ascontiguousarray(images[start : start + rows]).reshape(-1), crc)
    return f"crc32:{crc:08x}"


def _decode_all(jobs: list[tuple[Decoder, Path, int]], num_workers: int, desc: str) -> Iterator[Result]:
    # a bar on a terminal, a few whole lines in a log (cxr.progress)
    bar = progress(total=len(jobs), desc=desc, unit="img", disable=len(jobs) < 50)
    try:
        if num_workers > 0 and len(jobs) > 1:
            with ProcessPoolExecutor(num_workers) as pool:
                for res in pool.map(_decode_one, jobs, chunksize=16):
                    yield res
                    bar.update()
        else:
            for job in jobs:
                yield _decode_one(job)
                bar.update()
    finally:
        bar.close()


def _write_meta(folder: Path, meta: dict) -> None:
    """Write meta.json atomically (temporary file, then rename)."""
    write_text_atomic(folder / "meta.json", json.dumps(meta))


def _no_space(folder: Path, needed: int, free: int | None = None) -> CacheSpaceError:
    have = f", {free:,} free" if free is not None else ""
    return CacheSpaceError(
        f"image cache {folder}: not enough disk space, {needed:,} bytes needed{have} "
        f"(free some, or point $CXR_CACHE or datamodule.cache_dir at a disk with room)"
    )


def _load(folder: Path, n: int, size: int) -> tuple[np.ndarray, dict] | None:
    """The cache in ``folder`` if complete and intact (shapes and checksum), else None (with a warning
    when a cache was there but damaged)."""
    images_file, meta_file = folder / "images.npy", folder / "meta.json"
    if not (images_file.exists() and meta_file.exists()):
        return None
    try:
        meta = json.loads(meta_file.read_text())
        images = np.load(images_file, mmap_mode="r")
        if meta.get("version") != CACHE_VERSION or len(meta["files"]) != n:
            raise ValueError("written by another version")
        if images.shape != (n, size, size) or images.dtype != np.uint8:
            raise ValueError(
                f"array of shape {images.shape}, {images.dtype}; expected ({n}, {size}, {size}) uint8"
            )
        if (found := _checksum(images)) != meta["checksum"]:
            raise ValueError(f"array checksum {found} differs from the {meta['checksum']} written with it")
    except (ValueError, OSError, KeyError, TypeError) as err:  # disk full, kill mid-write, foreign file
        log.warning("image cache %s is unreadable (%s: %s); rebuilding it", folder, type(err).__name__, err)
        return None
    return images, meta


def _refresh(
    folder: Path,
    paths: list[Path],
    decode: Decoder,
    size: int,
    num_workers: int,
    desc: str,
    meta: dict,
) -> np.ndarray:
    """Decode again the rows whose source changed or failed before; update the array and meta in place."""
    errors = {int(k): str(v) for k, v in meta["errors"].items()}
    stale, changed, dirty = [], [], False
    for i, (path, record) in enumerate(zip(paths, meta["files"], strict=True)):
        same, current = unchanged(path, record)
        if current is not record:  # touched or copied: remember the new stat record
            meta["files"][i], dirty = current, True
        if i in errors:
            stale.append(i)
        elif not same:
            stale.append(i)
            changed.append(path)
    if changed:
        log.warning(
            "image cache %s: %d source file(s) changed since it was built, e.g. %s; decoding them again",
            folder, len(changed), ", ".join(str(p) for p in changed[:3]),
        )  # fmt: skip
    try:
        if stale:
            _patch(folder, paths, decode, size, num_workers, desc, meta, stale, errors)
        elif dirty:
            _write_meta(folder, meta)
    except OSError as err:  # a read-only cache (shared, or on a read-only mount)
        if changed:
            raise OSError(
                f"image cache {folder}: {len(changed)} source file(s) changed but the cache cannot be "
                f"updated ({err}); delete it or point $CXR_CACHE or datamodule.cache_dir elsewhere"
            ) from None
        if stale:
            log.warning(
                "image cache %s cannot be updated (%s); %d failed file(s) not retried",
                folder,
                err,
                len(stale),
            )
    return np.load(folder / "images.npy", mmap_mode="r")


def _patch(
    folder: Path,
    paths: list[Path],
    decode: Decoder,
    size: int,
    num_workers: int,
    desc: str,
    meta: dict,
    stale: list[int],
    errors: dict[int, str],
) -> None:
    """Decode rows ``stale`` again into the array in place; new checksum and meta written last, so a
    kill in between leaves a cache whose checksum fails and which is then rebuilt."""
    rows = np.load(folder / "images.npy", mmap_mode="r+")
    jobs = [(decode, paths[i], size) for i in stale]
    for i, (img, orig, err, record) in zip(stale, _decode_all(jobs, num_workers, desc), strict=True):
        rows[i] = img if err is None else 0
        meta["orig_sizes"][i] = list(orig)
        meta["files"][i] = record
        errors.pop(i, None)
        if err is not None:
            errors[i] = err
    rows.flush()
    meta["errors"], meta["checksum"] = {str(k): v for k, v in errors.items()}, _checksum(rows)
    del rows
    _write_meta(folder, meta)


def _build(folder: Path, paths: list[Path], decode: Decoder, size: int, num_workers: int, desc: str) -> dict:
    """Decode every file into ``folder/images.npy`` and write ``meta.json``; no temporary file survives a failure."""
    folder.mkdir(parents=True, exist_ok=True)
    n = len(paths)
    needed = n * size * size + 4096 + 512 * n  # the array, its header, meta.json
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise _no_space(folder, needed, free)
    tmp = folder / f"images.{os.getpid()}.tmp.npy"
    try:
        images = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(n, size, size))
        _reserve(tmp, folder, needed)
        orig_sizes = np.zeros((n, 2), np.int64)
        errors: dict[int, str] = {}
        files: list[dict] = []
        jobs = [(decode, p, size) for p in paths]
        for i, (img, orig, err, record) in enumerate(_decode_all(jobs, num_workers, desc)):
            files.append(record)
            if err is not None:
                errors[i] = err
            else:
                images[i], orig_sizes[i] = img, orig
        images.flush()
        meta = {
            "version": CACHE_VERSION,
            "size": size,
            "paths": [str(p) for p in paths],
            "orig_sizes": orig_sizes.tolist(),
            "errors": {str(k): v for k, v in errors.items()},
            "files": files,
            "checksum": _checksum(images),
        }
        del images
        # array first, meta last: a run killed in between leaves a cache that fails its checksum check
        os.replace(tmp, folder / "images.npy")
        _write_meta(folder, meta)
    except OSError as err:
        if err.errno == errno.ENOSPC and not isinstance(err, CacheSpaceError):
            raise _no_space(folder, needed) from None
        raise
    finally:
        tmp.unlink(missing_ok=True)
    return meta


def _reserve(path: Path, folder: Path, needed: int) -> None:
    """Allocate the file's blocks now: a full disk then fails here with ENOSPC instead of killing the
    process with SIGBUS when a page of the memory map is first written."""
    if not hasattr(os, "posix_fallocate"):
        return
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, os.fstat(fd).st_size)
    except OSError as err:
        if err.errno == errno.ENOSPC:
            raise _no_space(folder, needed) from None
        # EOPNOTSUPP, EINVAL: the file system cannot preallocate; the free-space check above stands
    finally:
        os.close(fd)


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
        size: side of the square output, >= 1.
        cache_dir: root folder of caches (default ``$CXR_CACHE`` or ``~/.cache/cxr``).
        num_workers: decoding processes (0 = in this process).
        extra_key: anything else the decoded pixels depend on.

    Raises:
        ValueError: ``size`` < 1.
        CacheSpaceError: the disk cannot hold the cache (checked before decoding; message names the
            folder and the bytes needed).
    """
    if int(size) < 1:
        raise ValueError(f"image cache: the image size must be a positive number of pixels, got {size}")
    paths = [Path(p) for p in paths]
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    folder = root / _key(paths, size, decode, extra_key)
    label = f"{desc} → {size}px cache"
    loaded = _load(folder, len(paths), size)
    if loaded is not None:
        meta = loaded[1]
        images = _refresh(folder, paths, decode, size, num_workers, label, meta)
        log.info("using image cache %s (%d images)", folder, len(paths))
    else:
        meta = _build(folder, paths, decode, size, num_workers, label)
        images = np.load(folder / "images.npy", mmap_mode="r")
    return CachedImages(
        images,
        np.asarray(meta["orig_sizes"], np.int64).reshape(-1, 2),
        {int(k): str(v) for k, v in meta["errors"].items()},
        [str(f["hash"]) for f in meta["files"]],
    )
