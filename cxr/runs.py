"""Run identity: a run's id is a hash of what it computes, so a run folder named by it can be
recognised as finished (``metrics.json``), interrupted (``checkpoints/last.ckpt``) or new.

``cxr-train`` uses it to skip finished runs (``skip_finished=true``) and to name sweep job folders
(``hydra.sweep.subdir=${cxr_run_id:}``); ``cxr-reproduce`` uses it to plan and share runs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

# Keys that do not change what a run computes: where it writes, logs and caches, and how it resumes.
IGNORED_KEYS = (
    "hydra",
    "name",
    "paths",
    "ckpt_path",
    "skip_finished",
    "logger",
    "callbacks",
    "trainer.enable_progress_bar",
    "trainer.log_every_n_steps",
    "datamodule.num_workers",
    "datamodule.cache_dir",
    "datamodule.pin_memory",
)


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(tree, Mapping) or not tree:
        return {prefix.rstrip("."): tree}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out.update(_flatten(value, f"{prefix}{key}."))
    return out


def _ignored(key: str) -> bool:
    return any(key == k or key.startswith(f"{k}.") for k in IGNORED_KEYS)


def config_fingerprint(cfg: DictConfig | Mapping) -> dict[str, Any]:
    """What a run computes, as a flat ``{dotted key: resolved value}``: the config without
    :data:`IGNORED_KEYS`. Works on a composed config (with or without its ``hydra`` node, before the
    run folder is known) and on a run folder's resolved ``config.yaml``."""
    tree = OmegaConf.to_container(cfg, resolve=False) if isinstance(cfg, DictConfig) else dict(cfg)
    for key in ("hydra", "name", "callbacks", "logger"):  # these may point at the run folder itself
        tree.pop(key, None)
    if isinstance(tree.get("paths"), dict):
        tree["paths"] = {k: v for k, v in tree["paths"].items() if k != "output_dir"}
    resolved = OmegaConf.to_container(OmegaConf.create(tree), resolve=True)
    return {k: v for k, v in _flatten(resolved).items() if not _ignored(k)}


def run_id(cfg: DictConfig | Mapping) -> str:
    """12 hex digits of the SHA-256 of :func:`config_fingerprint`: equal configs, equal ids."""
    text = json.dumps(config_fingerprint(cfg), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def finished_metrics(run_dir: str | Path, cfg: DictConfig | Mapping) -> dict | None:
    """The ``metrics.json`` of ``run_dir`` if it finished with the same fingerprint as ``cfg``, else None."""
    run_dir = Path(run_dir)
    metrics, config = run_dir / "metrics.json", run_dir / "config.yaml"
    if not (metrics.is_file() and config.is_file()):
        return None
    if run_id(OmegaConf.load(config)) != run_id(cfg):
        return None
    return json.loads(metrics.read_text())


def register_run_id_resolver() -> None:
    """``${cxr_run_id:}``: the run id of the config it sits in (``hydra.sweep.subdir=${cxr_run_id:}``)."""
    if not OmegaConf.has_resolver("cxr_run_id"):
        OmegaConf.register_new_resolver("cxr_run_id", lambda *, _root_: run_id(_root_))


def job_status(run_dir: Path) -> str:
    """``"finished"`` (``metrics.json`` there), ``"interrupted"`` (only ``checkpoints/last.ckpt``: a
    re-run resumes it) or ``"new"``."""
    if (run_dir / "metrics.json").is_file():
        return "finished"
    return "interrupted" if (run_dir / "checkpoints" / "last.ckpt").is_file() else "new"
