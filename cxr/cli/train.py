"""``cxr-train``: seed → instantiate datamodule, model, task, callbacks, trainer → fit → test → ``metrics.json``.

Every run folder (Hydra's run dir) holds ``metrics.json`` (flat: test and best-val metrics, params,
FLOPs, train time), ``config.yaml`` (the composed config), ``checkpoints/`` and the logger's files.

The config is checked first (:mod:`cxr.config.validate`): a wrong name, key or data folder is one
line, before any data is read. ``ckpt_path=last`` (the default) continues from
``checkpoints/last.ckpt`` when the run folder has one, so an interrupted run resumes by re-running
its command in its folder: ``cxr-train <same overrides> hydra.run.dir=<run folder>``. A run stopped by
SIGTERM saves its resume point and exits with code 143 (128 + SIGTERM), never 0.
"""

from __future__ import annotations

import logging
import signal
import sys

import hydra
from omegaconf import DictConfig

from cxr.cli.common import raised_in
from cxr.config.compose import CONFIG_DIR, register_resolvers
from cxr.config.runs import (
    finished_metrics,
    metrics_json,
    prepare_run_folder,
    register_run_id_resolver,
    write_atomic,
)
from cxr.config.validate import ConfigError, check_overrides, check_run_folder, validate_config

log = logging.getLogger(__name__)
SIGTERM_EXIT_CODE = 128 + signal.SIGTERM  # 143, as a shell reports a process ended by SIGTERM
register_resolvers()
register_run_id_resolver()  # hydra.sweep.subdir=${cxr_run_id:}: a sweep job's folder named by its config


def run(cfg: DictConfig) -> dict[str, float]:
    """Train and/or test as configured; return the metrics written to ``metrics.json``."""
    augment = validate_config(cfg)  # first: a config error is one line, before heavy imports, files or data
    if cfg.get("skip_finished") and (done := finished_metrics(cfg.paths.output_dir, cfg)) is not None:
        log.info("%s finished with this config before: skipped (skip_finished=true)", cfg.paths.output_dir)
        return done

    import pytorch_lightning as pl
    from hydra.utils import instantiate
    from pytorch_lightning.utilities.exceptions import SIGTERMException

    from cxr.models.profile import model_cost
    from cxr.tasks.fit import fit_and_test

    output_dir, ckpt_path = prepare_run_folder(cfg)
    pl.seed_everything(cfg.seed, workers=True)
    datamodule = instantiate(cfg.datamodule, augment=augment, _convert_="all")
    model = _build(cfg.model, "model")
    task = instantiate(cfg.task, model=model, _convert_="all")
    callbacks = [instantiate(c, _convert_="all") for c in (cfg.get("callbacks") or {}).values() if c]
    logger = instantiate(cfg.logger) if cfg.get("logger") else False
    trainer = instantiate(
        cfg.trainer, callbacks=callbacks, logger=logger, default_root_dir=str(output_dir), _convert_="all"
    )
    size = int(cfg.datamodule.image_size)
    metrics = model_cost(model, (1, int(cfg.model.get("in_chans", 1)), size, size))
    try:
        metrics |= fit_and_test(
            trainer, task, datamodule, ckpt_path=ckpt_path, train=cfg.train, test=cfg.test,
            batch_size=cfg.datamodule.get("batch_size"), image_size=size,
        )  # fmt: skip
    except SIGTERMException:  # Lightning's, a SystemExit with code 0: a scheduler would see success
        log.warning(
            "stopped by SIGTERM after saving the resume point; re-run the same command with "
            "hydra.run.dir=%s to continue (exit code %d)", output_dir, SIGTERM_EXIT_CODE,
        )  # fmt: skip
        raise SystemExit(SIGTERM_EXIT_CODE) from None
    if trainer.is_global_zero:  # under DDP every rank gets the same synced metrics; one writes them
        write_atomic(output_dir / "metrics.json", metrics_json(metrics))
        log.info("metrics written to %s", output_dir / "metrics.json")
    return metrics


def _build(node: DictConfig, name: str):
    """Instantiate ``node``; a ValueError or OSError of the constructor (a bad ``pretrained_path``, a
    value out of range) becomes a one-line ConfigError naming ``name`` instead of Hydra's traceback."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    try:
        return instantiate(node, _convert_="all")
    except InstantiationException as err:
        cause = err.__cause__
        if isinstance(cause, ValueError | OSError):
            raise ConfigError(f"{name}: {' '.join(str(cause).split())}") from None
        raise


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
def _hydra_main(cfg: DictConfig) -> float | None:
    try:
        metrics = run(cfg)
    except ConfigError as err:
        raise SystemExit(f"cxr-train: error: {err}") from None
    except (ValueError, OSError) as err:
        if not raised_in(err, "cxr.data"):
            raise
        # bad input data (a layout, label or image problem; a full disk): one line, the file named
        log.debug("data error", exc_info=err)
        raise SystemExit(f"cxr-train: error: {' '.join(str(err).split())}") from None
    monitor = cfg.task.get("monitor")
    return metrics.get(f"best/{monitor}", metrics.get(monitor)) if monitor else None


def main() -> float | None:
    """``cxr-train``: check the command line's overrides (one-line errors), then compose and run with Hydra."""
    try:
        check_overrides(sys.argv[1:])
        check_run_folder(sys.argv[1:])
    except ConfigError as err:
        raise SystemExit(f"cxr-train: error: {err}") from None
    return _hydra_main()


if __name__ == "__main__":
    main()
