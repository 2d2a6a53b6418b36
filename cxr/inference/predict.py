"""``cxr-predict``: run trained checkpoints (one, or an ensemble of folds and epochs) on new images.

The command line is :mod:`cxr.cli.predict`. No Hydra config is needed: each checkpoint carries its model, input size, normalisation and tuned
thresholds (:mod:`cxr.inference.members`); ``postprocess.json`` beside the checkpoints (written by
``cxr-tune``) supplies the ensemble's NMS and score thresholds, box-size method and decision
threshold when it was tuned on exactly these checkpoints (path and SHA-256), and command-line values
win over both. ``settings.json`` in the output folder records what was used and why.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import stat
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from cxr.inference.inputs import INPUT_SUFFIXES, prepare, read_input
from cxr.inference.members import Member, classify, detect
from cxr.inference.postprocess import adjust_box_sizes, average_probabilities
from cxr.inference.postprocess.settings import PostprocessSettings, applicable_settings, file_sha256
from cxr.inference.postprocess.wbf import fuse_detections
from cxr.progress import progress

log = logging.getLogger(__name__)


def _kind(path: Path) -> str | None:
    """Why ``path`` cannot be decoded as a file (a dangling link, a FIFO, a socket ...), or None."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        if path.is_symlink():
            return f"{path}: dangling symbolic link (to {os.readlink(path)})"
        return f"{path}: no such file"
    except OSError as err:
        return f"{path}: cannot be read ({err.strerror or err})"
    if stat.S_ISREG(mode):
        return None
    kinds = {stat.S_ISFIFO: "a FIFO (named pipe)", stat.S_ISSOCK: "a socket", stat.S_ISDIR: "a folder"}
    kind = next((name for test, name in kinds.items() if test(mode)), "a device or special file")
    return f"{path}: not a regular file but {kind}; not read"


def _walk(folder: Path) -> tuple[list[Path], dict[Path, str], int]:
    """Entries under ``folder`` named like images (any kind of entry but a folder), the ones refused
    with why (a symbolic link to outside ``folder``), and how many other files there are. Symbolic
    links to folders are not descended into (warned)."""
    root = folder.resolve()
    found, refused, others = [], {}, 0
    for current, dirs, names in os.walk(folder, followlinks=False):
        here = Path(current)
        for name in sorted(dirs):
            if (here / name).is_symlink():
                log.warning(
                    "%s: symbolic link to a folder (%s), not searched", here / name, os.readlink(here / name)
                )
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            path = here / name
            if name.startswith(".") or path.suffix.lower() not in INPUT_SUFFIXES:
                others += not name.startswith(".")
                continue
            found.append(path)
            if path.is_symlink() and path.exists():  # a dangling one is reported as such later
                target = path.resolve()
                if not target.is_relative_to(root):
                    refused[path] = f"{path}: symbolic link to {target}, outside {folder}; not followed"
    return found, refused, others


def list_inputs(inputs: Sequence[str | Path]) -> tuple[list[Path], dict[Path, str]]:
    """Everything to predict on, and the entries refused with why.

    Files are taken as given; folders are searched recursively (symbolic links to folders are not
    followed) for entries named like JPEG/PNG/DICOM files, whatever they are (a dangling link or a
    FIFO gets its row with an error later); other files there are counted in a warning. A symbolic
    link in a folder that points outside it is refused (a row with the reason, and a warning).

    Raises:
        FileNotFoundError: an input that does not exist at all, or nothing to predict on.
    """
    files: list[Path] = []
    refused: dict[Path, str] = {}
    for item in map(Path, inputs):
        if item.is_dir():
            found, outside, others = _walk(item)
            if others:
                log.warning(
                    "%s: ignored %d file(s) without an image suffix %s", item, others, sorted(INPUT_SUFFIXES)
                )
            if outside:
                log.warning(
                    "%s: %d symbolic link(s) lead outside the folder and are not followed (see the error column)",
                    item,
                    len(outside),
                )
            files.extend(found)
            refused.update(outside)
        elif os.path.lexists(item):
            files.append(item)
        else:
            raise FileNotFoundError(f"{item}: no such file or folder")
    if not files:
        raise FileNotFoundError(f"no image files in {', '.join(map(str, inputs))}")
    return files, refused


def _mean(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) / len(known) if known else None


