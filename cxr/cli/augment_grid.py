"""``cxr-augment-grid``: a picture of an augmentation set on real (or synthetic) training samples.

    cxr-augment-grid augment=heavy_customrot datamodule=rsna datamodule.data_dir=DIR out=grid.png

A Hydra app on ``conf/augment_grid.yaml`` (``cxr-train``'s config plus ``out``, ``rows``, ``cols``):
each row is one training sample, first as the model sees it without augmentation, then ``cols``
random draws of the set, with boxes drawn in red (like Fig. 5 of Gabruseva et al.).
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from cxr.config.compose import CONFIG_DIR
from cxr.config.validate import ConfigError, check_overrides

CONFIG_NAME = "augment_grid"


def render(cfg: DictConfig) -> Path:
    """Draw the grid the composed ``augment_grid`` config describes; returns the PNG's path."""
    from hydra.utils import instantiate

    from cxr.config.compose import build_augment
    from cxr.reporting.augment_grid import render_grid

    for key in ("rows", "cols"):
        value = cfg.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"{key}={value}: use a whole number >= 1")
    datamodule = instantiate(cfg.datamodule, augment=build_augment(cfg.augment), _convert_="all")
    datamodule.setup("fit")
    dataset = datamodule.train_dataloader().dataset
    choices = OmegaConf.select(cfg, "hydra.runtime.choices", default=None)
    if choices is None:  # under @hydra.main the hydra node lives in HydraConfig, not in cfg
        from hydra.core.hydra_config import HydraConfig

        choices = HydraConfig.get().runtime.choices
    name = choices.get("augment", "?")
    return render_grid(dataset, cfg.out, cfg.rows, cfg.cols, seed=int(cfg.seed), title=f"augment={name}")


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name=CONFIG_NAME)
def _hydra_main(cfg: DictConfig) -> None:
    try:
        out = render(cfg)
    except (ConfigError, ValueError, OSError) as err:
        raise SystemExit(f"cxr-augment-grid: error: {err}") from None
    print(f"wrote {out}")


def main() -> None:
    """``cxr-augment-grid``: check the overrides (one-line errors), then compose and draw with Hydra."""
    try:
        check_overrides(sys.argv[1:], config_name=CONFIG_NAME)
    except ConfigError as err:
        raise SystemExit(f"cxr-augment-grid: error: {err}") from None
    _hydra_main()


if __name__ == "__main__":
    main()
