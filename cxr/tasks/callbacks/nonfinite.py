"""The NaN/inf guard: :class:`NonFiniteGuard` checks the loss and gradients before every optimizer step.

``stop`` raises :class:`NonFiniteLossError` naming the step and the batch; ``skip`` drops that step
and counts it; ``off`` does nothing. Configured as ``callbacks.nonfinite`` (``conf/callbacks/default.yaml``).
"""

from __future__ import annotations

import logging
from typing import Any

import pytorch_lightning as pl
import torch

log = logging.getLogger(__name__)

NONFINITE_MODES = ("stop", "skip", "off")


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or infinite loss or gradient; the message names the step and the batch."""


class NonFiniteGuard(pl.Callback):
    """Checks loss and gradients for NaN/inf before each optimizer step.

    Args:
        mode: "stop" raises :class:`NonFiniteLossError` naming the global step, epoch, batch and the
            dataset indices of its samples; the weights stay as they were before that step.
            "skip" drops the step (gradients cleared, batch-norm statistics restored), logs it and
            counts it (``skipped``, and ``train/nonfinite_skipped`` per epoch). "off" does nothing.
        max_consecutive_skips: in "skip" mode, this many skipped steps in a row stop the run anyway:
            the model has diverged.

    Gradients are not checked while a fp16 ``GradScaler`` is active: it skips overflowing steps itself.
    """

    MODES = NONFINITE_MODES

    def __init__(self, mode: str = "stop", max_consecutive_skips: int = 10) -> None:
        if mode not in self.MODES:
            raise ValueError(f"callbacks.nonfinite.mode must be one of {self.MODES}, got {mode!r}")
        if max_consecutive_skips < 1:
            raise ValueError(f"max_consecutive_skips must be >= 1, got {max_consecutive_skips}")
        self.mode, self.max_consecutive_skips = mode, int(max_consecutive_skips)
        self.skipped = 0
        self._epoch_skipped = self._consecutive = 0
        self._batch: Any = None
        self._batch_idx = -1
        self._loss: torch.Tensor | None = None
        self._buffers: list[torch.Tensor] = []

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._batch, self._batch_idx, self._loss = batch, batch_idx, None
        if self.mode == "skip":  # a NaN forward pass also poisons batch-norm running statistics
            self._buffers = [b.detach().clone() for b in pl_module.buffers()]

    def on_before_backward(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: torch.Tensor
    ) -> None:
        self._loss = loss.detach()

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        if self.mode == "off":
            return
        params = [p for group in optimizer.param_groups for p in group["params"]]
        grads = [p.grad for p in params if p.grad is not None]
        device = pl_module.device
        loss = self._loss if self._loss is not None else torch.zeros((), device=device)
        scaler = getattr(trainer.precision_plugin, "scaler", None)
        grad_norm = torch.zeros((), device=device)
        if grads and scaler is None:
            grad_norm = torch.nn.utils.get_total_norm(grads, norm_type=float("inf"), error_if_nonfinite=False)
        # one device sync for both checks
        flags = torch.stack([torch.isfinite(loss).all().to(device), torch.isfinite(grad_norm).to(device)])
        loss_ok, grads_ok = flags.tolist()
        if loss_ok and grads_ok:
            self._consecutive = 0
            return
        what = f"loss ({loss.float().mean().item():g})" if not loss_ok else "gradient"
        where = self._where(trainer)
        if self.mode == "stop":
            raise NonFiniteLossError(
                f"non-finite {what} at {where}; stopped before the optimizer step, weights "
                "unchanged. Lower task.optimizer.lr, check those images, or set "
                "callbacks.nonfinite.mode=skip to drop such batches"
            )
        for p in params:
            p.grad = None  # optimizers skip parameters without a gradient: no update, no moment change
        with torch.no_grad():
            for buffer, saved in zip(pl_module.buffers(), self._buffers, strict=False):
                buffer.copy_(saved)
        self.skipped += 1
        self._epoch_skipped += 1
        self._consecutive += 1
        log.warning(
            "skipped a batch with a non-finite %s at %s (%d skipped so far)", what, where, self.skipped
        )
        if self._consecutive >= self.max_consecutive_skips:
            raise NonFiniteLossError(
                f"non-finite {what} in {self._consecutive} consecutive batches, the last at "
                f"{where}: the run has diverged. Lower task.optimizer.lr or check the data"
            )

    def _where(self, trainer: pl.Trainer) -> str:
        text = f"global step {trainer.global_step} (epoch {trainer.current_epoch}, batch {self._batch_idx})"
        index = self._batch.get("index") if isinstance(self._batch, dict) else None
        if index is not None:
            values = torch.as_tensor(index).flatten().tolist()
            text += f", dataset indices {values[:8]}{' ...' if len(values) > 8 else ''}"
        return text

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.mode == "skip":
            pl_module.log("train/nonfinite_skipped", float(self._epoch_skipped))
        if self._epoch_skipped:
            log.warning(
                "epoch %d: skipped %d batch(es) with a non-finite loss or gradient (%d in total)",
                trainer.current_epoch,
                self._epoch_skipped,
                self.skipped,
            )
        self._epoch_skipped = 0

    def state_dict(self) -> dict[str, Any]:
        return {"skipped": self.skipped}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.skipped = int(state_dict.get("skipped", 0))