def resolve_settings(
    members: Sequence[Member], postprocess: str = "auto", **overrides: Any
) -> tuple[PostprocessSettings, str, dict[str, Any]]:
    """The post-processing to predict with, where it came from, and the post-processing file decision.

    The members' own values, then a ``postprocess.json`` (:func:`applicable_settings`: with
    ``postprocess="auto"`` only one tuned on exactly these checkpoints; ``"none"`` ignores it, else a
    path), then ``overrides`` (``None`` values ignored). Returns ``(settings, source, file record)``.
    """
    task = members[0].task
    if task == "detection":
        tuned = _mean([m.score_thresh for m in members])
        base = PostprocessSettings(
            task,
            nms_thresh=float(members[0].meta["model_kwargs"].get("nms_thresh", 0.5)),
            score_thresh=0.5 if tuned is None else tuned,
        )
    else:
        threshold = _mean([m.decision_threshold for m in members])
        base = PostprocessSettings(task, decision_threshold=0.5 if threshold is None else threshold)
    source = "checkpoints"
    loaded, record = applicable_settings([m.path for m in members], postprocess)
    if loaded is not None:
        if loaded.task != task:
            raise ValueError(
                f"{record['path']}: settings for {loaded.task}, but the checkpoints are {task} models"
            )
        values = {k: v for k, v in dataclasses.asdict(loaded).items() if k != "checkpoints"}
        base, source = base.replace(**values), str(record["path"])  # its nulls keep the members' values
    changed = {k: v for k, v in overrides.items() if v is not None}
    if changed:
        source += " + command line " + ", ".join(f"{k}={v}" for k, v in changed.items())
    from_file = loaded is not None and loaded.score_thresh is not None
    if task == "detection" and tuned is None and not from_file and "score_thresh" not in changed:
        log.warning(
            "no tuned score threshold in the checkpoints (validation never ran) and none given: "
            "using 0.5; run cxr-tune or pass --score"
        )
    return base.replace(**changed), source, record


def _column(name: str) -> str:
    """``prob_`` + the class name in lower case with runs of other characters as one ``_``."""
    return "prob_" + re.sub(r"[^0-9a-z]+", "_", name.lower()).strip("_")


def _decode(
    files: Sequence[Path], hints: Sequence[int | None], refused: Mapping[Path, str]
) -> tuple[dict, dict[Path, str]]:
    """Decode each file once per size hint; refused entries, entries that are not regular files and
    unreadable files go to the errors, named with their message (a FIFO is never opened)."""
    images, errors = {}, {}
    for path in files:
        reason = refused.get(path) or _kind(path)
        if reason is not None:
            errors[path] = reason
            continue
        for hint in hints:
            try:
                images[path, hint] = read_input(path, size_hint=hint)
            except Exception as err:  # any decoder failure is this file's problem, reported in its row
                message = str(err) or type(err).__name__
                errors[path] = message if str(path) in message else f"{path}: {message}"
                break
    return images, errors


def _key(member: Member) -> tuple:
    return member.image_size, member.mean, member.std


def _detection_rows(members, settings, files, images, overlay_dir):
    decoded = [images[f, None] for f in files]
    sizes = torch.tensor([img.shape[:2] for img in decoded])
    inputs = {k: torch.stack([prepare(img, *k) for img in decoded]) for k in {_key(m) for m in members}}
    per_image: list[list[dict]] = [[] for _ in files]
    global_probs = []
    for member in members:
        dets, probs = detect(member, inputs[_key(member)], sizes)
        for i, det in enumerate(dets):
            per_image[i].append(det)
        if probs is not None:
            global_probs.append(probs)
    probs = average_probabilities(global_probs) if global_probs else None
    names = [_column(c) for c in members[0].class_names]
    heat = _detector_heatmaps(members, inputs) if overlay_dir is not None else None
    rows, kept = [], {}
    for i, (path, img) in enumerate(zip(files, decoded, strict=True)):
        merged = fuse_detections(per_image[i], settings.ensemble, settings.nms_thresh, settings.score_mode)
        keep = merged["scores"] >= settings.score_thresh
        merged = {k: v[keep] for k, v in merged.items()}
        boxes = adjust_box_sizes(merged, settings.box_size, settings.shrink, settings.percentile_scale)
        h, w = img.shape[:2]
        boxes = torch.stack(
            [
                boxes[:, 0].clamp(0, w),
                boxes[:, 1].clamp(0, h),
                boxes[:, 2].clamp(0, w),
                boxes[:, 3].clamp(0, h),
            ],
            dim=1,
        )
        kept[path] = {"boxes": boxes, "scores": merged["scores"]}
        extra = {} if probs is None else dict(zip(names, probs[i].tolist(), strict=True))
        for (x1, y1, x2, y2), score in zip(boxes.tolist(), merged["scores"].tolist(), strict=True):
            rows.append(
                {
                    "file": str(path),
                    "score": score,
                    "x": x1,
                    "y": y1,
                    "width": x2 - x1,
                    "height": y2 - y1,
                    **extra,
                }
            )
        if not len(boxes):
            rows.append({"file": str(path), **extra})
        if overlay_dir is not None:
            from cxr.inference.overlays import draw_boxes, save_png

            picture = draw_boxes(img, boxes, merged["scores"], heatmap=heat[i])
            save_png(picture, _overlay_path(overlay_dir, path))
    return rows, kept


