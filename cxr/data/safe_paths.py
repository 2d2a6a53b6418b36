"""Keeping reads inside the data folder: file names taken from label files, and symlinks that lead out.

A name read from a CSV (an RSNA ``patientId``) becomes a path by ``folder / f"{name}.dcm"``; a name
with a separator, ``..`` or a leading ``/`` would read from anywhere, so such names are refused.
Symbolic links are made by whoever owns the file system, not by a label file: an image that
resolves outside the data folder through one is read, but said so in a warning.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

_SEPARATORS = frozenset({"/", "\\", os.sep} | ({os.altsep} if os.altsep else set()))


def is_plain_name(name: str) -> bool:
    """True for a bare file name: not empty, no path separator (``/`` or ``\\``), no NUL, not ``.`` or
    ``..``, not absolute and no drive (``C:``); such a name joined to a folder stays in that folder."""
    return (
        bool(name)
        and name not in (".", "..")
        and not any(c in _SEPARATORS or c == "\0" for c in name)
        and ":" not in name
    )


def escaping(paths: Iterable[Path], roots: Sequence[Path]) -> list[tuple[Path, Path]]:
    """(path, where it resolves) for each path that, symlinks followed, lies under none of ``roots``.

    Paths that do not exist (or dangling links) are not reported: their reads fail on their own.
    """
    resolved_roots = [Path(r).resolve() for r in roots]
    out = []
    for p in paths:
        try:
            target = Path(p).resolve(strict=True)
        except (OSError, RuntimeError):  # missing, dangling, a symlink loop
            continue
        if not any(target.is_relative_to(r) for r in resolved_roots):
            out.append((Path(p), target))
    return out


def warn_escaping(
    paths: Iterable[Path], roots: Sequence[Path], where: str | Path, logger: logging.Logger
) -> list[tuple[Path, Path]]:
    """Log one warning counting the images that resolve outside ``roots`` (first three shown); return them."""
    out = escaping(paths, roots)
    if out:
        shown = ", ".join(f"{p} -> {t}" for p, t in out[:3])
        logger.warning(
            "%s: %d image(s) lie outside the data folder through symbolic links, e.g. %s; reading them anyway",
            where,
            len(out),
            shown,
        )
    return out
