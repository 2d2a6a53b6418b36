"""Training guards: a resume point that continues a killed run exactly, a NaN/inf guard, an out-of-memory hint.

- :class:`ResumeCheckpoint` keeps ``<dirpath>/last.ckpt`` current (every N steps or minutes, at each
  epoch end, on SIGTERM and at the end of training) and carries the global RNG states, so a run
  resumed from it (``ckpt_path=last``) draws the same dropout masks as one never interrupted.
  Together with :class:`~cxr.data.resumable.ResumableLoader` it resumes mid-epoch exactly.
- :class:`NonFiniteGuard` checks the loss and gradients before every optimizer step: ``stop`` raises
  :class:`NonFiniteLossError` naming the step and the batch, ``skip`` drops that step and counts it.
- :func:`out_of_memory_message` turns a CUDA OOM into advice on the batch size.
"""

from __future__ import annotations

import logging
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Checkpoint

from cxr.validate import NONFINITE_MODES

log = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or infinite loss or gradient; the message names the step and the batch."""


def rng_states() -> dict[str, Any]:
    """Global RNG states (torch CPU/CUDA, numpy, random) in tensors and plain containers, weights_only-safe."""
    # the legacy global state is what third-party code draws from; cxr itself uses Generators
    _, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    """Inverse of :func:`rng_states`; CUDA states are restored only onto the same number of devices."""
    torch.set_rng_state(states["torch"])
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    np_state = states["numpy"]
    np.random.set_state(  # noqa: NPY002 (restores the legacy global state Lightning seeds)
        (
            "MT19937",
            np_state["keys"].numpy().astype(np.uint32),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["cached_gaussian"],
        )
    )
    cuda = states.get("cuda")
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


class ResumeCheckpoint(Checkpoint):
    """Writes ``<dirpath>/<filename>``, the full training state to continue from, at safe points.

    Saved every ``every_n_train_steps`` optimizer steps and/or every ``every_n_minutes`` (0 = off), at
    each epoch end (after validation and the best-checkpoint update), when SIGTERM arrives and at the
    end of training. Lightning writes through a temporary file, so a kill during a save leaves the
    previous file intact. A :class:`~pytorch_lightning.callbacks.Checkpoint`, so Lightning runs it
    after other callbacks (``ModelCheckpoint`` included, in config order).
    """

    def __init__(
        self,
        dirpath: str | Path,
        every_n_train_steps: int = 0,
        every_n_minutes: float = 0.0,
        filename: str = "last.ckpt",
    ) -> None:
        if every_n_train_steps < 0 or every_n_minutes < 0:
            raise ValueError(
                f"every_n_train_steps and every_n_minutes must be >= 0, got {every_n_train_steps}, "
                f"{every_n_minutes}"
            )
        self.path = Path(dirpath) / filename
        self.every_n_train_steps, self.every_n_minutes = int(every_n_train_steps), float(every_n_minutes)
        self._last_time = time.monotonic()
        self._saved_step: int | None = None
        self._pending_rng: dict[str, Any] | None = None

    def _save(self, trainer: pl.Trainer) -> None:
        if trainer.fast_dev_run or trainer.sanity_checking:
            return
        trainer.save_checkpoint(self.path)
        self._saved_step, self._last_time = trainer.global_step, time.monotonic()

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Restored here, not in load_state_dict: the train loader has been set up by now, so nothing
        # between this point and the next batch draws from the global RNGs, as in the original run.
        if self._pending_rng is not None:
            set_rng_states(self._pending_rng)
            self._pending_rng = None
            log.info(
                "resumed at global step %d (epoch %d) with the saved RNG states",
                trainer.global_step,
                trainer.current_epoch,
            )
        self._last_time = time.monotonic()

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if (batch_idx + 1) % trainer.accumulate_grad_batches:
            return  # accumulated gradients are not part of a checkpoint
        step = trainer.global_step
        due = self.every_n_train_steps > 0 and step % self.every_n_train_steps == 0
        due |= self.every_n_minutes > 0 and time.monotonic() - self._last_time >= 60 * self.every_n_minutes
        if (due or trainer.received_sigterm) and step != self._saved_step:
            self._save(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._save(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.global_step != self._saved_step:  # stopped mid-epoch (max_steps)
            self._save(trainer)

    def state_dict(self) -> dict[str, Any]:
        return {"rng": rng_states()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending_rng = state_dict.get("rng")


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
            raise ValueError(f"guards.nonfinite must be one of {self.MODES}, got {mode!r}")
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
                "guards.nonfinite=skip to drop such batches"
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


def out_of_memory_message(error: BaseException, batch_size: int | None, image_size: int | None) -> str:
    """One line for a device out-of-memory error: the settings that ran out and what to try instead."""
    first = next((line.strip() for line in str(error).splitlines() if line.strip()), type(error).__name__)
    if batch_size is not None and batch_size > 1:
        advice = f"retry with datamodule.batch_size={batch_size // 2}"
    else:
        advice = "retry with a smaller datamodule.image_size or model"
    return (
        f"out of device memory with datamodule.batch_size={batch_size}, datamodule.image_size={image_size}: "
        f"{advice} (or trainer.precision=bf16-mixed where supported) [{first}]"
    )
