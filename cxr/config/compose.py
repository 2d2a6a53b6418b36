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


# What `datamodule.labels` implies for the classifier, so one override changes both (the configs
# interpolate these instead of a validator reconciling three settings afterwards).
NUM_OUTPUTS = {"binary": 1, "three_class": 3}  # one logit for BCE; one per class for softmax
LOSS_FOR_LABELS = {"binary": "bce", "three_class": "ce"}


def _lookup(table: dict, what: str):
    def resolve(labels: str):
        if labels not in table:
            raise ValueError(
                f"datamodule.labels={labels}: no {what} for it; valid labels: {', '.join(table)}"
            )
        return table[labels]

    return resolve


def _register_interpolations() -> None:
    for name, resolver in (
        ("cxr_precision", _precision),
        ("cxr_num_outputs", _lookup(NUM_OUTPUTS, "number of network outputs")),
        ("cxr_loss_for", _lookup(LOSS_FOR_LABELS, "default loss")),
    ):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver)


# Config groups whose YAML files hold only what differs from their class's constructor defaults:
# group -> {name: dotted class}. Each is stored as ``<group>/<name>_defaults`` (every argument with
# a default, taken from the signature), which the YAML file names first in its defaults list, so
# the composed config still holds every argument: overrides need no "+", other configs can
# interpolate any argument, and run identities see the same values as when YAML repeated them.
DEFAULTS_FROM_SIGNATURES = {
    "model": {
        "depthwise_cnn": "cxr.models.DepthwiseCNN",
        "mobilenet": "cxr.models.MobileNet",
        "plain_cnn": "cxr.models.PlainCNN",
    },
    "task": {"classification": "cxr.tasks.classification.ClassificationTask"},
}


def signature_defaults(target: str) -> dict:
    """``{"_target_": target, argument: default, ...}`` for every argument of ``target`` that has a
    default (tuples as lists), in signature order: the config a YAML file's differences apply to."""
    import importlib
    import inspect

    module, _, name = target.rpartition(".")
    params = inspect.signature(getattr(importlib.import_module(module), name)).parameters
    node: dict = {"_target_": target}
    for key, p in params.items():
        if p.default is not p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
            node[key] = list(p.default) if isinstance(p.default, tuple) else p.default
    return node


def register_defaults() -> None:
    """Store every :data:`DEFAULTS_FROM_SIGNATURES` entry in Hydra's ConfigStore (imports the classes)."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    for group, entries in DEFAULTS_FROM_SIGNATURES.items():
        for name, target in entries.items():
            store.store(group=group, name=f"{name}_defaults", node=signature_defaults(target))


def register_resolvers() -> None:
    """What composing ``conf/`` needs, before Hydra composes: the resolvers ``${cxr_precision:}``,
    ``${cxr_num_outputs:<labels>}`` (1 or 3), ``${cxr_loss_for:<labels>}`` (bce or ce), and the
    constructor-defaults configs (:func:`register_defaults`). Idempotent."""
    _register_interpolations()
    register_defaults()


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


_register_interpolations()  # cheap; the defaults configs import the model and task classes


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

    register_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = hydra_compose(config_name=config_name, overrides=list(overrides), return_hydra_config=True)
    if output_dir is not None:
        with open_dict(cfg):
            cfg.hydra.runtime.output_dir = str(output_dir)
    HydraConfig.instance().set_config(cfg)
    return cfg