def _detector_heatmaps(members, inputs):
    """float32 (B, S, S) array: the mean over members of their encoder's heat map (:func:`cxr.inference.overlays.detector_cam`:
    Grad-CAM of the global Lung Opacity class where there is a global head), at the first member's size."""
    from cxr.inference.overlays import detector_cam

    names = members[0].class_names
    index = names.index("Lung Opacity") if "Lung Opacity" in names else None
    size = members[0].image_size
    heat = 0
    for member in members:
        cam = torch.from_numpy(detector_cam(member.model, inputs[_key(member)].to(member.device), index))
        cam = torch.nn.functional.interpolate(cam[:, None], size=(size, size), mode="bilinear")[:, 0]
        heat = heat + cam / len(members)
    return heat.numpy()


def _classification_rows(members, settings, files, images, overlay_dir):
    names, rows, probs = members[0].class_names, [], []
    for member in members:
        decoded = [images[f, member.image_size] for f in files]
        probs.append(classify(member, torch.stack([prepare(img, *_key(member)) for img in decoded])))
    probs = average_probabilities(probs)
    p_pneumonia = 1 - probs[:, 0]
    for i, path in enumerate(files):
        label = int(p_pneumonia[i] >= settings.decision_threshold)
        cls = (
            int(probs[i, 1:].argmax()) + 1 if label else 0
        )  # below the threshold: normal; else the likeliest kind
        extra = (
            {_column(n): p for n, p in zip(names, probs[i].tolist(), strict=True)} if len(names) > 2 else {}
        )
        rows.append(
            {
                "file": str(path),
                "probability": float(p_pneumonia[i]),
                "label": label,
                "class": names[cls],
                **extra,
            }
        )
    if overlay_dir is not None:
        _heatmaps(members, files, images, probs, overlay_dir)
    return rows, {}


def _heatmaps(members, files, images, probs, overlay_dir):
    from cxr.inference.overlays import draw_heatmap, grad_cam, save_png

    # the most probable pneumonia class of each image: where its evidence lies
    target = (probs[:, 1:].argmax(dim=1)).tolist() if probs.shape[1] > 2 else [0] * len(files)
    heat = 0
    for member in members:
        decoded = [images[f, member.image_size] for f in files]
        batch = torch.stack([prepare(img, *_key(member)) for img in decoded]).to(member.device)
        index = target if member.model.num_classes == 1 else [t + 1 for t in target]
        heat = heat + grad_cam(member.model, batch, index) / len(members)
    for i, path in enumerate(files):
        save_png(draw_heatmap(images[path, members[0].image_size], heat[i]), _overlay_path(overlay_dir, path))


def _overlay_path(folder: Path, source: Path) -> Path:
    path = folder / f"{source.stem}.png"
    n = 1
    while path.exists():  # same name in another input folder
        path = folder / f"{source.stem}_{n}.png"
        n += 1
    return path


