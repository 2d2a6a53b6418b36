"""``cxr-train``: seed → instantiate datamodule, model, task, trainer → fit → test → ``metrics.json``.

Every run folder (Hydra's run dir) holds ``metrics.json`` (flat: test and best-val metrics, params,
FLOPs, train time), ``config.yaml`` (the composed config), ``checkpoints/`` and the logger's files.

The config is checked first (:mod:`cxr.validate`): a wrong name, key or data folder is one line,
before any data is read. ``ckpt_path=last`` (the default) continues from ``checkpoints/last.ckpt``
when the run folder has one, so an interrupted run resumes by re-running its command in its folder:
``cxr-train <same overrides> hydra.run.dir=<run folder>``; it ends as if never interrupted.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from cxr.config import CONFIG_DIR, build_augment, register_resolvers
from cxr.runs import finished_metrics, register_run_id_resolver

log = logging.getLogger(__name__)
register_resolvers()
register_run_id_resolver()  # hydra.sweep.subdir=${cxr_run_id:}: a sweep job's folder named by its config


def _scalars(metrics: dict) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if torch.as_tensor(v).numel() == 1}


def _resolve_ckpt(ckpt_path: str | None, output_dir: Path) -> str | None:
    if ckpt_path != "last":
        return ckpt_path
    last = output_dir / "checkpoints" / "last.ckpt"
    return str(last) if last.exists() else None


def _check_resume(ckpt: str | None, previous_config: Path, plain: DictConfig) -> None:
    """Refuse an unsafe checkpoint before Lightning loads it; warn when the run's config has changed."""
    import yaml

    from cxr.checkpoint import CheckpointError, read_checkpoint
    from cxr.validate import ConfigError, config_changes

    if ckpt is None:
        return
    try:
        read_checkpoint(ckpt)  # weights_only load: a tampered or truncated file fails here, in one line
    except CheckpointError as err:
        raise ConfigError(
            f"ckpt_path: {err}; remove it to start over, or pass ckpt_path=<another file>"
        ) from None
    if previous_config.is_file():
        changes = config_changes(
            yaml.safe_load(previous_config.read_text()) or {}, OmegaConf.to_container(plain, resolve=True)
        )
        if changes:
            log.warning(
                "resuming %s with a config that differs from the one it started with (the optimizer "
                "state, learning rate included, comes from the checkpoint): %s",
                ckpt,
                "; ".join(changes),
            )


