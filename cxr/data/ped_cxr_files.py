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


def find_images(data_dir: str | Path, require_val: bool = False) -> dict[str, list[Path]]:
    """Image files per official split, NORMAL then PNEUMONIA, each sorted by name.

    Dotfiles (``.DS_Store``) are skipped; sub-folders and files whose suffix is not in
    ``IMAGE_SUFFIXES`` are ignored with a warning that counts them.
    ``val`` may be absent (empty list) unless ``require_val``.

    Raises:
        FileNotFoundError: missing data_dir, split or class folder (all listed, with the expected
            layout), or a class folder without images (val excepted unless ``require_val``).
    """
    root = Path(data_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"Ped-ChestXray data_dir {root} does not exist or is not a folder\n{LAYOUT}")
    needed = SPLITS if require_val else ("train", "test")
    missing = [root / s / c for s in needed for c in CLASS_FOLDERS if not (root / s / c).is_dir()]
    if missing:
        nested = sorted(str(d) for d in root.iterdir() if (d / "train").is_dir())
        hint = (
            f"\n(a dataset was found one level down, in {', '.join(nested)}; point data_dir there)"
            if nested
            else ""
        )
        raise FileNotFoundError(
            f"Ped-ChestXray under {root}: missing folder(s) "
            f"{', '.join(str(m) for m in missing)}\n{LAYOUT}{hint}"
        )
    found: dict[str, list[Path]] = {}
    ignored: list[Path] = []
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
            ignored += [p for p in entries if not p.name.startswith(".") and p not in kept]
            if not images and split in needed:
                raise FileNotFoundError(
                    f"{folder}: no image files (suffixes {sorted(IMAGE_SUFFIXES)})\n{LAYOUT}"
                )
            found[split].extend(images)
    if ignored:  # e.g. .dcm or .webp files, or images nested one folder deeper: a user may expect them read
        log.warning(
            "Ped-ChestXray under %s: ignored %d sub-folder(s) or file(s) without an image suffix %s, e.g. %s",
            root,
            len(ignored),
            sorted(IMAGE_SUFFIXES),
            ", ".join(str(p) for p in ignored[:3]),
        )
    return found
