"""``cxr-train``: seed → instantiate datamodule, model, task, trainer → fit → test → ``metrics.json``.

Every run folder (Hydra's run dir) holds ``metrics.json`` (flat: test and best-val metrics, params,
FLOPs, train time), ``config.yaml`` (the composed config), ``checkpoints/`` and the logger's files.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from cxr.config import CONFIG_DIR, build_augment, register_resolvers

log = logging.getLogger(__name__)
register_resolvers()


def _scalars(metrics: dict) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if torch.as_tensor(v).numel() == 1}


def _resolve_ckpt(ckpt_path: str | None, output_dir: Path) -> str | None:
    if ckpt_path != "last":
        return ckpt_path
    last = output_dir / "checkpoints" / "last.ckpt"
    return str(last) if last.exists() else None


def run(cfg: DictConfig) -> dict[str, float]:
    """Train and/or test as configured; return the flat metrics written to ``metrics.json``."""
    import pytorch_lightning as pl
    from hydra.utils import instantiate

    from cxr.checkpoint import CheckpointMetadata
    from cxr.models.profile import count_flops, count_params

    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    plain = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    (output_dir / "config.yaml").write_text(OmegaConf.to_yaml(plain, resolve=True))
    pl.seed_everything(cfg.seed, workers=True)

    datamodule = instantiate(cfg.datamodule, augment=build_augment(cfg.augment), _convert_="all")
    model = instantiate(cfg.model, _convert_="all")
    task = instantiate(cfg.task, model=model, _convert_="all")
    callbacks = [instantiate(c, _convert_="all") for c in (cfg.get("callbacks") or {}).values() if c]
    callbacks.append(CheckpointMetadata(cfg))
    logger = instantiate(cfg.logger) if cfg.get("logger") else False
    trainer: pl.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=logger,
                                      default_root_dir=str(output_dir), _convert_="all")

    in_chans = int(cfg.model.get("in_chans", 1))
    size = int(cfg.datamodule.image_size)
    metrics: dict[str, float] = {"params": count_params(model)}
    try:
        metrics["flops"] = count_flops(model, (1, in_chans, size, size))
    except Exception as err:
        log.warning("FLOP count failed for %s: %s", type(model).__name__, err)

    if cfg.train:
        start = time.perf_counter()
        trainer.fit(task, datamodule=datamodule, ckpt_path=_resolve_ckpt(cfg.ckpt_path, output_dir),
                    weights_only=True)
        metrics["train_time_s"] = time.perf_counter() - start
        metrics["epochs"] = trainer.current_epoch
        metrics.update(_scalars({k: v for k, v in trainer.callback_metrics.items() if k.startswith("val/")}))
        ckpt_cb = trainer.checkpoint_callback
        if ckpt_cb is not None and ckpt_cb.best_model_score is not None:
            metrics[f"best/{ckpt_cb.monitor}"] = float(ckpt_cb.best_model_score)
    if cfg.test:
        ckpt_cb = trainer.checkpoint_callback
        best = ckpt_cb.best_model_path if cfg.train and ckpt_cb is not None else ""
        trainer.test(task, datamodule=datamodule, ckpt_path=best or _resolve_ckpt(cfg.ckpt_path, output_dir),
                     weights_only=True)
        metrics.update(_scalars({k: v for k, v in trainer.callback_metrics.items() if k.startswith("test/")}))
    confusion = getattr(task, "confusion", {})
    result = {**metrics, **{f"{stage}/confusion_matrix": m for stage, m in confusion.items()}}
    (output_dir / "metrics.json").write_text(json.dumps(result, indent=2, sort_keys=True))
    log.info("metrics written to %s", output_dir / "metrics.json")
    return metrics


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
def main(cfg: DictConfig) -> float | None:
    metrics = run(cfg)
    monitor = cfg.task.get("monitor")
    return metrics.get(f"best/{monitor}", metrics.get(monitor)) if monitor else None


if __name__ == "__main__":
    main()
