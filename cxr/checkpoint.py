"""Self-describing checkpoints: what prediction needs travels inside the ``.ckpt``, loaded safely.

Lightning checkpoints written by ``cxr-train`` carry a ``"cxr"`` entry: the model's registry name
and constructor arguments, and the datamodule settings that define its input (image size,
normalisation, labels). :func:`load_model` rebuilds the model from the registry — never by
importing a path named in the file — and loads it with ``torch.load(weights_only=True)``, which
refuses to unpickle arbitrary objects.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

META_KEY = "cxr"
FORMAT_VERSION = 1


def _plain(node: Any) -> Any:
    data = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)
    return {k: v for k, v in data.items() if not k.startswith("_")}


class CheckpointMetadata(pl.Callback):
    """Adds the model name/arguments and input settings of a composed config to every checkpoint."""

    def __init__(self, cfg: DictConfig) -> None:
        choices = OmegaConf.select(cfg, "hydra.runtime.choices", default=None) or {}
        name = choices.get("model") if choices else None
        self.meta = {
            "format_version": FORMAT_VERSION,
            "model_name": name or _model_name_from_target(cfg.model["_target_"]),
            "model_kwargs": _plain(cfg.model),
            "datamodule": {k: v for k, v in _plain(cfg.datamodule).items() if k != "data_dir"},
            "task": str(cfg.task["_target_"]).rsplit(".", 1)[-1],
        }

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        checkpoint[META_KEY] = self.meta


def _model_name_from_target(target: str) -> str:
    from cxr.models import MODELS

    cls_name = target.rsplit(".", 1)[-1]
    for name, cls in MODELS.items():
        if cls.__name__ == cls_name:
            return name
    raise ValueError(f"model target {target!r} is not in the cxr.models registry ({', '.join(MODELS)})")


class CheckpointError(ValueError):
    """A checkpoint file that cannot be loaded safely; the message names the file and the problem."""


def read_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint dict with ``weights_only=True``; a tampered or foreign file fails clearly."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        # torch's message is a page long; the line naming the refused object is the one that matters
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        named = [line for line in lines if "GLOBAL" in line or "Unsupported" in line]
        detail = (named or lines or [""])[0]
        raise CheckpointError(
            f"{path}: refused to load: the file holds Python objects other than tensors and "
            f"plain containers, so it may be tampered with ({detail})"
        ) from err
    except Exception as err:  # RuntimeError (bad zip), EOFError, OSError ...: truncated or not a checkpoint
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path}: not a loadable checkpoint, truncated or corrupt ({first})") from err
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise CheckpointError(f"{path}: no 'state_dict' in the file; not a Lightning checkpoint")
    return ckpt


def load_model(path: str | Path) -> tuple[nn.Module, dict]:
    """Rebuild the model saved by ``cxr-train`` and return ``(model in eval mode, metadata)``."""
    from cxr.models import create_model

    ckpt = read_checkpoint(path)
    meta = ckpt.get(META_KEY)
    if not meta:
        raise CheckpointError(f"{path}: no '{META_KEY}' metadata; was it written by cxr-train?")
    kwargs = dict(meta["model_kwargs"])
    kwargs.pop("pretrained_path", None)  # the weights come from the checkpoint itself
    model = create_model(meta["model_name"], **kwargs)
    state = {k.removeprefix("model."): v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise CheckpointError(f"{path}: weights do not fit model {meta['model_name']!r}: {err}") from err
    return model.eval(), meta
