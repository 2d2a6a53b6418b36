"""Speed options any task can switch on from the trainer config: channels_last and ``torch.compile``;
and :func:`fold_batch_norm` for CPU inference.

Mixed precision is Lightning's own ``trainer.precision`` (``bf16-mixed`` in ``conf/trainer/gpu.yaml``);
the two options here have no Trainer argument, so :class:`SpeedUp` applies them as a callback.
``cxr-train`` builds it from the ``speed`` key of the trainer config (``conf/trainer/fast.yaml``)::

    speed:
      channels_last: true      # NHWC weights and images: faster convolutions with tensor cores
      compile: false           # torch.compile the network (minutes of compilation on first use)
      compile_module: model    # dotted attribute of the LightningModule to compile, e.g. model.backbone
      compile_mode: null       # torch.compile mode: null (default), reduce-overhead, max-autotune

Is a run input-bound? ``trainer.profiler=simple`` reports the time spent waiting on the train
dataloader (``train_dataloader_next``) beside the time of the steps.
"""

from __future__ import annotations

import logging
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from torch import nn

log = logging.getLogger(__name__)

COMPILE_MODES = (None, "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def submodule(root: nn.Module, path: str) -> nn.Module:
    """``root.<path>`` for a dotted attribute path; a clear error names the missing part."""
    module = root
    for part in path.split("."):
        child = getattr(module, part, None)
        if not isinstance(child, nn.Module):
            raise ValueError(
                f"{type(root).__name__} has no sub-module {path!r} (no nn.Module at {part!r}); "
                f"children: {[name for name, _ in root.named_children()]}"
            )
        module = child
    return module


def to_channels_last(batch: Any) -> Any:
    """The same batch with every 4-D floating tensor in channels_last layout (dicts, lists, tuples walked)."""
    if isinstance(batch, torch.Tensor):
        return (
            batch.contiguous(memory_format=torch.channels_last)
            if batch.ndim == 4 and batch.is_floating_point()
            else batch
        )
    if isinstance(batch, dict):
        return {k: to_channels_last(v) for k, v in batch.items()}
    if isinstance(batch, list | tuple):
        return type(batch)(to_channels_last(v) for v in batch)
    return batch


class SpeedUp(Callback):
    """Put the LightningModule in channels_last layout and/or compile its network, for every stage.

    Args:
        channels_last: convert 4-D weights (at ``setup``, before optimisers exist; parameters stay
            the same objects, so checkpoints and optimisers are unaffected) and each batch's 4-D
            float tensors (in place in dict batches, at every ``on_*_batch_start``). Pays off on
            GPUs with tensor cores under mixed precision; on CPU it also speeds up oneDNN convolutions.
        compile: ``nn.Module.compile()`` on ``compile_module``: compiled in place, so the state dict
            keeps its keys (no ``_orig_mod.`` prefix) and checkpoints stay loadable without it.
        compile_module: dotted attribute of the LightningModule to compile (``model`` for both
            tasks; ``model.backbone`` compiles only RetinaNet's encoder + FPN, leaving
            anchor matching and NMS eager).
        compile_mode: ``torch.compile`` mode (None = default).
    """

    def __init__(
        self,
        channels_last: bool = False,
        compile: bool = False,
        compile_module: str = "model",
        compile_mode: str | None = None,
    ) -> None:
        if compile_mode not in COMPILE_MODES:
            raise ValueError(f"compile_mode must be one of {COMPILE_MODES}, got {compile_mode!r}")
        self.channels_last, self.compile = bool(channels_last), bool(compile)
        self.compile_module, self.compile_mode = compile_module, compile_mode
        self._applied = False

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self._applied:  # fit then test with one trainer: apply once
            return
        if self.compile:  # resolve the path first: a typo fails before any conversion
            target = submodule(pl_module, self.compile_module)
        if self.channels_last:
            pl_module.to(memory_format=torch.channels_last)
        if self.compile:
            target.compile(mode=self.compile_mode)
            log.info(
                "torch.compile(%s.%s, mode=%s)",
                type(pl_module).__name__,
                self.compile_module,
                self.compile_mode,
            )
        self._applied = True

    def _convert(self, batch: Any) -> None:
        if not self.channels_last:
            return
        if isinstance(batch, dict):  # the step receives this same dict object
            batch.update(to_channels_last(batch))
        elif isinstance(batch, list):
            batch[:] = to_channels_last(batch)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._convert(batch)

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        self._convert(batch)

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        self._convert(batch)

    def on_predict_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        self._convert(batch)
