"""``postprocess.json``: the post-processing chosen on validation data, stored beside the checkpoints
so that ``cxr-predict`` reuses it.

Written by ``cxr-tune`` (or :meth:`PostprocessSettings.save`) with the checkpoints it was tuned on,
each by its path relative to the file's folder and the SHA-256 of its bytes. ``cxr-predict`` and
``cxr-export`` use the file found by :func:`find_settings` only when it names exactly the checkpoints
they run (:func:`applicable_settings`); any other file (another run's, an ensemble of other
checkpoints, a checkpoint retrained since) is ignored with a warning. ``cxr-predict --postprocess
PATH`` uses PATH even so, with a warning; ``--postprocess none`` ignores any file; its own options
(``--nms``, ``--score``, ``--threshold``, ``--box-size`` ...) win over the file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cxr.files import write_text_atomic
from cxr.inference.postprocess.boxes import BOX_SIZE_METHODS
from cxr.inference.postprocess.ensemble import SCORE_MODES
from cxr.inference.postprocess.wbf import ENSEMBLE_METHODS

FILENAME = "postprocess.json"
TASKS = ("detection", "classification")
log = logging.getLogger(__name__)


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes, hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while block := file.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def checkpoint_records(checkpoints: Sequence[str | Path], folder: str | Path) -> list[dict[str, str]]:
    """``[{"path": relative to folder, "sha256": ...}]`` of ``checkpoints``, sorted by path: how a
    settings file in ``folder`` names what it was tuned on (relative, so a moved run folder still matches)."""
    folder = Path(folder).resolve()
    records = [
        {"path": Path(os.path.relpath(Path(c).resolve(), folder)).as_posix(), "sha256": file_sha256(c)}
        for c in checkpoints
    ]
    return sorted(records, key=lambda r: r["path"])


@dataclasses.dataclass
class PostprocessSettings:
    """Post-processing of one model or ensemble.

    Attributes:
        task: ``"detection"`` or ``"classification"``.
        ensemble: how the members' boxes are merged (detection): ``"nms"``, the paper's pooling before
            one NMS (:func:`ensemble_detections`), or ``"wbf"``, weighted box fusion
            (:func:`cxr.inference.postprocess.wbf.weighted_boxes_fusion`).
        nms_thresh: IoU above which the ensemble's single NMS suppresses a box, or WBF clusters it
            (detection); 1.0 suppresses nothing (the paper's optimum lies "between 0.45 and 1").
        score_thresh: boxes scoring below it are dropped (detection).
        score_mode: how the ensemble scores a box, ``"mean"`` or ``"max"`` (:func:`ensemble_detections`).
        box_size: ``"none"``, ``"shrink"`` or ``"percentile"`` (:mod:`cxr.inference.postprocess.boxes`).
        shrink: factor of ``box_size="shrink"``.
        percentile_scale: ``scale`` of ``box_size="percentile"``.
        decision_threshold: pneumonia probability at or above which an image is called pneumonia
            (classification).
        chosen_on: what the values were chosen on: data, objective and score, checkpoints, date.
        checkpoints: the checkpoints tuned on, ``[{"path", "sha256"}]`` with paths relative to the
            file's folder (:func:`checkpoint_records`); empty: not tied to any (never applied automatically).
    """

    task: str
    ensemble: str = "nms"
    nms_thresh: float | None = None
    score_thresh: float | None = None
    score_mode: str = "mean"
    box_size: str = "shrink"
    shrink: float = 0.875
    percentile_scale: float = 1.6
    decision_threshold: float | None = None
    chosen_on: dict[str, Any] = dataclasses.field(default_factory=dict)
    checkpoints: list[dict[str, str]] = dataclasses.field(default_factory=list)

    def __post_init__(self) -> None:
        problems = []
        if self.task not in TASKS:
            problems.append(f"task must be one of {TASKS}, got {self.task!r}")
        if self.ensemble not in ENSEMBLE_METHODS:
            problems.append(f"ensemble must be one of {ENSEMBLE_METHODS}, got {self.ensemble!r}")
        if self.score_mode not in SCORE_MODES:
            problems.append(f"score_mode must be one of {SCORE_MODES}, got {self.score_mode!r}")
        if self.box_size not in BOX_SIZE_METHODS:
            problems.append(f"box_size must be one of {BOX_SIZE_METHODS}, got {self.box_size!r}")
        for name in ("nms_thresh", "score_thresh", "decision_threshold"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= float(value) <= 1.0:
                problems.append(f"{name} must be in [0, 1], got {value}")
        if not self.shrink > 0 or not self.percentile_scale >= 0:
            problems.append(
                f"need shrink > 0 and percentile_scale >= 0, got {self.shrink}, {self.percentile_scale}"
            )
        if problems:
            raise ValueError("; ".join(problems))

    def save(self, path: str | Path, checkpoints: Sequence[str | Path] | None = None) -> Path:
        """Write as JSON (atomically); ``path`` may be a folder, then ``<path>/postprocess.json``.
        ``checkpoints``: the files these settings were tuned on, recorded by path and SHA-256
        (:func:`checkpoint_records`) so that only they pick the file up."""
        path = Path(path)
        if path.is_dir():
            path = path / FILENAME
        settings = self
        if checkpoints is not None:
            settings = dataclasses.replace(self, checkpoints=checkpoint_records(checkpoints, path.parent))
        return write_text_atomic(path, json.dumps(dataclasses.asdict(settings), indent=2) + "\n")

    def mismatch(self, checkpoints: Sequence[str | Path], folder: str | Path) -> str | None:
        """Why these settings (read from a file in ``folder``) were not tuned on exactly
        ``checkpoints``, or None when they were (same relative paths, same SHA-256)."""
        if not self.checkpoints:
            return "it names no checkpoints (written without them, or before cxr-tune recorded them)"
        given = checkpoint_records(checkpoints, folder)
        if [r["path"] for r in given] != sorted(str(r.get("path")) for r in self.checkpoints):
            tuned = ", ".join(str(r.get("path")) for r in self.checkpoints)
            return f"it was tuned on other checkpoints ({tuned})"
        recorded = {str(r.get("path")): r.get("sha256") for r in self.checkpoints}
        changed = [r["path"] for r in given if recorded[r["path"]] != r["sha256"]]
        if changed:
            return f"{', '.join(changed)} changed since it was tuned (SHA-256 differs)"
        return None

    @classmethod
    def load(cls, path: str | Path) -> PostprocessSettings:
        """Read a file written by :meth:`save`; unknown keys or bad values raise, naming the file."""
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise ValueError(f"{path}: cannot read post-processing settings ({err})") from err
        known = {f.name for f in dataclasses.fields(cls)}
        if not isinstance(data, dict) or set(data) - known:
            extra = sorted(set(data) - known) if isinstance(data, dict) else type(data).__name__
            raise ValueError(f"{path}: unknown post-processing setting(s) {extra}; known: {sorted(known)}")
        try:
            return cls(**data)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{path}: {err}") from err

    def replace(self, **changes: Any) -> PostprocessSettings:
        """A copy with ``changes`` applied (``None`` values are ignored)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


def settings_folder(checkpoints: Sequence[str | Path]) -> Path:
    """The folder ``postprocess.json`` of these checkpoints belongs in: their deepest common folder."""
    if not checkpoints:
        raise ValueError("settings_folder: no checkpoints")
    return Path(os.path.commonpath([str(Path(c).resolve().parent) for c in checkpoints]))


def find_settings(checkpoints: Sequence[str | Path], levels: int = 2) -> Path | None:
    """``postprocess.json`` in the checkpoints' common folder or up to ``levels`` folders above it
    (``run/checkpoints/x.ckpt`` finds ``run/postprocess.json``); None if there is none."""
    folder = settings_folder(checkpoints)
    for candidate in [folder, *folder.parents][: levels + 1]:
        if (candidate / FILENAME).is_file():
            return candidate / FILENAME
    return None


def applicable_settings(
    checkpoints: Sequence[str | Path], postprocess: str | Path = "auto"
) -> tuple[PostprocessSettings | None, dict[str, Any]]:
    """The post-processing file to use with ``checkpoints``, and a record of the decision.

    ``postprocess="auto"``: the file :func:`find_settings` finds, used only when it names exactly
    these checkpoints (else ignored with a warning); ``"none"``: no file; a path: that file, with a
    warning when it was tuned on other checkpoints. The record ``{"path", "used", "reason"}`` is
    what ``cxr-predict`` writes to ``settings.json``.

    Raises:
        ValueError: an explicit file that cannot be read, naming it.
    """
    if str(postprocess) == "none":
        return None, {"path": None, "used": False, "reason": "--postprocess none"}
    explicit = str(postprocess) != "auto"
    path = Path(postprocess) if explicit else find_settings(checkpoints)
    if path is None:
        return None, {
            "path": None,
            "used": False,
            "reason": f"no {FILENAME} in or above the checkpoints' folder",
        }
    if explicit and not path.is_file():
        raise ValueError(f"{path}: no such post-processing file")
    settings = PostprocessSettings.load(path)
    reason = settings.mismatch(checkpoints, path.parent)
    if reason is None:
        log.info("post-processing from %s (tuned on these checkpoints)", path)
        return settings, {"path": str(path), "used": True, "reason": "tuned on these checkpoints"}
    if explicit:
        log.warning("%s: used as asked, although %s", path, reason)
        return settings, {"path": str(path), "used": True, "reason": f"given explicitly, although {reason}"}
    log.warning("%s: ignored, because %s; pass --postprocess %s to use it anyway", path, reason, path)
    return None, {"path": str(path), "used": False, "reason": f"ignored: {reason}"}
