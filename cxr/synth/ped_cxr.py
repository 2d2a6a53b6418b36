"""A synthetic Ped-ChestXray tree: phantom radiographs in the Kermany (2018) folder layout and naming.

Written layout, as in the real release::

    <out>/{train,val,test}/NORMAL/IM-0007-0001.jpeg, NORMAL2-IM-0003-0002.jpeg
    <out>/{train,val,test}/PNEUMONIA/person12_bacteria_31.jpeg, person13_virus_9.jpeg

Split and class sizes follow the real counts scaled to ``n`` (train 1,341 + 3,875, val 8 + 8,
test 234 + 390: about 1 NORMAL to 3 PNEUMONIA), with at least two images per class in val and
test. Patients sometimes have several images, never crossing splits. Bacterial pneumonia draws
1-2 dense focal opacities, viral 2-3 fainter, larger ones in both lungs, always inside
``lung_boxes``. Image size does not depend on the class (unlike the real data, where it is a
known shortcut), so a model has to find the opacities.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from cxr.synth.phantom import Box, chest_phantom, lung_boxes

REAL_COUNTS = {
    ("train", "NORMAL"): 1341,
    ("train", "PNEUMONIA"): 3875,
    ("val", "NORMAL"): 8,
    ("val", "PNEUMONIA"): 8,
    ("test", "NORMAL"): 234,
    ("test", "PNEUMONIA"): 390,
}
MIN_IMAGES = 20
RGB_FRACTION = 0.05  # the real release has a few hundred 3-channel JPEGs among grayscale ones


@dataclass(frozen=True)
class _Planned:
    split: str
    folder: str
    name: str
    kind: str  # "normal", "bacteria" or "virus"


def split_counts(n: int) -> dict[tuple[str, str], int]:
    """Images per (split, class folder) for ``n`` images: real proportions, val and test ≥ 2 per class."""
    if n < MIN_IMAGES:
        raise ValueError(f"n={n} is too small for a Ped-ChestXray tree; use n >= {MIN_IMAGES}")
    total = sum(REAL_COUNTS.values())
    counts = {key: max(2, round(n * c / total)) for key, c in REAL_COUNTS.items() if key[0] != "train"}
    counts["train", "NORMAL"] = max(2, round(n * REAL_COUNTS["train", "NORMAL"] / total))
    counts["train", "PNEUMONIA"] = n - sum(counts.values())
    return counts


def _plan(n: int, rng: np.random.Generator) -> list[_Planned]:
    """File names for every image; patient numbers and image counters run on across splits."""
    serial = {"IM": 0, "NORMAL2-IM": 0}
    person = 0
    running = {"bacteria": 0, "virus": 0}  # the real pneumonia names number images per kind
    planned: list[_Planned] = []
    for (split, folder), count in split_counts(n).items():
        left = count
        while left > 0:
            if folder == "NORMAL":
                k = min(left, int(rng.choice([1, 2, 3], p=[0.8, 0.15, 0.05])))
                prefix = "NORMAL2-IM" if rng.random() < 0.3 else "IM"
                serial[prefix] += 1
                names = [f"{prefix}-{serial[prefix]:04d}-{j:04d}.jpeg" for j in range(1, k + 1)]
                kind = "normal"
            else:
                k = min(left, int(rng.choice([1, 2, 3], p=[0.6, 0.3, 0.1])))
                kind = "bacteria" if rng.random() < 2 / 3 else "virus"
                person += 1
                names = []
                for _ in range(k):
                    running[kind] += 1
                    names.append(f"person{person}_{kind}_{running[kind]}.jpeg")
            planned.extend(_Planned(split, folder, name, kind) for name in names)
            left -= k
    return planned


def _opacities(rng: np.random.Generator, kind: str, height: int, width: int) -> tuple[list[Box], float]:
    """Opacity boxes (x1, y1, x2, y2 pixels, inside a lung) and their strength for one image."""
    if kind == "normal":
        return [], 0.0
    lungs = lung_boxes(height, width)
    if kind == "bacteria":
        count, w_range, h_range, strength = (
            int(rng.integers(1, 3)),
            (0.45, 0.8),
            (0.25, 0.45),
            rng.uniform(0.35, 0.5),
        )
        sides = rng.integers(0, 2, size=count)
    else:
        count, w_range, h_range, strength = (
            int(rng.integers(2, 4)),
            (0.6, 0.95),
            (0.35, 0.6),
            rng.uniform(0.25, 0.35),
        )
        sides = (int(rng.integers(0, 2)) + np.arange(count)) % 2  # bilateral
    boxes: list[Box] = []
    for side in sides:
        x1, y1, x2, y2 = lungs[int(side)]
        bw, bh = (x2 - x1) * rng.uniform(*w_range), (y2 - y1) * rng.uniform(*h_range)
        bx, by = rng.uniform(x1, x2 - bw), rng.uniform(y1, y2 - bh)
        boxes.append((bx, by, bx + bw, by + bh))
    return boxes, float(strength)


def write_ped_cxr(
    out: str | Path, n: int = 600, seed: int = 0, min_side: int = 96, max_side: int = 320
) -> Path:
    """Write ``n`` phantom radiographs as ``<out>/{train,val,test}/{NORMAL,PNEUMONIA}/*.jpeg``.

    Args:
        out: root folder (created; must not already hold a train, val or test folder with files).
        n: number of images, at least 20.
        seed: everything (names, sizes, anatomy, opacities, which files are RGB) follows from it;
            the same seed writes byte-identical files.
        min_side, max_side: range of image heights and widths in pixels (aspect ratio 0.8-1.5).

    Returns:
        ``Path(out)``.
    """
    if not 8 <= min_side <= max_side:
        raise ValueError(f"need 8 <= min_side <= max_side, got min_side={min_side}, max_side={max_side}")
    out = Path(out)
    for split in ("train", "val", "test"):
        if (out / split).is_dir() and any((out / split).rglob("*")):
            raise FileExistsError(
                f"{out / split} already holds files; write the synthetic tree to an empty folder"
            )
    rng = np.random.default_rng(seed)
    planned = _plan(n, rng)
    rgb = set(
        rng.choice(len(planned), size=max(1, round(RGB_FRACTION * len(planned))), replace=False).tolist()
    )
    for i, item in enumerate(planned):
        height = int(rng.integers(min_side, max_side + 1))
        width = int(np.clip(round(height * rng.uniform(0.8, 1.5)), min_side, max_side))
        boxes, strength = _opacities(rng, item.kind, height, width)
        pixels = chest_phantom(rng, height, width, opacities=boxes, opacity_strength=strength)
        image = Image.fromarray(np.stack([pixels] * 3, axis=-1)) if i in rgb else Image.fromarray(pixels)
        folder = out / item.split / item.folder
        folder.mkdir(parents=True, exist_ok=True)
        image.save(folder / item.name, format="JPEG", quality=90)
    return out
