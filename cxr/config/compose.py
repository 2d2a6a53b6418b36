"""Hydra/OmegaConf glue: resolvers, config location and building objects from the composed config."""

from __future__ import annotations

import warnings
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

CONFIG_DIR = Path(__file__).resolve().parents[2] / "conf"


def _precision() -> str:
    """bf16 mixed precision where a CUDA device is present, else full 32-bit (CPU bf16 is emulated, slow)."""
    import torch

    return "bf16-mixed" if torch.cuda.is_available() else "32-true"


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("cxr_precision"):
        OmegaConf.register_new_resolver("cxr_precision", _precision)


def build_augment(cfg: DictConfig | dict | None) -> list:
    """Instantiate an augment set: an ordered mapping name -> albumentations transform config.

    Entries set to null are left out, so ``augment.<name>=null`` removes one transform.
    albumentations 2.x only *warns* about argument names it does not know (1.x names such as
    ``GaussNoise(var_limit=...)``) and then uses its defaults; here that is an error.
    """
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    transforms = []
    for name, node in (cfg or {}).items():
        if node is None:
            continue
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                transforms.append(instantiate(node, _convert_="all"))
            except InstantiationException as err:
                raise ValueError(f"augment.{name}: {err}") from err
        for w in caught:
            if "are not valid for transform" in str(w.message):
                raise ValueError(f"augment.{name}: {w.message} (albumentations 2.x names are required)")
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return transforms


register_resolvers()


def compose(
    overrides: list[str] | tuple[str, ...] = (),
    output_dir: str | Path | None = None,
    config_name: str = "train",
) -> DictConfig:
    """Compose the training config in-process (tests, demo, notebooks) as ``cxr-train`` would.

    Sets Hydra's runtime state so ``${hydra:...}`` interpolations resolve; ``output_dir`` becomes
    the run folder.
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = hydra_compose(config_name=config_name, overrides=list(overrides), return_hydra_config=True)
    if output_dir is not None:
        with open_dict(cfg):
            cfg.hydra.runtime.output_dir = str(output_dir)
    HydraConfig.instance().set_config(cfg)
    return cfg
