"""The post-processing sweep of ``cxr-reproduce``: RSNA mAP of the augmentation table's checkpoints
over NMS and score thresholds, with and without box shrinking: one model epoch by epoch (Gabruseva et
al.'s Fig. 8), that model at its best logged epoch, an ensemble of its best epochs (the paper's
"several checkpoints") and the ensemble of the table's models, each at its best logged epoch.

Detections are scored with the rule of the per-epoch validation (:class:`cxr.tasks.detection.DetectionTask`,
the authors' scorer): the model's prefilter, one NMS, then each image's boxes scoring under
``relative_score_thresh`` × its top score dropped (the authors: 0.5), then the score threshold. At
the model's own NMS IoU (0.05) and the validation's score thresholds, the single-model rows are the
logged ``val/rsna_map`` of that epoch (up to the 300 raw detections kept per image).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cxr.reporting.reproduce.plan import Job

log = logging.getLogger(__name__)

VERSION = 2  # bump when what the sweep computes changes: it is part of the cache key
# 0 .. 1.0 (1.0: no suppression), with 0.05: the authors' (and the models') own NMS IoU
NMS_GRID = (0.0, 0.05, *(round(0.1 * i, 1) for i in range(1, 11)))
# above the validation's own score thresholds (read from the checkpoint), which are swept too
COARSE_SCORES = (0.25, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
SHRINK = 0.875
CHECKPOINT_ENSEMBLE = 3  # the single model's best epochs averaged in the checkpoint-ensemble row
MONITOR = "val/rsna_map"  # how a run's best epoch is chosen: its logged validation score
COLUMNS = ["fold", "setting", "epoch", "in_table", "nms_thresh", "score_thresh", "rsna_map"]
_EPOCH_FILE = re.compile(r"epoch(\d+)\.ckpt")


def kept_checkpoints(run_dir: Path) -> dict[int, Path]:
    """A run's per-epoch checkpoints ``checkpoints/epochNNN.ckpt`` as ``{epoch (0-based): path}``, by epoch."""
    found = {}
    for path in (Path(run_dir) / "checkpoints").glob("epoch*.ckpt"):
        match = _EPOCH_FILE.fullmatch(path.name)
        if match:
            found[int(match.group(1))] = path
    return dict(sorted(found.items()))


def best_epochs(run_dir: Path, k: int = 1, monitor: str = MONITOR) -> list[int]:
    """The ``k`` kept epochs with the highest logged ``monitor`` (``csv/metrics.csv``), best first
    (the earlier epoch on ties). A run without logged values: its last ``k`` kept epochs, with a warning.
    Chosen without looking at the sweep: the same validation score that picked the paper's epochs."""
    from cxr.reporting.plots import read_log

    kept = list(kept_checkpoints(run_dir))
    logged = read_log(run_dir)
    values = logged[monitor].dropna() if logged is not None and monitor in logged else None
    if values is None or not any(e in values.index for e in kept):
        log.warning("%s: no logged %s for its checkpoints; using its last %d", run_dir, monitor, k)
        return kept[::-1][:k]
    score = {e: float(values[e]) if e in values.index else -math.inf for e in kept}
    return sorted(kept, key=lambda e: (-score[e], e))[:k]


def _file_digest(path: Path) -> str:
    from cxr.inference.postprocess.settings import file_sha256

    return file_sha256(path)[:16] if path.is_file() else "-"


def _score_grid(hparams: dict) -> tuple[float, ...]:
    own = [float(t) for t in hparams.get("score_thresholds", ())]
    return tuple(sorted({round(t, 4) for t in (*own, *COARSE_SCORES)}))


def postprocessed(images: Sequence[Sequence[dict]], nms_thresh: float, relative: float) -> list[dict]:
    """The validation's post-processing of raw member detections: per image, the members' boxes
    (``{"boxes": (N, 4) x1y1x2y2, "scores": (N,)}`` from :func:`cxr.inference.members.detect`, the
    model's prefilter applied, its NMS not) pooled, one NMS at IoU ``nms_thresh`` with member-mean
    scores (:func:`cxr.inference.postprocess.ensemble_images`), then boxes under ``relative`` × the
    image's top score dropped (:func:`cxr.tasks.detection.relative_filter`). For one member this is
    what :class:`~cxr.tasks.detection.DetectionTask` scores at its model's NMS IoU; the score
    threshold comes after. Returns per image ``{"boxes", "scores", ...}``, scores descending."""
    from cxr.inference.postprocess import ensemble_images
    from cxr.tasks.detection import relative_filter

    return relative_filter(ensemble_images(images, nms_thresh, "mean"), relative)


def _sweep_rows(images, truth, relative: float, scores, shrinks) -> list[tuple]:
    """``(shrink, nms, score, rsna_map)`` over the grids for per-image member detections."""
    from cxr.inference.postprocess import shrink_boxes
    from cxr.metrics import rsna_map

    rows = []
    for nms in NMS_GRID:
        merged = postprocessed(images, nms, relative)
        for shrink in shrinks:
            boxes = [d["boxes"] if shrink is None else shrink_boxes(d["boxes"], shrink) for d in merged]
            for score in scores:
                kept = [
                    {"boxes": b[d["scores"] >= score], "scores": d["scores"][d["scores"] >= score]}
                    for b, d in zip(boxes, merged, strict=True)
                ]
                rows.append((shrink, nms, score, rsna_map(kept, truth)))
    return rows


