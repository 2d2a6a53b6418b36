"""Train/test leakage: byte-identical files and patients that appear in more than one split.

Content identity comes from the decode cache's per-file hashes (:mod:`cxr.data.cache`), so a copy or
a symbolic link of a test image in train is found whatever its name. A split assignment that puts one
patient on two sides, or the same image on two sides, makes validation and test figures optimistic.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

log = logging.getLogger(__name__)


class DataLeakError(ValueError):
    """The same image content or patient is in more than one split (raised when ``strict``)."""


def find_leaks(
    splits: Mapping[str, Sequence[Path]],
    content: Mapping[Path, str],
    patient: Callable[[Path], str] | None = None,
) -> tuple[list[tuple[Path, ...]], dict[str, tuple[str, ...]]]:
    """Groups of files with the same content in more than one split, and patients in more than one split.

    Args:
        splits: files per split name.
        content: file -> hash of its bytes; files missing here or with "" are not compared.
        patient: file -> patient id, or None to skip the patient check.

    Returns:
        (groups of byte-identical files spanning two or more splits, each sorted by split order then
        name; {patient: the splits it appears in} for patients in two or more).
    """
    by_hash: dict[str, list[tuple[int, str, Path]]] = {}
    by_patient: dict[str, set[str]] = {}
    order = {name: k for k, name in enumerate(splits)}
    for name, files in splits.items():
        for p in files:
            if digest := content.get(p, ""):
                by_hash.setdefault(digest, []).append((order[name], name, p))
            if patient is not None:
                by_patient.setdefault(patient(p), set()).add(name)
    same = [
        tuple(p for _, _, p in sorted(group, key=lambda g: (g[0], str(g[2]))))
        for group in by_hash.values()
        if len({name for _, name, _ in group}) > 1
    ]
    shared = {pid: tuple(sorted(names, key=order.get)) for pid, names in by_patient.items() if len(names) > 1}
    return sorted(same, key=lambda g: str(g[0])), dict(sorted(shared.items()))


def check_leakage(
    what: str,
    splits: Mapping[str, Sequence[Path]],
    content: Mapping[Path, str],
    patient: Callable[[Path], str] | None = None,
    strict: bool = False,
) -> None:
    """Warn (one line each, with counts and the first names) about identical content and shared patients
    across ``splits``; raise :class:`DataLeakError` instead when ``strict``.
    """
    same, shared = find_leaks(splits, content, patient)
    problems = []
    if same:
        shown = "; ".join(" = ".join(str(p) for p in group) for group in same[:3])
        problems.append(
            f"{what}: {sum(len(g) for g in same)} file(s) in {len(same)} group(s) of byte-identical images "
            f"span more than one split, e.g. {shown}"
        )
    if shared:
        shown = ", ".join(f"{pid} ({'/'.join(names)})" for pid, names in list(shared.items())[:3])
        problems.append(f"{what}: {len(shared)} patient(s) appear in more than one split, e.g. {shown}")
    for message in problems:
        if strict:
            raise DataLeakError(f"{message} (strict=True)")
        log.warning(message)
