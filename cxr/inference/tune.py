"""``cxr-tune``: choose post-processing on validation predictions and store it beside the checkpoints.

Each checkpoint predicts on its own validation split (the datamodule settings saved in it, with the
given ``data_dir``), so every image is scored only by checkpoints that never trained on it: the
out-of-fold predictions of a k-fold ensemble. Detection: the ensemble's NMS IoU threshold and score
threshold are swept for the best RSNA mAP (:func:`cxr.inference.postprocess.sweep_nms`), also per epoch for the
paper's Fig. 8; classification: the decision threshold for the best F1 or a target recall.
Writes ``postprocess.json`` (read by ``cxr-predict``), and for detection ``nms_sweep.csv``,
``nms_sweep.png`` and ``ensemble_comparison.csv`` (the best mAP of pooling + NMS, of weighted box
fusion and of each checkpoint alone: :func:`compare_ensembles`), to ``out`` (default: the
checkpoints' common folder). The command line is
:mod:`cxr.cli.tune`.
"""

from __future__ import annotations

import datetime
import logging
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from cxr.inference.datamodules import rebuild_datamodule
from cxr.inference.members import Member, classify, detect, load_members, resolve_device
from cxr.inference.postprocess import (
    PostprocessSettings,
    adjust_box_sizes,
    average_probabilities,
    best_thresholds,
    choose_decision_threshold,
    plot_nms_sweep,
    settings_folder,
    sweep_nms,
)
from cxr.inference.postprocess.thresholds import NMS_GRID, SWEEP_COLUMNS  # 0.0 .. 1.0 (1.0: no suppression)
from cxr.inference.postprocess.wbf import ENSEMBLE_METHODS, fuse_images
from cxr.progress import progress

log = logging.getLogger(__name__)

SCORE_GRID = tuple(round(0.05 * i, 2) for i in range(1, 20))  # 0.05 .. 0.95


def _datamodule(member: Member, data_dir: Path, overrides: dict):
    return rebuild_datamodule(member.meta, member.task, data_dir, "validate", **overrides)


def _loader(member: Member, data_dir: Path, overrides: dict, cache: dict):
    key = repr(sorted({**member.meta["datamodule"], **overrides}.items()))
    if key not in cache:
        cache[key] = _datamodule(member, data_dir, overrides)
    return cache[key]


def detection_predictions(members: Sequence[Member], data_dir: str | Path, **overrides) -> tuple[dict, dict]:
    """Out-of-fold raw detections: ``({patientId: [(member index, detections)]}, {patientId: target})``,
    boxes x1y1x2y2 in original pixels."""
    from cxr.data.boxes import to_original

    predictions, targets, cache = defaultdict(list), {}, {}
    for k, member in enumerate(members):
        dm = _loader(member, Path(data_dir), overrides, cache)
        for batch in progress(dm.val_dataloader(), desc=f"validation {member.path.name}", unit="batch"):
            dets, _ = detect(member, batch["image"], batch["orig_size"])
            for pid, det, boxes, size in zip(
                batch["patient_id"], dets, batch["boxes"], batch["orig_size"], strict=True
            ):
                predictions[pid].append((k, det))
                targets[pid] = {"boxes": to_original(boxes, size, member.image_size)}
    return dict(predictions), targets


def _sweep(predictions: dict, targets: dict, members: Sequence[int], nms, scores, score_mode, ensemble="nms"):
    ids = [p for p in targets if any(k in members for k, _ in predictions[p])]
    preds = [[d for k, d in predictions[p] if k in members] for p in ids]
    return sweep_nms(preds, [targets[p] for p in ids], nms, scores, score_mode, ensemble), ids, preds


def compare_ensembles(
    predictions: dict,
    targets: dict,
    members: Sequence[Member],
    nms_thresholds,
    score_thresholds,
    score_mode: str = "mean",
    swept: dict | None = None,
) -> pd.DataFrame:
    """The best RSNA mAP over the threshold grid of each way to merge out-of-fold detections: all
    members pooled before one NMS (the paper's), weighted box fusion, and (with several members) each
    checkpoint alone on its own validation images. ``swept``: sweep tables already made, by method.

    Returns one row per way: ``merge``, ``checkpoints``, ``images``, ``nms_thresh`` (the IoU threshold:
    NMS, or WBF clustering), ``score_thresh``, ``rsna_map``.
    """
    everyone = range(len(members))
    rows = []
    for method in ENSEMBLE_METHODS:
        table = (swept or {}).get(method)
        if table is None:
            table = _sweep(
                predictions, targets, everyone, nms_thresholds, score_thresholds, score_mode, method
            )[0]
        name = {"nms": "ensemble: pooled + NMS", "wbf": "ensemble: weighted box fusion"}[method]
        images = sum(1 for p in targets if predictions.get(p))
        rows.append({"merge": name, "checkpoints": len(members), "images": images, **best_thresholds(table)})
    for k, member in enumerate(members if len(members) > 1 else []):
        table, ids, _ = _sweep(predictions, targets, [k], nms_thresholds, score_thresholds, score_mode)
        rows.append(
            {
                "merge": f"single: {member.path.name}",
                "checkpoints": 1,
                "images": len(ids),
                **best_thresholds(table),
            }
        )
    return pd.DataFrame(rows)