def postprocess_sweep(
    jobs: Sequence[Job],
    runs_dir: Path,
    data_dir: Path,
    single_row: str,
    cache_dir: Path | None = None,
    epoch_step: int = 1,
    top_k: int = CHECKPOINT_ENSEMBLE,
) -> Any:
    """RSNA mAP over :data:`NMS_GRID` × score thresholds (the validation's own plus
    :data:`COARSE_SCORES`) on each fold's validation images; every checkpoint predicts only its own
    validation fold, so no image is scored by a model that trained on it.

    Settings (``setting``), per fold:

    - ``single model (<single_row>)``: every ``epoch_step``-th kept epoch of that row's run, its last
      and its ``top_k`` best (``in_table`` True only at its best logged epoch, :func:`best_epochs`);
      with ``+ box shrink`` (×:data:`SHRINK` about each box centre after NMS) at the best epoch;
    - ``checkpoint ensemble ...``: the ``top_k`` best logged epochs of that run, pooled before one NMS,
      scores averaged (a checkpoint without a match counts 0); with and without box shrink;
    - ``ensemble of N models ...``: every row's run of the fold, each at its best logged epoch.

    Returns a DataFrame of :data:`COLUMNS`: ``epoch`` is the checkpoint's 0-based epoch (empty for
    ensembles); ``in_table`` marks the rows of the post-processing table (the others are the
    epoch-by-epoch curves of Fig. 8). Cached in ``runs_dir/postprocess-<hash>.csv``; the hash covers
    :data:`VERSION`, the grids and options, and each run's id and logged metrics.
    """
    import pandas as pd

    from cxr.inference.checkpoint import read_checkpoint
    from cxr.inference.members import load_members
    from cxr.inference.tune import detection_predictions

    if epoch_step < 1 or top_k < 1:
        raise ValueError(f"epoch_step and top_k must be >= 1, got {epoch_step} and {top_k}")
    finished = [j for j in jobs if (runs_dir / j.run_id / "metrics.json").is_file()]
    ckpts = {j.run_id: kept_checkpoints(runs_dir / j.run_id) for j in finished}  # epoch -> path
    done = [j for j in finished if ckpts[j.run_id]]
    single = [j for j in done if j.row == single_row]
    if not single:
        return pd.DataFrame(columns=COLUMNS)
    ranked = {j.run_id: best_epochs(runs_dir / j.run_id, top_k) for j in done}
    wanted = {j.run_id: {ranked[j.run_id][0]} for j in done}
    for j in single:
        kept = list(ckpts[j.run_id])
        wanted[j.run_id] |= {*kept[::epoch_step], kept[-1], *ranked[j.run_id]}
    hparams = read_checkpoint(ckpts[single[0].run_id][ranked[single[0].run_id][0]])
    hparams = hparams.get("hyper_parameters") or {}
    relative, scores = float(hparams.get("relative_score_thresh", 0.0)), _score_grid(hparams)
    identity = [
        f"v{VERSION}",
        repr((NMS_GRID, scores, relative, SHRINK, top_k, epoch_step, single_row, MONITOR)),
        *sorted(
            f"{j.row}|{j.replicate}|{j.run_id}|{_file_digest(runs_dir / j.run_id / 'csv' / 'metrics.csv')}"
            for j in done
        ),
    ]
    key = hashlib.sha256("\n".join(identity).encode()).hexdigest()[:12]
    cache = runs_dir / f"postprocess-{key}.csv"
    if cache.is_file():
        return pd.read_csv(cache, dtype={"epoch": "Int64"})

    overrides = {"num_workers": 0, **({"cache_dir": str(cache_dir)} if cache_dir else {})}
    detections, targets = {}, {}  # (run id, epoch) -> {patientId: detections}
    for j in done:  # one run at a time: a run's checkpoints share a datamodule, and memory stays small
        epochs = sorted(wanted[j.run_id])
        paths = ckpts[j.run_id]
        # a progress bar per checkpoint would drown the summary
        with contextlib.redirect_stderr(io.StringIO()):
            preds, truth = detection_predictions(
                load_members([paths[e] for e in epochs]), data_dir, **overrides
            )
        targets.update(truth)
        for k, e in enumerate(epochs):
            detections[j.run_id, e] = {p: d for p, dets in preds.items() for m, d in dets if m == k}

    n_models = len({j.row for j in done})
    name = f"single model ({single_row})"
    rows = []
    for fold in sorted({j.replicate for j in done}, key=str):
        here = [j for j in done if j.replicate == fold]
        run = next((j.run_id for j in here if j.row == single_row), None)
        if run is None:
            continue
        ids = sorted(detections[run, ranked[run][0]])
        truth = [targets[p] for p in ids]
        settings = [  # (label, epoch, in_table, members, shrinks)
            *(
                (name, e, e == ranked[run][0], [(run, e)], (None, SHRINK) if e == ranked[run][0] else (None,))
                for e in sorted(wanted[run])
            ),
            (
                f"checkpoint ensemble: {single_row}, its {len(ranked[run])} best epochs",
                None,
                True,
                [(run, e) for e in ranked[run]],
                (None, SHRINK),
            ),
            (
                f"ensemble of {n_models} models (one per augmentation)",
                None,
                True,
                [(j.run_id, ranked[j.run_id][0]) for j in here],
                (None, SHRINK),
            ),
        ]
        for label, epoch, in_table, members, shrinks in settings:
            if any(p not in detections[m] for m in members for p in ids):
                log.warning(
                    "fold %s, %s: a member did not predict every validation image; skipped", fold, label
                )
                continue
            images = [[detections[m][p] for m in members] for p in ids]
            for shrink, nms, score, value in _sweep_rows(images, truth, relative, scores, shrinks):
                setting = label if shrink is None else f"{label} + box shrink {shrink:g}"
                rows.append((int(fold), setting, epoch, in_table, nms, score, value))
    frame = pd.DataFrame(rows, columns=COLUMNS).astype({"epoch": "Int64"})
    frame.to_csv(cache, index=False)
    return frame
