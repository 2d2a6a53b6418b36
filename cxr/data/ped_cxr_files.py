"""Ped-ChestXray (Kermany et al. 2018, "chest_xray") folder layout and file names: finding the images
of each official split, and reading the patient and the label from a file's name and class folder.

The release holds pediatric anterior-posterior radiographs as JPEG in official splits; file names
carry the patient and, for pneumonia, the kind: ``IM-0115-0001.jpeg``, ``NORMAL2-IM-0381-0001.jpeg``,
``person1_bacteria_1.jpeg``, ``person3_virus_15.jpeg``.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from cxr.data.image_io import IMAGE_SUFFIXES
from cxr.data.safe_paths import warn_escaping

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
CLASS_FOLDERS = ("NORMAL", "PNEUMONIA")
BINARY_CLASSES = ("normal", "pneumonia")
THREE_CLASSES = ("normal", "bacterial", "viral")
LAYOUT = """expected layout:
  <data_dir>/train/NORMAL/*.jpeg
  <data_dir>/train/PNEUMONIA/*.jpeg
  <data_dir>/val/{NORMAL,PNEUMONIA}/*.jpeg   (optional unless split="official")
  <data_dir>/test/NORMAL/*.jpeg
  <data_dir>/test/PNEUMONIA/*.jpeg"""

_PATIENT_PATTERNS = (
    re.compile(r"^(person\d+)_(?:bacteria|virus)_\d+$"),  # person12_bacteria_31
    re.compile(r"^(NORMAL2-IM-\d+)(?:-\d+)+$"),  # NORMAL2-IM-0381-0001
    re.compile(r"^(IM-\d+)(?:-\d+)+$"),  # IM-0115-0001, also IM-0656-0001-0002
)


def patient_id(filename: str | Path) -> str:
    """Patient of a Ped-ChestXray file: ``person12_virus_31.jpeg`` -> ``person12``, ``IM-0115-0001`` ->
    ``IM-0115``, ``NORMAL2-IM-0381-0001`` -> ``NORMAL2-IM-0381``; any other name is its own patient (stem)."""
    stem = Path(filename).stem
    for pattern in _PATIENT_PATTERNS:
        match = pattern.match(stem)
        if match:
            return match.group(1)
    log.debug("%s: name matches no Ped-ChestXray pattern; treated as its own patient", filename)
    return stem


def label_from_name(path: str | Path) -> int:
    """Three-class label: 0 normal, 1 bacterial, 2 viral pneumonia.

    The class folder (``NORMAL`` or ``PNEUMONIA``) decides normal vs pneumonia, the name the kind
    (``person1_bacteria_1.jpeg``, ``person1_virus_6.jpeg``).

    Raises:
        ValueError: unknown class folder, or a pneumonia name saying neither "bacteria" nor "virus".
    """
    path = Path(path)
    if path.parent.name == "NORMAL":
        return 0
    if path.parent.name != "PNEUMONIA":
        raise ValueError(f"{path}: class folder must be NORMAL or PNEUMONIA, not {path.parent.name!r}")
    name = path.name.lower()
    if "bacteria" in name:
        return 1
    if "virus" in name:
        return 2
    raise ValueError(f"{path}: pneumonia file name says neither 'bacteria' nor 'virus'")


def _stratum(path: Path) -> int:
    """Finest class a name tells (3 = pneumonia of unnamed kind), so binary and three-class runs share a split."""
    try:
        return label_from_name(path)
    except ValueError:
        return 3


def _one_line(text: str) -> str:
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def _kind(p: Path) -> str:
    """What a folder entry that is not an image file is, for the warning that counts them."""
    if p.is_symlink() and not p.exists():
        return "dangling symbolic link(s)"
    if p.is_dir() or p.is_file():
        return f"sub-folder(s) or file(s) without an image suffix {sorted(IMAGE_SUFFIXES)}"
    return "FIFO(s), socket(s) or device file(s)"


def find_images(
    data_dir: str | Path, require_val: bool = False, strict: bool = False
) -> dict[str, list[Path]]:
    """Image files per official split, NORMAL then PNEUMONIA, each sorted by name.

    Dotfiles (``.DS_Store``) are skipped. Sub-folders and files whose suffix is not in
    ``IMAGE_SUFFIXES`` are ignored with a warning that counts them; dangling symbolic links, FIFOs,
    sockets and devices are left out with a warning of their own (an error when ``strict``). Images
    that resolve outside ``data_dir`` through symbolic links (of the files or of their folders) are
    read, with a warning that counts them. ``val`` may be absent (empty list) unless ``require_val``.

    Raises:
        FileNotFoundError: one line: missing data_dir, split or class folder (all listed), a class
            folder that is a file, or a class folder without images (val excepted unless
            ``require_val``), each with the expected layout.
        ValueError: dangling links or special files when ``strict``.
    """
    root = Path(data_dir)
    layout = _one_line(LAYOUT)
    if not root.is_dir():
        raise FileNotFoundError(f"Ped-ChestXray data_dir {root} does not exist or is not a folder; {layout}")
    needed = SPLITS if require_val else ("train", "test")
    not_dirs = [
        root / s / c
        for s in SPLITS
        for c in CLASS_FOLDERS
        if (root / s / c).exists() and not (root / s / c).is_dir()
    ]
    not_dirs += [root / s for s in SPLITS if (root / s).exists() and not (root / s).is_dir()]
    if not_dirs:
        raise FileNotFoundError(
            f"Ped-ChestXray under {root}: {', '.join(str(m) for m in sorted(not_dirs))} must be a folder, "
            f"not a file; {layout}"
        )
    missing = [root / s / c for s in needed for c in CLASS_FOLDERS if not (root / s / c).is_dir()]
    if missing:
        nested = sorted(str(d) for d in root.iterdir() if (d / "train").is_dir())
        hint = (
            f" (a dataset was found one level down, in {', '.join(nested)}; point data_dir there)"
            if nested
            else ""
        )
        why = (
            " (split='official' needs val/)"
            if require_val and any(m.parent.name == "val" for m in missing)
            else ""
        )
        names = ", ".join(str(m) for m in missing)
        raise FileNotFoundError(f"Ped-ChestXray under {root}: missing folder(s) {names}{why}; {layout}{hint}")
    found: dict[str, list[Path]] = {}
    ignored: dict[str, list[Path]] = {}
    for split in SPLITS:
        found[split] = []
        for cls in CLASS_FOLDERS:
            folder = root / split / cls
            entries = sorted(folder.iterdir()) if folder.is_dir() else []
            images = [
                p
                for p in entries
                if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES
            ]
            kept = set(images)
            for p in entries:
                if not p.name.startswith(".") and p not in kept:
                    ignored.setdefault(_kind(p), []).append(p)
            if not images and split in needed:
                raise FileNotFoundError(
                    f"{folder}: no image files (suffixes {sorted(IMAGE_SUFFIXES)}); {layout}"
                )
            found[split].extend(images)
    # e.g. .dcm or .webp files, or images one folder deeper: a user may expect them read
    for kind, paths in ignored.items():
        shown = ", ".join(str(p) for p in paths[:3])
        message = f"Ped-ChestXray under {root}: ignored {len(paths)} {kind}, e.g. {shown}"
        if strict and not kind.startswith("sub-folder"):
            raise ValueError(f"{message} (strict=True)")
        log.warning(message)
    warn_escaping([p for s in SPLITS for p in found[s]], [root], f"Ped-ChestXray under {root}", log)
    return found
