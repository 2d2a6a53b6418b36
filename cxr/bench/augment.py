"""Throughput of each augmentation set: images/s at 512 px on one CPU thread, with 0–4 boxes.

    python -m cxr.bench.augment [--size 512] [--n 200] [--out experiments/results]

Writes ``augment-throughput-cpu.json`` and ``.md``. The figure covers the whole per-sample
pipeline of a training sample (augment + normalise + to tensor), as a dataloader worker runs it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np


def measure(name: str, size: int = 512, n: int = 200, seed: int = 0) -> float:
    """Images/s of the ``name`` set on uint8 phantoms of side ``size`` with 0–4 boxes each."""
    import cv2
    import torch

    from cxr.config.compose import build_augment, compose
    from cxr.data.transforms import RadiographTransform
    from cxr.synth.phantom import chest_phantom, lung_boxes

    threads, cv2_threads = torch.get_num_threads(), cv2.getNumThreads()
    torch.set_num_threads(1)  # one loader worker's view; restored after, so callers keep theirs
    cv2.setNumThreads(1)
    try:
        rng = np.random.default_rng(seed)
        transform = RadiographTransform(build_augment(compose([f"augment={name}"]).augment))
        x1, y1 = lung_boxes(size, size)[0][:2]
        boxes = [np.array([[x1, y1, x1 + 60, y1 + 80]] * k, np.float32) for k in range(5)]
        images = [chest_phantom(rng, size, size) for _ in range(8)]
        for i in range(10):  # warm-up
            transform(images[i % 8], boxes[i % 5])
        start = time.perf_counter()
        for i in range(n):
            transform(images[i % 8], boxes[i % 5])
        return n / (time.perf_counter() - start)
    finally:
        torch.set_num_threads(threads)
        cv2.setNumThreads(cv2_threads)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--out", default="experiments/results")
    args = parser.parse_args(argv)
    from cxr.config.compose import CONFIG_DIR

    sets = sorted(p.stem for p in (CONFIG_DIR / "augment").glob("*.yaml"))
    results = {name: round(measure(name, args.size, args.n), 1) for name in sets}
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, 1 thread used"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    record = {"size": args.size, "n": args.n, "machine": machine, "images_per_s": results}
    (out / "augment-throughput-cpu.json").write_text(json.dumps(record, indent=2))
    lines = [
        f"Augmentation throughput, {args.size} px uint8 phantoms with 0–4 boxes, one CPU thread ({machine}).",
        "Made by `python -m cxr.bench.augment`.",
        "",
        "| set | images/s |",
        "|---|---:|",
    ]
    lines += [f"| {k} | {v:,.0f} |" for k, v in results.items()]
    (out / "augment-throughput-cpu.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