def tune_detection(
    members: Sequence[Member],
    data_dir: str | Path,
    out: Path,
    nms_thresholds=NMS_GRID,
    score_thresholds=SCORE_GRID,
    settings: PostprocessSettings | None = None,
    **overrides,
) -> PostprocessSettings:
    """Sweep NMS and score thresholds on out-of-fold predictions; write ``nms_sweep.csv``/``.png``."""
    from cxr.metrics import rsna_map

    settings = settings or PostprocessSettings("detection")
    predictions, targets = detection_predictions(members, data_dir, **overrides)
    table, ids, preds = _sweep(
        predictions,
        targets,
        range(len(members)),
        nms_thresholds,
        score_thresholds,
        settings.score_mode,
        settings.ensemble,
    )
    best = best_thresholds(table)
    epochs = sorted({m.epoch for m in members if m.epoch is not None})
    per_epoch = {
        e: _sweep(
            predictions,
            targets,
            [k for k, m in enumerate(members) if m.epoch == e],
            nms_thresholds,
            score_thresholds,
            settings.score_mode,
            settings.ensemble,
        )[0]
        for e in epochs
    }
    for e, t in per_epoch.items():
        table = table.merge(
            t.rename(columns={"rsna_map": f"rsna_map_epoch{e}", "boxes_per_image": f"boxes_epoch{e}"}),
            on=["nms_thresh", "score_thresh"],
            how="left",
        )
    table.to_csv(out / "nms_sweep.csv", index=False)
    plot_nms_sweep(per_epoch or {"all": table}, out / "nms_sweep.png")
    comparison = compare_ensembles(
        predictions,
        targets,
        members,
        nms_thresholds,
        score_thresholds,
        settings.score_mode,
        swept={settings.ensemble: table[list(SWEEP_COLUMNS)]},
    )
    comparison.to_csv(out / "ensemble_comparison.csv", index=False)
    log.info("ensembles compared (best RSNA mAP on validation):\n%s", comparison.to_string(index=False))
    merged = fuse_images(preds, settings.ensemble, best["nms_thresh"], settings.score_mode)
    by_method = {}
    for method in ("none", "shrink", "percentile"):
        kept = [{k: v[d["scores"] >= best["score_thresh"]] for k, v in d.items()} for d in merged]
        boxes = [adjust_box_sizes(d, method, settings.shrink, settings.percentile_scale) for d in kept]
        by_method[method] = rsna_map(
            [{"boxes": b, "scores": d["scores"]} for b, d in zip(boxes, kept, strict=True)],
            [targets[p] for p in ids],
        )
    return settings.replace(
        nms_thresh=best["nms_thresh"],
        score_thresh=best["score_thresh"],
        chosen_on={
            "data": str(data_dir),
            "images": len(ids),
            "predictions": "out-of-fold validation",
            "objective": "RSNA challenge mAP",
            "rsna_map": best["rsna_map"],
            "rsna_map_by_box_size": by_method,
            "ensemble_comparison": comparison.to_dict(orient="records"),
            "checkpoints": [str(m.path) for m in members],
            "date": datetime.datetime.now().isoformat(timespec="seconds"),
        },
    )


def tune_classification(
    members: Sequence[Member], data_dir: str | Path, target_recall: float | None = None, **overrides
) -> PostprocessSettings:
    """Decision threshold on the members' averaged validation probabilities (best F1 or ``target_recall``)."""
    probs, labels, cache = defaultdict(list), {}, {}
    for member in members:
        dm = _loader(member, Path(data_dir), overrides, cache)
        files = dm.splits["val"]
        for batch in progress(dm.val_dataloader(), desc=f"validation {member.path.name}", unit="batch"):
            p = classify(member, batch["image"])
            for i, index in enumerate(batch["index"].tolist()):
                probs[files[index]].append(p[i : i + 1])
                labels[files[index]] = int(batch["label"][i])
    files = sorted(probs)
    mean = torch.cat([average_probabilities(probs[f]) for f in files])
    chosen = choose_decision_threshold(1 - mean[:, 0], np.array([labels[f] for f in files]), target_recall)
    return PostprocessSettings(
        "classification",
        decision_threshold=chosen["threshold"],
        chosen_on={
            "data": str(data_dir),
            "images": len(files),
            "predictions": "validation split",
            "objective": f"recall >= {target_recall}" if target_recall is not None else "best F1",
            **chosen,
            "checkpoints": [str(m.path) for m in members],
            "date": datetime.datetime.now().isoformat(timespec="seconds"),
        },
    )


def tune_thresholds(
    checkpoints: Sequence[str | Path],
    data_dir: str | Path,
    out: str | Path | None = None,
    device: str = "auto",
    detection: dict | None = None,
    classification: dict | None = None,
    **loading,
) -> PostprocessSettings:
    """Python API of ``cxr-tune``: returns the settings written to ``out/postprocess.json``.

    The checkpoints' task picks the options that apply, so a caller need not load them first:
    ``detection`` (``nms_thresholds``, ``score_thresholds``, ``settings``) or ``classification``
    (``target_recall``). ``loading``: datamodule overrides (``batch_size``, ``num_workers``, ...).
    """
    members = load_members(checkpoints, resolve_device(device))
    out = Path(out) if out is not None else settings_folder(checkpoints)
    out.mkdir(parents=True, exist_ok=True)
    if members[0].task == "detection":
        settings = tune_detection(members, data_dir, out, **(detection or {}), **loading)
    else:
        settings = tune_classification(members, data_dir, **(classification or {}), **loading)
    path = settings.save(out, checkpoints=[m.path for m in members])
    log.info(
        "post-processing written to %s: %s",
        path,
        {k: v for k, v in settings.__dict__.items() if k != "chosen_on"},
    )
    return settings