def _model_checkpoint(trainer):
    from pytorch_lightning.callbacks import ModelCheckpoint

    return next((c for c in trainer.checkpoint_callbacks if isinstance(c, ModelCheckpoint)), None)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def run(cfg: DictConfig) -> dict[str, float]:
    """Train and/or test as configured; return the flat metrics written to ``metrics.json``."""
    from cxr.validate import validate_config

    validate_config(cfg)  # first: a config error is one line, before heavy imports, files or data
    if cfg.get("skip_finished") and (done := finished_metrics(cfg.paths.output_dir, cfg)) is not None:
        log.info("%s finished with this config before: skipped (skip_finished=true)", cfg.paths.output_dir)
        return _scalars(done)

    import pytorch_lightning as pl
    from hydra.utils import instantiate

    from cxr.checkpoint import CheckpointMetadata
    from cxr.guards import NonFiniteGuard, out_of_memory_message
    from cxr.models.profile import count_flops, count_params

    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    plain = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    ckpt_path = _resolve_ckpt(cfg.ckpt_path, output_dir)
    if cfg.ckpt_path == "last" and ckpt_path:
        log.info("resuming from %s", ckpt_path)
    elif cfg.ckpt_path == "last":
        log.info("no checkpoints/last.ckpt in %s: starting a new run", output_dir)
    _check_resume(ckpt_path, output_dir / "config.yaml", plain)
    _write_atomic(output_dir / "config.yaml", OmegaConf.to_yaml(plain, resolve=True))
    pl.seed_everything(cfg.seed, workers=True)

    datamodule = instantiate(cfg.datamodule, augment=build_augment(cfg.augment), _convert_="all")
    model = instantiate(cfg.model, _convert_="all")
    task = instantiate(cfg.task, model=model, _convert_="all")
    callbacks = [instantiate(c, _convert_="all") for c in (cfg.get("callbacks") or {}).values() if c]
    callbacks.append(CheckpointMetadata(cfg))
    guards = cfg.get("guards") or {}
    guard = NonFiniteGuard(guards.get("nonfinite", "stop"), guards.get("max_consecutive_skips", 10))
    callbacks.append(guard)
    logger = instantiate(cfg.logger) if cfg.get("logger") else False
    trainer: pl.Trainer = instantiate(
        cfg.trainer, callbacks=callbacks, logger=logger, default_root_dir=str(output_dir), _convert_="all"
    )

    in_chans = int(cfg.model.get("in_chans", 1))
    size = int(cfg.datamodule.image_size)
    metrics: dict[str, float] = {"params": count_params(model)}
    try:
        metrics["flops"] = count_flops(model, (1, in_chans, size, size))
    except Exception as err:
        log.warning("FLOP count failed for %s: %s", type(model).__name__, err)

    oom_hint = {"batch_size": cfg.datamodule.get("batch_size"), "image_size": size}
    if cfg.train:
        start = time.perf_counter()
        try:
            trainer.fit(task, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
        except torch.OutOfMemoryError as err:
            raise torch.OutOfMemoryError(out_of_memory_message(err, **oom_hint)) from err
        if not any(k.startswith("val/") for k in trainer.callback_metrics):
            # resumed a finished run: nothing was trained, so measure the final weights on val again
            trainer.validate(task, datamodule=datamodule, verbose=False)
        metrics["train_time_s"] = time.perf_counter() - start
        metrics["epochs"] = trainer.current_epoch
        metrics["nonfinite_skipped"] = guard.skipped
        metrics.update(_scalars({k: v for k, v in trainer.callback_metrics.items() if k.startswith("val/")}))
        ckpt_cb = _model_checkpoint(trainer)
        if ckpt_cb is not None and ckpt_cb.best_model_score is not None:
            metrics[f"best/{ckpt_cb.monitor}"] = float(ckpt_cb.best_model_score)
    if cfg.test:
        ckpt_cb = _model_checkpoint(trainer)
        best = ckpt_cb.best_model_path if cfg.train and ckpt_cb is not None else ""
        if not cfg.train and ckpt_path is None:
            log.warning("train=false and no checkpoint: testing an untrained model")
        try:
            trainer.test(task, datamodule=datamodule, ckpt_path=best or ckpt_path, weights_only=True)
        except torch.OutOfMemoryError as err:
            raise torch.OutOfMemoryError(out_of_memory_message(err, **oom_hint)) from err
        metrics.update(_scalars({k: v for k, v in trainer.callback_metrics.items() if k.startswith("test/")}))
    confusion = getattr(task, "confusion", {})
    result = {**metrics, **{f"{stage}/confusion_matrix": m for stage, m in confusion.items()}}
    if trainer.is_global_zero:  # under DDP every rank gets the same synced metrics; one writes them
        _write_atomic(output_dir / "metrics.json", json.dumps(result, indent=2, sort_keys=True))
        log.info("metrics written to %s", output_dir / "metrics.json")
    return metrics


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
def _hydra_main(cfg: DictConfig) -> float | None:
    from cxr.validate import ConfigError

    try:
        metrics = run(cfg)
    except ConfigError as err:
        raise SystemExit(f"cxr-train: error: {err}") from None
    monitor = cfg.task.get("monitor")
    return metrics.get(f"best/{monitor}", metrics.get(monitor)) if monitor else None


def main() -> float | None:
    """``cxr-train``: check the command line's overrides (one-line errors), then compose and run with Hydra."""
    from cxr.validate import ConfigError, check_overrides

    try:
        check_overrides(sys.argv[1:])
    except ConfigError as err:
        raise SystemExit(f"cxr-train: error: {err}") from None
    return _hydra_main()


if __name__ == "__main__":
    main()
