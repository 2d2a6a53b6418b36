"""The post-processing sweep of ``cxr-reproduce``: RSNA mAP of the augmentation table's checkpoints
over NMS and score thresholds, with and without box shrinking, single model and ensemble."""

from __future__ import annotations

import contextlib
import hashlib
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cxr.reporting.reproduce.plan import Job

NMS_GRID = tuple(round(0.1 * i, 1) for i in range(11))  # 0.0 .. 1.0 (1.0: no suppression)
SCORE_GRID = tuple(round(0.05 * i, 2) for i in range(1, 20))  # 0.05 .. 0.95
SHRINK = 0.875


def postprocess_sweep(
    jobs: Sequence[Job], runs_dir: Path, data_dir: Path, single_row: str, cache_dir: Path | None = None
) -> Any:
    """RSNA mAP over NMS and score thresholds, with and without box shrinking (×0.875 about the centre),
    for one model (``single_row``) and for the ensemble of all rows' models of the same fold, on each
    fold's validation images (every member predicts only its own validation fold, so no image is
    scored by a model that trained on it). Returns a DataFrame: fold, setting, nms_thresh,
    score_thresh, rsna_map; cached in ``runs_dir/postprocess-<hash>.csv``."""
    import pandas as pd

    from cxr.inference.members import load_members
    from cxr.inference.postprocess import ensemble_images, shrink_boxes
    from cxr.inference.tune import detection_predictions
    from cxr.metrics import rsna_map

    done = [j for j in jobs if (runs_dir / j.run_id / "metrics.json").is_file()]
    ckpts = {j.run_id: sorted((runs_dir / j.run_id / "checkpoints").glob("epoch*.ckpt")) for j in done}
    done = [j for j in done if ckpts[j.run_id]]
    if not done:
        return pd.DataFrame(columns=["fold", "setting", "nms_thresh", "score_thresh", "rsna_map"])
    key = hashlib.sha256(" ".join(sorted(j.run_id for j in done)).encode()).hexdigest()[:12]
    cache = runs_dir / f"postprocess-{key}.csv"
    if cache.is_file():
        return pd.read_csv(cache)
    members = load_members([ckpts[j.run_id][-1] for j in done])
    overrides = {"num_workers": 0, **({"cache_dir": str(cache_dir)} if cache_dir else {})}
    with contextlib.redirect_stderr(io.StringIO()):  # a progress bar per checkpoint would drown the summary
        predictions, targets = detection_predictions(members, data_dir, **overrides)
    n_models = len({j.row for j in done})
    settings = {
        f"single model ({single_row})": {k for k, j in enumerate(done) if j.row == single_row},
        f"ensemble of {n_models} models (one per augmentation)": set(range(len(done))),
    }
    rows = []
    for fold in sorted({j.replicate for j in done}):
        ids = [p for p in targets if any(done[k].replicate == fold for k, _ in predictions[p])]
        for setting, chosen in settings.items():
            preds = [[d for k, d in predictions[p] if k in chosen] for p in ids]
            if not all(preds):
                continue
            truth = [targets[p] for p in ids]
            for nms in NMS_GRID:
                merged = ensemble_images(preds, nms, "mean")
                for shrink in (None, SHRINK):
                    boxes = [
                        d["boxes"] if shrink is None else shrink_boxes(d["boxes"], shrink) for d in merged
                    ]
                    label = setting if shrink is None else f"{setting} + box shrink {shrink:g}"
                    for score in SCORE_GRID:
                        kept = [
                            {"boxes": b[d["scores"] >= score], "scores": d["scores"][d["scores"] >= score]}
                            for b, d in zip(boxes, merged, strict=True)
                        ]
                        rows.append((int(fold), label, nms, score, rsna_map(kept, truth)))
    frame = pd.DataFrame(rows, columns=["fold", "setting", "nms_thresh", "score_thresh", "rsna_map"])
    frame.to_csv(cache, index=False)
    return frame