def run_prediction(
    members: Sequence[Member],
    files: Sequence[Path],
    out: str | Path,
    settings: PostprocessSettings,
    batch_size: int = 8,
    overlays: bool = False,
    refused: Mapping[Path, str] | None = None,
) -> pd.DataFrame:
    """Predict on ``files`` with the ensemble of ``members`` and write ``out/predictions.csv`` (and, for
    detection, ``out/submission.csv``; with ``overlays``, PNGs in ``out/overlays``). Returns the
    predictions table. Every file gets at least one row: unreadable ones, entries that are not
    regular files and those in ``refused`` (path -> reason) get a row with their ``error``; the rest go on.

    Raises:
        ValueError: ``batch_size`` < 1.
    """
    from cxr.inference.submission import write_submission

    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    refused = refused or {}
    out = Path(out)
    overlay_dir = out / "overlays" if overlays else None
    if overlay_dir is not None:
        overlay_dir.mkdir(parents=True, exist_ok=True)
    detection = members[0].task == "detection"
    hints = [None] if detection else sorted({m.image_size for m in members})
    rows, kept, errors = [], {}, {}
    with progress(total=len(files), desc="cxr-predict", unit="img") as bar:
        for start in range(0, len(files), batch_size):
            chunk = list(files[start : start + batch_size])
            images, failed = _decode(chunk, hints, refused)
            errors.update(failed)
            readable = [f for f in chunk if f not in failed]
            if readable:
                make = _detection_rows if detection else _classification_rows
                new_rows, new_kept = make(members, settings, readable, images, overlay_dir)
                rows.extend(new_rows)
                kept.update(new_kept)
            rows.extend({"file": str(f), "error": failed[f]} for f in chunk if f in failed)
            bar.update(len(chunk))
    columns = (
        ["file", "score", "x", "y", "width", "height"]
        if detection
        else ["file", "probability", "label", "class"]
    )
    table = pd.DataFrame(rows)
    table = table.reindex(
        columns=[*columns, *[c for c in table.columns if c not in columns and c != "error"], "error"]
    )
    table["error"] = table["error"].astype(object).fillna("")
    if "label" in table:
        table["label"] = table["label"].astype("Int64")  # stays an integer beside the empty rows of errors
    table.to_csv(out / "predictions.csv", index=False)
    if errors:
        log.warning(
            "%d of %d file(s) could not be read or were refused; see the error column of %s",
            len(errors),
            len(files),
            out / "predictions.csv",
        )
    if detection:
        by_patient = {}
        for path, pred in kept.items():
            by_patient.setdefault(path.stem, pred)
        if len(by_patient) < len(kept):
            log.warning(
                "%d file(s) share a name with another (patientId = file name): only the first of each is "
                "in submission.csv",
                len(kept) - len(by_patient),
            )
        if errors:
            log.warning("%d unreadable file(s) are left out of submission.csv", len(errors))
        write_submission(by_patient, out / "submission.csv")
    return table


def check_output_folder(out: Path) -> None:
    """Raise ValueError (one line) when ``out`` cannot be an output folder: it is an existing file,
    or a path under one."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out}: is an existing file, not a folder; name a folder")
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"--out {out}: {parent} is a file, not a folder")
            break


def predict(
    checkpoints: Sequence[str | Path],
    inputs: Sequence[str | Path],
    out: str | Path,
    device: str = "auto",
    batch_size: int = 8,
    overlays: bool = False,
    postprocess: str = "auto",
    backend: str = "auto",
    **overrides: Any,
) -> pd.DataFrame:
    """Python API of ``cxr-predict``: load the ensemble, find the inputs, choose the post-processing
    (:func:`resolve_settings`; ``overrides`` are its ``ensemble``, ``nms_thresh``, ``score_thresh``,
    ``score_mode``, ``box_size``, ``shrink``, ``percentile_scale``, ``decision_threshold``) and the
    backend (:func:`cxr.inference.onnx_member.select_backend`: ``"auto"`` runs classifiers on the CPU
    with ONNX Runtime), write ``out/settings.json`` and the predictions (:func:`run_prediction`).
    Returns the predictions table.

    Raises:
        FileNotFoundError, ValueError: a missing checkpoint or input, a bad value; before any image is read.
    """
    from cxr.inference.members import load_members, resolve_device
    from cxr.inference.onnx_member import select_backend

    out = Path(out)
    check_output_folder(out)
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    members = load_members(checkpoints, resolve_device(device))
    files, refused = list_inputs(inputs)
    settings, source, record = resolve_settings(members, postprocess, **overrides)
    members, backend = select_backend(members, backend, overlays)
    log.info("running %d checkpoint(s) on %s", len(members), backend)
    out.mkdir(parents=True, exist_ok=True)
    (out / "settings.json").write_text(
        json.dumps(
            {
                "checkpoints": [str(m.path) for m in members],
                "checkpoint_sha256": [file_sha256(m.path) for m in members],
                "backend": backend,
                "source": source,
                "postprocess_file": record,
                "postprocess": {k: v for k, v in dataclasses.asdict(settings).items() if k != "checkpoints"},
            },
            indent=2,
        )
        + "\n"
    )
    log.info("post-processing: %s (recorded in %s)", source, out / "settings.json")
    table = run_prediction(
        members, files, out, settings, batch_size=batch_size, overlays=overlays, refused=refused
    )
    log.info("predictions written to %s", out)
    return table
