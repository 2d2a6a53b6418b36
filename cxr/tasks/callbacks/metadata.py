"""Self-describing checkpoints: :class:`CheckpointMetadata` writes what prediction needs into every ``.ckpt``.

The entry (``checkpoint["cxr"]``) holds the model's registry name and constructor arguments, the
datamodule's ``_target_`` and the settings that define its input (image size, normalisation,
labels), and the task. :func:`cxr.inference.checkpoint.load_model` reads it back without Lightning.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf

from cxr.models import constructor_arguments
from cxr.tasks.checkpoint_format import FORMAT_VERSION, META_KEY


def _plain(node: Any) -> Any:
    data = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)
    return {k: v for k, v in data.items() if not k.startswith("_")}


class CheckpointMetadata(pl.Callback):
    """Writes ``checkpoint["cxr"]``: the model's registry name and arguments, the datamodule, the task.

    Args:
        model: the composed ``model`` node (``_target_`` + constructor arguments).
        datamodule: the composed ``datamodule`` node; stored with its ``_target_`` (what a predictor
            rebuilds for validation data) and every argument but ``data_dir`` (a path on the
            training machine).
        task: the task's ``_target_``.
    """

    def __init__(self, model: Any, datamodule: Any, task: str) -> None:
        name = _model_name_from_target(str(model["_target_"]))
        self.meta = {
            "format_version": FORMAT_VERSION,
            "model_name": name,
            # every argument, defaults included: the checkpoint rebuilds its network even after a default changes
            "model_kwargs": constructor_arguments(name, _plain(model)),
            "datamodule": {k: v for k, v in _plain(datamodule).items() if k != "data_dir"},
            "datamodule_target": str(datamodule["_target_"]),
            "task": str(task).rsplit(".", 1)[-1],
        }

    @classmethod
    def from_config(cls, cfg: DictConfig) -> CheckpointMetadata:
        """From a composed ``cxr-train`` config."""
        return cls(cfg.model, cfg.datamodule, cfg.task["_target_"])

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        checkpoint[META_KEY] = self.meta


def _model_name_from_target(target: str) -> str:
    from cxr.models import MODELS

    cls_name = target.rsplit(".", 1)[-1]
    for name, cls in MODELS.items():
        if cls.__name__ == cls_name:
            return name
    raise ValueError(f"model target {target!r} is not in the cxr.models registry ({', '.join(MODELS)})")
