"""``postprocess.json``: the post-processing chosen on validation data, stored beside the checkpoints
so that ``cxr-predict`` reuses it.

Written by ``cxr-tune`` (or :meth:`PostprocessSettings.save`); ``cxr-predict`` reads the file found by
:func:`find_settings` unless given ``postprocess=PATH`` or ``postprocess=none``, and its own
command-line values (``nms=``, ``score=``, ``threshold=``, ``box_size=`` ...) win over the file.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cxr.inference.postprocess.boxes import BOX_SIZE_METHODS
from cxr.inference.postprocess.ensemble import SCORE_MODES

FILENAME = "postprocess.json"
TASKS = ("detection", "classification")


@dataclasses.dataclass
class PostprocessSettings:
    """Post-processing of one model or ensemble.

    Attributes:
        task: ``"detection"`` or ``"classification"``.
        nms_thresh: IoU above which the ensemble's single NMS suppresses a box (detection).
        score_thresh: boxes scoring below it are dropped (detection).
        score_mode: how the ensemble scores a box, ``"mean"`` or ``"max"`` (:func:`ensemble_detections`).
        box_size: ``"none"``, ``"shrink"`` or ``"percentile"`` (:mod:`cxr.inference.postprocess.boxes`).
        shrink: factor of ``box_size="shrink"``.
        percentile_scale: ``scale`` of ``box_size="percentile"``.
        decision_threshold: pneumonia probability at or above which an image is called pneumonia
            (classification).
        chosen_on: what the values were chosen on: data, objective and score, checkpoints, date.
    """

    task: str
    nms_thresh: float | None = None
    score_thresh: float | None = None
    score_mode: str = "mean"
    box_size: str = "shrink"
    shrink: float = 0.875
    percentile_scale: float = 1.6
    decision_threshold: float | None = None
    chosen_on: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        problems = []
        if self.task not in TASKS:
            problems.append(f"task must be one of {TASKS}, got {self.task!r}")
        if self.score_mode not in SCORE_MODES:
            problems.append(f"score_mode must be one of {SCORE_MODES}, got {self.score_mode!r}")
        if self.box_size not in BOX_SIZE_METHODS:
            problems.append(f"box_size must be one of {BOX_SIZE_METHODS}, got {self.box_size!r}")
        for name in ("nms_thresh", "score_thresh", "decision_threshold"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= float(value) <= 1.0:
                problems.append(f"{name} must be in [0, 1], got {value}")
        if self.nms_thresh is not None and float(self.nms_thresh) >= 1.0:
            problems.append(f"nms_thresh must be < 1, got {self.nms_thresh}")
        if not self.shrink > 0 or not self.percentile_scale >= 0:
            problems.append(
                f"need shrink > 0 and percentile_scale >= 0, got {self.shrink}, {self.percentile_scale}"
            )
        if problems:
            raise ValueError("; ".join(problems))

    def save(self, path: str | Path) -> Path:
        """Write as JSON (atomically); ``path`` may be a folder, then ``<path>/postprocess.json``."""
        path = Path(path)
        if path.is_dir():
            path = path / FILENAME
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(dataclasses.asdict(self), indent=2) + "\n")
        os.replace(tmp, path)
        return path

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
