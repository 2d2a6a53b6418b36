"""Run identity: a run's id is a hash of what it computes, so a run folder named by it can be
recognised as finished (``metrics.json``), interrupted (``checkpoints/last.ckpt``) or new.

``cxr-train`` uses it to skip finished runs (``skip_finished=true``) and to name sweep job folders
(``hydra.sweep.subdir=${cxr_run_id:}``); ``cxr-reproduce`` uses it to plan and share runs.
:func:`prepare_run_folder` readies a run folder: the composed ``config.yaml`` and the resume point.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from cxr.files import write_text_atomic as write_atomic

log = logging.getLogger(__name__)

# The one list of keys that do not change what a run computes: where it writes, logs and caches,
# how it resumes and which callbacks watch it. Run identity leaves them out; a resumed run may change them.
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


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(tree, Mapping) or not tree:
        return {prefix.rstrip("."): tree}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out.update(flatten(value, f"{prefix}{key}."))
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
    return {k: v for k, v in flatten(resolved).items() if not _ignored(k)}


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


def metrics_json(metrics: Mapping) -> str:
    """``metrics.json``'s text: strict JSON, an undefined metric (NaN, e.g. the AUROC of a split with
    one class) written as ``null``."""
    plain = {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in metrics.items()}
    return json.dumps(plain, indent=2, sort_keys=True, allow_nan=False)


def _check_resume(ckpt: str, previous_config: Path, plain: DictConfig) -> None:
    """Refuse an unsafe checkpoint before Lightning loads it; warn when the run's config has changed."""
    import yaml

    from cxr.config.validate import ConfigError, config_changes
    from cxr.inference.checkpoint import CheckpointError, read_checkpoint

    try:
        read_checkpoint(ckpt)  # weights_only load: a tampered or truncated file fails here, in one line
    except CheckpointError as err:
        raise ConfigError(
            f"ckpt_path: {err}; remove it to start over, or pass ckpt_path=<another file>"
        ) from None
    if previous_config.is_file():
        old = yaml.safe_load(previous_config.read_text()) or {}
        changes = config_changes(old, OmegaConf.to_container(plain, resolve=True))
        if changes:
            log.warning(
                "resuming %s with a config that differs from the one it started with (the optimizer "
                "state, learning rate included, comes from the checkpoint): %s",
                ckpt,
                "; ".join(changes),
            )


def prepare_run_folder(cfg: DictConfig) -> tuple[Path, str | None]:
    """Create ``cfg.paths.output_dir``, check the checkpoint to resume from, write ``config.yaml``.

    ``ckpt_path=last`` means ``<run folder>/checkpoints/last.ckpt`` when it exists, else a new run.
    Returns the run folder and the checkpoint to resume from (None: start afresh).
    """
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    plain = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    ckpt_path = cfg.ckpt_path
    if ckpt_path == "last":
        last = output_dir / "checkpoints" / "last.ckpt"
        ckpt_path = str(last) if last.exists() else None
        log.info("resuming from %s", last) if ckpt_path else log.info("no %s: starting a new run", last)
    if ckpt_path is not None:
        _check_resume(ckpt_path, output_dir / "config.yaml", plain)
    write_atomic(output_dir / "config.yaml", OmegaConf.to_yaml(plain, resolve=True))
    return output_dir, ckpt_path
