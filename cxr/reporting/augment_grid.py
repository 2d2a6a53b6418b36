"""Augmentation pictures: one dataset's images, each drawn several times through its training transform."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _pick_rows(dataset, n: int) -> list[int]:
    """Prefer samples with boxes (detection), else the first ``n``."""
    boxes = getattr(dataset, "boxes", None)
    rows = getattr(dataset, "rows", None)
    if boxes is not None:
        keys = rows if rows is not None else range(len(dataset))
        with_boxes = [i for i, k in enumerate(keys) if len(boxes[k])]
        return (with_boxes + [i for i in range(len(dataset)) if i not in with_boxes])[:n]
    return list(range(min(n, len(dataset))))


def render_grid(
    dataset, out: str | Path, rows: int = 4, cols: int = 5, seed: int = 0, title: str = "", dpi: int = 80
) -> Path:
    """Draw ``rows`` samples of ``dataset`` (its ``transform`` is the augmenting one) to a PNG."""
    import albumentations as A
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    from cxr.data.transforms import RadiographTransform

    augmenting = dataset.transform
    plain = RadiographTransform((), augmenting.mean, augmenting.std)
    for (
        t
    ) in augmenting.augment:  # albumentations draws from its own generator; seed it for a repeatable picture
        if isinstance(t, A.BasicTransform):
            t.set_random_seed(seed)
    indices = _pick_rows(dataset, rows)
    fig, axes = plt.subplots(
        len(indices), cols + 1, figsize=(2.2 * (cols + 1), 2.2 * len(indices)), squeeze=False
    )
    for r, i in enumerate(indices):
        for c in range(cols + 1):
            dataset.transform = plain if c == 0 else augmenting
            sample = dataset[i]
            ax = axes[r, c]
            ax.imshow(augmenting.denormalize(sample["image"])[0].numpy(), cmap="gray", vmin=0, vmax=1)
            for x1, y1, x2, y2 in np.asarray(sample.get("boxes", np.zeros((0, 4)))).reshape(-1, 4):
                ax.add_patch(
                    Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor="red", linewidth=1.2)
                )
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title("original" if c == 0 else f"draw {c}", fontsize=9)
    dataset.transform = augmenting
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi)
    plt.close(fig)
    return out
